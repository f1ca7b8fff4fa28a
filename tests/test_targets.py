import pytest
import torch
from helpers import judge, method_run, target

from tldr_utils import config, experiments, inversion, sampling, store, targets, training


@pytest.fixture()
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TLDR_RUNS", str(tmp_path))
    return tmp_path / "smoke"


def test_targets_are_trained_once_then_loaded_from_safetensors(runs):
    net, meta = target("smoke", "digits", "mlp", 100, seed=0)
    files = list((runs / "targets").glob("digits_mlp_n100_s0_*.safetensors"))
    assert len(files) == 1
    assert meta["n_train"] == 100 and 0 <= meta["test_accuracy"] <= 1
    assert meta["data"]["source"].startswith("scikit-learn")
    again, meta2 = target("smoke", "digits", "mlp", 100, seed=0)
    assert meta2 == meta
    assert all(
        torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values())
    )


def test_same_seed_same_target_in_a_fresh_run(tmp_path, monkeypatch):
    weights = []
    for run in ("a", "b"):
        monkeypatch.setenv("TLDR_RUNS", str(tmp_path / run))
        net, meta = target("smoke", "digits", "cnn", 100, seed=3)
        weights.append((net.state_dict(), meta["test_accuracy"]))
    assert weights[0][1] == weights[1][1]
    assert all(torch.equal(a, b) for a, b in zip(weights[0][0].values(), weights[1][0].values()))


def test_training_beats_the_untrained_control(runs):
    _, trained = target("smoke", "digits", "mlp", None, seed=0)
    _, untrained = target("smoke", "digits", "mlp", None, seed=0, trained=False)
    assert untrained["steps"] == 0
    assert trained["test_accuracy"] > untrained["test_accuracy"] + 0.2


def test_evaluator_is_another_architecture_and_seed():
    recipe = config.settings("cpu", "train_targets")
    assert targets.evaluator_arch(recipe, "cnn") == "resnet"
    assert targets.evaluator_arch(recipe, "resnet") != "resnet"
    judge = targets.evaluator_spec(recipe, "mnist", "cnn")
    assert judge["seed"] == recipe["eval_seed"] != 0 and judge["train_size"] is None


def test_random_shift_moves_each_image_by_its_own_offset_within_bounds():
    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0  # one bright pixel in the centre
    moved = training.random_shift(x, 2, torch.Generator().manual_seed(0))
    assert moved.shape == x.shape and torch.equal(
        moved.sum((1, 2, 3)), x.sum((1, 2, 3))
    )  # zero fill, nothing lost
    where = moved[:, 0].flatten(1).argmax(1)
    rows, cols = where // 9, where % 9
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # per image, not one move for the batch
    assert torch.equal(training.random_shift(x, 0), x)


def test_evaluator_is_trained_with_its_own_steps_and_shifts(runs):
    _, meta = judge("smoke", "digits", "cnn")
    cfg = config.settings("smoke", "train_targets")
    assert (meta["arch"], meta["seed"], meta["steps"], meta["shift"]) == (
        "resnet",
        cfg.eval_seed,
        cfg.eval_steps,
        cfg.eval_shift,
    )
    _, plain = target("smoke", "digits", "resnet", None, cfg.eval_seed)
    assert "shift" not in plain  # unaugmented targets keep their settings and cache names
    assert len(list((runs / "targets").glob("digits_resnet_nall_s1_*.safetensors"))) == 2


def test_shift_augmentation_changes_training():
    x, y = torch.rand(32, 1, 8, 8), torch.arange(32) % 10
    trained = []
    for shift in (0, 2):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        training.train_classifier(net, x, y, 5, 8, 0.1, 0, shift=shift)
        trained.append(net[1].weight.detach().clone())
    assert not torch.allclose(*trained)


def test_unbalanced_training_size_is_refused(runs):
    with pytest.raises(ValueError, match="size 105 must be a positive multiple of the 10 classes"):
        target("smoke", "digits", "mlp", 105)


def test_nan_loss_stops_training_with_the_fix():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 10))
    x, y = torch.full((8, 1, 2, 2), float("nan")), torch.zeros(8, dtype=torch.long)
    with pytest.raises(FloatingPointError, match="lower lr"):
        training.train_classifier(net, x, y, 3, 4, 0.1, 0)


def test_generator_run_on_rgb_images_with_every_tldr_term():
    torch.manual_seed(0)
    net = targets.build_classifier("cnn", (3, 32, 32)).eval()
    weights = {t: 1.0 for t in inversion.TERMS}
    G, history = inversion.train_generator(
        net, (3, 32, 32), 10, weights, hot=True, steps=2, batch_size=8, shift=2
    )
    images, labels = sampling.sample(G, 2, hot=True)
    assert images.shape == (20, 3, 32, 32) and set(history[-1]) == set(inversion.TERMS) | {"total"}


def test_cached_generator_run_records_scores(runs, monkeypatch):
    result = method_run("smoke", "tldr", "digits", {"train_size": 100, "samples_per_class": 2})
    assert result["images"].shape == (20, 1, 8, 8)
    assert {(r["method"], r["metric"]) for r in result["rows"]} == {
        ("tldr", "target_accuracy"),
        ("tldr", "evaluator_accuracy"),
        ("tldr", "within_class_ssim"),
        ("tldr", "evaluator_accuracy_unselected"),
        ("tldr", "within_class_ssim_unselected"),  # oversample 2
        ("real_test", "within_class_ssim"),
        ("tldr", "evaluator_accuracy_of_class"),
        ("real_test", "evaluator_accuracy_of_class"),
        ("real_test", "evaluator_accuracy"),
        # the reference row's realism; two samples of a class are too few for the samples' own
        *(("real_test", m) for m in ("precision", "recall", "density", "coverage", "fid")),
        *(
            ("tldr", m)
            for m in (
                "utility_real",
                "utility_hard",
                "utility_hard_ratio",
                "utility_distilled",
                "utility_distilled_ratio",
            )
        ),
    }
    scores, by_class = result["scores"], result["evaluator_accuracy_by_class"]
    assert scores["utility_hard_ratio"] == pytest.approx(
        scores["utility_hard"] / scores["utility_real"]
    )
    assert 0 <= scores["utility_distilled"] <= 1
    # a rerun takes the utility from its cache instead of training its classifiers again
    with monkeypatch.context() as m:
        m.setattr(experiments, "_utility", lambda *a: pytest.fail("utility trained again"))
        again = method_run(
            "smoke", "tldr", "digits", {"train_size": 100, "samples_per_class": 2}, save=False
        )
    assert (
        "generator" not in again["reconstruction"].extra
    )  # loaded from the cache: images, not the network
    assert (
        again["scores"]["utility_distilled"] == scores["utility_distilled"]
    )  # its generator, from its own cache
    assert sum(by_class["samples"]) / 10 == pytest.approx(scores["evaluator_accuracy"])
    per_class = {(r["method"], r["class"]): r["value"] for r in result["rows"] if "class" in r}
    assert [per_class[("tldr", c)] for c in result["classes"]] == by_class["samples"]
    assert [per_class[("real_test", c)] for c in result["classes"]] == by_class["real"]
    assert len(by_class["real"]) == 10 and all(0 <= v <= 1 for v in by_class["real"])
    assert 0 < scores["within_class_ssim"] <= 1 and 0 < scores["real_within_class_ssim"] < 1
    saved = result[
        "samples_path"
    ]  # not the profile's own settings: a variant, not the figures' samples
    assert saved.parent == runs / "samples" / "variants" and saved.exists()
    every_draw = method_run(
        "smoke",
        "tldr",
        "digits",
        {"train_size": 100, "samples_per_class": 2, "oversample": 1},
        save=False,
    )
    assert "evaluator_accuracy_unselected" not in every_draw["scores"]
    assert store.load_meta(saved)["oversample"] == 2  # what 05's caption reads
    with pytest.raises(ValueError, match="oversample must be a whole number >= 1.*got 0"):
        method_run("smoke", "tldr", "digits", {"train_size": 100, "oversample": 0}, save=False)
    with pytest.raises(ValueError, match="'stepz'"):
        method_run("smoke", "tldr", "digits", {"stepz": 1})
    with pytest.raises(ValueError, match="unknown method 'mi_face'"):
        experiments.run("mi_face", "digits", config.settings("smoke", "tldr"), {}, runs)
    assert config.run_dir("smoke") == runs


def test_generator_seed_trains_another_generator_against_the_same_target(runs):
    # enough for both seeds to beat chance on 8x8 digits; no utility classifiers, which are cached
    # as targets too
    choice = {"train_size": 100, "steps": 80, "samples_per_class": 2, "utility_images": 0}
    first = method_run("smoke", "inversion", "digits", choice, save=False)
    same = method_run(
        "smoke", "inversion", "digits", {**choice, "generator_seed": 0}, save=False
    )  # = seed
    other = method_run("smoke", "inversion", "digits", {**choice, "generator_seed": 1}, save=False)
    assert first["meta"]["attack_seed"] == 0 and other["meta"]["attack_seed"] == 1
    assert (
        other["meta"]["target_test_accuracy"] == first["meta"]["target_test_accuracy"]
    )  # one target, two attacks
    assert torch.equal(first["images"], same["images"]) and not torch.equal(
        first["images"], other["images"]
    )
    assert (
        len(list((runs / "attacks").glob("inversion_*.safetensors"))) == 2
    )  # seed 0 twice is one cached result
    assert len(list((runs / "targets").glob("digits_cnn_*.safetensors"))) == 1
    for bad in (-1, 1.5, "1"):
        with pytest.raises(
            ValueError, match=f"generator_seed must be a whole number >= 0.*got {bad!r}"
        ):
            method_run("smoke", "inversion", "digits", {**choice, "generator_seed": bad})
