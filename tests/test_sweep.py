"""The sweep runner: the same rows on every backend, failures named, finished cells kept."""

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tldr_utils import sweep

ray = pytest.importorskip(
    "ray", reason="Ray is the optional cluster extra: pip install -e '.[cluster]'"
)


def _cells(folder, bad_lr=None):
    """Two real targets on the digits set and the held-out and noise controls scored against one."""
    target = {
        "dataset": "digits",
        "arch": "mlp",
        "train_size": 100,
        "seed": 0,
        "steps": 20,
        "batch_size": 32,
        "lr": 0.01,
        "shift": 0,
        "device": "cpu",
    }
    judge = {**target, "train_size": None, "seed": 1}
    cells = [
        sweep.Cell("tldr_utils.targets:target_cell", {"folder": str(folder), **t}, cpus=1)
        for t in (target, judge)
    ]
    cells.append(
        sweep.Cell(
            "tldr_utils.cells:controls_cell",
            {"folder": str(folder), "target": target, "judge": judge, "heldout_per_class": 5},
            cpus=1,
        )
    )
    if bad_lr is not None:
        cells.append(
            sweep.Cell(
                "tldr_utils.targets:target_cell",
                {"folder": str(folder), **target, "lr": bad_lr},
                cpus=1,
                label="a target with a huge learning rate",
            )
        )
    return cells


@pytest.fixture
def no_ray():
    yield
    ray.shutdown()


def test_a_cell_pickles_hashes_and_refuses_bad_resources(tmp_path):
    cell = _cells(tmp_path)[0]
    assert pickle.loads(pickle.dumps(cell)) == cell
    assert pickle.loads(pickle.dumps(cell)).key == cell.key
    assert sweep.Cell(cell.task, dict(cell.args)).key == cell.key
    assert sweep.Cell(cell.task, {**cell.args, "seed": 5}).key != cell.key
    with pytest.raises(ValueError, match="gpu must be a fraction"):
        sweep.Cell(cell.task, cell.args, gpu=2)
    with pytest.raises(ValueError, match="package.module:function"):
        sweep.Cell("train", {})
    with pytest.raises(ValueError, match="same"):
        sweep.run([cell, sweep.Cell(cell.task, dict(cell.args))])


def test_every_backend_gives_the_same_rows(tmp_path, no_ray, monkeypatch):
    inline = sweep.rows(sweep.run(_cells(tmp_path / "a"), backend="inline"))
    assert {r["method"] for r in inline} == {"target", "control_heldout", "control_noise"}
    processes = sweep.rows(sweep.run(_cells(tmp_path / "b"), backend="processes", workers=2))
    monkeypatch.setenv("RAY_ADDRESS", "local")
    on_ray = sweep.rows(sweep.run(_cells(tmp_path / "c")))  # RAY_ADDRESS picks Ray
    assert inline == processes == on_ray


def test_a_failed_cell_is_named_and_the_finished_ones_are_kept(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(
        sweep.SweepError, match="a target with a huge learning rate: FloatingPointError"
    ) as err:
        sweep.run(_cells(tmp_path, bad_lr=1e9), cache=cache)
    assert len(err.value.results) == 3 and len(err.value.failed) == 1
    assert len(list(cache.glob("*.safetensors"))) == 3
    # a rerun without the bad cell runs nothing again: every result comes from the cache
    shutil.rmtree(tmp_path / "targets")
    again = sweep.run(_cells(tmp_path), cache=cache)
    assert sweep.rows(again) == [row for r in err.value.results.values() for row in r.rows]
    assert not (tmp_path / "targets").exists()


def test_a_separately_started_head(tmp_path, no_ray, monkeypatch):
    ray_cli = Path(sys.executable).with_name("ray")
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    started = subprocess.run(
        [
            str(ray_cli),
            "start",
            "--head",
            "--port=6390",
            "--num-cpus=2",
            "--disable-usage-stats",
            "--include-dashboard=false",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6390")
        rows = sweep.rows(sweep.run(_cells(tmp_path / "head")))
        assert rows == sweep.rows(sweep.run(_cells(tmp_path / "here"), backend="inline"))
    finally:
        ray.shutdown()
        subprocess.run([str(ray_cli), "stop", "--force"], capture_output=True, timeout=120)


def test_backend_from_the_environment(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("TLDR_WORKERS", "2")
    assert sweep.backend_from_env() == ("processes", 2)
    monkeypatch.setenv("TLDR_WORKERS", "two")
    with pytest.raises(ValueError, match="TLDR_WORKERS must be a whole number"):
        sweep.backend_from_env()
    monkeypatch.delenv("TLDR_WORKERS")
    assert sweep.backend_from_env() == ("inline", 1)
    assert (
        sweep.Cell("m:f").cpus == torch.get_num_threads()
    )  # one cell at a time: the threads it has
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert sweep.Cell("m:f").cpus == 1
    monkeypatch.setenv("TLDR_GPU_PER_CELL", "0.25")
    assert sweep.Cell("m:f").gpu == 0.25
    monkeypatch.setenv("TLDR_GPU_PER_CELL", "half")
    with pytest.raises(ValueError, match="TLDR_GPU_PER_CELL must be a fraction"):
        sweep.Cell("m:f")
    with pytest.raises(ValueError, match="unknown backend 'spark'"):
        sweep.run([], backend="spark")


def test_the_bench_sets_the_backends_side_by_side():
    from tldr_utils import bench

    side = bench.sweep_side_by_side("smoke", k=2, steps=2)
    for backend in ("inline", "processes"):
        assert side[backend]["wall_seconds"] > 0 and side[backend]["cpu_seconds"] > 0
        assert side[backend]["steps_per_second"] == pytest.approx(4 / side[backend]["wall_seconds"])
    assert side["processes"]["threads_per_cell"] == 1
    assert side["inline_over_processes"] == pytest.approx(
        side["inline"]["wall_seconds"] / side["processes"]["wall_seconds"]
    )
