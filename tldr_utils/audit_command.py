"""The audit as a command over a user's files: ``python -m tldr_utils audit --model my_model.py:Net
--weights model.safetensors --train DIR_OR_NPZ --heldout DIR_OR_NPZ --out report/``.

It runs ``audit`` (every reconstruction attack, judged against the training and the held-out
images) and, beside it, the standard membership reference (``membership``: the loss attack and
offline LiRA), then writes ``report/``: ``index.html`` (self-contained, images embedded),
``verdict.json``, ``verdict.txt``, ``audit.csv`` and a grid per attack. The folder is written
under a temporary name and renamed into place, so it is never half-written.
"""

from __future__ import annotations

import base64
import html
import io
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

# noqa: E402
from . import __version__, auditing, config, data, edge, membership, metrics, store, userfiles

SHOWN = [
    "evaluator_accuracy",
    "target_accuracy",
    "precision",
    "recall",
    "l2_diff",
    "membership_auc",
]


def parse_recipe(text: str | None) -> dict | None:
    """``"steps=3000,batch_size=128,lr=0.01"`` as a dict of ``auditing.RECIPE``'s keys;
    ``None`` for none."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key not in auditing.RECIPE:
            raise ValueError(
                f"--recipe part {part.strip()!r} is not KEY=VALUE with KEY one of "
                f"{', '.join(auditing.RECIPE)}; e.g. --recipe steps=3000,batch_size=128,lr=0.01"
            )
        try:
            out[key] = auditing.RECIPE[key](value)
        except ValueError:
            kind = "an integer" if auditing.RECIPE[key] is int else "a number"
            raise ValueError(f"--recipe {key}={value!r} is not {kind}") from None
        if out[key] < 0 or (key in ("steps", "batch_size", "lr") and out[key] == 0):
            raise ValueError(f"--recipe {key}={value} must be positive")
    return out


def membership_reference(
    model, model_fn, train, heldout, settings: dict, seed: int, device
) -> dict:
    """The loss attack and offline LiRA: members are training images, non-members half of the
    held-out images; the other half is the attacker's data that LiRA's shadows train on, by
    ``settings['owner_recipe']`` where the owner gives it (else a default recipe)."""
    (x, y), (xh, yh) = train, heldout
    probes = data.heldout_indices(yh, max(1, int(torch.bincount(yh).min()) // 2), seed)
    rest = torch.ones(len(yh), dtype=torch.bool)
    rest[probes] = False
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[: len(probes)]
    members, nonmembers = (x[pick], y[pick]), (xh[probes], yh[probes])
    out = {
        "loss": membership.loss_attack(
            model, members, nonmembers, seed, settings["resamples"], device
        )
    }
    recipe = {
        "steps": settings["shadow_steps"],
        "batch_size": settings["batch_size"],
        "lr": settings["lr"],
        **(settings.get("owner_recipe") or {}),
    }
    out["lira"] = membership.lira_offline(
        model,
        model_fn,
        members,
        nonmembers,
        (xh[rest], yh[rest]),
        settings["shadows"],
        recipe,
        seed,
        settings["resamples"],
        device,
    )
    return out


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _triptych(images, labels, train, heldout, classes, count: int = 8) -> str:
    """Reconstructions (one per class first), each above its nearest training image and its
    nearest held-out image of the same class, with their SSIM: a PNG as base64."""
    order = torch.cat([torch.nonzero(labels == k).flatten()[:1] for k in labels.unique()])
    order = torch.cat([order, torch.arange(len(labels))])[:count]
    order = list(dict.fromkeys(order.tolist()))[:count]
    q, ql = images[order], labels[order]
    near = {
        side: metrics.nearest(q, ql, *ref)
        for side, ref in (("train", train), ("held-out", heldout))
    }
    fig, axes = plt.subplots(3, len(order), figsize=(1.2 * len(order), 3.9), squeeze=False)
    for j in range(len(order)):
        shown = [(q[j], f"{classes[int(ql[j])]}")]
        for side, ref in (("train", train), ("held-out", heldout)):
            idx = int(near[side]["index"][j])
            shown.append((ref[0][idx], f"{side} {float(near[side]['ssim'][j]):.2f}"))
        for i, (img, text) in enumerate(shown):
            ax = axes[i][j]
            ax.imshow(
                img.permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1
            )
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlabel(text, fontsize=7)
    axes[0][0].set_ylabel("attack", fontsize=8)
    axes[1][0].set_ylabel("nearest train", fontsize=8)
    axes[2][0].set_ylabel("nearest held-out", fontsize=8)
    return _png(fig)


def _numbers(table, name: str) -> str:
    part = table[(table.method == name) & table.metric.isin(SHOWN)].set_index("metric")
    rows = []
    for metric in SHOWN:
        if metric in part.index:
            r = part.loc[metric]
            span = "" if r.isna()["lo"] else f" [{r['lo']:.3f}, {r['hi']:.3f}]"
            rows.append(f"<tr><td>{metric}</td><td>{r['value']:.3f}{span}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _membership_table(reference: dict) -> str:
    rows = []
    for name, r in reference.items():
        cells = [
            f"{r[m]:.3f} [{r[m + '_lo']:.3f}, {r[m + '_hi']:.3f}]"
            for m in ("auc", "tpr_at_0.01_fpr", "tpr_at_0.001_fpr")
        ]
        rows.append(f"<tr><td>{name}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "<tr><th>attack</th><th>AUC</th><th>TPR at 1% FPR</th><th>TPR at 0.1% FPR</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _verdict_line(line: str) -> str:
    """One attack's sentence of the verdict as a list item, its name in bold."""
    name, sep, rest = line.partition(": ")
    if not sep or " " in name:
        return f"<li>{html.escape(line)}</li>" if line.strip() else ""
    return f"<li><b>{html.escape(name)}</b>: {html.escape(rest)}</li>"


def page(
    report: auditing.Audit, leaked: list, reference: dict, train, heldout, classes, provenance: dict
) -> str:
    """``index.html``: the verdict in plain words first (``leaked``: the attacks that leak), then
    each attack's pictures and numbers, the controls, the membership reference, what was skipped,
    and the provenance."""
    headline = (
        f"Leakage found: {', '.join(leaked)} recovered images closer to the training data than to "
        "held-out data."
        if leaked
        else "No attack recovered images closer to the training data than to held-out images of "
        "the "
        "same classes."
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Audit</title><style>"
        "body{font-family:sans-serif;max-width:980px;margin:2em auto;line-height:1.4}"
        "td,th{padding:2px 10px;text-align:left}li{margin-bottom:.4em}img{max-width:100%}"
        "pre{white-space:pre-wrap}"
        "</style></head><body>",
        f"<h1>Audit of a classifier</h1><p class='headline'><b>{html.escape(headline)}</b></p>",
        "<ul class='verdict'>" + "".join(map(_verdict_line, report.verdict.splitlines())) + "</ul>",
    ]
    for name, (images, labels) in report.samples.items():
        parts += [
            f"<h2>{html.escape(name)}</h2>",
            f"<img alt='{name}' "
            f"src='data:image/png;base64,{_triptych(images, labels, train, heldout, classes)}'>",
            _numbers(report.table, name),
        ]
    parts += ["<h2>Controls</h2>"] + [
        f"<h3>{c}</h3>" + _numbers(report.table, c) for c in auditing.CONTROLS
    ]
    lira = reference["lira"]
    how = ", ".join(f"{k} {lira[k]}" for k in auditing.RECIPE if k in lira)
    how = (
        f"the owner's recipe ({how})"
        if provenance["settings"].get("owner_recipe")
        else f"a default recipe ({how}; the owner's is unknown, and a different one weakens LiRA: "
        f"give it with <code>--recipe</code>)"
    )
    parts += [
        "<h2>Membership reference</h2><p>Can an attacker tell training images from held-out ones "
        "by the model's outputs? The loss attack, and offline LiRA with shadow models trained on "
        f"held-out images only, by {how}.</p>",
        _membership_table(reference),
    ]
    skipped = report.table[report.table.metric.str.startswith("skipped_")]
    notes = [
        f"{r.method}: skipped {r.metric.removeprefix('skipped_')}" for r in skipped.itertuples()
    ]
    notes += [f"{n}: failed ({why})" for n, why in report.failed.items()]
    parts += [
        "<h2>Skipped or failed</h2><ul>"
        + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
        + ("" if notes else "<li>nothing</li>")
        + "</ul>"
    ]
    parts += [
        "<h2>Provenance</h2><pre>" + html.escape(json.dumps(provenance, indent=1)) + "</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def audit_and_report(
    model: torch.nn.Module,
    model_fn,
    train,
    heldout,
    classes,
    out,
    settings: dict,
    seed: int = 0,
    device: str = "auto",
    source: dict | None = None,
    folder=None,
) -> tuple[auditing.Audit, dict]:
    """What the command does once the files are read, for a model in hand: ``audit`` with
    ``settings`` (``edge.audit_settings(profile)``), the membership reference (LiRA's shadows
    are built by ``model_fn()``), and ``out`` written whole: ``index.html``, ``verdict.json``,
    ``verdict.txt``, ``audit.csv`` and a grid per attack. ``source`` says where the model came
    from, for the provenance; ``folder`` caches the judge (default ``runs/cpu``). Returns the
    audit and the verdict as written to ``verdict.json``."""
    (x, y), (xh, yh) = train, heldout
    dev = config.device({"device": device})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    found = auditing.audit(
        model, (x, y), (xh, yh), settings=settings, seed=seed, device=device, folder=folder
    )
    reference = membership_reference(model, model_fn, (x, y), (xh, yh), settings, seed, dev)
    leaked = [n for n in found.samples if auditing.leaks(found.table, n)]
    provenance = {
        **(source or {}),
        "train": {"n": len(x), "sha256": store.tensor_hash(x, y)},
        "heldout": {"n": len(xh), "sha256": store.tensor_hash(xh, yh)},
        "classes": list(classes),
        "settings": settings,
        "seed": seed,
        "tldr_utils": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    verdict = {
        "leaks": bool(leaked),
        "leaking_attacks": leaked,
        "membership_fires": any(r["auc_lo"] > 0.5 for r in reference.values()),
        "membership": reference,
        "verdict": found.verdict,
        "provenance": provenance,
    }
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        tmp = Path(tmp) / "report"
        found.save(tmp)
        (tmp / "verdict.json").write_text(json.dumps(verdict, indent=1, default=float) + "\n")
        (tmp / "index.html").write_text(
            page(found, leaked, reference, (x, y), (xh, yh), classes, provenance)
        )
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    return found, verdict


def screenshot(page_file, png, width: int = 1000, height: int = 900) -> Path:
    """The first screen of a report as a PNG, drawn by headless Chromium (``apt-get install
    chromium``)."""
    browser = shutil.which("chromium")
    if browser is None:
        raise FileNotFoundError("chromium is not installed: apt-get install -y chromium")
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            Path(page_file).resolve().as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return png


def run(
    model: str,
    weights,
    train,
    heldout,
    out,
    profile: str = "smoke",
    fail_on_leak: bool = False,
    seed: int = 0,
    device: str = "auto",
    recipe: str | None = None,
) -> int:
    """The command: read and check the files, then ``audit_and_report``; 2 when
    ``fail_on_leak`` and anything leaks. ``recipe`` (``--recipe``) is how the model was trained,
    where the owner knows it: LiRA's shadows are trained the same way."""
    settings = edge.audit_settings(profile) | {"owner_recipe": parse_recipe(recipe)}
    config.device({"device": device})  # a missing GPU is named before anything loads
    x, y, classes = userfiles.load_images(train)
    xh, yh, held_classes = userfiles.load_images(heldout)
    if classes != held_classes:
        raise ValueError(
            f"--train has classes {list(classes)}, --heldout {list(held_classes)}: give both the "
            f"same"
        )
    if x.shape[1:] != xh.shape[1:]:
        raise ValueError(
            f"--train images are {tuple(x.shape[1:])}, --heldout images {tuple(xh.shape[1:])}"
        )
    net, model_fn = userfiles.load_model(model, weights, len(classes))
    source = {
        "model": model,
        "weights": str(weights),
        "profile": profile,
        "train_path": str(train),
        "heldout_path": str(heldout),
    }
    found, verdict = audit_and_report(
        net,
        model_fn,
        (x, y),
        (xh, yh),
        classes,
        out,
        settings,
        seed,
        device,
        source,
        folder=config.run_dir(profile),
    )
    print(f"report: {Path(out) / 'index.html'}\n{found.verdict}")
    return 2 if fail_on_leak and (verdict["leaks"] or verdict["membership_fires"]) else 0


def add_parser(commands) -> None:
    p = commands.add_parser(
        "audit", help="audit a classifier from its files: a report and a verdict"
    )
    p.add_argument(
        "--model",
        required=True,
        help="FILE.py:Class, the model's class (built with no arguments, or with num_classes)",
    )
    p.add_argument(
        "--weights", required=True, help="its weights: .safetensors, or a torch.save'd state dict"
    )
    p.add_argument(
        "--train",
        required=True,
        help="its training images: a folder of class subfolders, or an .npz",
    )
    p.add_argument(
        "--heldout", required=True, help="images of the same classes it never saw, the same way"
    )
    p.add_argument(
        "--out", required=True, help="the report folder to write (replaced when it exists)"
    )
    p.add_argument(
        "--profile", default="smoke", choices=config.profiles(), help="the scale (default smoke)"
    )
    p.add_argument(
        "--recipe",
        metavar="KEY=VALUE,...",
        help="how the model was trained, if you know (steps, batch_size, lr, weight_decay, "
        "shift): LiRA's shadow models are then trained the same way, "
        "e.g. steps=3000,batch_size=128,lr=0.01",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--fail-on-leak", action="store_true", help="exit with status 2 when anything leaks"
    )


def main(args) -> int:
    try:
        return run(
            args.model,
            args.weights,
            args.train,
            args.heldout,
            args.out,
            args.profile,
            args.fail_on_leak,
            args.seed,
            args.device,
            args.recipe,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"audit: {err}", file=sys.stderr)
        return 1
