"""Any classifier in, reconstructions and a verdict out: the attack interface and
``tldr_utils.audit``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tldr_utils
from tldr_utils import attacks, data, edge, metrics, quality, targets, training
from tldr_utils.attacks import optimisation


class LeNet(nn.Module):
    """A LeNet-5-style model without batch norm and without features()/head: one the library never
    saw."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, 10),
        )

    def forward(self, x):
        return self.fc(self.conv(x))


@pytest.fixture(scope="module")
def fashion():
    train, test = (
        data.load_dataset("fashion_mnist", "train"),
        data.load_dataset("fashion_mnist", "test"),
    )
    idx, held = (
        data.stratified_subset(train.labels, 500, 0),
        data.heldout_indices(test.labels, 10, 0),
    )
    return (train.float()[idx], train.labels[idx]), (test.float()[held], test.labels[held])


@pytest.fixture(scope="module")
def lenet(fashion):
    torch.manual_seed(0)
    model = LeNet()
    training.train_classifier(model, *fashion[0], steps=150, batch_size=64, lr=2e-3, seed=0)
    return model.eval()


def test_a_model_the_library_never_saw_is_audited_in_a_few_lines(
    fashion, lenet, tmp_path, monkeypatch
):
    monkeypatch.setenv("TLDR_RUNS", str(tmp_path / "runs"))
    train, heldout = fashion
    with pytest.warns(UserWarning, match="'bn' term is skipped: the model has no batch-norm layer"):
        # the user's whole audit, once the model is trained:
        report = tldr_utils.audit(
            lenet,
            train=train,
            heldout=heldout,
            settings=edge.audit_settings("smoke"),
            folder=tmp_path / "runs",
        )
        written = report.save(tmp_path / "audit")
    assert set(report.table.method) == set(attacks.for_classes(10)) | {
        "control_heldout",
        "control_noise",
    }
    assert not report.failed and set(report.samples) == set(attacks.for_classes(10))
    for name in (
        "inversion",
        "tldr",
        "deepinversion",
        "bn_classwise",
    ):  # every attack with a batch-norm prior
        assert (
            report.value(name, "skipped_bn") == 1.0
            and "Skipped on this model: bn" in report.verdict
        )
    for _name, (images, labels) in report.samples.items():
        assert images.shape == (40, 1, 28, 28) and torch.equal(
            labels, torch.arange(10).repeat_interleave(4)
        )
    print(report.verdict)
    starts = [line.split(":")[0] for line in report.verdict.splitlines()]
    assert starts == attacks.for_classes(10) + [
        "control_heldout (real images the model never saw, in place of reconstructions)"
    ]
    assert {p.name for p in written} >= {"audit.csv", "verdict.txt"} | {
        f"{n}.png" for n in attacks.for_classes(10)
    }
    auc = report.table.query("method == 'control_heldout' and metric == 'membership_auc'").iloc[0]
    assert auc["lo"] <= auc["value"] <= auc["hi"]
    # real held-out images are recognised and realistic; noise is neither
    assert report.value("control_heldout", "precision") > report.value("control_noise", "precision")


def test_settings_are_checked_before_any_work(lenet):
    with pytest.raises(
        ValueError, match=r"unknown setting\(s\) 'stepz' for attack 'miface'; valid: lr, steps, tv"
    ):
        attacks.reconstruct("miface", lenet, (1, 28, 28), 10, 2, {"stepz": 3})
    with pytest.raises(
        ValueError, match=r"steps must be a whole number >= 1; got 0 \(attack 'deepinversion'\)"
    ):
        attacks.reconstruct("deepinversion", lenet, (1, 28, 28), 10, 2, {"steps": 0})
    with pytest.raises(
        ValueError, match="unknown attack 'haim'; choose one of inversion, tldr, deepinversion"
    ):
        attacks.reconstruct("haim", lenet, (1, 28, 28), 10, 2)
    with pytest.raises(
        ValueError,
        match="'kkt' applies only to classifiers of 2 classes, got num_classes=10; "
        "attacks for 10 classes: inversion, tldr, deepinversion, bn_classwise, miface",
    ):
        attacks.reconstruct("kkt", lenet, (1, 28, 28), 10, 2)
    with pytest.raises(
        ValueError,
        match="feature_layer 'penultimate' is not a layer of the model; its layers: conv",
    ):
        attacks.reconstruct("inversion", lenet, (1, 28, 28), 10, 2, feature_layer="penultimate")
    with pytest.raises(ValueError, match="needs class_stats"):
        attacks.reconstruct("bn_classwise", lenet, (1, 28, 28), 10, 2)


def test_an_attack_leaves_the_model_as_it_came(lenet):
    lenet.train()
    lenet.fc[-1].bias.requires_grad_(False)
    try:
        r = attacks.reconstruct("miface", lenet, (1, 28, 28), 10, 1, {"steps": 3})
        assert (
            lenet.training
            and not lenet.fc[-1].bias.requires_grad
            and lenet.fc[1].weight.requires_grad
        )
        assert r.cost["steps"] == 3 and r.cost["cpu_seconds"] > 0 and r.cost["wall_seconds"] > 0
    finally:
        lenet.eval()
        lenet.fc[-1].bias.requires_grad_(True)


def test_features_come_from_a_hook_on_the_last_linear_or_a_named_layer(lenet):
    from tldr_utils.hooks import Features, feature_input

    x = torch.rand(3, 1, 28, 28)
    with Features(feature_input(lenet)) as f:
        lenet(x)
    assert f.value.shape == (3, 84)
    with Features(feature_input(lenet, "fc.1")) as f:
        lenet(x)
    assert f.value.shape == (3, 400)


def test_miface_moves_every_class_from_its_start(lenet):
    r = attacks.reconstruct("miface", lenet, (1, 28, 28), 10, 2, {"steps": 40}, seed=0)
    start = (
        0.5 + 0.05 * torch.randn(20, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    ).clamp(0, 1)
    moved = (r.images - start).abs().flatten(1).mean(1)
    assert (moved > 0.02).all(), moved
    assert training.accuracy(lenet, r.images, r.labels) > 0.5


def test_deepinversion_matches_the_stored_statistics_better_with_its_term():
    torch.manual_seed(0)
    net = targets.build_classifier("cnn", (1, 8, 8))
    digits = data.load_dataset("digits", "train")
    training.train_classifier(net, digits.float(), digits.labels, 60, 64, 2e-3, 0)
    net.eval()
    running = [
        (m.running_mean, m.running_var) for m in net.modules() if isinstance(m, nn.BatchNorm2d)
    ][:1]

    def first_layer_gap(weight):
        r = attacks.reconstruct("deepinversion", net, (1, 8, 8), 10, 5, {"steps": 60, "bn": weight})
        from tldr_utils.hooks import BatchNormInputs

        with BatchNormInputs(net) as bn, torch.no_grad():
            net(r.images)
        return optimisation.stats_distance(bn.inputs[:1], running, 1.0).item()

    assert first_layer_gap(1.0) < 0.7 * first_layer_gap(0.0)


def test_class_statistics_are_each_class_s_own_over_all_its_batches():
    from tldr_utils.hooks import BatchNormInputs

    torch.manual_seed(0)
    net = targets.build_classifier("cnn", (1, 8, 8)).eval()
    digits = data.load_dataset("digits", "train")
    stats = optimisation.class_statistics(
        net, digits.float(), digits.labels, batch_size=50
    )  # several batches
    assert sorted(stats) == list(range(10))
    ones = digits.float()[digits.labels == 1]
    with BatchNormInputs(net) as bn, torch.no_grad():
        net(ones)  # one pass over every image of the class
    first = bn.inputs[0][1]
    assert torch.allclose(stats[1][0][0], first.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(stats[1][0][1], first.var((0, 2, 3), unbiased=False), atol=1e-4)
    assert not torch.allclose(stats[0][0][0], stats[1][0][0])


def test_realism_tells_realistic_from_collapsed_and_far_samples():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(2).repeat_interleave(200)
    real = torch.randn(400, 4, generator=gen) + 5 * labels[:, None]
    alike = quality.realism(
        real, labels, torch.randn(400, 4, generator=gen) + 5 * labels[:, None], labels
    )
    assert min(alike["precision"], alike["recall"], alike["coverage"]) > 0.8 and alike["fid"] < 0.5
    collapsed = quality.realism(
        real, labels, 0.1 * torch.randn(400, 4, generator=gen) + 5 * labels[:, None], labels
    )
    assert (
        collapsed["precision"] > 0.9 and collapsed["recall"] < 0.5 and collapsed["coverage"] < 0.5
    )
    assert collapsed["fid"] > alike["fid"]
    far = quality.realism(real, labels, torch.randn(400, 4, generator=gen) + 20, labels)
    assert far["precision"] == far["recall"] == far["density"] == far["coverage"] == 0.0
    assert far["fid"] > 100
    assert (
        alike["realism_k"] == 5
        and quality.realism(real[:204], labels[:204], real, labels)["realism_k"] == 2
    )
    with pytest.raises(ValueError, match="class 1 has 2 real"):
        quality.realism(real[:202], labels[:202], real, labels)


def test_paired_leakage_tells_copies_from_fresh_images():
    digits = data.load_dataset("digits", "train")
    x, y = digits.float(), digits.labels
    idx = data.stratified_subset(y, 200, 0)
    held = data.heldout_indices(y, 20, 1, exclude=idx)
    copies = metrics.paired_leakage(
        x[idx][:100], y[idx][:100], x[idx], y[idx], x[held], y[held], resamples=200
    )
    assert copies["l2_diff_hi"] < 0 and copies["membership_auc_lo"] > 0.5
    fresh = data.heldout_indices(y, 10, 2, exclude=torch.cat([idx, held]))
    none = metrics.paired_leakage(
        x[fresh], y[fresh], x[idx], y[idx], x[held], y[held], resamples=200
    )
    assert (
        none["l2_diff_lo"] < 0 < none["l2_diff_hi"]
        and none["membership_auc_lo"] < 0.5 < none["membership_auc_hi"]
    )
