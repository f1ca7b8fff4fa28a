import pytest
import torch

from tldr_utils import attacks, metrics, training
from tldr_utils.attacks.kkt import brightest_white
from tldr_utils.models import HomogeneousMLP


def test_the_homogeneous_mlp_is_homogeneous_and_its_logits_are_the_margin():
    torch.manual_seed(0)
    net = HomogeneousMLP((1, 8, 8), hidden=(16, 16))
    x = torch.rand(5, 1, 8, 8)
    logits = net(x)
    assert torch.allclose(logits[:, 0], -logits[:, 1])
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.0)
    assert torch.allclose(net(x), 8 * logits, atol=1e-5)  # three layers: 2^3


def test_kkt_applies_to_two_classes_only():
    assert "kkt" in attacks.for_classes(2) and "kkt" not in attacks.for_classes(10)
    net = HomogeneousMLP((1, 8, 8), hidden=(16,))
    with pytest.raises(
        ValueError, match="applies only to classifiers of 2 classes, got num_classes=3"
    ):
        attacks.reconstruct("kkt", net, (1, 8, 8), 3, 4, {"steps": 2})


def test_a_candidate_is_shown_at_the_length_where_its_brightest_pixel_is_white():
    centre = torch.full((1, 1, 2, 2), 0.2)
    u = torch.tensor([[[[0.1, -0.1], [0.4, 0.0]]], [[[-0.1, -0.2], [0.0, 0.0]]]])
    out = brightest_white(centre, u)
    assert torch.allclose(
        out[0], torch.tensor([[[0.4, 0.0], [1.0, 0.2]]])
    )  # length 2: 0.2 + 2 * 0.4 = 1
    assert torch.allclose(
        out[1], torch.tensor([[[0.1, 0.0], [0.2, 0.2]]])
    )  # brightens nothing: left as it is


def _images(seed):
    """Two distinct 8x8 images, one per class: a textured square in opposite corners."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(2, 1, 8, 8)
    for i, (r, c) in enumerate(((0, 0), (4, 4))):
        x[i, 0, r : r + 4, c : c + 4] = 0.1 + 0.9 * torch.rand(4, 4, generator=g)
    return x, torch.tensor([0, 1])


def _trained(seed=0):
    """A one-hidden-layer homogeneous network trained on ``_images(seed)`` with weight decay to a
    stationary point."""
    x, y = _images(seed)
    torch.manual_seed(seed)
    net = HomogeneousMLP((1, 8, 8), hidden=(64,), init_scale=0.1)
    losses = training.train_to_margin(net, x, y, steps=2000, lr=0.5, weight_decay=0.01)
    return net.eval(), x, y, losses


def test_training_to_a_margin_centres_the_inputs_and_drives_the_loss_down():
    net, x, _, losses = _trained()
    assert losses[-1] < 0.1 * losses[0]
    assert torch.allclose(net.centre, x.mean(0, keepdim=True))


def test_kkt_fits_its_equation_and_recovers_the_training_images():
    net, x, y, _ = _trained()
    r = attacks.reconstruct("kkt", net, (1, 8, 8), 2, 2, {"steps": 1500})
    assert r.extra["final_terms"]["kkt"] < 0.01
    held, held_y = _images(seed=1)  # the same squares with other textures
    found = metrics.recovery(r.images, r.labels, x, y, held, held_y)
    assert found.recovered.all() and (found.ssim > 0.95).all(), found
    # an untrained network of the same shape gives nothing to recover
    torch.manual_seed(0)
    blank = HomogeneousMLP((1, 8, 8), hidden=(64,), init_scale=0.1).eval()
    r = attacks.reconstruct("kkt", blank, (1, 8, 8), 2, 2, {"steps": 1500})
    assert not metrics.recovery(r.images, r.labels, x, y, held, held_y).recovered.any()
