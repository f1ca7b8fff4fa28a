import pytest
import torch

from tldr_utils.models import (
    ARCHS,
    CONDITIONINGS,
    UPSAMPLINGS,
    Generator,
    build_classifier,
    hot_matrix,
)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_classifiers_map_images_to_logits_through_features(arch, shape):
    net = build_classifier(arch, shape).eval()
    x = torch.rand(5, *shape)
    logits = net(x)
    assert logits.shape == (5, 10)
    assert torch.allclose(logits, net.head(net.features(x)))


def test_unknown_architecture_names_the_choices():
    with pytest.raises(ValueError, match=r"'densenet'.*mlp, cnn, vit, resnet"):
        build_classifier("densenet", (1, 28, 28))


def test_cnn_refuses_sides_it_cannot_pool():
    with pytest.raises(ValueError, match="30x30"):
        build_classifier("cnn", (1, 30, 30))


def test_hot_matrix_sets_row_and_column_of_the_class():
    m = hot_matrix(torch.tensor([2]), 4)[0]
    assert m[2].sum() == 4 and m[:, 2].sum() == 4 and m.sum() == 7


@pytest.mark.parametrize("upsample", UPSAMPLINGS)
@pytest.mark.parametrize("conditioning", CONDITIONINGS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_generator_outputs_images_in_unit_range(conditioning, shape, upsample):
    G = Generator(shape, 10, conditioning, upsample=upsample)
    z = torch.randn(6, G.latent_dim)
    c = torch.arange(6) if conditioning == "label" else torch.softmax(torch.randn(6, 10), 1)
    x = G(z, c)
    assert x.shape == (6, *shape)
    assert x.min() >= 0 and x.max() <= 1


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_generator_output_depends_on_the_condition(conditioning):
    G = Generator((1, 28, 28), 10, conditioning).eval()
    z = torch.randn(4, G.latent_dim).repeat(2, 1)
    labels = torch.tensor([0] * 4 + [7] * 4)
    c = labels if conditioning == "label" else torch.nn.functional.one_hot(labels, 10).float()
    torch.manual_seed(0)
    a = G(z, c)
    torch.manual_seed(0)
    b = G(z, c)
    assert torch.equal(a, b)  # same dropout mask, same output
    assert not torch.allclose(a[:4], a[4:])


def test_generator_dropout_stays_on_while_sampling():
    G = Generator((1, 28, 28), 10, "vector").eval()
    z, c = torch.randn(2, G.latent_dim), torch.softmax(torch.randn(2, 10), 1)
    assert not torch.allclose(G(z, c), G(z, c))


def test_resize_upsampling_draws_no_checkerboard():
    """A transposed convolution of stride 2 and kernel 4 gives the pixels of a 2x2 cell different
    numbers of kernel taps, so even a constant input comes out with a period-2 pattern; resizing
    then
    convolving gives a constant input a constant output away from the border."""
    torch.manual_seed(0)
    for upsample, periodic in (("transpose", True), ("resize", False)):
        G = Generator((1, 28, 28), 10, "vector", upsample=upsample)
        doubling = G.up1[:-2]  # the doubling layers, without batch norm and ReLU
        y = doubling(torch.ones(1, doubling[-1].in_channels, 7, 7))[0, :, 2:-2, 2:-2]
        spread = (y - y.mean((1, 2), keepdim=True)).abs().max().item()
        assert (spread > 1e-3) == periodic, upsample


def test_unknown_upsampling_names_the_choices():
    with pytest.raises(ValueError, match="'bilinear'.*transpose, resize"):
        Generator((1, 28, 28), 10, "vector", upsample="bilinear")


def test_unknown_conditioning_names_the_choices():
    with pytest.raises(ValueError, match="'hotness'.*vector_matrix"):
        Generator((1, 28, 28), 10, "hotness")


@pytest.mark.parametrize("side", [7, 8, 10, 14])
def test_hot_matrix_on_a_smaller_map_keeps_every_class_apart(side):
    m = hot_matrix(torch.arange(10), 10, (side, side))
    assert m.shape == (10, side, side)
    assert (m.flatten(1).sum(1) > 0).all()  # no class is left an empty matrix
    assert (
        torch.cdist(m.flatten(1), m.flatten(1)).add(torch.eye(10)).min() > 0
    )  # and no two share one
    assert torch.equal(hot_matrix(torch.arange(10), 10, (10, 10)), hot_matrix(torch.arange(10), 10))


def test_dropout_zeroes_a_share_p_and_keeps_the_mean():
    from tldr_utils.models import dropout

    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = dropout(x, 0.3)
    assert abs((y == 0).float().mean().item() - 0.3) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.01
    assert torch.equal(dropout(x, 0.3, training=False), x)
    with pytest.raises(ValueError, match="1.0"):
        dropout(x, 1.0)


def test_classifier_dropout_follows_train_and_eval():
    net = build_classifier("cnn", (1, 28, 28))
    x = torch.rand(4, 1, 28, 28)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    assert not torch.equal(net(x), net(x))
