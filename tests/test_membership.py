"""The membership reference: its rates, and that it fires on a memorising model and not on
images that were never trained on."""

import numpy as np
import pytest
import torch

from tldr_utils import data, membership, training
from tldr_utils.models import build_classifier


def test_tpr_at_fpr_counts_members_above_the_non_members_quantile():
    nonmembers = np.arange(1000) / 1000  # 0.000 .. 0.999
    members = np.array([0.995, 0.9995, 0.5, 2.0])
    assert membership.tpr_at_fpr(members, nonmembers, 0.01) == 0.75  # above 0.99: all but 0.5
    assert membership.tpr_at_fpr(members, nonmembers, 0.001) == 0.5  # above 0.999: 0.9995 and 2.0


def test_summary_intervals_hold_their_values_and_chance_sits_at_half():
    rng = np.random.default_rng(0)
    same = membership.summary(rng.normal(size=300), rng.normal(size=300), resamples=200)
    assert same["auc_lo"] <= 0.5 <= same["auc_hi"]
    apart = membership.summary(rng.normal(3, 1, 300), rng.normal(size=300), resamples=200)
    for m in ("auc", "tpr_at_0.01_fpr", "tpr_at_0.001_fpr"):
        assert apart[f"{m}_lo"] <= apart[m] <= apart[f"{m}_hi"]
    assert apart["auc"] > 0.95 and apart["tpr_at_0.01_fpr"] > 0.3
    with pytest.raises(ValueError, match="at least 2 members"):
        membership.summary([1.0], [0.0, 1.0])


@pytest.fixture(scope="module")
def memorised():
    """An MLP trained long on three 8 x 8 digits per class, the held-out images it never saw, and
    the attacker's own images (the rest of the training split)."""
    train, test = data.load_dataset("digits", "train"), data.load_dataset("digits", "test")
    idx = data.stratified_subset(train.labels, 30, 0)
    rest = torch.ones(len(train), dtype=torch.bool)
    rest[idx] = False
    x, y = train.float()[idx], train.labels[idx]
    torch.manual_seed(0)
    net = build_classifier("mlp", (1, 8, 8))
    training.train_classifier(net, x, y, 400, 30, 0.003, seed=0, weight_decay=0.0)
    return (
        net.eval(),
        (x, y),
        (test.float(), test.labels),
        (train.float()[rest], train.labels[rest]),
    )


def test_the_reference_fires_on_a_memorising_model_and_not_on_unseen_images(memorised):
    net, members, heldout, shadow = memorised
    loss = membership.loss_attack(net, members, heldout, resamples=200)
    assert loss["auc"] > 0.7 and loss["auc_lo"] > 0.5
    half = len(heldout[0]) // 2
    fake = heldout[0][:half], heldout[1][:half]  # real held-out images standing in for members
    rest = heldout[0][half:], heldout[1][half:]
    null = membership.loss_attack(net, fake, rest, resamples=200)
    assert null["auc_lo"] < 0.5 < null["auc_hi"] or abs(null["auc"] - 0.5) < 0.1

    def model_fn():
        return build_classifier("mlp", (1, 8, 8))

    lira = membership.lira_offline(
        net,
        model_fn,
        members,
        heldout,
        shadow,
        shadows=4,
        recipe={"steps": 150, "batch_size": 30, "lr": 0.003},
        resamples=200,
    )
    assert lira["auc"] > 0.7 and lira["tpr_at_0.01_fpr"] > 0.01
    assert lira["shadows"] == 4 and lira["steps"] == 150
