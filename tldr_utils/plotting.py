"""Figure style, image grids, the two schematics, and saving figures with captions."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from .store import atomic_path


def set_style() -> None:
    sns.set_theme(context="paper", style="white", font_scale=1.1)
    plt.rcParams.update(
        {"figure.dpi": 110, "savefig.dpi": 200, "savefig.bbox": "tight", "image.cmap": "gray"}
    )


def show_image(ax, img: torch.Tensor):
    img = img.detach().cpu().clamp(0, 1)
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(img.permute(1, 2, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def class_grid(images: torch.Tensor, labels: torch.Tensor, classes, rows: int = 4, fig=None):
    """``rows`` images of every class, one column per class, class names on top."""
    K = len(classes)
    fig = fig or plt.figure(figsize=(K * 0.9, rows * 0.9 + 0.4))
    axes = fig.subplots(
        rows,
        K,
        squeeze=False,
        gridspec_kw={
            "hspace": 0.06,
            "wspace": 0.05,
            "left": 0.01,
            "right": 0.99,
            "bottom": 0.01,
            "top": 0.86,
        },
    )
    for k in range(K):
        pick = (labels == k).nonzero().flatten()[:rows]
        if len(pick) < rows:
            raise ValueError(f"class {classes[k]!r} has {len(pick)} images, the grid needs {rows}")
        for r, i in enumerate(pick):
            show_image(axes[r][k], images[i])
        axes[0][k].set_title(str(classes[k]), fontsize=7)
    return fig


def grid_blocks(blocks: dict[str, tuple], rows: int = 3):
    """One row block of ``class_grid`` per entry ``name -> (images, labels, classes)``, titled
    ``name``."""
    K = max(len(c) for _, _, c in blocks.values())
    fig = plt.figure(figsize=(K * 0.85, len(blocks) * (rows * 0.85 + 0.7)))
    for sub, (name, (images, labels, classes)) in zip(
        np.atleast_1d(fig.subfigures(len(blocks), 1)), blocks.items()
    ):
        class_grid(images, labels, classes, rows, fig=sub)
        sub.suptitle(name, x=0.01, ha="left", fontsize=10, fontweight="bold")
    return fig


def strips(rows: dict[str, torch.Tensor], label_width: float = 1.6):
    """One row of images per entry ``label -> images`` (equal counts), the label at the left:
    true inputs beside their reconstructions, one row per attack or setting."""
    n = len(next(iter(rows.values())))
    fig, axes = plt.subplots(
        len(rows),
        n,
        figsize=(label_width + 0.8 * n, 0.8 * len(rows) + 0.2),
        squeeze=False,
        gridspec_kw={"hspace": 0.05, "wspace": 0.05},
    )
    for r, (label, images) in enumerate(rows.items()):
        if len(images) != n:
            raise ValueError(f"row {label!r} has {len(images)} images, the first row {n}")
        for j in range(n):
            show_image(axes[r][j], images[j])
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    return fig


def accuracy_by_class(results: dict[str, dict]):
    """Bars of the evaluation classifier's accuracy on the samples of each class, one panel
    per dataset, from ``experiments.run`` results: which classes come back and which do not.
    A dot marks its accuracy on real test images of the class, the ceiling to compare with."""
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 2.8), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        at, acc = range(len(r["classes"])), r["evaluator_accuracy_by_class"]
        ax.bar(at, acc["samples"], color="tab:blue", label="samples")
        ax.plot(at, acc["real"], "o", color="k", ms=4, label="real test images")
        ax.set_xticks(at, r["classes"], rotation=45, ha="right")
        ax.set(ylim=(0, 1.05), title=name, ylabel="evaluator accuracy")
    fig.tight_layout()
    fig.legend(
        *axes[0][0].get_legend_handles_labels(),
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=2,
        frameon=False,
    )
    return fig


def evaluator_confusion(results: dict[str, dict]):
    """Where the evaluator puts the samples of each class: one heat map per dataset, rows the
    conditioned class, columns the evaluator's answer, each row's shares summing to one (shares
    under 5% are left blank). Misses that go to a look-alike class read differently from misses
    spread over every class."""
    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.6), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        K = len(r["classes"])
        counts = torch.zeros(K, K).index_put_(
            (r["labels"], r["evaluator_predictions"]), torch.ones(len(r["labels"])), accumulate=True
        )
        share = (counts / counts.sum(1, keepdim=True).clamp(min=1)).numpy()
        text = np.where(share >= 0.05, np.vectorize("{:.0%}".format)(share), "")
        sns.heatmap(
            share,
            ax=ax,
            vmin=0,
            vmax=1,
            cmap="Blues",
            annot=text,
            fmt="",
            annot_kws={"fontsize": 6},
            xticklabels=r["classes"],
            yticklabels=r["classes"],
            cbar=False,
            square=True,
        )
        ax.set(title=name, xlabel="evaluator's class", ylabel="conditioned class")
    fig.tight_layout()
    return fig


def save_figure(fig, stem: str | Path, caption: str, formats=("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.pdf`` (or the ``formats`` given), and its caption as
    ``stem.txt``."""
    stem = Path(stem)
    paths = []
    for ext in formats:
        path = stem.with_suffix(f".{ext}")
        with atomic_path(path) as tmp:
            # no creation date in the PDF, so an unchanged figure stays byte-identical in git
            fig.savefig(tmp, format=ext, metadata={"CreationDate": None} if ext == "pdf" else None)
        paths.append(path)
    with atomic_path(stem.with_suffix(".txt")) as tmp:
        tmp.write_text(caption.strip() + "\n")
    return paths + [stem.with_suffix(".txt")]


# ----------------------------------------------------------------- schematics
def _box(ax, xy, text, color, w=1.7, h=0.8):
    x, y = xy
    ax.add_patch(
        FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05", fc=color, ec="0.25")
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=8)


def _arrow(ax, a, b, text=None, style="-|>"):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=12, color="0.25", lw=1.2))
    if text:
        ax.text(
            (a[0] + b[0]) / 2,
            (a[1] + b[1]) / 2 + 0.18,
            text,
            ha="center",
            fontsize=7.5,
            color="0.2",
        )


def schematic(kind: str):
    """Figure 1 ("inversion") or Figure 2 ("tldr"): the procedure as a block diagram."""
    if kind not in ("inversion", "tldr"):
        raise ValueError(f"unknown schematic {kind!r}; choose 'inversion' or 'tldr'")
    tldr = kind == "tldr"
    fig, ax = plt.subplots(figsize=(10, 4.6 if tldr else 3.6))
    ax.set_xlim(0, 12)
    ax.set_ylim(-1.5 if tldr else -0.6, 3.5 if tldr else 3.0)
    ax.axis("off")
    blue, green, grey, orange = "#cfe2f3", "#d9ead3", "#eeeeee", "#fce5cd"
    _box(ax, (1.2, 2.4), "latent z ~ N(0, I)", grey, w=2.1)
    _box(
        ax,
        (1.2, 1.0),
        "condition c:\nhot vector (one-hot)\n+ hot matrix"
        if tldr
        else "condition c:\nsoft vector P\n+ hot matrix",
        grey,
        w=2.1,
        h=1.0,
    )
    _box(
        ax,
        (4.2, 1.7),
        "generator G(z, c)\nup-convolutions,\nbatch norm, dropout on",
        blue,
        w=2.5,
        h=1.2,
    )
    _box(ax, (6.9, 1.7), "image x", grey, w=1.3)
    _box(ax, (9.7, 1.7), "frozen classifier f\n(features, softmax Q)", green, w=2.5, h=1.0)
    _arrow(ax, (2.3, 2.4), (2.9, 1.95))
    _arrow(ax, (2.3, 1.0), (2.9, 1.45))
    _arrow(ax, (5.5, 1.7), (6.2, 1.7))
    _arrow(ax, (7.6, 1.7), (8.4, 1.7))
    if tldr:
        loss = (
            "a KL + b CE on x,  a' KL + b' CE on perturbed x\n+ c cosine + d orthogonality\n"
            "+ n1 TV(x) + n2 pixel prior + n3 ||grad_theta CE||^2"
        )
        _box(ax, (8.9, -0.6), loss, orange, w=5.6, h=1.3)
        _box(ax, (6.9, 3.0), "perturbed x + eps sign(noise)", grey, w=3.2, h=0.5)
        _arrow(ax, (6.9, 2.05), (6.9, 2.72))
        _arrow(ax, (8.5, 3.0), (9.5, 2.25))
        _arrow(ax, (9.7, 1.15), (9.7, 0.1))
        _arrow(ax, (6.05, -0.6), (4.2, 1.05), "update G only")
    else:
        _box(
            ax,
            (8.9, -0.05),
            "a KL(P || Q) + b CE(Q, y)\n+ c cosine(features) + d orthogonality",
            orange,
            w=5.0,
            h=0.8,
        )
        _arrow(ax, (9.7, 1.15), (9.7, 0.4))
        _arrow(ax, (6.35, -0.05), (4.2, 1.05), "update G only")
    ax.set_title(
        "Figure 2: training-like data reconstruction (TLDR)"
        if tldr
        else "Figure 1: network inversion",
        fontsize=11,
        loc="left",
    )
    return fig
