"""Statistical quality tracked like speed (asv track_*): at fixed seeds, the bias, standard deviation
and RMSE of every likelihood estimator against the exact log p(x), and the norm SNR, variance and
bias/SE of every gradient estimator's θ and φ gradients. A change that makes an estimator wrong or
noisier shows on the same dashboard as one that makes it slower. Each class computes its whole grid
once (``setup_cache``); its track_* methods read from it."""

import math

import torch

import lvbench
from lvbench.analysis.gradient_analysis import analyze_gradients

from .common import (
    ESTIMATOR_OPTIONS,
    GRADIENT_K,
    K_VALUES,
    QUALITY_DRAWS,
    gradient_names,
    likelihood_names,
    models,
    objective,
    toy_for,
)

REPEATS = 20


def _skip_missing(cache, key):
    if key not in cache:
        raise NotImplementedError("incompatible pair")  # asv: skipped
    return cache[key]


class TrackLikelihoodQuality:
    params = (likelihood_names(), K_VALUES)
    param_names = ["estimator", "k"]
    unit = "nats"
    timeout = 900

    def setup_cache(self):
        model, x, truth = models()["continuous"]
        errors = {}
        for estimator in likelihood_names():
            est, options = lvbench.get_estimator(estimator), ESTIMATOR_OPTIONS.get(estimator, {})
            for k in K_VALUES:
                if lvbench.incompatibility(estimator, model, num_samples=k) is None:
                    torch.manual_seed(0)
                    runs = torch.stack([est(model, x, num_samples=k, **options).double() for _ in range(REPEATS)])
                    errors[(estimator, k)] = runs - truth.double()
        return errors

    def setup(self, errors, estimator, k):
        self.errors = _skip_missing(errors, (estimator, k))

    def track_bias(self, errors, estimator, k):
        return self.errors.mean().item()

    def track_std(self, errors, estimator, k):
        return self.errors.std(0).mean().item()

    def track_rmse(self, errors, estimator, k):
        return math.sqrt(self.errors.pow(2).mean().item())


class TrackGradientQuality:
    params = (gradient_names(), GRADIENT_K)
    param_names = ["estimator", "k"]
    unit = "ratio"
    timeout = 1800

    def setup_cache(self):
        draws, reference_draws = QUALITY_DRAWS
        tables, cache = {}, models()
        for estimator in gradient_names():
            model, x, _ = toy_for(estimator, cache)
            for k in GRADIENT_K:
                if lvbench.incompatibility(estimator, model, num_samples=k, objective=objective(estimator)) is None:
                    table = analyze_gradients(
                        model, x, estimator, k, objective(estimator), repeats=draws, reference_draws=reference_draws
                    )
                    tables[(estimator, k)] = table.set_index("group")
        return tables

    def setup(self, tables, estimator, k):
        self.groups = _skip_missing(tables, (estimator, k))

    def track_snr_theta(self, tables, estimator, k):
        """Norm SNR ‖E g‖ / √tr Var g of the θ gradient."""
        return self.groups.loc["theta", "snr_norm"]

    def track_snr_phi(self, tables, estimator, k):
        return self.groups.loc["phi", "snr_norm"]

    def track_variance_phi(self, tables, estimator, k):
        return self.groups.loc["phi", "trace_variance"]

    def track_bias_over_se_phi(self, tables, estimator, k):
        """|bias| / its standard error: stays O(1) for an unbiased estimator."""
        return self.groups.loc["phi", "bias_norm"] / self.groups.loc["phi", "bias_norm_se"]
