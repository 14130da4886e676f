"""lvbench: how biased, how noisy and how fast is estimator E on model M at sample budget k?"""

# The documented submodules, bound so that `import lvbench; lvbench.metrics.pareto_khat(...)` works.
from lvbench import (  # noqa: F401  (estimators and models register the built-ins)
    data,
    errors,
    estimators,
    exact,
    gradient_analysis,
    measure,
    metrics,
    models,
    training,
    validation,
)
from lvbench.api import Results, load_results, run
from lvbench.errors import LvbenchInputError, UnknownNameError
from lvbench.estimators import IncompatibleError
from lvbench.estimators.gradient.fitted import FittedControl, fit_control
from lvbench.estimators.likelihood.ais import bdmc
from lvbench.inference_gaps import inference_gaps  # the function, as lvbench.inference_gaps(model, x)
from lvbench.registry import (
    get_estimator,
    get_model,
    incompatibility,
    list_estimators,
    list_models,
    register_estimator,
    register_model,
)

__version__ = "0.4.0"

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
