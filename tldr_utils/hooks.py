"""What enters a layer during a forward pass, read with forward hooks, so that any
``nn.Module`` classifier works: no ``features()`` method or named head is needed.

- ``feature_input(model, layer)``: the layer whose *input* is the penultimate
  feature vector (by name, else the last ``nn.Linear``);
- ``Features(layer)``: captures that input;
- ``BatchNormInputs(model)``: captures the input of every batch-norm layer.
"""

from __future__ import annotations

from torch import nn


def feature_input(model: nn.Module, layer: str | None = None) -> nn.Module | None:
    """The layer whose input is the model's penultimate features: ``layer`` by name (as in
    ``model.named_modules()``), else the last ``nn.Linear``; None when the model has none."""
    modules = dict(model.named_modules())
    if layer is not None:
        if layer not in modules:
            names = [n for n in modules if n]
            raise ValueError(
                f"feature_layer {layer!r} is not a layer of the model; its layers: "
                f"{', '.join(names[:40])}"
            )
        return modules[layer]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


class Features:
    """``with Features(layer) as f: model(x)`` leaves what entered ``layer`` in ``f.value``
    (None when ``layer`` is None)."""

    def __init__(self, layer: nn.Module | None):
        self.layer, self.value, self.handle = layer, None, None

    def __enter__(self):
        if self.layer is not None:
            self.handle = self.layer.register_forward_hook(self._keep)
        return self

    def _keep(self, module, inputs, output):
        self.value = inputs[0]

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.remove()


def batch_norm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class BatchNormInputs:
    """Collects ``(layer, input)`` for each batch-norm layer of ``model`` during a forward pass."""

    def __init__(self, model: nn.Module):
        self.layers = batch_norm_layers(model)
        self.inputs = []

    def __enter__(self):
        self.handles = [
            m.register_forward_hook(lambda m, inp, out: self.inputs.append((m, inp[0])))
            for m in self.layers
        ]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
