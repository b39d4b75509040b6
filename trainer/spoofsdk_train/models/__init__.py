"""Model architectures and the registry that builds them by name.

Each architecture lives in its own module and registers a builder with :func:`register`.
:func:`build_model` makes one by name; :func:`count_params` and :func:`count_macs` report
its size (MACs are counted with forward hooks on every Conv2d and Linear, the layers that
carry nearly all of the arithmetic; BatchNorm, activations, pooling and adds are not counted).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

__all__ = ["ModelSpec", "register", "build_model", "available", "count_params", "count_macs", "model_stats"]


@dataclass(frozen=True)
class ModelSpec:
    """What the runtime needs to know about an architecture's output."""

    name: str
    builder: Callable[..., nn.Module]
    # 'logits2' (class order spoof,real), 'logit1' (sigmoid = P(real)) or 'logitsN' (N logits,
    # softmax; P(real) = sum of the classes named 'real' in class_order, e.g. MiniFASNet's spoof,real,spoof)
    output: str
    default_input_size: int
    description: str = ""
    classes: tuple[str, ...] | None = None  # class_order of a 'logitsN' model

    @property
    def class_order(self) -> tuple[str, ...]:
        if self.output == "logitsN":
            return self.classes
        return ("spoof", "real") if self.output == "logits2" else ("real",)


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, output: str, default_input_size: int, description: str = "",
             class_order: tuple[str, ...] | None = None):
    if output not in ("logits2", "logit1", "logitsN"):
        raise ValueError(f"output must be 'logits2', 'logit1' or 'logitsN', got {output!r}")
    if (output == "logitsN") != (class_order is not None):
        raise ValueError("class_order is given for (and only for) 'logitsN' outputs")
    if class_order is not None and not ({"real", "spoof"} == set(class_order)):
        raise ValueError(f"class_order must name 'real' and 'spoof' classes only, got {class_order!r}")

    def wrap(builder: Callable[..., nn.Module]):
        _REGISTRY[name] = ModelSpec(name, builder, output, default_input_size, description,
                                    tuple(class_order) if class_order else None)
        return builder

    return wrap


def _load_all() -> None:
    from . import edgenet, hybrid, minifasnet, mnv2probe, spoofnet  # noqa: F401  (registration side effects)


def available() -> dict[str, ModelSpec]:
    _load_all()
    return dict(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_model(name: str, **kwargs) -> nn.Module:
    """Build an architecture by registry name; ``kwargs`` go to its builder (e.g. dropout rates)."""
    return get_spec(name).builder(**kwargs)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_size: int, channels: int = 3) -> int:
    """Multiply-accumulates for one image of ``input_size`` x ``input_size``, via forward hooks on Conv2d/Linear."""
    total = 0

    def conv_hook(m: nn.Conv2d, inp, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, inp, out):
        nonlocal total
        total += out.numel() // out.shape[0] * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    # The probe input goes where the weights are: the trainer counts after moving the model to CUDA.
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, input_size, input_size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return int(total)


def model_stats(name: str, input_size: int | None = None, **kwargs) -> dict:
    spec = get_spec(name)
    size = input_size or spec.default_input_size
    model = build_model(name, **kwargs)
    return {
        "architecture": name,
        "input_size": size,
        "params": count_params(model),
        "macs": count_macs(model, size),
        "output": spec.output,
    }
