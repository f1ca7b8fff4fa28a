"""The command line: ``python -m tldr_utils fetch NAME [NAME ...]`` gets datasets so that
loading needs no download (what ``make data`` runs); ``python -m tldr_utils datasets`` lists
each registered dataset, whether it is here, and from where; ``python -m tldr_utils audit``
audits a classifier from its files (``audit_command``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tldr_utils import audit_command, data


def _summary(name: str, root: Path) -> str:
    sets = [data.load_dataset(name, split, root, download=False) for split in data.SPLITS]
    counts = ", ".join(f"{s.split} {len(s):,}" for s in sets)
    return f"{name}: {counts}; shape {tuple(sets[0].images.shape[1:])}; from {sets[0].source}"


def _fetch(names: list[str], root: Path) -> int:
    failed = []
    for name in names:
        try:
            data.fetch(name, root)
            print(_summary(name, root))
        except (data.DatasetUnavailable, data.CorruptDataset) as err:
            notes = "".join(f"\n{note}" for note in getattr(err, "__notes__", []))
            print(f"{name}: FAILED\n{err}{notes}", file=sys.stderr)
            failed.append(name)
    if failed:
        print(f"could not fetch: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tldr_utils", description=__doc__.split(";")[0])
    parser.add_argument(
        "--root", type=Path, default=data.DATA_DIR, help=f"data folder (default {data.DATA_DIR})"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetching = commands.add_parser("fetch", help="get datasets so that loading needs no download")
    fetching.add_argument(
        "names",
        nargs="+",
        choices=list(data.DATASETS),
        metavar="NAME",
        help=", ".join(data.DATASETS),
    )
    commands.add_parser("datasets", help="each dataset, whether it is here, and from where")
    audit_command.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "audit":
        return audit_command.main(args)
    if args.command == "fetch":
        return _fetch(args.names, args.root)
    for name in data.DATASETS:
        source = data.local_source(name, args.root)
        print(f"{name:14} {'yes' if source else 'no ':3}  {source or f'make data DATASETS={name}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
