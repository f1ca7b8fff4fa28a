"""The paper's attacks on the interface: one conditioned generator per target.

``inversion`` (REFERENCE 1.2) and ``tldr`` (1.3) train G(z, c) against the
frozen classifier (``inversion.train_generator``), then draw ``oversample``
times as many images as asked and keep the ones the target is most confident
in. Their cost is the generator's training plus the draws; once trained, G
draws any number of images for almost nothing (``extra["generator"]``).
Defaults are those of the ``cpu`` profile's ``invert`` and ``reconstruct`` sections.
"""

from __future__ import annotations

import time

from .. import config, inversion
from . import Problem, register

_COMMON = {"conditioning": "vector_matrix", "soft_scale": 16.0, "steps": 800, "batch_size": 64, "lr": 0.003,
           "shift": 2, "warmup": 0.5, "epsilon": 0.1, "perturbation": "random", "oversample": 2}
INVERSION = {**_COMMON, "hot": False, "target_dropout": False,
             "weights": {"kl": 1.0, "ce": 1.0, "cos": 0.5, "ortho": 0.5, "ce_pert": 0.0, "tv": 2.0, "bn": 1.0}}
TLDR = {**_COMMON, "hot": True, "target_dropout": True,
        "weights": {"kl": 1.0, "ce": 1.0, "kl_pert": 1.0, "ce_pert": 1.0, "cos": 5.0, "ortho": 0.5, "tv": 2.0,
                    "pixel": 0.0, "grad_norm": 0.02, "bn": 1.0}}


def train_and_sample(problem: Problem, cfg: dict, seed: int):
    """Train the generator on ``problem.model``, refuse a degenerate one, draw and select the samples."""
    net = problem.model
    weights, dropped = inversion.supported(net, cfg["weights"], problem.feature_layer)
    for term, why in dropped.items():
        problem.skip(term, why)
    start = time.process_time()
    G, history = inversion.train_generator(
        net, problem.image_shape, problem.num_classes, weights, conditioning=cfg["conditioning"], hot=cfg["hot"],
        soft_scale=cfg["soft_scale"], steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
        epsilon=cfg["epsilon"], perturbation=cfg["perturbation"], shift=cfg["shift"], warmup=cfg["warmup"],
        target_dropout=cfg["target_dropout"], seed=seed, device=problem.device, feature_layer=problem.feature_layer)
    trained = time.process_time()
    inversion.check_not_degenerate(G, net, config.Settings(cfg, seed=seed), "generator")
    checked = time.process_time()
    images, labels = inversion.sample(G, problem.per_class, hot=cfg["hot"], seed=seed, device=problem.device,
                                      soft_scale=cfg["soft_scale"], target=net, oversample=cfg["oversample"])
    # the two parts of the cost: training once, then drawing (and selecting) each image
    cost = {"train_cpu_seconds": trained - start,
            "sample_cpu_seconds_per_image": (time.process_time() - checked) / len(images)}
    return images, labels, cfg["steps"], {"generator": G, "history": history, "cost": cost}


register("inversion", INVERSION, config.RULES,
         "network inversion: one generator conditioned on soft class vectors (the paper's Section 3)")(train_and_sample)
register("tldr", TLDR, config.RULES,
         "training-like reconstruction: the generator steered by confidence, robustness and small weight "
         "gradients (the paper's Section 4)")(train_and_sample)
