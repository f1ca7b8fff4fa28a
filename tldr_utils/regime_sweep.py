"""The sweep of notebook 11 (where leakage begins): ``regime_cell`` trains one memorising target
and runs one weight attack against it; ``regime_table`` scores every cell's reconstructions
against the null band of ``regime``; ``membership_rows`` runs the standard membership test on the
same targets."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from . import attacks, config, data, membership, sampling, sweep
from .attacks.optimisation import class_statistics
from .models import build_classifier
from .regime import REGIMES, get_target, leakage, training_set
from .training import accuracy


def _target(home: Path, dataset, arch, regime, per_class, seeds, seed, training, dev):
    """The memorising target of one cell (cached under ``home/<dataset>``), with its training
    images and the dataset's test split: what ``regime_cell`` attacks and ``membership_rows``
    tests."""
    x, y = training_set(dataset, per_class, seeds, seed)
    test = data.load_dataset(dataset, "test")
    net, meta = get_target(
        home / dataset,
        arch,
        regime,
        x,
        y,
        **training,
        seed=seed,
        num_classes=len(test.classes),
        device=dev,
    )
    return net, meta, (x, y), test


def _references(test: data.ImageSet, per_class: int, seeds: list, seed: int):
    """What a reconstruction of the cell owned by ``seed`` is scored against: the target's training
    images, and as many held-out images of ``test`` (the dataset's test split, loaded by the
    caller), with their indices, which the null's stand-ins avoid."""
    train = training_set(test.name, per_class, seeds, seed)
    held = data.heldout_indices(test.labels, per_class, seed)
    return train, (test.subset(held).float(), test.labels[held]), held


def regime_cell(
    folder,
    dataset: str,
    arch: str,
    regime: str,
    per_class: int,
    seeds: list,
    seed: int,
    attack: str,
    settings: dict,
    recon_per_class: int,
    training: dict,
    device: str = "auto",
) -> sweep.Result:
    """A sweep cell: the target of ``arch`` trained in ``regime`` on the ``per_class`` images of
    each class that ``seed`` owns (``training``: its ``steps``, ``batch_size`` and ``lr``), cached
    in ``<folder>/leakage_regime/<dataset>``, and weight attack ``attack`` (with ``settings``)
    against it. Returns the reconstructions as tensors and the target's training and test accuracy
    as rows; an attack whose generator does not learn (``sampling.DegenerateRun``) returns a note
    and no tensors, and is counted as missing."""
    dev = config.device({"device": device})
    home = Path(folder) / "leakage_regime"
    net, meta, (x, y), test = _target(
        home, dataset, arch, regime, per_class, seeds, seed, training, dev
    )
    cell = {
        "dataset": dataset,
        "arch": arch,
        "regime": regime,
        "per_class": per_class,
        "seed": seed,
    }
    rows = [
        {
            **cell,
            "train_accuracy": meta["train_accuracy"],
            "test_accuracy": accuracy(net, test.float(), test.labels, dev),
        }
    ]
    stats = (
        class_statistics(net, x, y, device=dev)
        if "class_stats" in attacks.get(attack).needs
        else None
    )
    try:
        r = attacks.reconstruct(
            attack,
            net,
            tuple(x.shape[1:]),
            len(test.classes),
            recon_per_class,
            settings,
            seed,
            dev,
            class_stats=stats,
            cache=home / "attacks",
        )
    except sampling.DegenerateRun as err:
        return sweep.Result(rows, notes=[f"{attack} failed, counted as missing ({err})"])
    return sweep.Result(rows, {"images": r.images, "labels": r.labels})


def regime_table(done: dict, draws: int, recon_per_class: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``regime_cell``'s results scored: the long table of leakage values (columns: the cell's keys,
    ``seed``, ``attack``, ``source`` of ``attack``/``cross``/``heldout``, ``draw``, ``metric``,
    ``value``; see the module's text) and the table of targets with their training and test
    accuracy."""
    recon = {}
    for c, r in done.items():
        if r.tensors:
            a = c.args
            recon[a["dataset"], a["arch"], a["regime"], a["per_class"], a["seed"], a["attack"]] = (
                r.tensors["images"],
                r.tensors["labels"],
            )
    trained = pd.DataFrame([row for r in done.values() for row in r.rows]).drop_duplicates()
    rows = []
    groups = list(
        dict.fromkeys(
            (c.args["dataset"], c.args["arch"], c.args["regime"], c.args["per_class"]) for c in done
        )
    )
    for dataset, arch, kind, n in groups:
        attacked = [
            c.args
            for c in done
            if (c.args["dataset"], c.args["arch"], c.args["regime"], c.args["per_class"])
            == (dataset, arch, kind, n)
        ]
        seeds, names = attacked[0]["seeds"], list(dict.fromkeys(a["attack"] for a in attacked))
        test = data.load_dataset(dataset, "test")
        x_test, y_test = test.float(), test.labels
        cell = {"dataset": dataset, "arch": arch, "regime": kind, "per_class": n}
        for seed in seeds:
            train, ref, held = _references(test, n, seeds, seed)
            for name in names:
                if (dataset, arch, kind, n, seed, name) not in recon:
                    continue
                images, labels = recon[dataset, arch, kind, n, seed, name]
                rows.append(
                    {
                        **cell,
                        "seed": seed,
                        "attack": name,
                        "source": "attack",
                        "draw": 0,
                        **leakage(images, labels, train, ref),
                    }
                )
                for other in seeds:
                    if other != seed and (dataset, arch, kind, n, other, name) in recon:
                        o_images, o_labels = recon[dataset, arch, kind, n, other, name]
                        rows.append(
                            {
                                **cell,
                                "seed": seed,
                                "attack": name,
                                "source": "cross",
                                "draw": other,
                                **leakage(o_images, o_labels, train, ref),
                            }
                        )
            for d in range(draws):
                stand = data.heldout_indices(y_test, recon_per_class, 1000 + d, exclude=held)
                values = leakage(x_test[stand], y_test[stand], train, ref)
                rows += [
                    {**cell, "seed": seed, "attack": name, "source": "heldout", "draw": d, **values}
                    for name in names
                ]
    long = pd.DataFrame(rows).melt(
        id_vars=["dataset", "arch", "regime", "per_class", "seed", "attack", "source", "draw"],
        var_name="metric",
        value_name="value",
    )
    return long, trained


def membership_rows(
    folder,
    dataset: str,
    arch: str,
    regime: str,
    per_class: int,
    seeds: list,
    seed: int,
    training: dict,
    shadows: int,
    probes_per_class: int,
    resamples: int = 1000,
    device: str = "auto",
) -> list[dict]:
    """The field's standard membership test on the target of ``regime_cell`` (the same cached
    network): the loss attack and offline LiRA, with the target's training images as members and
    ``probes_per_class`` test images of each class as non-members. LiRA's ``shadows`` are trained
    the target's way (its ``training`` and regime) on as many images as it had, drawn from test
    images that are no probe. The null beside each: as many held-out images as the target has
    members, standing in for them. Metric rows for ``metrics.csv`` (setting
    ``leakage_membership``; ``method`` ``membership_loss``, ``membership_lira``, and the nulls
    ``membership_loss_null``, ``membership_lira_null``)."""
    dev = config.device({"device": device})
    home = Path(folder) / "leakage_regime"
    net, _, (x, y), test = _target(
        home, dataset, arch, regime, per_class, seeds, seed, training, dev
    )
    xt, yt = test.float(), test.labels
    probes = data.heldout_indices(yt, probes_per_class, seed)
    stand_in = data.heldout_indices(yt, per_class, seed + 1, exclude=probes)
    pool = data.heldout_indices(yt, 2 * per_class, seed + 2, exclude=torch.cat([probes, stand_in]))
    recipe = {
        "steps": training["steps"],
        "batch_size": min(training["batch_size"], len(x)),
        "lr": training["lr"],
        "shift": REGIMES[regime]["shift"],
        "weight_decay": REGIMES[regime]["weight_decay"],
    }

    def model_fn():
        return build_classifier(arch, tuple(x.shape[1:]), len(test.classes))

    nonmembers = (xt[probes], yt[probes])
    found = {}
    for name, members in (("", (x, y)), ("_null", (xt[stand_in], yt[stand_in]))):
        found[f"loss{name}"] = membership.loss_attack(
            net, members, nonmembers, seed, resamples, dev
        )
        found[f"lira{name}"] = membership.lira_offline(
            net, model_fn, members, nonmembers, (xt[pool], yt[pool]), shadows, recipe, seed,
            resamples, dev,
        )  # fmt: skip
    key = {"dataset": dataset, "arch": arch, "train_size": len(x), "seed": seed}
    return [
        {**key, "method": f"membership_{method}", "setting": "leakage_membership"}
        | {"metric": metric, "value": float(r[metric])}
        for method, r in found.items()
        for metric in MEMBERSHIP_METRICS
    ]


MEMBERSHIP_METRICS = [
    f"{m}{side}"
    for m in ("auc", "tpr_at_0.01_fpr", "tpr_at_0.001_fpr")
    for side in ("", "_lo", "_hi")
]


def strength_table(done: dict) -> pd.DataFrame:
    """``regime_cell``'s results for one cell at several attack strengths, scored as
    ``regime_table`` scores the sweep's attacks (``leakage`` against the target's training images
    and as many held-out ones): columns ``dataset``, ``arch``, ``regime``, ``per_class``,
    ``seed``, ``attack``, ``steps``, ``metric``, ``value``."""
    rows = []
    for c, r in done.items():
        if not r.tensors:
            continue
        a = c.args
        test = data.load_dataset(a["dataset"], "test")
        train, ref, _ = _references(test, a["per_class"], a["seeds"], a["seed"])
        scores = leakage(r.tensors["images"], r.tensors["labels"], train, ref)
        key = {k: a[k] for k in ("dataset", "arch", "regime", "per_class", "seed", "attack")}
        rows += [
            {**key, "steps": a["settings"]["steps"], "metric": m, "value": v}
            for m, v in scores.items()
        ]
    return pd.DataFrame(rows)
