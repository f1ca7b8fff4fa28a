"""Split computing: the cut points of each architecture and the three attacks on activations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tldr_utils import attacks, data, metrics
from tldr_utils.attacks import split
from tldr_utils.models import build_classifier, split_points

SHAPE = (1, 16, 16)


def _smooth(n: int, seed: int = 0) -> torch.Tensor:
    return split.random_images(n, SHAPE, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch, depths", [("mlp", 2), ("cnn", 3), ("vit", 3)])
def test_the_blocks_recompose_the_classifier(arch, depths):
    torch.manual_seed(0)
    net = build_classifier(arch, SHAPE).eval()
    blocks, rest = split_points(net)
    assert len(blocks) == depths
    x = torch.rand(5, *SHAPE)
    with torch.no_grad():
        h = x
        for b in blocks:
            h = b(h)
        assert torch.allclose(rest(h), net(x), atol=1e-5)
    assert {id(p) for b in blocks for p in b.parameters()} <= {
        id(p) for p in net.parameters()
    }  # shared, not copied


def test_any_sequential_is_cut_between_its_children_and_other_models_are_refused():
    seq = nn.Sequential(nn.Flatten(), nn.Linear(256, 8), nn.ReLU(), nn.Linear(8, 10))
    blocks, rest = split_points(seq)
    assert len(blocks) == 3 and rest is seq[-1]
    with pytest.raises(ValueError, match="cannot find the blocks of a Linear.*nn.Sequential"):
        split_points(nn.Linear(3, 3))


def _encoder(depth: int = 1) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*split_points(build_classifier("cnn", SHAPE).eval())[0][:depth])


def test_the_wrong_entry_point_and_missing_inputs_are_named():
    enc = _encoder()
    x = _smooth(4)
    with torch.no_grad():
        a = enc(x)
    with pytest.raises(ValueError, match="inverts activations.*invert_features"):
        attacks.reconstruct("split_optimisation", enc, SHAPE, 10, 1)
    with pytest.raises(ValueError, match="attacks a classifier's weights.*attacks.reconstruct"):
        attacks.invert_features("deepinversion", enc, a, SHAPE)
    with pytest.raises(ValueError, match="needs aux, the attacker's own images"):
        attacks.invert_features("split_decoder", enc, a, SHAPE)
    with pytest.raises(ValueError, match="labels has 3 entries for 4 activations"):
        attacks.invert_features(
            "split_optimisation", enc, a, SHAPE, labels=torch.zeros(3, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="unknown setting.*'stepz'"):
        attacks.invert_features("split_optimisation", enc, a, SHAPE, {"stepz": 1})
    with pytest.raises(ValueError, match="nn.Sequential of its blocks"):
        attacks.invert_features("split_datafree", _Wrapped(enc), a, SHAPE, {"steps": 2})


class _Wrapped(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_split_optimisation_recovers_inputs_from_shallow_features():
    enc = _encoder(1)
    x = _smooth(8, seed=1)
    with torch.no_grad():
        a = enc(x)
    labels = torch.arange(8)
    r = attacks.invert_features(
        "split_optimisation", enc, a, SHAPE, {"steps": 150}, seed=0, labels=labels
    )
    start = (0.5 + 0.1 * torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(0))).clamp(
        0, 1
    )
    assert r.images.shape == x.shape and torch.equal(r.labels, labels)
    quality, baseline = (
        metrics.paired_quality(r.images, x)["ssim"],
        metrics.paired_quality(start, x)["ssim"],
    )
    assert quality > 0.6 and quality > baseline + 0.4
    # the feature-matching loss is what does it: without steps nothing is recovered
    none = attacks.invert_features("split_optimisation", enc, a, SHAPE, {"steps": 1}, seed=0)
    assert metrics.paired_quality(none.images, x)["ssim"] < quality - 0.3


def test_split_decoder_learns_from_the_attackers_images():
    enc = _encoder(1)
    x, aux = _smooth(8, seed=1), _smooth(400, seed=2)
    with torch.no_grad():
        a = enc(x)
    r = attacks.invert_features("split_decoder", enc, a, SHAPE, {"steps": 200}, seed=0, aux=aux)
    mse = (r.images - x).pow(2).mean().item()
    assert (
        mse < (aux.mean(0, keepdim=True) - x).pow(2).mean().item() / 2
    )  # far better than the attacker's mean image


def test_split_datafree_trains_on_no_real_image(monkeypatch):
    split._INVERSES.clear()
    made, seen = [], []
    real_random_images = split.random_images

    def recording(n, shape, generator):
        out = real_random_images(n, shape, generator)
        made.append(out)
        return out

    monkeypatch.setattr(split, "random_images", recording)
    inverted, real_forward = [], split.Inverse.forward

    def inverse_forward(self, a):
        out = real_forward(self, a)
        inverted.append(out.detach().cpu().clone())
        return out

    monkeypatch.setattr(split.Inverse, "forward", inverse_forward)
    monkeypatch.setattr(
        data, "load_dataset", lambda *a, **k: pytest.fail("split_datafree loaded a dataset")
    )
    enc = _encoder(2)
    hook = enc[0].register_forward_pre_hook(
        lambda m, inp: seen.append(inp[0].detach().cpu().clone())
    )
    x, aux = _smooth(6, seed=3), _smooth(50, seed=4)
    with torch.no_grad():
        a = enc(x)
    seen.clear()
    r = attacks.invert_features(
        "split_datafree", enc, a, SHAPE, {"steps": 5, "batch_size": 8}, aux=aux
    )
    hook.remove()
    # every image the device's first block saw while the inverses trained was a random image, or an
    # inverse's own output fed back through it (the cycle term)
    assert seen and any(any(torch.equal(s, m) for m in made) for s in seen)
    assert all(any(torch.equal(s, m) for m in made + inverted) for s in seen)
    # and the attacker's images, even when given, change nothing
    split._INVERSES.clear()
    again = attacks.invert_features("split_datafree", enc, a, SHAPE, {"steps": 5, "batch_size": 8})
    assert torch.equal(r.images, again.images) and r.images.shape == x.shape


def test_feature_attacks_are_cached_by_their_inputs(tmp_path):
    enc = _encoder(1)
    x = _smooth(4)
    with torch.no_grad():
        a = enc(x)
    first = attacks.invert_features(
        "split_optimisation", enc, a, SHAPE, {"steps": 3}, cache=tmp_path
    )
    again = attacks.invert_features(
        "split_optimisation", enc, a, SHAPE, {"steps": 3}, cache=tmp_path
    )
    other = attacks.invert_features(
        "split_optimisation", enc, a * 2, SHAPE, {"steps": 3}, cache=tmp_path
    )
    assert torch.equal(first.images, again.images) and again.cost == first.cost
    assert len(list(tmp_path.glob("split_optimisation_*.safetensors"))) == 2 and not torch.equal(
        first.images, other.images
    )


def test_paired_quality_scores_a_perfect_copy_as_one():
    x = _smooth(4)
    q = metrics.paired_quality(x, x)
    assert q["ssim"] == pytest.approx(1.0, abs=1e-4) and q["psnr"] > 60
    with pytest.raises(ValueError, match="must pair up"):
        metrics.paired_quality(x, x[:3])


def test_an_attack_leaves_every_module_in_the_mode_it_found_it():
    net = build_classifier("cnn", SHAPE).eval()
    encoder = nn.Sequential(
        *split_points(net)[0][:2]
    )  # a new container: in training mode, its blocks in eval
    before = {name: m.training for name, m in encoder.named_modules()}
    with torch.no_grad():
        a = encoder(_smooth(4))
    attacks.invert_features("split_optimisation", encoder, a, SHAPE, {"steps": 2})
    assert {name: m.training for name, m in encoder.named_modules()} == before
    assert not any(
        m.training for m in net.modules()
    )  # the classifier's batch norm and dropout stay in eval
