"""Write the report of an output folder: CSV summaries, Markdown, and self-contained HTML."""

from __future__ import annotations

import base64
import json
import os

import pandas as pd

from lvbench.errors import LvbenchInputError
from lvbench.experiments.plan import read_manifest
from lvbench.experiments.store import ResultStore
from lvbench.reports.figures import gradient_figures, likelihood_figures
from lvbench.reports.tables import bdmc_table, gradient_summary, likelihood_summary

__all__ = ["write_report"]

LIKELIHOOD_COLUMNS = [
    "model",
    "estimator",
    "k",
    "device",
    "bias",
    "bias_se",
    "std",
    "rmse",
    "bias_low",
    "bias_high",
    "estimates_per_second",
    "samples_per_second",
    "peak_memory_mb",
    "khat_median",
    "khat_good",
    "khat_ok",
    "khat_bad",
]
GRADIENT_COLUMNS = [
    "model",
    "estimator",
    "objective",
    "k",
    "group",
    "snr",
    "trace_variance",
    "bias_norm",
    "bias_norm_se",
    "cosine",
    "seconds_per_gradient",
    "reference",
]


def export_table(table: pd.DataFrame, stem: str, columns: list[str]) -> dict[str, str]:
    """``stem``.csv and .json (every column, full precision) and .tex (the report's columns, 4
    significant digits, a booktabs table); returns {kind: path} with kinds named after the stem."""
    name = os.path.basename(stem)
    paths = {name: f"{stem}.csv", f"{name}_json": f"{stem}.json", f"{name}_latex": f"{stem}.tex"}
    table.to_csv(paths[name], index=False)
    table.to_json(paths[f"{name}_json"], orient="records", indent=1, double_precision=15)
    shown = _fmt(table, columns)
    styler = shown.style.hide(axis="index").format(precision=4, na_rep="--", formatter=_latex_number)
    align = "".join("r" if pd.api.types.is_numeric_dtype(shown[c]) else "l" for c in shown.columns)
    latex = styler.to_latex(hrules=True, column_format=align)
    with open(paths[f"{name}_latex"], "w") as fh:
        fh.write(latex.replace("_", "\\_"))
    return paths


def _latex_number(value) -> str:
    if isinstance(value, float):
        return "--" if value != value else f"{value:.4g}"
    return str(value)


def with_missing(statuses: pd.DataFrame, store: ResultStore, cells: dict[str, dict]) -> pd.DataFrame:
    """Statuses of the current cells, with those whose rows or status do not read back (or that never
    ran) marked missing: a cell never silently vanishes from a report."""
    reason = "no trustworthy result (never ran, interrupted, or its files are missing or corrupt): rerun the spec"
    ok = {i for i in cells if store.verified(i, quiet=True) is not None}
    records = statuses.to_dict("records") if not statuses.empty else []
    for record in records:
        if record["status"] == "done" and record["id"] not in ok:
            record.update(status="missing", reason=reason)
    seen = {r["id"] for r in records}
    records += [{"id": i, **what, "status": "missing", "reason": reason} for i, what in cells.items() if i not in seen]
    return pd.DataFrame(records)


def _fmt(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return frame[[c for c in columns if c in frame]]


def write_report(out_dir: str) -> dict[str, str]:
    """Summaries (CSV), figures (PNG), report.md and a self-contained report.html under ``out_dir/report``."""
    if not os.path.isdir(out_dir) or not os.path.isdir(os.path.join(out_dir, "status")):
        raise LvbenchInputError(f"{out_dir} is not an lvbench output folder (run `lvbench run --out {out_dir}` first)")
    store = ResultStore(out_dir)
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise LvbenchInputError(f"{out_dir} has no readable manifest.json: run `lvbench run --out {out_dir}` again")
    ids = list(manifest["cells"])  # exactly the current spec's cells: older ones may stay on disk
    folder = os.path.join(out_dir, "report")
    figures_dir = os.path.join(folder, "figures")
    os.makedirs(figures_dir, exist_ok=True)
    lik = likelihood_summary(store.rows("likelihood", ids))
    grad = gradient_summary(store.rows("gradient", ids))
    statuses = with_missing(store.statuses(ids), store, manifest["cells"])
    bdmc = bdmc_table(out_dir, manifest["models"])
    paths = {}
    for name, table, columns in (("summary", lik, LIKELIHOOD_COLUMNS), ("gradient_summary", grad, GRADIENT_COLUMNS)):
        if not table.empty:
            paths.update(export_table(table, os.path.join(folder, name), columns))
    figs = {}
    if not lik.empty:
        figs.update(likelihood_figures(lik, figures_dir))
    if not grad.empty:
        figs.update(gradient_figures(grad, figures_dir))
    run = {}
    if os.path.isfile(os.path.join(out_dir, "run.json")):
        with open(os.path.join(out_dir, "run.json")) as fh:
            run = json.load(fh)
    sections = _sections(lik, grad, statuses, bdmc, run)
    md = _markdown(sections, figs, folder)
    paths["markdown"] = os.path.join(folder, "report.md")
    with open(paths["markdown"], "w") as fh:
        fh.write(md)
    paths["html"] = os.path.join(folder, "report.html")
    with open(paths["html"], "w") as fh:
        fh.write(_html(sections, figs))
    return paths


def _sections(lik, grad, statuses, bdmc, run) -> list[tuple[str, str, pd.DataFrame | None]]:
    machine = run.get("machine", {})
    where = (
        f"Run on {machine.get('cpu', '?')} ({machine.get('cpu_count', '?')} cores), {machine.get('platform', '?')}, "
        f"torch {machine.get('torch', '?')}, CUDA device: {machine.get('cuda') or 'none'}; "
        f"executor {run.get('executor', '?')}, {run.get('seconds', float('nan')):.0f} s for the last invocation; "
        f"lvbench {run.get('source', {}).get('lvbench', '?')} at commit {run.get('source', {}).get('commit') or '?'}."
        if machine
        else "Machine unknown (no run.json)."
    )
    refs = lik.groupby("model")["reference_name"].first().reset_index() if not lik.empty else None
    sections = [("Where these numbers come from", where, None)]
    if refs is not None:
        sections.append(
            (
                "References",
                "Each model's estimates are judged against this reference value of log p(x); "
                "its standard error is folded into `bias_se`.",
                refs,
            )
        )
    if not lik.empty:
        sections.append(
            (
                "Likelihood estimators",
                "Per cell: bias of log p̂(x) against the reference averaged over "
                "points (bias_se: its standard error; bias_low/high: 95% interval), std across repeats, RMSE, "
                "throughput, peak memory (CUDA: max allocated; CPU: peak resident memory "
                "sampled every ms after trimming the heap), and "
                "Pareto k-hat of the importance weights (median, and points per band: good ≤ 0.5 < ok ≤ "
                "min(1 - 1/log10 k, 0.7) < bad).",
                _fmt(lik, LIKELIHOOD_COLUMNS),
            )
        )
    if not bdmc.empty:
        sections.append(
            (
                "BDMC sandwich bounds",
                "Forward AIS (stochastic lower bound) and reverse AIS from the exact "
                "latent (stochastic upper bound) on data simulated from each model. Both bounds hold in "
                "expectation; where the true gap is below their Monte Carlo noise, one point's bounds can cross.",
                bdmc,
            )
        )
    if not grad.empty:
        sections.append(
            (
                "Gradient estimators",
                "Per study: SNR = mean over coordinates of |E g| / std g, total "
                "variance, and bias against the exact gradient (or a Monte Carlo reference, with its standard "
                "error folded into bias_norm_se), for θ (generative) and φ (inference).",
                _fmt(grad, GRADIENT_COLUMNS),
            )
        )
    if not statuses.empty:
        other = statuses[statuses["status"] != "done"]
        if not other.empty:
            sections.append(
                (
                    "Skipped and failed cells",
                    "",
                    other[["model", "estimator", "objective", "k", "device", "status", "reason"]],
                )
            )
    return sections


def _markdown(sections, figs, folder) -> str:
    parts = ["# lvbench report\n"]
    for title, text, table in sections:
        parts.append(f"## {title}\n\n{text}\n")
        if table is not None:
            parts.append(table.to_markdown(index=False, floatfmt=".4g") + "\n")
    if figs:
        parts.append("## Figures\n")
        for title, path in figs.items():
            parts.append(f"### {title}\n\n![{title}]({os.path.relpath(path, folder)})\n")
    return "\n".join(parts)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;
font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f3f3f3}img{max-width:100%}"""


def _html(sections, figs) -> str:
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>lvbench report</title><style>{CSS}</style>"
        "</head><body><h1>lvbench report</h1>"
    ]
    for title, text, table in sections:
        parts.append(f"<h2>{title}</h2><p>{text}</p>")
        if table is not None:
            parts.append(table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0))
    for title, path in figs.items():
        with open(path, "rb") as fh:
            data = base64.b64encode(fh.read()).decode()
        parts.append(f"<h3>{title}</h3><img alt='{title}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "".join(parts)
