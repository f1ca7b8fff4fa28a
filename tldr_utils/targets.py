"""Target classifiers: trained once per configuration, cached in ``runs/<profile>/targets``.

A target is named by (dataset, architecture, training-set size, seed) and the profile's
``train_targets`` settings; its checkpoint's file name carries a hash of all of them, so changing
any setting trains a new one instead of reusing a stale file.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from . import config, data, store, sweep
from .models import ARCHS, build_classifier
from .training import accuracy, train_classifier


def size_label(train_size: int | None):
    """How a training-set size is named in file names and metrics: None is "all"."""
    return "all" if train_size is None else train_size


def training_indices(train: data.ImageSet, train_size: int | None, seed: int) -> torch.Tensor:
    """Which training images a target of this size and seed was trained on."""
    return data.stratified_subset(train.labels, train_size, seed)


def spec(
    recipe: dict,
    dataset: str,
    arch: str,
    train_size: int | None = None,
    seed: int = 0,
    trained: bool = True,
) -> dict:
    """The plain description of a target trained by ``recipe`` (a profile's ``train_targets``
    settings): what ``train`` takes, and what a sweep cell carries."""
    return {
        "dataset": dataset,
        "arch": arch,
        "train_size": train_size,
        "seed": seed,
        "steps": recipe["steps"] if trained else 0,
        "batch_size": recipe["batch_size"],
        "lr": recipe["lr"],
        "shift": 0,
        "device": recipe["device"],
    }


def evaluator_arch(recipe: dict, target_arch: str) -> str:
    """The judge's architecture: the recipe's ``eval_arch``, unless that is the target's."""
    eval_arch = recipe["eval_arch"]
    return eval_arch if eval_arch != target_arch else next(a for a in ARCHS if a != target_arch)


def evaluator_spec(recipe: dict, dataset: str, target_arch: str) -> dict:
    """The plain description of the independent judge of reconstructions from targets of
    ``target_arch``: another architecture, another seed, all the data.

    It is trained for ``eval_steps`` on images moved by up to ``eval_shift`` pixels: the
    generators are trained to hold their class under such moves (their ``shift``), so
    where a sample sits within a few pixels is arbitrary, and a judge that is not
    tolerant of it would score placement rather than content. The first ``get`` of it
    trains it (minutes on a CPU: it says how long before it starts) and caches it."""
    judge = spec(recipe, dataset, evaluator_arch(recipe, target_arch), None, recipe["eval_seed"])
    return {**judge, "steps": recipe["eval_steps"], "shift": recipe["eval_shift"]}


def train(
    folder,
    dataset: str,
    arch: str,
    train_size: int | None,
    seed: int,
    steps: int,
    batch_size: int,
    lr: float,
    shift: int = 0,
    device: str = "auto",
):
    """The classifier of ``arch`` trained for ``steps`` minibatches of ``batch_size`` (0: the
    untrained control, same architecture, random weights) on ``train_size`` images of ``dataset``
    chosen by ``seed`` (None: all), each moved by up to ``shift`` pixels; cached in
    ``<folder>/targets`` under a hash of every choice, so changing any one trains a new one instead
    of reusing a stale file. Returns ``(net, meta)``; ``meta`` holds the settings, training-set
    size, train and test accuracy, data provenance and training time. Two processes that need the
    same target at once train it once: the second waits for the first and loads its checkpoint."""
    train_set = data.load_dataset(dataset, "train")
    test = data.load_dataset(dataset, "test")
    idx = training_indices(train_set, train_size, seed)
    spec = {
        "dataset": dataset,
        "arch": arch,
        "train_size": train_size,
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "data_sha256": train_set.provenance()["sha256"],
    }
    if shift:  # only then, so that unaugmented targets keep their cache names
        spec["shift"] = shift
    name = f"{dataset}_{arch}_n{size_label(train_size)}_s{seed}_{store.config_hash(spec)}"
    path = Path(folder) / "targets" / f"{name}.safetensors"
    torch.manual_seed(seed)
    net = build_classifier(arch, tuple(train_set.images.shape[1:]), len(train_set.classes))
    if path.exists():
        return net.eval(), store.load_model(path, net)
    with store.exclusive(path):
        if path.exists():  # another process trained it while this one waited
            return net.eval(), store.load_model(path, net)
        dev = config.device({"device": device})
        x, y = train_set.float()[idx], train_set.labels[idx]
        start = time.time()
        desc = f"{dataset}/{arch}/n={len(idx)}/seed={seed}"
        if steps:
            print(f"training {desc} for {steps} steps of {batch_size} -> {path}", flush=True)
        train_classifier(
            net, x, y, steps, batch_size, lr, seed, dev, desc, shift, announce=steps >= 500
        )
        eval_n = min(len(x), 10000)
        meta = {
            **spec,
            "n_train": len(idx),
            "seconds": round(time.time() - start, 1),
            "train_accuracy": accuracy(net, x[:eval_n], y[:eval_n], dev),
            "test_accuracy": accuracy(net, test.float(), test.labels, dev),
            "data": train_set.provenance(),
        }
        store.save_model(path, net.cpu(), meta)
    print(
        f"{desc}: train acc {meta['train_accuracy']:.3f}, test acc {meta['test_accuracy']:.3f} "
        f"in {meta['seconds']:.0f}s -> {path.name}"
    )
    return net.eval(), meta


def target_cell(folder, **target) -> sweep.Result:
    """A sweep cell: train (or load) the target ``target`` (``spec``'s keys) and report its train
    and test accuracy as metric rows (method ``target``)."""
    _, meta = train(folder, **target)
    key = {
        "dataset": meta["dataset"],
        "arch": meta["arch"],
        "method": "target",
        "train_size": size_label(meta["train_size"]),
        "seed": meta["seed"],
    }
    return sweep.Result(
        [{**key, "metric": m, "value": meta[m]} for m in ("train_accuracy", "test_accuracy")],
        notes=[f"trained in {meta['seconds']:.0f}s" if meta.get("seconds") else "loaded"],
    )


def get(folder, spec: dict):
    """``(net, meta)`` of the classifier that ``spec`` describes (``spec``, ``evaluator_spec``),
    trained in ``folder`` the first time (``train``) and loaded from there afterwards."""
    return train(folder, **spec)
