"""The attack interface: the records, the problem, the registry and the one way to run an attack."""

from __future__ import annotations

import contextlib
import functools
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import rules, store
from ..hooks import feature_input


@dataclass
class Reconstruction:
    """What an attack returns: images in [0, 1] (class-sorted), their labels, its cost, and what it
    skipped."""

    attack: str
    images: torch.Tensor
    labels: torch.Tensor
    cost: dict
    settings: dict
    skipped: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # e.g. the trained generator of the generator attacks


@dataclass
class Attack:
    name: str
    run: Callable  # run(problem, settings, seed) -> (images, labels, steps, extra)
    defaults: dict
    rules: dict
    about: str
    # what the attack takes beyond the model: "class_stats" for bn_classwise, "aux" for
    # split_decoder
    needs: tuple = ()
    version: int = 1  # part of every cached result's key: bump when the attack's algorithm changes
    # "weights": class images from a classifier; "features": inputs from their activations
    kind: str = "weights"
    classes: int | None = None  # the only number of classes its theory covers (kkt: 2); None: any
    # which of its settings a sweep sets, and from which of the sweep's settings: generator attacks
    # take the sweep's generator_steps and generator_batch_size, optimisation attacks its
    # attack_steps
    budget: dict = field(default_factory=lambda: {"steps": "attack_steps"})


@dataclass
class Problem:
    """The frozen classifier and what every attack needs to know about it."""

    model: nn.Module
    image_shape: tuple
    num_classes: int
    per_class: int
    device: torch.device
    feature_layer: str | None = None
    class_stats: dict | None = (
        None  # bn_classwise: per-class batch-norm input statistics, from the data owner
    )
    activations: torch.Tensor | None = (
        None  # feature attacks: what the server saw, model(x) of the private inputs
    )
    aux: torch.Tensor | None = (
        None  # split_decoder: the attacker's own images, none of them the victim's
    )
    labels: torch.Tensor | None = (
        None  # feature attacks: the private inputs' labels, when known (else -1)
    )
    skipped: list = field(default_factory=list)
    cache: Path | None = (
        None  # where an attack may keep what it builds on the way (a trained generator)
    )

    def skip(self, term: str, why: str) -> None:
        """Record and warn once that ``term`` cannot be used on this model."""
        if term not in self.skipped:
            self.skipped.append(term)
            warnings.warn(f"the '{term}' term is skipped: {why}", stacklevel=3)


ATTACKS: dict[
    str, Attack
] = {}  # weight attacks: a classifier in, images of each class out (``reconstruct``)
FEATURE_ATTACKS: dict[
    str, Attack
] = {}  # activations of private inputs in, those inputs out (``invert_features``)


def attack(name: str, defaults: dict, rules: dict, about: str, **record):
    """Decorator: ``fn(problem, settings, seed) -> (images, labels, steps, extra)`` becomes the
    record of attack ``name`` (not yet registered: ``register`` does that); each of its settings
    takes its rule from the table ``rules``; ``record`` sets the other fields of ``Attack``."""
    missing = sorted(set(defaults) - set(rules))
    if missing:
        raise ValueError(f"attack {name!r}: settings {missing} have no rule")

    def wrap(fn) -> Attack:
        return Attack(name, fn, defaults, {k: rules[k] for k in defaults}, about, **record)

    return wrap


def register(*records: Attack) -> None:
    """Make attacks runnable by name (``reconstruct``, ``invert_features``, ``audit``) and
    their settings checkable in a profile's ``attacks`` section."""
    for a in records:
        if not isinstance(a, Attack):
            raise TypeError(f"register takes Attack records (made with @attack), got {a!r}")
        if a.kind not in ("weights", "features"):
            raise ValueError(
                f"attack {a.name!r}: kind must be 'weights' or 'features', got {a.kind!r}"
            )
        if a.name in ATTACKS or a.name in FEATURE_ATTACKS:
            raise ValueError(f"an attack named {a.name!r} is already registered")
        # its entry in a profile's ``attacks`` section is checked by the attack itself
        rules.add(
            {a.name: (functools.partial(_settings_ok, a.name), f"a dict of {a.name} settings")}
        )
        (FEATURE_ATTACKS if a.kind == "features" else ATTACKS)[a.name] = a


def for_classes(num_classes: int) -> list[str]:
    """The weight attacks that apply to a classifier of ``num_classes`` classes, in registration
    order."""
    return [n for n, a in ATTACKS.items() if a.classes in (None, num_classes)]


def get(name: str) -> Attack:
    attack = ATTACKS.get(name) or FEATURE_ATTACKS.get(name)
    if attack is None:
        raise ValueError(
            f"unknown attack {name!r}; choose one of {', '.join([*ATTACKS, *FEATURE_ATTACKS])}"
        )
    return attack


def resolve(name: str, settings: dict | None = None) -> dict:
    """The defaults of attack ``name`` with ``settings`` over them, checked: unknown keys and
    out-of-range values are refused with the valid ones. A ``weights`` dict merges term by term."""
    attack = get(name)
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(attack.defaults))
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(map(repr, unknown))} for attack {name!r}; "
            f"valid: {', '.join(sorted(attack.defaults))}"
        )
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in attack.defaults.items()}
    for key, value in settings.items():
        if isinstance(out[key], dict) and isinstance(value, dict):
            bad = sorted(set(value) - set(out[key]))
            if bad:
                raise ValueError(
                    f"unknown {key} {', '.join(map(repr, bad))} for attack {name!r}; "
                    f"valid: {', '.join(out[key])}"
                )
            value = {**out[key], **value}
        out[key] = value
    rules.check(out, f"attack {name!r}", attack.rules)
    return out


def configure(name: str, section: dict, overrides: dict | None = None) -> dict:
    """The settings of attack ``name`` from ``section`` (a profile section, or any dict holding
    them among other keys): its own keys, then ``overrides``, checked (``resolve``)."""
    defaults = get(name).defaults
    return resolve(
        name, {**{k: v for k, v in section.items() if k in defaults}, **(overrides or {})}
    )


def budget(name: str, cfg: dict) -> dict:
    """The settings of attack ``name`` that a sweep's ``cfg`` sets: those its record's ``budget``
    names, where ``cfg`` has them (``{"steps": cfg["generator_steps"]}`` for a generator)."""
    return {setting: cfg[key] for setting, key in get(name).budget.items() if key in cfg}


def _settings_ok(name: str, value) -> bool:
    if not isinstance(value, dict):
        return False
    resolve(name, value)  # raises with the attack's own message on a bad key or value
    return True


def reconstruct(
    name: str,
    model: nn.Module,
    image_shape,
    num_classes: int,
    per_class: int,
    settings: dict | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    feature_layer: str | None = None,
    class_stats: dict | None = None,
    cache: str | Path | None = None,
) -> Reconstruction:
    """Run weight attack ``name`` against the frozen ``model``: ``per_class`` images of each of
    ``num_classes`` classes, of shape ``image_shape`` (C, H, W). The model is left as it came
    (its mode and which parameters need gradients). With ``cache`` (a folder), the result is
    kept there under a hash of the model's weights and every choice, and loaded the next time
    (its cost is the one measured when it was made; of ``extra``, what a file can hold: tensors
    and plain values, not a trained generator)."""
    attack = get(name)
    if attack.kind != "weights":
        raise ValueError(
            f"{name!r} inverts activations, not a classifier: use attacks.invert_features"
        )
    cfg = resolve(name, settings)
    shape = _shape(image_shape)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be a whole number >= 2, got {num_classes!r}")
    if not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a whole number >= 1, got {per_class!r}")
    if attack.classes not in (None, num_classes):
        raise ValueError(
            f"attack {name!r} applies only to classifiers of {attack.classes} classes, got "
            f"num_classes={num_classes}; attacks for {num_classes} classes: "
            f"{', '.join(for_classes(num_classes))}"
        )
    if "class_stats" in attack.needs and class_stats is None:
        raise ValueError(
            f"attack {name!r} needs class_stats, the per-class batch-norm statistics that the data "
            "owner records: attacks.optimisation.class_statistics(model, images, labels)"
        )
    feature_input(
        model, feature_layer
    )  # a named layer that does not exist is refused before any work
    problem = Problem(
        model, shape, num_classes, per_class, torch.device(device), feature_layer, class_stats
    )
    key = {
        "num_classes": num_classes,
        "per_class": per_class,
        "feature_layer": feature_layer,
        "class_stats": None
        if class_stats is None
        else store.tensor_hash(
            *[t for k in sorted(class_stats) for pair in class_stats[k] for t in pair]
        ),
    }
    return _run(attack, problem, cfg, seed, cache, key)


def invert_features(
    name: str,
    encoder: nn.Module,
    activations: torch.Tensor,
    image_shape,
    settings: dict | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    labels: torch.Tensor | None = None,
    aux: torch.Tensor | None = None,
    cache: str | Path | None = None,
) -> Reconstruction:
    """Run feature attack ``name``: recover the private inputs x (of shape ``image_shape``) from
    ``activations`` = ``encoder(x)``, what a server sees in split computing, knowing the
    encoder's weights. ``encoder`` is the part of the model run on the device (for
    ``split_datafree`` an ``nn.Sequential`` of its blocks: ``models.split_points``); ``aux``
    the attacker's own images (``split_decoder``); ``labels``, when known, travel with the
    result. Returns one image per activation, in their order; otherwise as ``reconstruct``."""
    attack = get(name)
    if attack.kind != "features":
        raise ValueError(f"{name!r} attacks a classifier's weights: use attacks.reconstruct")
    cfg = resolve(name, settings)
    shape = _shape(image_shape)
    if not isinstance(activations, torch.Tensor) or activations.dim() < 2 or not len(activations):
        raise ValueError(
            "activations must be a tensor of N >= 1 activations, encoder(x) of the private images"
        )
    if "aux" in attack.needs and (aux is None or aux.dim() != 4 or tuple(aux.shape[1:]) != shape):
        raise ValueError(
            f"attack {name!r} needs aux, the attacker's own images (N x {shape}), none of them the "
            f"victim's; got {None if aux is None else tuple(aux.shape)}"
        )
    if labels is not None and len(labels) != len(activations):
        raise ValueError(f"labels has {len(labels)} entries for {len(activations)} activations")
    problem = Problem(
        encoder,
        shape,
        0,
        1,
        torch.device(device),
        activations=activations.detach().float(),
        aux=None if aux is None else aux.detach().float(),
        labels=torch.full((len(activations),), -1) if labels is None else labels,
    )
    key = {
        "activations": store.tensor_hash(activations),
        "aux": None if aux is None else store.tensor_hash(aux),
    }
    return _run(attack, problem, cfg, seed, cache, key)


def _shape(image_shape) -> tuple:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (channels, height, width), got {image_shape!r}")
    return shape


def _run(
    attack: Attack, problem: Problem, cfg: dict, seed: int, cache, key: dict
) -> Reconstruction:
    """Run ``attack`` on ``problem`` with its model frozen, timed, checked; cached under
    ``cache``."""
    if cache is not None:
        key = {
            **key,
            "attack": attack.name,
            "version": attack.version,
            "settings": cfg,
            "shape": list(problem.image_shape),
            "seed": seed,
            "model": store.tensor_hash(*problem.model.state_dict().values()),
        }
        path = Path(cache) / f"{attack.name}_{store.config_hash(key)}.safetensors"
        problem.cache = Path(cache)
        with store.exclusive(path):
            if not path.exists():
                r = _run(attack, problem, cfg, seed, None, key)
                _save(path, r)
                return r
            return _load(path, attack.name)
    with frozen(problem.model):
        wall, cpu = time.perf_counter(), time.process_time()
        images, labels, steps, extra = attack.run(problem, cfg, seed)
        cost = {
            "cpu_seconds": time.process_time() - cpu,
            "wall_seconds": time.perf_counter() - wall,
            "steps": steps,
            **extra.pop("cost", {}),
        }
    images = images.detach().cpu().float()
    if images.shape[1:] != problem.image_shape or not torch.isfinite(images).all():
        raise RuntimeError(
            f"attack {attack.name!r} returned images of shape {tuple(images.shape)} "
            f"(want N x {problem.image_shape}) or with non-finite pixels"
        )
    return Reconstruction(
        attack.name, images.clamp(0, 1), labels.cpu(), cost, cfg, list(problem.skipped), extra
    )


def _save(path: Path, r: Reconstruction) -> None:
    """Keep a result: its images and labels, its tensor extras, and every extra that JSON can hold
    (the last loss terms); the rest (a trained generator) is not kept."""
    tensors = {"images": r.images, "labels": r.labels}
    tensors |= {f"extra.{k}": v for k, v in r.extra.items() if isinstance(v, torch.Tensor)}
    kept = {}
    for k, v in r.extra.items():
        if not isinstance(v, (torch.Tensor, nn.Module)):
            try:
                kept[k] = json.loads(json.dumps(v))
            except (TypeError, ValueError):
                pass
    store.save_tensors(
        path, tensors, {"cost": r.cost, "settings": r.settings, "skipped": r.skipped, "extra": kept}
    )


def _load(path: Path, name: str) -> Reconstruction:
    saved, meta = store.load_tensors(path), store.load_meta(path)
    extra = meta.get("extra", {}) | {
        k.removeprefix("extra."): v for k, v in saved.items() if k.startswith("extra.")
    }
    return Reconstruction(
        name,
        saved["images"],
        saved["labels"],
        meta["cost"],
        meta["settings"],
        meta["skipped"],
        extra,
    )


@contextlib.contextmanager
def frozen(model: nn.Module):
    """The model in eval mode with no parameter needing a gradient; both restored afterwards,
    module by module (``model.train(flag)`` would impose one mode on every submodule)."""
    modes = [(m, m.training) for m in model.modules()]
    trainable = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), trainable):
            p.requires_grad_(flag)
        for m, flag in modes:
            m.training = flag
