"""The results tables and findings, generated from a run's ``metrics.csv``: nothing in them
is typed by hand. ``report`` writes them into RESULTS.md and the README."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
from scipy import stats

from . import architectures, attacks, config, regime, store
from .findings import findings

LEAKAGE = [
    "nn_ssim_train",
    "nn_ssim_heldout",
    "nn_ssim_gap",
    "copying_z",
    "membership_auc",
    "identifiability",
    "evaluator_accuracy",
]
BASELINES = [
    "evaluator_accuracy",
    "precision",
    "recall",
    "density",
    "coverage",
    "fid",
    "within_class_ssim",
    "l2_diff",
    "l2_diff_lo",
    "l2_diff_hi",
    "membership_auc",
    "cpu_seconds_per_image",
    "synthetic_utility",
]  # the columns of 06's table
ARCHITECTURES = [
    "evaluator_accuracy",
    "precision",
    "recall",
    "nn_ssim_train",
    "nn_ssim_gap",
    "membership_auc",
    "ssim",
]  # the columns of 10's table
FIGURE_SCORES = [
    "target_accuracy",
    "evaluator_accuracy",
    "evaluator_accuracy_unselected",
    "precision",
    "recall",
    "density",
    "coverage",
    "fid",
    "within_class_ssim",
    "utility_hard_ratio",
    "utility_distilled_ratio",
]
# setting -> how the Figures 3-4 table names the loss
LOSSES = {"main": "ours", "paper_loss": "paper only"}


def _markdown(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += [
        "| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines)


def _mean_ci(values: pd.Series) -> str:
    n = len(values)
    if n < 2:
        return f"{values.mean():.3f}"
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return f"{values.mean():.3f} ± {half:.3f}"


def _mean_sd(values: pd.Series) -> str:
    return (
        f"{values.mean():.3f}"
        if len(values) < 2
        else f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"
    )


def figure_scores(metrics: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of Figures 3-4's generators (``main`` and ``paper_loss``) and of real test images,
    and their table: per dataset, method and loss, how many generator seeds, then each of
    ``FIGURE_SCORES`` as mean ± standard deviation over the seeds."""
    m = store.fill_default_keys(pd.DataFrame(metrics))
    m["class"] = m["class"].fillna("")
    generated = m.setting.isin(LOSSES) & m.method.isin(["inversion", "tldr"])
    shown = m[
        (generated | (m.setting.eq("main") & m.method.eq("real_test")))
        & m.metric.isin(FIGURE_SCORES)
        & m["class"].eq("")
    ].drop_duplicates(["dataset", "method", "seed", "metric", "setting"])
    if not len(shown):
        return shown, pd.DataFrame()
    shown = shown.assign(loss=shown.setting.map(LOSSES).where(shown.method != "real_test", "-"))
    keys = ["dataset", "method", "loss"]
    t = shown.groupby(keys + ["metric"])["value"].apply(_mean_sd).unstack()
    t = t[[c for c in FIGURE_SCORES if c in t.columns]]
    t.insert(
        0, "seeds", shown[shown.metric == "evaluator_accuracy"].groupby(keys)["seed"].nunique()
    )
    return shown, t.reset_index().fillna("-")


def notebook_minutes(profile: str) -> tuple[float, str]:
    """How long each executed notebook of the run took, as papermill recorded it: the total in
    minutes and each one, "01 12.6 + 02 6.0 ..." (0 and "" when none was recorded)."""
    times = {}
    for nb in sorted((config.run_dir(profile) / "notebooks").glob("*.ipynb")):
        duration = (
            json.loads(nb.read_text()).get("metadata", {}).get("papermill", {}).get("duration")
        )
        if duration:
            times[nb.name[:2]] = duration / 60
    return sum(times.values()), " + ".join(f"{k} {v:.1f}" for k, v in times.items())


# What ``sweep.run`` prints when it ends: "<desc>: 12 of 18 cells (4 from the cache), ..."
SWEEP_LINE = re.compile(r"(\d+) of (\d+) cells \((\d+) from the cache\)")


def cached_cells(profile: str) -> tuple[int, int]:
    """How many of the run's sweep cells came from the cache, and how many there were, from what
    the executed notebooks printed."""
    cached = total = 0
    for nb in (config.run_dir(profile) / "notebooks").glob("*.ipynb"):
        for cell in json.loads(nb.read_text()).get("cells", []):
            for out in cell.get("outputs", []):
                text = out.get("text", "")
                for _, n, hit in SWEEP_LINE.findall(
                    "".join(text) if isinstance(text, list) else text
                ):
                    cached, total = cached + int(hit), total + int(n)
    return cached, total


def times(profile: str) -> str:
    """How long the run's notebooks took, in a sentence (from the executed notebooks), with how
    much of the sweeps' work earlier runs had left in the cache."""
    total, each = notebook_minutes(profile)
    if not each:
        return "Its notebooks' times were not recorded."
    hit, cells = cached_cells(profile)
    reuse = (
        f"; {hit} of the sweeps' {cells} cells, and any checkpoint already trained, came from the "
        f"cache of earlier runs, so a run from an empty `runs/{profile}/` takes longer"
        if hit
        else "; a rerun reuses cached checkpoints and takes less"
    )
    return (
        f"On this machine, the last `{profile}` run's notebooks took {total:.0f} minutes in all "
        f"({each}), each as papermill timed it{reuse}."
    )


def audit_cost(profiles=("smoke", config.DEFAULT_PROFILE)) -> str:
    """What the audit command cost on this machine, in a sentence (from ``make bench-audit``'s
    records in each profile's run folder)."""
    done = {}
    for profile in profiles:
        path = config.run_dir(profile) / "bench_audit.json"
        if path.exists():
            done[profile] = json.loads(path.read_text())
    if not done:
        return "Its cost is not measured yet: `make bench-audit PROFILE=smoke` measures it."
    each = " and ".join(
        f"{r['wall_seconds'] / 60:.1f} minutes at `--profile {p}` ({r['train_images']:,} "
        f"training and {r['heldout_images']:,} held-out images)"
        for p, r in done.items()
    )
    cores = next(iter(done.values()))["cores"]
    return (
        f"On this machine ({cores} CPU cores), the command on the FashionMNIST CNN of Figures 3 "
        f"and 4 took {each}, a fresh judge and the shadow models included, as `make bench-audit` "
        "measured it."
    )


def tables(metrics: pd.DataFrame, profile: str) -> str:
    m = store.fill_default_keys(metrics)
    main, sweep = m[m.setting == "main"], m[m.setting == "sweep"]
    parts = [
        f"Profile `{profile}`; every number below comes from `runs/{profile}/metrics.csv` "
        f"(a copy is `figures/metrics.csv`). {times(profile)}"
    ]
    summary = findings(m, profile)
    if summary:
        parts.append("**In numbers**:\n\n" + summary)
    acc = main[(main.method == "target") & (main.metric == "test_accuracy")]
    if len(acc):
        t = (
            acc.assign(seed=acc.seed.astype(int))
            .pivot_table(index=["dataset", "arch", "seed"], columns="train_size", values="value")
            .reset_index()
        )
        t.columns = [str(c) if c in ("dataset", "arch", "seed") else f"n={c}" for c in t.columns]
        parts += [
            "**Target classifiers**: test accuracy by training-set size.",
            _markdown(t.round(3).astype(object).where(t.notna(), "-")),
        ]
    shown, t = figure_scores(m)
    if len(shown):
        judges = ", ".join(f"`{a}`" for a in sorted(shown["evaluator"].dropna().unique()))
        seed = config.settings(profile, "train_targets").eval_seed
        n_utility = config.settings(profile, "inversion").utility_images
        text = (
            "**Figures 3-4**, mean ± standard deviation over the generators trained against one "
            "target "
            "(`seeds`), beside real test images (`real_test`), the ceiling. `target_accuracy` and "
            f"`evaluator_accuracy`: the share of samples in their conditioned class for the "
            f"target and for the "
            f"independent evaluation classifier ({judges}, seed {seed}); `_unselected`: the first "
            f"draws of each "
            "class, without the selection at sampling time. `precision`, `recall`, `density`, "
            "`coverage` "
            "(prdc) and `fid` (torch-fidelity) are measured in the evaluator's feature space "
            "against held-out "
            "test images. `within_class_ssim`: mean SSIM of two samples of one class (lower is "
            "more varied). "
            f"The utility ratios: real-test accuracy of a classifier trained on {n_utility:,} "
            f"generated images "
            "(hard labels, or distilled from the target's softmax) over that of the same "
            "classifier trained on the "
            "target's real training images. Loss `paper only` is the control of `02_invert`: the "
            "paper's "
            "terms without our image priors, which the target accepts and the evaluator should not."
        )
        parts += [text, _markdown(t)]
    leak = sweep[sweep.metric.isin(LEAKAGE) & ~sweep.method.str.startswith("tldr_without")]
    leak = leak[
        leak.method.str.startswith("control")
        | (leak.groupby(["dataset", "method", "train_size"])["seed"].transform("nunique") > 1)
    ]
    if len(leak):
        t = (
            leak.groupby(["dataset", "method", "train_size", "metric"])["value"]
            .apply(_mean_ci)
            .unstack()
        )
        t = t[[c for c in LEAKAGE if c in t.columns]].reset_index()
        parts += [
            "**Leakage** (mean ± 95% t-interval over seeds): gap = train minus held-out; "
            "copying Z < 0 and membership AUC > 0.5 would mean leakage.",
            _markdown(t),
        ]
    abl = sweep[(sweep.method == "tldr") | sweep.method.str.startswith("tldr_without")]
    abl = abl[abl.metric.isin(["nn_ssim_gap", "membership_auc", "copying_z", "evaluator_accuracy"])]
    sizes = sweep[sweep.method.str.startswith("tldr_without")][
        ["train_size", "seed"]
    ].drop_duplicates()
    if len(sizes):
        abl = abl.merge(sizes, on=["train_size", "seed"])
        t = abl.pivot_table(index="method", columns="metric", values="value").reset_index()
        parts += [
            "**Drop-one ablation** of the TLDR terms (one target, one seed).",
            _markdown(t.round(3)),
        ]
    base = m[(m.setting == "baselines") & m.metric.isin(BASELINES)]
    if len(base):
        t = base.pivot_table(
            index=["dataset", "method", "train_size"], columns="metric", values="value", sort=False
        )
        t = t[[c for c in BASELINES if c in t.columns]].reset_index()
        parts += [
            "**Every attack on the same targets** (`06_baselines`; `l2_diff` is train minus "
            "held-out, with "
            "its 95% bootstrap interval in `_lo`/`_hi`; `synthetic_utility` is the real-test "
            "accuracy of a CNN "
            "trained only on the attack's images).",
            _markdown(t.round(3)),
        ]
    split = m[
        m.setting.str.startswith("split_depth")
        & m.metric.isin(["ssim", "psnr", "evaluator_accuracy"])
    ]
    if len(split):
        split = split.assign(depth=split.setting.str.removeprefix("split_depth").astype(int))
        t = (
            split.groupby(["arch", "depth", "method", "metric"], sort=False)["value"]
            .apply(_mean_ci)
            .unstack()
        )
        t = t[[c for c in ("ssim", "psnr", "evaluator_accuracy") if c in t.columns]].reset_index()
        parts += [
            "**Split computing** (`08_split_computing`): each private test image against its "
            "reconstruction from "
            "the activations after `depth` blocks (mean ± 95% t-interval over seeds; a `_aux_` "
            "decoder was "
            "trained on another dataset's images, one seed).",
            _markdown(t),
        ]
    defended = m[m.setting.str.startswith("defence_lambda")]
    if len(defended):
        t = defended.assign(
            **{"lambda": defended.setting.str.removeprefix("defence_lambda").astype(float)}
        )
        t = t[t.metric.isin(["test_accuracy", "ssim", "evaluator_accuracy", "membership_auc"])]
        t = t.pivot_table(index=["arch", "lambda"], columns=["method", "metric"], values="value")
        t.columns = [f"{a} {b}" for a, b in t.columns]
        floor = m[(m.setting == "defence_floor") & (m.metric == "ssim")]["value"]
        parts += [
            "**The defence** (`09_defence`): each lambda's classifier, its test accuracy, what a "
            "fresh "
            "decoder and `split_optimisation` recover from its frozen encoder (SSIM to the true "
            "inputs), and "
            "TLDR against the whole classifier"
            + (
                f"; the class alone (its mean image) gives SSIM {floor.iloc[0]:.3f}."
                if len(floor)
                else "."
            ),
            _markdown(t.reset_index().round(3)),
        ]
    arch = m[m.setting == "architectures"]
    if len(arch):
        keys = ["dataset", "train_size", "arch"]
        acc = arch[(arch.method == "classifier") & (arch.metric == "test_accuracy")]
        acc = acc.groupby(keys)["value"].apply(_mean_ci).rename("test_accuracy").reset_index()
        shown = arch[(arch.method != "classifier") & arch.metric.isin(ARCHITECTURES)]
        t = (
            shown.groupby([*keys, "method", "metric"], sort=False)["value"]
            .apply(_mean_ci)
            .unstack()
        )
        t = (
            t[[c for c in ARCHITECTURES if c in t.columns]]
            .reset_index()
            .merge(acc, on=keys, how="left")
        )
        t = t[
            [*keys, "test_accuracy", "method", *[c for c in ARCHITECTURES if c in t.columns]]
        ].fillna("-")
        parts += [
            "**Architectures at matched accuracy** (`10_architectures`; mean ± 95% t-interval "
            "over seeds): "
            "each classifier's test accuracy beside every attack on it; `nn_ssim_train` is the "
            "ease of "
            "reconstruction (best SSIM to a training image of the class), `nn_ssim_gap` (train "
            "minus held-out) "
            "and `membership_auc` the leak of the training set (0 and 0.5: none), `ssim` the "
            "private input's "
            "SSIM to its reconstruction from the activations after the first or last block.",
            _markdown(t),
        ]
        try:
            said = architectures.answers(arch, sorted(set(arch.method) & set(attacks.ATTACKS)))
        except ValueError:  # too few seeds or architectures to test
            said = []
        if said:
            parts.append(
                "The answers, a block being one attack on the classifiers of one dataset, size "
                "and seed "
                "(the blocks of one seed share their classifiers, so the p-values lean "
                "optimistic):\n\n" + "\n".join(f"- {line}" for line in said)
            )
    memorised = m[m.setting.str.startswith("leakage_regime_") | (m.setting == "leakage_control")]
    if len(memorised):
        parts += _regime(memorised)
    stronger = m[m.setting.str.startswith("leakage_strength_")]
    if len(stronger):
        parts += _strength(stronger)
    member = m[m.setting == "leakage_membership"]
    if len(member):
        parts += _membership(member)
    util = sweep[sweep.metric == "synthetic_utility"]
    if len(util):
        parts += [
            "**Utility**: accuracy on the real test set of a classifier trained only on "
            "generated images.",
            _markdown(util[["dataset", "method", "train_size", "value"]].round(3)),
        ]
    return "\n\n".join(parts)


def _strength(m: pd.DataFrame) -> list[str]:
    """``11_leakage_regime``'s strength check: one cell's leakage metrics at each attack strength,
    beside that seed's null band."""
    band = m[m.setting == "leakage_strength_band"].set_index("metric").value
    runs = m[m.setting != "leakage_strength_band"].assign(
        steps=lambda f: f.setting.str.removeprefix("leakage_strength_").astype(int)
    )
    t = runs.pivot_table(index=["method", "steps"], columns="metric", values="value", sort=False)
    t = t.sort_index().round(3).astype(object)
    for metric in t.columns:
        if f"{metric}_hi" in band:
            t[metric] = [
                f"{v:.3f}{' **outside**' if v > band[f'{metric}_hi'] else ''}" for v in t[metric]
            ]
    said = ", ".join(
        f"{metric} {band[f'{metric}_lo']:.3f} to {band[f'{metric}_hi']:.3f}"
        for metric in t.columns
        if f"{metric}_hi" in band
    )
    first = runs.iloc[0]
    return [
        f"**Would stronger attacks change the answer?** (`11_leakage_regime`): the {first.arch} "
        f"target trained on {int(float(first.train_size))} {first.dataset} images (seed "
        f"{int(first.seed)}) attacked again at several strengths; the null band of that seed: "
        f"{said}.",
        _markdown(t.reset_index()),
    ]


def _membership(m: pd.DataFrame) -> list[str]:
    """The standard membership test on ``11_leakage_regime``'s memorising targets: AUC and TPR at
    1% FPR with their intervals, the test and its null side by side."""
    m = m.assign(train_size=m.train_size.astype(float).astype(int), seed=m.seed.astype(int))
    v = m.pivot_table(
        index=["dataset", "arch", "train_size", "seed", "method"], columns="metric", values="value"
    )
    shown = {
        m: [f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in zip(v[m], v[f"{m}_lo"], v[f"{m}_hi"])]
        for m in ("auc", "tpr_at_0.01_fpr")
    }
    t = pd.DataFrame(shown, index=v.index).reset_index()
    t["method"] = t.method.str.removeprefix("membership_")
    return [
        "**The standard membership test on the same targets** (`11_leakage_regime`): the loss "
        "attack and offline LiRA (shadows trained the target's way, never on a probe), members the "
        "target's training images, non-members held-out probes; `_null` rows put held-out images "
        "in the members' place. AUC and TPR at 1% FPR with 95% bootstrap intervals.",
        _markdown(t),
    ]


def _regime(m: pd.DataFrame) -> list[str]:
    """The tables of ``11_leakage_regime``: each number beside its null band, and whether it lies
    outside."""

    def cells(part: pd.DataFrame, metric: str) -> pd.Series:
        v = part.pivot_table(
            index=[c for c in part.columns if c not in ("metric", "value")],
            columns="metric",
            values="value",
        )
        said = [
            f"{a:.3f} ({lo:.3f} to {hi:.3f}) {'**outside**' if out else 'inside'}"
            for a, lo, hi, out in zip(
                v[metric], v[f"{metric}_null_lo"], v[f"{metric}_null_hi"], v[f"{metric}_outside"]
            )
        ]
        return pd.Series(said, index=v.index)

    keys = ["dataset", "arch", "setting", "method", "train_size"]
    m = m[keys + ["metric", "value"]].assign(
        train_size=lambda f: f.train_size.astype(float).astype(int)
    )
    out = []
    control = m[m.setting == "leakage_control"]
    if len(control):
        got = control.set_index("metric").value
        text = [
            f"**The positive control** (`11_leakage_regime`): `kkt` on a bias-free MLP trained on "
            f"{control.train_size.iloc[0]} {control.dataset.iloc[0]} images of two classes "
            f"recovered "
            f"{got.get('recovered', float('nan')):.0%} of them (SSIM at least 0.6 and at least "
            f"0.1 above the most "
            "similar held-out image)"
        ]
        for metric in regime.METRICS:
            if f"{metric}_outside" in got:
                scored = control[~control.metric.isin(["recovered", "ssim_at_least_0.6"])]
                text.append(f"{metric} {cells(scored, metric).iloc[0]}")
        out.append("; ".join(text) + ".")
    sweep = m[m.setting.str.startswith("leakage_regime_")].assign(
        regime=lambda f: f.setting.str.removeprefix("leakage_regime_")
    )
    if len(sweep):
        out.append(
            "**Where leakage begins** (`11_leakage_regime`): targets trained to memorise "
            "`train_size` images "
            "(all ten classes), every attack's mean over seeds, then its null band (held-out "
            "images and "
            "reconstructions from targets trained on other images in place of the "
            "reconstructions), and "
            "whether it lies outside that band for every seed."
        )
        for metric in regime.METRICS:
            part = sweep[["dataset", "arch", "regime", "method", "train_size", "metric", "value"]]
            part = part[part.metric.str.startswith(metric)]
            if part.empty:
                continue
            t = cells(part, metric).unstack("train_size")
            t.columns = [f"n={c}" for c in t.columns]
            out += [f"`{metric}`:", _markdown(t.reset_index())]
    return out
