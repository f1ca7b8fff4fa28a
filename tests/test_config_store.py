import json

import pandas as pd
import pytest
import torch

from tldr_utils import config, edge, store
from tldr_utils.models import build_classifier


def test_every_profile_has_every_section_with_the_same_keys():
    names = config.profiles()
    assert {"smoke", "cpu", "paper"} <= set(names)
    reference = config.load_profile("cpu")
    for name in names:
        full = config.load_profile(name)
        for section in reference:
            if isinstance(reference[section], dict):
                assert set(full[section]) == set(reference[section]), (name, section)


def test_smoke_overrides_cpu_but_keeps_the_rest():
    smoke, cpu = config.settings("smoke", "inversion"), config.settings("cpu", "inversion")
    assert smoke.steps < cpu.steps
    assert smoke.weights == cpu.weights and smoke.datasets == cpu.datasets


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"'gpu'.*cpu, paper, smoke"):
        config.settings("gpu", "inversion")


def test_unknown_parameter_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"'stepz'.*valid:.*steps"):
        config.settings("cpu", "inversion", {"stepz": 3})
    with pytest.raises(ValueError, match=r"'sharpness'.*valid: kl, ce"):
        config.settings("cpu", "inversion", {"weights": {"sharpness": 1}})


def test_weight_overrides_change_single_terms():
    cfg = config.settings("cpu", "tldr", {"weights": {"tv": 0}, "steps": 7})
    assert (
        cfg.weights["tv"] == 0
        and cfg.weights["grad_norm"] == config.settings("cpu", "tldr").weights["grad_norm"]
    )
    assert cfg.steps == 7


def test_setup_refuses_stray_notebook_parameters():
    with pytest.raises(ValueError, match="epochs"):
        edge.setup(
            "inversion",
            "smoke",
            {},
            namespace={"profile": "smoke", "overrides": {}, "epochs": 3, "json": json},
        )
    assert (
        edge.setup(
            "inversion", "smoke", {}, namespace={"profile": "smoke", "overrides": {}, "json": json}
        ).steps
        > 0
    )


def test_atomic_path_leaves_nothing_when_the_write_fails(tmp_path):
    target = tmp_path / "a.json"
    store.write_json(target, {"x": 1})
    with pytest.raises(RuntimeError):
        with store.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"x": 1}
    assert list(tmp_path.iterdir()) == [target]


def test_checkpoints_round_trip_and_refuse_a_model_they_do_not_fit(tmp_path):
    net = build_classifier("mlp", (1, 8, 8))
    store.save_model(tmp_path / "m.safetensors", net, {"test_accuracy": 0.5})
    other = build_classifier("mlp", (1, 8, 8))
    assert store.load_model(tmp_path / "m.safetensors", other) == {"test_accuracy": 0.5}
    assert all(
        torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values())
    )
    with pytest.raises(ValueError, match=r"m.safetensors does not fit a CNN.*delete it"):
        store.load_model(tmp_path / "m.safetensors", build_classifier("cnn", (1, 8, 8)))
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.safetensors is unreadable"):
        store.load_model(tmp_path / "bad.safetensors", other)


def test_metrics_table_is_tidy_and_upserts(tmp_path):
    path = tmp_path / "metrics.csv"
    row = {
        "dataset": "mnist",
        "arch": "cnn",
        "method": "tldr",
        "train_size": 1000,
        "seed": 0,
        "metric": "acc",
    }
    store.record_metrics(path, [{**row, "value": 0.1}, {**row, "metric": "ssim", "value": 0.2}])
    table = store.record_metrics(path, [{**row, "value": 0.3}])
    assert list(table.columns[:9]) == store.METRIC_KEYS + ["value"]
    assert set(table.setting) == {"main"} and set(table["class"]) == {
        ""
    }  # the defaults when rows name none
    assert len(table) == 2 and table.query("metric == 'acc'")["value"].item() == 0.3
    assert len(pd.read_csv(path)) == 2
    # per-class rows are rows of their own, and are replaced class by class
    per_class = [
        {**row, "metric": "acc", "class": c, "value": v} for c, v in (("cat", 0.5), ("dog", 0.6))
    ]
    store.record_metrics(path, per_class)
    table = store.record_metrics(path, [{**row, "metric": "acc", "class": "dog", "value": 0.7}])
    assert (
        len(table) == 4 and table.query("metric == 'acc' and `class` == ''")["value"].item() == 0.3
    )
    assert table.query("`class` == 'dog'")["value"].item() == 0.7
    with pytest.raises(ValueError, match="seed"):
        store.record_metrics(path, [{k: v for k, v in row.items() if k != "seed"} | {"value": 1}])
    # settings that name a value of the run: a rerun with other values replaces them all
    store.record_metrics(path, [{**row, "setting": f"strength_{k}", "value": k} for k in (30, 90)])
    table = store.record_metrics(
        path, [{**row, "setting": "strength_60", "value": 60}], replacing="strength_"
    )
    assert sorted(table.setting.unique()) == ["main", "strength_60"] and len(table) == 5


def test_config_hash_is_stable_and_sensitive():
    a = store.config_hash({"lr": 0.1, "steps": 3})
    assert a == store.config_hash({"steps": 3, "lr": 0.1}) and a != store.config_hash(
        {"lr": 0.1, "steps": 4}
    )
