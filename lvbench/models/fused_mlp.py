"""An MLP's forward pass without autograd, in as few passes over memory as the backend allows.

On the CPU in float32, each ``Linear`` and the activation after it run as one oneDNN matmul that applies
the bias and the activation in its epilogue (``torch.ops.mkldnn._linear_pointwise``: the kernel
``torch.compile``'s CPU backend emits for the same pattern). Elsewhere (CUDA, float64, a torch built
without oneDNN, autograd on) it is the modules' own eager forward. Both compute the same function; only
the rounding differs (tested against float64). Which one runs is reported by ``cpu_matmul_backend`` and
recorded with every run (``machine_info``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["cpu_matmul_backend", "inference_forward", "onednn_enabled"]

#: Activation modules oneDNN applies in the matmul's epilogue: module type -> (attr, algorithm).
ONEDNN_EPILOGUES: dict[type[nn.Module], str] = {
    nn.Tanh: "tanh",
    nn.ReLU: "relu",
    nn.Sigmoid: "sigmoid",
    nn.SiLU: "swish",
}


@functools.cache
def _onednn_linear_works() -> bool:
    """Whether this torch build runs ``mkldnn._linear_pointwise`` correctly (probed once, on a tiny case)."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    with torch.inference_mode():
        x, w, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, -1.0], [2.0, 0.25]]), torch.tensor([0.0, 1.0])
        try:
            return bool(torch.equal(op(x, w, b, "none", [], ""), torch.tensor([[-1.5, 3.5]])))
        except RuntimeError:
            return False


def onednn_enabled() -> bool:
    """True where CPU float32 matmuls in ``inference_forward`` go to oneDNN (respects
    ``torch.backends.mkldnn.flags(enabled=False)``)."""
    return bool(torch.backends.mkldnn.enabled) and _onednn_linear_works()


def cpu_matmul_backend() -> str:
    """Which kernels ``inference_forward`` uses on the CPU in float32: "onednn" or "aten"."""
    return "onednn" if onednn_enabled() else "aten"


def _use_onednn(h: torch.Tensor, layer: nn.Linear) -> bool:
    return (
        h.device.type == "cpu"
        and h.dtype == torch.float32
        and layer.weight.dtype == torch.float32
        and layer.weight.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch._C._are_functorch_transforms_active()
        and onednn_enabled()
    )


def inference_forward(modules: Sequence[nn.Module], h: torch.Tensor) -> torch.Tensor:
    """``modules`` applied in order to ``h`` (any leading dims), with each ``Linear`` and the activation
    that follows it fused into one oneDNN call where ``_use_onednn`` allows; any other module runs as is."""
    modules = list(modules)
    i = 0
    while i < len(modules):
        module = modules[i]
        if isinstance(module, nn.Linear) and _use_onednn(h, module):
            following = modules[i + 1] if i + 1 < len(modules) else None
            attr = ONEDNN_EPILOGUES.get(type(following), "none")
            h = torch.ops.mkldnn._linear_pointwise(h.contiguous(), module.weight, module.bias, attr, [], "")
            i += 2 if attr != "none" else 1
        else:
            h = module(h)
            i += 1
    return h
