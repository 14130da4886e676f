"""Statistical quality tracked like speed (asv track_*): at fixed seeds, the bias and standard
deviation of every likelihood estimator against the exact log p(x), and the SNR and variance of
every gradient estimator's θ and φ gradients. A change that makes an estimator wrong or noisier
shows on the same dashboard as one that makes it slower."""

import math

import torch

import lvbench
from lvbench.gradient_analysis import analyze_gradients

from .common import ESTIMATOR_OPTIONS, gradient_names, likelihood_names, skip_if_incompatible, toy

REPEATS = 20


class TrackLikelihoodQuality:
    params = (likelihood_names(), [1, 10, 100, 1000])
    param_names = ["estimator", "k"]
    unit = "nats"
    timeout = 600

    def setup(self, estimator, k):
        model, x, truth = toy("continuous")
        skip_if_incompatible(estimator, model, num_samples=k)
        est = lvbench.get_estimator(estimator)
        options = ESTIMATOR_OPTIONS.get(estimator, {})
        torch.manual_seed(0)
        runs = torch.stack([est(model, x, num_samples=k, **options).double() for _ in range(REPEATS)])
        self.errors = runs - truth.double()

    def track_bias(self, estimator, k):
        return self.errors.mean().item()

    def track_std(self, estimator, k):
        return self.errors.std(0).mean().item()

    def track_rmse(self, estimator, k):
        return math.sqrt(self.errors.pow(2).mean().item())


class TrackGradientQuality:
    params = (gradient_names(), [2, 10, 100])
    param_names = ["estimator", "k"]
    unit = "ratio"
    timeout = 600

    def setup(self, estimator, k):
        model, x, _ = toy("continuous")
        if lvbench.incompatibility(estimator, model) is not None:
            model, x, _ = toy("discrete")
        objective = lvbench.get_estimator(estimator).objectives[0]
        skip_if_incompatible(estimator, model, num_samples=k, objective=objective)
        table = analyze_gradients(model, x, estimator, k, objective, repeats=100, reference="auto", reference_draws=500)
        self.groups = table.set_index("group")

    def track_snr_theta(self, estimator, k):
        return self.groups.loc["theta", "snr"]

    def track_snr_phi(self, estimator, k):
        return self.groups.loc["phi", "snr"]

    def track_variance_phi(self, estimator, k):
        return self.groups.loc["phi", "trace_variance"]

    def track_bias_over_se_phi(self, estimator, k):
        """|bias| / its standard error: stays O(1) for an unbiased estimator."""
        return self.groups.loc["phi", "bias_norm"] / self.groups.loc["phi", "bias_norm_se"]
