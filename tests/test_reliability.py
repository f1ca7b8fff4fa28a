"""What a user gets when they ask for something odd: overrides honoured, degenerate runs
stopped, hostile files refused, committed results kept, and clear errors on bad values."""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import judge, method_run, target
from safetensors import SafetensorError

from tldr_utils import (
    bench,
    config,
    data,
    edge,
    experiments,
    inversion,
    metrics,
    report,
    sampling,
    store,
    targets,
    training,
)

ROOT = config.ROOT


@pytest.fixture()
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TLDR_RUNS", str(tmp_path))
    return tmp_path / "smoke"


def _meta_of(folder: Path, pattern: str) -> list[dict]:
    return [store.load_meta(p) for p in sorted(folder.glob(pattern))]


# ---------------------------------------------------------------- 1. overrides reach the run
def _papermill(notebook: str, tmp_path: Path, overrides: str) -> None:
    out = tmp_path / notebook
    cmd = [
        sys.executable,
        "-m",
        "papermill",
        str(ROOT / "notebooks" / notebook),
        str(out),
        "--cwd",
        str(ROOT / "notebooks"),
        "-k",
        "python3",
        "-p",
        "profile",
        "smoke",
        "-y",
        overrides,
        "--log-level",
        "WARNING",
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "TLDR_RUNS": str(tmp_path)}
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_notebook_overrides_reach_the_targets_and_the_generators(tmp_path):
    _papermill(
        "01_train_targets.ipynb", tmp_path, "overrides: {datasets: [mnist], steps: 16, lr: 0.003}"
    )
    cnn = [m for m in _meta_of(tmp_path / "smoke" / "targets", "mnist_cnn_n100_*.safetensors")]
    assert cnn and all(m["steps"] == 16 and m["lr"] == 0.003 for m in cnn)
    _papermill("02_invert.ipynb", tmp_path, "overrides: {datasets: [mnist], steps: 41, lr: 0.004}")
    generators = [
        m["settings"] for m in _meta_of(tmp_path / "smoke" / "attacks", "inversion_*.safetensors")
    ]
    main = [
        m for m in generators if m["shift"] == 2
    ]  # the paper-loss control trains without the shift
    control = [m for m in generators if m["shift"] == 0]
    # one generator of each of the profile's generator seeds, every one with the user's settings
    assert len(main) == 2 and all(m["steps"] == 41 and m["lr"] == 0.004 for m in main)
    assert (
        len(control) == 1 and control[0]["lr"] == 0.004
    )  # the control keeps the user's settings too


# ---------------------------------------------------------------- 2. degenerate runs
def test_a_collapsed_generator_stops_with_its_cause_and_is_not_cached(runs):
    with pytest.raises(
        sampling.DegenerateRun,
        match=r"every sample is the same image.*lr 1e\+12 is too high; try 1e\+11",
    ):
        method_run("smoke", "inversion", "digits", {"train_size": 100, "lr": 1e12})
    assert not list((runs / "attacks").glob("*.safetensors"))
    assert not (runs / "samples").exists()


def test_a_generator_at_chance_stops_with_its_cause(runs):
    with pytest.raises(
        sampling.DegenerateRun, match=r"only \d+% of the samples.*chance is 10%.*lr \(1e-09\)"
    ):
        method_run("smoke", "tldr", "digits", {"train_size": 100, "lr": 1e-9})
    assert not list((runs / "attacks").glob("*.safetensors"))


def test_only_the_figures_run_writes_the_figures_samples(runs):
    own = config.settings("smoke", "tldr")
    figure = runs / "samples" / "tldr_mnist.safetensors"
    assert experiments.samples_path(runs, "tldr", "mnist", own, figures=True) == figure
    for other in ({}, {"generator_seed": 1}, {"lr": 0.01}):
        path = experiments.samples_path(
            runs, "tldr", "mnist", config.settings("smoke", "tldr", other)
        )
        assert path.parent == runs / "samples" / "variants"
    assert (
        experiments.samples_path(runs, "tldr", "mnist", own, False, figures=True).parent.name
        == "variants"
    )
    first = experiments.samples_path(
        runs, "tldr", "mnist", config.settings("smoke", "tldr", {"lr": 0.01})
    )
    assert first != experiments.samples_path(
        runs, "tldr", "mnist", config.settings("smoke", "tldr", {"lr": 0.02})
    )
    result = method_run("smoke", "tldr", "digits", {"train_size": 100, "samples_per_class": 2})
    assert result["samples_path"].parent == runs / "samples" / "variants"
    assert not (runs / "samples" / "tldr_digits.safetensors").exists()


# ---------------------------------------------------------------- 3. hostile pickles
class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_cifar_batch_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": _Payload(marker), b"labels": [0]}, f, protocol=2)
    with pytest.raises(
        data.CorruptDataset,
        match=r"test_batch: not a readable CIFAR-10 pickle.*refused.*posix.system",
    ):
        data.load_dataset("cifar10", "test", root=tmp_path, download=False)
    assert not marker.exists()


def test_real_format_cifar_batches_still_load(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rows = np.random.default_rng(0).integers(0, 256, (2, 3072), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as f:  # a numpy array pickled as numpy pickles it
        pickle.dump(
            {b"batch_label": b"test", b"data": rows, b"labels": [3, 8], b"filenames": [b"a", b"b"]},
            f,
            protocol=2,
        )
    test = data.load_dataset("cifar10", "test", root=tmp_path, download=False)
    assert test.labels.tolist() == [3, 8] and test.images.shape == (2, 3, 32, 32)


# ---------------------------------------------------------------- 4. trials never overwrite
# committed results
def _fingerprint(paths) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.fixture()
def published(tmp_path, monkeypatch):
    """A copy of RESULTS.md, the README and figures/ standing in for the committed ones, and a
    finished run."""
    readme, figures = tmp_path / "RESULTS.md", tmp_path / "figures"
    readme.write_text(f"intro\n{report.START}\ncommitted numbers\n{report.END}\nrest\n")
    (tmp_path / "README.md").write_text(
        f"intro\n{report.TIMES[0]}\ncommitted times\n{report.TIMES[1]}\n"
        f"{report.COST[0]}\ncommitted cost\n{report.COST[1]}\n"
    )
    monkeypatch.setattr(report, "RESULTS", readme)
    figures.mkdir()
    (figures / "fig3.png").write_bytes(b"committed figure")
    monkeypatch.setattr(report, "README", tmp_path / "README.md")
    monkeypatch.setattr(report, "FIGURES", figures)
    monkeypatch.setenv("TLDR_RUNS", str(tmp_path / "runs"))
    for profile in ("smoke", "cpu"):
        run = config.run_dir(profile)
        (run / "figures").mkdir()
        (run / "figures" / "fig3.png").write_bytes(f"{profile} figure".encode())
        rows = [
            {
                "dataset": "mnist",
                "arch": "cnn",
                "method": "target",
                "train_size": "all",
                "seed": 0,
                "metric": "test_accuracy",
                "value": 0.5,
            }
        ]
        store.record_metrics(run / "metrics.csv", rows)
    return readme, figures


def test_a_smoke_run_leaves_the_committed_results_alone(published):
    readme, figures = published
    before = _fingerprint([readme, *figures.iterdir()])
    report.main(["--profile", "smoke"])
    assert _fingerprint([readme, *figures.iterdir()]) == before
    assert (config.run_dir("smoke") / "results.md").exists()
    report.main(
        ["--profile", "cpu", "--datasets", "mnist"]
    )  # a part of the default run: not published either
    assert _fingerprint([readme, *figures.iterdir()]) == before


def test_the_full_default_run_publishes_its_figures_and_tables(published):
    readme, figures = published
    report.main(["--profile", "cpu"])
    assert (figures / "fig3.png").read_bytes() == b"cpu figure"
    assert (figures / "metrics.csv").exists() and "committed numbers" not in readme.read_text()


def test_the_makefile_leaves_publishing_to_the_report():
    recipe = (ROOT / "Makefile").read_text().split("\nfigures:")[1].split("\ntest:")[0]
    commands = "\n".join(line for line in recipe.splitlines() if line.startswith("\t"))
    assert (
        "tldr_utils.report" in commands and " figures/" not in commands and "README" not in commands
    )


# ---------------------------------------------------------------- 5. values out of range
@pytest.mark.parametrize(
    "section, override, message",
    [
        ("inversion", {"steps": -5}, r"steps must be a whole number >= 1; got -5"),
        ("inversion", {"batch_size": 0}, r"batch_size must be a whole number >= 2; got 0"),
        ("inversion", {"oversample": 0}, r"oversample must be a whole number >= 1; got 0"),
        ("inversion", {"lr": 0}, r"lr must be a number > 0; got 0"),
        ("inversion", {"lr": float("nan")}, r"lr must be a number > 0; got nan"),
        ("inversion", {"warmup": 1.5}, r"warmup must be a number >= 0 and <= 1; got 1.5"),
        (
            "inversion",
            {"weights": {"tv": -1}},
            r"weights must be a dict of loss weights, each a number >= 0",
        ),
        (
            "inversion",
            {"conditioning": "hot"},
            r"conditioning must be one of label, vector, matrix, vector_matrix",
        ),
        ("inversion", {"hot": "yes"}, r"hot must be true or false; got 'yes'"),
        ("inversion", {"train_size": 0}, r"train_size must be a whole number >= 1, or null"),
        ("tldr", {"generator_seed": -1}, r"generator_seed must be a whole number >= 0, or null"),
        (
            "train_targets",
            {"archs": ["densenet"]},
            r"archs must be a non-empty list, each one of mlp, cnn, vit, resnet",
        ),
        ("evaluate", {"seeds": []}, r"seeds must be a non-empty list"),
        (
            "evaluate",
            {"methods": ["nope"]},
            r"methods must be a non-empty list, each one of inversion, tldr",
        ),
        ("make_figures", {"rows": 0}, r"rows must be a whole number >= 1"),
        (
            "inversion",
            {"datasets": ["imagenet"]},
            r"datasets must be a non-empty list, each one of mnist",
        ),
        ("inversion", {"device": "tpu"}, r"device must be"),
    ],
)
def test_out_of_range_values_are_refused_with_the_range(section, override, message):
    with pytest.raises(ValueError, match=message):
        config.settings("smoke", section, override)


def test_every_setting_of_every_profile_has_a_rule_and_passes_it():
    for profile in config.profiles():
        for section in config.load_profile(profile):
            if section not in ("common", "description"):
                config.settings(
                    profile, section
                )  # raises if a key lacks a rule or a value breaks one


def test_a_bad_value_is_refused_before_any_training(runs, monkeypatch):
    monkeypatch.setattr(
        inversion, "train_generator", lambda *a, **k: pytest.fail("trained before checking")
    )
    monkeypatch.setattr(
        targets, "train_classifier", lambda *a, **k: pytest.fail("trained before checking")
    )
    with pytest.raises(ValueError, match="oversample must be"):
        method_run("smoke", "tldr", "digits", {"oversample": 0})


# ---------------------------------------------------------------- 6. unknown method
def test_run_names_the_valid_methods():
    with pytest.raises(ValueError, match="unknown method 'nope'; choose one of inversion, tldr"):
        experiments.run(
            "nope",
            "digits",
            config.settings("smoke", "tldr"),
            config.settings("smoke", "train_targets"),
            config.run_dir("smoke"),
        )


# ---------------------------------------------------------------- 7. full disk, read-only folder
@pytest.mark.parametrize(
    "error",
    [
        SafetensorError(
            "I/O error: No space left on device (os error 28)"
        ),  # what safetensors raises
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),  # what a plain write raises
    ],
)
def test_a_full_disk_names_the_file_and_the_way_out(tmp_path, monkeypatch, error):
    def full(*args, **kwargs):
        Path(args[1]).write_bytes(b"half a file")
        raise error

    monkeypatch.setattr(store, "save_file", full)
    target = tmp_path / "samples" / "x.safetensors"
    with pytest.raises(
        store.StorageError, match=r"could not write .*x.safetensors: .*No space left.*TLDR_RUNS="
    ):
        store.save_tensors(target, {"images": torch.zeros(2)})
    assert list((tmp_path / "samples").iterdir()) == []  # no half-written file


def test_a_read_only_folder_names_the_file_and_the_way_out(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store.tempfile, "mkstemp", refuse)
    with pytest.raises(
        store.StorageError, match=r"could not write .*m.json: Permission denied.*TLDR_RUNS="
    ):
        store.write_json(tmp_path / "m.json", {})


def test_a_run_folder_that_cannot_be_made_names_tldr_runs(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("TLDR_RUNS", str(tmp_path / "file"))
    with pytest.raises(OSError, match=r"cannot create the run folder .*file/smoke.*TLDR_RUNS"):
        config.run_dir("smoke")


# ---------------------------------------------------------------- 8. NaN images
def test_nan_images_are_refused_up_front():
    x = torch.rand(10, 1, 8, 8)
    labels = torch.arange(10)
    bad = x.clone()
    bad[3, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="recon has NaN or infinite pixels in 1 of its 10 images"):
        metrics.leakage_report(bad, labels, x, labels, x, labels)


# ---------------------------------------------------------------- 9. the evaluator: announced,
# trained once
def test_training_a_target_says_what_and_how_long(runs, capsys):
    judge("smoke", "digits", "cnn")
    out = capsys.readouterr().out
    assert re.search(r"training digits/resnet/n=\d+/seed=1 for 15 steps of 32 -> .*targets", out)
    x, y = torch.rand(64, 1, 8, 8), torch.arange(64) % 10
    training.train_classifier(
        targets.build_classifier("mlp", (1, 8, 8)),
        x,
        y,
        25,
        16,
        1e-3,
        0,
        announce=True,
        desc="judge",
    )
    assert "judge: about" in capsys.readouterr().out


def test_two_processes_that_need_one_target_train_it_once(runs, monkeypatch):
    calls = []
    real = training.train_classifier

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(1.0)  # long enough for the other to arrive while this one trains
        return real(*args, **kwargs)

    monkeypatch.setattr(targets, "train_classifier", slow)
    results = [None, None]

    def need(i):
        results[i] = target("smoke", "digits", "mlp", 100, seed=5)[1]

    threads = [threading.Thread(target=need, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results[0] == results[1]


# ---------------------------------------------------------------- 10. bench
def test_a_bench_case_is_repeated_and_timed_in_wall_and_cpu_time(runs):
    row = bench._measure("inversion", "smoke", "cnn", (1, 8, 8), repeats=5, steps=1, threads=1)
    assert len(row["wall"]) == len(row["cpu"]) == 5 and all(v > 0 for v in row["wall"] + row["cpu"])
    assert row["unit"] == "ms/step" and row["threads"] == 1 and row["peak_mib"] > 0
    with pytest.raises(ValueError, match="repeats must be at least 5"):
        bench.run("smoke", repeats=3)


# ---------------------------------------------------------------- 11. make help
def test_make_help_names_the_variables():
    out = subprocess.run(
        ["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "PROFILE=smoke|cpu|paper" in out and "DATASETS=" in out


def test_bench_spreads_a_generators_training_over_its_images():
    row = lambda ms: {"cpu_ms": {"median": ms}}  # noqa: E731
    cost = bench.per_image_costs(
        "cpu",
        {
            "inversion": row(100.0),
            "tldr": row(200.0),
            "sampling": row(1.0),
            "deepinversion": row(50.0),
        },
    )
    # cpu profile: generators 800 steps, oversample 2; deepinversion optimises a batch of 100 images
    di_steps = edge.attack_settings("cpu", "deepinversion")["steps"]
    assert cost["deepinversion"] == pytest.approx(di_steps * 50 / 100)
    assert cost["tldr_at_1000"] == pytest.approx(800 * 200 / 1000 + 2 * 1.0)
    assert cost["deepinversion_over_inversion_at_10000"] == pytest.approx(
        di_steps * 50 / 100 / (800 * 100 / 10000 + 2)
    )
