"""Input checks that turn bad input into one clear sentence instead of a traceback from torch."""

from __future__ import annotations

import itertools
import numbers

import numpy as np
import torch
from torch.distributions import constraints

from lvbench.core.errors import LvbenchInputError
from lvbench.core.protocol import data_support

__all__ = ["LvbenchInputError", "check_num_samples", "check_data", "model_dtype_device"]


def check_num_samples(k: object, name: str = "num_samples") -> int:
    """``k`` as an int >= 1, or a clear error."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral | np.integer):
        raise LvbenchInputError(f"{name} must be an integer >= 1, got {k!r} ({type(k).__name__})")
    if int(k) < 1:
        raise LvbenchInputError(f"{name} must be >= 1, got {k}")
    return int(k)


def model_dtype_device(model: torch.nn.Module) -> tuple[torch.dtype, torch.device]:
    """The floating dtype and device of a model's parameters or buffers."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


def check_data(x: object, model: torch.nn.Module, data_dim: int | None = None) -> torch.Tensor:
    """``x`` as a finite [N, D] tensor matching the model's dtype and device, or a clear error."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise LvbenchInputError(f"x must be a torch.Tensor of shape [N, D], got {type(x).__name__}")
    dtype, device = model_dtype_device(model)
    if not x.is_floating_point():
        raise LvbenchInputError(f"x must be a floating-point tensor (model uses {dtype}), got dtype {x.dtype}")
    if x.dtype != dtype:
        raise LvbenchInputError(
            f"x has dtype {x.dtype} but the model's parameters are {dtype}; convert one of them "
            f"(x.to({dtype}) or model.to({x.dtype}))"
        )
    if x.device != device:
        raise LvbenchInputError(f"x is on {x.device} but the model is on {device}; move one of them")
    if x.dim() != 2:
        raise LvbenchInputError(f"x must have shape [N, D] (a batch of flat data points), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise LvbenchInputError("x is empty: it has no data points (shape [0, D])")
    if data_dim is not None and x.shape[1] != data_dim:
        raise LvbenchInputError(
            f"x has {x.shape[1]} features per point but the model expects data_dim={data_dim} (shape {tuple(x.shape)})"
        )
    support = data_support(model)
    if not bool(_finite_and_supported(x, support)):  # the one host sync of a call
        finite = torch.isfinite(x)
        if not finite.all():
            bad = int((~finite).any(dim=1).sum())
            raise LvbenchInputError(f"x contains NaN or infinite values ({bad} of {x.shape[0]} points affected)")
        outside = ~support.check(x)
        bad, example = int(outside.any(dim=1).sum()), float(x[outside][0])
        raise LvbenchInputError(
            f"x lies outside the support of {type(model).__name__}'s likelihood, {describe_support(support)}: "
            f"{bad} of {x.shape[0]} points (e.g. the value {example:g}); its log p(x) would be meaningless"
        )
    return x


def _finite_and_supported(x: torch.Tensor, support: constraints.Constraint | None) -> torch.Tensor:
    """Whether every x is finite and in ``support``, as a 0-dim bool tensor. From x's minimum and maximum
    (one pass; NaN propagates into both) where the support is the reals, an interval or {0, 1} (then also
    no fractional part: a second pass), else elementwise through ``support.check``."""
    if (
        support is None
        or support is constraints.real
        or isinstance(support, constraints.interval | constraints.half_open_interval | type(constraints.boolean))
    ):
        lo, hi = torch.aminmax(x)
        ok = lo.isfinite() & hi.isfinite()
        if isinstance(support, type(constraints.boolean)):
            return ok & (lo >= 0) & (hi <= 1) & (torch.count_nonzero(torch.frac(x)) == 0)
        if isinstance(support, constraints.half_open_interval):
            return ok & (lo >= support.lower_bound) & (hi < support.upper_bound)
        if isinstance(support, constraints.interval):
            return ok & (lo >= support.lower_bound) & (hi <= support.upper_bound)
        return ok
    return (torch.isfinite(x) & support.check(x)).all()


def describe_support(support: constraints.Constraint) -> str:
    """A constraint in words, for error messages."""
    if support is constraints.boolean:
        return "binary values {0, 1} (binarize grey levels first)"
    if isinstance(support, constraints.interval | constraints.half_open_interval):
        return f"[{support.lower_bound}, {support.upper_bound}]"
    return str(support)
