"""Membership inference, the field's standard reference beside the reconstructions: can an
attacker who holds the model tell its training images from images it never saw?

- ``loss_attack``: each image scored by minus the model's cross-entropy on it (Yeom et al.
  2018): members tend to have the lower loss.
- ``lira_offline``: the offline likelihood-ratio attack of Carlini et al. (2022). Shadow
  models of the same architecture are trained on the attacker's own data only (never on a
  probe), so every probe is "out" for every shadow; a probe's score is how far the target's
  logit-scaled confidence in its true class lies above the Gaussian that the shadows'
  confidences trace for it. The shadows' training recipe is the attacker's guess, not the
  owner's: a different recipe weakens the attack, and a report says which recipe was used.

Both report the ROC AUC and the true-positive rate at 1% and 0.1% false-positive rate, with
percentile bootstrap intervals (``scipy.stats.bootstrap``, members and non-members each
resampled on their own).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from sklearn.metrics import roc_auc_score

from . import training

FPRS = (0.01, 0.001)  # the false-positive rates at which the true-positive rate is reported


def tpr_at_fpr(members: np.ndarray, nonmembers: np.ndarray, fpr: float) -> float:
    """The share of members scored above the threshold that only ``fpr`` of the non-members pass
    (higher scores say "member")."""
    threshold = np.quantile(nonmembers, 1 - fpr, method="higher")
    return float(np.mean(members > threshold))


def summary(members, nonmembers, seed: int = 0, resamples: int = 1000) -> dict:
    """AUC and TPR at each of ``FPRS``, each with a 95% bootstrap interval (``_lo``, ``_hi``)."""
    members, nonmembers = np.asarray(members, float), np.asarray(nonmembers, float)
    if len(members) < 2 or len(nonmembers) < 2:
        raise ValueError(
            f"membership needs at least 2 members and 2 non-members, got {len(members)} and "
            f"{len(nonmembers)}"
        )

    def auc(a, b):
        return roc_auc_score(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b])

    measures = {
        "auc": auc,
        **{f"tpr_at_{f:g}_fpr": (lambda a, b, f=f: tpr_at_fpr(a, b, f)) for f in FPRS},
    }
    rng = np.random.default_rng(seed)
    out = {}
    for name, fn in measures.items():
        out[name] = float(fn(members, nonmembers))
        boot = stats.bootstrap(
            (members, nonmembers),
            fn,
            n_resamples=resamples,
            method="percentile",
            vectorized=False,
            rng=rng,
        )
        out[f"{name}_lo"] = float(boot.confidence_interval.low)
        out[f"{name}_hi"] = float(boot.confidence_interval.high)
    return out


@torch.no_grad()
def loss_scores(model, images: torch.Tensor, labels: torch.Tensor, device="cpu") -> np.ndarray:
    """Minus the model's cross-entropy on each image: higher says "member"."""
    logits = training.predict(model, images, device)
    return (-F.cross_entropy(logits, labels, reduction="none")).numpy()


@torch.no_grad()
def confidence(model, images: torch.Tensor, labels: torch.Tensor, device="cpu") -> np.ndarray:
    """The logit-scaled confidence log(p / (1 - p)) of each image's true class (LiRA's statistic:
    close to Gaussian over models, unlike p itself)."""
    logp = torch.log_softmax(training.predict(model, images, device).double(), 1)
    own = logp[torch.arange(len(labels)), labels]
    rest = torch.logsumexp(logp.scatter(1, labels[:, None], -torch.inf), 1)
    return (own - rest).numpy()


def loss_attack(model, members, nonmembers, seed: int = 0, resamples: int = 1000, device="cpu"):
    """``summary`` of ``loss_scores``: ``members`` and ``nonmembers`` are (images, labels)."""
    return summary(
        loss_scores(model, *members, device),
        loss_scores(model, *nonmembers, device),
        seed,
        resamples,
    )


def lira_offline(
    model,
    model_fn,
    members,
    nonmembers,
    shadow_data,
    shadows: int = 8,
    recipe: dict | None = None,
    seed: int = 0,
    resamples: int = 1000,
    device="cpu",
):
    """Offline LiRA against ``model``. ``model_fn()`` builds an untrained model of its
    architecture; ``shadow_data`` (images, labels) is the attacker's own data, none of it a
    probe; each of ``shadows`` models trains on a random half of it with ``recipe`` (the
    attacker's guess at the owner's: ``steps``, ``batch_size``, ``lr``; default 600, 64,
    0.002; and, where the attacker knows them, ``shift`` and ``weight_decay`` as
    ``training.train_classifier`` takes them). Returns ``summary`` of the scores and the recipe
    used."""
    recipe = {"steps": 600, "batch_size": 64, "lr": 0.002, **(recipe or {})}
    x_shadow, y_shadow = shadow_data
    if shadows < 2:
        raise ValueError(f"shadows must be at least 2 (a Gaussian needs a spread), got {shadows}")
    probes = torch.cat([members[0], nonmembers[0]]), torch.cat([members[1], nonmembers[1]])
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k in range(shadows):
        half = torch.randperm(len(x_shadow), generator=gen)[: len(x_shadow) // 2]
        torch.manual_seed(seed + 1000 + k)
        shadow = model_fn()
        training.train_classifier(
            shadow,
            x_shadow[half],
            y_shadow[half],
            recipe["steps"],
            recipe["batch_size"],
            recipe["lr"],
            seed + k,
            device,
            desc=f"shadow {k + 1}/{shadows}",
            **{name: recipe[name] for name in ("shift", "weight_decay") if name in recipe},
        )
        out.append(confidence(shadow, *probes, device))
    out = np.stack(out)
    mu, sigma = out.mean(0), out.std(0, ddof=1) + 1e-6
    score = (confidence(model, *probes, device) - mu) / sigma
    n = len(members[0])
    return {**summary(score[:n], score[n:], seed, resamples), "shadows": shadows, **recipe}
