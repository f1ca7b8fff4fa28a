"""One runner for every sweep: a list of independent cells in, their tidy rows out.

A ``Cell`` is a plain description of one unit of work: the import path of a library
function (``"tldr_utils.regime_sweep:regime_cell"``) and the plain values it takes (numbers,
strings, lists and dicts: never a profile name to be read again inside), with the
resources it needs. It pickles, hashes to its cache key and travels to another process
or machine. Its function returns a ``Result``: tidy metric rows, and tensors (say, the
images a figure shows) when the notebook needs them.

``run(cells, cache=folder)`` executes them on one of three backends:

- ``inline`` (the default): in this process, one after another;
- ``processes``: ``workers`` local processes (``TLDR_WORKERS=2``), one cell each at a time;
- ``ray``: each cell a Ray task with its declared CPUs, GPU fraction and memory, on a
  local Ray or a cluster (``RAY_ADDRESS=auto``, an address, or ``local`` to start one;
  needs ``pip install -e ".[cluster]"``).

Every backend runs a cell with ``torch.set_num_threads(cell.cpus)``, so a cell gives
the same rows wherever it ran (a different thread count can move the last digits). Results come back
by value and only this process
writes them, one file per finished cell in ``cache``, so no shared filesystem is
needed and an interrupted sweep resumes from the cells already done. A cell that
fails does not stop the others; once all have run, ``SweepError`` names each failed
cell and its error, and every finished cell's result is kept in the cache.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import json
import multiprocessing
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import store

BACKENDS = ("inline", "processes", "ray")


@dataclass(frozen=True)
class Cell:
    """One unit of a sweep: ``task`` ("package.module:function") called with ``args``.

    ``cpus`` is also the number of threads the cell runs with (default ``default_cpus()``); ``gpu``
    a fraction of one GPU (0.25: four such cells share a GPU; default ``TLDR_GPU_PER_CELL``, else
    0); ``memory_gb`` what Ray reserves for it. ``label`` is how progress and errors name it
    (default: its task and arguments)."""

    task: str
    args: dict = field(default_factory=dict)
    cpus: int = field(default_factory=lambda: default_cpus())
    gpu: float = field(default_factory=lambda: default_gpu())
    memory_gb: float = 2.0
    label: str = ""

    def __post_init__(self):
        if ":" not in self.task:
            raise ValueError(f"task must be 'package.module:function', got {self.task!r}")
        if not isinstance(self.cpus, int) or self.cpus < 1:
            raise ValueError(f"cpus must be a whole number >= 1, got {self.cpus!r}")
        if not 0 <= self.gpu <= 1:
            raise ValueError(f"gpu must be a fraction of one GPU between 0 and 1, got {self.gpu!r}")
        if self.memory_gb <= 0:
            raise ValueError(f"memory_gb must be > 0, got {self.memory_gb!r}")

    @property
    def key(self) -> str:
        """The cache key: the task and its arguments (not the resources, so that every backend
        shares the cache)."""
        return store.config_hash({"task": self.task, "args": self.args})

    def __hash__(self) -> int:  # its arguments are dicts, so hash what identifies it
        return hash(self.key)

    def __str__(self) -> str:
        if self.label:
            return self.label
        args = ", ".join(
            f"{k}={v!r}" for k, v in self.args.items() if not isinstance(v, (dict, list))
        )
        return f"{self.task.rsplit(':', 1)[1]}({args})"


@dataclass
class Result:
    """What a cell returns: tidy rows (dicts of plain values), tensors by name, and notes to
    show."""

    rows: list = field(default_factory=list)
    tensors: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


class SweepError(RuntimeError):
    """Some cells failed; ``failed`` maps each to its error text, ``results`` holds the finished
    ones."""

    def __init__(self, failed: dict, results: dict):
        self.failed, self.results = failed, results
        lines = "\n".join(
            f"- {cell}: {err.strip().splitlines()[-1]}" for cell, err in failed.items()
        )
        super().__init__(
            f"{len(failed)} of {len(failed) + len(results)} cells failed (the {len(results)} "
            f"finished "
            f"are cached and a rerun resumes from them):\n{lines}"
        )


def execute(cell: Cell) -> Result:
    """Run one cell here with ``cell.cpus`` threads (what every backend calls)."""
    module, name = cell.task.split(":")
    fn = getattr(importlib.import_module(module), name)
    threads = torch.get_num_threads()
    torch.set_num_threads(cell.cpus)
    try:
        result = fn(**cell.args)
    finally:
        torch.set_num_threads(threads)
    if not isinstance(result, Result):
        raise TypeError(f"{cell.task} returned {type(result).__name__}, not a sweep.Result")
    return result


def _guarded(cell: Cell):
    """``execute``, with a failure returned as its traceback text instead of raised (it crosses
    processes)."""
    try:
        return execute(cell), None
    except Exception:  # noqa: BLE001 - every failure is reported by name at the end
        return None, traceback.format_exc()


def default_cpus() -> int:
    """Threads for a cell: this process's own (torch's, as ``OMP_NUM_THREADS`` sets them) when cells
    run here one after another, shared among the local workers (``TLDR_WORKERS``), one on Ray (which
    packs cells by their CPUs). More threads than cores would make every one of them wait on the
    others."""
    backend, workers = backend_from_env()
    return 1 if backend == "ray" else max(1, torch.get_num_threads() // workers)


def default_gpu() -> float:
    """The fraction of a GPU a cell asks Ray for: ``TLDR_GPU_PER_CELL`` (e.g. 0.25), else none."""
    value = os.environ.get("TLDR_GPU_PER_CELL", "0")
    try:
        gpu = float(value)
    except ValueError:
        gpu = -1.0
    if not 0 <= gpu <= 1:
        raise ValueError(
            f"TLDR_GPU_PER_CELL must be a fraction of one GPU between 0 and 1, got {value!r}"
        )
    return gpu


def backend_from_env() -> tuple[str, int]:
    """The backend the environment asks for: ``ray`` when ``RAY_ADDRESS`` is set, ``processes`` when
    ``TLDR_WORKERS`` is above 1, else ``inline``; and the number of workers."""
    workers = os.environ.get("TLDR_WORKERS", "1")
    if not workers.isdigit() or int(workers) < 1:
        raise ValueError(f"TLDR_WORKERS must be a whole number >= 1, got {workers!r}")
    if os.environ.get("RAY_ADDRESS"):
        return "ray", int(workers)
    return ("processes" if int(workers) > 1 else "inline"), int(workers)


def run(
    cells: list[Cell],
    cache: str | Path | None = None,
    backend: str | None = None,
    workers: int | None = None,
    desc: str = "sweep",
) -> dict[Cell, Result]:
    """Run every cell (see the module's text) and return ``{cell: result}`` in the cells' order.

    ``cache``: a folder for finished cells; a cell found there is not run again.
    ``backend`` and ``workers`` default to ``backend_from_env()``."""
    cells = list(cells)
    if len({c.key for c in cells}) != len(cells):
        raise ValueError(
            "two cells of the sweep are the same (same task and arguments): drop the repeat"
        )
    if backend is None or workers is None:
        env_backend, env_workers = backend_from_env()
        backend, workers = backend or env_backend, workers or env_workers
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    done: dict[Cell, Result] = {}
    todo = []
    for cell in cells:
        hit = _load(cache, cell)
        if hit is None:
            todo.append(cell)
        else:
            done[cell] = hit
    failed: dict[Cell, str] = {}
    start = time.perf_counter()
    bar = tqdm(total=len(cells), initial=len(done), desc=desc, mininterval=1)

    def finish(cell, result, error):
        if error is None:
            result.rows = json.loads(
                json.dumps(result.rows, default=_plain)
            )  # as a cached result reads back
            _save(cache, cell, result)
            done[cell] = result
            for note in result.notes:
                tqdm.write(f"{cell}: {note}")
        else:
            failed[cell] = error
            tqdm.write(f"{cell} failed: {error.strip().splitlines()[-1]}")
        bar.update()

    try:
        if backend == "inline" or not todo:
            for cell in todo:
                finish(cell, *_guarded(cell))
        elif backend == "processes":
            _run_processes(todo, workers, finish)
        else:
            _run_ray(todo, finish)
    finally:
        bar.close()
    print(
        f"{desc}: {len(done)} of {len(cells)} cells ({len(cells) - len(todo)} from the cache), "
        f"{len(failed)} failed, "
        f"{time.perf_counter() - start:.0f}s on {backend}"
        + (f" with {workers} workers" if backend == "processes" else "")
    )
    if failed:
        raise SweepError(
            {str(c): e for c, e in failed.items()}, {c: done[c] for c in cells if c in done}
        )
    return {cell: done[cell] for cell in cells}


def _plain(value):
    """A numpy or torch scalar as the Python number it holds (anything else is refused)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"a row holds {value!r} ({type(value).__name__}); rows hold plain values only")


def rows(results: dict[Cell, Result]) -> list[dict]:
    """Every result's rows, in the cells' order."""
    return [row for result in results.values() for row in result.rows]


def _run_processes(todo, workers, finish):
    # spawn: a fresh interpreter per worker, as safe under a notebook kernel as on the command line
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        futures = {pool.submit(_guarded, cell): cell for cell in todo}
        for future in concurrent.futures.as_completed(futures):
            finish(futures[future], *future.result())


def _run_ray(todo, finish):
    try:
        import ray
    except ImportError as err:
        raise ImportError(
            'RAY_ADDRESS is set but Ray is not installed: pip install -e ".[cluster]", '
            "or unset RAY_ADDRESS to run the sweep here"
        ) from err
    if (
        not ray.is_initialized()
    ):  # RAY_ADDRESS: "local" starts a Ray here, "auto" or host:port joins one
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False)
    remote = ray.remote(_guarded)
    futures = {
        remote.options(
            num_cpus=c.cpus, num_gpus=c.gpu, memory=int(c.memory_gb * 2**30), max_retries=0
        ).remote(c): c
        for c in todo
    }
    pending = list(futures)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        cell = futures[ready[0]]
        try:
            finish(cell, *ray.get(ready[0]))
        # noqa: BLE001 - the task could not run at all (a lost worker, too little memory)
        except Exception:
            finish(cell, None, traceback.format_exc())


def _path(cache, cell: Cell) -> Path:
    return Path(cache) / f"{cell.task.rsplit(':', 1)[1]}_{cell.key}.safetensors"


def _load(cache, cell: Cell) -> Result | None:
    if cache is None or not _path(cache, cell).exists():
        return None
    path = _path(cache, cell)
    meta = store.load_meta(path)
    return Result(meta["rows"], dict(store.load_tensors(path)), meta.get("notes", []))


def _save(cache, cell: Cell, result: Result) -> None:
    if cache is not None:
        store.save_tensors(
            _path(cache, cell),
            result.tensors,
            {"task": cell.task, "args": cell.args, "rows": result.rows, "notes": result.notes},
        )
