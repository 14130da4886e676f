"""Shared set-up for the asv suites: the models and data each benchmark runs on.

Profile (environment variable LVBENCH_ASV_PROFILE): "regular" (default) uses the IWAE paper's VAE
(784-200-200-50) on 100 points; "fast" shrinks it to 20 points so a whole `asv run --quick` fits in CI.
"""

from __future__ import annotations

import functools
import os

import torch

import lvbench
from lvbench.models import VAE

PROFILE = os.environ.get("LVBENCH_ASV_PROFILE", "regular")
VAE_POINTS = 20 if PROFILE == "fast" else 100
TOY_POINTS = 32
K_VALUES = [1, 10, 100, 1000]

#: Options that keep expensive estimators' benchmarks affordable (documented in the README).
ESTIMATOR_OPTIONS = {"ais": {"steps": 20}}


@functools.cache
def toy(kind: str = "continuous"):
    """The default suite's toy models, with encoders fitted briefly: (model, x, exact log p(x))."""
    from lvbench.training import fit_encoder

    name = "linear_gaussian" if kind == "continuous" else "gaussian_mixture"
    model = lvbench.get_model(name)()
    x, _ = lvbench.data.sample_from_model(model, TOY_POINTS, seed=1)
    fit_encoder(model, x, steps=100)
    with torch.no_grad():
        truth = model.log_marginal(x)
    return model, x, truth


@functools.cache
def paper_vae():
    """The IWAE paper's VAE shape with MNIST-size binary points simulated from it."""
    torch.manual_seed(0)
    model = VAE(784, 50, (200, 200), "tanh", "bernoulli")
    x, _ = model.sample(VAE_POINTS)
    return model, x


def skip_if_incompatible(name: str, model, **options) -> None:
    """asv reports a benchmark whose setup raises NotImplementedError as skipped (n/a)."""
    reason = lvbench.incompatibility(name, model, **options)
    if reason is not None:
        raise NotImplementedError(reason)


def likelihood_names() -> list[str]:
    """Every registered likelihood estimator, plugins included."""
    return lvbench.list_estimators("likelihood")


def gradient_names() -> list[str]:
    return lvbench.list_estimators("gradient")
