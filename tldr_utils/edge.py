"""The edge: a profile's name becomes settings objects here, once, at the top of a notebook or
command.

Every notebook starts with ``cfg = edge.setup(section, profile, overrides, globals())``:
its section's settings (checked), the seed set, the figure style applied. What the
library then receives is objects: settings, a run folder, a model.
"""

from __future__ import annotations

import types

from . import attacks, auditing, config, plotting

# what a Jupyter kernel itself puts in a notebook's namespace, each with the kind of value it puts
# there: a parameter of that name (``-p open 1``) has another kind, and is refused like any other
_KERNEL_NAMES = {
    "In": list,
    "Out": dict,
    "get_ipython": callable,
    "exit": callable,
    "quit": callable,
    "open": callable,
}


def _kernels(name: str, value) -> bool:
    kind = _KERNEL_NAMES.get(name)
    return kind is not None and (kind(value) if kind is callable else isinstance(value, kind))


def setup(
    section: str,
    profile: str = config.DEFAULT_PROFILE,
    overrides: dict | None = None,
    namespace: dict | None = None,
) -> config.Settings:
    """Settings of ``section``, seed and figure style: the one call at the top of every notebook.

    ``namespace`` (the notebook's ``globals()``) lets it refuse parameters that
    papermill injected but the notebook does not know (papermill only warns).
    """
    if namespace is not None:
        stray = sorted(
            k
            for k, v in namespace.items()
            if not k.startswith("_")
            and k not in ("profile", "overrides")
            and not _kernels(k, v)
            and not isinstance(v, (types.ModuleType, types.FunctionType, type))
        )
        if stray:
            raise ValueError(
                f"unknown notebook parameter(s) {', '.join(stray)}: this notebook takes "
                f"'profile' ({', '.join(config.profiles())}) and 'overrides', a dict of settings"
            )
    cfg = config.settings(profile, section, overrides)
    config.seed_everything(cfg.seed)
    plotting.set_style()
    return cfg


def attack_settings(profile: str, name: str, overrides: dict | None = None) -> dict:
    """The settings of attack ``name`` that ``profile`` gives, then ``overrides``, checked."""
    return attacks.configure(name, config.attack_section(profile, name), overrides)


def audit_settings(profile: str, overrides: dict | None = None) -> dict:
    """The one settings dict that ``audit`` takes, as ``profile`` gives it: its ``audit`` section
    (then ``overrides``), the judge's recipe from ``train_targets``, and every weight attack's
    settings at the audit's budget."""
    cfg = config.settings(profile, "audit", overrides)
    recipe = config.settings(profile, "train_targets")
    out = {k: cfg[k] for k in auditing.DEFAULTS if k in cfg}
    out |= {k: recipe[k] for k in auditing.DEFAULTS if k not in cfg and k in recipe}
    out |= {
        name: attack_settings(profile, name, attacks.budget(name, cfg)) for name in attacks.ATTACKS
    }
    return out
