"""What a careless user gives the library's edge, refused before any work with the bad value and
the fix: profile names that are paths, models an attack would fail on, empty sets, a missing
GPU, overrides that are not a mapping, notebook parameters that shadow builtins."""

import json

import pytest
import torch
from torch import nn

import tldr_utils
from tldr_utils import auditing, config, edge, preflight


@pytest.fixture()
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TLDR_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.mark.parametrize("name", ["../profiles/smoke", "/tmp/x", "smoke/../../x", "", None])
def test_a_profile_name_that_is_a_path_is_refused(name, runs):
    for use in (config.load_profile, config.run_dir, lambda n: config.settings(n, "inversion")):
        with pytest.raises(ValueError, match=r"unknown profile .*choose one of cpu, paper, smoke"):
            use(name)
    assert not runs.exists() or not any(runs.rglob("*"))  # nothing written anywhere


def _data(classes=4, per_class=8, side=8):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(classes).repeat(per_class)
    return torch.rand(len(y), 1, side, side, generator=g), y


class Net(nn.Module):
    def __init__(self, outputs=4):
        super().__init__()
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, outputs))

    def forward(self, x):
        return self.fc(x)


class Pair(Net):
    def forward(self, x):
        return self.fc(x), x.flatten(1)


def _audit(model, train=None, heldout=None, **kwargs):
    train = train if train is not None else _data()
    heldout = heldout if heldout is not None else _data()
    return tldr_utils.audit(model, train, heldout, settings={"evaluator_steps": 1}, **kwargs)


def _nan():
    net = Net()
    with torch.no_grad():
        net.fc[1].weight[0, 0] = float("nan")
    return net


def _meta():
    with torch.device("meta"):
        return Net()


@pytest.mark.parametrize(
    "model, message",
    [
        (Net(outputs=3), r"outputs of shape \(1, 3\).*labels name 4 classes.*last layer"),
        (Pair(), r"returns a tuple.*one tensor of logits.*wrap it"),
        (Net().double(), r"'fc.1.weight' is torch.float64.*model.float\(\)"),
        (_nan(), r"'fc.1.weight' holds NaN or infinite values"),
        (_meta(), r"no weights loaded.*'fc.1.weight' is on the meta device.*load_state_dict"),
    ],
)
def test_a_model_an_attack_would_fail_on_is_refused_first(model, message, runs, monkeypatch):
    monkeypatch.setattr(auditing, "train_judge", lambda *a, **k: pytest.fail("trained a judge"))
    with pytest.raises(ValueError, match=message):
        _audit(model)


def test_a_label_beyond_the_models_outputs_names_both(runs):
    x, y = _data()
    y[0] = 15
    with pytest.raises(ValueError, match=r"shape \(1, 4\).*labels name 16 classes \(0 to 15\)"):
        _audit(Net(), train=(x, y))


def test_an_empty_set_is_named(runs):
    x, y = _data()
    with pytest.raises(ValueError, match=r"heldout is empty.*at least one image of every class"):
        _audit(Net(), heldout=(x[:0], y[:0]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_says_so_and_what_works(runs):
    with pytest.raises(ValueError, match=r"'cuda'.*no CUDA device; use 'auto'.*or 'cpu'"):
        _audit(Net(), device="cuda")
    with pytest.raises(ValueError, match=r"no CUDA device"):
        config.device({"device": "cuda:0"})


def test_overrides_that_are_not_a_mapping_show_the_papermill_form():
    with pytest.raises(
        ValueError, match=r"overrides must be a mapping.*-y \"overrides: \{steps: 3\}\""
    ):
        config.settings("smoke", "inversion", "steps: 3")


@pytest.mark.parametrize("name, value", [("open", 1), ("exit", "no"), ("steps", 7)])
def test_every_unknown_notebook_parameter_is_refused(name, value):
    namespace = {"profile": "smoke", "overrides": {}, "json": json, "open": open, name: value}
    with pytest.raises(ValueError, match=rf"unknown notebook parameter\(s\) {name}"):
        edge.setup("inversion", "smoke", {}, namespace=namespace)


def test_an_audit_says_what_it_will_run_and_roughly_how_long(capsys):
    x, _ = _data()
    line = preflight.announce(Net(), x, {"miface": {"steps": 300}, "tldr": {"steps": 100}}, "cpu")
    assert line in capsys.readouterr().out
    assert line.startswith(
        "audit: miface, tldr against a model of 1,108 parameters on images (1, 8, 8)"
    )
    assert "400 attack steps, at least about" in line and line.endswith("minutes on this machine")
