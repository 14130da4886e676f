"""lvbench: how biased, how noisy and how fast is estimator E on model M at sample budget k?"""

# The documented submodules, bound so that `import lvbench; lvbench.metrics.pareto_khat(...)` works.
from lvbench import data, estimators, models  # noqa: F401  (estimators and models register the built-ins)
from lvbench.analysis import exact, gradient_analysis, metrics, training  # noqa: F401
from lvbench.analysis.inference_gaps import inference_gaps  # the function, as lvbench.analysis.inference_gaps(model, x)
from lvbench.api import Results, load_results, run
from lvbench.compute import measure  # noqa: F401
from lvbench.core import errors, validation  # noqa: F401
from lvbench.core.code_identity import VERSION
from lvbench.core.errors import LvbenchInputError, UnknownNameError
from lvbench.core.registry import (
    get_estimator,
    get_model,
    incompatibility,
    list_estimators,
    list_models,
    register_estimator,
    register_model,
)
from lvbench.estimators import IncompatibleError
from lvbench.estimators.gradient.fitted import FittedControl, fit_control
from lvbench.estimators.likelihood.ais import bdmc

__version__ = VERSION

__all__ = [
    "FittedControl",
    "IncompatibleError",
    "LvbenchInputError",
    "Results",
    "UnknownNameError",
    "bdmc",
    "fit_control",
    "get_estimator",
    "get_model",
    "incompatibility",
    "inference_gaps",
    "list_estimators",
    "list_models",
    "load_results",
    "register_estimator",
    "register_model",
    "run",
]
