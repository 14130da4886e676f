"""Summary tables from raw result rows: one row per (model, estimator, k, device)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lvbench.analysis.metrics import khat_band, summarize_estimates

__all__ = ["bdmc_table", "gaps_table", "gradient_summary", "likelihood_summary"]

CELL_KEYS = ["model", "estimator", "estimator_name", "k", "device", "dtype"]


def likelihood_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Bias against the reference (with its standard error and 95% interval), variance, std, RMSE,
    estimates and samples per second, model evaluations per estimate, peak memory, and k-hat bands, per
    cell."""
    if rows.empty:
        return pd.DataFrame()
    out = []
    for key, cell in rows.groupby(CELL_KEYS, sort=True):
        est = cell.pivot(index="repeat", columns="point", values="estimate").to_numpy()
        ref = cell.groupby("point")["reference"].first().to_numpy()
        ref_se = cell.groupby("point")["reference_se"].first().to_numpy()
        stats = summarize_estimates(est, ref)
        if "fresh_draws" in cell and bool(cell["fresh_draws"].iloc[0]):  # equal values from fresh draws:
            stats["identical_repeats"] = False  # a degenerate proposal (one atom), not a reseeding estimator
        n, k = est.shape[1], int(key[3])
        reference_se = float(np.sqrt(np.nansum(ref_se**2)) / n)
        stats["bias_se"] = float(math.hypot(stats["bias_se"], reference_se)) if est.shape[0] > 1 else math.nan
        seconds = cell.groupby("repeat")["seconds"].first().mean()
        khat = cell.groupby("point")["khat"].first().to_numpy()
        bands = pd.Series(khat_band(khat[~np.isnan(khat)], k)).value_counts()
        has_khat = not np.isnan(khat).all()
        out.append(
            {
                **dict(zip(CELL_KEYS, key, strict=True)),
                **stats,
                "reference_se": reference_se,
                "seconds_per_estimate_batch": seconds,
                "estimates_per_second": n / seconds,
                "samples_per_second": n * k / seconds,
                # counted model evaluations per point and estimate (NaN for results from before counting)
                "evaluations_per_estimate": (
                    float(cell.groupby("repeat")["evaluations"].first().mean()) if "evaluations" in cell else math.nan
                ),
                "peak_memory_mb": float(cell["peak_memory_mb"].iloc[0]),
                "khat_median": float(np.nanmedian(khat)) if has_khat else math.nan,
                "khat_good": int(bands.get("good", 0)) if has_khat else pd.NA,
                "khat_ok": int(bands.get("ok", 0)) if has_khat else pd.NA,
                "khat_bad": int(bands.get("bad", 0) + bands.get("very bad", 0)) if has_khat else pd.NA,
                "ess_median": float(np.nanmedian(cell["ess"])) if has_khat else math.nan,
                "reference_name": cell["reference_name"].iloc[0],
            }
        )
    return pd.DataFrame(out)


def gradient_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """SNR, variance and bias of θ and φ gradients per gradient-study cell."""
    if rows.empty:
        return pd.DataFrame()
    cols = [
        "model",
        "estimator",
        "estimator_name",
        "objective",
        "k",
        "device",
        "group",
        "snr_norm",
        "snr_norm_se",
        "snr_median",
        "snr",
        "trace_variance",
        "mean_norm",
        "bias_norm",
        "bias_norm_se",
        "cosine",
        "seconds_per_gradient",
        "method",
        "reference",
        "is_reference",
        "fit",
    ]
    groups = rows[rows["group"].isin(["theta", "phi"])]
    return groups[[c for c in cols if c in groups]].sort_values(["model", "estimator", "objective", "k", "group"])


def gaps_table(extras: dict[str, dict]) -> pd.DataFrame:
    """Inference gaps recorded when the models were prepared ({label: extras}, as
    ``experiments.prepare.prepared_extras`` reads them): means over points, with standard errors."""
    rows = []
    for label, extra in sorted(extras.items()):
        gaps = extra.get("inference_gaps")
        if not gaps:
            continue
        row = {"model": label, "points": len(gaps["log_p"])}
        for column in ("total_gap", "approximation_gap", "amortization_gap"):
            values = gaps[column].numpy()
            row[column] = values.mean()
            row[f"{column}_se"] = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def bdmc_table(extras: dict[str, dict]) -> pd.DataFrame:
    """BDMC sandwiches recorded when the models were prepared ({label: extras}): mean lower and upper
    bounds and their gap."""
    rows = []
    for label, extra in sorted(extras.items()):
        bd = extra.get("bdmc")
        if not bd:
            continue
        lower, upper = bd["lower"].numpy(), bd["upper"].numpy()
        row = {
            "model": label,
            "points": len(lower),
            "steps": bd["options"].get("steps"),
            "chains": bd["options"].get("chains"),
            "lower_mean": lower.mean(),
            "upper_mean": upper.mean(),
            "gap_mean": (upper - lower).mean(),
            "gap_max": (upper - lower).max(),
        }
        if "exact" in bd:
            exact = bd["exact"].numpy()
            row["exact_mean"] = exact.mean()
            row["bracketed"] = int(((lower <= exact) & (exact <= upper)).sum())
        rows.append(row)
    return pd.DataFrame(rows)
