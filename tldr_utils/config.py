"""Profiles, paths and seeding: the one place for run-wide settings.

A profile is a JSON file in ``profiles/``. It has a ``common`` section and one
section per notebook; ``"extends": "cpu"`` starts from another profile and
replaces the settings it names (each whole: a dict setting is not merged).
``settings(profile, section, overrides)`` flattens ``common`` and the section into one dict
and rejects unknown keys.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from . import rules

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
            raise AttributeError(
                f"no setting {key!r}; settings are: {', '.join(sorted(self))}"
            ) from None


def profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def _merge(base: dict, extra: dict) -> dict:
    """Sections merge; a setting named in ``extra`` replaces the base's value whole."""
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for key, value in extra.items():
        out[key] = (
            {**out[key], **value}
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def check_profile(name) -> str:
    """``name`` if it is the name of a profile file, else a ValueError with the valid names: a
    profile name also names a run folder, so a path (``../x``, ``/tmp/x``) must never pass."""
    if not isinstance(name, str) or name not in profiles():
        raise ValueError(
            f"unknown profile {name!r}; choose one of {', '.join(profiles())} (the files in "
            f"{PROFILE_DIR}, named without their folder or .json)"
        )
    return name


def load_profile(name: str) -> dict:
    """The whole profile ``name``, with ``extends`` resolved."""
    raw = json.loads((PROFILE_DIR / f"{check_profile(name)}.json").read_text())
    parent = raw.pop("extends", None)
    return _merge(load_profile(parent), raw) if parent else raw


def settings(profile: str, section: str, overrides: dict | None = None) -> Settings:
    """``common`` plus ``section`` of ``profile``, then ``overrides``, checked."""
    full = load_profile(profile)
    if section not in full:
        sections = [k for k in full if k not in ("common", "description")]
        raise ValueError(
            f"profile {profile!r} has no section {section!r}; sections: {', '.join(sections)}"
        )
    cfg = {**full["common"], **full[section]}
    if overrides is not None and not isinstance(overrides, dict):
        raise ValueError(
            f"overrides must be a mapping of settings to values, e.g. {{'steps': 3}}, got "
            f'{overrides!r}; with papermill: -y "overrides: {{steps: 3}}"'
        )
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for {section}; "
            f"valid: {', '.join(sorted(cfg))}"
        )
    for key, value in overrides.items():
        if isinstance(cfg[key], dict) and key == "weights":
            if not isinstance(value, dict):
                raise ValueError(
                    f"weights must be a dict of loss weights, e.g. {{'tv': 0}}; got {value!r}"
                )
            bad = sorted(set(value) - set(cfg[key]))
            if bad:
                raise ValueError(
                    f"unknown loss weight(s) {', '.join(map(repr, bad))}; valid: "
                    f"{', '.join(cfg[key])}"
                )
            value = {**cfg[key], **value}
        cfg[key] = value
    rules.check(cfg, f"profile {profile!r}, section {section!r}")
    return Settings(cfg, profile=profile, section=section)


def attack_section(profile: str, name: str) -> dict:
    """Where ``profile`` keeps the settings of attack ``name``: the section named like it (with
    ``common``), or else its entry in the ``attacks`` section. ``attacks.configure`` keeps the
    attack's own keys and checks them."""
    full = load_profile(profile)
    if name in full:
        return dict(settings(profile, name))
    return dict(settings(profile, "attacks").get(name, {}))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device(cfg: dict | None = None) -> torch.device:
    """``cfg['device']``, where "auto" means CUDA when present, else CPU."""
    name = (cfg or {}).get("device", "auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(name)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} was asked for, but this machine has no CUDA device; "
            "use 'auto' (CUDA when present, else the CPU) or 'cpu'"
        )
    return chosen


def run_dir(profile: str) -> Path:
    """Where everything of a profile's run goes: ``runs/<profile>``, or ``$TLDR_RUNS/<profile>``."""
    path = Path(os.environ.get("TLDR_RUNS", ROOT / "runs")) / check_profile(profile)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(
            f"cannot create the run folder {path}: {err.strerror or err}. Choose a writable one "
            "with the environment variable TLDR_RUNS, e.g. TLDR_RUNS=/tmp/runs make figures"
        ) from err
    return path
