"""tldr_utils: the thin library behind the TLDR notebooks.

Layers, each importing only those below it:

- bottom: ``rules`` (what a valid setting is), ``config`` (paths, profiles, seeding),
  ``training`` (the training toolkit), ``store`` (atomic artifacts), ``hooks``;
- middle: ``data`` (datasets and their provenance), ``models``, ``inversion`` (generator
  training and its loss terms), ``attacks`` (every attack behind one interface),
  ``metrics``, ``targets``, ``sweep``, ``experiments``, ``regime``, ``defence``,
  ``architectures``, ``auditing`` (``audit``: any classifier in, a verdict out);
- top: ``edge`` (profiles become settings objects), ``plotting``, ``report``, ``bench``.

The modules that own a choice (datasets, architectures, attacks, methods, regimes) add the
rules of their settings when imported; they are imported here, so that every profile can
be checked whatever module a user imports first.
"""

from . import attacks, data, datasets, experiments, models, regime  # noqa: F401  (owners of settings rules)
from .auditing import audit

data.register(*datasets.BUILTIN)

__version__ = "0.1.0"
__all__ = ["audit"]
