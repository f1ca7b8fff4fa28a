"""The training toolkit every layer shares: random shifts, one descent step, classifier training,
prediction and accuracy. It imports nothing of the library, so attacks, metrics and targets can
all stand on it."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


def random_shift(
    images: torch.Tensor, pixels: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Each image moved by its own random offset of up to ``pixels`` in each direction, the
    uncovered border filled with zeros (the background of every dataset here)."""
    if not pixels:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (pixels,) * 4)
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    return padded.permute(0, 2, 3, 1)[torch.arange(n)[:, None, None], rows, cols].permute(
        0, 3, 1, 2
    )


def descend(opt, sched, loss: torch.Tensor, desc: str, step: int, lr: float, inputs=None) -> None:
    """One step of ``opt`` (and its schedule) down ``loss``, its gradient taken only into ``inputs``
    when given; a non-finite loss stops the run, naming ``lr``. Shared by classifier training and
    the optimisation attacks."""
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"{desc}: loss became {loss.item()} at step {step}; lower lr (now {lr})"
        )
    opt.zero_grad(set_to_none=True)
    loss.backward(inputs=inputs)
    opt.step()
    sched.step()


def train_classifier(
    net,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    device="cpu",
    desc: str = "train",
    shift: int = 0,
    announce: bool = False,
    stop=None,
    weight_decay: float = 1e-4,
) -> list[float]:
    """AdamW (decoupled ``weight_decay``) with cosine decay for ``steps`` minibatches of shuffled
    ``images`` in [0, 1],
    each image moved by up to ``shift`` pixels (``random_shift``) when ``shift`` is nonzero.
    ``announce`` prints, after the first steps, how long the whole training will take.
    ``stop(step)``, when given, is asked after every step (1, 2, ...) and ends the training early by
    returning True; it may evaluate the network (training resumes in train mode)."""
    gen = torch.Generator().manual_seed(seed)
    net.to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(steps, 1)))
    )
    losses, order, pos = [], torch.randperm(len(images), generator=gen), 0
    bar = tqdm(range(steps), desc=desc, leave=False, mininterval=1)
    start = time.time()
    for step in bar:
        if pos + batch_size > len(order):
            order, pos = torch.randperm(len(images), generator=gen), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        loss = F.cross_entropy(
            net(random_shift(images[idx], shift, gen).to(device)), labels[idx].to(device)
        )
        descend(opt, sched, loss, desc, step, lr)
        losses.append(loss.item())
        if announce and step == min(19, steps - 1):
            per_step = (time.time() - start) / (step + 1)
            print(
                f"{desc}: about {per_step * steps / 60:.1f} minutes for {steps} steps "
                f"({per_step:.2f} s a step on this machine)",
                flush=True,
            )
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if stop is not None:
            if stop(step + 1):
                break
            net.train()
    return losses


def train_to_margin(
    net,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    lr: float,
    weight_decay: float = 0.0,
    device="cpu",
    desc: str = "to a large margin",
) -> list[float]:
    """Full-batch gradient descent on cross-entropy, with ``weight_decay``, for ``steps`` steps, the
    network's inputs centred first on the images' mean (where it has a ``centre``). On a
    homogeneous two-class network (``models.HomogeneousMLP``) the weights then satisfy the
    stationarity equation of the positive control (``attacks.kkt``): trained long without decay,
    that of the max-margin problem (Haim et al. 2022); with decay, that of the regularised loss,
    which also erases the part of the initial weights that no gradient ever reaches
    (Buzaglo et al. 2023)."""
    net.to(device).train()
    x, y = images.to(device), labels.to(device)
    if hasattr(net, "centre"):
        net.centre.copy_(x.mean(0, keepdim=True))
    opt = torch.optim.SGD(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    losses = []
    bar = tqdm(range(steps), desc=desc, leave=False, mininterval=1)
    for step in bar:
        loss = F.cross_entropy(net(x), y)
        descend(opt, sched, loss, desc, step, lr)
        losses.append(loss.item())
        if step % 200 == 0:
            bar.set_postfix(loss=f"{loss.item():.2e}")
    return losses


@torch.no_grad()
def predict(net, images: torch.Tensor, device="cpu", batch_size: int = 1000) -> torch.Tensor:
    """Logits of ``net`` (in eval mode) on ``images``, batched."""
    net.to(device).eval()
    return torch.cat(
        [
            net(images[i : i + batch_size].to(device)).cpu()
            for i in range(0, len(images), batch_size)
        ]
    )


def accuracy(net, images, labels, device="cpu") -> float:
    return (predict(net, images, device).argmax(1) == labels).float().mean().item()
