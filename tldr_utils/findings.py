"""The headline numbers of a run, as a short list of sentences computed from its tidy metrics."""

from __future__ import annotations

import pandas as pd

from . import config

# how far under the judge's accuracy on real test images its share of samples may fall (the
# acceptance bar, in points)
EVALUATOR_GAP = 5.0


def span(values, fmt: str = "{:.3f}") -> str:
    """ "lo to hi" of ``values`` in ``fmt``, or one value when both print alike."""

    def show(v):
        text = fmt.format(v)
        return (
            fmt.format(0.0) if float(text.strip("%")) == 0 else text
        )  # a tiny negative prints as zero, not "-0.000"

    lo, hi = show(min(values)), show(max(values))
    return lo if lo == hi else f"{lo} to {hi}"


def _real_within_class_ssim(m: pd.DataFrame) -> pd.Series:
    """Per dataset, the within-class SSIM of real test images (what samples' variety is compared
    with)."""
    return (
        m[(m.method == "real_test") & (m.metric == "within_class_ssim")]
        .groupby("dataset")["value"]
        .first()
    )


def findings(m: pd.DataFrame, profile: str) -> str:
    """The headline numbers of a run as a short list, each computed from ``m`` (the tidy
    metrics)."""
    main = m[(m.setting == "main") & m.method.isin(["inversion", "tldr"]) & (m["class"] == "")]
    paper = m[(m.setting == "paper_loss") & (m["class"] == "")]
    sweep = m[(m.setting == "sweep") & m.method.isin(["inversion", "tldr"])]
    lines = []
    if {"nn_ssim_gap", "membership_auc", "copying_z"} <= set(sweep.metric):
        means = sweep.groupby(["method", "train_size", "metric"])["value"].mean()
        held = m[
            (m.setting == "sweep") & (m.method == "control_heldout") & (m.metric == "copying_z")
        ]
        held = held.groupby("train_size")["value"].mean()
        sizes = ", ".join(sorted(sweep.train_size.unique(), key=lambda v: (v == "all", len(v), v)))
        lines.append(
            f"**Leakage** (`04_evaluate`: {' and '.join(sorted(sweep.method.unique()))}, "
            f"training-set sizes "
            f"{sizes}, {sweep.seed.nunique()} seeds; means over seeds): SSIM gap "
            f"{span(means.xs('nn_ssim_gap', level='metric'), '{:+.3f}')}, membership AUC "
            f"{span(means.xs('membership_auc', level='metric'))}, copying Z "
            f"{span(means.xs('copying_z', level='metric'), '{:+.1f}')}"
            + (f" (real held-out images: {span(held, '{:+.1f}')})" if len(held) else "")
            + "."
        )
    if {"target_accuracy", "evaluator_accuracy"} <= set(main.metric):
        acc = main.pivot_table(index=["dataset", "method"], columns="metric", values="value")
        judges = m[(m.method == "target") & (m.metric == "test_accuracy")]
        seed = config.settings(profile, "train_targets").eval_seed
        judge = main["evaluator"].dropna().iloc[0]  # experiments.run records it with every score
        real = (
            judges[(judges.arch == judge) & (judges.seed.astype(int) == seed)]
            .groupby("dataset")["value"]
            .first()
        )

        def under_real(shares: pd.Series) -> str:
            """How many points each share falls under the judge's accuracy on real images."""
            gaps = pd.Series(
                [100 * (real[d] - v) for (d, _), v in shares.items() if d in real.index]
            )
            if gaps.empty:
                return ""
            within = int((gaps <= EVALUATOR_GAP).sum())
            return (
                f", {span(gaps, '{:.1f}')} points under its accuracy on real images of the "
                f"dataset; {within} of {len(gaps)} within {EVALUATOR_GAP:.0f}"
            )

        text = (
            f"**Recognisable** (Figures 3-4, {len(acc)} generators; means over generator seeds): "
            f"the target puts {span(acc['target_accuracy'], '{:.1%}')} of samples in their class, "
            f"the evaluator (`{judge}`"
            + "".join(f", {v:.1%} on real {d}" for d, v in real.items())
            + f") {span(acc['evaluator_accuracy'], '{:.1%}')}"
            + under_real(acc["evaluator_accuracy"])
            + "."
        )
        if "evaluator_accuracy_unselected" in acc.columns:
            unselected = acc["evaluator_accuracy_unselected"].dropna()
            text += (
                f" Without the selection at sampling time (the first draws of each class) the "
                f"evaluator gives {span(unselected, '{:.1%}')}" + under_real(unselected) + "."
            )
        control = paper[paper.metric.isin(["target_accuracy", "evaluator_accuracy"])]
        if set(control.metric) == {"target_accuracy", "evaluator_accuracy"}:
            c = control.groupby("metric")["value"]
            text += (
                f" The paper-loss control: target "
                f"{span(c.get_group('target_accuracy'), '{:.1%}')}, "
                f"evaluator {span(c.get_group('evaluator_accuracy'), '{:.1%}')}."
            )
        lines.append(text)
        if "within_class_ssim" in acc.columns:
            real_ssim = _real_within_class_ssim(m)
            control_ssim = (
                paper[paper.metric == "within_class_ssim"].groupby("dataset")["value"].first()
            )
            per = []
            for d, v in acc["within_class_ssim"].groupby(level="dataset"):
                extra = [f"real test images {real_ssim[d]:.3f}"] if d in real_ssim else []
                extra += [f"paper-loss control {control_ssim[d]:.3f}"] if d in control_ssim else []
                if "within_class_ssim_unselected" in acc.columns:
                    extra.insert(
                        0,
                        f"without selection "
                        f"{span(acc.loc[d, 'within_class_ssim_unselected'].dropna())}",
                    )
                per.append(f"{d} {span(v)}" + (f" ({', '.join(extra)})" if extra else ""))
            lines.append(
                "**Varied** (within-class SSIM, lower is more varied): " + "; ".join(per) + "."
            )
    by_class = m[(m.metric == "evaluator_accuracy_of_class") & m.setting.eq("main")]
    if len(by_class):
        real = by_class[by_class.method == "real_test"].set_index(["dataset", "class"])["value"]
        least = []
        for (d, method), g in by_class[by_class.method != "real_test"].groupby(
            ["dataset", "method"]
        ):
            # a class's share, averaged over the generator seeds
            worst = g.groupby("class", as_index=False)["value"].mean().nsmallest(3, "value")
            least.append(
                f"{d} {method}: "
                + ", ".join(
                    f"{c} {v:.0%}" + (f" (real {real[(d, c)]:.0%})" if (d, c) in real.index else "")
                    for c, v in zip(worst["class"], worst["value"])
                )
            )
        lines.append(
            "**Least recognised classes** (evaluator's share of samples, mean over generator "
            "seeds; of real test images): " + "; ".join(least) + "."
        )
    abl = m[
        (m.setting == "sweep")
        & (m.metric == "evaluator_accuracy")
        & m.method.str.match(r"tldr(_without_.*)?$")
    ]
    drop = abl[abl.method.str.startswith("tldr_without")]
    if len(drop):
        abl = abl.merge(drop[["train_size", "seed"]].drop_duplicates(), on=["train_size", "seed"])
        share = abl.set_index("method")["value"]
        moves = (share.drop("tldr") - share["tldr"]).sort_values()
        lines.append(
            f"**Ablation** (evaluator's share, all terms {share['tldr']:.1%}): largest drop "
            f"without "
            f"`{moves.index[0].removeprefix('tldr_without_')}` ({share[moves.index[0]]:.1%}); "
            f"every other "
            f"term moves it by {span(moves.iloc[1:] * 100, '{:+.1f}')} points."
        )
    return "\n".join(f"- {line}" for line in lines)
