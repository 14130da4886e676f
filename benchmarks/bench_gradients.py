"""Speed of one gradient draw (surrogate + backward) for every gradient estimator, and of the R-draw
analysis (vectorized with torch.func) against a loop of backward passes."""

import torch

import lvbench
from lvbench.gradient_analysis import draw_gradients

from .common import gradient_names, paper_vae, skip_if_incompatible, toy


def _objective(name: str) -> str:
    return lvbench.get_estimator(name).objectives[0]


def _toy_for(name: str):
    continuous = toy("continuous")
    return continuous if lvbench.incompatibility(name, continuous[0]) is None else toy("discrete")


class TimeGradient:
    params = (gradient_names(), [2, 10, 100])
    param_names = ["estimator", "k"]
    timeout = 300

    def setup(self, estimator, k):
        self.est = lvbench.get_estimator(estimator)
        self.objective = _objective(estimator)
        self.toy, self.x_toy, _ = _toy_for(estimator)
        self.vae, self.x_vae = paper_vae()
        torch.manual_seed(0)

    def time_toy(self, estimator, k):
        skip_if_incompatible(estimator, self.toy, num_samples=k, objective=self.objective)
        self.est(self.toy, self.x_toy, num_samples=k, objective=self.objective).backward()

    def time_vae(self, estimator, k):
        skip_if_incompatible(estimator, self.vae, num_samples=k, objective=self.objective)
        self.est(self.vae, self.x_vae, num_samples=k, objective=self.objective).backward()


class TimeGradientAnalysis:
    """R = 200 gradient draws on the toy model: vmap-vectorized vs a loop."""

    params = [["vmap", "loop"]]
    param_names = ["method"]
    timeout = 300

    def setup(self, method):
        self.model, self.x, _ = toy("continuous")

    def time_draw_200(self, method):
        draw_gradients(self.model, self.x, "dreg", 10, 200, "iwae", vectorize=method == "vmap")
