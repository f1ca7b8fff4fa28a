import pandas as pd
import pytest
import torch

from tldr_utils import regime


def test_the_seeds_training_sets_are_disjoint_and_balanced():
    labels = torch.arange(10).repeat(30)
    sets = regime.disjoint_sets(labels, 3, [0, 1, 2])
    seen = torch.cat(list(sets.values()))
    assert len(seen) == len(set(seen.tolist())) == 90
    for idx in sets.values():
        assert torch.equal(torch.bincount(labels[idx], minlength=10), torch.full((10,), 3))


def _frame(attack, nulls):
    """A long table of one cell: per seed, the attack's value and its stand-ins' values."""
    rows = []
    for seed, (a, ns) in enumerate(zip(attack, nulls)):
        rows.append(
            {
                "dataset": "mnist",
                "arch": "mlp",
                "regime": "plain",
                "per_class": 1,
                "attack": "miface",
                "metric": "membership_auc",
                "seed": seed,
                "source": "attack",
                "draw": 0,
                "value": a,
            }
        )
        rows += [
            {
                "dataset": "mnist",
                "arch": "mlp",
                "regime": "plain",
                "per_class": 1,
                "attack": "miface",
                "metric": "membership_auc",
                "seed": seed,
                "source": "heldout",
                "draw": d,
                "value": v,
            }
            for d, v in enumerate(ns)
        ]
    return pd.DataFrame(rows)


def test_an_attack_is_outside_the_band_only_when_every_seed_beats_its_own_stand_ins():
    inside = regime.band(_frame([0.9, 0.9, 0.55], [[0.5, 0.6]] * 3)).iloc[0]
    assert not inside.outside and inside.value == pytest.approx(0.7833, abs=1e-3)
    assert (inside.null_lo, inside.null_hi) == (0.5, 0.6)
    # a seed's own band counts: 0.7 beats its seed's 0.65 though another seed's stand-in reached 0.8
    outside = regime.band(_frame([0.9, 0.7, 0.85], [[0.5, 0.8], [0.6, 0.65], [0.5, 0.6]])).iloc[0]
    assert outside.outside and outside.null_hi == 0.8
    lines = regime.answers(
        regime.band(_frame([0.9, 0.7, 0.85], [[0.5, 0.8], [0.6, 0.65], [0.5, 0.6]]))
    )
    assert "miface membership_auc 0.817" in lines[0] and "up to 1 images per class" in lines[-1]
    assert (
        "inside the null band"
        in regime.answers(regime.band(_frame([0.5] * 3, [[0.5, 0.6]] * 3)))[0]
    )


def test_a_target_memorises_its_images_and_is_cached(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(10, 1, 8, 8, generator=g), torch.arange(10)
    net, meta = regime.get_target(
        tmp_path, "mlp", "plain", x, y, steps=60, batch_size=64, lr=0.01, seed=0
    )
    assert meta["train_accuracy"] == 1.0 and meta["images"] == 10
    again, meta2 = regime.get_target(
        tmp_path, "mlp", "plain", x, y, steps=60, batch_size=64, lr=0.01, seed=0
    )
    assert torch.equal(net(x), again(x)) and meta2["train_accuracy"] == 1.0
    with pytest.raises(
        ValueError, match="unknown regime 'dropout'; choose one of plain, weight_decay, augment"
    ):
        regime.get_target(tmp_path, "mlp", "dropout", x, y, steps=1, batch_size=4, lr=0.01, seed=0)


def test_the_control_network_is_cached_under_its_data(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 1, 8, 8, generator=g), torch.tensor([0, 0, 1, 1])
    settings = {
        "hidden": [16],
        "init_scale": 0.1,
        "weight_decay": 0.01,
        "steps": 200,
        "lr": 0.5,
        "seed": 0,
    }
    net, meta = regime.get_control(tmp_path, x, y, **settings)
    assert meta["train_accuracy"] == 1.0 and torch.allclose(net.centre, x.mean(0, keepdim=True))
    again, _ = regime.get_control(tmp_path, x, y, **settings)
    assert torch.equal(net(x), again(x)) and torch.equal(again.centre, net.centre)
    other, _ = regime.get_control(tmp_path, x.flip(-1), y, **settings)  # other images: trained anew
    assert len(list(tmp_path.glob("control_*.safetensors"))) == 2 and not torch.equal(
        other(x), net(x)
    )


def test_recording_the_bands_again_replaces_their_rows(tmp_path):
    from tldr_utils import store

    bands = pd.DataFrame(
        [
            {
                "dataset": "fashion_mnist",
                "arch": "mlp",
                "regime": "plain",
                "per_class": 1,
                "attack": "miface",
                "metric": "membership_auc",
                "value": 0.8,
                "null_lo": 0.4,
                "null_hi": 0.6,
                "seeds": 3,
                "outside": True,
            }
        ]
    )
    for _ in range(2):  # the second time reads the first back from the CSV
        table = store.record_metrics(
            tmp_path / "metrics.csv", regime.metric_rows(bands, "leakage_regime", 10)
        )
    assert len(table) == 4 and set(table.metric) == {
        "membership_auc",
        "membership_auc_null_lo",
        "membership_auc_null_hi",
        "membership_auc_outside",
    }
