"""The winner grid the reader sees first: per model, sample budgets down, estimators across (grouped by
family: bounds, unbiased for log p(x), others), each cell the RMSE of log p̂(x) in nats, the lowest of
the row starred and those not significantly different from it (two-sided z-test on the MSE difference
at 5%, as in the findings) marked ≈. Rows are k, which is not equal cost across estimators (an AIS
chain costs its steps): the findings and the cost table compare at equal seconds and equal counted
model evaluations."""

from __future__ import annotations

import pandas as pd

from lvbench.core.errors import UnknownNameError
from lvbench.core.registry import ESTIMATORS
from lvbench.reports.findings import tied

__all__ = ["FAMILIES", "family_of", "winner_grid"]

FAMILIES = ("bound", "unbiased", "other")


def family_of(estimator_name: str) -> str:
    """ "bound" (a lower or upper bound on log p(x)), "unbiased" (for log p(x) itself) or "other"
    (debiased or consistent estimators, and unregistered names)."""
    try:
        properties = set(ESTIMATORS.get(estimator_name).properties)
    except UnknownNameError:
        return "other"
    if properties & {"lower_bound", "upper_bound"}:
        return "bound"
    return "unbiased" if "unbiased_log" in properties else "other"


def winner_grid(summary: pd.DataFrame, model: str, device: str | None = None) -> pd.DataFrame:
    """The grid of ``model`` (on ``device``, default the first): one row per k, one column per
    estimator label headed "label (family)", cells "★ 0.0123", "≈ 0.0131" or "0.201"; "—" where the
    estimator has no result at that k."""
    rows = summary[summary["model"] == model]
    if rows.empty:
        raise ValueError(f"no likelihood results for model {model!r}")
    rows = rows[rows["device"] == (device or rows["device"].iloc[0])]
    families = {e: family_of(n) for e, n in zip(rows["estimator"], rows["estimator_name"], strict=True)}
    order = sorted(families, key=lambda e: (FAMILIES.index(families[e]), e))
    grid = {}
    for k, at_k in rows.groupby("k", sort=True):
        at_k = at_k.sort_values("mse")
        best = at_k.iloc[0]
        ties = set(tied(best, at_k.iloc[1:], "mse", "mse_se")["estimator"])
        cells = {}
        for _, r in at_k.iterrows():
            mark = "★ " if r["estimator"] == best["estimator"] else "≈ " if r["estimator"] in ties else ""
            cells[f"{r['estimator']} ({families[r['estimator']]})"] = f"{mark}{r['rmse']:.3g}"
        grid[k] = cells
    columns = [f"{e} ({families[e]})" for e in order]
    table = pd.DataFrame.from_dict(grid, orient="index").reindex(columns=columns).fillna("—")
    table.index.name = "k"
    return table.reset_index()
