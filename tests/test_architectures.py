import pandas as pd
import pytest
import torch

from tldr_utils import architectures, training
from tldr_utils.models import build_classifier


def _toy(n=120, seed=0):
    """Two classes of 8x8 images that differ in which half is bright: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.3
    x[y == 0, :, :4] += 0.6
    x[y == 1, :, 4:] += 0.6
    return x.clamp(0, 1), y


def test_stop_ends_training_where_asked():
    x, y = _toy()
    net = build_classifier("mlp", (1, 8, 8), 2)
    asked = []
    losses = training.train_classifier(
        net,
        x,
        y,
        steps=50,
        batch_size=16,
        lr=0.01,
        seed=0,
        stop=lambda step: asked.append(step) or step == 7,
    )
    assert len(losses) == 7 and asked == list(range(1, 8))
    assert net.training  # left as training leaves it


def test_train_matched_keeps_checkpoints_near_one_level():
    x, y = _toy()
    xv, yv = _toy(60, seed=1)
    out = architectures.train_matched(
        ["vit", "mlp", "cnn"],
        x,
        y,
        xv,
        yv,
        steps=60,
        batch_size=16,
        lr=0.003,
        check_every=5,
        num_classes=2,
        seed=0,
    )
    levels = {meta["level"] for _, meta in out.values()}
    assert len(levels) == 1
    level = levels.pop()
    # the level is the best accuracy the weakest architecture reached
    assert level == pytest.approx(
        min(max(a for _, a in meta["checks"]) for _, meta in out.values())
    )
    for _arch, (net, meta) in out.items():
        # the returned network is the chosen checkpoint, and that checkpoint is the one nearest the
        # level
        assert training.accuracy(net, xv, yv) == pytest.approx(meta["validation_accuracy"])
        assert meta["validation_accuracy"] == pytest.approx(
            min((a for _, a in meta["checks"]), key=lambda a: abs(a - level))
        )
        every = [1, 2, 3, 4, 5] + list(range(10, meta["steps_trained"] + 1, 5))
        assert [s for s, _ in meta["checks"]] == every[: len(meta["checks"])]
        assert meta["checks"][-1][0] == meta["steps_trained"]
        # an architecture stops early only once it has passed the level reached before it
        last = meta["checks"][-1][1]
        assert meta["steps_trained"] == 60 or last >= level


def test_train_matched_refuses_bad_settings():
    x, y = _toy(20)
    with pytest.raises(ValueError, match="check_every"):
        architectures.train_matched(
            ["mlp"], x, y, x, y, steps=10, batch_size=4, lr=0.01, check_every=11, num_classes=2
        )
    with pytest.raises(ValueError, match="distinct"):
        architectures.train_matched(
            ["mlp", "mlp"],
            x,
            y,
            x,
            y,
            steps=10,
            batch_size=4,
            lr=0.01,
            check_every=5,
            num_classes=2,
        )


def test_get_matched_caches(tmp_path):
    x, y = _toy(40)
    settings = dict(steps=10, batch_size=8, lr=0.01, check_every=5, num_classes=2, seed=0)
    first = architectures.get_matched(tmp_path, ["mlp", "cnn"], x, y, x, y, **settings)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    again = architectures.get_matched(tmp_path, ["mlp", "cnn"], x, y, x, y, **settings)
    for arch in ("mlp", "cnn"):
        assert torch.equal(first[arch][0](x), again[arch][0](x))
        assert again[arch][1]["step"] == first[arch][1]["step"]


def test_compare_finds_a_consistent_difference_and_not_noise():
    g = torch.Generator().manual_seed(0)
    rows = []
    for seed in range(8):
        for arch, shift in (("mlp", 0.3), ("cnn", 0.0), ("vit", 0.0)):
            noise = torch.rand(1, generator=g).item() * 0.05
            rows.append({"seed": seed, "arch": arch, "metric": "m", "value": shift + noise})
    out = architectures.compare(pd.DataFrame(rows), "m", ["seed"])
    assert out["blocks"] == 8 and out["friedman_p"] < 0.01
    assert out["pairs"]["cnn-mlp"]["p"] < 0.05 and out["pairs"]["cnn-mlp"]["wins"] == 0
    assert out["pairs"]["cnn-vit"]["p"] > 0.05  # equal up to noise
    with pytest.raises(ValueError, match="at least 2 blocks"):
        architectures.compare(pd.DataFrame(rows[:3]), "m", ["seed"])


def test_answers_name_the_order_and_the_test_for_each_question_measured():
    rows = []
    for seed in range(6):
        for attack in ("tldr", "miface"):
            for arch, acc in (("cnn", 0.8), ("mlp", 0.6), ("vit", 0.3)):
                key = {
                    "dataset": "d",
                    "train_size": "1000",
                    "seed": seed,
                    "method": attack,
                    "arch": arch,
                }
                rows += [
                    {**key, "metric": "evaluator_accuracy", "value": acc + 0.01 * seed},
                    {
                        **key,
                        "metric": "membership_auc",
                        "value": 0.5 + 0.001 * ((seed + len(attack)) % 3),
                    },
                ]
    rows.append(
        {
            "dataset": "d",
            "train_size": "1000",
            "seed": 0,
            "method": "split_optimisation_first",
            "arch": "cnn",
            "metric": "evaluator_accuracy",
            "value": 0.0,
        }
    )  # not a weight attack: left out
    said = architectures.answers(pd.DataFrame(rows), ["tldr", "miface"])
    assert len(said) == 2  # the questions whose metric was measured
    assert (
        said[0].startswith("most recognisable")
        and "cnn (0.825) > mlp (0.625) > vit (0.325)" in said[0]
    )
    assert "the architectures differ (Friedman p = " in said[0] and "over 12 blocks" in said[0]
    assert said[1].startswith("leak of the training set (membership AUC")


def test_compare_says_no_difference_when_every_block_is_tied():
    rows = [
        {"seed": seed, "arch": arch, "metric": "m", "value": 0.5}
        for seed in range(4)
        for arch in ("a", "b", "c")
    ]
    out = architectures.compare(pd.DataFrame(rows), "m", ["seed"])
    assert out["friedman_p"] == 1.0 and all(pair["p"] == 1.0 for pair in out["pairs"].values())
