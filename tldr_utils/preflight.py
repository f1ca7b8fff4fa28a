"""What an audit checks and says before any work: the image sets (``check_images``), the model
(``check_model``), and what it will run with a rough time (``announce``)."""

from __future__ import annotations

import time

import torch

from . import attacks as registry


def check_images(name: str, pair) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise ValueError(f"{name} must be a pair (images, labels), got {type(pair).__name__}")
    x, y = torch.as_tensor(pair[0]), torch.as_tensor(pair[1])
    if x.numel() == 0 or y.numel() == 0:
        raise ValueError(
            f"{name} is empty (images {tuple(x.shape)}, labels {tuple(y.shape)}): give at least "
            "one image of every class"
        )
    if (
        x.dim() != 4
        or not x.is_floating_point()
        or not torch.isfinite(x).all()
        or x.min() < 0
        or x.max() > 1
    ):
        raise ValueError(
            f"{name} images must be finite floats N x C x H x W in [0, 1], got {tuple(x.shape)} "
            f"{x.dtype}"
        )
    if y.dim() != 1 or len(y) != len(x) or y.is_floating_point() or y.min() < 0:
        raise ValueError(
            f"{name} labels must be {len(x)} whole numbers >= 0, got shape {tuple(y.shape)} "
            f"{y.dtype}"
        )
    return x.float().cpu(), y.long().cpu()


def check_model(model: torch.nn.Module, image: torch.Tensor, num_classes: int) -> None:
    """Refuse, before any work and with the fix, a model that an attack would fail on later: one
    without loaded weights, with non-finite or non-float32 parameters, that does not return one
    tensor of logits for a batch like ``image``, or that has fewer outputs than the data has
    classes."""
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, p in model.named_parameters():
        if p.is_meta:
            raise ValueError(
                f"the model has no weights loaded: parameter {name!r} is on the meta device; "
                "load them first (model.load_state_dict(...), or model.to_empty(device=...) "
                "then load)"
            )
        if p.is_floating_point() and p.dtype != torch.float32:
            raise ValueError(
                f"the model's parameter {name!r} is {p.dtype}; the attacks run in float32: "
                "pass model.float()"
            )
        if not torch.isfinite(p).all():
            raise ValueError(
                f"the model's parameter {name!r} holds NaN or infinite values; audit a "
                "model whose training finished"
            )
    with registry.frozen(model), torch.no_grad():
        out = model(image[:1].to(next(model.parameters(), image).device))
    if not isinstance(out, torch.Tensor):
        raise ValueError(
            f"the model returns a {type(out).__name__}, but audit needs one tensor of logits "
            "(N x classes); wrap it, e.g. nn.Sequential-style: "
            "class Logits(nn.Module): forward(self, x): return model(x)[0]"
        )
    if out.dim() != 2 or out.shape[1] < num_classes:
        raise ValueError(
            f"the model gives outputs of shape {tuple(out.shape)} for one image, but the labels "
            f"name {num_classes} classes (0 to {num_classes - 1}): it needs N x {num_classes} "
            "logits; check the labels, or the model's last layer"
        )


def announce(model: torch.nn.Module, images: torch.Tensor, settings: dict, device) -> str:
    """What an audit will run and a rough time for it, printed before the first attack: one
    forward and backward pass of the model on a batch of 64 images, timed, times every attack's
    steps (a floor: the generators and the judge add to it)."""
    x = images[:64].to(device).requires_grad_(True)
    with registry.frozen(model):
        model(x).sum().backward()  # warm-up
        start = time.perf_counter()
        model(x).sum().backward()
        per_step = time.perf_counter() - start
    steps = sum(s.get("steps", 0) for s in settings.values())
    params = sum(p.numel() for p in model.parameters())
    line = (
        f"audit: {', '.join(settings)} against a model of {params:,} parameters on images "
        f"{tuple(images.shape[1:])}: {steps:,} attack steps, at least about "
        f"{steps * per_step / 60:.1f} minutes on this machine"
    )
    print(line, flush=True)
    return line
