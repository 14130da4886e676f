"""oneDNN's fused CPU matmul: act(h Wᵀ + b) in one call with the bias and activation in the epilogue
(``torch.ops.mkldnn._linear_pointwise``, the kernel ``torch.compile``'s CPU backend emits for the same
pattern), with and without autograd. The primitives only: where they are used is ``lvbench.compute.matmul``'s
business, whether by ``lvbench.compute.kernels``' measurement."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["DIFFERENTIABLE_EPILOGUES", "ONEDNN_EPILOGUES", "OneDNNLinear", "onednn_enabled", "onednn_linear"]

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
