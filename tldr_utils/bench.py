"""``make bench``: what a generator step costs for plain inversion and for full TLDR, how
fast a trained generator samples, what a DeepInversion step costs, and from these the
CPU cost per image of each attack (a generator's training amortised over 1,000 and
10,000 images, against DeepInversion's per-batch optimisation).

Each case runs in its own fresh process, so its peak memory is its own and not
the high-water mark of every case before it. A case is timed ``repeats`` times
(after one warm-up); the table gives the median and the range of wall time and of
the process's CPU time (CPU time above wall time means several threads worked).
The target is an untrained CNN of the dataset's shape: the cost of a step does
not depend on the values of its weights. A loaded machine makes every number
slower and noisier, so the load is recorded and a high one is warned about.

Then the sweep runner, side by side in one run: the same ``k`` generator cells (TLDR at the
profile's batch, on untrained CNN and MLP targets) run one after another in this process with
every core, and on one local worker process per core with one thread each; with the wall and
CPU seconds of each (workers included), the generator steps per second, the peak resident
memory of any one process, and the ratio of the wall times. And a generator attack drawn from
a generator cached by an earlier run against one trained anew (``attacks.generator``). And an
inversion generator step with torch's dropout against the library's cheaper mask draw.

Run as ``python -m tldr_utils.bench --profile cpu``; writes ``runs/<profile>/bench.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import statistics
import tempfile
import time

import torch

from . import attacks, config, edge, inversion, models, sampling, store, sweep
from .models import build_classifier

CASES = ("inversion", "tldr", "sampling", "deepinversion")
AMORTISED = (1000, 10000)  # image counts at which a generator's training is spread over its images


def _generator_kwargs(cfg, device) -> dict:
    return dict(
        conditioning=cfg.conditioning,
        hot=cfg.hot,
        soft_scale=cfg.soft_scale,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        epsilon=cfg.epsilon,
        perturbation=cfg.perturbation,
        shift=cfg.shift,
        warmup=cfg.warmup,
        target_dropout=cfg.target_dropout,
        device=device,
        desc="bench",
    )


def _measure(
    case: str, profile: str, arch: str, shape: tuple, repeats: int, steps: int, threads: int
) -> dict:
    """Time one case in this (fresh) process: per repeat, wall and CPU seconds per unit of work."""
    torch.set_num_threads(threads)
    cfg = config.settings(profile, "tldr" if case == "tldr" else "inversion")
    device = config.device(cfg)
    torch.manual_seed(0)
    net = build_classifier(arch, shape).eval()
    if case == "sampling":
        G, _ = inversion.train_generator(net, shape, 10, {"ce": 1.0}, steps=1, device=device)
        per_class, units = 20, 200

        def work():
            sampling.sample(G, per_class, device=device)

        what, unit = "sampling (200 images)", "ms/image"
    elif case == "deepinversion":
        di = edge.attack_settings(profile, "deepinversion", {"steps": steps})
        units = steps

        def work():  # one batch: batch_size images, each class batch_size / 10 times
            attacks.reconstruct(
                "deepinversion", net, shape, 10, di["batch_size"] // 10, di, device=device
            )

        what, unit = f"deepinversion step (batch {di['batch_size']})", "ms/step"
    else:
        kwargs = _generator_kwargs(cfg, device)
        units = steps

        def work():
            inversion.train_generator(net, shape, 10, cfg.weights, steps=steps, **kwargs)

        what, unit = f"{case} step (batch {cfg.batch_size})", "ms/step"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    work()  # warm-up: first calls allocate and pick kernels
    walls, cpus = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize()
        walls.append((time.perf_counter() - wall) / units * 1000)
        cpus.append((time.process_time() - cpu) / units * 1000)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    )  # kilobytes on Linux
    return {
        "case": case,
        "what": what,
        "unit": unit,
        "wall": walls,
        "cpu": cpus,
        "peak_mib": peak,
        "peak_of": "GPU memory allocated"
        if device.type == "cuda"
        else "resident memory of the case's process",
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(
    profile: str,
    arch: str = "cnn",
    shape=(1, 28, 28),
    repeats: int = 5,
    steps: int = 10,
    threads: int | None = None,
) -> dict:
    if repeats < 5:
        raise ValueError(f"repeats must be at least 5 for a median and a spread, got {repeats}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    threads = threads or torch.get_num_threads()
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    spawn = multiprocessing.get_context("spawn")  # a fresh process per case: its own peak memory
    rows = []
    for case in CASES:
        with spawn.Pool(1) as pool:
            row = pool.apply(_measure, (case, profile, arch, tuple(shape), repeats, steps, threads))
        rows.append({**row, "wall_ms": _summary(row["wall"]), "cpu_ms": _summary(row["cpu"])})
    inv, tldr = rows[0]["wall_ms"], rows[1]["wall_ms"]
    result = {
        "profile": profile,
        "arch": arch,
        "shape": list(shape),
        "target": f"untrained {arch}",
        "repeats": repeats,
        "steps_per_repeat": steps,
        "threads": threads,
        "cores": cores,
        "load_before": load,
        "machine": platform.processor() or platform.machine(),
        "tldr_over_inversion": {
            "median": tldr["median"] / inv["median"],
            "min": tldr["min"] / inv["max"],
            "max": tldr["max"] / inv["min"],
        },
        "per_image": per_image_costs(profile, {r["case"]: r for r in rows}),
        "rows": rows,
        "environment": store.environment(),
    }
    store.write_json(config.run_dir(profile) / "bench.json", result)
    return result


def per_image_costs(profile: str, rows: dict) -> dict:
    """CPU milliseconds per image of each attack at the profile's settings, from the measured
    medians: a generator's training spread over ``AMORTISED`` images plus the draws of each
    image (``oversample`` of them), against DeepInversion, whose every batch is optimised anew."""
    di = edge.attack_settings(profile, "deepinversion")
    out = {
        "deepinversion": di["steps"] * rows["deepinversion"]["cpu_ms"]["median"] / di["batch_size"]
    }
    sample = rows["sampling"]["cpu_ms"]["median"]
    for method in ("inversion", "tldr"):
        cfg = edge.attack_settings(profile, method)
        for n in AMORTISED:
            out[f"{method}_at_{n}"] = (
                cfg["steps"] * rows[method]["cpu_ms"]["median"] / n + cfg["oversample"] * sample
            )
            out[f"deepinversion_over_{method}_at_{n}"] = (
                out["deepinversion"] / out[f"{method}_at_{n}"]
            )
    return out


def generator_cell(arch: str, steps: int, batch_size: int, seed: int) -> sweep.Result:
    """A bench cell: a TLDR generator trained for ``steps`` against an untrained ``arch`` target."""
    torch.manual_seed(seed)
    net = build_classifier(arch, (1, 28, 28)).eval()
    start = time.perf_counter()
    attacks.reconstruct(
        "tldr",
        net,
        (1, 28, 28),
        10,
        2,
        {"steps": steps, "batch_size": batch_size, "require_learned": False},
        seed,
    )
    return sweep.Result([{"arch": arch, "seed": seed, "seconds": time.perf_counter() - start}])


def sweep_side_by_side(profile: str, k: int = 4, steps: int = 40) -> dict:
    """The same ``k`` generator cells in this process, then on one worker per core (see the
    module's text)."""
    cores = len(os.sched_getaffinity(0))
    batch = edge.attack_settings(profile, "tldr")["batch_size"]
    out = {"cells": k, "steps_per_cell": steps, "batch_size": batch, "cores": cores}
    for backend, workers, threads in (("inline", 1, cores), ("processes", cores, 1)):
        cells = [
            sweep.Cell(
                "tldr_utils.bench:generator_cell",
                {"arch": ("cnn", "mlp")[i % 2], "steps": steps, "batch_size": batch, "seed": i},
                cpus=threads,
            )
            for i in range(k)
        ]
        before, children = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        wall = time.perf_counter()
        sweep.run(cells, backend=backend, workers=workers, desc=f"bench sweep ({backend})")
        wall = time.perf_counter() - wall
        after, children_after = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        cpu = sum(
            getattr(a, f) - getattr(b, f)
            for a, b in ((after, before), (children_after, children))
            for f in ("ru_utime", "ru_stime")
        )
        out[backend] = {
            "workers": workers,
            "threads_per_cell": threads,
            "wall_seconds": wall,
            "cpu_seconds": cpu,
            "steps_per_second": k * steps / wall,
            "peak_mib": max(after.ru_maxrss, children_after.ru_maxrss) / 2**10,
        }
    out["inline_over_processes"] = out["inline"]["wall_seconds"] / out["processes"]["wall_seconds"]
    return out


def reuse_side_by_side(profile: str, steps: int = 40) -> dict:
    """A generator attack trained anew against the same attack drawn from the generator a first run
    cached."""
    cfg = {**edge.attack_settings(profile, "tldr"), "steps": steps, "require_learned": False}
    torch.manual_seed(0)
    net = build_classifier("cnn", (1, 28, 28)).eval()
    with tempfile.TemporaryDirectory() as folder:
        wall = time.perf_counter()
        attacks.reconstruct("tldr", net, (1, 28, 28), 10, 10, cfg, 0, cache=folder)
        trained = time.perf_counter() - wall
        wall = time.perf_counter()
        attacks.reconstruct(
            "tldr", net, (1, 28, 28), 10, 20, cfg, 0, cache=folder
        )  # another number of images
        reused = time.perf_counter() - wall
    return {
        "steps": steps,
        "trained_seconds": trained,
        "reused_seconds": reused,
        "ratio": trained / reused,
    }


def dropout_side_by_side(profile: str, steps: int = 20) -> dict:
    """Inversion generator steps with torch's own dropout (``F.dropout``, a ``bernoulli_`` mask)
    against the library's (``models.dropout``, a ``torch.rand`` mask), in this process."""
    cfg = config.settings(profile, "inversion")
    torch.manual_seed(0)
    net = build_classifier("cnn", (1, 28, 28)).eval()
    kwargs = _generator_kwargs(cfg, config.device(cfg))
    out = {"steps": steps, "batch_size": cfg.batch_size}
    for name, fn in (
        ("torch", lambda x, p, training=True: torch.nn.functional.dropout(x, p, training)),
        ("library", models.dropout),
    ):
        original, models.dropout = models.dropout, fn
        try:
            inversion.train_generator(
                net, (1, 28, 28), 10, cfg.weights, steps=2, **kwargs
            )  # warm-up
            wall, cpu = time.perf_counter(), time.process_time()
            inversion.train_generator(net, (1, 28, 28), 10, cfg.weights, steps=steps, **kwargs)
            out[name] = {
                "wall_ms_per_step": (time.perf_counter() - wall) / steps * 1e3,
                "cpu_ms_per_step": (time.process_time() - cpu) / steps * 1e3,
            }
        finally:
            models.dropout = original
    out["torch_over_library"] = (
        out["torch"]["wall_ms_per_step"] / out["library"]["wall_ms_per_step"]
    )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=config.DEFAULT_PROFILE, choices=config.profiles())
    parser.add_argument("--arch", default="cnn")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed repeats per case (at least 5)"
    )
    parser.add_argument("--steps", type=int, default=10, help="generator steps per timed repeat")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    args = parser.parse_args(argv)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cores:
        print(
            f"WARNING: the machine is loaded (1-minute load {load:.1f} on {cores} cores): "
            "the timings will be slower and noisier than on a quiet machine"
        )
    r = run(args.profile, args.arch, repeats=args.repeats, steps=args.steps, threads=args.threads)
    print(
        f"target: {r['target']} {tuple(r['shape'])}; {r['threads']} threads on {r['cores']} cores; "
        f"{r['repeats']} repeats per case; median [min - max]"
    )
    print(f"{'what':<32}{'unit':>9}{'wall':>24}{'CPU':>24}{'peak MiB':>10}")
    for row in r["rows"]:
        w, c = row["wall_ms"], row["cpu_ms"]
        print(
            f"{row['what']:<32}{row['unit']:>9}"
            f"{w['median']:>10.2f} [{w['min']:.2f} - {w['max']:.2f}]".rjust(24)
            + f"{c['median']:>10.2f} [{c['min']:.2f} - {c['max']:.2f}]".rjust(24)
            + f"{row['peak_mib']:>10.0f}"
        )
    ratio = r["tldr_over_inversion"]
    print(
        f"TLDR step / inversion step (wall): {ratio['median']:.2f}x [{ratio['min']:.2f} - "
        f"{ratio['max']:.2f}]; "
        f"peak MiB is the {r['rows'][0]['peak_of']}"
    )
    cost = r["per_image"]
    print(
        f"CPU ms per image at the profile's settings: deepinversion {cost['deepinversion']:.0f}; "
        + "; ".join(
            f"{m} {cost[f'{m}_at_{n}']:.1f} over {n:,} images "
            f"(deepinversion {cost[f'deepinversion_over_{m}_at_{n}']:.0f}x)"
            for m in ("inversion", "tldr")
            for n in AMORTISED
        )
    )
    r["sweep"] = side = sweep_side_by_side(args.profile)
    print(
        f"sweep runner: {side['cells']} TLDR generator cells of {side['steps_per_cell']} steps "
        f"(batch "
        f"{side['batch_size']}, CNN and MLP targets) on {side['cores']} cores"
    )
    print(
        f"{'backend':<12}{'workers':>8}{'threads':>8}{'wall s':>9}{'CPU s':>9}"
        f"{'steps/s':>9}{'peak MiB':>10}"
    )
    for backend in ("inline", "processes"):
        b = side[backend]
        print(
            f"{backend:<12}{b['workers']:>8}{b['threads_per_cell']:>8}{b['wall_seconds']:>9.1f}"
            f"{b['cpu_seconds']:>9.1f}{b['steps_per_second']:>9.2f}{b['peak_mib']:>10.0f}"
        )
    print(f"inline wall / processes wall: {side['inline_over_processes']:.2f}x")
    r["reuse"] = reuse = reuse_side_by_side(args.profile)
    print(
        f"a TLDR attack of {reuse['steps']} steps: trained anew {reuse['trained_seconds']:.1f}s, "
        f"drawn again from "
        f"its cached generator {reuse['reused_seconds']:.2f}s ({reuse['ratio']:.0f}x)"
    )
    r["dropout"] = drop = dropout_side_by_side(args.profile)
    print(
        f"an inversion generator step (batch {drop['batch_size']}) with torch's dropout "
        f"{drop['torch']['wall_ms_per_step']:.0f} ms (CPU "
        f"{drop['torch']['cpu_ms_per_step']:.0f}), with the "
        f"library's {drop['library']['wall_ms_per_step']:.0f} ms (CPU "
        f"{drop['library']['cpu_ms_per_step']:.0f}): "
        f"{drop['torch_over_library']:.2f}x"
    )
    store.write_json(config.run_dir(args.profile) / "bench.json", r)
    print(f"-> {config.run_dir(args.profile) / 'bench.json'}")


if __name__ == "__main__":
    main()
