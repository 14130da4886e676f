"""The report's findings, stated from the summary tables (never written by hand), one sentence each.

Likelihood, per model (and device), at equal cost first: across all (estimator, k) the lowest
work-normalized error MSE × seconds per estimate (the Monte Carlo efficiency: the error at equal
compute time) and MSE × model evaluations per estimate (at equal counted evaluations); then, as a
secondary view since k is not a fair axis across estimators, the lowest RMSE at each k. Each names
those not significantly different (two-sided z-test on the MSE difference from the stored standard
errors, 5%; costs are taken as exact).
Gradients, per model, objective and parameter group: at each k the estimator with the highest norm
SNR ‖E g‖ / √tr Var g among those unbiased for the objective (declared in the registry and not
measurably biased), and every estimator whose measured bias ‖b‖ exceeds its noise √tr Var g.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lvbench.core.registry import ESTIMATORS

__all__ = ["gradient_findings", "likelihood_findings", "tied", "unbiased_for", "violation_findings"]


def violation_findings(violations: pd.DataFrame) -> list[str]:
    """One sentence per declared property the measurements contradict; they come first in a report."""
    return [
        f"**{r['estimator']} on {r['model']} at k = {int(r['k'])} violates its declared {r['property']}**: "
        f"{r['evidence']}."
        for _, r in violations.iterrows()
    ]


Z = 1.959963984540054  # two-sided 5%


def _fmt(value: float) -> str:
    return "∞" if value == math.inf else f"{value:.3g}"


def tied(best: pd.Series, others: pd.DataFrame, value: str, se: str) -> pd.DataFrame:
    """The rows of ``others`` whose ``value`` is not significantly different from ``best``'s."""
    diff = others[value] - best[value]
    scale = np.sqrt(others[se] ** 2 + best[se] ** 2)
    return others[(diff <= Z * scale) | ~np.isfinite(scale)]


def _label(row: pd.Series) -> str:
    what = "chains" if row.get("estimator_name") == "ais" else "k"
    return f"{row['estimator']} ({what} = {int(row['k'])})"


def likelihood_findings(summary: pd.DataFrame) -> list[str]:
    """One sentence per model and device: the lowest RMSE at each k, and the lowest at equal compute."""
    if summary.empty or "mse_se" not in summary:
        return []
    out = []
    devices = summary["device"].nunique() > 1
    for (model, device), group in summary.groupby(["model", "device"], sort=True):
        where = f"{model}" + (f" on {device}" if devices else "")
        parts = []
        for k, at_k in group.groupby("k", sort=True):
            at_k = at_k.sort_values("mse")
            best = at_k.iloc[0]
            ties = tied(best, at_k.iloc[1:], "mse", "mse_se")
            tie = f" (not significantly different: {', '.join(ties['estimator'])})" if len(ties) else ""
            chains = " (k = chains)" if best.get("estimator_name") == "ais" else ""
            parts.append(f"k = {k}: {best['estimator']}{chains}, RMSE {_fmt(best['rmse'])} nats{tie}")
        at_equal_k = f"**{where}**, lowest RMSE at each k — " + "; ".join(parts) + "."
        seconds = group["seconds_per_estimate_batch"] / group["points"]
        out.append(_at_equal_cost(where, group, seconds, "compute time", "seconds", "nats² s", "s"))
        if "evaluations_per_estimate" in group:  # the cost in counted model evaluations instead of seconds
            counted = group[np.isfinite(group["evaluations_per_estimate"])]
            if len(counted):
                cost = counted["evaluations_per_estimate"]
                out.append(
                    _at_equal_cost(where, counted, cost, "model evaluations", "evaluations", "nats²", "evaluations")
                )
        out.append(at_equal_k)  # equal k last: it is not equal cost (an AIS chain costs its steps)
    return out


def _at_equal_cost(
    where: str, group: pd.DataFrame, cost: pd.Series, axis: str, per: str, unit: str, cost_unit: str
) -> str:
    """The sentence naming the lowest work-normalized error MSE × ``cost`` per estimate over every
    (estimator, k) of ``group``, with those not significantly different from it."""
    work = group.assign(cost=cost, work=group["mse"] * cost, work_se=group["mse_se"] * cost).sort_values("work")
    best = work.iloc[0]
    ties = tied(best, work.iloc[1:], "work", "work_se")
    tie = f"; not significantly different: {', '.join(_label(r) for _, r in ties.iterrows())}" if len(ties) else ""
    return (
        f"**{where}**, lowest error at equal {axis} (MSE × {per} per estimate): {_label(best)}, "
        f"{_fmt(best['work'])} {unit} (RMSE {_fmt(best['rmse'])} nats at {_fmt(best['cost'])} {cost_unit} per "
        f"estimate){tie}."
    )


def unbiased_for(estimator_name: str, objective: str) -> bool | None:
    """Whether the registry declares ``estimator_name`` unbiased for ``objective`` (None if unknown here)."""
    if estimator_name not in ESTIMATORS.list():
        return None
    return ESTIMATORS.get(estimator_name).unbiased_for_objective(objective)


def gradient_findings(summary: pd.DataFrame) -> list[str]:
    """Per model, objective and group: the highest norm SNR among unbiased estimators at each k, and
    the estimators whose bias exceeds their noise."""
    if summary.empty or "snr_norm" not in summary:
        return []
    data = summary[summary["group"].isin(["theta", "phi"])].copy()
    data["declared_unbiased"] = [unbiased_for(n, o) for n, o in zip(data["estimator_name"], data["objective"])]
    data["noise"] = np.sqrt(data["trace_variance"].astype(float))
    has_bias = data["bias_norm"].notna() if "bias_norm" in data else pd.Series(False, index=data.index)
    biased = has_bias & (data["bias_norm"] > 3 * data["bias_norm_se"])
    out = []
    for (model, objective, group), rows in data.groupby(["model", "objective", "group"], sort=True):
        name = "θ (generative)" if group == "theta" else "φ (inference)"
        exact = rows[rows["noise"] == 0]
        candidates = rows[(rows["declared_unbiased"] == True) & ~biased[rows.index] & (rows["noise"] > 0)]  # noqa: E712
        parts = []
        for k, at_k in candidates.groupby("k", sort=True):
            at_k = at_k.sort_values("snr_norm", ascending=False)
            best = at_k.iloc[0]
            gap = best["snr_norm"] - at_k.iloc[1:]["snr_norm"]
            scale = np.sqrt(best["snr_norm_se"] ** 2 + at_k.iloc[1:]["snr_norm_se"] ** 2)
            ties = at_k.iloc[1:][(gap <= Z * scale) | ~np.isfinite(scale)]
            tie = f", not significantly above {', '.join(ties['estimator'])}" if len(ties) else ""
            parts.append(f"k = {k}: {best['estimator']} (SNR {_fmt(best['snr_norm'])}{tie})")
        if parts:
            ref = f"; exact enumeration has no noise ({', '.join(exact['estimator'].unique())})" if len(exact) else ""
            out.append(
                f"**{model}, {objective.upper()} gradient, {name}**: highest SNR ‖E g‖/√tr Var g among "
                f"unbiased estimators — " + "; ".join(parts) + ref + "."
            )
        loud = rows[biased[rows.index] & (rows["bias_norm"] > rows["noise"]) & (rows["noise"] > 0)]
        for _, r in loud.iterrows():
            out.append(
                f"**{model}, {objective.upper()} gradient, {name}**: {r['estimator']} at k = {r['k']} is biased: "
                f"‖bias‖ = {_fmt(r['bias_norm'])} (± {_fmt(r['bias_norm_se'])}) exceeds its noise √tr Var g = "
                f"{_fmt(r['noise'])}, so its SNR of {_fmt(r['snr_norm'])} measures a consistently wrong direction."
            )
    return out
