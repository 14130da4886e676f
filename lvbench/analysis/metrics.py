"""Statistics of estimates: bias with its standard error, variance, RMSE, intervals, and importance-weight
diagnostics (Pareto k-hat, effective sample size).

Pareto k-hat (Vehtari et al., "Pareto smoothed importance sampling"): fit a generalized Pareto
distribution to the M = min(S/5, 3√S) largest importance weights; its shape k says how many moments
the weights have (finite variance iff k < 1/2). Thresholds: k <= 0.5 good; k <= min(1 - 1/log10 S, 0.7)
usable; larger, the estimate cannot be trusted; k > 1, the mean itself does not exist.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from scipy import stats

from lvbench.core.errors import LvbenchInputError

__all__ = [
    "band_counts",
    "effective_sample_size",
    "khat_band",
    "khat_threshold",
    "pareto_khat",
    "summarize_estimates",
]


def _gpd_fit_shape(exceedances: np.ndarray, prior_weight: float = 10.0) -> float:
    """Shape k of a generalized Pareto fitted to sorted positive exceedances (Zhang & Stephens 2009
    empirical-Bayes estimate), shrunk toward 0.5 with the weak prior of the PSIS paper."""
    x = np.sort(exceedances)
    n = x.size
    m = 30 + int(math.sqrt(n))
    quartile = x[max(int(n / 4 + 0.5) - 1, 0)]
    theta = 1.0 / x[-1] + (1.0 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))) / (3.0 * quartile)
    k = np.log1p(-theta[:, None] * x[None, :]).mean(axis=1)
    profile = n * (np.log(-theta / k) - k - 1.0)
    with np.errstate(over="ignore"):  # exp overflow -> inf -> weight 0, which is right
        weights = 1.0 / np.exp(profile[None, :] - profile[:, None]).sum(axis=1)
    theta_hat = float(np.sum(theta * weights))
    k_hat = float(np.log1p(-theta_hat * x).mean())
    return (n * k_hat + prior_weight * 0.5) / (n + prior_weight)


def pareto_khat(log_weights: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Pareto k-hat of the importance weights over the last dimension; shape = leading dims.

    Where all tail weights are equal (e.g. the exact posterior as proposal) there is no tail: -inf.
    Tensor in, float64 tensor out (on the input's device); array in, array out.
    """
    if isinstance(log_weights, torch.Tensor):
        khat = _pareto_khat(log_weights.detach().double().cpu().numpy())
        return torch.from_numpy(khat).to(log_weights.device)
    return _pareto_khat(np.asarray(log_weights, float))


def _pareto_khat(lw: np.ndarray) -> np.ndarray:
    if lw.shape[-1] < 5:
        raise LvbenchInputError(f"pareto_khat needs at least 5 weights per estimate, got {lw.shape[-1]}")
    flat = lw.reshape(-1, lw.shape[-1])
    out = np.empty(flat.shape[0])
    s = flat.shape[1]
    tail = int(min(0.2 * s, 3 * math.sqrt(s)))
    tail = max(tail, 5)
    for i, row in enumerate(flat):
        row = row[np.isfinite(row)]
        if row.size <= tail:
            out[i] = math.nan
            continue
        srt = np.sort(row)
        top = srt[-1]
        exceed = np.exp(srt[-tail:] - top) - np.exp(srt[-tail - 1] - top)
        if exceed.max() <= 1e-10:  # weights equal up to rounding: no tail at all
            out[i] = -math.inf
            continue
        exceed = exceed[exceed > 0]
        out[i] = _gpd_fit_shape(exceed) if exceed.size >= 5 else -math.inf
    return out.reshape(lw.shape[:-1])


def khat_threshold(num_samples: int) -> float:
    """The sample-size-dependent reliability threshold min(1 - 1/log10 S, 0.7)."""
    return min(1.0 - 1.0 / math.log10(num_samples), 0.7) if num_samples > 10 else 0.0


def khat_band(khat: float | np.ndarray, num_samples: int) -> np.ndarray:
    """'good' (k <= 0.5), 'ok' (<= the S-dependent threshold), 'bad' (<= 1), 'very bad' (> 1)."""
    k = np.asarray(khat, dtype=float)
    thr = max(khat_threshold(num_samples), 0.5)
    return np.select([k <= 0.5, k <= thr, k <= 1.0], ["good", "ok", "bad"], default="very bad")


def effective_sample_size(log_weights: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Kish's ESS = (Σ w)² / Σ w², in log space, over the last dimension (float64).
    Tensor in, tensor out; array in, array out."""
    if not isinstance(log_weights, torch.Tensor):
        return effective_sample_size(torch.as_tensor(np.asarray(log_weights, float))).numpy()
    lw = log_weights.double()
    return torch.exp(2 * torch.logsumexp(lw, -1) - torch.logsumexp(2 * lw, -1))


def summarize_estimates(estimates: np.ndarray, reference: np.ndarray | float, confidence: float = 0.95) -> dict:
    """Bias (with its SE and a t-interval), variance, std and RMSE of repeated estimates.

    ``estimates`` [R, N] (R repeats of N points) and ``reference`` [N]; statistics are per point, then
    averaged over points: bias = mean over points of (mean_r est - ref); its SE combines the per-point
    standard errors; variance is the mean per-point variance across repeats. With one repeat the
    variance, std and SE are undefined (NaN, shown "—"), never 0.
    """
    est = np.asarray(estimates, dtype=float)
    if est.ndim == 1:
        est = est[:, None]
    r, n = est.shape
    ref = np.broadcast_to(np.asarray(reference, dtype=float), (n,))
    err = est - ref
    point_bias = err.mean(0)
    point_var = est.var(0, ddof=1) if r > 1 else np.full(n, math.nan)  # one repeat: no spread to show
    bias = float(point_bias.mean())
    bias_se = float(math.sqrt(point_var.sum() / r) / n) if r > 1 else math.nan
    half = stats.t.ppf(0.5 + confidence / 2, df=max(r * n - 1, 1)) * bias_se if r > 1 else math.nan
    return {
        "bias": bias,
        "bias_se": bias_se,
        "bias_low": bias - half,
        "bias_high": bias + half,
        "variance": float(point_var.mean()),
        "std": float(np.sqrt(point_var).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "mse": float((err**2).mean()),
        # per point the R squared errors are independent: SE of their overall mean from per-point variances
        "mse_se": float(math.sqrt((err**2).var(0, ddof=1).sum() / r) / n) if r > 1 else math.nan,
        "mean_abs_error": float(np.abs(err).mean()),
        "repeats": r,
        "points": n,
        # repeats equal to the last bit at every point: an estimator that reseeds itself, not a spread of 0
        # (the runner clears it where the generator moved on between repeats: a proposal on one atom)
        "identical_repeats": bool(r > 1 and np.all(est == est[0])),
    }


def band_counts(khat: np.ndarray, num_samples: int) -> pd.Series:
    """How many estimates fall in each k-hat band."""
    bands = pd.Series(khat_band(khat, num_samples)).value_counts()
    return bands.reindex(["good", "ok", "bad", "very bad"], fill_value=0)
