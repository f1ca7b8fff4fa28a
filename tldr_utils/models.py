"""Target classifiers (MLP, CNN, ViT) and the conditioned generator.

Every classifier takes images in [0, 1] of shape N x C x H x W and exposes
``features(x)`` (the penultimate representation the inversion losses use) and
``head(features)`` (the logits), so ``net(x) == net.head(net.features(x))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import rules

ARCHS = ("mlp", "cnn", "vit", "resnet")
CONDITIONINGS = ("label", "vector", "matrix", "vector_matrix")


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout, as ``F.dropout``, with its mask drawn by ``torch.rand``: on CPU,
    torch's ``bernoulli_`` takes four times as long, and the generator and the TLDR
    target draw masks at every step (``make bench`` shows the two side by side)."""
    if not training or p == 0:
        return x
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return x * (torch.rand_like(x) >= p) * (1 / (1 - p))


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same state, same ``train``/``eval``) drawing its mask with ``dropout``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class Classifier(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(Classifier):
    """784-512-256-10 with batch norm, LeakyReLU and dropout."""

    def __init__(
        self, in_shape: tuple[int, int, int], num_classes: int = 10, hidden=(512, 256), dropout=0.3
    ):
        super().__init__()
        layers, width = [nn.Flatten()], in_shape[0] * in_shape[1] * in_shape[2]
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.LeakyReLU(0.2), Dropout(dropout)]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def features(self, x):
        return self.body(x * 2 - 1)


class CNN(Classifier):
    """The paper's small CNN: conv, batch norm, LeakyReLU, dropout, fully connected."""

    def __init__(
        self, in_shape: tuple[int, int, int], num_classes: int = 10, width: int = 32, dropout=0.3
    ):
        super().__init__()
        c, h, w = in_shape

        def block(cin, cout):
            return [
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.2),
                nn.MaxPool2d(2),
            ]

        self.body = nn.Sequential(
            *block(c, width),
            *block(width, 2 * width),
            Dropout(dropout / 2),
            nn.Flatten(),
            nn.Linear(2 * width * (h // 4) * (w // 4), 128),
            nn.BatchNorm1d(128),
            nn.LeakyReLU(0.2),
            Dropout(dropout),
        )
        self.head = nn.Linear(128, num_classes)

    def features(self, x):
        return self.body(x * 2 - 1)


class ViT(Classifier):
    """A small vision transformer: patches of a quarter of the side, 64 wide, 4 heads."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_classes: int = 10,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__()
        c, h, w = in_shape
        patch = h // 4
        self.embed = nn.Conv2d(c, dim, patch, stride=patch)
        n = (h // patch) * (w // patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True, activation="gelu"
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def features(self, x):
        t = self.embed(x * 2 - 1).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos
        return self.norm(self.encoder(t)[:, 0])


class _BasicBlock(nn.Module):
    """Two 3 x 3 convolutions with batch norm, added to the input (a 1 x 1 projection where the
    shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x):
        return F.relu(self.body(x) + self.skip(x))


class ResNet(Classifier):
    """A small residual network (He et al. 2016): a 3 x 3 stem, then one basic block at each of
    three widths, the last two halving the side, and global average pooling. The default judge of
    reconstructions: an architecture no target uses, and stronger than the targets."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int = 10, widths=(16, 32, 64)):
        super().__init__()
        c = in_shape[0]
        layers = [
            nn.Conv2d(c, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        ]
        for i, w in enumerate(widths):
            layers.append(_BasicBlock(widths[max(i - 1, 0)], w, 1 if i == 0 else 2))
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(widths[-1], num_classes)

    def features(self, x):
        return self.body(x * 2 - 1)


class HomogeneousMLP(Classifier):
    """A bias-free ReLU MLP for two classes, homogeneous in its weights: the positive control's
    model (``attacks.kkt``). Its one output is the margin Phi; the logits are (-Phi/2, Phi/2), so
    cross-entropy on them is the logistic loss of Phi and the margin is their difference. Inputs
    are centred on the buffer ``centre`` (mid-grey until ``training.train_to_margin`` sets it to the
    training images' mean, as Haim et al. centre their data). ``init_scale`` shrinks the default
    initialisation (they train from a small one)."""

    def __init__(
        self, in_shape: tuple[int, int, int], hidden=(1000, 1000), init_scale: float = 1.0
    ):
        super().__init__()
        layers, width = [nn.Flatten()], in_shape[0] * in_shape[1] * in_shape[2]
        for h in hidden:
            layers += [nn.Linear(width, h, bias=False), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.margin = nn.Linear(width, 1, bias=False)
        self.register_buffer("centre", torch.full((1, *in_shape), 0.5))
        with torch.no_grad():
            for p in self.parameters():
                p.mul_(init_scale)

    def features(self, x):
        return self.body(x - self.centre)

    def head(self, features):
        phi = self.margin(features)
        return torch.cat([-phi / 2, phi / 2], 1)


class _Scaled(nn.Module):
    """The classifiers' own first step, x in [0, 1] to [-1, 1], then ``inner``."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x * 2 - 1)


class _Tokens(nn.Module):
    """A ViT's patch embedding: images to the class token and the patch tokens, with positions."""

    def __init__(self, vit: ViT):
        super().__init__()
        self.embed, self.cls, self.pos = vit.embed, vit.cls, vit.pos

    def forward(self, x):
        t = self.embed(x * 2 - 1).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos


class _ClassToken(nn.Module):
    """A ViT's last step before its head: the normalised class token."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, t):
        return self.norm(t[:, 0])


def split_points(net: nn.Module) -> tuple[list[nn.Module], nn.Module]:
    """A classifier cut after each of its blocks: ``(blocks, rest)`` with
    ``rest(blocks[-1](...blocks[0](x)))`` equal to ``net(x)``. ``h_k(x)``, what a server
    sees when the first k blocks run on a phone, is ``nn.Sequential(*blocks[:k])(x)``.

    MLP: after each hidden layer. CNN: after each conv block and after the fully
    connected layer. ViT: after the patch embedding and after each transformer
    layer. Any ``nn.Sequential`` is cut after each of its children but the last.
    The blocks share the classifier's parameters (nothing is copied).
    """
    if isinstance(net, MLP):
        body = list(net.body)
        cuts = [i + 1 for i, m in enumerate(body) if isinstance(m, nn.Dropout)]
        parts = [body[a:b] for a, b in zip([0] + cuts, cuts)]
        blocks = [_Scaled(nn.Sequential(*parts[0]))] + [nn.Sequential(*p) for p in parts[1:]]
        return blocks, net.head
    if isinstance(net, CNN):
        body = list(net.body)
        pools = [i + 1 for i, m in enumerate(body) if isinstance(m, nn.MaxPool2d)]
        parts = [body[a:b] for a, b in zip([0] + pools, pools + [len(body)])]
        blocks = [_Scaled(nn.Sequential(*parts[0]))] + [nn.Sequential(*p) for p in parts[1:]]
        return blocks, net.head
    if isinstance(net, ViT):
        return [_Tokens(net), *net.encoder.layers], nn.Sequential(_ClassToken(net.norm), net.head)
    if isinstance(net, nn.Sequential) and len(net) >= 2:
        return list(net)[:-1], net[-1]
    raise ValueError(
        f"cannot find the blocks of a {type(net).__name__}: pass one of this project's classifiers "
        "(MLP, CNN, ViT) or an nn.Sequential whose children are the blocks to cut between"
    )


def build_classifier(arch: str, in_shape, num_classes: int = 10) -> Classifier:
    """The classifier called ``arch`` (one of ARCHS) for images of ``in_shape`` (C, H, W)."""
    models = {"mlp": MLP, "cnn": CNN, "vit": ViT, "resnet": ResNet}
    if arch not in models:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    c, h, w = in_shape
    if arch != "mlp" and (h % 4 or w % 4):
        raise ValueError(f"{arch} needs image sides divisible by 4, got {h}x{w}")
    return models[arch](tuple(in_shape), num_classes)


def hot_matrix(
    labels: torch.Tensor, num_classes: int, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """The K x K "hot" matrix of each label: row k and column k set to one.

    With ``size``, it is averaged onto a map of that size (area interpolation), as
    the generator's intermediate map is rarely K x K: every row and column then
    leaves its own trace, where nearest-neighbour resizing would drop some and
    leave their classes an all-zero matrix (three of ten at 7 x 7).
    """
    eye = torch.eye(num_classes, device=labels.device)[labels]  # N x K
    m = ((eye[:, :, None] + eye[:, None, :]) > 0).float()
    return m if size is None else F.interpolate(m[:, None], size=size, mode="area")[:, 0]


UPSAMPLINGS = ("transpose", "resize")


def _doubling(c_in: int, c_out: int, upsample: str) -> list[nn.Module]:
    """Layers that double the side of a map: the paper's 4x4 stride-2 transposed convolution, or
    nearest-neighbour resizing then a 3x3 convolution ("resize-convolution", Odena et al. 2016),
    whose kernel overlaps evenly everywhere and so draws no checkerboard."""
    if upsample == "transpose":
        return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)]
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1)]


class Generator(nn.Module):
    """G(z, c): a latent and a condition to an image in [0, 1].

    A linear layer lifts [z, embedded condition] to a 128-channel map at a quarter
    of the image side; two up-convolutions with batch norm double it twice, by transposed
    convolutions (``upsample="transpose"``, the paper's) or by resizing then convolving
    (``"resize"``, which leaves no checkerboard).
    ``conditioning`` picks how the class reaches the generator:
    label (embedded index), vector (embedded soft vector), matrix (the K x K hot
    matrix, averaged onto the intermediate map, as an extra channel) or
    vector_matrix (both). Dropout stays on while sampling: it is part of the
    generator's noise and gives diversity.
    """

    def __init__(
        self,
        out_shape,
        num_classes: int = 10,
        conditioning: str = "vector_matrix",
        latent_dim: int = 100,
        embed_dim: int = 64,
        width: int = 128,
        dropout: float = 0.3,
        upsample: str = "transpose",
    ):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(
                f"unknown conditioning {conditioning!r}; choose one of {', '.join(CONDITIONINGS)}"
            )
        c, h, w = out_shape
        if upsample not in UPSAMPLINGS:
            raise ValueError(
                f"unknown upsample {upsample!r}; choose one of {', '.join(UPSAMPLINGS)}"
            )
        if h % 4 or w % 4:
            raise ValueError(f"the generator needs image sides divisible by 4, got {h}x{w}")
        self.out_shape, self.num_classes, self.latent_dim = (
            tuple(out_shape),
            num_classes,
            latent_dim,
        )
        self.conditioning, self.dropout, self.base = conditioning, dropout, (h // 4, w // 4)
        self.uses_vector = conditioning != "matrix"
        self.uses_matrix = conditioning in ("matrix", "vector_matrix")
        if conditioning == "label":
            self.embed = nn.Embedding(num_classes, embed_dim)
        elif self.uses_vector:
            self.embed = nn.Linear(num_classes, embed_dim)
        in_dim = latent_dim + (embed_dim if self.uses_vector else 0)
        self.lift = nn.Sequential(
            nn.Linear(in_dim, width * self.base[0] * self.base[1]),
            nn.BatchNorm1d(width * self.base[0] * self.base[1]),
            nn.ReLU(),
        )
        self.up1 = nn.Sequential(
            *_doubling(width + self.uses_matrix, width // 2, upsample),
            nn.BatchNorm2d(width // 2),
            nn.ReLU(),
        )
        self.up2 = nn.Sequential(
            *_doubling(width // 2, width // 4, upsample), nn.BatchNorm2d(width // 4), nn.ReLU()
        )
        self.out = nn.Conv2d(width // 4, c, 3, padding=1)
        self.width = width

    def forward(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``condition``: class indices (N,) for label conditioning, else a
        distribution over classes (N x K) whose argmax is the class."""
        labels = condition if self.conditioning == "label" else condition.argmax(1)
        x = z
        if self.uses_vector:
            x = torch.cat([z, self.embed(condition)], 1)
        x = dropout(self.lift(x), self.dropout).view(len(z), self.width, *self.base)
        if self.uses_matrix:
            x = torch.cat([x, hot_matrix(labels, self.num_classes, self.base)[:, None]], 1)
        # dropout at the coarse resolutions only: at full resolution it would be pixel noise
        x = dropout(self.up1(x), self.dropout)
        return torch.sigmoid(self.out(self.up2(x)))


rules.add(
    {
        "archs": rules.list_of(rules.choice(lambda: ARCHS)),
        "compare_archs": rules.list_of(rules.choice(lambda: ARCHS), empty_ok=True),
        "arch": rules.choice(lambda: ARCHS),
        "eval_arch": rules.choice(lambda: ARCHS),
        "conditioning": rules.choice(lambda: CONDITIONINGS),
        "upsample": rules.choice(lambda: UPSAMPLINGS),
    }
)
