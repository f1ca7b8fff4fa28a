"""Attacks that optimise the images themselves, from noise, against the frozen classifier.

- ``deepinversion`` (Yin et al., CVPR 2020; REFERENCE section 2): batches of
  images optimised with Adam so the classifier predicts their labels while the
  statistics of what enters each batch-norm layer match the running statistics
  stored in it (the first layer weighted more), with total variation (L1 and
  L2, four directions), an L2 prior, random jitter (and flips, where a
  dataset's classes survive a mirror), and the pixels clipped to [0, 1] after
  every step.
- ``bn_classwise`` (Soufleri et al. 2022): the same synthesis, but the data
  owner records the batch-norm input statistics of *each class* on its own
  training images (``class_statistics``), and each class's images match their
  class's statistics. It is meant as a privacy-preserving synthetic dataset.
- ``miface`` (Fredrikson et al., CCS 2015): per image, gradient descent on
  1 - p(class | x) with a smoothness prior. Each step has a fixed length along
  the normalised gradient, so an image whose class probability starts near zero
  (where 1 - p is flat) still moves: every class leaves its start.

The cost of these attacks grows with the number of images: every image is optimised.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import rules
from ..hooks import BatchNormInputs, batch_norm_layers
from ..inversion import jitter, stats_distance
from ..training import descend
from .base import Problem, attack

DEEPINVERSION = {
    "steps": 2000,
    "batch_size": 100,
    "lr": 0.05,
    "ce": 1.0,
    "bn": 0.05,
    "first_bn_multiplier": 10.0,
    "tv_l1": 0.0,
    "tv_l2": 0.01,
    "l2": 0.0,
    "jitter": 2,
    "flip": False,
}
BN_CLASSWISE = dict(DEEPINVERSION)
MIFACE = {"steps": 300, "lr": 0.05, "tv": 0.5}


RULES = {
    "steps": rules.RULES["steps"],
    "batch_size": rules.RULES["batch_size"],
    "lr": rules.RULES["lr"],
    "jitter": rules.RULES["shift"],
    "flip": rules.FLAG,
    **{k: rules.WEIGHT for k in ("ce", "bn", "first_bn_multiplier", "tv_l1", "tv_l2", "l2", "tv")},
}


# ----------------------------------------------------------------- priors and statistics
def tv_losses(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Total variation over four directions (across, down, both diagonals): (L1, L2), each per
    image."""
    diffs = [
        x[..., :, :-1] - x[..., :, 1:],
        x[..., :-1, :] - x[..., 1:, :],
        x[..., 1:, :-1] - x[..., :-1, 1:],
        x[..., :-1, :-1] - x[..., 1:, 1:],
    ]
    return sum(d.abs().mean() for d in diffs), sum(d.norm() for d in diffs) / len(x)


@torch.no_grad()
def class_statistics(
    model, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500, device="cpu"
) -> dict[int, list[tuple[torch.Tensor, torch.Tensor]]]:
    """What the data owner records for ``bn_classwise``: for each class, the per-channel mean
    and variance of what enters each batch-norm layer of ``model`` over that class's images."""
    model = model.to(device).eval()
    stats = {}
    for k in labels.unique().tolist():
        members = images[labels == k]
        sums = squares = counts = None
        for i in range(0, len(members), batch_size):
            with BatchNormInputs(model) as bn:
                model(members[i : i + batch_size].to(device))
            flat = [
                x.transpose(0, 1).flatten(1).double() for _, x in bn.inputs
            ]  # channels x values
            s, q, n = (
                [f.sum(1) for f in flat],
                [f.pow(2).sum(1) for f in flat],
                [f.shape[1] for f in flat],
            )
            sums = s if sums is None else [a + b for a, b in zip(sums, s)]
            squares = q if squares is None else [a + b for a, b in zip(squares, q)]
            counts = n if counts is None else [a + b for a, b in zip(counts, n)]
        stats[int(k)] = [
            ((s / n).float().cpu(), (q / n - (s / n) ** 2).clamp_min(0).float().cpu())
            for s, q, n in zip(sums, squares, counts)
        ]
    return stats


# ----------------------------------------------------------------- the shared optimisation
def _synthesise(
    problem: Problem, labels: torch.Tensor, cfg: dict, seed: int, bn_loss, desc: str
) -> torch.Tensor:
    """Optimise one batch of images of ``labels`` from noise. ``bn_loss(captured, labels)`` scores
    what entered the batch-norm layers (None: no such term)."""
    net, device = problem.model.to(problem.device), problem.device
    gen = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.2 * torch.randn(len(labels), *problem.image_shape, generator=gen)).clamp(0, 1)
    x = x.to(device).requires_grad_(True)
    y = labels.to(device)
    opt = torch.optim.Adam([x], lr=cfg["lr"], betas=(0.5, 0.9))
    steps = cfg["steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    for step in tqdm(range(steps), desc=desc, leave=False, mininterval=1):
        seen = jitter(x, cfg["jitter"], gen)
        if cfg["flip"] and torch.rand((), generator=gen) < 0.5:
            seen = seen.flip(-1)
        with BatchNormInputs(net) as bn:
            logits = net(seen)
        loss = cfg["ce"] * F.cross_entropy(logits, y)
        if bn_loss is not None and cfg["bn"]:
            loss = loss + cfg["bn"] * bn_loss(bn.inputs, y)
        tv_l1, tv_l2 = tv_losses(x)
        loss = (
            loss
            + cfg["tv_l1"] * tv_l1
            + cfg["tv_l2"] * tv_l2
            + cfg["l2"] * x.pow(2).flatten(1).sum(1).mean()
        )
        descend(opt, sched, loss, desc, step, cfg["lr"])
        with torch.no_grad():
            x.clamp_(0, 1)
    return x.detach()


def _in_batches(problem: Problem, cfg: dict, seed: int, bn_loss, name: str):
    """Every image of every class, optimised in batches that each hold all classes (interleaved),
    like the training batches the stored statistics came from; returned class-sorted."""
    labels = torch.arange(problem.num_classes).repeat(problem.per_class)
    out, starts = [], range(0, len(labels), cfg["batch_size"])
    for b, i in enumerate(starts):
        out.append(
            _synthesise(
                problem,
                labels[i : i + cfg["batch_size"]],
                cfg,
                seed + b,
                bn_loss,
                f"{name} {b + 1}/{len(starts)}",
            )
        )
    order = torch.argsort(labels, stable=True)
    return torch.cat(out)[order], labels[order], cfg["steps"] * len(starts), {}


@attack(
    "deepinversion",
    DEEPINVERSION,
    RULES,
    "DeepInversion (Yin et al. 2020): images optimised from noise to match the stored batch-norm "
    "statistics",
)
def deepinversion(problem: Problem, cfg: dict, seed: int):
    running = [(m.running_mean, m.running_var) for m in batch_norm_layers(problem.model)]
    if not running and cfg["bn"]:
        problem.skip(
            "bn", "the model has no batch-norm layer, so there are no stored statistics to match"
        )

    def bn_loss(captured, labels):
        return stats_distance(captured, running, cfg["first_bn_multiplier"])

    return _in_batches(problem, cfg, seed, bn_loss if running else None, "deepinversion")


@attack(
    "bn_classwise",
    BN_CLASSWISE,
    RULES,
    "class-wise batch-norm statistics synthesis (Soufleri et al. 2022): the data owner's "
    "synthetic dataset",
    needs=("class_stats",),
)
def bn_classwise(problem: Problem, cfg: dict, seed: int):
    stats = problem.class_stats or {}
    if not batch_norm_layers(problem.model):
        if cfg["bn"]:
            problem.skip(
                "bn", "the model has no batch-norm layer, so there are no class statistics to match"
            )
        return _in_batches(problem, cfg, seed, None, "bn_classwise")
    missing = [k for k in range(problem.num_classes) if k not in stats]
    if missing:
        raise ValueError(
            f"class_stats has no statistics for class(es) {missing}: record them with "
            "attacks.optimisation.class_statistics(model, images, labels) on training images of "
            "every class"
        )
    device_stats = {
        k: [(m.to(problem.device), v.to(problem.device)) for m, v in layers]
        for k, layers in stats.items()
    }

    def bn_loss(captured, labels):
        # each class's images against that class's statistics: in eval mode the images do not
        # interact,
        # so this is Soufleri's per-class synthesis with the classes sharing one forward pass
        present = labels.unique().tolist()
        return sum(
            stats_distance(
                [(layer, x[labels == k]) for layer, x in captured],
                device_stats[k],
                cfg["first_bn_multiplier"],
            )
            for k in present
        ) / len(present)

    return _in_batches(problem, cfg, seed, bn_loss, "bn_classwise")


@attack(
    "miface",
    MIFACE,
    RULES,
    "MI-Face (Fredrikson et al. 2015): each image descends 1 - p(class | x) with a smoothness "
    "prior",
)
def miface(problem: Problem, cfg: dict, seed: int):
    net, device = problem.model.to(problem.device), problem.device
    labels = torch.arange(problem.num_classes).repeat_interleave(problem.per_class)
    gen = torch.Generator().manual_seed(seed)
    # every image starts mid-grey with a little noise of its own, so images of one class can differ
    x = (
        (0.5 + 0.05 * torch.randn(len(labels), *problem.image_shape, generator=gen))
        .clamp(0, 1)
        .to(device)
    )
    y = labels.to(device)
    rows = torch.arange(len(y), device=device)
    for _ in tqdm(range(cfg["steps"]), desc="miface", leave=False, mininterval=1):
        x.requires_grad_(True)
        p = torch.softmax(net(x), 1)[rows, y]
        tv = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1) + (
            x[..., :, 1:] - x[..., :, :-1]
        ).abs().flatten(1).mean(1)  # each image's own total variation
        cost = (1 - p) + cfg["tv"] * tv
        (grad,) = torch.autograd.grad(cost.sum(), x)
        with torch.no_grad():
            norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
            x = (x - cfg["lr"] * math.sqrt(x[0].numel()) * grad / norm).clamp(0, 1)
    return x.detach(), labels, cfg["steps"], {}
