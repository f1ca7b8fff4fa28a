"""tldr_utils: the thin library behind the TLDR notebooks.

One concern per module: ``config`` (profiles, paths, seeding), ``data``
(datasets and their provenance), ``store`` (atomic artifacts), ``models``
(classifiers and the conditioned generator), ``targets`` (training target
classifiers), ``inversion`` (generator training and every loss term),
``metrics`` (leakage and utility), ``plotting`` (grids, schematics),
``hooks`` (features and batch-norm inputs read by forward hooks), ``attacks``
(every attack behind one interface) and ``auditing`` (``audit``: any classifier
in, reconstructions and a verdict out).
"""

__version__ = "0.1.0"


def __getattr__(name):  # ``tldr_utils.audit`` without importing torch for every ``import tldr_utils``
    if name == "audit":
        from .auditing import audit
        return audit
    raise AttributeError(f"module 'tldr_utils' has no attribute {name!r}")
