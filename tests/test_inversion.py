import pytest
import torch
import torch.nn.functional as F

from tldr_utils import inversion, sampling
from tldr_utils.models import build_classifier


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = build_classifier("cnn", (1, 16, 16)).eval()
    with (
        torch.no_grad()
    ):  # an untrained head is nearly flat; a steeper one makes the terms informative
        net.head.weight.mul_(10)
    return net


def test_soft_conditions_peak_on_the_label_and_hot_ones_are_one_hot():
    labels = torch.arange(10).repeat(5)
    for scale in (2.0, 8.0):
        p = inversion.conditions(
            labels, 10, hot=False, generator=torch.Generator().manual_seed(0), soft_scale=scale
        )
        assert torch.equal(p.argmax(1), labels)
        assert torch.allclose(p.sum(1), torch.ones(50))
    p = inversion.conditions(
        labels, 10, hot=False, generator=torch.Generator().manual_seed(0), soft_scale=2.0
    )
    assert (p.max(1).values < 0.999).all()  # soft: mass elsewhere too
    assert torch.equal(inversion.conditions(labels, 10, hot=True), F.one_hot(labels, 10).float())


def test_a_larger_soft_scale_gives_a_clearer_winner():
    labels = torch.arange(10).repeat(50)
    margin = {}
    for scale in (2.0, 4.0):
        p = inversion.conditions(
            labels, 10, hot=False, generator=torch.Generator().manual_seed(0), soft_scale=scale
        )
        top2 = p.topk(2, 1).values
        margin[scale] = (top2[:, 0] - top2[:, 1]).mean().item()
    assert margin[4.0] > margin[2.0] + 0.1
    # at the default scale, what the README says: the class's entry averages 0.93, one vector in
    # five puts < 0.9 on it
    labels = torch.arange(10).repeat(2000)
    p = inversion.conditions(labels, 10, hot=False, generator=torch.Generator().manual_seed(1))
    own = p.gather(1, labels[:, None]).flatten()
    assert (
        inversion.SOFT_SCALE == 16.0
        and 0.92 < own.mean() < 0.945
        and 0.17 < (own < 0.9).float().mean() < 0.24
    )


def test_cosine_term_with_labels_counts_only_pairs_of_one_class():
    same = torch.tensor(
        [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    )  # each class collapsed onto one feature
    labels = torch.tensor([0, 0, 1, 1])
    assert inversion.cosine_term(same, labels).item() == pytest.approx(
        1.0
    )  # fully collapsed within classes
    assert inversion.cosine_term(same).item() == pytest.approx(
        1 / 3
    )  # the batch-wide mean hides it
    assert (
        inversion.cosine_term(same, torch.arange(4)).item() == 0.0
    )  # no same-class pair: nothing to penalise


def _optimise(term, net, steps=40):
    """Minimise one term alone over the pixels of a random batch; return (before, after) of
    ``measure``."""
    torch.manual_seed(1)
    logits_x = torch.randn(16, 1, 16, 16, requires_grad=True)
    p = inversion.conditions(torch.arange(16) % 10, 10, hot=True)
    opt = torch.optim.Adam([logits_x], lr=0.1)
    values = []
    for _ in range(steps):
        terms = inversion.loss_terms(net, torch.sigmoid(logits_x), p, {term: 1.0})
        values.append(terms[term].item())
        opt.zero_grad()
        terms[term].backward()
        opt.step()
    return values[0], values[-1], torch.sigmoid(logits_x).detach(), p


@pytest.mark.parametrize("term", inversion.TLDR_TERMS)
def test_each_term_alone_is_lowered_by_its_own_gradient(term, net):
    before, after, _, _ = _optimise(term, net)
    assert after < 0.8 * before, f"{term}: {before:.4g} -> {after:.4g}"


def test_bn_term_pulls_batch_statistics_toward_the_stored_ones():
    torch.manual_seed(0)
    net = build_classifier("cnn", (1, 16, 16))
    net.train()
    with torch.no_grad():  # store the statistics of dark, smooth images in the batch-norm layers
        for _ in range(20):
            net(0.2 * torch.rand(64, 1, 1, 1).expand(64, 1, 16, 16))
    before, after, _, _ = _optimise("bn", net.eval(), steps=60)
    assert after < 0.5 * before, f"bn: {before:.4g} -> {after:.4g}"


def test_bn_term_weights_the_first_layer_as_asked():
    layers = [torch.nn.BatchNorm2d(2), torch.nn.BatchNorm1d(3)]  # running mean 0, running var 1
    off_by_one = [
        (layers[0], torch.ones(4, 2, 5, 5)),
        (layers[1], torch.zeros(4, 3)),
    ]  # first: mean off by 1 per channel
    first = (
        torch.tensor(2.0).sqrt() + torch.tensor(2.0).sqrt()
    )  # |mean - 0| over 2 channels, |var - 1| likewise
    second = torch.tensor(3.0).sqrt()  # mean right, var 0 instead of 1 over 3 channels
    for weight in (1.0, 10.0):
        expected = (weight * first + second) / 2
        assert torch.isclose(inversion.bn_term(off_by_one, weight), expected)


def test_tv_term_lowers_total_variation_of_the_images(net):
    _, _, x, _ = _optimise("tv", net)
    torch.manual_seed(1)
    x0 = torch.sigmoid(torch.randn(16, 1, 16, 16))
    assert inversion.tv_term(x) < 0.5 * inversion.tv_term(x0)


def test_cosine_term_lowers_feature_similarity_within_the_batch(net):
    _, _, x, _ = _optimise("cos", net)
    torch.manual_seed(1)
    x0 = torch.sigmoid(torch.randn(16, 1, 16, 16))
    sim = lambda imgs: inversion.cosine_term(net.features(imgs)).item()  # noqa: E731
    assert sim(x) < sim(x0) - 0.1


def test_grad_norm_term_is_the_weight_gradient_norm_and_optimising_it_lowers_it(net):
    x = torch.rand(8, 1, 16, 16)
    y = torch.arange(8)
    logits = net(x)
    manual = sum(
        g.pow(2).sum()
        for g in torch.autograd.grad(F.cross_entropy(net(x), y), list(net.parameters()))
    )
    assert torch.allclose(inversion.grad_norm_term(net, logits, y), manual, rtol=1e-4)
    before, after, _, _ = _optimise("grad_norm", net)
    assert after < 0.5 * before


def test_zero_weight_switches_a_term_off_and_unknown_terms_are_refused(net):
    x, p = torch.rand(4, 1, 16, 16), inversion.conditions(torch.arange(4), 10, hot=True)
    terms = inversion.loss_terms(net, x, p, {"kl": 1.0, "tv": 0.0, "grad_norm": 0})
    assert set(terms) == {"kl"}
    with pytest.raises(ValueError, match="'sharpness'"):
        inversion.loss_terms(net, x, p, {"sharpness": 1.0})


def test_random_perturbation_is_sign_noise_of_size_epsilon_clipped():
    x = torch.full((2, 1, 4, 4), 0.5)
    d = inversion.random_perturbation(x, 0.1, torch.Generator().manual_seed(0)) - x
    assert torch.allclose(d.abs(), torch.full_like(d, 0.1))
    assert inversion.random_perturbation(torch.ones(1, 1, 4, 4), 0.3).max() <= 1


def test_adversarial_perturbation_is_a_step_of_size_epsilon_that_hurts_more_than_noise(net):
    torch.manual_seed(1)
    x = torch.rand(32, 1, 16, 16) * 0.6 + 0.2  # away from the clipping bounds
    labels = net(x).argmax(1)
    worst = inversion.adversarial_perturbation(net, x, labels, 0.05)
    assert torch.allclose((worst - x).abs(), torch.full_like(x, 0.05))
    noisy = inversion.random_perturbation(x, 0.05, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ce = lambda images: F.cross_entropy(net(images), labels).item()  # noqa: E731
        assert ce(worst) > ce(noisy) + 0.1 and ce(worst) > ce(x)
    clipped = inversion.adversarial_perturbation(net, torch.ones(2, 1, 16, 16), labels[:2], 0.3)
    assert 0 <= clipped.min() and clipped.max() <= 1


def test_the_adversarial_step_passes_the_gradient_on_to_the_images(net):
    x = torch.rand(4, 1, 16, 16, requires_grad=True)
    worst = inversion.adversarial_perturbation(
        net, x * 0.5 + 0.25, torch.zeros(4, dtype=torch.long), 0.1
    )
    worst.sum().backward()
    assert torch.allclose(
        x.grad, torch.full_like(x, 0.5)
    )  # d(worst)/dx = 0.5 inside [0, 1]: the generator learns through it


def test_unknown_perturbation_is_refused_by_name(net):
    x, p = torch.rand(2, 1, 16, 16), inversion.conditions(torch.arange(2), 10, hot=True)
    with pytest.raises(ValueError, match="'gaussian'.*adversarial, random"):
        inversion.loss_terms(net, x, p, {"ce_pert": 1.0}, perturbation="gaussian")
    with pytest.raises(ValueError, match="'gaussian'"):
        inversion.train_generator(
            net, (1, 16, 16), 10, {"ce": 1.0}, steps=1, perturbation="gaussian"
        )


def _tiny_generator(weights, seed=0):
    torch.manual_seed(0)
    net = build_classifier("mlp", (1, 8, 8)).eval()
    return inversion.train_generator(
        net, (1, 8, 8), 10, weights, steps=25, batch_size=16, seed=seed
    )


def test_generator_training_is_deterministic_for_a_seed():
    G1, h1 = _tiny_generator({"ce": 1.0})
    G2, h2 = _tiny_generator({"ce": 1.0})
    assert h1 == h2
    assert all(
        torch.equal(a, b) for a, b in zip(G1.state_dict().values(), G2.state_dict().values())
    )


def test_tv_weight_in_training_makes_smoother_samples():
    G_plain, _ = _tiny_generator({"ce": 1.0})
    G_tv, _ = _tiny_generator({"ce": 1.0, "tv": 5.0})
    tv = lambda G: inversion.tv_term(sampling.sample(G, 10)[0]).item()  # noqa: E731
    assert tv(G_tv) < 0.7 * tv(G_plain)


def test_training_lowers_the_inversion_loss():
    _, history = _tiny_generator({"ce": 1.0})
    assert history[-1]["ce"] < history[0]["ce"]


def test_sample_gives_every_class_in_order():
    G, _ = _tiny_generator({"ce": 1.0})
    images, labels = sampling.sample(G, 3, seed=4)
    assert images.shape == (30, 1, 8, 8)
    assert torch.equal(labels, torch.arange(10).repeat_interleave(3))
    assert torch.equal(images, sampling.sample(G, 3, seed=4)[0])


def test_oversampling_keeps_the_draws_the_target_is_most_confident_in():
    G, _ = _tiny_generator({"ce": 1.0})
    torch.manual_seed(0)
    judge = build_classifier("mlp", (1, 8, 8)).eval()
    draws, draw_labels = sampling.sample(G, 12, seed=4)
    images, labels = sampling.sample(G, 3, seed=4, target=judge, oversample=4)
    assert images.shape == (30, 1, 8, 8)
    assert torch.equal(labels, torch.arange(10).repeat_interleave(3))
    with torch.no_grad():
        log_p = torch.log_softmax(judge(draws), 1)[torch.arange(len(draw_labels)), draw_labels]
    for k in range(10):  # the kept images are the top 3 of the class's 12 draws, no other
        best = log_p[draw_labels == k].topk(3).indices.sort().values
        assert torch.equal(images[labels == k], draws[draw_labels == k][best])
    assert torch.equal(
        sampling.sample(G, 3, seed=4, target=judge, oversample=1)[0],
        sampling.sample(G, 3, seed=4)[0],
    )


def test_oversampling_needs_a_target_and_a_whole_factor():
    G, _ = _tiny_generator({"ce": 1.0})
    with pytest.raises(ValueError, match="needs the target"):
        sampling.sample(G, 3, oversample=2)
    with pytest.raises(ValueError, match="whole number"):
        sampling.sample(G, 3, oversample=0)


def test_robustness_weight_in_training_makes_samples_survive_the_worst_step(net):
    def rise_under_attack(weights):  # how much the worst step of size 0.1 raises the samples' CE
        G, _ = inversion.train_generator(
            net,
            (1, 16, 16),
            10,
            weights,
            steps=30,
            batch_size=16,
            lr=3e-3,
            perturbation="adversarial",
        )
        images, labels = sampling.sample(G, 10)
        worst = inversion.adversarial_perturbation(net, images, labels, 0.1)
        with torch.no_grad():
            return (
                F.cross_entropy(net(worst), labels).item()
                - F.cross_entropy(net(images), labels).item()
            )

    assert rise_under_attack({"ce": 1.0, "ce_pert": 5.0}) < 0.5 * rise_under_attack({"ce": 1.0})


def test_target_dropout_samples_masks_while_training_and_leaves_the_target_in_eval_mode(net):
    modes = []
    hook = net.body[-1].register_forward_hook(
        lambda layer, inputs, out: modes.append(layer.training)
    )
    try:
        trained = {}
        for on in (False, True):
            modes.clear()
            G, _ = inversion.train_generator(
                net, (1, 16, 16), 10, {"ce": 1.0}, steps=3, batch_size=8, target_dropout=on
            )
            assert modes == [on] * 3  # the dropout layer before the head, at every step
            trained[on] = torch.cat([p.flatten() for p in G.parameters()])
    finally:
        hook.remove()
    assert not any(
        layer.training for layer in net.modules()
    )  # batch norm and dropout both back to eval
    assert not torch.equal(
        trained[False], trained[True]
    )  # the masks reach the generator's gradients


def test_a_failed_training_leaves_the_target_as_it_came(net):
    net.head.bias.requires_grad_(False)  # a frozen parameter must stay frozen, not be switched on
    flags = [p.requires_grad for p in net.parameters()]
    try:
        with pytest.raises(FloatingPointError, match="lower lr"):
            inversion.train_generator(
                net,
                (1, 16, 16),
                10,
                {"ce": float("inf"), "grad_norm": 1.0},
                steps=3,
                batch_size=8,
                target_dropout=True,
            )
        assert not any(layer.training for layer in net.modules())
        assert [p.requires_grad for p in net.parameters()] == flags
    finally:
        net.head.bias.requires_grad_(True)


def test_grad_norm_trains_a_generator_against_a_vision_transformer():
    # the weight-gradient term differentiates through attention twice; the fast attention kernel
    # cannot
    torch.manual_seed(0)
    vit = build_classifier("vit", (1, 8, 8)).eval()
    G, history = inversion.train_generator(
        vit, (1, 8, 8), 10, {"ce": 1.0, "grad_norm": 0.1}, steps=3, batch_size=8
    )
    assert len(history) == 3 and history[0]["grad_norm"] > 0
    assert all(p.grad is not None for p in G.parameters() if p.requires_grad)


def test_a_cached_generator_serves_another_number_of_samples(tmp_path, monkeypatch):
    """The trained generator is kept apart from its samples: asking for more images draws from it
    again."""
    from tldr_utils import attacks

    torch.manual_seed(0)
    target = build_classifier("mlp", (1, 8, 8), 10).eval()
    settings = {"steps": 6, "batch_size": 8, "require_learned": False}
    fresh = attacks.reconstruct("tldr", target, (1, 8, 8), 10, 3, settings, seed=4)
    first = attacks.reconstruct("tldr", target, (1, 8, 8), 10, 2, settings, seed=4, cache=tmp_path)
    assert len(list((tmp_path / "generators").glob("*.safetensors"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the generator was trained again")

    monkeypatch.setattr(inversion, "train_generator", no_training)
    again = attacks.reconstruct("tldr", target, (1, 8, 8), 10, 3, settings, seed=4, cache=tmp_path)
    assert torch.equal(
        again.images, fresh.images
    )  # the loaded generator draws what the trained one drew
    assert (
        again.cost["train_cpu_seconds"] == first.cost["train_cpu_seconds"]
    )  # its cost as measured when trained
    assert (
        again.cost["cpu_seconds"] >= first.cost["train_cpu_seconds"]
        and again.cost["generator_reused"]
    )
    with pytest.raises(
        AssertionError, match="trained again"
    ):  # another training setting is another generator
        attacks.reconstruct(
            "tldr", target, (1, 8, 8), 10, 3, {**settings, "lr": 0.01}, seed=4, cache=tmp_path
        )


def test_batch_statistics_distance_matches_torchs_variance():
    torch.manual_seed(0)
    layer = torch.nn.BatchNorm2d(3)
    x = torch.randn(16, 3, 5, 5) * 2 + 1
    mean, var = torch.randn(3), torch.rand(3)
    expected = torch.norm(x.mean((0, 2, 3)) - mean) + torch.norm(
        x.var((0, 2, 3), unbiased=False) - var
    )
    got = inversion.stats_distance([(layer, x)], [(mean, var)], 1.0)
    assert torch.isclose(got, expected, atol=1e-5)


def test_diversity_term_punishes_a_generator_that_ignores_its_latent():
    z = torch.randn(8, 100, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    collapsed = torch.rand(2, 1, 28, 28)[labels] + 1e-4 * torch.randn(8, 1, 28, 28)
    varied = torch.rand(8, 1, 28, 28)
    assert inversion.diversity_term(collapsed, z, labels) > 50 * inversion.diversity_term(
        varied, z, labels
    )
    # images of different classes are not compared: one image per class leaves nothing to compare
    assert inversion.diversity_term(varied[:2], z[:2], torch.tensor([0, 1])) == 0


def test_diversity_term_needs_the_latents():
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(ValueError, match="pass z="):
        inversion.loss_terms(
            torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)),
            x,
            torch.eye(10)[:4],
            {"kl": 1.0, "diversity": 1.0},
        )
