"""An MLP's forward pass in as few passes over memory, and at as high a matmul rate, as the CPU allows.

On the CPU in float32, each ``Linear`` and the activation after it run as one oneDNN matmul that applies
the bias and the activation in its epilogue (``torch.ops.mkldnn._linear_pointwise``: the kernel
``torch.compile``'s CPU backend emits for the same pattern). With autograd on, ``OneDNNLinear`` gives it
a backward whose ∂h matmul is oneDNN's too. On x86 torch wheels ``torch.mm`` is MKL, which on the 2-core
AMD EPYC this project develops on runs at half oneDNN's rate (measured: 206 vs 463 GFLOP/s). Elsewhere
(CUDA, float64, a torch built without oneDNN, inside ``torch.func`` transforms) it is the modules' own
eager forward, and everywhere on the ``eager`` route (``lvbench.compute.routes``). Both compute the same
function; only the rounding differs (tested against float64). Which one runs is reported by
``cpu_matmul_backend``, recorded with every run (``machine_info``) and part of every CPU cell's id.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from lvbench.compute.routes import fast_route

__all__ = [
    "OneDNNLinear",
    "cpu_matmul_backend",
    "inside_torch_func",
    "linear_magnitude",
    "mlp_forward",
    "onednn_enabled",
    "onednn_linear",
]

#: Activation modules oneDNN applies in the matmul's epilogue: module type -> oneDNN post-op name.
ONEDNN_EPILOGUES: dict[type[nn.Module], str] = {
    nn.Tanh: "tanh",
    nn.ReLU: "relu",
    nn.Sigmoid: "sigmoid",
    nn.SiLU: "swish",
}
#: Epilogues whose derivative follows from the output y alone (so ``OneDNNLinear`` can differentiate them).
DIFFERENTIABLE_EPILOGUES = {"none", "tanh", "relu", "sigmoid"}


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
        except (RuntimeError, NotImplementedError):
            return False


def onednn_enabled() -> bool:
    """True where CPU float32 matmuls in ``mlp_forward`` go to oneDNN (respects
    ``torch.backends.mkldnn.flags(enabled=False)``)."""
    return bool(torch.backends.mkldnn.enabled) and _onednn_linear_works()


def cpu_matmul_backend() -> str:
    """Which kernels the models use on the CPU in float32: "onednn" or "aten" on the fast route,
    "eager" (the modules' own forward and torch.distributions) on the eager route."""
    if not fast_route():
        return "eager"
    return "onednn" if onednn_enabled() else "aten"


def inside_torch_func() -> bool:
    """Whether a ``torch.func`` transform (vmap, grad) is running: custom autograd Functions and oneDNN's
    ops have no batching rules, so every fast route here steps aside."""
    return torch._C._are_functorch_transforms_active()


def _use_onednn(h: torch.Tensor, layer: nn.Linear) -> bool:
    return (
        h.device.type == "cpu"
        and h.dtype == torch.float32
        and layer.weight.dtype == torch.float32
        and layer.weight.device.type == "cpu"
        and not inside_torch_func()
        and fast_route()
        and onednn_enabled()
    )


def onednn_linear(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    attr: str = "none",
    scalars: Sequence[float] = (),
) -> torch.Tensor:
    """act(h Wᵀ + b) as one oneDNN call (``attr``: the epilogue, e.g. "tanh"; "none" for none): the one
    place lvbench calls torch's private ``mkldnn._linear_pointwise``. CPU float32 only; no autograd."""
    return torch.ops.mkldnn._linear_pointwise(h, weight, bias, attr, list(scalars), "")


class OneDNNLinear(torch.autograd.Function):
    """y = act(h Wᵀ + b) in one oneDNN call; backward: g' = g·act'(y) (from y alone), ∂h = g' W by oneDNN,
    ∂W = g'ᵀ h by ``torch.mm`` (oneDNN's wrapper would copy both transposed operands first: slower, measured),
    ∂b = Σ g'. First derivatives only (``once_differentiable``)."""

    @staticmethod
    def forward(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, attr: str) -> torch.Tensor:
        return onednn_linear(h.contiguous(), weight, bias, attr)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        h, weight, _, attr = inputs
        ctx.attr = attr
        ctx.save_for_backward(h, weight, output)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        h, weight, y = ctx.saved_tensors
        if ctx.attr == "tanh":
            grad = torch.ops.aten.tanh_backward(grad, y)
        elif ctx.attr == "sigmoid":
            grad = torch.ops.aten.sigmoid_backward(grad, y)
        elif ctx.attr == "relu":
            grad = torch.ops.aten.threshold_backward(grad, y, 0)
        rows = grad.reshape(-1, grad.shape[-1])
        grad_h = onednn_linear(grad.contiguous(), weight.T, None, "none") if ctx.needs_input_grad[0] else None
        grad_w = rows.T @ h.reshape(-1, h.shape[-1]) if ctx.needs_input_grad[1] else None
        grad_b = rows.sum(0) if ctx.needs_input_grad[2] else None
        return grad_h, grad_w, grad_b, None


def mlp_forward(modules: Sequence[nn.Module], h: torch.Tensor) -> torch.Tensor:
    """``modules`` applied in order to ``h`` (any leading dims), with each ``Linear`` and the activation
    that follows it fused into one oneDNN call where ``_use_onednn`` allows (through ``OneDNNLinear`` when
    autograd records); any other module runs as is."""
    modules = list(modules)
    recording = torch.is_grad_enabled()
    i = 0
    while i < len(modules):
        module = modules[i]
        if isinstance(module, nn.Linear) and _use_onednn(h, module):
            following = modules[i + 1] if i + 1 < len(modules) else None
            attr = ONEDNN_EPILOGUES.get(type(following), "none")
            differentiable = recording and (h.requires_grad or any(p.requires_grad for p in module.parameters()))
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
