"""The notebooks' edge for the paper's two methods: a profile and a dataset in, a scored attack out.

Profiles are read here and nowhere below: ``run`` turns a profile's section
(``invert`` for ``inversion``, ``reconstruct`` for ``tldr``) and a notebook's
overrides into the target, the evaluation classifier and the attack's settings,
runs the attack through ``attacks.reconstruct`` (cached in
``runs/<profile>/attacks``), and scores what comes back.
"""

from __future__ import annotations

import functools

import torch

from . import attacks, config, data, metrics, store, targets


def settings(profile: str, method: str, overrides: dict | None = None) -> config.Settings:
    """The settings of ``method`` ("inversion" or "tldr"): its profile section, then ``overrides``, checked."""
    if method not in config.GENERATOR_SECTIONS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(config.GENERATOR_SECTIONS)}")
    return config.settings(profile, config.GENERATOR_SECTIONS[method], overrides)


def _share_by_class(hits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    """The share of ``hits`` among the images of each class."""
    return [hits[labels == k].float().mean().item() for k in range(num_classes)]


@functools.lru_cache(maxsize=None)
def real_reference(run_dir, profile: str, dataset: str, target_arch: str, seed: int) -> dict:
    """What samples are compared with, measured once per run directory and dataset: the
    evaluator's accuracy on real test images of each class, and their within-class SSIM."""
    real = data.load_dataset(dataset, "test")
    judge, _ = targets.get_evaluator(profile, dataset, target_arch)
    hits = targets.predict(judge, real.float()).argmax(1) == real.labels
    return {"evaluator_accuracy_by_class": _share_by_class(hits, real.labels, len(real.classes)),
            "within_class_ssim": metrics.within_class_ssim(real.float(), real.labels, seed=seed)}


def run(profile: str, method: str, dataset: str, overrides: dict | None = None, trained_target: bool = True,
        save: bool = True) -> dict:
    """Run ``method`` against the target that the profile (and ``overrides``) name, score it, save it.

    ``overrides`` changes any setting of the method's section, e.g.
    ``{"train_size": 10000, "seed": 1}`` or ``{"weights": {"tv": 0}}``. ``seed``
    picks the target and, unless ``generator_seed`` is set, the attack's seed
    (the generator's initialisation, batches and draws); ``{"generator_seed": 1}``
    runs the attack again against the same target. ``trained_target=False``
    attacks the untrained control target instead (a generator at chance is then
    expected, not refused).

    The samples' class is judged twice: by the target itself and by an
    independently trained evaluation classifier (another architecture, another
    seed), so images that only fool the target do not count; their variety is
    the mean SSIM between samples of a class, beside the same for real test
    images (row method ``real_test``). Returns the samples, their labels and
    class names, the run's meta, the scores, the evaluator's accuracy on each
    class (of the samples, and of real test images), the class it gives each
    sample, tidy metric rows (the per-class accuracies as metric
    ``evaluator_accuracy_of_class``, one row per class) and the ``attacks.Reconstruction``.
    ``save`` writes the samples to ``runs/<profile>/samples/<method>_<dataset>``
    (the ones the figures show), with the scores and ``oversample`` in their metadata.
    """
    cfg = settings(profile, method, overrides)
    net, target_meta = targets.get_target(profile, dataset, cfg.arch, cfg.train_size, cfg.seed, trained=trained_target)
    train = data.load_dataset(dataset, "train")
    chosen = {k: cfg[k] for k in attacks.get(method).defaults if k in cfg} | {"require_learned": trained_target}
    attack_seed = cfg.seed if cfg.get("generator_seed") is None else cfg.generator_seed
    n, classes = cfg.samples_per_class, train.classes
    r = attacks.reconstruct(method, net, train.images.shape[1:], len(classes), n, chosen, attack_seed,
                            config.device(cfg), cache=config.run_dir(profile) / "attacks")
    images, labels = r.images, r.labels
    judge, judge_meta = targets.get_evaluator(profile, dataset, cfg.arch)
    predicted = targets.predict(judge, images).argmax(1)
    judged = predicted == labels
    real = real_reference(config.run_dir(profile), profile, dataset, cfg.arch, cfg.seed)
    scores = {"target_accuracy": targets.accuracy(net, images, labels),
              "evaluator_accuracy": judged.float().mean().item(), "evaluator": judge_meta["arch"],
              "evaluator_real_accuracy": judge_meta["test_accuracy"],
              # variety: recognisable samples that are all alike would still pass both judges
              "within_class_ssim": metrics.within_class_ssim(images, labels, seed=cfg.seed),
              "real_within_class_ssim": real["within_class_ssim"]}
    if cfg.oversample > 1:  # what the selection buys and costs: the same scores on the first n draws of each class
        first, first_labels = r.extra["unselected_images"], r.extra["unselected_labels"]
        scores |= {"evaluator_accuracy_unselected": targets.accuracy(judge, first, first_labels),
                   "within_class_ssim_unselected": metrics.within_class_ssim(first, first_labels, seed=cfg.seed)}
    by_class = {"samples": _share_by_class(judged, labels, len(classes)), "real": real["evaluator_accuracy_by_class"]}
    key = {"dataset": dataset, "arch": cfg.arch, "method": method,
           "train_size": targets.size_label(cfg.train_size), "seed": cfg.seed, "evaluator": judge_meta["arch"]}
    real_key = {"dataset": dataset, "method": "real_test", "train_size": "all", "seed": cfg.seed}
    rows = [{**key, "metric": m, "value": scores[m]}
            for m in ("target_accuracy", "evaluator_accuracy", "within_class_ssim",
                      "evaluator_accuracy_unselected", "within_class_ssim_unselected") if m in scores]
    rows.append({**real_key, "metric": "within_class_ssim", "value": scores["real_within_class_ssim"]})
    for k, who in ((key, "samples"), ({**real_key, "evaluator": judge_meta["arch"]}, "real")):
        rows += [{**k, "metric": "evaluator_accuracy_of_class", "class": c, "value": v}
                 for c, v in zip(classes, by_class[who])]
    meta = {"method": method, "dataset": dataset, "trained_target": trained_target, "arch": cfg.arch,
            "train_size": cfg.train_size, "seed": cfg.seed, "attack_seed": attack_seed, **r.settings,
            "seconds": round(r.cost["wall_seconds"], 1), "cost": r.cost, "final_terms": r.extra.get("final_terms"),
            "target_test_accuracy": target_meta.get("test_accuracy")}
    path = None
    if save:
        path = samples_path(profile, method, dataset, cfg, trained_target)
        store.save_tensors(path, {"images": images, "labels": labels}, {**meta, **scores})
    return {"images": images, "labels": labels, "classes": classes, "meta": meta, "rows": rows, "scores": scores,
            "evaluator_accuracy_by_class": by_class, "evaluator_predictions": predicted, "samples_path": path,
            "reconstruction": r}


def samples_path(profile: str, method: str, dataset: str, cfg: dict, trained_target: bool = True):
    """Where ``run`` saves samples: ``samples/<method>_<dataset>.safetensors``, which the figures
    draw, for the profile's own settings only; any other settings (an override of
    anything but ``datasets``, or the untrained target) go to ``samples/variants/``
    under a hash of their settings, so a trial never replaces the figures' samples."""
    folder = config.run_dir(profile) / "samples"
    own = settings(profile, method)
    if trained_target and {k: v for k, v in cfg.items() if k != "datasets"} == \
            {k: v for k, v in own.items() if k != "datasets"}:
        return folder / f"{method}_{dataset}.safetensors"
    variant = store.config_hash({**cfg, "trained_target": trained_target})
    return folder / "variants" / f"{method}_{dataset}_{variant}.safetensors"
