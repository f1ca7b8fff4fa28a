"""tldr_utils: the thin library behind the TLDR notebooks.

One concern per module: ``config`` (profiles, paths, seeding), ``data``
(datasets and their provenance), ``store`` (atomic artifacts), ``models``
(classifiers and the conditioned generator), ``targets`` (training target
classifiers), ``inversion`` (generator training and every loss term),
``metrics`` (leakage and utility), ``plotting`` (grids, schematics).
"""

__version__ = "0.1.0"
