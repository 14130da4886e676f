"""Control variates with parameters of their own (NVIL's baseline network, REBAR's temperature and
scale, RELAX's surrogate), fitted once before a gradient study and then held fixed.

The estimators stay unbiased for any value of those parameters; fitting only lowers their variance.
An estimator declares its fit through the registry hook ``fit`` (model, x, k, objective, **options) ->
``FittedControl``; ``draw_gradients`` calls it when no ``control`` is given, and the study's table
records the fit (``fit`` column: steps, seconds, the variance objective before and after, the fitted
scalars). Called directly without ``control``, such an estimator uses the control's initial values.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lvbench.core.errors import LvbenchInputError
from lvbench.core.options import signature_options
from lvbench.core.registry import get_estimator, incompatibility
from lvbench.estimators.base import IncompatibleError

__all__ = ["RUNNER_OPTIONS", "FittedControl", "fit_control", "fit_by_adam"]

#: Estimator options that the runner sets (never a spec): the fitted control variate.
RUNNER_OPTIONS = ("control",)


@dataclass
class FittedControl:
    """A fitted control variate ``module`` (parameters frozen) and the record of its fit."""

    module: nn.Module
    record: dict[str, Any] = field(default_factory=dict)


def fit_control(
    estimator: str, model: nn.Module, x: torch.Tensor, num_samples: int, objective: str = "elbo", **options: Any
) -> FittedControl:
    """Fit ``estimator``'s control variate on (model, x, k, objective) with its options (e.g. ``fit_steps``),
    defaulting to the estimator's own defaults; uses the current torch RNG state."""
    entry = get_estimator(estimator)
    hook = entry.fit
    if hook is None:
        raise LvbenchInputError(f"{estimator!r} has no control variate to fit")
    reason = incompatibility(entry, model, num_samples=num_samples, objective=objective, **options)
    if reason is not None:
        raise IncompatibleError(reason)
    params, _ = signature_options(entry.obj, 3)
    defaults = {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}
    merged = {**defaults, **options, "objective": objective}
    return hook(model, x, num_samples, **{k: v for k, v in merged.items() if k not in RUNNER_OPTIONS})


def fit_by_adam(
    control: nn.Module,
    loss: Callable[[], torch.Tensor],
    steps: int,
    lr: float,
    record: dict[str, Any] | None = None,
    window: int = 20,
) -> FittedControl:
    """Minimize the stochastic ``loss()`` over ``control``'s parameters with Adam for ``steps`` steps (per
    group learning rates where the control has ``param_groups(lr)``); record the loss averaged over the
    first and last ``window`` steps, then freeze the parameters."""
    if not isinstance(steps, int) or steps < 0:
        raise LvbenchInputError(f"fit_steps must be an integer >= 0, got {steps!r}")
    groups = control.param_groups(lr) if hasattr(control, "param_groups") else [{"params": list(control.parameters())}]
    params = [p for g in groups for p in g["params"] if p.requires_grad]
    opt = torch.optim.Adam(groups, lr=lr) if steps and params else None
    losses = []
    start = time.perf_counter()
    for _ in range(steps if opt is not None else 0):
        opt.zero_grad(set_to_none=True)
        value = loss()
        value.backward()
        opt.step()
        losses.append(float(value.detach()))
    for p in control.parameters():
        p.requires_grad_(False)
    head, tail = losses[:window], losses[-window:]
    out = {
        "fit_steps": steps,
        "fit_lr": lr,
        "fit_seconds": round(time.perf_counter() - start, 4),
        "loss_first_steps": sum(head) / len(head) if head else math.nan,
        "loss_last_steps": sum(tail) / len(tail) if tail else math.nan,
        **(record or {}),
    }
    return FittedControl(control, out)
