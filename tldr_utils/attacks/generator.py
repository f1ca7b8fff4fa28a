"""The paper's attacks on the interface: one conditioned generator per target.

``inversion`` (REFERENCE 1.2) and ``tldr`` (1.3) train G(z, c) against the
frozen classifier (``inversion.train_generator``), then draw ``oversample``
times as many images as asked and keep the ones the target is most confident
in. Their cost is the generator's training plus the draws; once trained, G
draws any number of images for almost nothing (``extra["generator"]``).
``extra`` also holds the first draws of each class before the selection
(``unselected_images``, ``unselected_labels``) and the last step's loss terms.
A generator whose samples are all one image is refused; so is one whose samples
the target classifies at chance, unless ``require_learned`` is off (for a
control target that is at chance by nature).
Defaults are those of the ``cpu`` profile's ``invert`` and ``reconstruct`` sections.
"""

from __future__ import annotations

import time

import torch

from .. import config, inversion, rules, sampling, store
from ..models import Generator
from .base import Problem, attack

_COMMON = {
    "conditioning": "vector_matrix",
    "upsample": "resize",
    "soft_scale": 16.0,
    "steps": 800,
    "batch_size": 64,
    "lr": 0.003,
    "shift": 2,
    "warmup": 0.5,
    "epsilon": 0.1,
    "perturbation": "random",
    "oversample": 2,
    "require_learned": True,
}
INVERSION = {
    **_COMMON,
    "hot": False,
    "target_dropout": False,
    "weights": {
        "kl": 1.0,
        "ce": 1.0,
        "cos": 0.5,
        "ortho": 0.5,
        "ce_pert": 0.0,
        "tv": 2.0,
        "bn": 1.0,
        "diversity": 0.1,
    },
}
TLDR = {
    **_COMMON,
    "hot": True,
    "target_dropout": True,
    "weights": {
        "kl": 1.0,
        "ce": 1.0,
        "kl_pert": 1.0,
        "ce_pert": 1.0,
        "cos": 5.0,
        "ortho": 0.5,
        "tv": 2.0,
        "pixel": 0.0,
        "grad_norm": 0.02,
        "bn": 1.0,
        "diversity": 0.1,
    },
}


def train_and_sample(problem: Problem, cfg: dict, seed: int):
    """Train the generator on ``problem.model`` (or load it, see ``trained_generator``), refuse a
    degenerate one, draw and select the samples."""
    net = problem.model
    wall, cpu = time.perf_counter(), time.process_time()
    G, history, trained = trained_generator(problem, cfg, seed)
    checked = time.process_time()
    sampling.check_not_degenerate(
        G, net if cfg["require_learned"] else None, config.Settings(cfg, seed=seed), "generator"
    )
    n, k = problem.per_class, cfg["oversample"]
    draws, draw_labels = sampling.sample(
        G, n * k, hot=cfg["hot"], seed=seed, device=problem.device, soft_scale=cfg["soft_scale"]
    )
    images, labels = (
        sampling.most_confident(net, draws, draw_labels, n, problem.device)
        if k > 1
        else (draws, draw_labels)
    )
    # the two parts of the cost: training once, then drawing (and selecting) each image
    cost = {
        "train_cpu_seconds": trained["cpu_seconds"],
        "sample_cpu_seconds_per_image": (time.process_time() - checked) / len(images),
    }
    if trained[
        "reused"
    ]:  # the whole cost, as if trained here: its training as measured then, and this call
        cost |= {
            "cpu_seconds": trained["cpu_seconds"] + time.process_time() - cpu,
            "wall_seconds": trained["wall_seconds"] + time.perf_counter() - wall,
            "generator_reused": True,
        }
    first = torch.cat(
        [torch.nonzero(draw_labels == c).flatten()[:n] for c in range(problem.num_classes)]
    )
    return (
        images,
        labels,
        cfg["steps"],
        {
            "generator": G,
            "history": history,
            "final_terms": history[-1],
            "cost": cost,
            "unselected_images": draws[first],
            "unselected_labels": draw_labels[first],
        },
    )


_SAMPLING = (
    "oversample",
    "require_learned",
)  # settings that change what is drawn, not the generator


def trained_generator(problem: Problem, cfg: dict, seed: int):
    """The generator trained on ``problem.model`` with ``cfg``: ``(G, history, cost)``, the cost its
    training's CPU and wall seconds and whether it was ``reused``.

    With ``problem.cache``, it is kept there under a hash of the model's weights and of every
    setting of its training, apart from what is drawn from it: a run that asks for another
    number of images, or selects them otherwise, draws from the same generator instead of
    training it again (its cost is the one measured when it was trained)."""
    net = problem.model
    weights, dropped = inversion.supported(net, cfg["weights"], problem.feature_layer)
    for term, why in dropped.items():
        problem.skip(term, why)
    G = Generator(
        problem.image_shape, problem.num_classes, cfg["conditioning"], upsample=cfg["upsample"]
    )
    path = None
    if problem.cache is not None:
        key = {
            "model": store.tensor_hash(*net.state_dict().values()),
            "shape": list(problem.image_shape),
            "num_classes": problem.num_classes,
            "feature_layer": problem.feature_layer,
            "seed": seed,
            "version": inversion.LOSS_VERSION,
            **{k: v for k, v in cfg.items() if k not in _SAMPLING},
        }
        path = problem.cache / "generators" / f"generator_{store.config_hash(key)}.safetensors"
        with store.exclusive(path):
            if path.exists():
                meta = store.load_model(path, G)
                return G.eval(), meta["history"], {**meta["cost"], "reused": True}
            return _train(problem, cfg, weights, seed, path)
    return _train(problem, cfg, weights, seed, path)


def _train(problem: Problem, cfg: dict, weights: dict, seed: int, path):
    wall, cpu = time.perf_counter(), time.process_time()
    G, history = inversion.train_generator(
        problem.model,
        problem.image_shape,
        problem.num_classes,
        weights,
        conditioning=cfg["conditioning"],
        hot=cfg["hot"],
        soft_scale=cfg["soft_scale"],
        steps=cfg["steps"],
        batch_size=cfg["batch_size"],
        lr=cfg["lr"],
        epsilon=cfg["epsilon"],
        perturbation=cfg["perturbation"],
        shift=cfg["shift"],
        warmup=cfg["warmup"],
        target_dropout=cfg["target_dropout"],
        seed=seed,
        device=problem.device,
        feature_layer=problem.feature_layer,
        upsample=cfg["upsample"],
    )
    cost = {"cpu_seconds": time.process_time() - cpu, "wall_seconds": time.perf_counter() - wall}
    if path is not None:
        store.save_model(path, G, {"history": history, "cost": cost})
    return G, history, {**cost, "reused": False}


_GENERATOR_BUDGET = {"steps": "generator_steps", "batch_size": "generator_batch_size"}
inversion_attack = attack(
    "inversion",
    INVERSION,
    rules.RULES,
    "network inversion: one generator conditioned on soft class vectors (the paper's Section 3)",
    version=inversion.LOSS_VERSION,
    budget=_GENERATOR_BUDGET,
)(train_and_sample)
tldr_attack = attack(
    "tldr",
    TLDR,
    rules.RULES,
    "training-like reconstruction: the generator steered by confidence, robustness and small "
    "weight "
    "gradients (the paper's Section 4)",
    version=inversion.LOSS_VERSION,
    budget=_GENERATOR_BUDGET,
)(train_and_sample)
