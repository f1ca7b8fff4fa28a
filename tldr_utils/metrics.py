"""Leakage and utility: do reconstructions resemble the *training* images more than
equally typical images the classifier never saw?

Every similarity to the training set is compared with the same similarity to a
held-out set of the same size per class (REFERENCE section 4): a raw score says
how class-typical reconstructions are, only the difference says they leak.
Images are float tensors N x C x H x W in [0, 1].
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score
from torchmetrics.functional.image import peak_signal_noise_ratio

from . import training
from .quality import pairwise_l2, penultimate_features, realism, ssim_pairs, within_class_ssim


def nearest(
    query: torch.Tensor, query_labels, ref: torch.Tensor, ref_labels, candidates: int = 8
) -> dict:
    """For each query image, its nearest same-class reference by L2, PSNR and SSIM.

    L2 and PSNR are exact. SSIM is maximised over the ``candidates`` nearest
    references in L2 (all of them when a class has no more), which keeps
    thousands-by-thousands comparisons to a few batched calls.
    """
    n = len(query)
    l2 = torch.full((n,), float("inf"))
    index = torch.zeros(n, dtype=torch.long)
    best_ssim = torch.full((n,), -1.0)
    for k in query_labels.unique():
        q_idx = (query_labels == k).nonzero().flatten()
        r_idx = (ref_labels == k).nonzero().flatten()
        if len(r_idx) == 0:
            raise ValueError(
                f"class {int(k)} has reconstructions but no reference images to compare with"
            )
        d = pairwise_l2(query[q_idx], ref[r_idx])
        m = min(candidates, len(r_idx))
        top = d.topk(m, dim=1, largest=False).indices  # |q| x m, nearest first
        l2[q_idx] = d.gather(1, top[:, :1]).flatten()
        index[q_idx] = r_idx[top[:, 0]]
        s = ssim_pairs(query[q_idx].repeat_interleave(m, 0), ref[r_idx[top.flatten()]]).view(
            len(q_idx), m
        )
        best_ssim[q_idx] = s.max(1).values
    psnr = peak_signal_noise_ratio(
        query, ref[index], data_range=1.0, reduction="none", dim=(1, 2, 3)
    )
    return {"l2": l2, "psnr": psnr, "ssim": best_ssim, "index": index}


def recovery(
    recon,
    recon_labels,
    train,
    train_labels,
    heldout,
    heldout_labels,
    threshold: float = 0.6,
    margin: float = 0.1,
) -> pd.DataFrame:
    """Which training images an attack truly recovered, one row per training image: ``ssim``, that
    of its most similar reconstruction of its class (``reconstruction``, its index);
    ``ssim_heldout``, that reconstruction's SSIM to its most similar held-out image of the class
    (``heldout``, its index); ``recovered``: ``ssim`` at least ``threshold`` and the held-out image
    at least ``margin`` less similar, so the reconstruction is this training image, not just one of
    its class."""
    rows = []
    for i in range(len(train)):
        same = (recon_labels == train_labels[i]).nonzero().flatten()
        if len(same) == 0:
            raise ValueError(
                f"class {int(train_labels[i])} has training images but no reconstructions"
            )
        s = ssim_pairs(recon[same], train[i : i + 1].expand(len(same), *train.shape[1:]))
        j = int(same[s.argmax()])
        pool = (heldout_labels == train_labels[i]).nonzero().flatten()
        h = ssim_pairs(heldout[pool], recon[j : j + 1].expand(len(pool), *recon.shape[1:]))
        rows.append(
            {
                "ssim": s.max().item(),
                "reconstruction": j,
                "ssim_heldout": h.max().item(),
                "heldout": int(pool[h.argmax()]),
            }
        )
    out = pd.DataFrame(rows)
    out["recovered"] = (out.ssim >= threshold) & (out.ssim_heldout <= out.ssim - margin)
    return out


def equal_per_class(labels: torch.Tensor, like: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Indices into ``labels`` with as many images of each class as ``like`` has."""
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for k in like.unique():
        pool = (labels == k).nonzero().flatten()
        want = int((like == k).sum())
        if len(pool) < want:
            raise ValueError(
                f"class {int(k)}: {len(pool)} images, but the held-out set has {want} to match"
            )
        picks.append(pool[torch.randperm(len(pool), generator=gen)[:want]])
    return torch.cat(picks).sort().values


def mann_whitney_z(a: np.ndarray, b: np.ndarray) -> float:
    """Z of the Mann-Whitney U test of ``a`` against ``b``: negative when ``a`` tends to be
    smaller. The variance of U is corrected for ties (``scipy.stats.tiecorrect``); scipy gives
    U and a p-value but not Z, which is what ``copying_z`` reports. Values are compared at six
    decimals, so that two distances of one pair of images, which may differ in their last bits
    from one batch or thread count to another, count as the tie they are."""
    a, b = np.round(a, 6), np.round(b, 6)
    u = stats.mannwhitneyu(a, b, alternative="two-sided").statistic
    n1, n2 = len(a), len(b)
    ties = stats.tiecorrect(stats.rankdata(np.r_[a, b]))
    return float((u - n1 * n2 / 2) / np.sqrt(ties * n1 * n2 * (n1 + n2 + 1) / 12))


def leakage_report(
    recon,
    recon_labels,
    train,
    train_labels,
    heldout,
    heldout_labels,
    evaluator=None,
    margin: float = 0.9,
    seed: int = 0,
) -> dict:
    """How much closer reconstructions sit to the training set than to equally typical held-out
    data.

    ``train`` is the target's training set; a subset with as many images per
    class as ``heldout`` is the reference, so both nearest-neighbour searches
    look through sets of the same size. Returns a flat dict of numbers:
    ``nn_{ssim,psnr,l2}_{train,heldout}`` and their ``_gap`` (train minus held-out);
    ``copying_z`` (Mann-Whitney Z of reconstruction-to-train against
    held-out-to-train distances; negative when reconstructions sit closer);
    ``membership_auc`` (training vs held-out images scored by closeness to the
    nearest reconstruction; 0.5 is no leakage); ``identifiability`` (share of
    reconstructions whose nearest image in train plus held-out is a training
    image closer than ``margin`` times the nearest held-out one);
    ``within_class_ssim``; ``evaluator_accuracy`` if an ``evaluator`` is given.
    """
    for name, x in (("recon", recon), ("train", train), ("heldout", heldout)):
        if (
            x.dim() == 4 and not torch.isfinite(x).all()
        ):  # NaN fails every comparison below, so look first
            bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
            raise ValueError(
                f"{name} has NaN or infinite pixels in {bad} of its {len(x)} images; "
                "images must be finite floats in [0, 1]"
            )
        if (
            x.dim() != 4
            or x.dtype not in (torch.float32, torch.float64)
            or x.min() < 0
            or x.max() > 1
        ):
            raise ValueError(
                f"{name} must be float images N x C x H x W in [0, 1], got {tuple(x.shape)} "
                f"{x.dtype} in [{x.min().item():.3g}, {x.max().item():.3g}]"
            )
    recon, train, heldout = recon.float(), train.float(), heldout.float()
    ref = equal_per_class(train_labels, heldout_labels, seed)
    train_ref, train_ref_labels = train[ref], train_labels[ref]
    to_train = nearest(recon, recon_labels, train_ref, train_ref_labels)
    to_heldout = nearest(recon, recon_labels, heldout, heldout_labels)
    report = {}
    for m in ("ssim", "psnr", "l2"):
        a, b = to_train[m].mean().item(), to_heldout[m].mean().item()
        report |= {f"nn_{m}_train": a, f"nn_{m}_heldout": b, f"nn_{m}_gap": a - b}
    # data-copying test: distances to the training reference, reconstructions vs held-out images
    heldout_to_train = nearest(heldout, heldout_labels, train_ref, train_ref_labels, candidates=1)[
        "l2"
    ]
    report["copying_z"] = mann_whitney_z(to_train["l2"].numpy(), heldout_to_train.numpy())
    # membership: is a real image close to some reconstruction of its class?
    score_train = -nearest(train_ref, train_ref_labels, recon, recon_labels, candidates=1)["l2"]
    score_heldout = -nearest(heldout, heldout_labels, recon, recon_labels, candidates=1)["l2"]
    truth = np.r_[np.ones(len(score_train)), np.zeros(len(score_heldout))]
    report["membership_auc"] = float(
        roc_auc_score(truth, torch.cat([score_train, score_heldout]).numpy())
    )
    report["identifiability"] = (to_train["l2"] < margin * to_heldout["l2"]).float().mean().item()
    report["within_class_ssim"] = within_class_ssim(recon, recon_labels, seed=seed)
    if evaluator is not None:
        report["evaluator_accuracy"] = training.accuracy(evaluator, recon, recon_labels)
    return report


# ----------------------------------------------------------------- realism, coverage and a paired
# verdict
def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test of paired differences ``diff``
    (1.0 when every difference is zero: nothing to test)."""
    return float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0


def paired_leakage(
    recon,
    recon_labels,
    train,
    train_labels,
    heldout,
    heldout_labels,
    seed: int = 0,
    resamples: int = 1000,
) -> dict:
    """The evidence a leakage verdict rests on: the *same* reconstructions measured against the
    training images and against held-out images of equal size per class.

    ``l2_diff``: per reconstruction, the L2 distance to its nearest same-class training image
    minus that to its nearest held-out image; its mean with a 95% bootstrap interval
    (``l2_diff_lo``, ``l2_diff_hi``) and the Wilcoxon signed-rank p-value (``l2_diff_p``):
    negative means reconstructions sit closer to what the model was trained on.
    ``membership_auc`` (training vs held-out images scored by closeness to the nearest
    reconstruction) with a 95% bootstrap interval: 0.5 means the reconstructions say nothing
    about membership. Unlike ``copying_z``, neither compares reconstructions with real
    images, so neither is moved by how smooth reconstructions are.
    """
    gen = np.random.default_rng(seed)
    ref = equal_per_class(train_labels, heldout_labels, seed)
    train, train_labels = train[ref].float(), train_labels[ref]
    heldout = heldout.float()
    diff = (
        (
            nearest(recon, recon_labels, train, train_labels, candidates=1)["l2"]
            - nearest(recon, recon_labels, heldout, heldout_labels, candidates=1)["l2"]
        )
        .double()
        .numpy()
    )
    p = wilcoxon_p(diff)
    score_train = -nearest(train, train_labels, recon, recon_labels, candidates=1)["l2"].numpy()
    score_held = -nearest(heldout, heldout_labels, recon, recon_labels, candidates=1)["l2"].numpy()
    truth = np.r_[np.ones(len(score_train)), np.zeros(len(score_held))]
    auc = float(roc_auc_score(truth, np.r_[score_train, score_held]))
    # percentile intervals; the AUC's resamples each group on its own, keeping both present
    means = stats.bootstrap((diff,), np.mean, n_resamples=resamples, method="percentile", rng=gen)
    aucs = stats.bootstrap(
        (score_train, score_held),
        lambda a, b: roc_auc_score(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b]),
        n_resamples=resamples,
        method="percentile",
        vectorized=False,
        rng=gen,
    )
    return {
        "l2_diff": float(diff.mean()),
        "l2_diff_lo": float(means.confidence_interval.low),
        "l2_diff_hi": float(means.confidence_interval.high),
        "l2_diff_p": p,
        "membership_auc": auc,
        "membership_auc_lo": float(aucs.confidence_interval.low),
        "membership_auc_hi": float(aucs.confidence_interval.high),
    }


def attack_scores(
    images,
    labels,
    model,
    judge,
    train,
    reference,
    real_features=None,
    seed: int = 0,
    resamples: int = 1000,
    device="cpu",
) -> dict:
    """Everything measured on one set of reconstructions (or a control): the target's and the
    independent ``judge``'s accuracy, ``realism`` in the judge's feature space against
    the real ``reference`` images (held out, same classes), within-class SSIM, the leakage
    report against ``train`` and ``reference``, and the paired leakage with its intervals.
    ``train`` and ``reference`` are pairs (images, labels)."""
    if real_features is None:
        real_features = penultimate_features(judge, reference[0], device)
    leak = leakage_report(images, labels, *train, *reference, seed=seed)
    paired = paired_leakage(images, labels, *train, *reference, seed, resamples)
    scores = {
        "target_accuracy": training.accuracy(model, images, labels, device),
        "evaluator_accuracy": training.accuracy(judge, images, labels, device),
        **realism(real_features, reference[1], penultimate_features(judge, images, device), labels),
    }
    scores |= {
        k: leak[k]
        for k in (
            "within_class_ssim",
            "nn_ssim_train",
            "nn_ssim_heldout",
            "nn_ssim_gap",
            "identifiability",
            "copying_z",
        )
    }
    return scores | paired


def paired_quality(
    recon: torch.Tensor,
    truth: torch.Tensor,
    labels: torch.Tensor | None = None,
    evaluator=None,
    device="cpu",
) -> dict[str, float]:
    """How well each reconstruction matches its own true input (split computing, where the
    input is known): mean SSIM and PSNR over the pairs, and the share the evaluation
    classifier puts in the true input's class (with ``evaluator`` and ``labels``)."""
    if recon.shape != truth.shape:
        raise ValueError(
            f"reconstructions {tuple(recon.shape)} and true inputs {tuple(truth.shape)} must "
            f"pair up"
        )
    if not (torch.isfinite(recon).all() and torch.isfinite(truth).all()):
        raise ValueError("reconstructions and true inputs must have finite pixels")
    out = {
        "ssim": ssim_pairs(recon, truth).mean().item(),
        "psnr": peak_signal_noise_ratio(
            recon, truth, data_range=1.0, reduction="none", dim=(1, 2, 3)
        )
        .mean()
        .item(),
    }
    if evaluator is not None and labels is not None:
        out["evaluator_accuracy"] = training.accuracy(evaluator, recon, labels, device)
    return out


def summarise(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean, 95% t-interval half-width (empty for a single value) and count of ``value`` by
    ``by``."""
    g = frame.groupby(by)["value"]
    n, mean, sd = g.count(), g.mean(), g.std(ddof=1).fillna(0)
    half = stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sd / np.sqrt(n)
    return pd.DataFrame({"mean": mean, "ci95": half.where(n > 1), "n": n}).reset_index()
