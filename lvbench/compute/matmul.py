"""An MLP's forward pass in as few passes over memory, and at as high a matmul rate, as the CPU allows.

On the CPU in float32, where this machine's calibration chose "onednn" (``lvbench.compute.kernels``:
``linear`` without autograd, ``linear_autograd`` with it), each ``Linear`` and the activation after it run
as one oneDNN matmul that applies the bias and the activation in its epilogue
(``torch.ops.mkldnn._linear_pointwise``: the kernel ``torch.compile``'s CPU backend emits for the same
pattern). With autograd on, ``OneDNNLinear`` gives it a backward whose ∂h matmul is oneDNN's too. On x86
torch wheels ``torch.mm`` is MKL: on a 2-core AMD EPYC it ran at half oneDNN's rate (206 vs 463 GFLOP/s),
on a 2-core Intel Xeon as fast or faster, hence the measurement. Elsewhere ("aten", CUDA, float64, a
torch built without oneDNN, inside ``torch.func`` transforms) it is the modules' own eager forward, and
everywhere on the ``eager`` route (``lvbench.compute.routes``). Both compute the same function; only the
rounding differs (tested against float64). Which one runs is reported by ``cpu_matmul_backend``, recorded
with every run (``machine_info``) and part of every CPU cell's id.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from lvbench.compute.kernels import CHOICES, kernel, kernel_choices
from lvbench.compute.onednn import (
    DIFFERENTIABLE_EPILOGUES,
    ONEDNN_EPILOGUES,
    OneDNNLinear,
    onednn_enabled,
    onednn_linear,
)
from lvbench.compute.routes import fast_route

__all__ = [
    "OneDNNLinear",
    "cpu_matmul_backend",
    "force_linear",
    "inside_torch_func",
    "linear_magnitude",
    "mlp_forward",
    "onednn_enabled",
    "onednn_linear",
]


def cpu_matmul_backend(threads: int | None = None) -> str:
    """Which kernels the models use on the CPU in float32: on the fast route the choices in force
    (``lvbench.compute.kernels``; for ``threads`` torch threads, default the current count) as
    "linear/linear_autograd/bernoulli_autograd", e.g. "onednn/aten/bce"; "eager" (the modules' own
    forward and torch.distributions) on the eager route."""
    if not fast_route():
        return "eager"
    choices = kernel_choices(threads)
    return "/".join(choices[name] for name in CHOICES)


_forced_linear: list[str] = []


@contextlib.contextmanager
def force_linear(name: str) -> Iterator[None]:
    """Run a block with ``name`` ("onednn" or "aten") for every layer ``mlp_forward`` may fuse, whatever
    the calibration chose (for tests of either route on any machine)."""
    _forced_linear.append(name)
    try:
        yield
    finally:
        _forced_linear.pop()


def inside_torch_func() -> bool:
    """Whether a ``torch.func`` transform (vmap, grad) is running: custom autograd Functions and oneDNN's
    ops have no batching rules, so every fast route here steps aside."""
    return torch._C._are_functorch_transforms_active()


def _use_onednn(h: torch.Tensor, layer: nn.Linear, autograd: bool = False) -> bool:
    if not (
        h.device.type == "cpu"
        and h.dtype == torch.float32
        and layer.weight.dtype == torch.float32
        and layer.weight.device.type == "cpu"
        and not inside_torch_func()
        and fast_route()
        and onednn_enabled()
    ):
        return False
    if _forced_linear:
        return _forced_linear[-1] == "onednn"
    return kernel("linear_autograd" if autograd else "linear") == "onednn"


def mlp_forward(modules: Sequence[nn.Module], h: torch.Tensor) -> torch.Tensor:
    """``modules`` applied in order to ``h`` (any leading dims), with each ``Linear`` and the activation
    that follows it fused into one oneDNN call where ``_use_onednn`` allows (through ``OneDNNLinear`` when
    autograd records); any other module runs as is."""
    modules = list(modules)
    recording = torch.is_grad_enabled()
    i = 0
    while i < len(modules):
        module = modules[i]
        differentiable = (
            recording
            and isinstance(module, nn.Linear)
            and (h.requires_grad or any(p.requires_grad for p in module.parameters()))
        )
        if isinstance(module, nn.Linear) and _use_onednn(h, module, autograd=differentiable):
            following = modules[i + 1] if i + 1 < len(modules) else None
            attr = ONEDNN_EPILOGUES.get(type(following), "none")
            if differentiable:
                attr = attr if attr in DIFFERENTIABLE_EPILOGUES else "none"
                h = OneDNNLinear.apply(h, module.weight, module.bias, attr)
            else:
                h = onednn_linear(h.contiguous(), module.weight, module.bias, attr)
            i += 2 if attr != "none" else 1
        else:
            h = module(h)
            i += 1
    return h


def linear_magnitude(layer: nn.Linear, h: torch.Tensor) -> torch.Tensor:
    """|h Wᵀ + b| without autograd, a fresh tensor: on oneDNN the epilogue is a leaky ReLU of slope -1
    (exactly |·|: oneDNN fuses no plain abs), else ``abs_`` after the layer."""
    if _use_onednn(h, layer) and not torch.is_grad_enabled():
        return onednn_linear(h.contiguous(), layer.weight, layer.bias, "leaky_relu", [-1.0])
    return layer(h).abs_()
