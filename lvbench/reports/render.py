"""Write the report of an output folder: summaries (CSV, JSON, LaTeX), figures, Markdown and a
self-contained HTML page (a jinja2 template) that opens with findings stated from the data.

Every table shown is split by purpose (estimates / cost / diagnostics), carries units in its headers,
prints numbers to 4 significant digits and marks every missing value the same way ("—").
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from dataclasses import dataclass, field
from importlib import resources

import jinja2
import numpy as np
import pandas as pd

from lvbench.analysis.declared import declared_violations
from lvbench.core.errors import LvbenchInputError
from lvbench.core.registry import ESTIMATORS
from lvbench.experiments.plan import expected_models, read_manifest
from lvbench.experiments.prepare import prepared_extras
from lvbench.experiments.store import ResultStore, atomic_write_text
from lvbench.reports.escape import latex, markdown, markdown_frame
from lvbench.reports.figures import gradient_figures, khat_figure, likelihood_figures, training_figures
from lvbench.reports.findings import gradient_findings, likelihood_findings, violation_findings
from lvbench.reports.latex import write_paper_tables
from lvbench.reports.results import with_missing
from lvbench.reports.tables import bdmc_table, gaps_table, gradient_summary, likelihood_summary
from lvbench.reports.training import budget_table, comparisons, curve_bands, training_findings
from lvbench.reports.winners import winner_grid

__all__ = ["export_table", "with_missing", "write_report"]

MISSING = "—"

#: Columns of the exported likelihood summary's LaTeX table.
LIKELIHOOD_COLUMNS = [
    "model", "estimator", "k", "device", "bias", "bias_se", "std", "rmse", "seconds_per_estimate",
    "evaluations_per_estimate",
]  # fmt: skip
GRADIENT_COLUMNS = ["model", "estimator", "objective", "k", "group", "snr_norm", "trace_variance", "bias_norm"]
TRAINING_COLUMNS = ["study", "estimator", "objective", "k", "steps", "final", "final_se", "at_equal_seconds"]
TRAINING_BUDGETS = {
    "study": "study",
    "estimator": "method",
    "method_kind": "kind",
    "objective": "objective",
    "k": "k",
    "seeds": "seeds",
    "steps": "steps",
    "final": "held-out log p(x), final (nats)",
    "final_se": "± SE",
    "equal_seconds": "equal seconds (s)",
    "at_equal_seconds": "at equal seconds (nats)",
    "at_equal_seconds_se": "± SE ",
    "equal_evaluations": "equal evaluations",
    "at_equal_evaluations": "at equal evaluations (nats)",
    "at_equal_evaluations_se": "±  SE",
    "seconds": "seconds, final (s)",
    "evaluations": "evaluations, final",
    "seconds_to_best": "seconds to within ε of best (s)",
    "excess_nll": "excess over PPCA optimum (nats)",
    "excess_nll_se": "±   SE",
}
TRAINING_VERSUS = {
    "study": "study",
    "estimator": "method",
    "method_kind": "kind",
    "k": "k",
    "versus": "versus",
    "difference": "final difference (nats)",
    "difference_se": "± SE",
    "p_value": "p (paired t)",
    "plateau": "plateau below it",
}

KEYS = {"model": "model", "estimator": "estimator", "k": "k", "device": "device"}
LIK_ESTIMATES = {
    **KEYS,
    "bias": "bias (nats)",
    "bias_se": "± SE (nats)",
    "bias_low": "95% low (nats)",
    "bias_high": "95% high (nats)",
    "std": "std (nats)",
    "rmse": "RMSE (nats)",
}
LIK_COST = {
    **KEYS,
    "seconds_per_estimate": "seconds per estimate (s)",
    "evaluations_per_estimate": "model evaluations per estimate (counted)",
    "estimates_per_second": "estimates per second (1/s)",
    "samples_per_second": "samples per second (1/s)",
    "peak_memory_mb": "peak memory (MB)",
}
LIK_DIAGNOSTICS = {
    **KEYS,
    "khat_median": "k-hat (median)",
    "khat_good": "points good",
    "khat_ok": "points ok",
    "khat_bad": "points bad",
    "ess_median": "ESS (median)",
}
GRAD_KEYS = {"model": "model", "estimator": "estimator", "objective": "objective", "k": "k", "group": "group"}
GRAD_SIGNAL = {
    **GRAD_KEYS,
    "snr_norm": "SNR ‖E g‖/√tr Var",
    "snr_median": "SNR (median coord.)",
    "snr": "SNR (mean coord.)",
    "trace_variance": "tr Var g",
    "mean_norm": "‖E g‖",
}
GRAD_BIAS = {
    **GRAD_KEYS,
    "bias_norm": "‖bias‖",
    "bias_norm_se": "± SE",
    "cosine": "cosine to reference",
    "reference": "reference",
    "is_reference": "is the reference's estimator",
}
GRAD_COST = {**GRAD_KEYS, "seconds_per_gradient": "seconds per gradient (s)", "method": "draws"}

GLOSSARY = [
    ("cell", "One model × estimator × k × device (× objective for gradients), run with its own seed."),
    ("k", "Samples per data point (for AIS: annealing chains)."),
    ("bias", "Mean over points of (mean over repeats of log p̂(x)) − reference log p(x), in nats."),
    ("± SE, 95% interval", "Standard error of the bias (repeats and the reference's own uncertainty); t interval."),
    ("RMSE", "Root mean squared error of log p̂(x) over repeats and points, in nats."),
    ("MSE × seconds", "Work-normalized error: squared error at equal compute time (Monte Carlo efficiency)."),
    ("k-hat", "Pareto shape of the importance weights' tail: ≤ 0.5 good, ≤ min(1 − 1/log10 S, 0.7) ok, else bad."),
    ("ESS", "Kish's effective sample size (Σw)²/Σw² of the importance weights."),
    ("BDMC", "Bidirectional Monte Carlo: forward AIS lower and reverse AIS upper bounds on simulated data."),
    ("SNR", "Norm SNR ‖E g‖/√tr Var g; also the median and mean over coordinates of |E g_j|/sd g_j."),
    ("reference (gradients)", "One per model, objective and k: exact where possible, else a named Monte Carlo mean."),
    ("θ, φ", "Generative parameters (θ) and inference (encoder) parameters (φ)."),
]


@dataclass
class Table:
    caption: str
    columns: list[str]
    rows: list[list[tuple[str, bool]]]  # (text, is numeric)
    frame: pd.DataFrame  # the displayed values, for Markdown


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)
    glossary: list[tuple[str, str]] = field(default_factory=list)


def _number(value) -> tuple[str, bool]:
    if value is None or value is pd.NA or value == "" or (isinstance(value, float) and math.isnan(value)):
        return MISSING, False
    if isinstance(value, bool | np.bool_):
        return ("yes" if value else "no"), False
    if isinstance(value, int | np.integer):
        return str(int(value)), True
    if isinstance(value, float | np.floating):
        if math.isinf(value):
            return ("∞" if value > 0 else "−∞"), True
        return f"{value:.4g}", True
    return str(value), False


def display(frame: pd.DataFrame, columns: dict[str, str], caption: str = "") -> Table | None:
    """The ``columns`` of ``frame`` (present ones), renamed with units and formatted; None if empty."""
    present = [c for c in columns if c in frame]
    if frame.empty or not present:
        return None
    cells = [[_number(v) for v in row] for row in frame[present].itertuples(index=False)]
    shown = pd.DataFrame([[t for t, _ in r] for r in cells], columns=[columns[c] for c in present])
    return Table(caption, list(shown.columns), cells, shown)


def export_table(table: pd.DataFrame, stem: str, columns: list[str]) -> dict[str, str]:
    """``stem``.csv and .json (every column, full precision) and .tex (the main columns, 4 significant
    digits, a booktabs table); returns {kind: path} with kinds named after the stem."""
    name = os.path.basename(stem)
    paths = {name: f"{stem}.csv", f"{name}_json": f"{stem}.json", f"{name}_latex": f"{stem}.tex"}
    atomic_write_text(paths[name], table.to_csv(index=False))
    atomic_write_text(paths[f"{name}_json"], table.to_json(orient="records", indent=1, double_precision=15))
    shown = table[[c for c in columns if c in table]]
    align = "".join("r" if pd.api.types.is_numeric_dtype(shown[c]) else "l" for c in shown.columns)
    shown = shown.rename(columns=latex)  # labels come from the spec: escaped cell by cell, not the whole text
    styler = shown.style.hide(axis="index").format(formatter=lambda v: latex(_number(v)[0].replace(MISSING, "--")))
    atomic_write_text(paths[f"{name}_latex"], styler.to_latex(hrules=True, column_format=align))
    return paths


def write_report(out_dir: str) -> dict[str, str]:
    """Summaries, figures, report.md and a self-contained report.html under ``out_dir/report``."""
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
    expected = expected_models(out_dir, manifest)
    raw = store.rows("likelihood", ids, expected)
    lik = likelihood_summary(raw)
    if not lik.empty:
        lik["seconds_per_estimate"] = lik["seconds_per_estimate_batch"] / lik["points"]
    grad = gradient_summary(store.rows("gradient", ids, expected))
    statuses = with_missing(store.statuses(ids), store, manifest["cells"], expected)
    curves = store.rows("training", ids, expected)
    epsilon = {label: t.get("epsilon", 1.0) for label, t in manifest.get("spec", {}).get("training", {}).items()}
    budgets = budget_table(curves, epsilon)
    versus = comparisons(curves, budgets) if not budgets.empty else pd.DataFrame()
    paths: dict[str, str] = {}
    exported = (
        ("summary", lik, LIKELIHOOD_COLUMNS),
        ("gradient_summary", grad, GRADIENT_COLUMNS),
        ("training_budgets", budgets, TRAINING_COLUMNS),
        ("training_curves", curves, list(curves.columns)),
    )
    for name, table, columns in exported:
        if not table.empty:
            paths.update(export_table(table, os.path.join(folder, name), columns))
    paths.update(write_paper_tables(lik, folder))
    run = {}
    if os.path.isfile(os.path.join(out_dir, "run.json")):
        with open(os.path.join(out_dir, "run.json")) as fh:
            run = json.load(fh)
    violations = declared_violations(lik, raw)
    findings = violation_findings(violations) + likelihood_findings(lik) + gradient_findings(grad)
    findings += training_findings(curves, epsilon, budgets, versus)
    extras = prepared_extras(out_dir, manifest["models"])
    training = _training_section(curves, budgets, versus, figures_dir)
    sections = _sections(
        lik, grad, raw, statuses, bdmc_table(extras), gaps_table(extras), manifest, training, figures_dir
    )
    if not violations.empty:  # first: a number that contradicts its estimator's declaration
        columns = {c: c for c in ("model", "estimator", "k", "device", "property", "evidence")}
        caption = "Declared properties contradicted by the measurements (5 SE against exact ground truth)"
        sections.insert(0, Section(LEAD[0], "", [display(violations, columns, caption)]))
    where = _where(run)
    paths["markdown"] = os.path.join(folder, "report.md")
    atomic_write_text(paths["markdown"], _markdown(where, findings, sections, folder))
    paths["html"] = os.path.join(folder, "report.html")
    atomic_write_text(paths["html"], _html(where, findings, sections))
    return paths


def _where(run: dict) -> str:
    machine = run.get("machine", {})
    if not machine:
        return "Machine unknown (no run.json)."
    source = run.get("source", {})
    return (
        f"Run on {machine.get('cpu', '?')} ({machine.get('cpu_count', '?')} cores), {machine.get('platform', '?')}, "
        f"torch {machine.get('torch', '?')} (CPU matmuls: {machine.get('cpu_matmul', '?')}) with "
        f"{run.get('threads_per_cell', '?')} thread(s) per cell, CUDA device: "
        f"{machine.get('cuda') or 'none'}; executor {run.get('executor', '?')}, {run.get('seconds', math.nan):.0f} s "
        "for the last invocation's planning, models and cells (the report not included); "
        f"lvbench {source.get('lvbench', '?')} at commit {source.get('commit') or '?'}."
    )


def _estimator_table(manifest: dict) -> Table | None:
    """Each labelled estimator of the spec with its registered name and options."""
    rows = []
    for section, kind in (("estimators", "likelihood"), ("gradients", "gradient")):
        for label, table in manifest.get("spec", {}).get(section, {}).items():
            table = dict(table)
            name = table.pop("estimator", label)
            objective = table.pop("objective", None)
            if kind == "gradient" and objective is None and name in ESTIMATORS.list():
                objective = ESTIMATORS.get(name).objectives[0]
            for key in ("models", "repeats", "cell_timeout"):
                table.pop(key, None)
            k = table.pop("k", None)
            options = ", ".join(f"{key} = {value!r}" for key, value in sorted(table.items()))
            rows.append(
                {"label": label, "estimator": name, "kind": kind, "objective": objective, "k": k, "options": options}
            )
    frame = pd.DataFrame(rows)
    columns = {c: c for c in ("label", "estimator", "kind", "objective", "k", "options")}
    return display(frame, columns, "Estimator labels of this spec and their options")


#: What each section's table shows, in a sentence or three (the report's prose, in one place).
SECTION_TEXT = {
    "Winner grid": "Per model, sample budgets down and estimators across, grouped by family (bounds on log p(x), "
    "estimators unbiased for it, the others). k is not equal cost across estimators (an AIS chain costs its "
    "HMC steps): the findings compare at equal seconds and at equal counted model evaluations.",
    "References": "Each model's estimates are judged against this reference value of log p(x); a Monte Carlo "
    "reference's standard error is folded into every bias SE.",
    "Likelihood estimators": "One row per cell. Peak memory: CUDA max allocated; CPU peak resident memory sampled "
    "every ms after trimming the heap. Diagnostics are recorded for estimators that declare their importance "
    "weights (registry hook `log_weights`), for 5 ≤ k ≤ run.diagnostics_max_k.",
    "BDMC sandwich bounds": "Forward AIS (stochastic lower bound) and reverse AIS from the exact latent (stochastic "
    "upper bound) on data simulated from each model. Both bounds hold in expectation; where the true gap is below "
    "their Monte Carlo noise, one point's bounds can cross.",
    "Inference gaps": "Where log p(x) − ELBO comes from (Cremer, Li & Duvenaud 2018), averaged over the evaluation "
    "points: the approximation gap log p(x) − ELBO(q*) of the best member q* of the encoder's family for each point "
    "(optimized from the encoder's output), and the amortization gap ELBO(q*) − ELBO(q) of sharing one encoder "
    "across points. log p(x) is the model's reference.",
    "Training studies": "Each method trains the model from the same initializations, on the same minibatches, "
    "with Adam; held-out log p(x) is exact where the model has it, else the named estimator. Mean ± SE over seeds. "
    "Equal seconds and equal evaluations are the budget the cheapest method spent, each seed's curve interpolated "
    "there (— where a method's curve does not reach it). Model evaluations count the (z, x) pairs the gradient "
    "estimator evaluated log p(x, z) at. The reference method is the exact gradient (enumeration) where present, "
    "else the first unbiased method.",
    "Gradient estimators": "One row per study and parameter group (θ generative, φ inference). Every estimator "
    "compared at one (model, objective, k) is judged against the same reference, so ‖bias‖ is comparable across "
    "rows; the reference's own estimator is marked (its bias against its own draws proves nothing).",
}


def _sections(lik, grad, raw, statuses, bdmc, gaps, manifest, training, figures_dir) -> list[Section]:
    sections = [
        *_winners_section(lik),
        *_references_section(lik),
        *_estimators_section(manifest),
        *_likelihood_section(lik, raw, figures_dir),
        *_bdmc_section(bdmc),
        *_gaps_section(gaps),
        *_gradient_section(grad, figures_dir),
        *training,
        *_status_section(statuses),
        Section("Glossary", "", glossary=GLOSSARY),
    ]
    return sections


def _winners_section(lik: pd.DataFrame) -> list[Section]:
    if lik.empty or "mse_se" not in lik:
        return []
    tables = []
    for model in sorted(lik["model"].unique()):
        grid = winner_grid(lik, model)
        caption = f"{model}: RMSE of log p̂(x) (nats) at each k; ★ the lowest, ≈ not significantly different (5%)"
        tables.append(display(grid, {c: c for c in grid.columns}, caption))
    return [Section("Winner grid", SECTION_TEXT["Winner grid"], tables)]


def _references_section(lik: pd.DataFrame) -> list[Section]:
    if lik.empty:
        return []
    refs = lik.groupby("model", as_index=False)["reference_name"].first()
    table = display(refs, {"model": "model", "reference_name": "reference log p(x)"})
    return [Section("References", SECTION_TEXT["References"], [table])]


def _estimators_section(manifest: dict) -> list[Section]:
    labels = _estimator_table(manifest)
    return [] if labels is None else [Section("Estimators", "", [labels])]


def _likelihood_section(lik: pd.DataFrame, raw: pd.DataFrame, figures_dir: str) -> list[Section]:
    if lik.empty:
        return []
    figs = likelihood_figures(lik, figures_dir)
    tables = [
        display(lik, LIK_ESTIMATES, "Estimates: bias, its uncertainty, spread and error"),
        display(lik, LIK_COST, "Cost: time per estimate and peak memory on one extra untimed run"),
        display(lik[lik["khat_median"].notna()], LIK_DIAGNOSTICS, "Importance-weight diagnostics"),
    ]
    figs.update(khat_figure(raw, figures_dir))
    title = "Likelihood estimators"
    return [Section(title, SECTION_TEXT[title], [t for t in tables if t is not None], _figures(figs))]


def _bdmc_section(bdmc: pd.DataFrame) -> list[Section]:
    if bdmc.empty:
        return []
    title = "BDMC sandwich bounds"
    return [Section(title, SECTION_TEXT[title], [display(bdmc, {c: c for c in bdmc.columns})])]


def _gaps_section(gaps: pd.DataFrame) -> list[Section]:
    if gaps.empty:
        return []
    columns = {"model": "model", "points": "points"}
    for title in ("total", "approximation", "amortization"):
        columns.update({f"{title}_gap": f"{title} gap (nats)", f"{title}_gap_se": f"{title} ± SE (nats)"})
    return [Section("Inference gaps", SECTION_TEXT["Inference gaps"], [display(gaps, columns)])]


def _gradient_section(grad: pd.DataFrame, figures_dir: str) -> list[Section]:
    if grad.empty:
        return []
    tables = [
        display(grad, GRAD_SIGNAL, "Signal and noise of the gradient estimates"),
        display(grad, GRAD_BIAS, "Bias against the comparison's one reference"),
        display(grad, GRAD_COST, "Cost"),
        _fit_table(grad),
    ]
    title = "Gradient estimators"
    figures = _figures(gradient_figures(grad, figures_dir))
    return [Section(title, SECTION_TEXT[title], [t for t in tables if t is not None], figures)]


def _training_section(
    curves: pd.DataFrame, budgets: pd.DataFrame, versus: pd.DataFrame, figures_dir: str
) -> list[Section]:
    if curves.empty:
        return []
    bands = {m: curve_bands(curves, m) for m in ("heldout_log_px", "excess_nll")}
    tables = [
        display(budgets, TRAINING_BUDGETS, "Held-out log p(x) at equal budgets: steps, seconds, model evaluations"),
        display(versus, TRAINING_VERSUS, "Each method against the study's reference method, final step"),
    ]
    title = "Training studies"
    figures = _figures(training_figures(bands, figures_dir))
    return [Section(title, SECTION_TEXT[title], [t for t in tables if t is not None], figures)]


def _status_section(statuses: pd.DataFrame) -> list[Section]:
    if statuses.empty:
        return []
    other = statuses[statuses["status"] != "done"]
    cols = {c: c for c in ("model", "estimator", "objective", "k", "device", "status", "reason") if c in other}
    table = display(other, cols, "Cells without results, and why")
    return [] if table is None else [Section("Skipped, failed and missing cells", "", [table])]


def _fit_table(grad: pd.DataFrame) -> Table | None:
    """The fit of each study's control variate (NVIL, REBAR, RELAX): steps, time, the quantity minimized
    over the first and last steps, and the fitted scalars."""
    if "fit" not in grad:
        return None
    rows = []
    for _, study in grad[grad["fit"].notna() & (grad["group"] == "phi")].iterrows():
        fit = json.loads(study["fit"])
        fit["minimized"] = fit.pop("objective", "")
        rows.append({c: study[c] for c in ("model", "estimator", "objective", "k")} | fit)
    frame = pd.DataFrame(rows)
    first = ["model", "estimator", "objective", "k", "fit_steps", "fit_lr", "fit_seconds", "minimized"]
    first += ["loss_first_steps", "loss_last_steps"]
    columns = {c: c for c in [*first, *sorted(set(frame.columns) - set(first))]}
    return display(frame, columns, "Control variates fitted before the study, then held fixed")


def _figures(figs: dict[str, tuple[str, str]]) -> list[dict]:
    return [{"title": title, "path": path, "caption": caption} for title, (path, caption) in figs.items()]


#: Sections shown before the findings: a contradicted declaration, then the winner grid.
LEAD = ("Declared properties violated", "Winner grid")


def _lead(sections: list[Section]) -> tuple[list[Section], list[Section]]:
    return [s for s in sections if s.title in LEAD], [s for s in sections if s.title not in LEAD]


def _markdown(where: str, findings: list[str], sections: list[Section], folder: str) -> str:
    lead, rest = _lead(sections)
    parts = ["# lvbench report\n", f"{markdown(where)}\n"]
    _markdown_sections(parts, lead, folder)
    parts.append("## Findings\n")
    parts += [f"- {markdown(line)}" for line in findings] or ["No findings: the run holds no finished cells."]
    parts.append("")
    _markdown_sections(parts, rest, folder)
    return "\n".join(parts) + "\n"


def _markdown_sections(parts: list[str], sections: list[Section], folder: str) -> None:
    for section in sections:
        parts.append(f"## {section.title}\n")
        if section.text:
            parts.append(f"{section.text}\n")
        for table in section.tables:
            if table.caption:
                parts.append(f"**{markdown(table.caption)}**\n")  # captions may hold labels from the spec
            parts.append(markdown_frame(table.frame).to_markdown(index=False, disable_numparse=True) + "\n")
        for fig in section.figures:
            where_ = os.path.relpath(fig["path"], folder)
            parts.append(f"![{markdown(fig['title'])}]({where_})\n\n*{markdown(fig['caption'])}*\n")
        for term, meaning in section.glossary:
            parts.append(f"- **{term}**: {meaning}")


def _html(where: str, findings: list[str], sections: list[Section]) -> str:
    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["bold"] = lambda text: jinja2.utils.markupsafe.Markup(
        re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", str(jinja2.utils.markupsafe.escape(text)))
    )
    env.filters["slug"] = lambda text: re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "section"
    template = env.from_string(resources.files("lvbench.reports").joinpath("templates/report.html.j2").read_text())
    for section in sections:
        for fig in section.figures:
            with open(fig["path"], "rb") as fh:
                fig["data"] = base64.b64encode(fh.read()).decode()
    lead, rest = _lead(sections)
    return template.render(where=where, findings=findings, lead=lead, sections=rest)
