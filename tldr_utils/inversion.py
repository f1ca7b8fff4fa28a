"""Network inversion and training-like reconstruction with one conditioned generator.

The generator G(z, c) is trained against a frozen target classifier f. The
loss is a weighted sum of named terms; a zero weight switches a term off (and
skips its cost). Plain inversion (REFERENCE 1.2) uses ``kl, ce, cos, ortho``;
training-like reconstruction (TLDR, 1.3) adds ``kl_pert, ce_pert`` (robustness
to perturbation), ``tv`` (smoothness), ``pixel`` (an L2 pixel prior) and
``grad_norm`` (small weight gradients, through a double backward).

The paper does not say how images are perturbed. ``perturbation="random"``
(the default) adds sign noise of size epsilon; ``"adversarial"`` takes the
worst case, one gradient-sign step of that size against the classifier (FGSM).
In our runs the worst case made samples more recognisable to an independent
classifier and much less varied (README, "Choices the paper leaves open").

One term is ours, not the paper's: ``bn`` matches the batch statistics of the
classifier's batch-norm inputs to the running statistics stored in its weights
(the feature prior of DeepInversion). Without it (or another prior) the
generator finds adversarial patterns that only the target recognises; a zero
weight recovers the paper's loss exactly. ``shift`` rolls the images by up to
that many pixels before the classifier sees them, for the same reason, and
``target_dropout`` keeps the classifier's dropout on while the generator trains,
so that it is fitted to many thinned copies of the target rather than to one
network's quirks (the "ghost networks" of the transfer-attack literature). Plain
inversion may also borrow TLDR's ``ce_pert`` (zero in our profiles).
"""

from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from . import rules
from .hooks import BatchNormInputs, Features, batch_norm_layers, feature_input
from .models import Generator

INVERSION_TERMS = ("kl", "ce", "cos", "ortho")
TLDR_TERMS = INVERSION_TERMS + ("kl_pert", "ce_pert", "tv", "pixel", "grad_norm")
EXTRA_TERMS = (
    "bn",
    "diversity",
)  # not in the paper: a feature-statistics prior and mode seeking, off unless weighted
TERMS = TLDR_TERMS + EXTRA_TERMS
FEATURE_TERMS = {"cos", "ortho"}  # the terms that read the classifier's penultimate features
PERTURBATIONS = ("adversarial", "random")  # how the robustness terms perturb an image
rules.add({"perturbation": rules.choice(lambda: PERTURBATIONS)})
LOSS_VERSION = (
    6  # part of every cached generator attack's key: bump when a loss term or the generator changes
)
SOFT_SCALE = (
    16.0  # default spread of the Gaussian behind a soft conditioning vector (see ``conditions``)
)


# ----------------------------------------------------------------- conditions
def conditions(
    labels: torch.Tensor,
    num_classes: int,
    hot: bool,
    generator: torch.Generator | None = None,
    soft_scale: float = SOFT_SCALE,
):
    """Conditioning vectors P for ``labels``: one-hot ("hot") or a soft vector.

    The soft vector is the softmax of a Gaussian vector (standard deviation
    ``soft_scale``) with its largest entry swapped onto the label, so argmax P is
    the class and the rest of the mass is spread at random. A larger scale gives
    a clearer winner; at 2 the runner-up is often so close that about one sample
    in seven ends up classified as it.
    """
    if hot:
        return F.one_hot(labels, num_classes).float()
    p = torch.softmax(torch.randn(len(labels), num_classes, generator=generator) * soft_scale, 1)
    top = p.argmax(1)
    rows = torch.arange(len(labels))
    at_label = p[rows, labels].clone()
    p[rows, labels] = p[rows, top]
    p[rows, top] = at_label
    return p


# ----------------------------------------------------------------- loss terms
def kl_term(logits, p):
    """KL(P || Q) with Q the classifier's softmax."""
    return F.kl_div(F.log_softmax(logits, 1), p, reduction="batchmean")


def ce_term(logits, labels):
    return F.cross_entropy(logits, labels)


def _similarity(features):
    f = F.normalize(features.flatten(1), dim=1)
    return f @ f.T


def cosine_term(features, labels: torch.Tensor | None = None):
    """Mean cosine similarity of distinct pairs of features: low means diverse.

    With ``labels``, only pairs of the same class count. Our choice: the paper
    averages over the whole batch, where pairs of different classes, already
    dissimilar, dominate and the term does little against within-class collapse.
    """
    s = _similarity(features)
    pairs = ~torch.eye(len(s), dtype=torch.bool, device=s.device)
    if labels is not None:
        pairs &= labels[:, None] == labels[None, :]
    return s[pairs].mean() if pairs.any() else s.new_zeros(())


def ortho_term(features):
    """Mean squared deviation of the normalised features' Gram matrix from identity."""
    s = _similarity(features)
    return (s - torch.eye(len(s), device=s.device)).pow(2).mean()


def tv_term(x):
    """Anisotropic total variation: mean absolute difference of neighbouring pixels."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (
        x[..., :, 1:] - x[..., :, :-1]
    ).abs().mean()


def pixel_term(x):
    """An L2 prior on pixels: mean squared intensity (pulls the background to zero)."""
    return x.pow(2).mean()


def grad_norm_term(net, logits, labels):
    """Squared norm of d CE / d weights of the classifier; differentiable (double backward)."""
    params = [p for p in net.parameters() if p.requires_grad]
    grads = torch.autograd.grad(F.cross_entropy(logits, labels), params, create_graph=True)
    return sum(g.pow(2).sum() for g in grads)


def diversity_term(x, z, labels):
    """Mode seeking (Mao et al. 2019, MSGAN), within each class: the mean over pairs of images of
    one class of (distance of their latents) / (distance of the images), both mean absolute
    differences. Low when different latents give different images: it keeps the generator from
    ignoring z."""
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(
        len(labels), dtype=torch.bool, device=labels.device
    )
    if not same.any():
        return x.new_zeros(())
    dx = torch.cdist(x.flatten(1), x.flatten(1), p=1)[same] / x[0].numel()
    dz = torch.cdist(z, z, p=1)[same] / z.shape[1]
    return (dz / (dx + 1e-3)).mean()


def stats_distance(captured, reference, first_multiplier: float) -> torch.Tensor:
    """Sum over batch-norm layers of ||mean - reference mean|| + ||var - reference var|| of
    what entered them (``captured``: (layer, input) pairs), the first layer counted
    ``first_multiplier`` times (DeepInversion's R_feature)."""
    total = torch.zeros(())
    for i, ((_, x), (mean, var)) in enumerate(zip(captured, reference)):
        dims = [0] + list(range(2, x.dim()))
        # the variance from the first two moments: torch.var over (0, 2, 3) is ten times slower on
        # CPU
        m = x.mean(dims)
        v = ((x * x).mean(dims) - m * m).clamp_min(0)
        d = torch.norm(m - mean, 2) + torch.norm(v - var, 2)
        total = total + (first_multiplier if i == 0 else 1.0) * d
    return total


def bn_term(captured, first_layer_weight: float = 10.0) -> torch.Tensor:
    """Distance of the batch's feature statistics from each batch-norm layer's running statistics
    (DeepInversion's feature prior), averaged over the layers. The first layer, which sees the raw
    pixels' edges and intensities, counts ``first_layer_weight`` times, as in DeepInversion (in our
    runs, 10 rather than 2 let the evaluator recognise a few points more of the inversions)."""
    running = [(layer.running_mean, layer.running_var) for layer, _ in captured]
    return stats_distance(captured, running, first_layer_weight) / max(len(captured), 1)


def jitter(x, pixels: int, generator=None):
    """Roll the batch by a random shift of up to ``pixels`` in each direction."""
    if not pixels:
        return x
    dx, dy = torch.randint(-pixels, pixels + 1, (2,), generator=generator).tolist()
    return torch.roll(x, shifts=(dx, dy), dims=(-2, -1))


def random_perturbation(x, epsilon: float, generator: torch.Generator | None = None):
    """Sign noise of size ``epsilon`` on every pixel, clipped to [0, 1]."""
    noise = torch.randn(x.shape, generator=generator).to(x.device).sign()
    return (x + epsilon * noise).clamp(0, 1)


def adversarial_perturbation(net, x, labels, epsilon: float):
    """One gradient-sign step of size ``epsilon`` that raises the classifier's loss
    (FGSM), clipped to [0, 1]. The step is a constant for the generator: its
    gradient flows through ``x`` only."""
    probe = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(net(probe), labels), probe)
    return (x + epsilon * grad.sign()).clamp(0, 1)


def supported(net, weights: dict, feature_layer: str | None = None) -> tuple[dict, dict[str, str]]:
    """``weights`` without the terms ``net`` cannot support, and why each was dropped: ``bn``
    needs batch-norm layers, ``cos`` and ``ortho`` need penultimate features (the input of
    the last ``nn.Linear``, or of ``feature_layer``)."""
    why = {}
    if weights.get("bn") and not batch_norm_layers(net):
        why["bn"] = "the model has no batch-norm layer, so there are no stored statistics to match"
    if feature_input(net, feature_layer) is None:
        why |= {
            t: "the model has no nn.Linear whose input is its features; name one with feature_layer"
            for t in FEATURE_TERMS
            if weights.get(t)
        }
    return {k: (0.0 if k in why else w) for k, w in weights.items()}, why


def loss_terms(
    net,
    x,
    p,
    weights: dict,
    epsilon: float = 0.1,
    generator=None,
    shift: int = 0,
    perturbation: str = "random",
    feature_layer: str | None = None,
    z: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Every term with a nonzero weight, unweighted, for images ``x`` conditioned on ``p`` (drawn
    from latents ``z``, which ``diversity`` needs).
    The penultimate features of ``cos`` and ``ortho`` are what enters the last ``nn.Linear``
    of ``net`` (or ``feature_layer``), read by a forward hook."""
    unknown = sorted(set(weights) - set(TERMS))
    if unknown:
        raise ValueError(f"unknown loss term(s) {unknown}; valid: {', '.join(TERMS)}")
    if perturbation not in PERTURBATIONS:
        raise ValueError(
            f"unknown perturbation {perturbation!r}; choose one of {', '.join(PERTURBATIONS)}"
        )
    on = {k for k, w in weights.items() if w}
    labels = p.argmax(1)
    with (
        BatchNormInputs(net) as bn,
        Features(feature_input(net, feature_layer) if on & FEATURE_TERMS else None) as f,
    ):
        logits = net(jitter(x, shift, generator))
    feats = f.value
    terms = {}
    if "kl" in on:
        terms["kl"] = kl_term(logits, p)
    if "ce" in on:
        terms["ce"] = ce_term(logits, labels)
    if "cos" in on:
        terms["cos"] = cosine_term(feats, labels)
    if "ortho" in on:
        terms["ortho"] = ortho_term(feats)
    if on & {"kl_pert", "ce_pert"}:
        x_pert = (
            adversarial_perturbation(net, x, labels, epsilon)
            if perturbation == "adversarial"
            else random_perturbation(x, epsilon, generator)
        )
        logits_pert = net(x_pert)
        if "kl_pert" in on:
            terms["kl_pert"] = kl_term(logits_pert, p)
        if "ce_pert" in on:
            terms["ce_pert"] = ce_term(logits_pert, labels)
    if "tv" in on:
        terms["tv"] = tv_term(x)
    if "pixel" in on:
        terms["pixel"] = pixel_term(x)
    if "bn" in on:
        terms["bn"] = bn_term(bn.inputs)
    if "diversity" in on:
        if z is None:
            raise ValueError("the diversity term needs the latents z that drew x: pass z=")
        terms["diversity"] = diversity_term(x, z, labels)
    if "grad_norm" in on:
        terms["grad_norm"] = grad_norm_term(net, logits, labels)
    return terms


# ----------------------------------------------------------------- training
def train_generator(
    net,
    image_shape,
    num_classes: int,
    weights: dict,
    *,
    conditioning="vector_matrix",
    hot=False,
    soft_scale=SOFT_SCALE,
    steps=1000,
    batch_size=64,
    lr=1e-3,
    epsilon=0.1,
    perturbation="random",
    shift=0,
    warmup=0.0,
    target_dropout=False,
    seed=0,
    device="cpu",
    desc="generator",
    feature_layer=None,
    upsample="transpose",
) -> tuple[Generator, list[dict]]:
    """Train G against the frozen classifier ``net``; returns G and per-step loss terms.

    The classifier stays in eval mode (its batch norm uses the stored statistics);
    with ``target_dropout`` its dropout layers sample a new mask at every step.

    Every term but KL and CE is ramped in linearly over the first ``warmup``
    share of the steps: the generator first learns the classes, then the priors
    shape them (without it the gradient-norm term can stall training at the start).
    """
    weights, dropped = supported(net, weights, feature_layer)
    for term, why in dropped.items():
        warnings.warn(f"the '{term}' term is skipped: {why}", stacklevel=2)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    G = Generator(image_shape, num_classes, conditioning, upsample=upsample).to(device).train()
    net = net.to(device).eval()
    was_trainable = [param.requires_grad for param in net.parameters()]
    for layer in net.modules():
        if isinstance(layer, torch.nn.modules.dropout._DropoutNd):
            layer.train(target_dropout)
    for param in net.parameters():  # needed for the weight gradient of grad_norm; never updated
        param.requires_grad_(bool(weights.get("grad_norm")))
    opt = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    history = []
    bar = tqdm(range(steps), desc=desc, leave=False, mininterval=1)
    # grad_norm differentiates a gradient: attention must run on the kernel that has a second
    # derivative
    second_order = (
        sdpa_kernel(SDPBackend.MATH) if weights.get("grad_norm") else contextlib.nullcontext()
    )
    try:
        with second_order:
            for step in bar:
                labels = torch.randint(num_classes, (batch_size,), generator=gen)
                p = conditions(labels, num_classes, hot, gen, soft_scale).to(device)
                z = torch.randn(batch_size, G.latent_dim, generator=gen).to(device)
                x = G(z, labels.to(device) if conditioning == "label" else p)
                terms = loss_terms(
                    net, x, p, weights, epsilon, gen, shift, perturbation, feature_layer, z
                )
                ramp = min(1.0, (step + 1) / (warmup * steps)) if warmup else 1.0
                loss = sum(
                    weights[k] * v * (1.0 if k in ("kl", "ce") else ramp) for k, v in terms.items()
                )
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"{desc}: loss became {loss.item()} at step {step} "
                        f"({ {k: round(v.item(), 4) for k, v in terms.items()} }); "
                        f"lower lr (now {lr})"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward(inputs=list(G.parameters()))
                opt.step()
                history.append({k: v.item() for k, v in terms.items()} | {"total": loss.item()})
                if step % 25 == 0:
                    bar.set_postfix(loss=f"{loss.item():.3f}")
    finally:  # the target leaves as it came, even when training fails
        for param, trainable in zip(net.parameters(), was_trainable):
            param.requires_grad_(trainable)
        net.eval()
    return G.cpu(), history
