"""Speed and peak memory of every likelihood estimator (plugins included) on a toy model and a VAE."""

import time

import torch

import lvbench

from .common import (
    ESTIMATOR_OPTIONS,
    K_VALUES,
    PEAKMEM_K,
    decoder_flop,
    likelihood_names,
    models,
    paper_vae,
    sgemm_rate,
    skip_if_incompatible,
)


class _Likelihood:
    params = (likelihood_names(), K_VALUES)
    param_names = ["estimator", "k"]
    timeout = 600

    def setup_cache(self):
        return models()

    def prepare(self, model, x, estimator, k):
        skip_if_incompatible(estimator, model, num_samples=k)  # in setup: asv shows "skipped", not a failure
        self.model, self.x = model, x
        self.est, self.options = lvbench.get_estimator(estimator), ESTIMATOR_OPTIONS.get(estimator, {})
        torch.manual_seed(0)

    def run(self, k):
        self.est(self.model, self.x, num_samples=k, **self.options)


class TimeLikelihoodToy(_Likelihood):
    def setup(self, cache, estimator, k):
        model, x, _ = cache["continuous"]
        self.prepare(model, x, estimator, k)

    def time_toy(self, cache, estimator, k):
        self.run(k)


class TimeLikelihoodVAE(_Likelihood):
    def setup(self, cache, estimator, k):
        self.prepare(*cache["vae"], estimator, k)

    def time_vae(self, cache, estimator, k):
        self.run(k)


class PeakmemIWAE:
    """Peak memory of IWAE on the VAE as k grows: flat, because k is streamed in chunks."""

    params = PEAKMEM_K
    param_names = ["k"]
    timeout = 900

    def setup_cache(self):
        return models()["vae"]

    def setup(self, vae, k):
        self.vae, self.x = vae
        self.iwae = lvbench.get_estimator("iwae")

    def peakmem_iwae_vae(self, vae, k):
        self.iwae(self.vae, self.x, num_samples=k)


class TrackFlopEfficiency:
    """The streamed estimators' decoder FLOP rate on the IWAE paper's VAE as a fraction of this machine's
    best sgemm rate, measured in the same process (1.0 = every second spent in peak-rate GEMMs)."""

    params = ["iwae", "elbo", "naive_mc"]
    param_names = ["estimator"]
    unit = "fraction of sgemm"
    timeout = 300

    def setup(self, estimator):
        self.vae, self.x = paper_vae()
        self.est = lvbench.get_estimator(estimator)
        self.k = K_VALUES[-1]

    def track_decoder_flop_fraction(self, estimator):
        self.est(self.vae, self.x, num_samples=self.k)  # warm-up
        best = min(_seconds(lambda: self.est(self.vae, self.x, num_samples=self.k)) for _ in range(3))
        return decoder_flop(self.vae) * self.k * self.x.shape[0] / best / sgemm_rate(0.5)


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
