"""Which architecture leaks more: classifiers of several architectures at matched accuracy,
and the tests that compare them (notebook 10; Suhail & Sethi, arXiv 2502.00760).

A more accurate classifier may give more recognisable reconstructions for that reason
alone, so architectures are compared at the *same* accuracy. Each is trained with a
check of its validation accuracy after every one of its first ``check_every`` steps (a
small network can pass the level within them) and every ``check_every`` steps after;
the level is the best accuracy the weakest of them reaches, and each keeps the
checkpoint whose accuracy is nearest that level. Training the weaker first lets each stronger one
stop as soon as it
passes the level reached so far: the same checkpoints as training all of them in full,
at a fraction of the cost.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pandas as pd
import torch
from scipy import stats
from torch import nn

from . import attacks as registry
from . import auditing, config, data, metrics, store, sweep, targets
from .metrics import wilcoxon_p
from .models import build_classifier, split_points
from .training import accuracy, train_classifier


def train_matched(
    archs,
    images: torch.Tensor,
    labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    check_every: int,
    num_classes: int = 10,
    seed: int = 0,
    device="cpu",
) -> dict:
    """Classifiers of each of ``archs`` trained on ``images``/``labels`` to matched accuracy on
    ``val_images``/``val_labels``. Train the weakest architecture first (the stronger then stop
    early). Returns ``{arch: (net in eval mode, meta)}``; meta holds the level, the chosen step
    and its validation accuracy, the steps trained and every check (step, accuracy)."""
    archs = list(archs)
    if len(set(archs)) != len(archs) or not archs:
        raise ValueError(f"archs must name distinct architectures, got {archs!r}")
    if not (isinstance(check_every, int) and 1 <= check_every <= steps):
        raise ValueError(
            f"check_every must be a whole number between 1 and steps ({steps}), got {check_every!r}"
        )
    shape, level, checks, seconds = tuple(images.shape[1:]), float("inf"), {}, {}
    for arch in archs:
        torch.manual_seed(seed)
        net = build_classifier(arch, shape, num_classes).to(device)
        found = checks[arch] = []

        def stop(step, net=net, found=found, level=level):
            if step > check_every and step % check_every and step != steps:
                return False
            acc = accuracy(net, val_images, val_labels, device)
            found.append(
                (step, acc, {k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
            )
            return acc >= level

        start = time.time()
        train_classifier(
            net,
            images,
            labels,
            steps,
            batch_size,
            lr,
            seed,
            device,
            desc=f"{arch} to a matched level",
            stop=stop,
        )
        seconds[arch] = time.time() - start
        level = min(level, max(acc for _, acc, _ in found))
    out = {}
    for arch in archs:
        step, acc, state = min(checks[arch], key=lambda c: (abs(c[1] - level), c[0]))
        net = build_classifier(arch, shape, num_classes)
        net.load_state_dict(state)
        out[arch] = (
            net.eval(),
            {
                "arch": arch,
                "level": level,
                "step": step,
                "validation_accuracy": acc,
                "steps_trained": checks[arch][-1][0],
                "seconds": round(seconds[arch], 1),
                "checks": [(s, a) for s, a, _ in checks[arch]],
            },
        )
    return out


def get_matched(folder, archs, images, labels, val_images, val_labels, **settings) -> dict:
    """``train_matched``, cached in ``folder`` under a hash of the data, the architectures and
    every setting; returns the same ``{arch: (net, meta)}``."""
    spec = {
        "archs": list(archs),
        "data": store.tensor_hash(images, labels, val_images, val_labels),
        **{k: v for k, v in settings.items() if k != "device"},
    }
    stem = Path(folder) / f"matched_{store.config_hash(spec)}"
    paths = {arch: Path(f"{stem}_{arch}.safetensors") for arch in archs}
    shape, num_classes = tuple(images.shape[1:]), settings.get("num_classes", 10)
    with store.exclusive(stem.with_suffix(".lock")):
        if all(p.exists() for p in paths.values()):
            out = {}
            for arch, path in paths.items():
                net = build_classifier(arch, shape, num_classes)
                out[arch] = (net.eval(), store.load_model(path, net))
            return out
        out = train_matched(archs, images, labels, val_images, val_labels, **settings)
        for arch, (net, meta) in out.items():
            store.save_model(paths[arch], net.cpu(), {**spec, **meta})
    return out


def compare(frame: pd.DataFrame, metric: str, block: list[str], arch: str = "arch") -> dict:
    """Do architectures differ in ``metric``? ``frame`` is tidy (one ``value`` per row); rows
    that share the columns ``block`` (e.g. dataset, size, seed, attack) are one block, measured
    once for each architecture. Returns the Friedman test across architectures (blocks with
    every architecture only), each pair's Wilcoxon signed-rank test on those same blocks, and
    the mean of each architecture."""
    rows = frame[frame.metric == metric]
    wide = rows.pivot_table(index=block, columns=arch, values="value", aggfunc="mean").dropna()
    names = list(wide.columns)
    if len(wide) < 2 or len(names) < 2:
        raise ValueError(
            f"{metric!r}: need at least 2 blocks measured for at least 2 architectures, got "
            f"{len(wide)} block(s) for {names}"
        )
    out = {"metric": metric, "blocks": len(wide), "mean": wide.mean().to_dict()}
    if len(names) < 3:
        out["friedman_p"] = float("nan")
    elif (wide.nunique(axis=1) == 1).all():  # every block tied: no difference to test
        out["friedman_p"] = 1.0
    else:
        out["friedman_p"] = float(stats.friedmanchisquare(*[wide[a] for a in names]).pvalue)
    pairs = {}
    for a, b in itertools.combinations(names, 2):
        diff = (wide[a] - wide[b]).to_numpy()
        pairs[f"{a}-{b}"] = {
            "mean_difference": float(diff.mean()),
            "p": wilcoxon_p(diff),
            "wins": int((diff > 0).sum()),
            "blocks": len(diff),
        }
    out["pairs"] = pairs
    return out


def describe(result: dict) -> str:
    """A ``compare`` result in words: the architectures from highest to lowest mean, and whether
    the Friedman test tells them apart at the 5% level."""
    means = result["mean"]
    order = sorted(means, key=means.get, reverse=True)
    p = result["friedman_p"]
    verdict = "differ" if p < 0.05 else "do not differ beyond seed noise"
    pairs = ", ".join(f"{k} p = {v['p']:.2g}" for k, v in result["pairs"].items())
    return (
        f"{' > '.join(f'{a} ({means[a]:.3f})' for a in order)}: the architectures {verdict} "
        f"(Friedman p = {p:.2g} over {result['blocks']} blocks; Wilcoxon {pairs})"
    )


QUESTIONS = {
    "evaluator_accuracy": "most recognisable reconstructions (evaluator accuracy)",
    "nn_ssim_train": "ease of reconstruction (best SSIM to a training image of the class)",
    "membership_auc": "leak of the training set (membership AUC, 0.5 = none)",
    "nn_ssim_gap": "leak of the training set (SSIM gap, train minus held-out)",
}


def answers(frame: pd.DataFrame, attacks) -> list[str]:
    """The comparison's answers in words, one per question of ``QUESTIONS``, from tidy rows of
    notebook 10 (a block: one attack of ``attacks`` on one dataset, size and seed)."""
    rows = frame[frame.method.isin(attacks)]
    block = ["dataset", "train_size", "seed", "method"]
    return [
        f"{what}: {describe(compare(rows, metric, block))}"
        for metric, what in QUESTIONS.items()
        if (rows.metric == metric).any()
    ]


# the audit's numbers that the comparison keeps
KEEP = (
    "target_accuracy",
    "evaluator_accuracy",
    "precision",
    "recall",
    "density",
    "coverage",
    "fid",
    "within_class_ssim",
    "nn_ssim_train",
    "nn_ssim_gap",
    "membership_auc",
    "membership_auc_lo",
    "membership_auc_hi",
    "l2_diff",
    "wall_seconds",
)


def cell(
    folder,
    dataset: str,
    train_size,
    seed: int,
    archs: list,
    training: dict,
    validation_size: int,
    judge: dict,
    attacks: dict,
    per_class: int,
    heldout_per_class: int,
    resamples: int,
    victims_per_class: int,
    split_steps: int,
    device: str = "auto",
) -> sweep.Result:
    """A sweep cell (notebook 10): classifiers of ``archs`` trained to matched accuracy
    (``get_matched`` with ``training``: steps, batch_size, lr, check_every) on the ``train_size``
    images of ``dataset`` that ``seed`` picks, each attacked by every weight attack of ``attacks``
    ({name: settings}) through ``auditing.run_audit`` and by ``split_optimisation``
    (``split_steps``) after its first and last block, every reconstruction judged by the evaluator
    ``judge`` (``targets.spec``). The test split's first half holds the held-out references and the
    private inputs, its second half the validation images. Returns tidy rows and, as tensors
    ``<arch>/<attack>/images`` and ``.../labels``, each attack's samples."""
    dev = config.device({"device": device})
    train, test = data.load_dataset(dataset, "train"), data.load_dataset(dataset, "test")
    x_test, y_test, half = test.float(), test.labels, len(test) // 2
    val = slice(half, half + validation_size)
    judge_net, _ = targets.train(folder, **judge)
    idx = targets.training_indices(train, train_size, seed)
    x, y = train.float()[idx], train.labels[idx]
    held = data.heldout_indices(y_test[:half], heldout_per_class, seed)
    victim = data.heldout_indices(y_test[:half], victims_per_class, seed + 1)
    nets = get_matched(
        Path(folder) / "architectures",
        archs,
        x,
        y,
        x_test[val],
        y_test[val],
        **training,
        num_classes=len(train.classes),
        seed=seed,
        device=dev,
    )
    rows, tensors, notes = [], {}, []
    for arch, (net, meta) in nets.items():
        key = {
            "dataset": dataset,
            "arch": arch,
            "train_size": targets.size_label(train_size),
            "seed": seed,
            "setting": "architectures",
        }
        rows += [
            {
                **key,
                "method": "classifier",
                "metric": "test_accuracy",
                "value": accuracy(net, x_test[:half], y_test[:half], dev),
            },
            {
                **key,
                "method": "classifier",
                "metric": "validation_accuracy",
                "value": meta["validation_accuracy"],
            },
            {**key, "method": "classifier", "metric": "steps", "value": meta["step"]},
        ]
        found = auditing.run_audit(
            net,
            (x, y),
            (x_test[held], y_test[held]),
            attacks,
            per_class,
            judge_net,
            seed,
            resamples,
            dev,
        )
        notes += [f"{arch}: {name} failed ({why})" for name, why in found.failed.items()]
        t = found.table[found.table.metric.isin(KEEP)]
        rows += [
            {**key, "method": r.method, "metric": r.metric, "value": r.value}
            for r in t.itertuples()
        ]
        for name, (images, labels) in found.samples.items():
            tensors |= {f"{arch}/{name}/images": images, f"{arch}/{name}/labels": labels}
        blocks, _ = split_points(net)
        for where, depth in (("first", 1), ("last", len(blocks))):
            encoder = nn.Sequential(*blocks[:depth])
            with torch.no_grad():
                seen = encoder(x_test[victim].to(dev)).cpu()
            r = registry.invert_features(
                "split_optimisation",
                encoder,
                seen,
                tuple(x.shape[1:]),
                {"steps": split_steps},
                seed,
                dev,
                cache=Path(folder) / "attacks",
            )
            q = metrics.paired_quality(r.images, x_test[victim], y_test[victim], judge_net, dev)
            rows += [
                {**key, "method": f"split_optimisation_{where}", "metric": m, "value": v}
                for m, v in q.items()
            ]
    return sweep.Result(rows, tensors, notes)
