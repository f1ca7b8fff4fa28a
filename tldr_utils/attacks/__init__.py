"""Every attack behind one interface: a frozen classifier in, reconstructions and their cost out.

An attack is registered under one name with its default settings (plain
literals) and the rule each setting must satisfy. ``reconstruct`` is the one
way to run any of them::

    from tldr_utils import attacks
    r = attacks.reconstruct("deepinversion", model, (1, 28, 28), 10, per_class=10,
                            settings={"steps": 500})
    r.images   # N x C x H x W in [0, 1], class-sorted
    r.cost     # CPU and wall seconds, steps

``model`` is any ``nn.Module`` mapping N x C x H x W images in [0, 1] to logits.
Terms that need the model's penultimate features read them with a forward hook
on the input of its last ``nn.Linear`` (or the layer named by ``feature_layer``);
a term the model cannot support, such as the batch-norm prior of a model
without batch norm, is skipped with a warning naming it. Settings are checked
(unknown keys and out-of-range values refused) before any work starts.

Registered: ``inversion`` and ``tldr`` (one conditioned generator, the paper's methods),
``deepinversion`` (Yin et al. 2020), ``miface`` (Fredrikson et al. 2015), ``bn_classwise`` (Soufleri
et al. 2022) and, for two-class homogeneous networks only, ``kkt`` (Haim et al. 2022, the positive
control; ``for_classes`` lists what applies). Profiles are not read here: ``edge.attack_settings``
turns a profile into an attack's settings at the edge.
"""

from .. import rules
from . import generator, kkt, optimisation, split
from .base import (
    ATTACKS,
    FEATURE_ATTACKS,
    Attack,
    Problem,
    Reconstruction,
    attack,
    budget,
    configure,
    for_classes,
    frozen,
    get,
    invert_features,
    reconstruct,
    register,
    resolve,
)

BUILTIN = (
    generator.inversion_attack,
    generator.tldr_attack,
    optimisation.deepinversion,
    optimisation.bn_classwise,
    optimisation.miface,
    kkt.kkt,
    split.split_optimisation,
    split.split_decoder,
    split.split_datafree,
)
register(*BUILTIN)


rules.add(
    {
        name: rules.list_of(rules.choice(lambda: list(ATTACKS)))
        for name in ("weight_attacks", "strength_attacks")
    }
)

__all__ = [
    "ATTACKS",
    "BUILTIN",
    "FEATURE_ATTACKS",
    "Attack",
    "Problem",
    "Reconstruction",
    "attack",
    "budget",
    "configure",
    "for_classes",
    "frozen",
    "get",
    "invert_features",
    "reconstruct",
    "register",
    "resolve",
]
