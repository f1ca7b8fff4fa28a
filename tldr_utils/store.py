"""Artifacts on disk: atomic writes, safe checkpoints, the tidy metrics table, provenance.

Everything is written to a temporary file beside its destination and renamed
into place, so a run killed at any moment leaves either the old file or the
new one, never half of one. Checkpoints are safetensors: loading them runs no code.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ROOT

METRIC_KEYS = ["dataset", "arch", "method", "train_size", "seed", "metric", "class", "setting"]
# "class" names the class a per-class metric is about (empty for the others);
# "setting" tells runs of one method apart: "main" for the generators of Figures 3-5,
# "sweep" for the cheaper ones of the leakage sweep in 04_evaluate.
DEFAULT_KEYS = {"class": "", "setting": "main"}  # what rows that leave these out mean


def fill_default_keys(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the ``DEFAULT_KEYS`` filled in where rows (or a whole older file) leave them
    out."""
    frame = frame.copy()
    for k, default in DEFAULT_KEYS.items():
        frame[k] = frame[k].fillna(default) if k in frame.columns else default
    return frame


class StorageError(OSError):
    """A run's file could not be written: the path, the reason, and how to write elsewhere."""


def _cannot_write(path, err) -> StorageError:
    reason = getattr(err, "strerror", None) or str(err)
    return StorageError(
        f"could not write {path}: {reason}. Free some space or fix the folder's permissions, "
        "or keep the run elsewhere: TLDR_RUNS=/a/writable/folder (e.g. TLDR_RUNS=/tmp/runs make "
        "figures)"
    )


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path; on success it replaces ``path``, on failure it vanishes.

    A write that fails for want of space or permission raises ``StorageError``
    naming ``path`` and the way to write elsewhere.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _cannot_write(path, err) from err
    os.close(fd)
    try:
        try:
            yield Path(tmp)
        except (
            OSError,
            SafetensorError,
        ) as err:  # disk full, read-only folder: say which file and what to do
            raise _cannot_write(path, err) from err
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; artifacts are ordinary files
        try:
            os.replace(tmp, path)
        except OSError as err:
            raise _cannot_write(path, err) from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def exclusive(path: str | Path):
    """Hold a lock beside ``path`` (``.<name>.lock``) while building it.

    A second process that needs the same artifact waits here for the first to
    finish instead of building it again, then finds it on disk.
    """
    path = Path(path)
    lock = path.parent / f".{path.name}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")
    except OSError as err:
        raise _cannot_write(lock, err) from err
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path, default=None):
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else default


def config_hash(config: dict) -> str:
    """A short, stable name for a configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:10]


def tensor_hash(*tensors: torch.Tensor) -> str:
    """The sha256 of the tensors' values (and shapes), e.g. to name an artifact built from given
    data."""
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(str((tuple(t.shape), str(t.dtype))).encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def save_model(path, model: torch.nn.Module, meta: dict) -> None:
    """The model's weights and a JSON-able ``meta`` dict, in one safetensors file."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"meta": json.dumps(meta, default=str)})


def load_model(path, model: torch.nn.Module) -> dict:
    """Load weights saved by ``save_model`` into ``model``; return their meta."""
    path = Path(path)
    try:
        meta = load_meta(path)
        state = load_file(str(path))
    except Exception as err:
        raise ValueError(
            f"checkpoint {path} is unreadable ({err}); delete it and re-run to rebuild it"
        ) from err
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise ValueError(
            f"checkpoint {path} does not fit a {type(model).__name__}: {first}. "
            "It was made by another configuration; delete it to rebuild."
        ) from err
    return meta


def save_tensors(path, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            str(tmp),
            metadata={"meta": json.dumps(meta or {}, default=str)},
        )


def load_tensors(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def load_meta(path) -> dict:
    """The meta dict saved with ``save_model`` or ``save_tensors``."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads((f.metadata() or {}).get("meta", "{}"))


def record_metrics(path, rows: list[dict], replacing: str | None = None) -> pd.DataFrame:
    """Upsert tidy rows (``METRIC_KEYS`` + ``value``) into the CSV at ``path``.

    A row replaces an earlier one with the same keys, so re-running a notebook
    updates its numbers instead of duplicating them. ``replacing`` drops first every earlier
    row whose setting starts with it: for settings that name a value of the run (the strength
    check's ``leakage_strength_<steps>``), which a rerun with other values would leave stale.
    """
    new = fill_default_keys(pd.DataFrame(rows))
    missing = [k for k in METRIC_KEYS + ["value"] if k not in new.columns]
    if missing:
        raise ValueError(
            f"metric rows lack column(s) {missing}; each needs {METRIC_KEYS + ['value']}"
        )
    new["train_size"] = new["train_size"].astype(str)
    path = Path(path)
    old = pd.read_csv(path, dtype={"train_size": str}) if path.exists() else new.iloc[:0]
    if replacing:
        old = old[~old["setting"].astype(str).str.startswith(replacing)]
    # an empty class reads back from the CSV as missing, and older files lack the column
    table = fill_default_keys(pd.concat([old, new], ignore_index=True)).drop_duplicates(
        METRIC_KEYS, keep="last"
    )
    table = table.sort_values(METRIC_KEYS, kind="stable").reset_index(drop=True)
    table = table[
        METRIC_KEYS + ["value"] + [c for c in table.columns if c not in METRIC_KEYS + ["value"]]
    ]
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return table


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> dict:
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
    }


def record_provenance(
    run_dir, step: str, settings: dict, data: list[dict] | None = None, seconds: float | None = None
) -> None:
    """Add what produced ``step`` (parameters, commit, data, machine, time) to provenance.json."""
    path = Path(run_dir) / "provenance.json"
    record = read_json(path, {})
    record[step] = {
        "settings": dict(settings),
        "git_commit": git_commit(),
        "data": data or [],
        "environment": environment(),
        "seconds": seconds,
    }
    write_json(path, record)
