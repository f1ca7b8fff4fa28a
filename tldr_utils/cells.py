"""The sweeps' units of work: each cell takes plain descriptions (a target's spec, a judge's
spec, an attack's settings, a run folder) and returns metric rows and tensors
(``sweep.Result``), so that ``sweep.run`` can cache it and run it in another process.

- notebook 04: ``leakage_cell``, ``controls_cell``, ``utility_cell``;
- notebook 06: ``attack_cell`` (every attack on one target);
- notebook 08: ``split_cell``.

Notebook 11's are in ``regime_sweep``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import attacks, config, data, experiments, metrics, quality, sweep, targets
from .attacks.optimisation import class_statistics
from .models import split_points


# ----------------------------------------------------------------- the leakage sweep's cells
# (notebook 04)
def reference_sets(dataset: str, train_size: int | None, seed: int, heldout_per_class: int) -> dict:
    """What a target's reconstructions are compared with: its training images (``train``), a
    held-out set of ``heldout_per_class`` test images of each class that no target saw
    (``heldout``), and a second, disjoint held-out set (``fresh``) that stands in for
    reconstructions in the held-out control. Each is a pair (images, labels)."""
    train, test = data.load_dataset(dataset, "train"), data.load_dataset(dataset, "test")
    idx = targets.training_indices(train, train_size, seed)
    held, fresh = experiments.heldout_and_fresh(test.labels, heldout_per_class, seed)
    return {
        "train": (train.float()[idx], train.labels[idx]),
        "heldout": (test.float()[held], test.labels[held]),
        "fresh": (test.float()[fresh], test.labels[fresh]),
    }


def leakage_rows(images, labels, refs: dict, judge, key: dict, seed: int) -> list[dict]:
    """``metrics.leakage_report`` of ``images`` against ``refs`` (``reference_sets``) as tidy rows
    under ``key``."""
    r = metrics.leakage_report(
        images, labels, *refs["train"], *refs["heldout"], evaluator=judge, seed=seed
    )
    return [{**key, "metric": m, "value": v} for m, v in r.items()]


def _key(target: dict, method: str, train_size, seed: int, setting: str) -> dict:
    return {
        "dataset": target["dataset"],
        "arch": target["arch"],
        "method": method,
        "train_size": targets.size_label(train_size),
        "seed": seed,
        "setting": setting,
    }


def leakage_cell(
    folder,
    method: str,
    target: dict,
    judge: dict,
    settings: dict,
    per_class: int,
    heldout_per_class: int,
    label: str | None = None,
    scored_at=None,
    keep: bool = False,
    setting: str = "sweep",
) -> sweep.Result:
    """A sweep cell: run generator attack ``method`` with ``settings`` (the attack's, resolved)
    against the target ``target`` (``targets.spec``; its seed is also the attack's), ``per_class``
    images of each class, and score its leakage with the evaluator ``judge`` against the references
    of ``scored_at``, a list of (training-set size, seed) pairs (default: the target's own). Rows
    carry method ``label`` (default ``method``). ``keep`` returns the images and labels as tensors.
    An untrained target (steps 0) is attacked without the check that the generator learned."""
    net, _ = targets.train(folder, **target)
    judge_net, _ = targets.train(folder, **judge)
    train = data.load_dataset(target["dataset"], "train")
    trained = target["steps"] > 0
    r = attacks.reconstruct(
        method,
        net,
        train.images.shape[1:],
        len(train.classes),
        per_class,
        {**settings, "require_learned": trained},
        target["seed"],
        config.device(target),
        cache=Path(folder) / "attacks",
    )
    rows = []
    for size, seed in scored_at or [(target["train_size"], target["seed"])]:
        refs = reference_sets(target["dataset"], size, seed, heldout_per_class)
        rows += leakage_rows(
            r.images,
            r.labels,
            refs,
            judge_net,
            _key(target, label or method, size, seed, setting),
            seed,
        )
    return sweep.Result(rows, {"images": r.images, "labels": r.labels} if keep else {})


def controls_cell(folder, target: dict, judge: dict, heldout_per_class: int) -> sweep.Result:
    """A sweep cell: the two stand-ins for reconstructions that need no attack, scored like one
    against the references of ``target`` (``targets.spec``): real held-out images
    (``control_heldout``) and uniform noise (``control_noise``)."""
    judge_net, _ = targets.train(folder, **judge)
    size, seed = target["train_size"], target["seed"]
    refs = reference_sets(target["dataset"], size, seed, heldout_per_class)
    fresh, fresh_labels = refs["fresh"]
    noise = torch.rand(len(fresh), *fresh.shape[1:], generator=torch.Generator().manual_seed(seed))
    return sweep.Result(
        leakage_rows(
            fresh,
            fresh_labels,
            refs,
            judge_net,
            _key(target, "control_heldout", size, seed, "sweep"),
            seed,
        )
        + leakage_rows(
            noise,
            fresh_labels,
            refs,
            judge_net,
            _key(target, "control_noise", size, seed, "sweep"),
            seed,
        )
    )


def utility_cell(
    folder, method: str, target: dict, settings: dict, per_class: int, steps: int, arch: str = "cnn"
) -> sweep.Result:
    """A sweep cell: a fresh ``arch`` classifier trained for ``steps`` only on what ``method`` (with
    ``settings``) recovers from ``target``, scored on the real test set (metric
    ``synthetic_utility``)."""
    net, _ = targets.train(folder, **target)
    train, test = (
        data.load_dataset(target["dataset"], "train"),
        data.load_dataset(target["dataset"], "test"),
    )
    device = config.device(target)
    r = attacks.reconstruct(
        method,
        net,
        train.images.shape[1:],
        len(train.classes),
        per_class,
        {**settings, "require_learned": True},
        target["seed"],
        device,
        cache=Path(folder) / "attacks",
    )
    acc = quality.synthetic_utility(
        r.images,
        r.labels,
        test.float(),
        test.labels,
        arch,
        steps,
        seed=target["seed"],
        device=device,
    )
    key = _key(target, method, target["train_size"], target["seed"], "sweep")
    return sweep.Result([{**key, "metric": "synthetic_utility", "value": acc}])


# ----------------------------------------------------------------- every attack on one target
# (notebook 06)
def attack_cell(
    folder,
    attack: str,
    target: dict,
    judge: dict,
    settings: dict,
    per_class: int,
    heldout_per_class: int,
    resamples: int,
    setting: str = "baselines",
) -> sweep.Result:
    """A sweep cell: weight attack ``attack`` (with ``settings``) against the target ``target``
    (``targets.spec``; its seed is also the attack's), ``per_class`` images of each class, scored
    by ``metrics.attack_scores`` with the evaluator ``judge`` against the target's training images
    and ``heldout_per_class`` held-out test images of each class. ``bn_classwise`` gets the class
    statistics of the training images. Returns the rows and the images (tensors ``images``,
    ``labels``) with the attack's cost in the rows (``cpu_seconds_per_image``, and for a generator
    ``train_cpu_seconds`` and ``sample_cpu_seconds_per_image``)."""
    net, _ = targets.train(folder, **target)
    judge_net, _ = targets.train(folder, **judge)
    train = data.load_dataset(target["dataset"], "train")
    device = config.device(target)
    refs = reference_sets(
        target["dataset"], target["train_size"], target["seed"], heldout_per_class
    )
    stats = (
        class_statistics(net, *refs["train"], device=device)
        if "class_stats" in attacks.get(attack).needs
        else None
    )
    r = attacks.reconstruct(
        attack,
        net,
        train.images.shape[1:],
        len(train.classes),
        per_class,
        settings,
        target["seed"],
        device,
        class_stats=stats,
        cache=Path(folder) / "attacks",
    )
    real = quality.penultimate_features(judge_net, refs["heldout"][0], device)
    scores = metrics.attack_scores(
        r.images,
        r.labels,
        net,
        judge_net,
        refs["train"],
        refs["heldout"],
        real,
        target["seed"],
        resamples,
        device,
    )
    scores["cpu_seconds_per_image"] = r.cost["cpu_seconds"] / len(
        r.images
    )  # a reused generator's: as if trained here
    scores |= {
        k: r.cost[k] for k in ("train_cpu_seconds", "sample_cpu_seconds_per_image") if k in r.cost
    }
    key = _key(target, attack, target["train_size"], target["seed"], setting)
    return sweep.Result(
        [{**key, "metric": m, "value": v} for m, v in scores.items()],
        {"images": r.images, "labels": r.labels},
    )


# ----------------------------------------------------------------- split computing (notebook 08)
def split_cell(
    folder,
    attack: str,
    target: dict,
    judge: dict,
    depth: int,
    seed: int,
    victims_per_class: int,
    aux_size: int,
    settings: dict,
    aux_dataset: str | None = None,
    label: str | None = None,
    strip: int = 0,
) -> sweep.Result:
    """A sweep cell: feature attack ``attack`` (with ``settings``) recovers private test images of
    the target's dataset from what the first ``depth`` blocks of the target ``target``
    (``targets.spec``) send to a server; ``seed`` picks ``victims_per_class`` victims of each class
    from the test split's first half and seeds the attack. The attacker's own images are
    ``aux_size`` images of the second half, or the first ``aux_size`` test images of
    ``aux_dataset``. Scored by ``metrics.paired_quality`` with the evaluator ``judge``; rows carry
    method ``label`` (default ``attack``) and setting ``split_depth<depth>``. ``strip`` returns that
    many reconstructions (tensor ``images``)."""
    net, _ = targets.train(folder, **target)
    judge_net, _ = targets.train(folder, **judge)
    test = data.load_dataset(target["dataset"], "test")
    device = config.device(target)
    half = len(test) // 2
    aux = (
        test.float()[half : half + aux_size]
        if aux_dataset is None
        else data.load_dataset(aux_dataset, "test").float()[:aux_size]
    )
    if aux.shape[1:] != test.images.shape[1:]:
        raise ValueError(
            f"aux_dataset {aux_dataset!r} has images of shape {tuple(aux.shape[1:])}, "
            f"{target['dataset']!r} {tuple(test.images.shape[1:])}: pick a dataset with the same "
            f"shape"
        )
    victims = data.heldout_indices(test.labels[:half], victims_per_class, seed)
    x, y = test.float()[victims], test.labels[victims]
    encoder = nn.Sequential(*split_points(net.to(device).eval())[0][:depth])
    with torch.no_grad():
        seen = encoder(x.to(device)).cpu()  # what the server receives
    r = attacks.invert_features(
        attack,
        encoder,
        seen,
        tuple(x.shape[1:]),
        settings,
        seed,
        device,
        labels=y,
        aux=aux,
        cache=Path(folder) / "attacks",
    )
    q = metrics.paired_quality(r.images, x, y, judge_net, device)
    q["cpu_seconds"] = r.cost["cpu_seconds"]
    key = _key(target, label or attack, target["train_size"], seed, f"split_depth{depth}")
    return sweep.Result(
        [{**key, "metric": m, "value": v} for m, v in q.items()],
        {"images": r.images[:strip], "truth": x[:strip]} if strip else {},
    )


# ----------------------------------------------------------------- where leakage begins (notebook
# 11)
