import json

import pandas as pd
import pytest

from tldr_utils import findings, report, store, tables


def _rows():
    key = {"dataset": "mnist", "arch": "cnn", "train_size": "1000"}
    rows = [{**key, "method": "target", "seed": 0, "metric": "test_accuracy", "value": 0.97}]
    for seed, gap in ((0, 0.01), (1, 0.03)):
        rows.append(
            {
                **key,
                "method": "tldr",
                "seed": seed,
                "metric": "nn_ssim_gap",
                "value": gap,
                "setting": "sweep",
            }
        )
    return pd.DataFrame(rows)


def test_tables_show_accuracy_and_mean_with_interval_over_seeds():
    text = tables.tables(_rows(), "cpu")
    assert "| mnist | cnn | 0 | 0.97 |" in text
    assert "0.020 ± 0.127" in text  # mean of 0.01 and 0.03, t(0.975, 1) * sd / sqrt(2)


def test_readme_without_markers_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TLDR_RUNS", str(tmp_path))
    (tmp_path / "cpu").mkdir()
    _rows().to_csv(tmp_path / "cpu" / "metrics.csv", index=False)
    results, readme = tmp_path / "RESULTS.md", tmp_path / "README.md"
    results.write_text("# no markers\n")
    readme.write_text(
        f"x\n{report.TIMES[0]}\nlong ago\n{report.TIMES[1]}\n"
        f"{report.COST[0]}\nonce\n{report.COST[1]}\ny\n"
    )
    with pytest.raises(ValueError, match="markers"):
        report.update_results("cpu", results, readme)
    results.write_text(f"a\n{report.START}\nold\n{report.END}\nb\n")
    report.update_results("cpu", results, readme)
    text = results.read_text()
    assert text.startswith("a\n") and text.endswith("b\n") and "old" not in text and "0.97" in text
    assert "long ago" not in readme.read_text() and "times were not recorded" in readme.read_text()
    assert "once" not in readme.read_text() and "not measured yet" in readme.read_text()


def test_the_audit_cost_sentence_comes_from_the_bench_records(tmp_path, monkeypatch):
    monkeypatch.setenv("TLDR_RUNS", str(tmp_path))
    record = {"wall_seconds": 150, "train_images": 100, "heldout_images": 100, "cores": 2}
    store.write_json(tmp_path / "smoke" / "bench_audit.json", record)
    text = tables.audit_cost()
    assert "2.5 minutes at `--profile smoke` (100 training and 100 held-out images)" in text
    assert "cpu" not in text  # only what was measured


def test_figure_table_names_the_evaluator_recorded_with_the_scores():
    key = {
        "dataset": "mnist",
        "arch": "cnn",
        "method": "tldr",
        "train_size": "1000",
        "seed": 0,
        "evaluator": "mlp",
    }
    rows = pd.DataFrame(
        [
            {**key, "metric": "target_accuracy", "value": 0.99},
            {**key, "metric": "evaluator_accuracy", "value": 0.71},
        ]
    )
    text = tables.tables(rows, "cpu")
    assert (
        "classifier (`mlp`, seed 1)" in text
    )  # the judge in the rows, not the profile's default (vit)
    assert "| mnist | tldr | ours | 1 | 0.990 | 0.710 |" in text


def test_figure_table_sets_the_paper_loss_control_beside_our_loss_and_leaves_out_the_sweep():
    key = {
        "dataset": "mnist",
        "arch": "cnn",
        "method": "inversion",
        "train_size": "all",
        "seed": 0,
        "evaluator": "vit",
    }
    rows = pd.DataFrame(
        [
            {**key, "metric": "evaluator_accuracy", "value": v, "setting": s}
            for s, v in (("main", 0.6), ("paper_loss", 0.1), ("sweep", 0.42))
        ]
    )
    text = tables.tables(rows, "cpu")
    assert "| mnist | inversion | ours | 1 | 0.600 |" in text
    assert "| mnist | inversion | paper only | 1 | 0.100 |" in text
    assert "0.42" not in text


def test_figure_table_gives_mean_and_deviation_over_generator_seeds_beside_real_images():
    key = {
        "dataset": "mnist",
        "arch": "cnn",
        "method": "tldr",
        "train_size": "1000",
        "evaluator": "vit",
    }
    rows = pd.DataFrame(
        [
            {**key, "seed": seed, "metric": m, "value": v}
            for seed, acc, ratio in ((0, 0.7, 0.90), (1, 0.8, 0.94), (2, 0.9, 0.98))
            for m, v in (
                ("evaluator_accuracy", acc),
                ("within_class_ssim", 0.61),
                ("utility_hard_ratio", ratio),
            )
        ]
        + [
            {
                "dataset": "mnist",
                "method": "real_test",
                "train_size": "all",
                "seed": 0,
                "metric": m,
                "value": v,
            }
            for m, v in (("evaluator_accuracy", 0.99), ("within_class_ssim", 0.55))
        ]
    )
    text = tables.tables(rows, "cpu")
    assert "| mnist | tldr | ours | 3 | 0.800 ± 0.100 | 0.610 ± 0.000 | 0.940 ± 0.040 |" in text
    assert "| mnist | real_test | - | 1 | 0.990 | 0.550 | - |" in text


def test_findings_count_the_blocks_that_pass_and_name_the_weakest_classes_and_terms():
    key = {"arch": "cnn", "train_size": "1000", "seed": 0, "evaluator": "vit", "setting": "main"}
    rows = [
        {**key, "dataset": d, "method": "tldr", "metric": m, "value": v}
        for d, acc in (("mnist", 0.85), ("fashion_mnist", 0.7))
        for m, v in (("target_accuracy", 0.99), ("evaluator_accuracy", acc))
    ]
    rows += [
        {
            **key,
            "dataset": "mnist",
            "method": method,
            "metric": "evaluator_accuracy_of_class",
            "class": c,
            "value": v,
        }
        for method, values in (("tldr", (0.9, 0.2, 0.5, 0.4)), ("real_test", (1.0, 0.9, 0.8, 0.7)))
        for c, v in zip("abcd", values)
    ]
    rows += [
        {
            **key,
            "dataset": "mnist",
            "method": m,
            "metric": "evaluator_accuracy",
            "value": v,
            "setting": "sweep",
        }
        for m, v in (
            ("tldr", 0.6),
            ("tldr_without_bn", 0.2),
            ("tldr_without_tv", 0.65),
            ("tldr_without_cos", 0.55),
        )
    ]
    text = findings.findings(pd.DataFrame(rows).fillna({"class": ""}), "cpu")
    assert "the evaluator (`vit`) 70.0% to 85.0%." in text
    assert "mnist tldr: b 20% (real 90%), d 40% (real 70%), c 50% (real 80%)." in text
    assert (
        "largest drop without `bn` (20.0%); every other term moves it by -5.0 to +5.0 points."
        in text
    )
    assert (
        "Leakage" not in text
    )  # no sweep of inversion and tldr over sizes and seeds in these rows: no claim


def test_findings_set_the_selected_samples_beside_the_unselected_draws():
    key = {
        "arch": "cnn",
        "train_size": "1000",
        "seed": 0,
        "evaluator": "vit",
        "setting": "main",
        "method": "tldr",
    }
    rows = [
        {**key, "dataset": d, "metric": m, "value": v}
        for d, values in (
            ("mnist", (0.86, 0.74, 0.62, 0.60)),
            ("fashion_mnist", (0.81, 0.78, 0.45, 0.43)),
        )
        for m, v in zip(
            (
                "evaluator_accuracy",
                "evaluator_accuracy_unselected",
                "within_class_ssim",
                "within_class_ssim_unselected",
            ),
            values,
        )
    ]
    rows += [
        {**key, "dataset": d, "metric": "target_accuracy", "value": 1.0}
        for d in ("mnist", "fashion_mnist")
    ]
    # the judge on real test images (the profile's evaluator seed), the ceiling
    rows += [
        {**key, "method": "target", "arch": "vit", "seed": 1, "dataset": d}
        | {"metric": "test_accuracy", "value": v, "setting": ""}
        for d, v in (("mnist", 0.98), ("fashion_mnist", 0.90))
    ]
    text = findings.findings(pd.DataFrame(rows).assign(**{"class": ""}), "cpu")
    assert (
        "the evaluator (`vit`, 90.0% on real fashion_mnist, 98.0% on real mnist) 81.0% to 86.0%, "
        "9.0 to 12.0 points under its accuracy on real images of the dataset; 0 of 2 within 5."
        in text
    )
    assert (
        "Without the selection at sampling time (the first draws of each class) the evaluator "
        "gives 74.0% to 78.0%, 12.0 to 24.0 points under" in text
    )
    assert "mnist 0.620 (without selection 0.600)" in text


def test_run_time_is_read_from_the_executed_notebooks(tmp_path, monkeypatch):
    monkeypatch.setenv("TLDR_RUNS", str(tmp_path))
    notebooks = tmp_path / "cpu" / "notebooks"
    notebooks.mkdir(parents=True)
    for name, seconds in (("01_train_targets", 600), ("02_invert", 90)):
        (notebooks / f"{name}.ipynb").write_text(
            json.dumps({"metadata": {"papermill": {"duration": seconds}}})
        )
    text = tables.tables(_rows(), "cpu")
    assert "notebooks took 12 minutes in all (01 10.0 + 02 1.5)," in text
    assert (
        tables.times("cpu") in text
        and tables.times("smoke") == "Its notebooks' times were not recorded."
    )
    assert "a rerun reuses cached checkpoints" in tables.times("cpu")
    printed = "leakage sweep: 30 of 34 cells (25 from the cache), 0 failed, 900s on processes\n"
    (notebooks / "04_evaluate.ipynb").write_text(
        json.dumps(
            {
                "metadata": {"papermill": {"duration": 60}},
                "cells": [{"outputs": [{"name": "stdout", "text": [printed]}]}],
            }
        )
    )
    assert "; 25 of the sweeps' 34 cells, and any checkpoint" in tables.times("cpu")


def test_spans_print_one_value_when_both_ends_agree_and_no_negative_zero():
    assert findings.span([0.571, 0.7224], "{:.1%}") == "57.1% to 72.2%"
    assert findings.span([0.5004, 0.4996]) == "0.500"
    assert findings.span([-0.0001, 0.0012], "{:+.3f}") == "+0.000 to +0.001"  # not "-0.000"


def test_tables_show_every_attack_of_the_baselines_notebook():
    key = {
        "dataset": "fashion_mnist",
        "arch": "cnn",
        "train_size": "1000",
        "seed": 0,
        "setting": "baselines",
    }
    rows = [
        {**key, "method": a, "metric": m, "value": v}
        for a, v in (("deepinversion", 0.7), ("miface", 0.3))
        for m in ("evaluator_accuracy", "l2_diff", "synthetic_utility")
    ]
    text = tables.tables(pd.DataFrame(rows), "cpu")
    assert "**Every attack on the same targets**" in text
    assert "| fashion_mnist | deepinversion | 1000 | 0.7 | 0.7 | 0.7 |" in text
    assert "| fashion_mnist | miface | 1000 | 0.3 | 0.3 | 0.3 |" in text


def test_split_computing_table_gives_each_depth_with_its_interval():
    key = {
        "dataset": "fashion_mnist",
        "arch": "cnn",
        "method": "split_optimisation",
        "train_size": "all",
        "metric": "ssim",
    }
    rows = pd.DataFrame(
        [
            {**key, "seed": s, "value": v, "setting": f"split_depth{d}"}
            for d, values in ((1, (0.9, 0.8)), (2, (0.5, 0.5)))
            for s, v in enumerate(values)
        ]
    )
    text = tables.tables(rows, "cpu")
    assert "**Split computing**" in text
    assert (
        "| cnn | 1 | split_optimisation | 0.850 ± 0.635 |" in text
        and "| cnn | 2 | split_optimisation | 0.500 ± 0.000 |" in text
    )


def test_defence_table_gives_each_lambda_with_its_accuracy_and_the_attackers_ssim():
    key = {"dataset": "fashion_mnist", "arch": "cnn", "train_size": "10000", "seed": 0}
    rows = [
        {
            **key,
            "setting": f"defence_lambda{lam:g}",
            "method": method,
            "metric": metric,
            "value": value,
        }
        for lam, acc, ssim in ((0.0, 0.9, 0.6), (100.0, 0.88, 0.35))
        for method, metric, value in (
            ("classifier", "test_accuracy", acc),
            ("split_decoder", "ssim", ssim),
        )
    ]
    rows.append(
        {**key, "setting": "defence_floor", "method": "class_mean", "metric": "ssim", "value": 0.3}
    )
    text = tables.tables(pd.DataFrame(rows), "cpu")
    assert "**The defence**" in text and "the class alone (its mean image) gives SSIM 0.300" in text
    assert "| arch | lambda | classifier test_accuracy | split_decoder ssim |" in text
    assert "| cnn | 0.0 | 0.9 | 0.6 |" in text and "| cnn | 100.0 | 0.88 | 0.35 |" in text


def test_architectures_table_puts_the_matched_accuracy_beside_every_attack():
    rows = []
    for seed in (0, 1):
        for arch, acc in (("mlp", 0.80), ("cnn", 0.81)):
            key = {
                "dataset": "fashion_mnist",
                "arch": arch,
                "train_size": "1000",
                "seed": seed,
                "setting": "architectures",
            }
            rows += [
                {**key, "method": "classifier", "metric": "test_accuracy", "value": acc},
                {**key, "method": "tldr", "metric": "membership_auc", "value": 0.5},
                {**key, "method": "split_optimisation_first", "metric": "ssim", "value": 0.9},
            ]
    text = tables.tables(pd.DataFrame(rows), "cpu")
    assert "**Architectures at matched accuracy**" in text
    assert (
        "| dataset | train_size | arch | test_accuracy | method | membership_auc | ssim |" in text
    )
    assert "| fashion_mnist | 1000 | cnn | 0.810 ± 0.000 | tldr | 0.500 ± 0.000 | - |" in text
    assert (
        "| fashion_mnist | 1000 | mlp | 0.800 ± 0.000 | split_optimisation_first | - | 0.900 ± "
        "0.000 |" in text
    )


def test_leakage_regime_tables_say_for_every_attack_and_size_whether_it_lies_outside_the_band():
    from tldr_utils import regime

    bands = pd.DataFrame(
        [
            {
                "dataset": "fashion_mnist",
                "arch": "mlp",
                "regime": "plain",
                "per_class": n,
                "attack": "miface",
                "metric": m,
                "value": v,
                "null_lo": 0.4,
                "null_hi": 0.6,
                "seeds": 3,
                "outside": v > 0.6,
            }
            for n, v in ((1, 0.8), (10, 0.5))
            for m in regime.METRICS
        ]
    )
    control = pd.DataFrame(
        [
            {
                "dataset": "mnist",
                "arch": "homogeneous_mlp",
                "per_class": 10,
                "attack": "kkt",
                "metric": m,
                "value": 0.9,
                "null_lo": 0.3,
                "null_hi": 0.7,
                "seeds": 1,
                "outside": True,
            }
            for m in regime.METRICS
        ]
    )
    rows = regime.metric_rows(bands, "leakage_regime", 10) + regime.metric_rows(
        control, "leakage_control", 2
    )
    rows.append(
        {
            "dataset": "mnist",
            "arch": "homogeneous_mlp",
            "method": "kkt",
            "train_size": 20,
            "seed": 0,
            "setting": "leakage_control",
            "metric": "recovered",
            "value": 0.15,
        }
    )
    text = tables.tables(pd.DataFrame(rows).astype({"train_size": str}), "cpu")
    assert (
        "recovered 15% of them" in text
        and "membership_auc 0.900 (0.300 to 0.700) **outside**" in text
    )
    assert (
        "| fashion_mnist | mlp | plain | miface | 0.800 (0.400 to 0.600) **outside** | 0.500 "
        "(0.400 to 0.600) inside |" in text
    )
    assert "n=10 | n=100" in text


def test_the_membership_table_shows_each_test_beside_its_null():
    key = {"dataset": "mnist", "arch": "mlp", "train_size": "10", "seed": 0}
    rows = [
        {**key, "setting": "leakage_membership", "method": f"membership_{method}"}
        | {"metric": f"{m}{side}", "value": value + shift}
        for method, value in (("lira", 0.9), ("lira_null", 0.5))
        for m in ("auc", "tpr_at_0.01_fpr")
        for side, shift in (("", 0.0), ("_lo", -0.1), ("_hi", 0.05))
    ]
    text = tables.tables(pd.DataFrame(rows).assign(**{"class": ""}), "cpu")
    assert "| mnist | mlp | 10 | 0 | lira | 0.900 [0.800, 0.950] |" in text
    assert "| lira_null | 0.500 [0.400, 0.550] |" in text


def test_the_strength_table_marks_what_leaves_the_null_band():
    key = {"dataset": "mnist", "arch": "mlp", "train_size": "10", "seed": 0, "class": ""}
    rows = [
        {**key, "method": "tldr", "setting": f"leakage_strength_{steps}"}
        | {"metric": "membership_auc", "value": value}
        for steps, value in ((30, 0.55), (810, 0.95))
    ] + [
        {**key, "method": "null", "setting": "leakage_strength_band"}
        | {"metric": f"membership_auc_{end}", "value": value}
        for end, value in (("lo", 0.3), ("hi", 0.8))
    ]
    text = tables.tables(pd.DataFrame(rows), "cpu")
    assert "the null band of that seed: membership_auc 0.300 to 0.800" in text
    assert "| tldr | 30 | 0.550 |" in text and "| tldr | 810 | 0.950 **outside** |" in text
