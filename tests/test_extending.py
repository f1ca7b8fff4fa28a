"""Extending the library from outside it: this one file defines a dataset and an attack,
registers them, and audits a classifier with them; nothing in tldr_utils is edited."""

import pytest
import torch

import tldr_utils
from tldr_utils import attacks, config, data, rules, training
from tldr_utils.models import build_classifier


# ---------------------------------------------------------------- a dataset: four kinds of bars
def _bars(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """8 x 8 images of class k: a bright bar across rows 2k and 2k + 1, over faint noise."""
    gen = torch.Generator().manual_seed(0 if split == "train" else 1)
    labels = torch.arange(4).repeat(40)
    images = torch.rand(len(labels), 1, 8, 8, generator=gen) * 0.3
    for i, k in enumerate(labels.tolist()):
        images[i, 0, 2 * k : 2 * k + 2] = 1.0
    return (images * 255).round().to(torch.uint8), labels


BARS = data.Dataset(
    "bars",
    classes=("top", "upper", "lower", "bottom"),
    sources=lambda root: [
        data.Source("generated bars", lambda split: [], _bars, "nothing to replace")
    ],
    how_to_get=lambda root: ["it is generated; there is nothing to get"],
)


# ---------------------------------------------------------------- an attack: signed gradient ascent
@attacks.attack(
    "class_ascent",
    defaults={"steps": 20, "lr": 0.05},
    rules={"steps": rules.whole(1), "lr": rules.real(0, low_open=True)},
    about="grey images pushed up their class logit by signed gradient steps",
)
def class_ascent(problem: attacks.Problem, cfg: dict, seed: int):
    labels = torch.arange(problem.num_classes).repeat_interleave(problem.per_class)
    x = torch.full((len(labels), *problem.image_shape), 0.5, device=problem.device)
    for _ in range(cfg["steps"]):
        x.requires_grad_(True)
        score = problem.model(x).gather(1, labels[:, None].to(problem.device)).sum()
        (grad,) = torch.autograd.grad(score, x)
        x = (x + cfg["lr"] * grad.sign()).clamp(0, 1).detach()
    return x, labels, cfg["steps"], {}


@pytest.fixture()
def extended():
    """The library with the two registered, and as it was afterwards."""
    saved = dict(attacks.ATTACKS), dict(data.DATASETS), dict(rules.RULES)
    data.register(BARS)
    attacks.register(class_ascent)
    yield
    for registry, before in zip((attacks.ATTACKS, data.DATASETS, rules.RULES), saved):
        registry.clear()
        registry.update(before)


def test_a_dataset_and_an_attack_from_outside_are_audited(extended, tmp_path):
    train, held = data.load_dataset("bars", "train"), data.load_dataset("bars", "test")
    assert train.classes == BARS.classes and train.source == "generated bars"
    model = build_classifier("mlp", (1, 8, 8), 4)
    training.train_classifier(model, train.float(), train.labels, 60, 32, 0.01, seed=0)
    assert training.accuracy(model, held.float(), held.labels) > 0.9

    settings = {
        "per_class": 4,
        "evaluator_steps": 40,
        "resamples": 100,
        "class_ascent": {"steps": 10},
    }
    report = tldr_utils.audit(
        model,
        (train.float(), train.labels),
        (held.float(), held.labels),
        attacks=["class_ascent"],
        settings=settings,
        folder=tmp_path,
    )
    images, labels = report.samples["class_ascent"]
    assert (
        images.shape == (16, 1, 8, 8) and labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    )
    assert report.value("class_ascent", "target_accuracy") == 1.0  # it climbed each class's logit
    assert report.verdict.startswith("class_ascent: the evaluator recognises")
    # the new names are valid in settings and profiles, and a bad value for the attack is refused
    assert config.settings("smoke", "audit", {"dataset": "bars"}).dataset == "bars"
    with pytest.raises(ValueError, match=r"lr must be a number > 0; got -1"):
        attacks.resolve("class_ascent", {"lr": -1})


def test_registering_twice_or_a_non_record_is_refused(extended):
    with pytest.raises(ValueError, match="'bars' is already registered"):
        data.register(BARS)
    with pytest.raises(ValueError, match="'class_ascent' is already registered"):
        attacks.register(class_ascent)
    with pytest.raises(TypeError, match="Attack records"):
        attacks.register(lambda problem, cfg, seed: None)
