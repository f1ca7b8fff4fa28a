"""Test-run settings for the notebooks that ``make test`` runs under nbval in two processes."""

import pytest

# 05 draws the samples that 02 and 03 save, against the targets of 01: these four run in one
# process, in this order; every other notebook runs whole in whichever process is free.
PAPER_FIGURES = ("01_", "02_", "03_", "05_")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.suffix == ".ipynb":
            group = "paper_figures" if item.path.name.startswith(PAPER_FIGURES) else item.path.stem
            item.add_marker(pytest.mark.xdist_group(group))
