"""What every estimator shares: input checks, capability checks and registration in one decorator."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from lvbench.core.options import check_constraints, check_options
from lvbench.core.registry import get_estimator, incompatibility, register_estimator
from lvbench.core.validation import LvbenchInputError, check_data, check_num_samples

__all__ = ["IncompatibleError", "estimator"]


class IncompatibleError(LvbenchInputError):
    """The estimator cannot run on this model with these options (the message says why)."""


def estimator(
    name: str,
    *,
    kind: str,
    no_grad: bool | None = None,
    **registration: Any,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Register ``fn(model, x, k, **options)`` as estimator ``name``, called as ``est(model, x, num_samples=k)``.

    ``registration``: the keywords of ``register_estimator`` (needs, properties, objectives, min_k, the
    hooks check / log_weights / fit, unbiased_for, constraints, surrogate_is_objective), checked there.
    The registered callable validates its options (names, types, declared ranges), x (shape, dtype,
    device, NaN) and k (>= 1), refuses an incompatible model/option pairing with the reason, and for
    likelihood estimators runs under ``torch.inference_mode`` (``no_grad=False`` keeps autograd, e.g. for
    AIS's z-gradients).
    """
    no_grad = (kind == "likelihood") if no_grad is None else no_grad

    def decorate(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        @functools.wraps(fn)
        def run(model: torch.nn.Module, x: torch.Tensor, num_samples: int = 1, **options: Any) -> torch.Tensor:
            check_options(fn, options, f"estimator {name!r}", skip=3)
            entry = get_estimator(name)
            check_constraints(entry.constraints, options, f"{name}: ")
            k = check_num_samples(num_samples)
            x = check_data(x, model, getattr(model, "data_dim", None))
            reason = incompatibility(entry, model, num_samples=k, **options)
            if reason is not None:
                raise IncompatibleError(reason)
            if no_grad:
                with torch.inference_mode():
                    return fn(model, x, k, **options)
            return fn(model, x, k, **options)

        run.__wrapped__ = fn
        register_estimator(name, kind=kind, **registration)(run)
        return run

    return decorate
