"""Drawing from a trained generator: ``sample`` (with the target's pick of the most confident
draws, ``most_confident``) and the refusal of a generator whose samples carry nothing
(``check_not_degenerate`` raises ``DegenerateRun``)."""

from __future__ import annotations

import torch

from . import training
from .inversion import SOFT_SCALE, conditions
from .models import Generator


@torch.no_grad()
def sample(
    G: Generator,
    per_class: int,
    hot: bool = False,
    seed: int = 0,
    device="cpu",
    batch_size: int = 500,
    soft_scale: float = SOFT_SCALE,
    target=None,
    oversample: int = 1,
):
    """``per_class`` images of every class from a trained generator: (images, labels), class-sorted.

    With a ``target`` classifier and ``oversample`` k > 1, k times as many candidates
    are drawn and the ``per_class`` of each class that the target is most confident
    in are kept (see ``most_confident``).
    """
    _check_oversample(oversample)
    if oversample > 1 and target is None:
        raise ValueError(
            f"oversample={oversample} needs the target classifier that picks the samples: pass "
            f"target="
        )
    gen = torch.Generator().manual_seed(seed)
    K = G.num_classes
    labels = torch.arange(K).repeat_interleave(per_class * oversample)
    p = conditions(labels, K, hot, gen, soft_scale)
    z = torch.randn(len(labels), G.latent_dim, generator=gen)
    G = G.to(device).eval()  # batch norm in eval mode; dropout stays on by design
    torch.manual_seed(seed)  # dropout masks
    out = []
    for i in range(0, len(labels), batch_size):
        c = labels[i : i + batch_size] if G.conditioning == "label" else p[i : i + batch_size]
        out.append(G(z[i : i + batch_size].to(device), c.to(device)).cpu())
    images = torch.cat(out)
    if oversample > 1:
        return most_confident(target, images, labels, per_class, device)
    return images, labels


def _check_oversample(oversample) -> None:
    if oversample < 1 or int(oversample) != oversample:
        raise ValueError(
            f"oversample must be a whole number >= 1 (1 keeps every draw), got {oversample!r}"
        )


@torch.no_grad()
def most_confident(net, images, labels, per_class: int, device="cpu"):
    """The ``per_class`` images of each class with the highest log-probability of their
    class under ``net``, class-sorted, in draw order within a class.

    This is TLDR's first property (a classifier is most confident on its training
    data) used once more at sampling time, and it uses the target only: an
    attacker holding the weights can always draw more and keep the best.
    """
    log_p = torch.log_softmax(training.predict(net, images, device), 1)[
        torch.arange(len(labels)), labels
    ]
    keep = []
    for k in labels.unique():
        members = torch.nonzero(labels == k).flatten()
        if len(members) < per_class:
            raise ValueError(
                f"class {int(k)} has {len(members)} images, fewer than the {per_class} to keep"
            )
        keep.append(members[log_p[members].topk(per_class).indices.sort().values])
    keep = torch.cat(keep)
    return images[keep], labels[keep]


# ----------------------------------------------------------------- checks
class DegenerateRun(RuntimeError):
    """A generator whose samples carry nothing: all one image, or at chance for the target."""


def check_not_degenerate(
    G: Generator, net, cfg, desc: str = "generator", per_class: int = 10
) -> None:
    """Refuse a generator whose samples are one constant image, or whose samples the target ``net``
    (when given) classifies no better than chance (at most 1.5 times the chance rate), naming the
    likely cause."""
    images, labels = sample(G, per_class, hot=cfg.hot, seed=cfg.seed, soft_scale=cfg.soft_scale)
    spread = images.std(0).max().item()
    if spread < 1e-3:
        raise DegenerateRun(
            f"{desc}: every sample is the same image (largest pixel spread {spread:.1e}), so the "
            f"generator "
            f"collapsed. Likely cause: lr {cfg.lr:g} is too high; try {cfg.lr / 10:g}. Nothing "
            f"was cached."
        )
    if net is None:
        return
    share, chance = training.accuracy(net, images, labels), 1 / G.num_classes
    if share <= 1.5 * chance:
        raise DegenerateRun(
            f"{desc}: the target puts only {share:.0%} of the samples in their class (chance is "
            f"{chance:.0%}), "
            f"so the generator did not learn the classes. Likely cause: too few steps "
            f"({cfg.steps}) or an lr "
            f"({cfg.lr:g}) far from the profile's; raise steps or restore lr. Nothing was cached."
        )
