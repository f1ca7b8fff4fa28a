"""The defence of split computing: adversarially learned privacy-preserving representations
(Xiao et al., AAAI 2020; REFERENCE section 2).

A classifier is cut after ``depth`` blocks into an encoder E (run on the device) and a task head C
(the rest). While E and C learn the task, an adversary decoder D learns, on the attacker's own
images, to reconstruct x from E(x); E and C minimise

    L_task(C(E(x)), y) - lambda * L_rec(D(E(x)), x)

in alternation with D's updates, so E learns features that serve the task and
defeat the decoder. L_rec is the squared error in pixels plus, with a
``perceptual`` network (the first blocks of a classifier trained here: nothing is
downloaded), the squared error between its features of the two images.
``lam = 0`` trains the undefended classifier with the same recipe.

Privacy is then judged as an attacker would judge it, not by D: E is frozen and
a fresh decoder is trained from scratch, and ``split_optimisation`` is run
against E (notebook 09).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import store
from .attacks.split import Inverse
from .models import build_classifier, split_points


def reconstruction_loss(
    recon: torch.Tensor,
    x: torch.Tensor,
    perceptual: nn.Module | None = None,
    perceptual_weight: float = 1.0,
) -> torch.Tensor:
    """Squared error in pixels, plus ``perceptual_weight`` times that of ``perceptual``'s
    features."""
    loss = F.mse_loss(recon, x)
    if perceptual is not None and perceptual_weight:
        loss = loss + perceptual_weight * F.mse_loss(perceptual(recon), perceptual(x))
    return loss


def train_defended(
    arch: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    aux: torch.Tensor,
    depth: int,
    lam: float,
    *,
    num_classes: int = 10,
    steps: int = 800,
    batch_size: int = 64,
    lr: float = 0.002,
    decoder_lr: float = 0.003,
    decoder_width: int = 64,
    adversary_steps: int = 1,
    perceptual: nn.Module | None = None,
    perceptual_weight: float = 1.0,
    seed: int = 0,
    device="cpu",
    desc: str = "defence",
):
    """A classifier of ``arch`` trained on ``images``/``labels`` against an adversary decoder that
    sees its first ``depth`` blocks and learns on ``aux``, ``adversary_steps`` of its steps to each
    of the classifier's (a decoder kept near its best leaves the encoder no way to raise its loss
    but to lose information). Returns the classifier (in eval mode) and, per step, ``task``, ``rec``
    (the adversary's reconstruction loss on the training batch) and ``decoder`` (on its own
    batch)."""
    if lam < 0 or not math.isfinite(lam):
        raise ValueError(f"lam must be a number >= 0 (0: no defence), got {lam!r}")
    if not (isinstance(adversary_steps, int) and adversary_steps >= 1):
        raise ValueError(f"adversary_steps must be a whole number >= 1, got {adversary_steps!r}")
    shape = tuple(images.shape[1:])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = build_classifier(arch, shape, num_classes).to(device)
    blocks, _ = split_points(net)
    if not 1 <= depth <= len(blocks):
        raise ValueError(f"depth must be between 1 and {len(blocks)} for a {arch}, got {depth!r}")
    encoder = nn.Sequential(*blocks[:depth])
    with torch.no_grad():
        net.eval()
        act_shape = tuple(encoder(images[:2].to(device)).shape[1:])
    D = Inverse(act_shape, shape, decoder_width, bounded=True).to(device)
    if perceptual is not None:
        perceptual = perceptual.to(device).eval()
        for p in perceptual.parameters():
            p.requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    opt_d = torch.optim.Adam(D.parameters(), lr=decoder_lr)
    history = []
    for step in tqdm(range(steps), desc=desc, leave=False, mininterval=1):
        # the adversary: its steps on its own images, against the encoder as it is now
        net.eval()
        D.train()
        for _ in range(adversary_steps):
            xa = aux[torch.randint(len(aux), (batch_size,), generator=gen)].to(device)
            with torch.no_grad():
                a = encoder(xa)
            d_loss = reconstruction_loss(D(a), xa, perceptual, perceptual_weight)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        # the defender: the task, minus lambda times what the adversary recovers
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        x, y = images[idx].to(device), labels[idx].to(device)
        net.train()
        D.eval()
        task = F.cross_entropy(net(x), y)
        with torch.set_grad_enabled(bool(lam)):  # without the defence, only watched
            rec = reconstruction_loss(D(encoder(x)), x, perceptual, perceptual_weight)
        loss = task - lam * rec if lam else task
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{desc}: loss became {loss.item()} at step {step}; lower lr (now {lr}) or lam"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=list(net.parameters()))
        opt.step()
        sched.step()
        history.append({"task": task.item(), "rec": rec.item(), "decoder": d_loss.item()})
    return net.eval(), history


def get_defended(
    folder,
    arch: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    aux: torch.Tensor,
    depth: int,
    lam: float,
    **settings,
):
    """``train_defended``, cached in ``folder`` under a hash of the data, ``depth``, ``lam`` and
    every setting (a ``perceptual`` network by its weights). Returns the classifier and its meta
    (settings, training seconds, and ``late``: each loss averaged over the last tenth of the
    steps)."""
    perceptual = settings.get("perceptual")
    spec = {
        "arch": arch,
        "depth": depth,
        "lam": lam,
        "data": store.tensor_hash(images, labels, aux),
        **{k: v for k, v in settings.items() if k not in ("perceptual", "device")},
        "perceptual": None
        if perceptual is None
        else store.tensor_hash(*perceptual.state_dict().values()),
    }
    path = Path(folder) / f"{arch}_depth{depth}_lam{lam:g}_{store.config_hash(spec)}.safetensors"
    net = build_classifier(arch, tuple(images.shape[1:]), settings.get("num_classes", 10))
    with store.exclusive(path):
        if path.exists():
            return net.eval(), store.load_model(path, net)
        start = time.time()
        net, history = train_defended(
            arch, images, labels, aux, depth, lam, desc=f"defence lam={lam:g}", **settings
        )
        tail = history[-max(1, len(history) // 10) :]
        late = {k: sum(h[k] for h in tail) / len(tail) for k in tail[0]}
        meta = {**spec, "seconds": round(time.time() - start, 1), "late": late}
        store.save_model(path, net.cpu(), meta)
    return net.eval(), meta
