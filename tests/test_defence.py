"""The adversarial defence of split computing: the reconstruction term really shapes the encoder."""

from __future__ import annotations

import pytest
import torch

from tldr_utils import defence
from tldr_utils.attacks import split
from tldr_utils.models import split_points

SHAPE = (1, 16, 16)
LAM = 1000.0  # strong enough to dominate the task loss on these tiny images


def _data(n: int, seed: int):
    images = split.random_images(n, SHAPE, torch.Generator().manual_seed(seed))
    labels = (images.mean((1, 2, 3)) * 10).long().clamp(0, 9)  # a learnable task: brightness bands
    return images, labels


def _late(history, key, n=20):
    return sum(s[key] for s in history[-n:]) / n


def test_the_reconstruction_term_makes_the_encoder_fight_its_adversary():
    images, labels = _data(600, 0)
    aux = _data(400, 1)[0]
    kw = dict(steps=80, batch_size=32, seed=0)
    plain, plain_history = defence.train_defended("cnn", images, labels, aux, 2, 0.0, **kw)
    defended, history = defence.train_defended("cnn", images, labels, aux, 2, LAM, **kw)
    first = lambda net: split_points(net)[0][0].inner[0].weight  # noqa: E731
    assert not torch.equal(first(plain), first(defended))
    # the adversary reconstructs the training batches worse from a defended encoder than from a
    # plain one
    assert _late(history, "rec") > 1.15 * _late(plain_history, "rec")  # measured: 1.3x
    # and the defended classifier still learns its task
    assert _late(history, "task") < history[0]["task"]


def test_bad_settings_are_refused_and_results_cached(tmp_path):
    images, labels = _data(64, 0)
    with pytest.raises(ValueError, match="lam must be a number >= 0"):
        defence.train_defended("cnn", images, labels, images, 1, -1.0, steps=2)
    with pytest.raises(ValueError, match="depth must be between 1 and 3 for a cnn, got 4"):
        defence.train_defended("cnn", images, labels, images, 4, 1.0, steps=2)
    with pytest.raises(ValueError, match="adversary_steps must be a whole number >= 1, got 0"):
        defence.train_defended("cnn", images, labels, images, 1, 1.0, steps=2, adversary_steps=0)
    first, meta = defence.get_defended(
        tmp_path, "mlp", images, labels, images, 1, 0.5, steps=3, batch_size=8
    )
    again, meta_again = defence.get_defended(
        tmp_path, "mlp", images, labels, images, 1, 0.5, steps=3, batch_size=8
    )
    assert meta == meta_again and len(list(tmp_path.glob("*.safetensors"))) == 1
    assert set(meta["late"]) == {"task", "rec", "decoder"}
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values())
    )
