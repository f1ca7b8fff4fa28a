"""Publishing a run: its figures and its results tables (``tables``), from its ``metrics.csv``.

``python -m tldr_utils.report --profile cpu`` (``make figures`` runs it last) rewrites the
generated part of RESULTS.md and the README's run times and audit cost; nothing in them is typed
by hand.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd

from . import config, store, tables

START, END = "<!-- results:start -->", "<!-- results:end -->"  # RESULTS.md's generated part
TIMES = (
    "<!-- times:start -->",
    "<!-- times:end -->",
)  # the README's sentence on how long the run took
COST = "<!-- audit-cost:start -->", "<!-- audit-cost:end -->"  # and on what the audit costs
RESULTS, README = config.ROOT / "RESULTS.md", config.ROOT / "README.md"
FIGURES = config.ROOT / "figures"  # what a default run publishes


def replace_between(path: Path, start: str, end: str, body: str) -> None:
    """Replace what lies between the markers ``start`` and ``end`` of the file ``path`` with
    ``body``."""
    text = path.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{path} lacks the markers {start} and {end} around its generated part")
    head, rest = text.split(start, 1)
    with store.atomic_path(path) as tmp:
        tmp.write_text(head + start + "\n" + body + "\n" + end + rest.split(end, 1)[1])


def update_results(profile: str, results: Path | None = None, readme: Path | None = None) -> None:
    """RESULTS.md's tables and the README's run times, from the run of ``profile``."""
    path = config.run_dir(profile) / "metrics.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make figures PROFILE={profile}` first")
    metrics = pd.read_csv(path, dtype={"train_size": str})
    replace_between(results or RESULTS, START, END, tables.tables(metrics, profile))
    replace_between(readme or README, *TIMES, tables.times(profile))
    replace_between(readme or README, *COST, tables.audit_cost())


def publish(profile: str, datasets: list[str] | None = None) -> list[Path]:
    """Write a run's results where they belong, and return what was written.

    Every run gets ``runs/<profile>/results.md`` (RESULTS.md's tables for that run).
    Only a full run of the default profile (every dataset the profile names)
    updates what is committed: ``figures/`` (each figure and ``metrics.csv``) and
    RESULTS.md and the README's run times. A smoke run, a paper run or a run on some of the
    datasets leaves them as they are, so a trial never overwrites the published numbers.
    """
    run = config.run_dir(profile)
    path = run / "metrics.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make figures PROFILE={profile}` first")
    with store.atomic_path(run / "results.md") as tmp:
        tmp.write_text(tables.tables(pd.read_csv(path, dtype={"train_size": str}), profile) + "\n")
    written = [run / "results.md"]
    every = config.settings(profile, "make_figures").datasets
    if profile != config.DEFAULT_PROFILE or (datasets and sorted(datasets) != sorted(every)):
        return written
    for source in sorted((run / "figures").glob("*")) + [path]:
        target = FIGURES / source.name
        with store.atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        written.append(target)
    update_results(profile)
    return written + [RESULTS, README]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default=config.DEFAULT_PROFILE, choices=config.profiles())
    parser.add_argument(
        "--datasets", nargs="*", help="the datasets the run covered (default: all of the profile's)"
    )
    args = parser.parse_args(argv)
    written = publish(args.profile, args.datasets)
    run = config.run_dir(args.profile)
    if RESULTS in written:
        print(
            f"figures/ ({len(written) - 3} files), RESULTS.md and the README's run times updated "
            f"from {run}"
        )
    else:
        print(
            f"results of this run: {run / 'figures'} and {run / 'results.md'}. figures/ and "
            f"RESULTS.md "
            f"are updated only by a full run of the default profile (make figures)"
        )


if __name__ == "__main__":
    main()
