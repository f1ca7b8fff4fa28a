"""``make bench-audit``: what the audit command costs a user, end to end, on the FashionMNIST
CNN of Figures 3 and 4.

The target is taken from the profile's run folder (trained there first when missing) and
handed over as a user would: a model file, its weights as safetensors, and its training and
held-out images as ``.npz`` files, in a temporary folder. Then ``python -m tldr_utils audit``
runs in a fresh process with an empty run folder, so that the judge is trained as it would be
for a newcomer, and its wall and CPU time (its own and its children's) are recorded in
``runs/<profile>/bench_audit.json``.

Run as ``python -m tldr_utils.bench_audit --profile smoke``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

from . import config, data, store, targets

MODEL_FILE = """from tldr_utils.models import CNN


class Net(CNN):
    def __init__(self, num_classes=10):
        super().__init__((1, 28, 28), num_classes)
"""


def _npz(path: Path, images, labels, classes) -> Path:
    uint8 = (images * 255).round().byte().numpy()
    np.savez(path, images=uint8, labels=labels.numpy(), classes=np.array(classes))
    return path


def audit_cost(profile: str, dataset: str = "fashion_mnist") -> dict:
    """Wall and CPU seconds of the audit command at ``profile`` on the figures' ``dataset``
    CNN, with what it was run on."""
    cfg = config.settings(profile, "inversion")
    audit = config.settings(profile, "audit")
    recipe = config.settings(profile, "train_targets")
    run = config.run_dir(profile)
    net, _ = targets.get(run, targets.spec(recipe, dataset, "cnn", cfg.train_size, cfg.seed))
    train, test = data.load_dataset(dataset, "train"), data.load_dataset(dataset, "test")
    idx = targets.training_indices(train, cfg.train_size, cfg.seed)
    held = data.heldout_indices(test.labels, audit.heldout_per_class, audit.seed)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "my_model.py").write_text(MODEL_FILE)
        save_file(net.state_dict(), tmp / "model.safetensors")
        _npz(tmp / "train.npz", train.float()[idx], train.labels[idx], train.classes)
        _npz(tmp / "heldout.npz", test.float()[held], test.labels[held], test.classes)
        command = [
            sys.executable, "-m", "tldr_utils", "audit",
            "--model", f"{tmp / 'my_model.py'}:Net", "--weights", str(tmp / "model.safetensors"),
            "--train", str(tmp / "train.npz"), "--heldout", str(tmp / "heldout.npz"),
            "--out", str(tmp / "report"), "--profile", profile,
        ]  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "TLDR_RUNS": str(tmp / "runs")})
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        verdict = json.loads((tmp / "report" / "verdict.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "profile": profile,
        "dataset": dataset,
        "train_images": len(idx),
        "heldout_images": len(held),
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "cores": os.cpu_count(),
        "load_before": load,
        # what the audit found, kept beside its cost
        "leaking_attacks": verdict["leaking_attacks"],
        "membership_auc": {k: v["auc"] for k, v in verdict["membership"].items()},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="smoke", choices=config.profiles())
    args = parser.parse_args(argv)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cores:
        print(f"WARNING: the machine is loaded (1-minute load {load:.1f} on {cores} cores)")
    r = audit_cost(args.profile)
    print(
        f"the audit command at {r['profile']} on the {r['dataset']} CNN ({r['train_images']:,} "
        f"training, {r['heldout_images']:,} held-out images): {r['wall_seconds'] / 60:.1f} min "
        f"wall, {r['cpu_seconds'] / 60:.1f} min CPU on {r['cores']} cores"
    )
    store.write_json(config.run_dir(args.profile) / "bench_audit.json", r)
    print(f"-> {config.run_dir(args.profile) / 'bench_audit.json'}")


if __name__ == "__main__":
    main()
