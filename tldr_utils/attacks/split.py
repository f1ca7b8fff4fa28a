"""Attacks on split computing: recover a private input x from a = h_k(x), the activations a
device sends to a server after running the first k blocks of a model (REFERENCE section 2).

The attacker knows the weights of those blocks (``encoder``). Three ways in:

- ``split_optimisation``: images optimised from grey noise so that h_k(x') matches a
  (squared error, relative to the size of a), with a total-variation prior and, where
  the blocks have batch norm, the batch-norm statistics prior of DeepInversion.
- ``split_decoder``: a learned inverse, trained by the attacker on its own images
  (``aux``, none of them the victim's) to map h_k(x) back to x.
- ``split_datafree`` (Dong et al., BMVC 2022): one inverse module per block, trained
  without any real image with cycle consistency: fed the block's output, it must give
  back the block's input, and that inverted input fed back through the block must
  reproduce the output. Depth k is inverted by composing the first k inverses. The
  paper does not fix what the blocks are fed while their inverses learn; ours is
  random smooth images (``random_images``: sums of noise at every scale through a
  sigmoid of random gain and offset), and, for a deeper block, those images passed
  through the blocks before it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import rules, store
from ..hooks import BatchNormInputs, batch_norm_layers
from ..inversion import stats_distance
from ..training import descend
from .base import Problem, attack
from .optimisation import RULES as _OPT_RULES
from .optimisation import tv_losses

SPLIT_OPTIMISATION = {"steps": 400, "lr": 0.05, "tv": 0.01, "bn": 0.01, "first_bn_multiplier": 1.0}
SPLIT_DECODER = {"steps": 300, "batch_size": 32, "lr": 0.003, "width": 32}
SPLIT_DATAFREE = {"steps": 300, "batch_size": 32, "lr": 0.003, "width": 32, "cycle": 1.0}
RULES = {**_OPT_RULES, "width": rules.RULES["batch_size"], "cycle": _OPT_RULES["tv"]}


# ----------------------------------------------------------------- the inverse modules
class Inverse(nn.Module):
    """A learned map from activations of shape ``in_shape`` back to ``out_shape``.

    Maps (C, h, w) to (C', H, W) with convolutions and bilinear upsampling; any
    other pair of shapes through a hidden layer of ``16 * width`` units (wide, and
    cheap: a narrow one would cap what any flat activation gives back). ``bounded``
    outputs (images) pass through a sigmoid into [0, 1].
    """

    def __init__(self, in_shape: tuple, out_shape: tuple, width: int = 64, bounded: bool = False):
        super().__init__()
        self.in_shape, self.out_shape, self.bounded = tuple(in_shape), tuple(out_shape), bounded
        self.spatial = len(self.in_shape) == 3 and len(self.out_shape) == 3
        if self.spatial:
            # the wide convolution at the activations' size, a narrow one at the output's: cheap on
            # a CPU
            self.net = nn.Sequential(
                nn.Conv2d(self.in_shape[0], width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.LeakyReLU(0.2),
                nn.Upsample(size=self.out_shape[1:], mode="bilinear", align_corners=False),
                nn.Conv2d(width, width // 4, 3, padding=1),
                nn.BatchNorm2d(width // 4),
                nn.LeakyReLU(0.2),
                nn.Conv2d(width // 4, self.out_shape[0], 3, padding=1),
            )
        else:
            n_in, n_out = math.prod(self.in_shape), math.prod(self.out_shape)
            self.net = nn.Sequential(
                nn.Flatten(),
                nn.Linear(n_in, 16 * width),
                nn.BatchNorm1d(16 * width),
                nn.LeakyReLU(0.2),
                nn.Linear(16 * width, n_out),
            )

    def forward(self, a):
        out = self.net(a).view(len(a), *self.out_shape)
        return torch.sigmoid(out) if self.bounded else out


def random_images(n: int, shape: tuple, generator: torch.Generator) -> torch.Tensor:
    """``n`` random smooth images in [0, 1], no real data in them: noise at every scale
    from 2 x 2 to full size, summed with random weights, through a sigmoid of random
    gain and offset (so some are mostly dark, some mostly bright, with edges and blobs)."""
    c, h, w = shape
    sizes = sorted({max(2, h >> k) for k in range(int(math.log2(h)))})
    total = torch.zeros(n, c, h, w)
    for s in sizes:
        weight = torch.rand(n, 1, 1, 1, generator=generator)
        noise = torch.randn(n, c, s, s * w // h or 1, generator=generator)
        total += weight * F.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)
    total = total / total.flatten(1).std(1).clamp_min(1e-6).view(n, 1, 1, 1)
    gain = 1 + 5 * torch.rand(n, 1, 1, 1, generator=generator)
    offset = -3 + 4 * torch.rand(n, 1, 1, 1, generator=generator)
    return torch.sigmoid(gain * total + offset)


def _relative(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared error of ``a`` against ``b``, relative to the size of ``b`` (so every depth weighs
    alike)."""
    return (a - b).pow(2).flatten(1).sum(1).mean() / b.pow(2).flatten(1).sum(1).mean().clamp_min(
        1e-12
    )


def _train(module: nn.Module, loss_fn, steps: int, lr: float, desc: str) -> list[float]:
    """Adam with cosine decay on ``module``; ``loss_fn(step)`` gives each step's loss."""
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    losses = []
    for step in tqdm(range(steps), desc=desc, leave=False, mininterval=1):
        loss = loss_fn(step)
        descend(opt, sched, loss, desc, step, lr)
        losses.append(loss.item())
    return losses


@torch.no_grad()
def _decode(module: nn.Module, a: torch.Tensor, device, batch_size: int = 500) -> torch.Tensor:
    module.eval()
    return torch.cat(
        [module(a[i : i + batch_size].to(device)).cpu() for i in range(0, len(a), batch_size)]
    )


# ----------------------------------------------------------------- the attacks
@attack(
    "split_optimisation",
    SPLIT_OPTIMISATION,
    RULES,
    "images optimised from noise until the device's blocks map them onto the activations the "
    "server saw",
    kind="features",
)
def split_optimisation(problem: Problem, cfg: dict, seed: int):
    encoder, device = problem.model.to(problem.device), problem.device
    target = problem.activations.to(device)
    running = [(m.running_mean, m.running_var) for m in batch_norm_layers(encoder)]
    if not running and cfg["bn"]:
        problem.skip(
            "bn",
            "the device's blocks have no batch-norm layer, so there are no stored statistics to "
            "match",
        )
    gen = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.1 * torch.randn(len(target), *problem.image_shape, generator=gen)).clamp(0, 1)
    x = x.to(device).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg["lr"], betas=(0.5, 0.9))
    steps = cfg["steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    for step in tqdm(range(steps), desc="split_optimisation", leave=False, mininterval=1):
        with BatchNormInputs(encoder) as bn:
            loss = _relative(encoder(x), target)
        loss = loss + cfg["tv"] * tv_losses(x)[0]
        if running and cfg["bn"]:
            loss = loss + cfg["bn"] * stats_distance(bn.inputs, running, cfg["first_bn_multiplier"])
        descend(opt, sched, loss, "split_optimisation", step, cfg["lr"])
        with torch.no_grad():
            x.clamp_(0, 1)
    return x.detach(), problem.labels, steps, {}


@attack(
    "split_decoder",
    SPLIT_DECODER,
    RULES,
    "a decoder the attacker trains on its own images to map the activations back to the input",
    needs=("aux",),
    kind="features",
)
def split_decoder(problem: Problem, cfg: dict, seed: int):
    encoder, device = problem.model.to(problem.device), problem.device
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    aux = problem.aux
    D = (
        Inverse(problem.activations.shape[1:], problem.image_shape, cfg["width"], bounded=True)
        .to(device)
        .train()
    )

    def loss(step):
        x = aux[torch.randint(len(aux), (cfg["batch_size"],), generator=gen)].to(device)
        with torch.no_grad():
            a = encoder(x)
        return F.mse_loss(D(a), x)

    history = _train(D, loss, cfg["steps"], cfg["lr"], "split_decoder")
    return (
        _decode(D, problem.activations, device),
        problem.labels,
        cfg["steps"],
        {"decoder": D, "final_loss": history[-1]},
    )


_INVERSES: dict[
    str, nn.Module
] = {}  # trained per-block inverses, by a hash of the blocks and settings


def block_inverses(
    blocks: list[nn.Module], image_shape: tuple, cfg: dict, seed: int, device
) -> list[nn.Module]:
    """One inverse per block, trained without real data (see the module's docstring); kept in
    memory, so inverting depth 3 after depth 2 trains only the third."""
    gen0 = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        probe = random_images(2, image_shape, gen0).to(device)
        shapes = [tuple(image_shape)]
        for b in blocks:
            probe = b(probe)
            shapes.append(tuple(probe.shape[1:]))
    inverses = []
    for i, block in enumerate(blocks):
        key = store.config_hash(
            {
                "blocks": store.tensor_hash(
                    *[t for b in blocks[: i + 1] for t in b.state_dict().values()]
                ),
                "depth": i,
                "settings": cfg,
                "seed": seed,
                "shape": list(image_shape),
            }
        )
        if key not in _INVERSES:
            torch.manual_seed(seed + i)
            gen = torch.Generator().manual_seed(seed + i)
            g = Inverse(shapes[i + 1], shapes[i], cfg["width"], bounded=(i == 0)).to(device).train()
            before = nn.Sequential(*blocks[:i])

            def loss(step, g=g, block=block, before=before, gen=gen):
                with torch.no_grad():
                    u = before(random_images(cfg["batch_size"], image_shape, gen).to(device))
                    a = block(u)
                back = g(a)
                return _relative(back, u) + cfg["cycle"] * _relative(block(back), a)

            _train(
                g, loss, cfg["steps"], cfg["lr"], f"split_datafree inverse {i + 1}/{len(blocks)}"
            )
            _INVERSES[key] = g.eval()
        inverses.append(_INVERSES[key])
    return inverses


@attack(
    "split_datafree",
    SPLIT_DATAFREE,
    RULES,
    "Dong et al. 2022: per-block inverses trained on no real data with cycle consistency, composed",
    kind="features",
)
def split_datafree(problem: Problem, cfg: dict, seed: int):
    encoder = problem.model
    if not isinstance(encoder, nn.Sequential):
        raise ValueError(
            "split_datafree inverts block by block: pass the encoder as an nn.Sequential of its "
            "blocks, e.g. nn.Sequential(*models.split_points(net)[0][:k])"
        )
    blocks = [b.to(problem.device) for b in encoder]
    inverses = block_inverses(blocks, problem.image_shape, cfg, seed, problem.device)
    with torch.no_grad():
        x = _decode(nn.Sequential(*reversed(inverses)), problem.activations, problem.device)
    return x, problem.labels, cfg["steps"] * len(blocks), {}
