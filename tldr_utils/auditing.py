"""Audit your own classifier: ``tldr_utils.audit(model, train=(x, y), heldout=(x, y))``.

Every registered attack reconstructs images of every class from the model's
weights alone; each set of reconstructions is then measured against the
training images *and* against held-out images of the same classes, beside
two controls that cannot leak: real held-out images the model never saw
(``control_heldout``) and uniform noise (``control_noise``).

The verdict rests on paired comparisons with intervals (``metrics.paired_leakage``): do the same
reconstructions sit closer to the training images than to held-out ones, and do they single training
images out (membership AUC)? Realism and coverage are ``quality.realism`` (precision, recall,
density, coverage and an FID) in the feature space of an evaluation classifier trained on the
training images; ``copying_z`` is in the table for reference but measures how smooth images are as
much as leakage, so the verdict never uses it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import attacks as registry
from . import config, data, metrics, preflight, quality, rules, sampling, store, training
from .attacks.optimisation import class_statistics
from .models import build_classifier

CONTROLS = ("control_heldout", "control_noise")


@dataclass
class Audit:
    """What ``audit`` found: ``table`` (tidy: method, metric, value, lo, hi; a method is an
    attack or a control), ``verdict`` (a sentence per attack), ``samples`` (attack -> (images,
    labels)), ``failed`` (attack -> why)."""

    table: pd.DataFrame
    verdict: str
    samples: dict[str, tuple[torch.Tensor, torch.Tensor]]
    failed: dict[str, str] = field(default_factory=dict)

    def value(self, attack: str, metric: str) -> float:
        row = self.table[(self.table.method == attack) & (self.table.metric == metric)]
        if row.empty:
            raise KeyError(
                f"no {metric!r} for {attack!r}; attacks: {sorted(self.table.method.unique())}"
            )
        return float(row["value"].iloc[0])

    def save(self, folder) -> list[Path]:
        """The table as ``audit.csv``, the verdict as ``verdict.txt`` and a grid of each attack's
        reconstructions as ``<attack>.png``; returns the paths written."""
        from . import plotting

        folder = Path(folder)
        written = [folder / "audit.csv", folder / "verdict.txt"]
        with store.atomic_path(written[0]) as tmp:
            self.table.to_csv(tmp, index=False)
        with store.atomic_path(written[1]) as tmp:
            tmp.write_text(self.verdict + "\n")
        for name, (images, labels) in self.samples.items():
            classes = [str(k) for k in range(int(labels.max()) + 1)]
            rows = min(4, int(torch.bincount(labels).min()))
            fig = plotting.class_grid(images, labels, classes, rows=rows)
            fig.suptitle(name, x=0.01, ha="left", fontsize=10, fontweight="bold")
            written += plotting.save_figure(
                fig, folder / name, f"{name}: reconstructions of every class", formats=("png",)
            )
        return written


# An audit's settings, with literal defaults (the default profile's scale): reconstructions of
# each class, the generator attacks' steps, the judge's training, the bootstrap's resamples.
# Any registered attack's name may also key a dict of that attack's own settings. ``shadows``,
# ``shadow_steps`` and ``owner_recipe`` (how the model was trained, where known: a dict of
# ``RECIPE``'s keys) are the membership reference's (LiRA's shadow models).
DEFAULTS = {
    "per_class": 10,
    "generator_steps": 400,
    "evaluator_steps": 2000,
    "resamples": 1000,
    "eval_arch": "resnet",
    "eval_shift": 2,
    "batch_size": 128,
    "lr": 0.002,
    "shadows": 8,
    "shadow_steps": 600,
    "owner_recipe": None,
}

# What an owner may give of how the model was trained (LiRA's shadows copy it); ``shift`` and
# ``weight_decay`` as ``training.train_classifier`` takes them.
RECIPE = {"steps": int, "batch_size": int, "lr": float, "weight_decay": float, "shift": int}
rules.add(
    {
        "owner_recipe": (
            lambda v: v is None or (isinstance(v, dict) and set(v) <= set(RECIPE)),
            f"null, or a mapping of some of {', '.join(RECIPE)}",
        )
    }
)


def train_judge(images, labels, folder, settings: dict, seed: int, device) -> torch.nn.Module:
    """The independent judge for an audit: ``settings['eval_arch']`` (where the image sides are
    multiples of 4, else an MLP) trained on the training images, cached in ``<folder>/evaluators``
    under a hash of the data and its settings."""
    shape, num_classes = tuple(images.shape[1:]), int(labels.max()) + 1
    arch = settings["eval_arch"] if shape[1] % 4 == 0 and shape[2] % 4 == 0 else "mlp"
    steps, batch_size, lr, shift = (
        settings[k] for k in ("evaluator_steps", "batch_size", "lr", "eval_shift")
    )
    spec = {
        "arch": arch,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "shift": shift,
        "seed": seed + 1,
        "data": store.tensor_hash(images, labels),
    }
    path = Path(folder) / "evaluators" / f"{arch}_{store.config_hash(spec)}.safetensors"
    torch.manual_seed(seed + 1)
    net = build_classifier(arch, shape, num_classes)
    with store.exclusive(path):
        if path.exists():
            store.load_model(path, net)
            return net.eval()
        print(
            f"training the audit's evaluation classifier ({arch}, {steps} steps) -> {path}",
            flush=True,
        )
        training.train_classifier(
            net,
            images,
            labels,
            steps,
            batch_size,
            lr,
            seed + 1,
            device,
            desc="audit evaluator",
            shift=shift,
            announce=steps >= 500,
        )
        store.save_model(path, net.cpu(), spec)
    return net.eval()


def audit(
    model: torch.nn.Module,
    train,
    heldout,
    attacks=None,
    settings: dict | None = None,
    seed: int = 0,
    evaluator: torch.nn.Module | None = None,
    feature_layer: str | None = None,
    device: str = "auto",
    folder=None,
) -> Audit:
    """Reconstruct training data from ``model`` with every attack and say whether it leaks.

    ``train`` and ``heldout`` are pairs (images N x C x H x W in [0, 1], integer labels):
    the images the model was trained on, and images of the same classes it never saw.
    ``attacks`` (default: every registered attack that applies to this many classes) names the
    attacks. ``settings`` changes the audit's ``DEFAULTS`` (reconstructions per class, the
    generators' steps, the judge's training, the bootstrap) and, under an attack's name, that
    attack's own settings: ``{"per_class": 4, "deepinversion": {"steps": 500}}``;
    ``edge.audit_settings(profile)`` gives a profile's. ``evaluator`` is the independent judge
    (default: trained here on ``train``, cached in ``folder``, default ``runs/cpu``);
    ``feature_layer`` names the layer whose input is the model's penultimate features
    (default: its last ``nn.Linear``).
    """
    x_train, y_train = preflight.check_images("train", train)
    x_held, y_held = preflight.check_images("heldout", heldout)
    num_classes = int(torch.cat([y_train, y_held]).max()) + 1
    preflight.check_model(model, x_train, num_classes)
    names = list(attacks) if attacks is not None else registry.for_classes(num_classes)
    for name in names:
        registry.get(name)
    settings = dict(settings or {})
    unknown = sorted(k for k in settings if k not in DEFAULTS and k not in registry.ATTACKS)
    if unknown:
        raise ValueError(
            f"unknown audit setting(s) {unknown}; valid: {', '.join(DEFAULTS)}, or an attack's "
            f"name ({', '.join(registry.ATTACKS)}) keying a dict of its settings"
        )
    cfg = {**DEFAULTS, **{k: v for k, v in settings.items() if k in DEFAULTS}}
    rules.check(cfg, "audit settings")
    if x_held.shape[1:] != x_train.shape[1:]:
        raise ValueError(
            f"heldout images are {tuple(x_held.shape[1:])}, train images {tuple(x_train.shape[1:])}"
        )
    resolved = {
        n: registry.configure(n, {}, {**registry.budget(n, cfg), **settings.get(n, {})})
        for n in names
    }  # every attack's settings, checked before any work
    device = config.device({"device": device})
    _reference_split(y_held, num_classes)  # refuse too few held-out images before training a judge
    preflight.announce(model, x_train, resolved, device)
    folder = config.run_dir(config.DEFAULT_PROFILE) if folder is None else folder
    judge = (
        evaluator
        if evaluator is not None
        else train_judge(x_train, y_train, folder, cfg, seed, device)
    )
    return run_audit(
        model,
        (x_train, y_train),
        (x_held, y_held),
        resolved,
        cfg["per_class"],
        judge,
        seed,
        cfg["resamples"],
        device,
        feature_layer,
    )


def _reference_split(y_held: torch.Tensor, num_classes: int) -> int:
    counts = torch.bincount(y_held, minlength=num_classes)
    half = int(counts.min()) // 2
    if half < 4:
        raise ValueError(
            f"heldout needs at least 8 images of every class (half compared with the attacks, half "
            f"standing in for reconstructions), but class {int(counts.argmin())} has "
            f"{int(counts.min())}"
        )
    return half


def run_audit(
    model: torch.nn.Module,
    train,
    heldout,
    settings: dict,
    per_class: int,
    judge: torch.nn.Module,
    seed: int = 0,
    resamples: int = 1000,
    device="cpu",
    feature_layer: str | None = None,
) -> Audit:
    """``audit`` with every choice given as a value: ``settings`` maps each attack to run to its
    settings (``attacks.resolve``), ``per_class`` reconstructions of each class, ``judge`` the
    evaluation classifier, ``resamples`` the bootstrap's. ``train`` and ``heldout`` as in
    ``audit``."""
    (x_train, y_train), (x_held, y_held) = (
        preflight.check_images("train", train),
        preflight.check_images("heldout", heldout),
    )
    names, shape = list(settings), tuple(x_train.shape[1:])
    num_classes = int(torch.cat([y_train, y_held]).max()) + 1
    preflight.check_model(model, x_train, num_classes)
    device = torch.device(device)
    half = _reference_split(y_held, num_classes)
    ref = data.heldout_indices(y_held, half, seed)
    control = data.heldout_indices(y_held, half, seed + 1, exclude=ref)
    x_ref, y_ref = x_held[ref], y_held[ref]
    real_features = quality.penultimate_features(judge, x_ref, device)

    def score(name, images, labels, cost=None) -> list[dict]:
        values = metrics.attack_scores(
            images,
            labels,
            model,
            judge,
            (x_train, y_train),
            (x_ref, y_ref),
            real_features,
            seed,
            resamples,
            device,
        )
        values["images"] = len(images)
        if cost:
            values |= {k: float(v) for k, v in cost.items()}
            values["cpu_seconds_per_image"] = cost["cpu_seconds"] / len(images)
        rows = []
        for m, v in values.items():
            if m.endswith(("_lo", "_hi")):
                continue
            rows.append(
                {
                    "method": name,
                    "metric": m,
                    "value": v,
                    "lo": values.get(f"{m}_lo", math.nan),
                    "hi": values.get(f"{m}_hi", math.nan),
                }
            )
        return rows

    rows, samples, failed, skipped = [], {}, {}, {}
    needs_stats = any("class_stats" in registry.get(n).needs for n in names)
    stats = class_statistics(model, x_train, y_train, device=device) if needs_stats else None
    # one line across the attacks, weighted by their steps, so that its estimate of the time
    # left is in the attacks' own units rather than in attacks of very different cost
    steps = {n: max(1, int(settings[n].get("steps", 1))) for n in names}
    bar = tqdm(total=sum(steps.values()), desc="audit", unit="step", mininterval=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in names:
            bar.set_postfix_str(name, refresh=True)
            try:
                r = registry.reconstruct(
                    name,
                    model,
                    shape,
                    num_classes,
                    per_class,
                    settings[name],
                    seed,
                    device,
                    feature_layer,
                    class_stats=stats,
                )
            except sampling.DegenerateRun as err:
                failed[name] = str(err)
                continue
            finally:
                bar.update(steps[name])
            samples[name] = (r.images, r.labels)
            skipped[name] = r.skipped
            rows += score(name, r.images, r.labels, r.cost)
            rows += [
                {
                    "method": name,
                    "metric": f"skipped_{t}",
                    "value": 1.0,
                    "lo": math.nan,
                    "hi": math.nan,
                }
                for t in r.skipped
            ]
    bar.close()
    for w in caught:  # shown once each, after the progress bars
        warnings.warn(w.message, w.category, stacklevel=2)
    noise = torch.rand(len(control), *shape, generator=torch.Generator().manual_seed(seed))
    rows += score("control_heldout", x_held[control], y_held[control])
    rows += score("control_noise", noise, y_held[control])
    table = pd.DataFrame(rows)
    return Audit(table, _verdict(table, names, failed, skipped), samples, failed)


def _interval(t: pd.DataFrame, attack: str, metric: str, fmt: str) -> str:
    row = t[(t.method == attack) & (t.metric == metric)].iloc[0]
    return f"{fmt.format(row['value'])} [{fmt.format(row['lo'])}, {fmt.format(row['hi'])}]"


def leak_tests(t: pd.DataFrame, name: str) -> tuple[bool, bool]:
    """The verdict's two tests for attack ``name`` in an audit table ``t``: do its reconstructions
    sit closer to the training images than to held-out ones (the L2 difference's interval below
    0), and do they single training images out (the membership AUC's interval above 0.5)?"""
    l2 = t[(t.method == name) & (t.metric == "l2_diff")].iloc[0]
    auc = t[(t.method == name) & (t.metric == "membership_auc")].iloc[0]
    return bool(l2["hi"] < 0), bool(auc["lo"] > 0.5)


def leaks(t: pd.DataFrame, name: str) -> bool:
    """Whether the verdict says that attack ``name`` leaks: both of ``leak_tests`` pass."""
    return all(leak_tests(t, name))


def _verdict(t: pd.DataFrame, names, failed: dict, skipped: dict) -> str:
    def v(attack, metric):
        return float(t[(t.method == attack) & (t.metric == metric)]["value"].iloc[0])

    lines = []
    for name in names:
        if name in failed:
            lines.append(f"{name}: failed, so it says nothing either way. {failed[name]}")
            continue
        n = int(v(name, "images"))
        closer_lo = t[(t.method == name) & (t.metric == "l2_diff")]["lo"].iloc[0]
        closer, singles = leak_tests(t, name)
        evidence = (
            f"nearest-neighbour L2 to training minus to held-out images "
            f"{_interval(t, name, 'l2_diff', '{:+.3f}')}"
            f", Wilcoxon p = {v(name, 'l2_diff_p'):.2g}; membership AUC "
            f"{_interval(t, name, 'membership_auc', '{:.3f}')}, 0.5 = none"
        )
        if closer and singles:
            leak = (
                f"They leak training data: they sit closer to the training images than to "
                f"held-out ones and single training images out ({evidence})."
            )
        elif closer or singles:
            does = "sit closer to the training images" if closer else "single training images out"
            nor = (
                "do not single training images out"
                if closer
                else "sit no closer to them than to held-out ones"
            )
            leak = f"Weak evidence of leakage: they {does} but {nor} ({evidence})."
        elif closer_lo > 0:
            leak = (
                f"No sign of leakage: they sit farther from the training images than from "
                f"held-out ones "
                f"({evidence})."
            )
        else:
            leak = (
                f"No sign of leakage: they sit as close to held-out images as to training "
                f"images ({evidence})."
            )
        skip = f" Skipped on this model: {', '.join(skipped[name])}." if skipped.get(name) else ""
        lines.append(
            f"{name}: the evaluator recognises {v(name, 'evaluator_accuracy'):.0%} of its {n} "
            f"reconstructions "
            f"(real held-out images: {v('control_heldout', 'evaluator_accuracy'):.0%}), the target "
            f"{v(name, 'target_accuracy'):.0%}; precision {v(name, 'precision'):.2f}, recall "
            f"{v(name, 'recall'):.2f} (real held-out images: "
            f"{v('control_heldout', 'precision'):.2f}, "
            f"{v('control_heldout', 'recall'):.2f}). {leak}{skip}"
        )
    lines.append(
        f"control_heldout (real images the model never saw, in place of reconstructions): "
        f"membership AUC "
        f"{_interval(t, 'control_heldout', 'membership_auc', '{:.3f}')}, L2 difference "
        f"{_interval(t, 'control_heldout', 'l2_diff', '{:+.3f}')}: the spread that no leakage "
        f"gives."
    )
    return "\n".join(lines)
