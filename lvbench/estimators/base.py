"""What every estimator shares: input checks, capability checks and registration in one decorator."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch

from lvbench.options import check_options
from lvbench.registry import get_estimator, incompatibility, register_estimator
from lvbench.validation import LvbenchInputError, check_data, check_num_samples

__all__ = ["IncompatibleError", "estimator", "option_names"]


class IncompatibleError(LvbenchInputError):
    """The estimator cannot run on this model with these options (the message says why)."""


def option_names(fn: Callable[..., Any]) -> list[str] | None:
    """The keyword options an estimator function takes after (model, x, k); None if it takes **kwargs."""
    fn = getattr(fn, "__wrapped__", fn)
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return [n for n, p in list(params.items())[3:] if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def estimator(
    name: str,
    *,
    kind: str,
    needs: Iterable[str] = (),
    properties: Iterable[str] = (),
    objectives: Iterable[str] = (),
    min_k: int = 1,
    no_grad: bool | None = None,
    **meta: Any,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Register ``fn(model, x, k, **options)`` as estimator ``name``, called as ``est(model, x, num_samples=k)``.

    The registered callable validates x (shape, dtype, device, NaN) and k (>= 1), refuses an
    incompatible model/option pairing with the reason, and for likelihood estimators runs under
    ``torch.inference_mode`` (``no_grad=False`` keeps autograd, e.g. for AIS's z-gradients).
    """
    no_grad = (kind == "likelihood") if no_grad is None else no_grad

    def decorate(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        @functools.wraps(fn)
        def run(model: torch.nn.Module, x: torch.Tensor, num_samples: int = 1, **options: Any) -> torch.Tensor:
            check_options(fn, options, f"estimator {name!r}", skip=3)
            k = check_num_samples(num_samples)
            x = check_data(x, model, getattr(model, "data_dim", None))
            reason = incompatibility(get_estimator(name), model, num_samples=k, **options)
            if reason is not None:
                raise IncompatibleError(reason)
            if no_grad:
                with torch.inference_mode():
                    return fn(model, x, k, **options)
            return fn(model, x, k, **options)

        run.__wrapped__ = fn
        register_estimator(
            name, kind=kind, needs=needs, properties=properties, objectives=objectives, min_k=min_k, **meta
        )(run)
        return run

    return decorate
