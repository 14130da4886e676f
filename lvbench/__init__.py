"""lvbench: how biased, how noisy and how fast is estimator E on model M at sample budget k?"""

from lvbench import estimators, models  # noqa: F401  (registers the built-ins)
from lvbench.estimators import IncompatibleError
from lvbench.estimators.likelihood.ais import bdmc
from lvbench.registry import (
    get_estimator,
    get_model,
    incompatibility,
    list_estimators,
    list_models,
    register_estimator,
    register_model,
)
from lvbench.validation import LvbenchInputError

__version__ = "0.1.0"

__all__ = [
    "IncompatibleError",
    "LvbenchInputError",
    "bdmc",
    "get_estimator",
    "get_model",
    "incompatibility",
    "list_estimators",
    "list_models",
    "register_estimator",
    "register_model",
]
