"""Named plug-ins: estimators and models, registered by decorator or discovered from entry points.

Three verbs per registry, as in timm: ``register_*``, ``list_*``, ``get_*``. Unlike timm, a second
registration of the same name is refused loudly. Third-party packages plug in through the entry-point
groups ``lvbench.estimators`` and ``lvbench.models``: an entry point names either a module that
registers on import or an object decorated with ``register_estimator``/``register_model``. A plugin
that fails to load produces a warning naming it, never a crash. A plugin that is not (yet) a package is
a Python file named in ``$LVBENCH_PLUGINS`` (``os.pathsep``-separated; ``lvbench run --plugin FILE`` sets
it, so worker processes load it too): imported once per process on the first lookup, its code identity
the file's digest. A named file that is missing or fails to import is a user error, not a warning.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib.metadata
import importlib.util
import inspect
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lvbench.core.code_identity import code_identity
from lvbench.core.errors import LvbenchInputError, UnknownNameError, did_you_mean
from lvbench.core.options import Interval, check_constraints, signature_options
from lvbench.core.protocol import PROPOSAL_NEEDS, capabilities_of

__all__ = [
    "PLUGINS_ENV_VAR",
    "load_plugin_files",
    "CAPABILITIES",
    "DATASET_USES",
    "ESTIMATOR_KINDS",
    "ESTIMATOR_PROPERTIES",
    "Entry",
    "get_estimator",
    "get_model",
    "incompatibility",
    "list_estimators",
    "list_models",
    "register_estimator",
    "register_model",
    "trained_model_types",
]

ESTIMATOR_KINDS = ("likelihood", "gradient")

#: What a model can offer and an estimator can need.
CAPABILITIES = {
    "continuous_latent": "latent z is continuous",
    "discrete_latent": "latent z is discrete",
    "binary_latent": "latent z is a vector of independent binary (Bernoulli) variables",
    "reparameterizable": "prior and proposal support rsample (pathwise gradients)",
    "enumerable": "latent has a finite support that can be enumerated",
    "relaxable": "discrete latent with a Concrete/Gumbel-softmax relaxed likelihood",
    "encoder": "has an amortized proposal q(z|x) as attribute `encoder`",
    "exact_marginal": "exact log p(x) in closed form",
    "exact_posterior": "exact posterior p(z|x) as a Distribution",
}

#: Whether a spec gives a model a dataset (``Entry.dataset``).
DATASET_USES = ("none", "optional", "required")

#: What an estimator can declare about itself.
ESTIMATOR_PROPERTIES = {
    "lower_bound": "E[estimate] <= log p(x)",
    "upper_bound": "the estimate converges (k -> inf) to a bound >= log p(x); biased low at finite k",
    "unbiased_p": "E[exp(estimate)] = p(x)",
    "unbiased_log": "E[estimate] = log p(x)",
    "consistent": "estimate -> log p(x) as the sample budget grows",
    "unbiased": "gradient estimate is unbiased for the gradient of its objective",
}

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """A registered estimator or model factory: what it needs and is, and the hooks the runner calls.

    Hooks (all optional, read by name, never through untyped metadata):
    ``check(model, **options) -> reason | None``: a rule of its own beyond ``needs`` (e.g. JVI's k > order);
    ``log_weights(model, x, k, **options) -> [k, N] | None``: its importance log-weights, for the k-hat
    and ESS diagnostics; ``fit(model, x, k, objective, **options) -> control``: fits a learned control
    variate once per gradient study (``lvbench.fit_control``).
    """

    name: str
    kind: str
    obj: Callable[..., Any]
    needs: frozenset[str] = frozenset()
    properties: frozenset[str] = frozenset()
    objectives: tuple[str, ...] = ()
    min_k: int = 1
    source: str = "lvbench"
    check: Callable[..., str | None] | None = field(default=None, compare=False)
    log_weights: Callable[..., Any] | None = field(default=None, compare=False)
    fit: Callable[..., Any] | None = field(default=None, compare=False)
    #: the objectives a declared "unbiased" holds for, where that is fewer than ``objectives`` (STL: ELBO)
    unbiased_for: tuple[str, ...] = ()
    #: declared ranges of numeric options, read by the estimator's call, the spec loader and ``lvbench list``
    constraints: Mapping[str, Interval] = field(default_factory=dict, compare=False)
    #: the surrogate's value is itself an unbiased estimate of the objective (training records it as is)
    surrogate_is_objective: bool = False
    #: models: whether a spec gives it a dataset: "none" (it simulates its data), "optional", "required"
    dataset: str = "none"
    #: the code behind it (``lvbench.code_identity``), taken when it registered: part of every cell's id
    code: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def description(self) -> str:
        doc = inspect.getdoc(self.obj) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def unbiased_for_objective(self, objective: str) -> bool:
        """Whether this gradient estimator declares itself unbiased for ``objective``: for those in
        ``unbiased_for`` where it names some, else for all its objectives where it declares "unbiased"."""
        if self.unbiased_for:
            return objective in self.unbiased_for
        return "unbiased" in self.properties

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.obj(*args, **kwargs)


class Registry:
    """A name -> Entry mapping with entry-point discovery on first lookup."""

    def __init__(self, what: str, group: str, kinds: Iterable[str]):
        self.what = what
        self.group = group
        self.kinds = tuple(kinds)
        self._entries: dict[str, Entry] = {}
        self._discovered = False
        self._loading: str | None = None
        self._loading_dist: tuple[str, str] | None = None

    def add(self, entry: Entry) -> None:
        if entry.kind not in self.kinds:
            raise ValueError(f"{self.what} {entry.name!r}: kind must be one of {self.kinds}, got {entry.kind!r}")
        unknown = (set(entry.needs) - set(CAPABILITIES)) | (set(entry.properties) - set(ESTIMATOR_PROPERTIES))
        if unknown and self.what == "estimator":
            raise ValueError(f"{self.what} {entry.name!r} declares unknown capabilities/properties {sorted(unknown)}")
        _check_declarations(entry)
        source = self._loading or entry.source  # name the plugin, also in the refusal below
        entry = dataclasses.replace(entry, source=source, code=code_identity(entry.obj, self._loading_dist))
        if entry.name in self._entries:
            prior = self._entries[entry.name]
            raise ValueError(
                f"{self.what} name {entry.name!r} is already registered (by {prior.source}); "
                f"refusing to overwrite it with one from {entry.source}"
            )
        self._entries[entry.name] = entry

    def get(self, name: str) -> Entry:
        self.discover()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            hint = did_you_mean(name, self._entries)
            raise UnknownNameError(f"unknown {self.what} {name!r}.{hint} Registered: {sorted(self._entries)}") from None

    def list(self, kind: str | None = None, pattern: str = "*") -> list[str]:
        self.discover()
        if kind is not None and kind not in self.kinds:
            raise ValueError(f"unknown {self.what} kind {kind!r}; expected one of {self.kinds}")
        return sorted(
            n for n, e in self._entries.items() if (kind is None or e.kind == kind) and fnmatch.fnmatch(n, pattern)
        )

    def entries(self, kind: str | None = None) -> list[Entry]:
        return [self._entries[n] for n in self.list(kind)]

    def discover(self, force: bool = False) -> None:
        """Load third-party plugins from the entry-point group (once), and the plugin files of
        ``$LVBENCH_PLUGINS`` not loaded yet."""
        load_plugin_files()
        if self._discovered and not force:
            return
        self._discovered = True
        for ep in importlib.metadata.entry_points(group=self.group):
            before = set(self._entries)
            self._loading = f"plugin {ep.name!r} ({ep.value})"
            dist = getattr(ep, "dist", None)
            self._loading_dist = (dist.name, dist.version) if dist is not None else None
            try:
                ep.load()
            except Exception as exc:  # a broken plugin must never break lvbench
                warnings.warn(
                    f"lvbench: {self.what} plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            finally:
                self._loading = self._loading_dist = None
            if set(self._entries) == before and ep.name not in self._entries:
                warnings.warn(
                    f"lvbench: {self.what} plugin {ep.name!r} ({ep.value}) loaded but registered nothing; "
                    f"decorate it with lvbench.register_{self.what}",
                    RuntimeWarning,
                    stacklevel=2,
                )


PLUGINS_ENV_VAR = "LVBENCH_PLUGINS"
_plugin_files: dict[str, str] = {}  # real path -> module name, of the files this process imported
_plugin_failures: dict[str, str] = {}  # real path -> the error its import raised


def load_plugin_files(paths: Iterable[str] | None = None) -> list[str]:
    """Import each plugin file (default: those in ``$LVBENCH_PLUGINS``) once per process, as a module of
    its own (``lvbench_plugin_<stem>``) so that its estimators' code identity is the file's digest; returns
    the module names. A missing file, one that is not ``.py`` or one that fails to import is named in an
    ``LvbenchInputError``."""
    if paths is None:
        text = os.environ.get(PLUGINS_ENV_VAR, "")
        if not text.strip():  # every registry lookup passes here: nothing to do costs one read
            return []
        paths = [p for p in text.split(os.pathsep) if p.strip()]
    names = []
    for path in paths:
        real = os.path.realpath(path)
        if real in _plugin_failures:  # imported once only: its error stands for every later lookup
            raise LvbenchInputError(_plugin_failures[real])
        if real in _plugin_files:
            names.append(_plugin_files[real])
            continue
        if not os.path.isfile(real) or not real.endswith(".py"):
            raise LvbenchInputError(
                f"plugin file {path!r} {'is not a .py file' if os.path.isfile(real) else 'not found'}"
            )
        stem = os.path.splitext(os.path.basename(real))[0]
        name = f"lvbench_plugin_{stem if stem.isidentifier() else 'file'}_{len(_plugin_files)}"
        spec = importlib.util.spec_from_file_location(name, real)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        _plugin_files[real] = name
        for registry in (ESTIMATORS, MODELS):
            registry._loading = f"plugin file {os.path.basename(real)}"
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            _plugin_failures[real] = f"plugin file {path}: failed to import: {type(exc).__name__}: {exc}"
            raise LvbenchInputError(_plugin_failures[real]) from exc
        finally:
            for registry in (ESTIMATORS, MODELS):
                registry._loading = None
        names.append(name)
    return names


def _check_declarations(entry: Entry) -> None:
    """Refuse declarations that cannot hold: ``unbiased_for`` beyond the objectives, a constraint on an
    option the function does not take or that its own default breaks, an unknown dataset use."""
    if not set(entry.unbiased_for) <= set(entry.objectives):
        raise ValueError(f"estimator {entry.name!r}: unbiased_for {entry.unbiased_for} is not among its objectives")
    if entry.dataset not in DATASET_USES:
        raise ValueError(f"model {entry.name!r}: dataset must be one of {DATASET_USES}, got {entry.dataset!r}")
    if entry.constraints:
        params, _ = signature_options(entry.obj, 3)
        for name in entry.constraints:
            if name not in params:
                raise ValueError(f"estimator {entry.name!r} constrains {name!r}, which is not one of its options")
        defaults = {n: p.default for n, p in params.items() if n in entry.constraints and p.default is not p.empty}
        check_constraints(entry.constraints, defaults, f"estimator {entry.name!r}: the default of ")


ESTIMATORS = Registry("estimator", "lvbench.estimators", ESTIMATOR_KINDS)
MODELS = Registry("model", "lvbench.models", ("model",))


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"registry names are non-empty strings of letters, digits, '_' and '-'; got {name!r}")


def register_estimator(
    name: str,
    *,
    kind: str,
    needs: Iterable[str] = (),
    properties: Iterable[str] = (),
    objectives: Iterable[str] = (),
    min_k: int = 1,
    check: Callable[..., str | None] | None = None,
    log_weights: Callable[..., Any] | None = None,
    fit: Callable[..., Any] | None = None,
    unbiased_for: Iterable[str] = (),
    constraints: Mapping[str, Interval] | None = None,
    surrogate_is_objective: bool = False,
) -> Callable[[T], T]:
    """Register a likelihood or gradient estimator under ``name``.

    ``needs``: model capabilities the estimator requires (see ``CAPABILITIES``).
    ``properties``: what the estimator is (see ``ESTIMATOR_PROPERTIES``).
    ``objectives``: for gradient estimators, the objectives it estimates ("elbo", "iwae").
    ``min_k``: the smallest sample budget it accepts (e.g. 2 for leave-one-out baselines).
    ``check``, ``log_weights``, ``fit``: the hooks of ``Entry``; ``unbiased_for``: the objectives a
    declared "unbiased" holds for, if fewer than all; ``constraints``: {option: ``Interval``};
    ``surrogate_is_objective``: the surrogate's value estimates the objective without bias.
    """
    _check_name(name)
    if kind == "gradient" and not objectives:
        raise ValueError(f"gradient estimator {name!r} must declare its objectives, e.g. objectives=('elbo',)")

    def decorate(obj: T) -> T:
        entry = Entry(
            name,
            kind,
            obj,  # type: ignore[arg-type]
            frozenset(needs),
            frozenset(properties),
            tuple(objectives),
            int(min_k),
            check=check,
            log_weights=log_weights,
            fit=fit,
            unbiased_for=tuple(unbiased_for),
            constraints=dict(constraints or {}),
            surrogate_is_objective=bool(surrogate_is_objective),
        )
        ESTIMATORS.add(entry)
        return obj

    return decorate


def register_model(name: str, *, dataset: str = "none") -> Callable[[T], T]:
    """Register a model factory (a class or function returning a model) under ``name``. ``dataset``:
    whether a spec gives it data to train on: "none" (it simulates its data from its own ground truth),
    "optional" or "required"."""
    _check_name(name)

    def decorate(obj: T) -> T:
        MODELS.add(Entry(name, "model", obj, dataset=dataset))  # type: ignore[arg-type]
        return obj

    return decorate


def trained_model_types() -> list[str]:
    """Names of the registered model types a spec may give a dataset to train on (``dataset`` other than
    "none")."""
    MODELS.discover()
    return sorted(e.name for e in MODELS.entries() if e.dataset != "none")


def list_estimators(kind: str | None = None, pattern: str = "*") -> list[str]:
    """Names of registered estimators, optionally of one kind ("likelihood" or "gradient")."""
    return ESTIMATORS.list(kind, pattern)


def get_estimator(name: str) -> Entry:
    """The registry entry (callable) for estimator ``name``."""
    return ESTIMATORS.get(name)


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered model factories."""
    return MODELS.list(None, pattern)


def get_model(name: str) -> Entry:
    """The registry entry (callable factory) for model ``name``."""
    return MODELS.get(name)


def incompatibility(entry: Entry | str, model: Any, **options: Any) -> str | None:
    """Why ``entry`` cannot run on ``model`` with ``options``, or None when it can."""
    if isinstance(entry, str):
        entry = get_estimator(entry)
    caps = capabilities_of(model)
    missing = sorted(entry.needs - caps)
    if missing:
        return f"{entry.name} needs {', '.join(missing)}, which {type(model).__name__} does not provide"
    proposal = options.get("proposal")
    if isinstance(proposal, str):
        need = PROPOSAL_NEEDS.get(proposal)
        if proposal not in PROPOSAL_NEEDS:
            return f"unknown proposal {proposal!r}; expected one of {sorted(PROPOSAL_NEEDS)} or a callable"
        if need is not None and need not in caps:
            return f"proposal={proposal!r} needs {need}, which {type(model).__name__} does not provide"
    k = options.get("num_samples")
    if k is not None and k < entry.min_k:
        return f"{entry.name} needs num_samples >= {entry.min_k}, got {k}"
    objective = options.get("objective")
    if objective is not None and entry.kind == "gradient" and objective not in entry.objectives:
        return f"{entry.name} estimates {list(entry.objectives)}, not objective={objective!r}"
    return entry.check(model, **options) if entry.check is not None else None
