"""How alike images are, how real generated images look and what they are worth, measured in a
judge's feature space:
``penultimate_features``, ``realism`` (prdc's precision, recall, density and coverage, and an
FID by torch-fidelity), ``within_class_ssim`` (variety) and ``synthetic_utility`` (a classifier
trained only on them)."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from . import training
from .hooks import Features, feature_input
from .models import build_classifier


def flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).double()


def pairwise_l2(a: torch.Tensor, b: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Euclidean distances between every image of ``a`` and every image of ``b`` (len(a) x
    len(b))."""
    fb = flat(b)
    return torch.cat(
        [torch.cdist(flat(a[i : i + chunk]), fb) for i in range(0, len(a), chunk)]
    ).float()


def ssim_pairs(x: torch.Tensor, y: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """SSIM of each pair (x[i], y[i]) with torchmetrics (data range 1, 7x7 Gaussian window for
    small images)."""
    kernel = 7 if min(x.shape[-2:]) < 32 else 11
    out = [
        structural_similarity_index_measure(
            x[i : i + chunk],
            y[i : i + chunk],
            data_range=1.0,
            reduction="none",
            kernel_size=kernel,
            sigma=1.5 * kernel / 11,
        )
        for i in range(0, len(x), chunk)
    ]
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def penultimate_features(
    net, images: torch.Tensor, device="cpu", batch_size: int = 500
) -> torch.Tensor:
    """What enters the last ``nn.Linear`` of ``net`` for each image (its penultimate features),
    read by a forward hook: the space ``realism`` measures in."""
    layer = feature_input(net)
    if layer is None:
        raise ValueError(
            f"{type(net).__name__} has no nn.Linear whose input could serve as its features"
        )
    net = net.to(device).eval()
    out = []
    with Features(layer) as f:
        for i in range(0, len(images), batch_size):
            net(images[i : i + batch_size].to(device))
            out.append(f.value.flatten(1).cpu())
    return torch.cat(out)


def within_class_ssim(
    images: torch.Tensor, labels: torch.Tensor, per_class: int = 32, seed: int = 0
) -> float:
    """Mean SSIM between distinct images of the same class (lower is more diverse)."""
    gen = torch.Generator().manual_seed(seed)
    values = []
    for k in labels.unique():
        idx = (labels == k).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)[:per_class]]
        i, j = torch.triu_indices(len(idx), len(idx), 1)
        if len(i):
            values.append(ssim_pairs(images[idx[i]], images[idx[j]]))
    return torch.cat(values).mean().item() if values else float("nan")


def synthetic_utility(
    images,
    labels,
    test_images,
    test_labels,
    arch: str = "cnn",
    steps: int = 500,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    device="cpu",
    teacher=None,
) -> float:
    """Train a fresh classifier only on ``images`` and return its accuracy on the real test set.

    It learns the hard ``labels`` (Soufleri et al.), or, with a ``teacher`` (the target), the
    teacher's softmax on each image (data-free distillation, as in DAFL): the cross-entropy
    against those probabilities."""
    if teacher is not None:
        labels = torch.softmax(training.predict(teacher, images, device), 1)
    torch.manual_seed(seed)
    net = build_classifier(arch, tuple(images.shape[1:]), int(test_labels.max()) + 1)
    training.train_classifier(
        net,
        images,
        labels,
        steps,
        batch_size,
        lr,
        seed,
        device,
        desc="distilled" if teacher is not None else "utility",
    )
    return training.accuracy(net, test_images, test_labels, device)


def realism(
    real: torch.Tensor,
    real_labels: torch.Tensor,
    fake: torch.Tensor,
    fake_labels: torch.Tensor,
    k: int = 5,
) -> dict[str, float]:
    """How real feature vectors ``fake`` look beside ``real`` (both N x D, e.g. a judge's
    ``penultimate_features``), by two kept implementations:

    - ``precision``, ``recall``, ``density`` and ``coverage`` (Naeem et al. 2020, package
      ``prdc``), within each class of ``fake_labels`` against the real vectors of that class,
      averaged over the classes. Precision and density: the fake vectors fall where real ones
      are; recall and coverage: they reach the real variety. ``k`` is the neighbourhood size,
      lowered (``realism_k`` says to what) where a class has fewer than ``k + 2`` vectors.
    - ``fid``: the Frechet distance between the two sets' Gaussian fits, all classes together,
      computed by torch-fidelity from their means and covariances (an FID in this feature space;
      0 for identical distributions).
    """
    from prdc import compute_prdc
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    real, fake = real.flatten(1).double(), fake.flatten(1).double()
    groups = [
        (c, real[real_labels == c], fake[fake_labels == c]) for c in fake_labels.unique().tolist()
    ]
    for c, r, f in groups:
        if min(len(r), len(f)) < 3:
            raise ValueError(
                f"realism needs at least 3 real and 3 generated vectors of each class; "
                f"class {c} has {len(r)} real and {len(f)} generated"
            )
    # prdc needs k + 2 vectors of a class on each side: small sets (a quick audit) use a smaller k,
    # reported
    k = min(k, *(min(len(r), len(f)) - 2 for _, r, f in groups))
    per_class = [compute_prdc(r.numpy(), f.numpy(), nearest_k=k) for _, r, f in groups]
    out = {
        m: float(np.mean([v[m] for v in per_class]))
        for m in ("precision", "recall", "density", "coverage")
    }
    out["realism_k"] = k

    def fit(x):
        x = x.numpy()
        return {"mu": x.mean(0), "sigma": np.cov(x, rowvar=False)}

    out["fid"] = float(
        fid_statistics_to_metric(fit(real), fit(fake), verbose=False)[KEY_METRIC_FID]
    )
    return out
