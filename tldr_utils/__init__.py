"""tldr_utils: the thin library behind the TLDR notebooks.

Layers, each importing only those below it:

- bottom: ``rules`` (what a valid setting is), ``config`` (paths, profiles, seeding),
  ``training`` (the training toolkit), ``store`` (atomic artifacts), ``hooks``;
- middle: ``data`` (the dataset registry; ``datasets`` the built-in records, ``readers``
  their files), ``models``, ``inversion`` (generator training and its loss terms),
  ``sampling``, ``attacks`` (every attack behind one interface), ``quality`` (realism,
  variety, utility), ``metrics`` (leakage), ``membership`` (the loss attack and offline
  LiRA), ``targets``, ``sweep``, ``experiments``,
  ``cells`` (the sweeps' units of work), ``regime`` and ``regime_sweep``, ``defence``,
  ``architectures``, ``auditing`` (``audit``: any classifier in, a verdict out);
- top: ``edge`` (profiles become settings objects), ``plotting``, ``findings`` and
  ``tables`` (the results), ``report`` (publishing them), ``bench``, ``__main__``.

The modules that own a choice (datasets, architectures, attacks, methods, regimes) add the
rules of their settings when imported; they are imported here, so that every profile can
be checked whatever module a user imports first.
"""

from . import attacks, data, datasets, experiments, models, regime
from .auditing import audit

data.register(*datasets.BUILTIN)

__version__ = "0.1.0"
__all__ = ["attacks", "audit", "data", "datasets", "experiments", "models", "regime"]
