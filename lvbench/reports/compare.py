"""Compare two result folders cell by cell: did bias, spread, error or speed change, significantly?

Cells are matched by what they are (model label and registered type, estimator label, k, device, dtype;
for gradient studies also objective and parameter group), so two commits, two estimator versions or two
seeds of one spec line up, while a label that names different model types in A and B is reported as a
collision, not compared. A cell done in A but failed, missing or absent in B is listed and counts as a
regression: a gate that tested only matched cells would pass a run that lost half its results.
Likelihood metrics are compared through their per-point values (|bias|, std and RMSE of each data
point's estimates) with rank tests that heavy-tailed errors cannot fool: Wilcoxon's signed-rank
test on the point-wise differences where both runs used the same prepared model and points (same
content address), else the Mann-Whitney test (different data points: points are the sampling unit).
Throughput is compared through the per-repeat timings (Mann-Whitney). Gradient norm SNR is compared
with a z-test from its bootstrap standard errors, only where both runs used the same model and points
(an SNR is a property of the batch of points, so across different data it is reported, not tested).
Training studies are compared through each method's final held-out log p(x) per replicate (seeds are
the sampling unit): a paired t-test where both folders trained from the same prepared model and data,
else reported untested; a training cell is matched by study and replicate too, so one lost seed counts.
The quality p-values are corrected together (Holm's step-down method, family-wise error), the
timings' apart, so that two runs of one spec that differ only in their seeds show no significant
change. A *regression* is a significant change for the worse: larger |bias|, std or RMSE, lower SNR or
held-out log p(x), and, only where asked (``gate_throughput``, ``--gate-throughput``), lower throughput
by more than ``min_slowdown`` (timings drift between runs on a shared machine for reasons no within-run
error bar sees). Each row carries B/A's ratio and asv compare's mark: "+" significantly worse, "-"
significantly better.
"""

from __future__ import annotations

import html
import math
import os

import numpy as np
import pandas as pd
from scipy import stats

from lvbench.analysis.declared import declared_violations
from lvbench.experiments.cells import training_replicate
from lvbench.experiments.store import atomic_write_text
from lvbench.reports.escape import markdown, markdown_frame
from lvbench.reports.results import load_results
from lvbench.reports.training import HELDOUT

__all__ = ["UNTESTED", "compare", "holm", "point_metrics", "write_comparison"]

LIK_KEYS = ["model", "model_type", "estimator", "k", "device", "dtype"]
GRAD_KEYS = ["model", "model_type", "estimator", "objective", "k", "device", "group"]
TRAIN_KEYS = ["study", "model", "model_type", "estimator", "objective", "k", "device", "dtype"]
#: What a cell is, for matching cells across folders and listing those without a partner or a result
#: (a training study's cells also by study and replicate: one lost seed is a lost cell).
CELL_KEYS = ["kind", "model", "model_type", "estimator", "objective", "k", "device", "dtype", "study", "replicate"]
#: The ``metric`` of rows that are findings about cells, not statistical tests.
UNTESTED = ("cell", "label collision", "declared property")
#: metric -> +1 where larger is worse, -1 where smaller is worse
WORSE = {"abs_bias": 1, "std": 1, "rmse": 1, "samples_per_second": -1, "snr_norm": -1, HELDOUT: -1}


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (family-wise error control over all tests)."""
    p = np.asarray(p, dtype=float)
    adjusted = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    order = np.argsort(p[ok])
    m = ok.sum()
    ranked = np.maximum.accumulate((m - np.arange(m)) * p[ok][order])
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    adjusted[ok] = out
    return adjusted


def point_metrics(rows: pd.DataFrame) -> dict[tuple, dict]:
    """Per likelihood cell: per-point |bias|, std and RMSE, and the per-repeat throughput."""
    out = {}
    for key, cell in rows.groupby(LIK_KEYS, sort=True):
        est = cell.pivot(index="repeat", columns="point", values="estimate").to_numpy()
        ref = cell.groupby("point")["reference"].first().to_numpy()
        err = est - ref
        seconds = cell.groupby("repeat")["seconds"].first().to_numpy()
        out[key] = {
            "abs_bias": np.abs(err.mean(0)),
            "std": est.std(0, ddof=1) if est.shape[0] > 1 else np.zeros(est.shape[1]),
            "rmse": np.sqrt((err**2).mean(0)),
            "samples_per_second": est.shape[1] * int(cell["k"].iloc[0]) / seconds,
        }
    return out


def _rank_p(a: np.ndarray, b: np.ndarray, paired: bool) -> float:
    if paired and a.shape == b.shape:
        diff = b - a
        if np.all(diff == 0):
            return 1.0
        return float(stats.wilcoxon(a, b, zero_method="zsplit").pvalue)
    if np.all(a == a[0]) and np.all(b == b[0]) and a[0] == b[0]:
        return 1.0
    return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def _row(kind, key, keys, metric, va, vb, p, test) -> dict:
    return {
        "kind": kind,
        **dict(zip(keys, key, strict=True)),
        "metric": metric,
        "a": va,
        "b": vb,
        "change": vb - va,
        "ratio": vb / va if va else math.nan,
        "relative_change": (vb - va) / abs(va) if va else math.nan,
        "test": test,
        "p": p,
    }


def compare(
    a_dir: str, b_dir: str, alpha: float = 0.05, min_slowdown: float = 0.1, gate_throughput: bool = False
) -> pd.DataFrame:
    """One row per (matched cell, metric): values in A and B (means over points or repeats), change,
    ratio B/A, the test used, Holm-adjusted p, whether it is significant, its mark ("+" significantly
    worse, "-" significantly better, as in asv compare) and whether it is a regression. Statistical
    quality is gated; throughput only with ``gate_throughput`` (timings of two runs on a shared machine
    differ for reasons no within-run error bar sees), then as a significant drop of more than
    ``min_slowdown``. The two families are Holm-corrected apart, so reporting timings never dilutes the
    quality tests."""
    a, b = load_results(a_dir), load_results(b_dir)
    same_model = _same_models(a, b)
    types_a, types_b = _model_types(a), _model_types(b)
    for res, types in ((a, types_a), (b, types_b)):
        for frame in (res.rows, res.gradient_summary, res.statuses, res.training):
            if not frame.empty:
                frame["model_type"] = frame["model"].map(types)
    out = []
    if not a.rows.empty and not b.rows.empty:
        pa, pb = point_metrics(a.rows), point_metrics(b.rows)
        for key in sorted(set(pa) & set(pb), key=str):
            paired = same_model(key[0])
            for metric in ("abs_bias", "std", "rmse", "samples_per_second"):
                xa, xb = pa[key][metric], pb[key][metric]
                is_time = metric == "samples_per_second"
                test = "Mann-Whitney" if is_time or not paired else "Wilcoxon signed-rank"
                p = _rank_p(xa, xb, paired and not is_time)
                out.append(_row("likelihood", key, LIK_KEYS, metric, float(xa.mean()), float(xb.mean()), p, test))
    ga, gb = a.gradient_summary, b.gradient_summary
    if not ga.empty and not gb.empty:
        merged = ga.merge(gb, on=GRAD_KEYS, suffixes=("_a", "_b"))
        for _, r in merged.iterrows():
            key = tuple(r[k] for k in GRAD_KEYS)
            va, vb = float(r["snr_norm_a"]), float(r["snr_norm_b"])
            if not same_model(r["model"]):
                out.append(_row("gradient", key, GRAD_KEYS, "snr_norm", va, vb, math.nan, "not tested: different data"))
                continue
            se = math.hypot(r["snr_norm_se_a"], r["snr_norm_se_b"])
            z = (vb - va) / se if se > 0 else math.nan
            p = 2 * stats.norm.sf(abs(z)) if np.isfinite(z) else math.nan
            out.append(_row("gradient", key, GRAD_KEYS, "snr_norm", va, vb, p, "z (bootstrap SE)"))
    out += _training_tests(a.training, b.training, same_model)
    result = pd.DataFrame(out)
    if not result.empty:
        timing = result["metric"] == "samples_per_second"
        result["p_adjusted"] = math.nan
        for family in (timing, ~timing):
            if family.any():
                result.loc[family, "p_adjusted"] = holm(result.loc[family, "p"].to_numpy())
        result["significant"] = result["p_adjusted"] < alpha
        worse = np.sign(result["change"]) == result["metric"].map(WORSE)
        result["mark"] = np.where(result["significant"], np.where(worse, "+", "-"), "")
        big_enough = ~timing | (-result["relative_change"] > min_slowdown)
        gated = ~timing | gate_throughput
        result["regression"] = result["significant"] & worse & big_enough & gated
    coverage = _coverage(a.statuses, b.statuses, types_a, types_b)
    violated = declared_violations(b.summary, b.rows)
    if not violated.empty:  # B's numbers contradict what its estimators declare: a regression in itself
        violated = violated.assign(
            kind="cell",
            metric="declared property",
            test=violated["property"] + " violated in B: " + violated["evidence"],
            regression=True,
            significant=False,
        ).drop(columns=["property", "evidence"])
    parts = [p for p in (violated, coverage, result) if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else result


def final_heldout(training: pd.DataFrame) -> dict[tuple, pd.Series]:
    """Per training method (``TRAIN_KEYS``): each replicate's held-out log p(x) at its last evaluation."""
    if training.empty:
        return {}
    rows = training[training["metric"] == HELDOUT]
    last = rows.loc[rows.groupby("cell_id")["step"].idxmax()]
    return {key: g.set_index("replicate")["value"] for key, g in last.groupby(TRAIN_KEYS, dropna=False, sort=True)}


def _training_tests(ta: pd.DataFrame, tb: pd.DataFrame, same_model) -> list[dict]:
    """Final held-out log p(x) per training method, tested over replicates (seeds: the sampling unit) by a
    paired t-test where both folders trained from the same prepared model and data (replicate r starts
    from the same initialization in both), else reported untested: held-out levels of different data or
    true models are not comparable."""
    fa, fb = final_heldout(ta), final_heldout(tb)
    out = []
    for key in sorted(set(fa) & set(fb), key=str):
        va, vb = fa[key], fb[key]
        common = va.index.intersection(vb.index)
        mean_a, mean_b = float(va.mean()), float(vb.mean())
        if not same_model(key[1]):
            out.append(
                _row("training", key, TRAIN_KEYS, HELDOUT, mean_a, mean_b, math.nan, "not tested: different data")
            )
            continue
        diff = (vb[common] - va[common]).to_numpy()
        if len(diff) < 2:
            p, test = math.nan, "not tested: fewer than 2 common replicates"
        else:
            p = 1.0 if np.all(diff == 0) else float(stats.ttest_rel(vb[common], va[common]).pvalue)
            test = f"paired t over {len(diff)} replicates"
        out.append(_row("training", key, TRAIN_KEYS, HELDOUT, mean_a, mean_b, p, test))
    return out


def _model_types(results) -> dict[str, str]:
    """label -> registered model type, from the folder's manifest (a key is ``<type>-<20 hex digits>``)."""
    from lvbench.experiments import read_manifest

    return {label: key[:-21] for label, key in read_manifest(results.out_dir)["models"].items()}


def _coverage(sa: pd.DataFrame, sb: pd.DataFrame, types_a: dict, types_b: dict) -> pd.DataFrame:
    """One row per cell that cannot be compared, each a regression: done in A but missing or failed in B
    (or absent from B's spec), and labels naming different model types in A and B (not compared). Cells
    new in B are listed, not counted."""
    collided = sorted(label for label in set(types_a) & set(types_b) if types_a[label] != types_b[label])
    rows = [
        {
            "kind": "cell",
            "model": label,
            "metric": "label collision",
            "test": f"model {label!r} is {types_a[label]} in A but {types_b[label]} in B: not compared",
            "regression": True,
        }
        for label in collided
    ]

    def by_key(statuses: pd.DataFrame) -> dict[tuple, dict]:
        """cell -> its status record; a likelihood cell's objective is None in either folder."""
        records = statuses.to_dict("records") if not statuses.empty else []
        for r in records:
            r["objective"] = r.get("objective") if isinstance(r.get("objective"), str) else None
            r["study"], r["replicate"] = _study_and_replicate(r)
        return {tuple(r[k] for k in CELL_KEYS): r for r in records}

    cells_a, cells_b = by_key(sa), by_key(sb)
    for key, ra in sorted(cells_a.items(), key=str):
        if ra["status"] != "done" or ra["model"] in collided:
            continue
        rb = cells_b.get(key)
        if rb is None:
            what = "absent from B's spec"
        elif rb["status"] in ("failed", "missing"):
            what = f"{rb['status']} in B: {rb.get('reason', '')}"
        elif rb["status"] == "skipped":
            what = f"skipped in B: {rb.get('reason', '')}"
        else:
            continue
        rows.append({**dict(zip(CELL_KEYS, key, strict=True)), "metric": "cell", "test": what, "regression": True})
    for key, rb in sorted(cells_b.items(), key=str):
        if key not in cells_a and rb["model"] not in collided:
            row = {**dict(zip(CELL_KEYS, key, strict=True)), "metric": "cell", "test": "new in B (no partner in A)"}
            rows.append({**row, "regression": False})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["significant"] = False
    return frame


def _study_and_replicate(record: dict) -> tuple[str | None, int | None]:
    """A training cell's study and replicate, from its status record or its manifest entry; (None, None)
    for other cells."""
    if record.get("kind") != "training":
        return None, None
    if isinstance(record.get("options_json"), str):
        return record.get("study"), training_replicate("training", record["options_json"])
    replicate = record.get("replicate")
    return record.get("study"), None if replicate is None or pd.isna(replicate) else int(replicate)


def _same_models(a, b):
    """label -> whether both folders prepared that model identically (same content address: same points)."""
    from lvbench.experiments import read_manifest

    ma, mb = read_manifest(a.out_dir)["models"], read_manifest(b.out_dir)["models"]
    return lambda label: label in ma and ma.get(label) == mb.get(label)


def write_comparison(result: pd.DataFrame, out_dir: str, a_dir: str, b_dir: str) -> dict[str, str]:
    """comparison.csv, comparison.md and comparison.html (significant changes first)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f"comparison.{k}") for k in ("csv", "md", "html")}
    atomic_write_text(paths["csv"], result.to_csv(index=False))
    order = [c for c in ("regression", "significant", "p_adjusted") if c in result]
    shown = result.sort_values(order, ascending=[False, False, True][: len(order)]) if not result.empty else result
    tests = result[~result["metric"].isin(UNTESTED)] if "metric" in result else result
    regressions = int(result["regression"].sum()) if not result.empty else 0
    significant = int(tests["significant"].sum()) if not tests.empty else 0
    uncovered = len(result) - len(tests)
    head = (
        f"Comparison of {b_dir} (B) against {a_dir} (A): {len(tests)} tests over matched cells, "
        f"{significant} significant after Holm's correction (family-wise 5%), {uncovered} cells without a "
        f"comparable partner or result, {regressions} regressions."
    )
    definitions = (
        "Definitions: abs_bias is the mean over points of |a point's bias| and rmse the mean over points of "
        "each point's RMSE, tested point by point; the report's bias is the signed mean error over all points "
        "(errors of opposite sign cancel there, not here) and its RMSE the root of the mean squared error. "
        "ratio is B/A; mark + is a significant change for the worse, - for the better (as in asv compare)."
    )
    first = [c for c in ("regression", "significant", "mark", "kind", "metric", "a", "b", "ratio") if c in shown]
    shown = shown[first + [c for c in shown.columns if c not in first]]
    table = shown.map(
        lambda v: (
            "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}" if isinstance(v, float) else v
        )
    )
    md = markdown_frame(table).to_markdown(index=False)
    atomic_write_text(paths["md"], f"# lvbench comparison\n\n{markdown(head)}\n\n{markdown(definitions)}\n\n{md}\n")
    atomic_write_text(
        paths["html"],
        "<!doctype html><html><head><meta charset='utf-8'><title>lvbench comparison</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:1180px;margin:auto;padding:1rem}"
        ".box{overflow:auto;max-height:40rem}td,th{text-align:left;padding:2px 8px;white-space:nowrap}"
        "th{position:sticky;top:0;background:#f3f3f3}</style></head><body><h1>lvbench comparison</h1>"
        f"<p>{html.escape(head)}</p><p>{html.escape(definitions)}</p>"
        f"<div class='box'>{table.to_html(index=False, border=0, na_rep='—', escape=True)}"
        "</div></body></html>",
    )
    return paths
