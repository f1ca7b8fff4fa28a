"""Target classifiers: trained once per configuration, cached in ``runs/<profile>/targets``.

A target is named by (dataset, architecture, training-set size, seed) and the
profile's ``train_targets`` settings; its checkpoint's file name carries a hash
of all of them, so changing any setting trains a new one instead of reusing a
stale file.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import config, data, store, sweep
from .models import ARCHS, build_classifier


def random_shift(images: torch.Tensor, pixels: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image moved by its own random offset of up to ``pixels`` in each direction, the
    uncovered border filled with zeros (the background of every dataset here)."""
    if not pixels:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (pixels,) * 4)
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    return padded.permute(0, 2, 3, 1)[torch.arange(n)[:, None, None], rows, cols].permute(0, 3, 1, 2)


def descend(opt, sched, loss: torch.Tensor, desc: str, step: int, lr: float, inputs=None) -> None:
    """One step of ``opt`` (and its schedule) down ``loss``, its gradient taken only into ``inputs``
    when given; a non-finite loss stops the run, naming ``lr``. Shared by classifier training and
    the optimisation attacks."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{desc}: loss became {loss.item()} at step {step}; lower lr (now {lr})")
    opt.zero_grad(set_to_none=True)
    loss.backward(inputs=inputs)
    opt.step()
    sched.step()


def train_classifier(net, images: torch.Tensor, labels: torch.Tensor, steps: int, batch_size: int, lr: float,
                     seed: int, device="cpu", desc: str = "train", shift: int = 0, announce: bool = False,
                     stop=None, weight_decay: float = 1e-4) -> list[float]:
    """AdamW (decoupled ``weight_decay``) with cosine decay for ``steps`` minibatches of shuffled ``images`` in [0, 1],
    each image moved by up to ``shift`` pixels (``random_shift``) when ``shift`` is nonzero.
    ``announce`` prints, after the first steps, how long the whole training will take.
    ``stop(step)``, when given, is asked after every step (1, 2, ...) and ends the training early by
    returning True; it may evaluate the network (training resumes in train mode)."""
    gen = torch.Generator().manual_seed(seed)
    net.to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(steps, 1))))
    losses, order, pos = [], torch.randperm(len(images), generator=gen), 0
    bar = tqdm(range(steps), desc=desc, leave=False, mininterval=1)
    start = time.time()
    for step in bar:
        if pos + batch_size > len(order):
            order, pos = torch.randperm(len(images), generator=gen), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        loss = F.cross_entropy(net(random_shift(images[idx], shift, gen).to(device)), labels[idx].to(device))
        descend(opt, sched, loss, desc, step, lr)
        losses.append(loss.item())
        if announce and step == min(19, steps - 1):
            per_step = (time.time() - start) / (step + 1)
            print(f"{desc}: about {per_step * steps / 60:.1f} minutes for {steps} steps "
                  f"({per_step:.2f} s a step on this machine)", flush=True)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if stop is not None:
            if stop(step + 1):
                break
            net.train()
    return losses


def train_to_margin(net, images: torch.Tensor, labels: torch.Tensor, steps: int, lr: float,
                    weight_decay: float = 0.0, device="cpu", desc: str = "to a large margin") -> list[float]:
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
    return torch.cat([net(images[i:i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)])


def accuracy(net, images, labels, device="cpu") -> float:
    return (predict(net, images, device).argmax(1) == labels).float().mean().item()


def size_label(train_size: int | None):
    """How a training-set size is named in file names and metrics: None is "all"."""
    return "all" if train_size is None else train_size


def training_indices(train: data.ImageSet, train_size: int | None, seed: int) -> torch.Tensor:
    """Which training images a target of this size and seed was trained on."""
    return data.stratified_subset(train.labels, train_size, seed)


def spec(profile: str, dataset: str, arch: str, train_size: int | None = None, seed: int = 0, trained: bool = True,
         overrides: dict | None = None) -> dict:
    """The plain description of a target that the profile's ``train_targets`` section (and ``overrides``)
    names: what ``train`` takes, and what a sweep cell carries instead of the profile's name."""
    cfg = config.settings(profile, "train_targets", overrides)
    return {"dataset": dataset, "arch": arch, "train_size": train_size, "seed": seed,
            "steps": cfg.steps if trained else 0, "batch_size": cfg.batch_size, "lr": cfg.lr, "shift": 0,
            "device": cfg.device}


def evaluator_spec(profile: str, dataset: str, target_arch: str, overrides: dict | None = None) -> dict:
    """The plain description of the evaluation classifier for targets of ``target_arch`` (see ``get_evaluator``)."""
    cfg = config.settings(profile, "train_targets", overrides)
    return {**spec(profile, dataset, get_evaluator_arch(profile, target_arch, overrides), None, cfg.eval_seed,
                   overrides=overrides), "steps": cfg.eval_steps, "shift": cfg.eval_shift}


def train(folder, dataset: str, arch: str, train_size: int | None, seed: int, steps: int, batch_size: int, lr: float,
          shift: int = 0, device: str = "auto"):
    """The classifier of ``arch`` trained for ``steps`` minibatches of ``batch_size`` (0: the untrained
    control, same architecture, random weights) on ``train_size`` images of ``dataset`` chosen by
    ``seed`` (None: all), each moved by up to ``shift`` pixels; cached in ``<folder>/targets``
    under a hash of every choice, so changing any one trains a new one instead of reusing a
    stale file. Returns ``(net, meta)``; ``meta`` holds the settings, training-set size, train
    and test accuracy, data provenance and training time. Two processes that need the same
    target at once train it once: the second waits for the first and loads its checkpoint."""
    train_set = data.load_dataset(dataset, "train")
    test = data.load_dataset(dataset, "test")
    idx = training_indices(train_set, train_size, seed)
    spec = {"dataset": dataset, "arch": arch, "train_size": train_size, "seed": seed, "steps": steps,
            "batch_size": batch_size, "lr": lr, "data_sha256": train_set.provenance()["sha256"]}
    if shift:  # only then, so that unaugmented targets keep their cache names
        spec["shift"] = shift
    name = f"{dataset}_{arch}_n{size_label(train_size)}_s{seed}_{store.config_hash(spec)}"
    path = Path(folder) / "targets" / f"{name}.safetensors"
    torch.manual_seed(seed)
    net = build_classifier(arch, tuple(train_set.images.shape[1:]), len(train_set.classes))
    if path.exists():
        return net.eval(), store.load_model(path, net)
    with store.exclusive(path):
        if path.exists():  # another process trained it while this one waited
            return net.eval(), store.load_model(path, net)
        dev = config.device({"device": device})
        x, y = train_set.float()[idx], train_set.labels[idx]
        start = time.time()
        desc = f"{dataset}/{arch}/n={len(idx)}/seed={seed}"
        if steps:
            print(f"training {desc} for {steps} steps of {batch_size} -> {path}", flush=True)
        train_classifier(net, x, y, steps, batch_size, lr, seed, dev, desc, shift, announce=steps >= 500)
        eval_n = min(len(x), 10000)
        meta = {**spec, "n_train": len(idx), "seconds": round(time.time() - start, 1),
                "train_accuracy": accuracy(net, x[:eval_n], y[:eval_n], dev),
                "test_accuracy": accuracy(net, test.float(), test.labels, dev),
                "data": train_set.provenance()}
        store.save_model(path, net.cpu(), meta)
    print(f"{desc}: train acc {meta['train_accuracy']:.3f}, test acc {meta['test_accuracy']:.3f} "
          f"in {meta['seconds']:.0f}s -> {path.name}")
    return net.eval(), meta


def target_cell(folder, **target) -> sweep.Result:
    """A sweep cell: train (or load) the target ``target`` (``spec``'s keys) and report its train and
    test accuracy as metric rows (method ``target``)."""
    _, meta = train(folder, **target)
    key = {"dataset": meta["dataset"], "arch": meta["arch"], "method": "target",
           "train_size": size_label(meta["train_size"]), "seed": meta["seed"]}
    return sweep.Result([{**key, "metric": m, "value": meta[m]} for m in ("train_accuracy", "test_accuracy")],
                        notes=[f"trained in {meta['seconds']:.0f}s" if meta.get("seconds") else "loaded"])


def get_target(profile: str, dataset: str, arch: str, train_size: int | None = None, seed: int = 0,
               trained: bool = True, steps: int | None = None, shift: int = 0, overrides: dict | None = None):
    """The target classifier that ``profile`` names for these choices (``train``, cached in
    ``runs/<profile>/targets``). ``trained=False`` gives the untrained control. ``steps``
    (default: the profile's) and ``shift`` are for the evaluation classifier, which is trained
    longer and on shifted images. ``overrides`` changes settings of the profile's
    ``train_targets`` section, as in notebook 01."""
    s = spec(profile, dataset, arch, train_size, seed, trained, overrides)
    if steps is not None and trained:
        s["steps"] = steps
    return train(config.run_dir(profile), **{**s, "shift": shift})


def get_evaluator_arch(profile: str, target_arch: str, overrides: dict | None = None) -> str:
    """The evaluation classifier's architecture: the profile's ``eval_arch``, unless that is the target's."""
    eval_arch = config.settings(profile, "train_targets", overrides).eval_arch
    return eval_arch if eval_arch != target_arch else next(a for a in ARCHS if a != target_arch)


def get_evaluator(profile: str, dataset: str, target_arch: str, overrides: dict | None = None):
    """An independent judge of reconstructions: another architecture, another seed, all the data.

    It is trained for ``eval_steps`` on images moved by up to ``eval_shift`` pixels: the
    generators are trained to hold their class under such moves (their ``shift``), so
    where a sample sits within a few pixels is arbitrary, and a judge that is not
    tolerant of it would score placement rather than content. The first call for a
    dataset trains it (minutes on a CPU: it says how long before it starts) and
    caches it for every later one."""
    return train(config.run_dir(profile), **evaluator_spec(profile, dataset, target_arch, overrides))
