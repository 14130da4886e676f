"""Likelihood estimators: each ``est(model, x, num_samples=k, **options) -> Tensor[N]`` of log p(x)."""

from lvbench.estimators.likelihood.ais import ais, bdmc
from lvbench.estimators.likelihood.elbo import elbo
from lvbench.estimators.likelihood.importance import importance
from lvbench.estimators.likelihood.iwae import iwae
from lvbench.estimators.likelihood.jvi import jvi
from lvbench.estimators.likelihood.naive_mc import naive_mc
from lvbench.estimators.likelihood.renyi import cubo, renyi
from lvbench.estimators.likelihood.sumo import sumo
from lvbench.estimators.likelihood.weights import log_importance_weights

__all__ = [
    "ais",
    "bdmc",
    "cubo",
    "elbo",
    "importance",
    "iwae",
    "jvi",
    "log_importance_weights",
    "naive_mc",
    "renyi",
    "sumo",
]
