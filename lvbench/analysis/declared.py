"""Estimators held to what they declare: each registered property checked against measured results
wherever the ground truth is exact.

For a likelihood cell whose reference is the exact log p(x) (zero reference SE):
- ``lower_bound`` (E[estimate] ≤ log p(x)): violated when the bias exceeds 0 by more than 5 SE;
- ``unbiased_log`` (E[estimate] = log p(x)): violated when |bias| exceeds 5 SE;
- ``unbiased_p`` (E[exp(estimate)] = p(x)): the ratio r = p̂/p has mean 1; violated when the mean of r
  over repeats and points exceeds 1 by more than 5 SE. One-sided: with heavy-tailed weights the sample
  mean of an unbiased positive estimator falls short of 1 far more often than it overshoots, so only an
  overshoot is evidence.
Repeats that are bit-identical at every point while torch's generator was left in the same state after
each (an estimator that reseeds itself, or draws nothing) are flagged too: their spread of 0 is not a
measurement. Equal repeats from fresh draws (a proposal whose mass sits on one atom of a discrete
latent) are a measurement and are not flagged. The same checks run from ``lvbench check NAME`` (``lvbench.checks``)
on fresh draws, and ``lvbench compare`` counts a violation in B as a regression.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lvbench.core.registry import ESTIMATORS

__all__ = ["Z_VIOLATION", "declared_violations", "ratio_z"]

#: How many standard errors past the declared side make a violation.
Z_VIOLATION = 5.0


def ratio_z(estimates: np.ndarray, reference: np.ndarray) -> float:
    """z of mean(p̂/p) − 1 over repeats × points, from the sample SE (a ratio computed in log space)."""
    log_r = np.asarray(estimates, dtype=float) - np.asarray(reference, dtype=float)
    if log_r.size < 2:
        return math.nan
    if log_r.max() > 700:  # p̂ beyond e^700 times p: no finite mean, and no unbiased estimator's doing
        return math.inf
    r = np.exp(log_r)
    se = r.std(ddof=1) / math.sqrt(r.size)
    return (r.mean() - 1.0) / se if se > 0 else math.nan


def _properties(name: str) -> frozenset[str]:
    try:
        return ESTIMATORS.get(name).properties
    except KeyError:
        return frozenset()


def declared_violations(summary: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, property) whose measurement contradicts what the estimator declares, with the
    evidence in words: model, estimator, k, device, property, evidence."""
    out = []
    if summary.empty:
        return pd.DataFrame(out)
    keys = ["model", "estimator", "k", "device"]
    per_cell = dict(tuple(rows.groupby(keys))) if not rows.empty else {}
    for _, cell in summary.iterrows():
        where = {key: cell[key] for key in keys}
        if cell.get("identical_repeats", False):
            out.append(
                {
                    **where,
                    "property": "independent repeats",
                    "evidence": f"all {int(cell['repeats'])} repeats are bit-identical at every point "
                    "and torch's generator was in the same state after each (does the estimator reseed itself, "
                    "or draw nothing?)",
                }
            )
        exact = cell.get("reference_se", math.nan) == 0 and np.isfinite(cell["bias_se"]) and cell["bias_se"] > 0
        if not exact:
            continue
        props = _properties(cell["estimator_name"])
        bias, se = float(cell["bias"]), float(cell["bias_se"])
        text = f"bias {bias:+.4g} ± {se:.2g} nats against the exact log p(x)"
        if "lower_bound" in props and bias > Z_VIOLATION * se:
            out.append({**where, "property": "lower_bound", "evidence": f"{text}: above it by {bias / se:.1f} SE"})
        if "unbiased_log" in props and abs(bias) > Z_VIOLATION * se:
            out.append({**where, "property": "unbiased_log", "evidence": f"{text}: {abs(bias) / se:.1f} SE from 0"})
        mine = per_cell.get(tuple(cell[key] for key in keys))
        if "unbiased_p" in props and mine is not None:
            z = ratio_z(mine["estimate"].to_numpy(), mine["reference"].to_numpy())
            if z > Z_VIOLATION:
                out.append(
                    {**where, "property": "unbiased_p", "evidence": f"mean p̂/p exceeds 1 by {z:.1f} SE ({text})"}
                )
    return pd.DataFrame(out)
