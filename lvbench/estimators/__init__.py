"""Estimators of log p(x) (``likelihood``) and of gradients of variational objectives (``gradient``)."""

from lvbench.estimators import gradient, likelihood  # noqa: F401  (registers the built-ins)
from lvbench.estimators.base import IncompatibleError, estimator

__all__ = ["IncompatibleError", "estimator", "gradient", "likelihood"]
