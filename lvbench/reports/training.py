"""Training studies, summarized from their learning curves (``Results.training``), never by hand.

- ``curve_bands``: per (study, method, step) the median and the min–max band over seeds of a metric.
- ``budget_table``: held-out log p(x) per method at equal budgets — the final step (equal steps), the
  seconds and the model evaluations the cheapest method spent (each seed's curve interpolated there) —
  with standard errors over seeds, the time to come within ε nats of the best method, and, for PPCA, the
  excess negative log-likelihood over the closed-form optimum.
- ``comparisons``: each method against the study's reference method (the exact gradient,
  ``enumeration``, where present, else the best unbiased method) at the final step: the mean difference
  over seeds with a paired t-test (the seeds share initializations and minibatches). A biased method
  significantly below it has *plateaued* there.
- ``training_findings``: a few sentences stated from those tables.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["budget_table", "comparisons", "curve_bands", "training_findings"]

METHOD = ["study", "model", "estimator", "objective", "k"]
HELDOUT = "heldout_log_px"
#: A comparison is significant at this two-sided level.
ALPHA = 0.05


def _metric(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    return rows[rows["metric"] == metric] if not rows.empty else rows


def curve_bands(rows: pd.DataFrame, metric: str = HELDOUT) -> pd.DataFrame:
    """Median and min/max over seeds of ``metric`` at each evaluation step, with median seconds."""
    data = _metric(rows, metric)
    if data.empty:
        return pd.DataFrame()
    grouped = data.groupby([*METHOD, "method_kind", "step"], as_index=False)
    return grouped.agg(
        median=("value", "median"),
        low=("value", "min"),
        high=("value", "max"),
        seconds=("seconds", "median"),
        evaluations=("evaluations", "median"),
        seeds=("replicate", "nunique"),
    )


def _interpolate(curve: pd.DataFrame, axis: str, at: float) -> float:
    curve = curve.sort_values(axis)
    x, y = curve[axis].to_numpy(float), curve["value"].to_numpy(float)
    return float(np.interp(at, x, y)) if x[-1] >= at else math.nan


def _mean_se(values) -> tuple[float, float]:
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if not len(values):
        return math.nan, math.nan
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return float(values.mean()), float(se)


def budget_table(rows: pd.DataFrame, epsilon: dict[str, float] | float = 1.0) -> pd.DataFrame:
    """One row per (study, method): held-out log p(x) at equal steps, seconds and evaluations (mean ± SE
    over seeds), the seconds to come within ``epsilon`` nats of the study's best final value (median over
    seeds; NaN where a seed never does) and the final excess over the PPCA optimum where measured."""
    data = _metric(rows, HELDOUT)
    if data.empty:
        return pd.DataFrame()
    out = []
    for study, s_rows in data.groupby("study"):
        eps = epsilon.get(study, 1.0) if isinstance(epsilon, dict) else epsilon
        finals = s_rows[s_rows["step"] == s_rows.groupby([*METHOD, "replicate"])["step"].transform("max")]
        per_method = finals.groupby(METHOD)
        equal_seconds = float(per_method["seconds"].median().min())
        equal_evaluations = float(per_method["evaluations"].median().replace(0, np.nan).min())
        best = float(per_method["value"].mean().max())
        for key, m_rows in s_rows.groupby(METHOD):
            seeds = [r for _, r in m_rows.groupby("replicate")]
            final = finals.set_index(METHOD).loc[[key]]
            record = dict(zip(METHOD, key, strict=True))
            record["method_kind"] = m_rows["method_kind"].iloc[0]
            record["seeds"] = len(seeds)
            record["steps"] = int(final["step"].median())
            record["seconds"] = float(final["seconds"].median())
            record["evaluations"] = float(final["evaluations"].median())
            record["final"], record["final_se"] = _mean_se(final["value"])
            at_s = [_interpolate(c, "seconds", equal_seconds) for c in seeds]
            record["at_equal_seconds"], record["at_equal_seconds_se"] = _mean_se(at_s)
            at_e = [_interpolate(c, "evaluations", equal_evaluations) for c in seeds]
            record["at_equal_evaluations"], record["at_equal_evaluations_se"] = _mean_se(at_e)
            reach = [c.loc[c["value"] >= best - eps, "seconds"].min() for c in seeds]
            record["seconds_to_best"] = float(np.median(reach)) if all(np.isfinite(reach)) else math.nan
            record["epsilon"] = eps
            record["equal_seconds"], record["equal_evaluations"] = equal_seconds, equal_evaluations
            out.append(record)
    table = pd.DataFrame(out)
    excess = _metric(rows, "excess_nll")
    if not excess.empty:
        last = excess[excess["step"] == excess.groupby([*METHOD, "replicate"])["step"].transform("max")]
        stats_ = last.groupby(METHOD)["value"].agg(lambda v: _mean_se(v))
        table = table.merge(
            pd.DataFrame(
                [(*k, v[0], v[1]) for k, v in stats_.items()], columns=[*METHOD, "excess_nll", "excess_nll_se"]
            ),
            on=METHOD,
            how="left",
        )
    return table.sort_values(["study", "final"], ascending=[True, False], ignore_index=True)


def comparisons(rows: pd.DataFrame, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each method's final held-out log p(x) minus the study's reference method's, per seed, averaged, with
    a paired two-sided t-test over seeds; ``plateau`` marks a biased method significantly below it.
    ``table``: ``budget_table(rows)`` where the caller has it already."""
    table = budget_table(rows) if table is None else table
    if table.empty:
        return pd.DataFrame()
    data = _metric(rows, HELDOUT)
    finals = data[data["step"] == data.groupby([*METHOD, "replicate"])["step"].transform("max")]
    out = []
    for study, s_table in table.groupby("study"):
        exact = s_table[s_table["estimator"].map(lambda e: e == "enumeration")]
        if exact.empty:
            exact = s_table[s_table["method_kind"] == "unbiased"].head(1)
        if exact.empty:
            continue
        ref = exact.iloc[0]
        ref_key = tuple(ref[c] for c in METHOD)
        ref_values = finals.set_index(METHOD).loc[[ref_key]].set_index("replicate")["value"]
        for _, method in s_table.iterrows():
            key = tuple(method[c] for c in METHOD)
            if key == ref_key:
                continue
            values = finals.set_index(METHOD).loc[[key]].set_index("replicate")["value"]
            paired = pd.concat([values, ref_values], axis=1, keys=["m", "ref"]).dropna()
            diff = paired["m"] - paired["ref"]
            p = (
                float(stats.ttest_rel(paired["m"], paired["ref"]).pvalue)
                if len(diff) > 1 and diff.std() > 0
                else math.nan
            )
            mean, se = _mean_se(diff)
            significant = bool(np.isfinite(p) and p < ALPHA)
            out.append(
                {
                    "study": study,
                    "estimator": method["estimator"],
                    "objective": method["objective"],
                    "k": method["k"],
                    "method_kind": method["method_kind"],
                    "versus": ref["estimator"],
                    "difference": mean,
                    "difference_se": se,
                    "p_value": p,
                    "significant": significant,
                    "plateau": significant and mean < 0 and method["method_kind"] == "biased",
                }
            )
    return pd.DataFrame(out)


def training_findings(
    rows: pd.DataFrame,
    epsilon: dict[str, float] | float = 1.0,
    table: pd.DataFrame | None = None,
    versus: pd.DataFrame | None = None,
) -> list[str]:
    """Per study: the best method at equal steps and the fastest to come within ε of it; each biased
    method's plateau below the reference; the excess over the PPCA optimum. ``table`` and ``versus``:
    ``budget_table(rows, epsilon)`` and ``comparisons(rows)`` where the caller has them already."""
    table = budget_table(rows, epsilon) if table is None else table
    if table.empty:
        return []
    lines = []
    versus = comparisons(rows, table) if versus is None else versus
    for study, s_table in table.groupby("study"):
        best = s_table.iloc[0]
        steps = int(best["steps"])
        several = s_table.groupby("estimator")["k"].nunique().max() > 1

        def name(row, several=several) -> str:  # a method's label, with its k where a study has several
            return f"{row['estimator']} (k = {row['k']})" if several else str(row["estimator"])

        line = (
            f"Training study {study}: {best['estimator']} ({best['objective']}, k = {best['k']}) ends highest, "
            f"held-out log p(x) {best['final']:.3f} ± {best['final_se']:.3f} nats after {steps} steps"
        )
        reached = s_table[np.isfinite(s_table["seconds_to_best"])].sort_values("seconds_to_best")
        if len(reached):
            fast = reached.iloc[0]
            line += f"; {name(fast)} is first within {fast['epsilon']:g} nats of it, in {fast['seconds_to_best']:.3g} s"
            slow = reached.iloc[-1]
            if name(slow) != name(fast):
                line += f", {name(slow)} needs {slow['seconds_to_best']:.3g} s"
        never = [name(r) for _, r in s_table[~np.isfinite(s_table["seconds_to_best"])].iterrows()]
        if never:
            line += f"; not within it on every seed: {', '.join(never)}"
        lines.append(line + ".")
        if not versus.empty:
            for _, c in versus[(versus["study"] == study) & versus["plateau"]].iterrows():
                lines.append(
                    f"{name(c)} plateaus {-c['difference']:.3f} ± {c['difference_se']:.3f} nats below "
                    f"{c['versus']} on {study} (paired t-test over seeds, p = {c['p_value']:.2g})."
                )
        if "excess_nll" in s_table and s_table["excess_nll"].notna().any():
            parts = [
                f"{name(r)} {r['excess_nll']:.3g} ± {r['excess_nll_se']:.2g}"
                for _, r in s_table.dropna(subset=["excess_nll"]).iterrows()
            ]
            lines.append(
                f"Excess negative log-likelihood over the closed-form PPCA optimum on {study} after "
                f"{steps} steps (nats per training point): {'; '.join(parts)}."
            )
    return lines
