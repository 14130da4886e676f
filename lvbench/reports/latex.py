"""Paper-ready LaTeX: per model, estimators × sample budgets, each cell the bias of log p(x) (mean error
over points and repeats) ± its standard error, the lowest RMSE at each budget in bold; booktabs, ready to
``\\input``. The numbers are those of the report's summary (``likelihood_summary``), rounded so that the
SE keeps two significant digits and the mean the same decimals."""

from __future__ import annotations

import math
import os

import pandas as pd

from lvbench.experiments.store import atomic_write_text
from lvbench.reports.escape import latex

__all__ = ["mean_pm_se", "paper_table", "write_paper_tables"]


def mean_pm_se(mean: float, se: float) -> str:
    """ "m \\pm s" with s to two significant digits and m to the same decimals (4 significant digits for m
    where there is no SE)."""
    if not math.isfinite(mean):
        return "--"
    if not (math.isfinite(se) and se > 0):
        return f"{mean:.4g}"
    decimals = max(0, 1 - math.floor(math.log10(se)))
    return f"{mean:.{decimals}f} \\pm {se:.{decimals}f}"


def paper_table(summary: pd.DataFrame, model: str, device: str | None = None) -> str:
    """The booktabs table of ``model`` (on ``device``, default the first in the summary)."""
    rows = summary[summary["model"] == model]
    if rows.empty:
        raise ValueError(f"no likelihood results for model {model!r}")
    device = device or rows["device"].iloc[0]
    rows = rows[rows["device"] == device]
    budgets = sorted(rows["k"].unique())
    best = rows.loc[rows.groupby("k")["rmse"].idxmin(), ["k", "estimator"]]
    winners = set(zip(best["k"], best["estimator"], strict=True))
    lines = [
        f"% lvbench: model {model} ({device}); bias of log p(x) in nats (mean error) \\pm its standard error;",
        "% bold: the lowest RMSE at that sample budget k (equal k, not equal cost: an AIS chain runs `steps`",
        "% HMC transitions, a SUMO estimate about k + 5 samples). Needs \\usepackage{booktabs}.",
        "\\begin{tabular}{l" + "r" * len(budgets) + "}",
        "\\toprule",
        "estimator & " + " & ".join(f"$k = {k}$" for k in budgets) + " \\\\",
        "\\midrule",
    ]
    for estimator, group in rows.groupby("estimator", sort=True):
        by_k = group.set_index("k")
        cells = []
        for k in budgets:
            if k not in by_k.index:
                cells.append("--")
                continue
            text = mean_pm_se(float(by_k.at[k, "bias"]), float(by_k.at[k, "bias_se"]))
            cells.append(
                "--" if text == "--" else f"$\\mathbf{{{text}}}$" if (k, estimator) in winners else f"${text}$"
            )
        lines.append(f"{latex(estimator)} & " + " & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def write_paper_tables(summary: pd.DataFrame, folder: str) -> dict[str, str]:
    """``folder``/paper/<model>.tex for each model of the summary; returns {"paper_<model>": path}."""
    paths: dict[str, str] = {}
    if summary.empty:
        return paths
    os.makedirs(os.path.join(folder, "paper"), exist_ok=True)
    for model in sorted(summary["model"].unique()):
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in model)
        paths[f"paper_{model}"] = os.path.join(folder, "paper", f"{safe}.tex")
        atomic_write_text(paths[f"paper_{model}"], paper_table(summary, model))
    return paths
