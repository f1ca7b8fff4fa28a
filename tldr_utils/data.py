"""Datasets and their provenance: every image set the notebooks use comes from here.

A dataset is a ``Dataset`` record, registered by name (the built-in ones are ``datasets.BUILTIN``).
``load_dataset(name, split)`` tries its sources in order (files under ``data/``, a system copy),
then its download, and records the place it used in ``ImageSet.source``. Every reader checks what it
reads, so a damaged file raises ``CorruptDataset`` naming the file instead of a reshape error deep
inside numpy.

Command line: ``python -m tldr_utils fetch NAME [NAME ...]``
and ``python -m tldr_utils datasets``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import rules
from .config import DATA_DIR, ROOT

SPLITS = ("train", "test")
DATASETS: dict[
    str, Dataset
] = {}  # filled by ``register``: the built-in ones are ``datasets.BUILTIN``


def _sizes_ok(v) -> bool:
    """A list of sizes, or (in ``train_targets``) a dict of such lists by dataset."""
    if isinstance(v, dict):
        return all(k in DATASETS and _SIZES[0](s) for k, s in v.items())
    return _SIZES[0](v)


_SIZES = rules.list_of(rules.SIZE)
_DATASET = rules.choice(lambda: DATASETS)
rules.add(
    {
        "datasets": rules.list_of(_DATASET),
        "dataset": _DATASET,
        "shift_dataset": _DATASET,
        "train_sizes": (
            _sizes_ok,
            "a non-empty list of training-set sizes (whole numbers >= 1, or null for all); "
            "in train_targets, a dict of such lists by dataset",
        ),
        "min_test_accuracy": (
            lambda v: (
                isinstance(v, dict)
                and all(k in DATASETS and rules.real(0, 1)[0](a) for k, a in v.items())
            ),
            "a dict from dataset name to an accuracy between 0 and 1",
        ),
    }
)


class DatasetUnavailable(FileNotFoundError):
    """No source of a dataset worked; the message lists each place tried and the command that gets
    it."""


class CorruptDataset(ValueError):
    """A dataset file exists but cannot be trusted; the message names the file and what is wrong."""


@dataclass(eq=False)  # eq=False: comparing tensors field by field has no single truth value
class ImageSet:
    """Images (uint8, N x C x H x W) with int64 labels and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str
    split: str
    source: str
    _sha256: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"ImageSet {self.name!r}: images must be uint8 N x C x H x W, "
                f"got {self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.images),):
            raise ValueError(
                f"ImageSet {self.name!r}: labels must be int64 of shape ({len(self.images)},), "
                f"got {self.labels.dtype} of shape {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"ImageSet(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape={tuple(self.images.shape[1:])}, source={self.source!r})"
        )

    def float(self) -> torch.Tensor:
        """The images as float32 in [0, 1]."""
        return self.images.float() / 255

    def subset(self, idx) -> ImageSet:
        """The rows ``idx`` (indices or a boolean mask) with the same metadata."""
        idx = torch.as_tensor(idx)
        if idx.dtype != torch.bool:
            idx = idx.long().reshape(-1)  # a single index still gives an N x C x H x W set
        return ImageSet(
            self.images[idx], self.labels[idx], self.classes, self.name, self.split, self.source
        )

    def provenance(self) -> dict:
        """What to record next to a result so the exact data can be checked later.

        The hash is computed once and cached: treat ``images`` and ``labels`` as read-only.
        """
        if self._sha256 is None:  # hashing all of CIFAR-10 takes a while; do it once
            digest = hashlib.sha256()
            digest.update(self.images.cpu().contiguous().numpy())
            digest.update(self.labels.cpu().contiguous().numpy())
            self._sha256 = digest.hexdigest()
        counts = torch.bincount(self.labels, minlength=len(self.classes))
        return {
            "name": self.name,
            "split": self.split,
            "source": self.source,
            "n": len(self),
            "class_counts": counts.tolist(),
            "sha256": self._sha256,
        }


# ---------------------------------------------------------------- the records


@dataclass(frozen=True)
class Source:
    """One place a dataset may already be, without downloading."""

    source: str  # what ImageSet.source says
    missing: Callable[[str], list[str]]  # what is absent for a split; [] means readable
    read: Callable[
        [str], tuple[torch.Tensor, torch.Tensor]
    ]  # a split's uint8 images and int64 labels
    fix: str  # how to replace it when it is damaged
    classes: Callable[[], tuple[str, ...]] | None = (
        None  # class names read from the files, if they hold them
    )


@dataclass(frozen=True)
class Dataset:
    """A dataset: its class names, the places it may already be (``sources(root)``, in order
    of preference), the lines that tell a user how to get it (``how_to_get(root)``), and,
    where it has them, an offline ``fetch(root)`` and a ``download(root)`` into the layout of
    its first source. ``fetch`` and ``download`` raise with the reason when they fail."""

    name: str
    classes: tuple[str, ...]
    sources: Callable[[Path], list[Source]]
    how_to_get: Callable[[Path], list[str]]
    fetch: Callable[[Path], None] | None = None
    download: Callable[[Path], None] | None = None


def register(*records: Dataset) -> None:
    """Make datasets loadable by name (``load_dataset``) and choosable in a profile."""
    for d in records:
        if not isinstance(d, Dataset):
            raise TypeError(f"register takes Dataset records, got {d!r}")
        if d.name in DATASETS:
            raise ValueError(f"a dataset named {d.name!r} is already registered")
        DATASETS[d.name] = d


def get(name: str) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


# ---------------------------------------------------------------- what every reader shares


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    return split


def _root(root: str | Path | None) -> Path:
    return DATA_DIR if root is None else Path(root)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise CorruptDataset(
            f"{path}: sha256 is {actual}, expected {expected}; "
            f"the file is damaged or another version"
        )


def as_tensors(images: np.ndarray, labels: np.ndarray, path: Path, num_classes: int = 10):
    """uint8 images and int64 labels as tensors, after the checks every reader shares."""
    if len(images) != len(labels):
        raise CorruptDataset(f"{path}: {len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise CorruptDataset(
            f"{path}: labels range over {labels.min()}..{labels.max()}, "
            f"expected 0..{num_classes - 1}"
        )
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if not images.flags.writeable:  # a view of file bytes; torch wants memory it may write
        images = images.copy()
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def fixed_split(labels: torch.Tensor, test_per_class: int, split: str, path: Path) -> torch.Tensor:
    """Sorted indices of ``split`` for data that ships without one.

    One generator seeded 0 shuffles each class in turn (classes in ascending
    order); the first ``test_per_class`` of each class are the test split.
    """
    gen = torch.Generator().manual_seed(0)
    test, train = [], []
    for c in range(int(labels.max()) + 1):
        members = (labels == c).nonzero().flatten()
        if len(members) <= test_per_class:
            raise CorruptDataset(
                f"{path}: class {c} has {len(members)} images, "
                f"too few to hold out {test_per_class} for the test split"
            )
        members = members[torch.randperm(len(members), generator=gen)]
        test.append(members[:test_per_class])
        train.append(members[test_per_class:])
    return torch.cat(test if split == "test" else train).sort().values


def shown(path: Path) -> str:
    """``path`` as a source names it: relative to the project when inside it, so that
    committed captions and provenance do not carry one machine's directories."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def files_missing(*paths: Path) -> list[str]:
    return [str(p) for p in paths if not p.is_file()]


def run(cmd: list[str], **kwargs) -> None:
    """``cmd``, which must succeed; a missing program is named with what needed it."""
    if shutil.which(cmd[0]) is None:
        raise FileNotFoundError(f"{cmd[0]!r} is not installed (needed for: {' '.join(cmd)})")
    subprocess.run(cmd, check=True, **kwargs)


# ---------------------------------------------------------------- loading


def _how_to_get(d: Dataset, root: Path) -> str:
    lines = [f"get it with: make data DATASETS={d.name}", *d.how_to_get(root)]
    if root != DATA_DIR:  # make data fills DATA_DIR only
        lines.append(f"for this folder: python -m tldr_utils --root {root} fetch {d.name}")
    return "\n".join(lines)


def _unavailable(d: Dataset, split: str, root: Path, tried: list[str]) -> DatasetUnavailable:
    places = "\n".join(f"  - {t}" for t in tried)
    return DatasetUnavailable(
        f"dataset {d.name!r} ({split} split) is not available. Looked in:\n{places}\n"
        f"{_how_to_get(d, root)}"
    )


def _read_from(source: Source, d: Dataset, split: str) -> ImageSet:
    try:
        images, labels = source.read(split)
        classes = source.classes() if source.classes else d.classes
    except CorruptDataset as err:
        err.add_note(f"to replace it: {source.fix}")
        raise
    return ImageSet(images, labels, classes, d.name, split, source.source)


def load_dataset(
    name: str, split: str = "train", root: str | Path | None = None, download: bool = True
) -> ImageSet:
    """``split`` of dataset ``name`` from the first of its sources that has it, else downloaded
    into ``root`` (default ``data/``) where the dataset can be and ``download`` allows."""
    d = get(name)
    _check_split(split)
    root = _root(root)
    tried = []
    for source in d.sources(root):
        missing = source.missing(split)
        if not missing:
            return _read_from(source, d, split)
        tried.append(f"{source.source}: missing {', '.join(missing)}")
    if d.download is None:
        raise _unavailable(d, split, root, tried)
    if not download:
        tried.append("download: not attempted (download=False)")
        raise _unavailable(d, split, root, tried)
    try:
        d.download(root)
    except Exception as err:  # no internet, a mirror down, a full disk: all end up in the message
        tried.append(f"download into {root}: failed ({type(err).__name__}: {err})")
        raise _unavailable(d, split, root, tried) from err
    first = d.sources(root)[0]
    if first.missing(split):
        tried.append(
            f"download into {root}: finished, but {', '.join(first.missing(split))} still missing"
        )
        raise _unavailable(d, split, root, tried)
    return _read_from(first, d, split)


def _complete(source: Source) -> bool:
    return not source.missing("train") and not source.missing("test")


def available(name: str, root: str | Path | None = None) -> bool:
    """Whether both splits of ``name`` load without downloading (checks that files exist, not their
    content)."""
    return any(_complete(source) for source in get(name).sources(_root(root)))


def local_source(name: str, root: Path) -> str | None:
    """The source ``load_dataset`` would use now, if any."""
    return next((source.source for source in get(name).sources(root) if _complete(source)), None)


def stratified_subset(labels: torch.Tensor, size: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of ``size`` items, the same number from every class present; None means
    all."""
    labels = torch.as_tensor(labels).cpu()
    if size is None:
        return torch.arange(len(labels))
    classes, counts = torch.unique(labels, return_counts=True)
    k = len(classes)
    if k == 0 or size <= 0 or size % k:
        raise ValueError(
            f"size {size} must be a positive multiple of the {k} classes present, "
            f"e.g. {k * max(1, size // max(k, 1))}; or None for all {len(labels)}"
        )
    per_class = size // k
    smallest = int(counts.argmin())
    if counts[smallest] < per_class:
        raise ValueError(
            f"size {size} needs {per_class} per class, but class {int(classes[smallest])} has only "
            f"{int(counts[smallest])}; the largest balanced size is {k * int(counts[smallest])}"
        )
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in classes:
        members = (labels == c).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.cat(chosen).sort().values


def heldout_indices(
    labels: torch.Tensor, per_class: int, seed: int, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """Sorted indices of ``per_class`` items of every class, none of them in ``exclude``."""
    labels = torch.as_tensor(labels).cpu()
    if per_class <= 0:
        raise ValueError(f"per_class must be positive, got {per_class}")
    allowed = torch.ones(len(labels), dtype=torch.bool)
    if exclude is not None:
        allowed[torch.as_tensor(exclude).cpu()] = False
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels):
        members = ((labels == c) & allowed).nonzero().flatten()
        if len(members) < per_class:
            raise ValueError(
                f"class {int(c)} has only {len(members)} items outside exclude, fewer than "
                f"per_class={per_class}; lower per_class to at most {len(members)}"
            )
        chosen.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.cat(chosen).sort().values


# ---------------------------------------------------------------- fetching


def fetch(name: str, root: str | Path | None = None) -> None:
    """Get ``name`` into ``root`` (or onto the system) so that ``load_dataset`` needs no download:
    its offline fetch first (which checks what it fetched), then its download."""
    d = get(name)
    root = _root(root)
    if _complete(d.sources(root)[0]):
        return
    problems = []
    if d.fetch is not None:
        try:
            d.fetch(root)
        except (OSError, subprocess.CalledProcessError, CorruptDataset) as err:
            problems.append(f"{type(err).__name__}: {err}")
    if available(name, root):
        return
    if d.download is not None:
        try:
            d.download(root)
        except Exception as err:  # reported together with the other attempts below
            problems.append(f"download into {root}: {type(err).__name__}: {err}")
    if not available(name, root):
        raise DatasetUnavailable(
            f"could not fetch {name!r} into {root}:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + f"\n{_how_to_get(d, root)}"
        )
