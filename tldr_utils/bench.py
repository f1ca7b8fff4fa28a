"""``make bench``: what one generator step costs for plain inversion and for full TLDR,
how fast a trained generator samples, and the peak memory of each.

Run as ``python -m tldr_utils.bench --profile cpu``; writes ``runs/<profile>/bench.json``.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import torch

from . import config, inversion, store
from .models import build_classifier


def _peak_mib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # kilobytes on Linux


def _time_steps(net, shape, weights, cfg, device, steps: int) -> float:
    """Seconds per generator step, after one warm-up step."""
    kwargs = dict(conditioning=cfg.conditioning, hot=cfg.hot, batch_size=cfg.batch_size, lr=cfg.lr,
                  epsilon=cfg.epsilon, perturbation=cfg.perturbation, shift=cfg.shift, device=device, desc="bench")
    inversion.train_generator(net, shape, 10, weights, steps=1, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    inversion.train_generator(net, shape, 10, weights, steps=steps, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def run(profile: str, arch: str = "cnn", shape=(1, 28, 28), steps: int = 20) -> dict:
    cfg_inv, cfg_tldr = config.settings(profile, "invert"), config.settings(profile, "reconstruct")
    device = config.device(cfg_inv)
    torch.manual_seed(0)
    net = build_classifier(arch, shape).eval()
    rows = []
    for method, cfg in (("inversion", cfg_inv), ("tldr", cfg_tldr)):
        seconds = _time_steps(net, shape, cfg.weights, cfg, device, steps)
        rows.append({"what": f"{method} step (batch {cfg.batch_size})", "seconds": seconds,
                     "peak_mib": _peak_mib(device)})
    G, _ = inversion.train_generator(net, shape, 10, {"ce": 1.0}, steps=1, device=device)
    inversion.sample(G, 10, device=device)  # warm-up
    start = time.perf_counter()
    images, _ = inversion.sample(G, 200, device=device)
    rate = len(images) / (time.perf_counter() - start)
    rows.append({"what": "sampling (images/s)", "seconds": 1 / rate, "images_per_s": rate,
                 "peak_mib": _peak_mib(device)})
    result = {"profile": profile, "arch": arch, "shape": list(shape), "device": str(device),
              "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "tldr_over_inversion": rows[1]["seconds"] / rows[0]["seconds"], "rows": rows,
              "environment": store.environment()}
    store.write_json(config.run_dir(profile) / "bench.json", result)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default=config.DEFAULT_PROFILE, choices=config.profiles())
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    r = run(args.profile, args.arch, steps=args.steps)
    print(f"{'what':<32}{'s/step':>10}{'peak MiB':>10}")
    for row in r["rows"]:
        print(f"{row['what']:<32}{row['seconds']:>10.4f}{row['peak_mib']:>10.0f}")
    print(f"TLDR step / inversion step: {r['tldr_over_inversion']:.2f}x on {r['device']} "
          f"({r['threads']} threads); sampling {r['rows'][2]['images_per_s']:.0f} images/s "
          f"-> {config.run_dir(args.profile) / 'bench.json'}")


if __name__ == "__main__":
    main()
