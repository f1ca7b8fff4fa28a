"""Where leakage begins (notebook 11): targets memorising a few images per class, every weight
attack against each, and the null band each number is read against.

A leakage number means something only beside what chance gives at the same size. For every
target, the same metrics are computed with two stand-ins for the reconstructions:

- ``heldout``: real images the target never saw, a fresh draw each time (``draws`` of them);
- ``cross``: the same attack's reconstructions from a target of the same kind trained on
  *other* images (the other seeds' targets: the seeds' training sets are disjoint).

The null band of a cell (dataset, architecture, regime, size, attack) spans every stand-in's
value over its seeds; an attack's number lies outside it when, for every seed, it lies above
the highest stand-in of that seed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from . import data, metrics, rules, store
from .models import HomogeneousMLP, build_classifier
from .training import accuracy, train_classifier, train_to_margin

# how each kind of target is trained, beyond the common settings
REGIMES = {
    "plain": {"weight_decay": 0.0, "shift": 0},
    "weight_decay": {"weight_decay": 0.05, "shift": 0},
    "augment": {"weight_decay": 0.0, "shift": 2},
}
# the leakage metrics read against the band; on each, leakage raises the number
METRICS = ("membership_auc", "identifiability", "nn_ssim_gap")

# the positive control's settings (the leakage_regime section's ``control``)
CONTROL_RULES = {
    "dataset": rules.choice(lambda: data.DATASETS),
    "per_class": rules.whole(1),
    "init_scale": rules.real(0, low_open=True),
    "weight_decay": rules.real(0),
    "train_steps": rules.whole(1),
    "train_lr": rules.real(0, low_open=True),
    "candidates": rules.whole(1),
    "heldout_per_class": rules.whole(1),
    "classes": (
        (
            lambda v: (
                isinstance(v, list)
                and len(v) == 2
                and v[0] != v[1]
                and all(rules.whole(0)[0](c) for c in v)
            )
        ),
        "two different class numbers",
    ),
    "hidden": rules.list_of(rules.whole(1)),
    "seeds": (
        (lambda v: rules.list_of(rules.whole(0))[0](v) and len(set(v)) >= 2),
        "a list of at least two different seeds (the others train the cross-target controls)",
    ),
}


def _control_ok(v) -> bool:
    return (
        isinstance(v, dict)
        and set(v) == set(CONTROL_RULES)
        and all(CONTROL_RULES[k][0](x) for k, x in v.items())
    )


rules.add(
    {
        "regimes": rules.list_of(rules.choice(lambda: list(REGIMES))),
        "probes_per_class": rules.whole(1),
        "strength": rules.list_of(rules.whole(1)),
        "control": (
            _control_ok,
            lambda: (
                "a dict of the positive control's settings, exactly the keys "
                f"{', '.join(CONTROL_RULES)}, each valid"
            ),
        ),
    }
)


def disjoint_sets(labels: torch.Tensor, per_class: int, seeds) -> dict:
    """``{seed: indices}``: ``per_class`` images of every class for each seed, no image in two
    seeds' sets, so that each seed's targets are trained on other images than the rest."""
    taken, out = torch.empty(0, dtype=torch.long), {}
    for seed in seeds:
        out[seed] = data.heldout_indices(labels, per_class, seed, exclude=taken)
        taken = torch.cat([taken, out[seed]])
    return out


def get_target(
    folder,
    arch: str,
    regime: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    num_classes: int = 10,
    device="cpu",
):
    """A classifier of ``arch`` trained in ``regime`` (``REGIMES``) on ``images`` for ``steps``
    minibatches of at most ``batch_size``, cached in ``folder``. Returns ``(net, meta)``; meta holds
    its training accuracy, which these targets should bring to 1 (they are meant to memorise)."""
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; choose one of {', '.join(REGIMES)}")
    spec = {
        "arch": arch,
        "regime": regime,
        **REGIMES[regime],
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "data": store.tensor_hash(images, labels),
    }
    path = (
        Path(folder)
        / f"{arch}_{regime}_n{len(images)}_s{seed}_{store.config_hash(spec)}.safetensors"
    )
    torch.manual_seed(seed)
    net = build_classifier(arch, tuple(images.shape[1:]), num_classes)

    def train():
        train_classifier(
            net,
            images,
            labels,
            steps,
            min(batch_size, len(images)),
            lr,
            seed,
            device,
            desc=f"{arch}/{regime}/n={len(images)}",
            shift=REGIMES[regime]["shift"],
            weight_decay=REGIMES[regime]["weight_decay"],
        )

    return _cached(path, net, spec, train, images, labels, device)


def get_control(
    folder,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    hidden,
    init_scale: float,
    weight_decay: float,
    steps: int,
    lr: float,
    seed: int,
    device="cpu",
):
    """The positive control's network: a ``models.HomogeneousMLP`` of ``hidden`` widths trained by
    ``training.train_to_margin`` on ``images`` (two classes, labels 0 and 1), cached in ``folder``.
    Returns ``(net, meta)``, as ``get_target``."""
    spec = {
        "hidden": list(hidden),
        "init_scale": init_scale,
        "weight_decay": weight_decay,
        "steps": steps,
        "lr": lr,
        "seed": seed,
        "data": store.tensor_hash(images, labels),
    }
    path = Path(folder) / f"control_n{len(images)}_s{seed}_{store.config_hash(spec)}.safetensors"
    torch.manual_seed(seed)
    net = HomogeneousMLP(tuple(images.shape[1:]), hidden=tuple(hidden), init_scale=init_scale)
    return _cached(
        path,
        net,
        spec,
        lambda: train_to_margin(net, images, labels, steps, lr, weight_decay, device),
        images,
        labels,
        device,
    )


def _cached(path: Path, net, spec: dict, train, images, labels, device):
    """``net`` loaded from ``path``, or trained by ``train()`` and saved there with ``spec``, its
    training accuracy and size; one process trains it while another waiting for it loads it."""
    with store.exclusive(path.with_suffix(".lock")):
        if path.exists():
            return net.eval(), store.load_model(path, net)
        train()
        meta = spec | {
            "train_accuracy": accuracy(net, images, labels, device),
            "images": len(images),
        }
        store.save_model(path, net.cpu(), meta)
    return net.eval(), meta


def leakage(recon, recon_labels, train, reference, seed: int = 0) -> dict:
    """The metrics of ``METRICS`` for reconstructions (or a stand-in) against the target's
    ``train`` images and the held-out ``reference`` (pairs of images and labels, the same number
    of each class)."""
    report = metrics.leakage_report(recon, recon_labels, *train, *reference, seed=seed)
    return {m: report[m] for m in METRICS}


def band(results: pd.DataFrame) -> pd.DataFrame:
    """One row per cell and metric of ``results`` (columns: the cell's keys, ``seed``, ``source``
    of ``attack``/``heldout``/``cross``, ``metric``, ``value``): the attack's mean over seeds, the
    null band (lowest and highest stand-in over the seeds) and ``outside``: the attack lies above
    the highest stand-in of its own seed, for every seed."""
    keys = [k for k in results.columns if k not in ("seed", "source", "draw", "value")]
    rows = []
    for cell, part in results.groupby(keys, sort=False):
        own = part[part.source == "attack"].set_index("seed").value
        null = part[part.source != "attack"]
        if own.empty or null.empty:
            continue
        beats = own > null.groupby("seed").value.max().reindex(own.index)
        rows.append(
            {
                **dict(zip(keys, cell)),
                "value": own.mean(),
                "null_lo": null.value.min(),
                "null_hi": null.value.max(),
                "seeds": len(own),
                "outside": bool(beats.all()),
            }
        )
    return pd.DataFrame(rows)


def answers(
    bands: pd.DataFrame, control: pd.DataFrame | None = None, recovered: pd.DataFrame | None = None
) -> list[str]:
    """The notebook's answer in words, from ``band``'s tables of the sweep and of the positive
    control and from the control's ``metrics.recovery`` table."""

    def said(row) -> str:
        return f"{row.metric} {row.value:.3f} (null {row.null_lo:.3f} to {row.null_hi:.3f})"

    lines = []
    if recovered is not None and control is not None:
        share = recovered.recovered.mean()
        fired = control[control.outside]
        lines.append(
            f"Positive control: kkt recovered {int(recovered.recovered.sum())} of "
            f"{len(recovered)} training "
            f"images ({share:.0%}). Outside the null band: "
            f"{'; '.join(said(r) for r in fired.itertuples()) or 'no metric'}. Inside: "
            f"{'; '.join(said(r) for r in control[~control.outside].itertuples()) or 'no metric'}."
        )
    largest = None  # the largest size at which some attack lies outside its band
    for cell, part in bands.groupby(["dataset", "arch", "regime"], sort=False):
        for n, at in part.groupby("per_class"):
            out = at[at.outside]
            where = f"{', '.join(map(str, cell))}, {n} per class"
            if out.empty:
                lines.append(f"{where}: every attack inside the null band on every metric.")
            else:
                largest = n if largest is None else max(largest, n)
                lines.append(
                    f"{where}: outside the null band: "
                    + "; ".join(f"{r.attack} {said(r)}" for r in out.itertuples())
                    + "."
                )
    if largest is None:
        lines.append(
            "No attack on the ten-class targets lies outside its null band at any size swept: "
            "the metrics "
            "that fire for the positive control find no leakage here, even from targets that "
            "memorised "
            "one image per class."
        )
    else:
        lines.append(f"Some attack lies outside its null band at up to {largest} images per class.")
    return lines


def metric_rows(bands: pd.DataFrame, setting: str, num_classes: int) -> list[dict]:
    """``band``'s table as rows of the project's ``metrics.csv`` (``store.record_metrics``): for
    each cell, the attack's mean, the band's ends and whether it lies outside (1 or 0), under
    ``setting``; ``train_size`` counts the training images of all ``num_classes`` classes."""
    rows = []
    for r in bands.itertuples():
        key = {
            "dataset": r.dataset,
            "arch": r.arch,
            "method": r.attack,
            "train_size": r.per_class * num_classes,
            "seed": None,
            "setting": f"{setting}_{r.regime}" if hasattr(r, "regime") else setting,
        }
        rows += [
            {**key, "metric": r.metric, "value": r.value},
            {**key, "metric": f"{r.metric}_null_lo", "value": r.null_lo},
            {**key, "metric": f"{r.metric}_null_hi", "value": r.null_hi},
            {**key, "metric": f"{r.metric}_outside", "value": float(r.outside)},
        ]
    return rows


def training_set(dataset: str, per_class: int, seeds, seed: int):
    """The images and labels that the target of ``seed`` memorises: its part of
    ``disjoint_sets``."""
    train = data.load_dataset(dataset, "train")
    idx = disjoint_sets(train.labels, per_class, seeds)[seed]
    return train.float()[idx], train.labels[idx]
