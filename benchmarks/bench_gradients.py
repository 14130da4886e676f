"""Speed of one gradient draw (surrogate + backward) for every gradient estimator, and of the R-draw
analysis (vectorized with torch.func) against a loop of backward passes."""

import torch

import lvbench
from lvbench.analysis.gradient_analysis import draw_gradients

from .common import GRADIENT_K, gradient_names, models, objective, skip_if_incompatible, toy_for


class _Gradient:
    params = (gradient_names(), GRADIENT_K)
    param_names = ["estimator", "k"]
    timeout = 300

    def setup_cache(self):
        return models()

    def prepare(self, model, x, estimator, k):
        self.objective = objective(estimator)
        skip_if_incompatible(estimator, model, num_samples=k, objective=self.objective)  # in setup: "skipped"
        self.model, self.x, self.est = model, x, lvbench.get_estimator(estimator)
        torch.manual_seed(0)

    def run(self, k):
        self.est(self.model, self.x, num_samples=k, objective=self.objective).backward()


class TimeGradientToy(_Gradient):
    def setup(self, cache, estimator, k):
        model, x, _ = toy_for(estimator, cache)
        self.prepare(model, x, estimator, k)

    def time_toy(self, cache, estimator, k):
        self.run(k)


class TimeGradientVAE(_Gradient):
    def setup(self, cache, estimator, k):
        self.prepare(*cache["vae"], estimator, k)

    def time_vae(self, cache, estimator, k):
        self.run(k)


class TimeGradientAnalysis:
    """R = 200 gradient draws on the toy model: vmap-vectorized vs a loop."""

    params = [["vmap", "loop"]]
    param_names = ["method"]
    timeout = 300

    def setup_cache(self):
        return models()["continuous"]

    def setup(self, toy, method):
        self.model, self.x, _ = toy

    def time_draw_200(self, toy, method):
        draw_gradients(self.model, self.x, "dreg", 10, 200, "iwae", vectorize=method == "vmap")
