"""A user's own files, as the audit command takes them: a model class in a Python file, its
weights, and image sets as an ``ImageFolder`` tree of pictures or an ``.npz`` of arrays. Every
problem is refused before any work, naming the file and the fix."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _missing(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} {path} does not exist; check the path")


def load_images(path) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Images (float N x C x H x W in [0, 1]), labels and class names from ``path``: a folder
    with one subfolder of pictures per class (torchvision's ``ImageFolder`` layout, classes in
    sorted order), or an ``.npz`` with ``images`` (N x H x W, N x H x W x C or N x C x H x W;
    uint8, or floats in [0, 1]), ``labels`` and optionally ``classes``."""
    path = Path(path)
    if not path.exists():
        raise _missing(path, "the image set")
    if path.is_dir():
        return _folder(path)
    if path.suffix != ".npz":
        raise ValueError(
            f"{path}: give a folder of class subfolders, or an .npz of images and labels"
        )
    return _npz(path)


def _folder(path: Path):
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(
            f"{path} has no class subfolders: put each class's pictures in {path}/<class>/"
        )
    images, labels = [], []
    for k, name in enumerate(classes):
        files = sorted(f for f in (path / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(
                f"{path / name} holds no pictures ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        for f in files:
            with Image.open(f) as im:
                im = im.convert("L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB")
                images.append(torch.from_numpy(np.array(im)))
            labels.append(k)
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) > 1:
        raise ValueError(f"{path}: pictures of different sizes {sorted(shapes)}; give one size")
    x = torch.stack(images).float() / 255
    x = x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2)
    return x.contiguous(), torch.tensor(labels), tuple(classes)


def _npz(path: Path):
    with np.load(path, allow_pickle=False) as f:
        missing = {"images", "labels"} - set(f.files)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}; it holds {sorted(f.files)}")
        x, y = f["images"], f["labels"]
        classes = tuple(str(c) for c in f["classes"]) if "classes" in f.files else None
    if len(x) == 0:
        raise ValueError(f"{path} holds no images")
    x = torch.from_numpy(
        x.astype(np.float32) / 255 if x.dtype == np.uint8 else x.astype(np.float32)
    )
    if x.dim() == 3:
        x = x[:, None]
    elif x.dim() == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)
    y = torch.from_numpy(np.asarray(y).astype(np.int64))
    classes = classes or tuple(str(k) for k in range(int(y.max()) + 1))
    return x.contiguous(), y, classes


def load_model(spec: str, weights, num_classes: int):
    """``spec`` is ``file.py:Class``; the class is built with no arguments, or with
    ``num_classes`` where its constructor takes it; ``weights`` (safetensors, or a state dict
    saved with ``torch.save``, read with ``weights_only=True``) are loaded strictly. Returns
    ``(model in eval mode, model_fn)``: ``model_fn()`` builds another, untrained one."""
    file, _, name = str(spec).rpartition(":")
    if not file or not name:
        raise ValueError(f"--model must be FILE.py:Class, e.g. my_model.py:Net; got {spec!r}")
    file = Path(file)
    if not file.is_file():
        raise _missing(file, "the model file")
    module_spec = importlib.util.spec_from_file_location(f"user_model_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    cls = getattr(module, name, None)
    if not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        found = [
            k
            for k, v in vars(module).items()
            if isinstance(v, type) and issubclass(v, torch.nn.Module)
        ]
        raise ValueError(
            f"{file} has no torch.nn.Module class {name!r}; its modules: {found or 'none'}"
        )
    takes = "num_classes" in inspect.signature(cls).parameters

    def model_fn():
        return cls(num_classes=num_classes) if takes else cls()

    model = model_fn()
    _load(model, Path(weights))
    return model.eval(), model_fn


def _state(path: Path) -> dict:
    if not path.is_file():
        raise _missing(path, "the weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with code in it, or not a torch file at all
        raise ValueError(
            f"{path}: not a state dict that loads with weights_only=True ({err})"
        ) from err
    if not isinstance(state, dict):
        raise ValueError(
            f"{path} holds a {type(state).__name__}, not a state dict (save model.state_dict())"
        )
    return state


def _load(model: torch.nn.Module, path: Path) -> None:
    try:
        model.load_state_dict(_state(path), strict=True)
    except RuntimeError as err:
        raise ValueError(f"the weights in {path} do not fit {type(model).__name__}: {err}") from err
