"""Gradient estimators: ``est(model, x, num_samples=k, objective="elbo"|"iwae") -> scalar surrogate``
whose autograd gradient estimates ∇ of the objective averaged over the batch (to be ascended)."""

from lvbench.estimators.gradient.arm import arm, disarm
from lvbench.estimators.gradient.enumeration import enumeration
from lvbench.estimators.gradient.nvil import nvil
from lvbench.estimators.gradient.rebar import rebar, relax
from lvbench.estimators.gradient.relaxed import gumbel_softmax
from lvbench.estimators.gradient.reparam import dreg, reparam, stl
from lvbench.estimators.gradient.score_function import score_function, score_function_loo
from lvbench.estimators.gradient.straight_through import straight_through, straight_through_gumbel
from lvbench.estimators.gradient.vimco import vimco

__all__ = [
    "arm",
    "disarm",
    "dreg",
    "enumeration",
    "gumbel_softmax",
    "nvil",
    "rebar",
    "relax",
    "reparam",
    "score_function",
    "score_function_loo",
    "stl",
    "straight_through",
    "straight_through_gumbel",
    "vimco",
]
