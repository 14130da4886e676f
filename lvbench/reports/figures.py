"""Figures of the summary tables that cannot mislead: signed bias with its 95% interval, the
cost-accuracy frontier, gradient SNR beside gradient bias, exact estimators drawn as references.

Every function returns {title: (png path, caption)}; captions say what is plotted and how.
"""

from __future__ import annotations

import functools
import io
import math
import os
import zlib

import matplotlib
import matplotlib.ticker
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from lvbench.experiments.store import atomic_write  # noqa: E402

__all__ = ["gradient_figures", "khat_figure", "likelihood_figures", "training_figures"]

Figures = dict[str, tuple[str, str]]


def _legend_name(estimator: str, estimator_name: str) -> str:
    return f"{estimator} (k = chains)" if estimator_name == "ais" else estimator


#: One colour and marker per estimator, the same in every figure, report and run: the built-in labels
#: by fixed slots (likelihood estimators and gradient estimators each their own, since they never share
#: a panel; training curves use the gradient estimators' slots), any other label (a plugin's, a custom
#: table's) by a stable hash of its name.
LIKELIHOOD_SLOTS = ("iwae", "elbo", "importance", "naive_mc", "ais", "renyi", "cubo", "sumo", "jvi")
GRADIENT_SLOTS = (
    "reparam", "stl", "dreg", "iwae_reparam", "score_function", "score_function_loo", "nvil", "vimco",
    "gumbel_softmax", "enumeration", "arm", "disarm", "disarm_iwae", "rebar", "relax", "straight_through",
    "straight_through_gumbel",
)  # fmt: skip
COLOURS = tuple(sns.color_palette("tab10", 10)) + tuple(sns.color_palette("Dark2", 8))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def style_of(label: str) -> tuple[tuple[float, float, float], str]:
    """(colour, marker) of an estimator label ("ais (k = chains) · cuda" counts as "ais")."""
    name = label.split(" (")[0].split(" · ")[0]
    for slots in (LIKELIHOOD_SLOTS, GRADIENT_SLOTS):
        if name in slots:
            i = slots.index(name)
            return COLOURS[i], MARKERS[i % len(MARKERS)]
    h = zlib.crc32(name.encode())
    return COLOURS[h % len(COLOURS)], MARKERS[(h // len(COLOURS)) % len(MARKERS)]


def _styles(names: list[str]) -> dict[str, tuple]:
    return {n: style_of(n) for n in names}


def _grid(n_panels: int, ncols: int = 3, width: float = 4.2, height: float = 3.3):
    ncols = min(ncols, n_panels)
    nrows = math.ceil(n_panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n_panels])


def _save(fig, path: str, handles: dict) -> str:
    fig.legend(
        handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=9
    )
    fig.tight_layout()
    _write(fig, path)
    return path


def _plain_ticks(fig) -> None:
    """Log and symlog axes labelled with plain numbers (1, 10, 0.01): figures draw text without mathtext,
    so matplotlib's default log labels would show their TeX source."""
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    for ax in fig.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale in ("log", "symlog"):
                axis.set_major_formatter(plain)
                axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _spaced_symlog_ticks(ax, min_gap_px: float = 16.0) -> None:
    """Ticks of a symlog y-axis at 0 and at powers of ten, kept only where they are at least
    ``min_gap_px`` from their neighbours (greedily outward from zero): around zero a symlog axis packs
    ±linthresh and the first decades into a few pixels, where their labels overprinted each other."""
    low, high = ax.get_ylim()
    decades = [10.0**j for j in range(-12, 13)]
    candidates = [v for d in decades for v in (d, -d) if low <= v <= high and d >= ax.yaxis.get_transform().linthresh]
    if low <= 0 <= high:
        candidates.append(0.0)
    if not candidates:
        return
    to_px = ax.transData.transform
    kept: list[float] = []
    for sign in (1, -1):  # outward from zero (or from the smallest magnitude) on each side
        side = sorted((v for v in candidates if (v > 0 if sign > 0 else v < 0)), key=abs)
        last = 0.0 if 0.0 in candidates else None
        for v in side:
            if last is None or abs(to_px((0, v))[1] - to_px((0, last))[1]) >= min_gap_px:
                kept.append(v)
                last = v
    kept += [0.0] if 0.0 in candidates else []
    ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(sorted(kept)))


def _write(fig, path: str) -> None:
    """Save a PNG atomically (a full disk leaves no cut figure) and close the figure. The PNG is
    quantized to a 256-colour palette (a plot has few colours; the report embeds every figure, and
    true-colour PNGs made 91% of a 2 MB page): about a quarter of the bytes, no visible change."""
    _plain_ticks(fig)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)

    atomic_write(path, lambda tmp: palette.save(tmp, format="PNG", optimize=True))


def _plain_text(draw):
    """Draw with every string as text: a label like ``$\\frac$`` or ``$x$`` is shown, never parsed as a
    formula (which fails or changes it)."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return draw(*args, **kwargs)

    return wrapper


@_plain_text
def likelihood_figures(summary: pd.DataFrame, folder: str) -> Figures:
    """Signed bias with 95% band vs k; RMSE vs seconds per estimate; std vs k; throughput vs k."""
    os.makedirs(folder, exist_ok=True)
    data = summary.assign(
        label=[_legend_name(e, n) for e, n in zip(summary["estimator"], summary["estimator_name"])],
        seconds_per_estimate=summary["seconds_per_estimate_batch"] / summary["points"],
    )
    if data["device"].nunique() > 1:
        data["label"] = data["label"] + " · " + data["device"]
    styles = _styles(list(data["label"].unique()))
    models = sorted(data["model"].unique())
    figs: Figures = {}

    def panels(path, draw, ylabel, xlabel, xlog=True, ylog=True):
        fig, axes = _grid(len(models))
        handles = {}
        for ax, model in zip(axes, models, strict=True):
            for label, rows in data[data["model"] == model].groupby("label"):
                color, marker = styles[label]
                rows = rows.sort_values("k")
                handles[label] = draw(ax, rows, color, marker)
            ax.set_title(model)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            if xlog:
                ax.set_xscale("log")
            if ylog is True:
                ax.set_yscale("log")
            elif ylog == "symlog":
                scale = np.nanmin(np.abs(data.loc[data["model"] == model, "bias_se"]).replace(0, np.nan))
                ax.set_yscale("symlog", linthresh=float(scale) if np.isfinite(scale) and scale > 0 else 1e-3)
                ax.axhline(0.0, color="black", lw=0.8)
                _spaced_symlog_ticks(ax)
            ax.grid(True, which="major", alpha=0.3)
        return _save(fig, os.path.join(folder, path), handles)

    def bias(ax, rows, color, marker):
        ax.fill_between(rows["k"], rows["bias_low"], rows["bias_high"], color=color, alpha=0.2, lw=0)
        return ax.plot(rows["k"], rows["bias"], marker=marker, color=color, ms=4)[0]

    figs["Bias vs k"] = (
        panels("likelihood_bias.png", bias, "bias of log p̂(x) (nats)", "k (samples per point)", ylog="symlog"),
        "Signed bias of the log p(x) estimate, averaged over points, with its 95% interval as a band (from "
        "bias_se, which includes the reference's own uncertainty). Symmetric-log y axis: linear within one "
        "standard error of zero, logarithmic beyond. Lower bounds sit below zero.",
    )

    def frontier(ax, rows, color, marker):
        ax.plot(rows["seconds_per_estimate"], rows["rmse"], color=color, alpha=0.6)
        return ax.scatter(rows["seconds_per_estimate"], rows["rmse"], color=color, marker=marker, s=18)

    figs["Cost-accuracy frontier"] = (
        panels("likelihood_rmse_vs_time.png", frontier, "RMSE (nats)", "seconds per estimate (s)"),
        "RMSE of log p̂(x) against the time one estimate takes (a cell's batch time divided by its points); each "
        "marker is one k, joined in increasing k. Down and to the left is better: at equal time, the lower curve "
        "is the more accurate estimator.",
    )

    def std(ax, rows, color, marker):
        return ax.plot(rows["k"], rows["std"], marker=marker, color=color, ms=4)[0]

    if (data["std"] > 0).any():  # with one repeat there is no spread to draw
        figs["Standard deviation vs k"] = (
            panels("likelihood_std.png", std, "std of log p̂(x) (nats)", "k (samples per point)"),
            "Standard deviation across repeats, averaged over points.",
        )

    def throughput(ax, rows, color, marker):
        return ax.plot(rows["k"], rows["samples_per_second"], marker=marker, color=color, ms=4)[0]

    figs["Throughput vs k"] = (
        panels("likelihood_throughput.png", throughput, "samples per second (1/s)", "k (samples per point)"),
        "Latent samples (or AIS chains) processed per second: points × k / seconds per batch.",
    )
    return figs


@_plain_text
def gradient_figures(summary: pd.DataFrame, folder: str) -> Figures:
    """Per parameter group: norm SNR vs k beside ‖bias‖ vs k (with ±2 SE), one row per (model, objective)."""
    os.makedirs(folder, exist_ok=True)
    data = summary[summary["group"].isin(["theta", "phi"])].copy()
    if data.empty:
        return {}
    data["label"] = data["estimator"]
    styles = _styles(list(data["label"].unique()))
    figs: Figures = {}
    for group, title in (("theta", "θ (generative)"), ("phi", "φ (inference)")):
        rows_g = data[data["group"] == group]
        combos = sorted({(m, o) for m, o in zip(rows_g["model"], rows_g["objective"])})
        if not combos:
            continue
        fig, axes = plt.subplots(len(combos), 2, figsize=(9.5, 3.2 * len(combos)), squeeze=False)
        handles = {}
        for (model, objective), (ax_snr, ax_bias) in zip(combos, axes, strict=True):
            rows = rows_g[(rows_g["model"] == model) & (rows_g["objective"] == objective)]
            exact = sorted(rows.loc[~np.isfinite(rows["snr_norm"].astype(float)), "estimator"].unique())
            for label, est in rows.groupby("label"):
                color, marker = styles[label]
                est = est.sort_values("k")
                finite = est[np.isfinite(est["snr_norm"].astype(float))]
                if len(finite):
                    handles[label] = ax_snr.plot(finite["k"], finite["snr_norm"], marker=marker, color=color, ms=4)[0]
                biased = est[est["bias_norm"].astype(float) > 0] if "bias_norm" in est else est.iloc[:0]
                if len(biased):  # log axis: the lower bar stops at a tenth of the value
                    two_se = 2 * biased["bias_norm_se"].astype(float)
                    lower = np.minimum(two_se, 0.9 * biased["bias_norm"].astype(float))
                    h = ax_bias.errorbar(
                        biased["k"], biased["bias_norm"], yerr=[lower, two_se], marker=marker, color=color, ms=4
                    )
                    handles.setdefault(label, h.lines[0])
            if exact:
                note = f"{', '.join(exact)}: exact (SNR = ∞, bias 0)"
                ax_snr.text(0.02, 0.95, note, transform=ax_snr.transAxes, va="top", fontsize=8)
            for ax in (ax_snr, ax_bias):
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_xlabel("k (samples per point)")
                ax.grid(True, alpha=0.3)
            ax_snr.set_ylabel("norm SNR ‖E g‖ / √tr Var g")
            ax_bias.set_ylabel("‖bias‖ (gradient units)")
            ax_snr.set_title(f"{model}, {objective.upper()}: signal-to-noise")
            ax_bias.set_title(f"{model}, {objective.upper()}: bias ± 2 SE")
        path = _save(fig, os.path.join(folder, f"gradient_{group}.png"), handles)
        figs[f"Gradient SNR and bias, {title}"] = (
            path,
            f"Left: the norm SNR ‖E g‖ / √tr Var g of the {title} gradient (not the mean of per-coordinate "
            "SNRs, which near-deterministic coordinates blow up). Right: the norm of the bias against the "
            "comparison's one reference (exact where possible), with ±2 standard errors (log axis: a lower bar "
            "reaching a tenth of the value means the bias is not distinguishable from zero); an estimator high on "
            "the left and high on the right is precise about the wrong direction. Exact enumeration has no "
            "noise and no bias and is named in the left panel instead of plotted.",
        )
    return figs


@_plain_text
def khat_figure(rows: pd.DataFrame, folder: str) -> Figures:
    """Per-point Pareto k-hat (in the style of ArviZ's plot_khat), at each (model, estimator)'s largest
    diagnosed k, with the 0.5 / 0.7 / 1 thresholds."""
    data = rows.dropna(subset=["khat"])
    data = data[np.isfinite(data["khat"])]
    if data.empty:
        return {}
    data = data[data["k"] == data.groupby(["model", "estimator"])["k"].transform("max")]
    points = data.groupby(["model", "estimator", "k", "point"], as_index=False)["khat"].first()
    panels = sorted({(m, e, k) for m, e, k in zip(points["model"], points["estimator"], points["k"])})
    fig, axes = _grid(len(panels), ncols=4, width=3.4, height=2.6)
    for ax, (model, est, k) in zip(axes, panels, strict=True):
        p = points[(points["model"] == model) & (points["estimator"] == est) & (points["k"] == k)]
        colors = np.select([p["khat"] <= 0.5, p["khat"] <= 0.7, p["khat"] <= 1.0], ["C2", "C1", "C3"], "darkred")
        ax.scatter(p["point"], p["khat"], c=list(colors), s=12, marker="+")
        for level, style in ((0.5, ":"), (0.7, "--"), (1.0, "-")):
            ax.axhline(level, color="grey", lw=0.8, ls=style)
        ax.set_title(f"{model} · {est} · k = {k}", fontsize=9)
        ax.set_xlabel("data point")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel("Pareto k-hat")
    path = os.path.join(folder, "khat_points.png")
    fig.tight_layout()
    _write(fig, path)
    return {
        "Pareto k-hat per data point": (
            path,
            "Pareto k-hat of each point's importance weights at the largest diagnosed k (one panel per model and "
            "estimator): ≤ 0.5 good (green), ≤ 0.7 usable (orange), ≤ 1 bad (red), > 1 the mean itself does not "
            "exist. Lines at 0.5, 0.7 and 1.",
        )
    }


@_plain_text
def training_figures(bands: dict[str, pd.DataFrame], folder: str) -> Figures:
    """Learning curves per study: held-out log p(x) against steps and against training seconds (median
    over seeds, min–max band), and the excess over the PPCA optimum where measured. ``bands`` maps a
    metric to ``reports.training.curve_bands`` of it."""
    heldout = bands.get("heldout_log_px", pd.DataFrame())
    if heldout.empty:
        return {}
    os.makedirs(folder, exist_ok=True)
    excess = bands.get("excess_nll", pd.DataFrame())
    studies = sorted(heldout["study"].unique())
    styles = _styles(sorted(heldout["estimator"].unique()))
    ncols = 3 if not excess.empty else 2
    fig, axes = plt.subplots(len(studies), ncols, figsize=(4.4 * ncols, 3.3 * len(studies)), squeeze=False)
    handles = {}
    for study, row in zip(studies, axes, strict=True):
        panels = [(heldout, "step", row[0]), (heldout, "seconds", row[1])]
        has_excess = ncols == 3 and (excess["study"] == study).any()
        if has_excess:
            panels.append((excess, "step", row[2]))
        elif ncols == 3:
            row[2].set_visible(False)
        for data, axis, ax in panels:
            rows = data[data["study"] == study]
            for label, curve in rows.groupby("estimator"):
                curve = curve.sort_values("step")
                color, marker = styles[label]
                x = curve["step"] + 1 if axis == "step" else curve["seconds"]
                keep = (x > 0) & (curve["step"] > 0 if axis == "seconds" else True)
                ax.fill_between(x[keep], curve["low"][keep], curve["high"][keep], color=color, alpha=0.18, lw=0)
                handles[label] = ax.plot(x[keep], curve["median"][keep], color=color, marker=marker, ms=3)[0]
            ax.set_xscale("log")
            ax.grid(True, alpha=0.3)
            ax.set_xlabel("training step + 1" if axis == "step" else "training seconds (s)")
        row[0].set_ylabel("held-out log p(x) (nats)")
        row[0].set_title(f"{study}: held-out log p(x) vs steps")
        row[1].set_title(f"{study}: vs seconds")
        if has_excess:
            row[2].set_title(f"{study}: excess over PPCA optimum")
            row[2].set_ylabel("excess NLL (nats per point)")
            if (excess.loc[excess["study"] == study, "median"] > 0).all():
                row[2].set_yscale("log")
    path = _save(fig, os.path.join(folder, "training_curves.png"), handles)
    return {
        "Learning curves": (
            path,
            "Held-out log p(x) of the model as it trains (exact where the model has it, else the named estimator), "
            "against training steps and against training seconds (evaluation excluded): the median over seeds as a "
            "line, the range over seeds as a band. Every method of a study starts from the same initializations and "
            "sees the same minibatches. Right (PPCA): how far the training log-likelihood is below the closed-form "
            "maximum-likelihood solution, in nats per point.",
        )
    }
