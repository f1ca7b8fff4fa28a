"""The paper's two methods and the sweeps' cells: settings and a dataset in, a scored attack out.

``run`` takes a method's settings (the profile section named like it, read at the edge),
the targets' recipe and a run folder; it gets the target and the independent judge,
runs the attack through ``attacks.reconstruct`` (cached in ``<folder>/attacks``), and
scores what comes back. The ``*_cell`` functions are the sweeps' units of work: plain
descriptions in, metric rows out.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from . import attacks, config, data, quality, rules, sampling, store, targets, training


def _share_by_class(hits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    """The share of ``hits`` among the images of each class."""
    return [hits[labels == k].float().mean().item() for k in range(num_classes)]


def heldout_and_fresh(
    test_labels: torch.Tensor, per_class: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of two disjoint sets of ``per_class`` test images of each class: the held-out
    reference that samples are compared with, and a fresh set that stands in for samples (real
    images scored exactly like them)."""
    held = data.heldout_indices(test_labels, per_class, seed)
    return held, data.heldout_indices(test_labels, per_class, seed + 1000, exclude=held)


@functools.cache
def real_reference(folder, judge_spec: tuple, seed: int, heldout_per_class: int) -> dict:
    """What samples are compared with, measured once per run folder and judge (``judge_spec``, the
    items of ``targets.evaluator_spec``, hashable for the memo): the
    evaluator's accuracy on the real test images (all, and of each class) and their within-class
    SSIM; the judge's features of ``heldout_per_class`` held-out test images of each class (the
    reference of ``quality.realism``), and the realism of a second, disjoint set of real test
    images against them (the ceiling, scored exactly like samples)."""
    judge_spec = dict(judge_spec)
    real = data.load_dataset(judge_spec["dataset"], "test")
    judge, _ = targets.get(folder, judge_spec)
    hits = training.predict(judge, real.float()).argmax(1) == real.labels
    held, fresh = heldout_and_fresh(real.labels, heldout_per_class, seed)
    features = quality.penultimate_features(judge, real.float()[held])
    realism = quality.realism(
        features,
        real.labels[held],
        quality.penultimate_features(judge, real.float()[fresh]),
        real.labels[fresh],
    )
    return {
        "evaluator_accuracy": hits.float().mean().item(),
        "evaluator_accuracy_by_class": _share_by_class(hits, real.labels, len(real.classes)),
        "within_class_ssim": quality.within_class_ssim(real.float(), real.labels, seed=seed),
        "features": features,
        "labels": real.labels[held],
        "realism": realism,
    }


REALISM = (
    "precision",
    "recall",
    "density",
    "coverage",
    "fid",
)  # quality.realism's scores kept as rows
METHODS = (
    "inversion",
    "tldr",
)  # the paper's two methods, each a generator attack with its own section
rules.add({"methods": rules.list_of(rules.choice(lambda: METHODS))})


def _generator(folder, r, net, image_shape, num_classes: int, seed: int):
    """The generator behind generator attack result ``r``: in ``r`` when it was just trained; for a
    result loaded from the cache (which keeps images, not networks), from the generators' cache."""
    if "generator" in r.extra:
        return r.extra["generator"]
    problem = attacks.Problem(
        net, tuple(image_shape), num_classes, 1, torch.device("cpu"), cache=Path(folder) / "attacks"
    )
    return attacks.generator.trained_generator(problem, r.settings, seed)[0]


def utility(folder, recipe: dict, G, net, cfg, dataset: str) -> dict:
    """What ``cfg.utility_images`` images drawn from the trained generator ``G`` are worth
    for training: a fresh classifier of the target's architecture, trained for ``cfg.utility_steps``
    with the target's batch size and learning rate on them, with their conditioned labels
    (``utility_hard``) or distilled from the target's softmax on them (``utility_distilled``); each
    as real-test accuracy and as a ratio to that of the same classifier trained the same way on the
    target's real training images (``utility_real``, cached as a target in ``folder``); ``recipe``
    is the targets' ``train_targets`` settings. Cached in ``folder/utility`` under the weights of
    ``G`` and ``net`` and the settings that shape the result, so a rerun does not train again."""
    chosen = ("utility_images", "utility_steps", "hot", "soft_scale", "oversample", "seed", "arch")
    key = store.config_hash(
        {
            "generator": store.tensor_hash(*G.state_dict().values()),
            "target": store.tensor_hash(*net.state_dict().values()),
            "dataset": dataset,
            "train_size": cfg.train_size,
            "recipe": [recipe["batch_size"], recipe["lr"]],
            **{k: getattr(cfg, k) for k in chosen},
        }
    )
    path = Path(folder) / "utility" / f"{dataset}_{key}.json"
    cached = store.read_json(path)
    if cached is not None:
        return cached
    out = _utility(folder, recipe, G, net, cfg, dataset)
    store.write_json(path, out)
    return out


def _utility(folder, recipe: dict, G, net, cfg, dataset: str) -> dict:
    n = cfg.utility_images // G.num_classes
    images, labels = sampling.sample(
        G,
        n,
        hot=cfg.hot,
        seed=cfg.seed + 1,
        soft_scale=cfg.soft_scale,
        target=net,
        oversample=cfg.oversample,
    )
    test = data.load_dataset(dataset, "test")
    _, real = targets.train(
        folder,
        dataset,
        cfg.arch,
        cfg.train_size,
        cfg.seed,
        cfg.utility_steps,
        recipe["batch_size"],
        recipe["lr"],
        device=cfg.device,
    )
    out = {"utility_real": real["test_accuracy"]}
    for name, teacher in (("utility_hard", None), ("utility_distilled", net)):
        acc = quality.synthetic_utility(
            images,
            labels,
            test.float(),
            test.labels,
            cfg.arch,
            cfg.utility_steps,
            recipe["batch_size"],
            recipe["lr"],
            seed=cfg.seed,
            device=config.device(cfg),
            teacher=teacher,
        )
        out |= {name: acc, f"{name}_ratio": acc / real["test_accuracy"]}
    return out


def _attack_seed(cfg) -> int:
    """The seed of a generator attack: ``generator_seed``, or the target's ``seed`` when it is
    unset."""
    return cfg.seed if cfg.get("generator_seed") is None else cfg.generator_seed


def run(
    method: str,
    dataset: str,
    cfg: dict,
    recipe: dict,
    folder,
    trained_target: bool = True,
    save: bool = True,
    figures: bool = False,
) -> dict:
    """Run ``method`` ("inversion" or "tldr") against the target that ``cfg`` (its section of a
    profile: ``config.settings(profile, method)``) names, score it, save it.

    ``recipe`` (the ``train_targets`` settings) trains the target and the judge, cached in
    ``folder`` (``config.run_dir(profile)``) with the attack. ``cfg.seed`` picks the target
    and, unless ``generator_seed`` is set, the attack's seed (the generator's initialisation,
    batches and draws); ``{"generator_seed": 1}`` runs the attack again against the same
    target. ``trained_target=False`` attacks the untrained control target instead (a
    generator at chance is then expected, not refused).

    The samples' class is judged twice: by the target itself and by an
    independently trained evaluation classifier (another architecture, another
    seed), so images that only fool the target do not count; their variety is
    the mean SSIM between samples of a class, beside the same for real test
    images (row method ``real_test``). Returns the samples, their labels and
    class names, the run's meta, the scores, the evaluator's accuracy on each
    class (of the samples, and of real test images), the class it gives each
    sample, tidy metric rows (the per-class accuracies as metric
    ``evaluator_accuracy_of_class``, one row per class) and the ``attacks.Reconstruction``.
    ``save`` writes the samples with the scores and ``oversample`` in their metadata:
    to ``samples/<method>_<dataset>`` (which the figures draw) when ``figures``, else to
    ``samples/variants/`` under a hash of the settings, so a trial never replaces them.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    net, target_meta = targets.get(
        folder,
        targets.spec(recipe, dataset, cfg.arch, cfg.train_size, cfg.seed, trained=trained_target),
    )
    train = data.load_dataset(dataset, "train")
    chosen = attacks.configure(method, cfg, {"require_learned": trained_target})
    attack_seed = _attack_seed(cfg)
    n, classes = cfg.samples_per_class, train.classes
    r = attacks.reconstruct(
        method,
        net,
        train.images.shape[1:],
        len(classes),
        n,
        chosen,
        attack_seed,
        config.device(cfg),
        cache=Path(folder) / "attacks",
    )
    images, labels = r.images, r.labels
    judge_spec = targets.evaluator_spec(recipe, dataset, cfg.arch)
    judge, judge_meta = targets.get(folder, judge_spec)
    predicted = training.predict(judge, images).argmax(1)
    judged = predicted == labels
    real = real_reference(str(folder), tuple(judge_spec.items()), cfg.seed, cfg.heldout_per_class)
    # prdc needs three vectors of a class on each side: fewer samples (a quick trial) go unmeasured
    realism = (
        quality.realism(
            real["features"], real["labels"], quality.penultimate_features(judge, images), labels
        )
        if n >= 3
        else {}
    )
    scores = {
        "target_accuracy": training.accuracy(net, images, labels),
        "evaluator_accuracy": judged.float().mean().item(),
        "evaluator": judge_meta["arch"],
        "evaluator_real_accuracy": judge_meta["test_accuracy"],
        # variety: recognisable samples that are all alike would still pass both judges
        "within_class_ssim": quality.within_class_ssim(images, labels, seed=cfg.seed),
        "real_within_class_ssim": real["within_class_ssim"],
        **{m: realism[m] for m in REALISM if m in realism},
    }
    if (
        cfg.oversample > 1
    ):  # what the selection buys and costs: the same scores on the first n draws of each class
        first, first_labels = r.extra["unselected_images"], r.extra["unselected_labels"]
        scores |= {
            "evaluator_accuracy_unselected": training.accuracy(judge, first, first_labels),
            "within_class_ssim_unselected": quality.within_class_ssim(
                first, first_labels, seed=cfg.seed
            ),
        }
    if cfg.utility_images:
        G = _generator(folder, r, net, train.images.shape[1:], len(classes), attack_seed)
        scores |= utility(folder, recipe, G, net, cfg, dataset)
    by_class = {
        "samples": _share_by_class(judged, labels, len(classes)),
        "real": real["evaluator_accuracy_by_class"],
    }
    key = {
        "dataset": dataset,
        "arch": cfg.arch,
        "method": method,
        "train_size": targets.size_label(cfg.train_size),
        "seed": attack_seed,
        "evaluator": judge_meta["arch"],
    }
    real_key = {
        "dataset": dataset,
        "method": "real_test",
        "train_size": "all",
        "seed": cfg.seed,
        "evaluator": judge_meta["arch"],
    }
    measured = (
        "target_accuracy",
        "evaluator_accuracy",
        "within_class_ssim",
        *REALISM,
        "evaluator_accuracy_unselected",
        "within_class_ssim_unselected",
        "utility_real",
        "utility_hard",
        "utility_hard_ratio",
        "utility_distilled",
        "utility_distilled_ratio",
    )
    rows = [{**key, "metric": m, "value": scores[m]} for m in measured if m in scores]
    real_scores = {
        "evaluator_accuracy": real["evaluator_accuracy"],
        "within_class_ssim": real["within_class_ssim"],
        **{m: real["realism"][m] for m in REALISM},
    }
    rows += [{**real_key, "metric": m, "value": v} for m, v in real_scores.items()]
    for k, who in ((key, "samples"), (real_key, "real")):
        rows += [
            {**k, "metric": "evaluator_accuracy_of_class", "class": c, "value": v}
            for c, v in zip(classes, by_class[who])
        ]
    meta = {
        "method": method,
        "dataset": dataset,
        "trained_target": trained_target,
        "arch": cfg.arch,
        "train_size": cfg.train_size,
        "seed": cfg.seed,
        "attack_seed": attack_seed,
        **r.settings,
        "seconds": round(r.cost["wall_seconds"], 1),
        "cost": r.cost,
        "final_terms": r.extra.get("final_terms"),
        "target_test_accuracy": target_meta.get("test_accuracy"),
    }
    path = None
    if save:
        path = samples_path(folder, method, dataset, cfg, trained_target, figures)
        store.save_tensors(path, {"images": images, "labels": labels}, {**meta, **scores})
    return {
        "images": images,
        "labels": labels,
        "classes": classes,
        "meta": meta,
        "rows": rows,
        "scores": scores,
        "evaluator_accuracy_by_class": by_class,
        "evaluator_predictions": predicted,
        "samples_path": path,
        "reconstruction": r,
    }


def other_seeds(method: str, dataset: str, cfg: dict, recipe: dict, folder) -> list[dict]:
    """``run`` against the same target once for each of ``cfg.generator_seeds`` but the one ``run``
    itself used (how much one training of the generator decides); their samples are not the
    figures', so they are not saved."""
    first = _attack_seed(cfg)
    return [
        run(
            method,
            dataset,
            config.Settings({**cfg, "generator_seed": s}),
            recipe,
            folder,
            save=False,
        )
        for s in cfg.generator_seeds
        if s != first
    ]


def samples_path(
    folder, method: str, dataset: str, cfg: dict, trained_target: bool = True, figures: bool = False
) -> Path:
    """Where ``run`` saves samples: ``samples/<method>_<dataset>.safetensors``, which the figures
    draw, for the figures' run (``figures``, of the trained target); any other run goes to
    ``samples/variants/`` under a hash of its settings."""
    folder = Path(folder) / "samples"
    if figures and trained_target:
        return folder / f"{method}_{dataset}.safetensors"
    variant = store.config_hash({**cfg, "trained_target": trained_target})
    return folder / "variants" / f"{method}_{dataset}_{variant}.safetensors"
