"""Profiles, paths and seeding: the one place for run-wide settings.

A profile is a JSON file in ``profiles/``. It has a ``common`` section and one
section per notebook; ``"extends": "cpu"`` starts from another profile and
replaces the settings it names (each whole: a dict setting is not merged). ``settings(profile, section, overrides)`` flattens
``common`` and the section into one dict and rejects unknown keys.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data"
PROFILE_DIR = ROOT / "profiles"
DEFAULT_PROFILE = "cpu"


class Settings(dict):
    """A dict whose keys also read as attributes: ``cfg.steps``."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"no setting {key!r}; settings are: {', '.join(sorted(self))}") from None


def profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def _merge(base: dict, extra: dict) -> dict:
    """Sections merge; a setting named in ``extra`` replaces the base's value whole."""
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for key, value in extra.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_profile(name: str) -> dict:
    """The whole profile ``name``, with ``extends`` resolved."""
    path = PROFILE_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(profiles())} (files in {PROFILE_DIR})")
    raw = json.loads(path.read_text())
    parent = raw.pop("extends", None)
    return _merge(load_profile(parent), raw) if parent else raw


def settings(profile: str, section: str, overrides: dict | None = None) -> Settings:
    """``common`` plus ``section`` of ``profile``, then ``overrides``, checked."""
    full = load_profile(profile)
    if section not in full:
        sections = [k for k in full if k not in ("common", "description")]
        raise ValueError(f"profile {profile!r} has no section {section!r}; sections: {', '.join(sections)}")
    cfg = {**full["common"], **full[section]}
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for {section}; "
                         f"valid: {', '.join(sorted(cfg))}")
    for key, value in overrides.items():
        if isinstance(cfg[key], dict) and key == "weights":
            if not isinstance(value, dict):
                raise ValueError(f"weights must be a dict of loss weights, e.g. {{'tv': 0}}; got {value!r}")
            bad = sorted(set(value) - set(cfg[key]))
            if bad:
                raise ValueError(f"unknown loss weight(s) {', '.join(map(repr, bad))}; valid: {', '.join(cfg[key])}")
            value = {**cfg[key], **value}
        cfg[key] = value
    check(cfg, f"profile {profile!r}, section {section!r}")
    return Settings(cfg, profile=profile, section=section)


# ----------------------------------------------------------------- valid values
# Every setting of every profile has a rule here: (test, what a valid value is).
# A bad value is refused with its range before any work starts, not as an
# IndexError or a "loss became nan" minutes later.
def _whole(low: int, none: str = ""):
    def ok(v):
        return (v is None and bool(none)) or (isinstance(v, int) and not isinstance(v, bool) and v >= low)
    return ok, f"a whole number >= {low}" + (f", or null ({none})" if none else "")


def _real(low: float, high: float = math.inf, low_open: bool = False):
    def ok(v):
        return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (v > low if low_open else v >= low) and v <= high)
    return ok, f"a number {'>' if low_open else '>='} {low}" + ("" if high == math.inf else f" and <= {high}")


def _choice(choices):
    """One of ``choices()``; a function, so that the lists stay in the modules that own them."""
    return (lambda v: isinstance(v, str) and v in choices()), lambda: "one of " + ", ".join(choices())


def _list_of(rule, empty_ok: bool = False):
    ok, what = rule
    return ((lambda v: isinstance(v, list) and (empty_ok or len(v) > 0) and all(ok(x) for x in v)),
            lambda: f"a {'' if empty_ok else 'non-empty '}list, each {what() if callable(what) else what}")


def _datasets():
    from .data import DATASETS
    return DATASETS


def _archs():
    from .models import ARCHS
    return ARCHS


def _conditionings():
    from .models import CONDITIONINGS
    return CONDITIONINGS


def _upsamplings():
    from .models import UPSAMPLINGS
    return UPSAMPLINGS


def _perturbations():
    from .inversion import PERTURBATIONS
    return PERTURBATIONS


def _methods():
    return tuple(GENERATOR_SECTIONS)


def _weight_attacks():
    from . import attacks
    return list(attacks.ATTACKS)


def _device_ok(v) -> bool:
    if v == "auto":
        return True
    try:
        torch.device(v)
        return True
    except (RuntimeError, TypeError):
        return False


def _attack_settings_ok(name: str, value) -> bool:
    from . import attacks

    if not isinstance(value, dict):
        return False
    attacks.resolve(name, value)  # raises with the attack's own message on a bad key or value
    return True


_SIZE = _whole(1, "every training image")
_SIZES = _list_of(_SIZE)
_FLAG = (lambda v: isinstance(v, bool)), "true or false"


def _sizes_ok(v) -> bool:
    """A list of sizes, or (in ``train_targets``) a dict of such lists by dataset."""
    if isinstance(v, dict):
        return all(k in _datasets() and _SIZES[0](s) for k, s in v.items())
    return _SIZES[0](v)


def _regimes():
    from .regime import REGIMES

    return list(REGIMES)


_CONTROL = {"dataset": _choice(_datasets), "per_class": _whole(1), "init_scale": _real(0, low_open=True),
            "weight_decay": _real(0), "train_steps": _whole(1), "train_lr": _real(0, low_open=True),
            "candidates": _whole(1), "heldout_per_class": _whole(1),
            "classes": ((lambda v: isinstance(v, list) and len(v) == 2 and v[0] != v[1]
                         and all(_whole(0)[0](c) for c in v)), "two different class numbers"),
            "hidden": _list_of(_whole(1)),
            "seeds": ((lambda v: _list_of(_whole(0))[0](v) and len(set(v)) >= 2),
                      "a list of at least two different seeds (the others train the cross-target controls)")}


def _control_ok(v) -> bool:
    return isinstance(v, dict) and set(v) == set(_CONTROL) and all(_CONTROL[k][0](x) for k, x in v.items())


RULES = {
    "datasets": _list_of(_choice(_datasets)), "seed": _whole(0), "device": (_device_ok, '"auto", "cpu", "cuda" or "cuda:N"'),
    "archs": _list_of(_choice(_archs)), "compare_archs": _list_of(_choice(_archs), empty_ok=True),
    "arch": _choice(_archs), "eval_arch": _choice(_archs), "methods": _list_of(_choice(_methods)),
    "conditioning": _choice(_conditionings), "perturbation": _choice(_perturbations),
    "upsample": _choice(_upsamplings),
    "train_size": _SIZE, "ablation_train_size": _SIZE,
    "train_sizes": (_sizes_ok, "a non-empty list of training-set sizes (whole numbers >= 1, or null for all); "
                               "in train_targets, a dict of such lists by dataset"),
    "seeds": _list_of(_whole(0)), "generator_seeds": _list_of(_whole(0)), "eval_seed": _whole(0),
    "generator_seed": _whole(0, "the target's seed"),
    "steps": _whole(1), "eval_steps": _whole(1), "paper_loss_steps": _whole(1), "utility_steps": _whole(1),
    "generator_steps": _whole(1),
    "batch_size": _whole(2), "generator_batch_size": _whole(2),  # batch norm needs two images per batch
    "lr": _real(0, low_open=True), "soft_scale": _real(0, low_open=True), "epsilon": _real(0, 1),
    "warmup": _real(0, 1), "shift": _whole(0), "eval_shift": _whole(0), "hot": _FLAG, "target_dropout": _FLAG,
    "require_learned": _FLAG,
    "weights": (lambda v: isinstance(v, dict) and all(_real(0)[0](w) for w in v.values()),
                "a dict of loss weights, each a number >= 0"),
    "samples_per_class": _whole(1), "oversample": _whole(1), "heldout_per_class": _whole(1),
    "utility_images": _whole(0),
    "gallery": _whole(1), "rows": _whole(1),
    "min_test_accuracy": (lambda v: isinstance(v, dict) and all(k in _datasets() and _real(0, 1)[0](a)
                                                               for k, a in v.items()),
                          "a dict from dataset name to an accuracy between 0 and 1"),
    # the attacks section: each optimisation attack's settings, checked by the attack itself
    **{name: (functools.partial(_attack_settings_ok, name), f"a dict of {name} settings (tldr_utils.attacks)")
       for name in ("deepinversion", "miface", "bn_classwise", "split_optimisation", "split_decoder", "split_datafree",
                 "kkt")},
    "per_class": _whole(4), "evaluator_steps": _whole(1), "resamples": _whole(100),
    "dataset": _choice(_datasets), "model_steps": _whole(1), "shift_dataset": _choice(_datasets),
    "victims_per_class": _whole(1), "aux_size": _whole(2), "strip": _whole(1), "depth": _whole(1),
    "lambdas": (lambda v: isinstance(v, list) and len(v) > 0 and all(_real(0)[0](x) for x in v),
                "a non-empty list of numbers >= 0 (0: no defence)"),
    "perceptual_weight": _real(0), "adversary_steps": _whole(1), "attack_steps": _whole(1), "tldr_steps": _whole(1),
    "check_every": _whole(1), "validation_size": _whole(10), "split_steps": _whole(1),
    "weight_attacks": _list_of(_choice(_weight_attacks)),
    "regimes": _list_of(_choice(_regimes)), "images_per_class": _list_of(_whole(1)), "recon_per_class": _whole(1),
    "draws": _whole(1),
    "control": (_control_ok, lambda: "a dict of the positive control's settings, exactly the keys "
                                     f"{', '.join(_CONTROL)}, each valid"),
}


GENERATOR_SECTIONS = {"inversion": "invert", "tldr": "reconstruct"}  # where a profile keeps these attacks' settings


def attack_settings(profile: str, name: str, overrides: dict | None = None) -> dict:
    """The settings of attack ``name`` that ``profile`` gives (then ``overrides``): for
    ``inversion`` and ``tldr`` the attack's keys of their notebook sections, for the
    others their entry in the ``attacks`` section."""
    from . import attacks

    attack = attacks.get(name)
    if name in GENERATOR_SECTIONS:
        cfg = settings(profile, GENERATOR_SECTIONS[name])
        chosen = {k: cfg[k] for k in attack.defaults if k in cfg}
    else:
        chosen = dict(settings(profile, "attacks")[name])
    return attacks.resolve(name, {**chosen, **(overrides or {})})


def check(cfg: dict, where: str = "settings") -> None:
    """Refuse any value of ``cfg`` outside its valid range, naming the setting, the value and the range."""
    for key, value in cfg.items():
        if key not in RULES:
            raise ValueError(f"{where}: setting {key!r} has no rule in tldr_utils.config.RULES; add one there")
        ok, what = RULES[key]
        if not ok(value):
            raise ValueError(f"{key} must be {what() if callable(what) else what}; got {value!r} ({where})")


_NOTEBOOK_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open", "profile", "overrides"}


def setup(section: str, profile: str = DEFAULT_PROFILE, overrides: dict | None = None,
          namespace: dict | None = None) -> Settings:
    """The one call at the top of every notebook: settings, seed, figure style.

    ``namespace`` (the notebook's ``globals()``) lets it refuse parameters that
    papermill injected but the notebook does not know (papermill only warns).
    """
    if namespace is not None:
        stray = sorted(k for k, v in namespace.items() if not k.startswith("_") and k not in _NOTEBOOK_NAMES
                       and not isinstance(v, (types.ModuleType, types.FunctionType, type)))
        if stray:
            raise ValueError(f"unknown notebook parameter(s) {', '.join(stray)}: this notebook takes "
                             f"'profile' ({', '.join(profiles())}) and 'overrides', a dict of settings")
    cfg = settings(profile, section, overrides)
    seed_everything(cfg.seed)
    from . import plotting  # noqa: late import keeps matplotlib out of library-only use
    plotting.set_style()
    return cfg


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device(cfg: dict | None = None) -> torch.device:
    """``cfg['device']``, where "auto" means CUDA when present, else CPU."""
    name = (cfg or {}).get("device", "auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def run_dir(profile: str) -> Path:
    """Where everything of one profile's run goes: ``runs/<profile>``."""
    path = Path(os.environ.get("TLDR_RUNS", ROOT / "runs")) / profile
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create the run folder {path}: {err.strerror or err}. Choose a writable one with "
                      "the environment variable TLDR_RUNS, e.g. TLDR_RUNS=/tmp/runs make figures") from err
    return path
