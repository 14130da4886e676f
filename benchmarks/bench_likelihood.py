"""Speed and peak memory of every likelihood estimator (plugins included) on a toy model and a VAE."""

import torch

import lvbench

from .common import ESTIMATOR_OPTIONS, K_VALUES, likelihood_names, paper_vae, skip_if_incompatible, toy


class TimeLikelihood:
    params = (likelihood_names(), K_VALUES)
    param_names = ["estimator", "k"]
    timeout = 600

    def setup(self, estimator, k):
        self.est = lvbench.get_estimator(estimator)
        self.options = ESTIMATOR_OPTIONS.get(estimator, {})
        self.toy, self.x_toy, _ = toy("continuous")
        self.vae, self.x_vae = paper_vae()
        torch.manual_seed(0)

    def time_toy(self, estimator, k):
        self.est(self.toy, self.x_toy, num_samples=k, **self.options)

    def time_vae(self, estimator, k):
        skip_if_incompatible(estimator, self.vae, num_samples=k)
        self.est(self.vae, self.x_vae, num_samples=k, **self.options)


class PeakmemIWAE:
    """Peak memory of IWAE on the VAE as k grows 100-fold: flat, because k is streamed in chunks."""

    params = [1_000, 10_000, 100_000]
    param_names = ["k"]
    timeout = 900

    def setup(self, k):
        self.vae, self.x = paper_vae()
        self.iwae = lvbench.get_estimator("iwae")

    def peakmem_iwae_vae(self, k):
        self.iwae(self.vae, self.x, num_samples=k)
