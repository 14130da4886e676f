"""Seaborn figures of the summary tables (log axes, one panel per model)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

__all__ = ["gradient_figures", "likelihood_figures"]


def _save(grid, path: str) -> str:
    grid.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(grid.figure)
    return path


def _line(data: pd.DataFrame, y: str, ylabel: str, path: str, row: str | None = None) -> str:
    grid = sns.relplot(
        data=data,
        x="k",
        y=y,
        hue="estimator",
        style="estimator",
        col="model",
        row=row,
        kind="line",
        markers=True,
        dashes=False,
        height=3.2,
        aspect=1.1,
        facet_kws={"sharey": False},
    )
    grid.set(xscale="log", yscale="log")
    grid.set_axis_labels("k (samples per point)", ylabel)
    return _save(grid, path)


def likelihood_figures(summary: pd.DataFrame, folder: str) -> dict[str, str]:
    """|bias|, std and RMSE vs k, and throughput vs k; returns {title: png path}."""
    os.makedirs(folder, exist_ok=True)
    data = summary.assign(
        abs_bias=summary["bias"].abs().clip(lower=1e-6),
        std=summary["std"].clip(lower=1e-6),
        rmse=summary["rmse"].clip(lower=1e-6),
    )
    figs = {}
    for col, label in [("abs_bias", "|bias| (nats)"), ("std", "std (nats)"), ("rmse", "RMSE (nats)")]:
        figs[f"{label.split(' ')[0]} vs k"] = _line(data, col, label, os.path.join(folder, f"likelihood_{col}.png"))
    figs["throughput vs k"] = _line(
        data, "samples_per_second", "samples per second", os.path.join(folder, "likelihood_throughput.png")
    )
    return figs


def gradient_figures(summary: pd.DataFrame, folder: str) -> dict[str, str]:
    """Gradient SNR vs k for θ and φ (rows), one column per model."""
    os.makedirs(folder, exist_ok=True)
    data = summary[pd.to_numeric(summary["snr"], errors="coerce").between(0, 1e12)]
    data = data.assign(estimator=data["estimator"] + " (" + data["objective"] + ")")
    if data.empty:
        return {}
    return {
        "gradient SNR vs k": _line(
            data, "snr", "SNR = mean |E g| / std g", os.path.join(folder, "gradient_snr.png"), row="group"
        )
    }
