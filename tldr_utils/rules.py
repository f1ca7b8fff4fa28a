"""What a valid setting is: the rule table every profile is checked against.

A rule is a pair (test, what a valid value is). Settings shared by every part
of the library have their rules here; a module that owns a choice (the
datasets, the architectures, the attacks) adds the rules of its own settings
with ``add`` beside its defaults. A bad value is refused with its range before
any work starts, not as an IndexError or a "loss became nan" minutes later.
This module imports nothing of the library.
"""

from __future__ import annotations

import math

import torch


def whole(low: int, none: str = ""):
    """A whole number >= ``low``; also None where ``none`` says what None means."""

    def ok(v):
        if v is None:
            return bool(none)
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    return ok, f"a whole number >= {low}" + (f", or null ({none})" if none else "")


def real(low: float, high: float = math.inf, low_open: bool = False):
    """A finite number >= ``low`` (> with ``low_open``) and <= ``high``."""

    def ok(v):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return False
        return (v > low if low_open else v >= low) and v <= high

    above = f"{'>' if low_open else '>='} {low}"
    return ok, f"a number {above}" + ("" if high == math.inf else f" and <= {high}")


def choice(choices):
    """One of ``choices()``: a function, so that the list stays with the module that owns it."""
    return (
        lambda v: isinstance(v, str) and v in choices()
    ), lambda: "one of " + ", ".join(choices())


def list_of(rule, empty_ok: bool = False):
    """A list (non-empty unless ``empty_ok``) whose every entry satisfies ``rule``."""
    ok, what = rule

    def test(v):
        return isinstance(v, list) and (empty_ok or len(v) > 0) and all(ok(x) for x in v)

    def says():
        return f"a {'' if empty_ok else 'non-empty '}list, each {describe(what)}"

    return test, says


def describe(what) -> str:
    return what() if callable(what) else what


def _device_ok(v) -> bool:
    if v == "auto":
        return True
    try:
        torch.device(v)
        return True
    except (RuntimeError, TypeError):
        return False


FLAG = (lambda v: isinstance(v, bool)), "true or false"
WEIGHT = real(0)
SIZE = whole(1, "every training image")
WEIGHTS = (
    lambda v: isinstance(v, dict) and all(WEIGHT[0](w) for w in v.values()),
    "a dict of loss weights, each a number >= 0",
)

RULES = {
    "seed": whole(0),
    "device": (_device_ok, '"auto", "cpu", "cuda" or "cuda:N"'),
    "train_size": SIZE,
    "ablation_train_size": SIZE,
    "seeds": list_of(whole(0)),
    "generator_seeds": list_of(whole(0)),
    "eval_seed": whole(0),
    "generator_seed": whole(0, "the target's seed"),
    "steps": whole(1),
    "eval_steps": whole(1),
    "paper_loss_steps": whole(1),
    "utility_steps": whole(1),
    "generator_steps": whole(1),
    "batch_size": whole(2),  # batch norm needs two images per batch
    "generator_batch_size": whole(2),
    "lr": real(0, low_open=True),
    "soft_scale": real(0, low_open=True),
    "epsilon": real(0, 1),
    "warmup": real(0, 1),
    "shift": whole(0),
    "eval_shift": whole(0),
    "hot": FLAG,
    "target_dropout": FLAG,
    "require_learned": FLAG,
    "weights": WEIGHTS,
    "samples_per_class": whole(1),
    "oversample": whole(1),
    "heldout_per_class": whole(1),
    "utility_images": whole(0),
    "gallery": whole(1),
    "rows": whole(1),
    "per_class": whole(4),
    "evaluator_steps": whole(1),
    "resamples": whole(100),
    "model_steps": whole(1),
    "victims_per_class": whole(1),
    "aux_size": whole(2),
    "strip": whole(1),
    "depth": whole(1),
    "lambdas": (
        lambda v: isinstance(v, list) and len(v) > 0 and all(WEIGHT[0](x) for x in v),
        "a non-empty list of numbers >= 0 (0: no defence)",
    ),
    "perceptual_weight": WEIGHT,
    "adversary_steps": whole(1),
    "attack_steps": whole(1),
    "tldr_steps": whole(1),
    "check_every": whole(1),
    "validation_size": whole(10),
    "split_steps": whole(1),
    "images_per_class": list_of(whole(1)),
    "recon_per_class": whole(1),
    "draws": whole(1),
    "shadows": whole(2),
    "shadow_steps": whole(1),
}


def add(table: dict) -> None:
    """Add the rules of settings that a module owns; a setting has one rule, from one owner."""
    taken = sorted(k for k in table if k in RULES and RULES[k] is not table[k])
    if taken:
        raise ValueError(f"settings {taken} already have a rule in tldr_utils.rules.RULES")
    RULES.update(table)


def check(values: dict, where: str = "settings", table: dict | None = None) -> None:
    """Refuse any value outside its valid range, naming the setting, the value and the range."""
    table = RULES if table is None else table
    for key, value in values.items():
        if key not in table:
            raise ValueError(
                f"{where}: setting {key!r} has no rule; add one with tldr_utils.rules.add "
                "in the module that owns it"
            )
        ok, what = table[key]
        if not ok(value):
            raise ValueError(f"{key} must be {describe(what)}; got {value!r} ({where})")
