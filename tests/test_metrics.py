import pytest
import torch

from tldr_utils import data, metrics, quality, training


@pytest.fixture(scope="module")
def digits():
    """Three disjoint, class-balanced sets of real 8x8 digits: train, held-out, fresh."""
    d = data.load_dataset("digits", "train")
    gen = torch.Generator().manual_seed(0)
    sets = {name: [] for name in ("train", "heldout", "fresh")}
    for k in range(10):
        idx = (d.labels == k).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        for i, name in enumerate(sets):
            sets[name].append(idx[i * 40 : (i + 1) * 40])
    x = d.float()
    return {name: (x[torch.cat(v)], d.labels[torch.cat(v)]) for name, v in sets.items()}


def report(digits, recon, recon_labels):
    return metrics.leakage_report(recon, recon_labels, *digits["train"], *digits["heldout"])


def test_copies_of_training_images_leak_strongly(digits):
    x, y = digits["train"]
    r = report(digits, (x + 0.01 * torch.randn_like(x)).clamp(0, 1), y)
    assert r["nn_ssim_train"] > 0.95 and r["nn_ssim_gap"] > 0.1
    assert r["nn_l2_gap"] < 0
    assert r["copying_z"] < -8
    assert r["membership_auc"] > 0.95
    assert r["identifiability"] > 0.95


def test_fresh_images_of_the_same_distribution_do_not_leak(digits):
    r = report(digits, *digits["fresh"])
    assert abs(r["nn_ssim_gap"]) < 0.05
    assert abs(r["copying_z"]) < 3
    assert 0.4 < r["membership_auc"] < 0.6
    assert r["identifiability"] < 0.4


def test_noise_does_not_leak_and_sits_far_from_the_training_set(digits):
    _, y = digits["fresh"]
    r = report(digits, torch.rand(len(y), 1, 8, 8, generator=torch.Generator().manual_seed(1)), y)
    assert r["nn_ssim_train"] < 0.3 and abs(r["nn_ssim_gap"]) < 0.05
    assert r["copying_z"] > 8
    assert 0.4 < r["membership_auc"] < 0.6


def test_nearest_ssim_matches_brute_force_when_candidates_cover_the_class(digits):
    q, qy = digits["fresh"][0][:40], digits["fresh"][1][:40]
    ref, ry = digits["train"]
    got = metrics.nearest(q, qy, ref, ry, candidates=40)["ssim"]
    pool = (ry == 0).nonzero().flatten()
    brute = torch.stack(
        [
            quality.ssim_pairs(q[i : i + 1].expand(len(pool), -1, -1, -1), ref[pool]).max()
            for i in range(len(q))
        ]
    )
    assert torch.allclose(got, brute, atol=1e-5)


def test_within_class_ssim_is_one_for_identical_images_and_lower_for_real_ones(digits):
    x, y = digits["train"]
    same = x[y == 3][:1].expand(10, -1, -1, -1)
    assert quality.within_class_ssim(same, torch.full((10,), 3)) == pytest.approx(1.0, abs=1e-5)
    assert quality.within_class_ssim(x, y) < 0.6


def test_bad_inputs_are_named(digits):
    x, y = digits["train"]
    with pytest.raises(ValueError, match=r"recon must be float images.*\[0, 1\]"):
        report(digits, x * 255, y)
    with pytest.raises(ValueError, match="class 3"):
        metrics.leakage_report(x, y, x[y != 3], y[y != 3], *digits["heldout"])


def test_mann_whitney_z_sign():
    assert (
        metrics.mann_whitney_z(torch.arange(50.0).numpy(), torch.arange(50.0, 100.0).numpy()) < -8
    )


def test_distilled_utility_learns_the_teachers_answers_not_the_given_labels(digits):
    """Given labels that are all wrong, a classifier trained on hard labels learns nothing useful;
    distilled from a teacher that knows the digits, it learns them."""
    from tldr_utils.models import build_classifier

    (x, y), (test_x, test_y) = digits["train"], digits["heldout"]
    torch.manual_seed(0)
    teacher = build_classifier("mlp", tuple(x.shape[1:]))
    training.train_classifier(teacher, x, y, 300, 64, 3e-3, seed=0)
    wrong = (y + 1) % 10
    hard = quality.synthetic_utility(x, wrong, test_x, test_y, "mlp", 300, 64, 3e-3)
    distilled = quality.synthetic_utility(
        x, wrong, test_x, test_y, "mlp", 300, 64, 3e-3, teacher=teacher
    )
    assert hard < 0.2 and distilled > 0.7
