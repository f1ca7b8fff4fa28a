"""The positive control: training images recovered from the weights of a two-class homogeneous
network (Haim et al., NeurIPS 2022; Buzaglo et al., NeurIPS 2023; REFERENCE section 5).

A bias-free ReLU network trained on two classes with the logistic loss ends at a stationary
point whose weights are a combination of the gradients at its training points:

    theta = sum_i lambda_i y_i grad_theta Phi(theta; x_i),    lambda_i >= 0,

with Phi the margin (the second logit minus the first) and y = +1 for class 1, -1 for class 0:
trained long without weight decay, the KKT condition of the max-margin problem (Haim et al.);
with weight decay, the stationarity of the regularised loss (Buzaglo et al.). The attack turns
the equation around. Candidate images, ``per_class`` of each class (about twice as many as the
training images it hopes to find), and their coefficients are optimised with Adam until the
right-hand side reproduces the weights (the squared error, with the weights scaled to norm 1),
the coefficients held above ``lambda_min`` and the pixels in [0, 1] by penalties.

Candidates live in the model's centred input space (``x - centre`` for ``models.HomogeneousMLP``;
mid-grey for a model without a ``centre``) and start there at ``init_scale`` times Gaussian noise.
The equation fixes each candidate's direction but not its length (doubling a candidate and
halving its coefficient changes nothing), so each is returned at the length where its brightest
pixel is white: the training images of the datasets here all reach full intensity.

Its theory holds only for such networks and training; on any other model the equation has no
reason to hold, and the attack says so by ending with a large ``kkt`` term in ``extra``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import rules
from ..training import descend
from .base import Problem, attack

KKT = {"steps": 5000, "lr": 0.003, "lambda_min": 0.01, "init_scale": 0.001, "range": 1.0}
_POSITIVE = rules.real(0, low_open=True)
RULES = {
    "steps": rules.RULES["steps"],
    "lr": _POSITIVE,
    "lambda_min": _POSITIVE,
    "init_scale": _POSITIVE,
    "range": rules.WEIGHT,
}


def margin(net, x: torch.Tensor, params: dict | None = None) -> torch.Tensor:
    """Phi(x): the second logit minus the first (a model of one output: that output), with the
    model's parameters replaced by ``params`` where given."""
    out = net(x) if params is None else torch.func.functional_call(net, params, (x,))
    if out.dim() != 2 or out.shape[1] not in (1, 2):
        raise ValueError(
            f"kkt needs a two-class model (two logits, or one margin); this one gives "
            f"{tuple(out.shape)}"
        )
    return out[:, 0] if out.shape[1] == 1 else out[:, 1] - out[:, 0]


def kkt_terms(net, theta: dict, x, lam, y, lambda_min: float) -> dict:
    """The attack's loss terms for candidate images ``x`` with coefficients ``lam`` and signs ``y``,
    against the parameters ``theta`` (of norm 1, leaf tensors that require gradients)."""
    combined = torch.autograd.grad(
        (lam * y * margin(net, x, theta)).sum(), list(theta.values()), create_graph=True
    )
    return {
        "kkt": sum((t - g).pow(2).sum() for t, g in zip(theta.values(), combined)),
        "lambda": F.relu(lambda_min - lam).sum(),
        "range": (F.relu(x - 1) + F.relu(-x)).pow(2).flatten(1).sum(1).mean(),
    }


def brightest_white(centre: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``centre + c * u`` in [0, 1] for each candidate direction ``u``, with the length ``c`` at
    which its first pixel reaches white (``c`` = 1 for a direction that brightens no pixel)."""
    room = (1 - centre).expand_as(u).flatten(1)
    up = u.flatten(1)
    c = (
        torch.where(up > 1e-8, room / up.clamp(min=1e-8), torch.full_like(up, math.inf))
        .min(1)
        .values
    )
    c = torch.where(torch.isfinite(c), c, torch.ones_like(c))
    return (centre + c.view(-1, *[1] * (u.dim() - 1)) * u).clamp(0, 1)


@attack(
    "kkt",
    KKT,
    RULES,
    "Haim et al. 2022 / Buzaglo et al. 2023: candidates and coefficients fitted to the "
    "stationarity "
    "equation of a two-class homogeneous network; the positive control",
    classes=2,
)
def kkt(problem: Problem, cfg: dict, seed: int):
    net, device = problem.model.to(problem.device), problem.device
    named = dict(net.named_parameters())
    norm = torch.sqrt(sum(p.detach().pow(2).sum() for p in named.values()))
    theta = {k: (p.detach() / norm).requires_grad_(True) for k, p in named.items()}
    centre = getattr(net, "centre", torch.full((1, *problem.image_shape), 0.5)).detach().to(device)
    labels = torch.arange(2).repeat_interleave(problem.per_class)
    y = (labels * 2 - 1).float().to(device)
    gen = torch.Generator().manual_seed(seed)
    u = (cfg["init_scale"] * torch.randn(len(labels), *problem.image_shape, generator=gen)).to(
        device
    )
    u.requires_grad_(True)
    lam = torch.full((len(labels),), 2 * cfg["lambda_min"], device=device, requires_grad=True)
    opt = torch.optim.Adam([u, lam], lr=cfg["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / cfg["steps"]))
    )
    terms = {}
    for step in tqdm(range(cfg["steps"]), desc="kkt", leave=False, mininterval=1):
        terms = kkt_terms(net, theta, centre + u, lam, y, cfg["lambda_min"])
        loss = terms["kkt"] + terms["lambda"] + cfg["range"] * terms["range"]
        descend(opt, sched, loss, "kkt", step, cfg["lr"], inputs=[u, lam])
    final = {k: v.item() for k, v in terms.items()}
    return (
        brightest_white(centre, u.detach()).cpu(),
        labels,
        cfg["steps"],
        {"final_terms": final, "lambdas": lam.detach().cpu()},
    )
