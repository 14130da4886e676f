"""Experiment specs: a TOML file (or dict) validated into a ``Spec``, with errors that name the key."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from lvbench.core.errors import LvbenchInputError, UnknownNameError, did_you_mean
from lvbench.core.options import check_constraints, check_keys, check_options, check_value
from lvbench.core.protocol import PROPOSAL_NEEDS
from lvbench.core.registry import ESTIMATORS, Entry, get_estimator, get_model, trained_model_types
from lvbench.data import BUNDLED_DATASETS, DATASETS
from lvbench.estimators.gradient.fitted import RUNNER_OPTIONS

__all__ = [
    "EstimatorSpec",
    "ModelSpec",
    "RunSettings",
    "Spec",
    "SpecError",
    "TrainingEntry",
    "TrainingSpec",
    "dataset_options",
    "default_spec",
    "load_spec",
    "resolve_spec",
    "suite_path",
]

DTYPES = ("float32", "float64")
PROPOSALS = tuple(PROPOSAL_NEEDS)


class SpecError(LvbenchInputError):
    """A problem in an experiment spec; the message names the key."""


@dataclass(frozen=True)
class RunSettings:
    seed: int = 0
    repeats: int = 20
    points: int = 32
    devices: tuple[str, ...] = ("cpu",)
    dtype: str = "float32"
    diagnostics_max_k: int = 100_000
    #: torch intra-op threads for every cell and for model preparation, whatever the executor: the bits
    #: of a result depend on it (parallel reductions), so it is part of every cell's identity.
    threads: int = 1
    #: seconds a cell may run before it is stopped and marked failed (None: no limit).
    cell_timeout: float | None = None


@dataclass(frozen=True)
class ModelSpec:
    label: str
    type: str
    params: dict[str, Any]
    points: int
    proposal: str = "encoder"
    dataset: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    encoder_fit: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    bdmc: dict[str, Any] = field(default_factory=dict)
    inference_gaps: dict[str, Any] | None = None  # None: not computed; {} computes with the defaults


@dataclass(frozen=True)
class EstimatorSpec:
    label: str
    estimator: str
    kind: str
    k: tuple[int, ...]
    options: dict[str, Any]
    objective: str | None = None
    repeats: int | None = None
    models: tuple[str, ...] | None = None
    cell_timeout: float | None = None


@dataclass(frozen=True)
class TrainingEntry:
    """One method of a training study: a gradient estimator (or a baseline such as EM) under a label."""

    label: str
    method: str
    objective: str
    k: tuple[int, ...]
    options: dict[str, Any]


@dataclass(frozen=True)
class TrainingSpec:
    """A training study ([training.NAME]): train the model of ``model`` from ``start`` with each entry,
    at each k, from each of ``seeds`` initializations, and evaluate it along the way."""

    label: str
    model: str
    entries: tuple[TrainingEntry, ...]
    steps: int = 1000
    seconds: float | None = None
    lr: float = 1e-3
    batch_size: int = 100
    evaluations: int = 10
    #: explicit evaluation steps (step 0 and the last step are always evaluated); None: ``evaluations``
    #: log-spaced steps
    evaluate_at: tuple[int, ...] | None = None
    seeds: int = 3
    train_points: int = 1000
    heldout_points: int = 500
    heldout: dict[str, Any] = field(default_factory=lambda: {"estimator": "iwae", "k": 1000})
    start: str = "init"
    gradient_variance: dict[str, Any] = field(default_factory=dict)
    epsilon: float = 1.0
    cell_timeout: float | None = None


@dataclass(frozen=True)
class Spec:
    run: RunSettings
    models: tuple[ModelSpec, ...]
    estimators: tuple[EstimatorSpec, ...]
    gradients: tuple[EstimatorSpec, ...]
    source: dict[str, Any]
    training: tuple[TrainingSpec, ...] = ()


def _int(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where} must be an integer, got {value!r}")
    if value < minimum:
        raise SpecError(f"{where} must be >= {minimum}, got {value}")
    return value


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"[{where}] must be a table, got {type(value).__name__}")
    return value


def _k_list(value: Any, where: str) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise SpecError(f"{where} must list at least one sample budget")
    return tuple(_int(v, f"{where} entry", 1) for v in values)


def _run(raw: dict[str, Any]) -> RunSettings:
    allowed = set(RunSettings.__dataclass_fields__)
    _keys(raw, allowed, "[run]")
    devices = raw.get("devices", ["cpu"])
    if isinstance(devices, str):
        devices = [devices]
    if not isinstance(devices, list) or not devices or not all(isinstance(d, str) for d in devices):
        raise SpecError(f"run.devices must be a list of device names like ['cpu', 'cuda'], got {devices!r}")
    for d in devices:
        if not (d in ("cpu", "available") or d.startswith("cuda")):
            raise SpecError(f"run.devices: unknown device {d!r} (expected 'cpu', 'cuda[:N]' or 'available')")
    dtype = raw.get("dtype", "float32")
    if dtype not in DTYPES:
        raise SpecError(f"run.dtype must be one of {DTYPES}, got {dtype!r}")
    return RunSettings(
        seed=_int(raw.get("seed", 0), "run.seed", 0),
        repeats=_int(raw.get("repeats", 20), "run.repeats", 1),
        points=_int(raw.get("points", 32), "run.points", 1),
        devices=tuple(devices),
        dtype=dtype,
        diagnostics_max_k=_int(raw.get("diagnostics_max_k", 100_000), "run.diagnostics_max_k", 0),
        threads=_int(raw.get("threads", 1), "run.threads", 1),
        cell_timeout=_timeout(raw.get("cell_timeout"), "run.cell_timeout"),
    )


def _gaps(raw: dict[str, Any], where: str) -> dict[str, Any] | None:
    if "inference_gaps" not in raw:
        return None
    table = _table(raw["inference_gaps"], f"{where}.inference_gaps")
    return _fixed_table(table, INFERENCE_GAP_KEYS, f"{where}.inference_gaps")


def _timeout(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise SpecError(f"{where} must be a number of seconds > 0, got {value!r}")
    return float(value)


def _keys(raw: dict[str, Any], allowed, where: str, also=()) -> None:
    try:
        check_keys(raw, allowed, where, also)
    except UnknownNameError as exc:
        raise SpecError(str(exc)) from None


def _options(fn, options: dict[str, Any], where: str, skip: int, extra=None, also=(), what="option") -> None:
    """Estimator options, model parameters and nested tables against the function that takes them."""
    try:
        check_options(fn, options, where, skip=skip, extra=extra, also=also, what=what)
    except LvbenchInputError as exc:
        raise SpecError(str(exc)) from None


MODEL_KEYS = {
    "type",
    "points",
    "proposal",
    "dataset",
    "train",
    "checkpoint",
    "encoder_fit",
    "reference",
    "bdmc",
    "inference_gaps",
}
INFERENCE_GAP_KEYS = {"steps": int, "lr": float, "samples": int, "eval_samples": int}
#: ``seed`` in train and encoder_fit (default: run.seed) pins a model's fit, so that runs with different
#: run seeds (different data points and Monte Carlo draws) compare the same fitted model.
TRAIN_KEYS = {
    "epochs": int,
    "objective": Literal["elbo", "iwae"],
    "k": int,
    "batch_size": int,
    "lr": float,
    "seed": int,
    "estimator": str,  # the gradient estimator that trains it (default: reparam, else vimco / disarm)
}
ENCODER_FIT_KEYS = {"steps": int, "lr": float, "k": int, "train_points": int, "seed": int}
DATASET_KEYS = {"name": str, "path": str, "binarization": Literal["static", "dynamic", "threshold", "none"]}
ESTIMATOR_TABLE_KEYS = ("k", "repeats", "models", "estimator", "objective", "cell_timeout")
#: Options of a gradient study itself (``analyze_gradients``), beside the estimator's own.
STUDY_OPTIONS = {
    "vectorize": bool | Literal["auto"],
    "reference": Literal["auto", "exact", "mc"],
    "reference_draws": int,
    "batch": int | None,
}


def _fixed_table(raw: dict[str, Any], types: dict[str, Any], where: str) -> dict[str, Any]:
    _keys(raw, types, f"[{where}]")
    for key, value in raw.items():
        try:
            check_value(value, types[key], f"{where}.{key}")
        except LvbenchInputError as exc:
            raise SpecError(str(exc)) from None
    return raw


def _model(label: str, raw: dict[str, Any], run: RunSettings, base_dir: str) -> ModelSpec:
    where = f"models.{label}"
    raw = dict(_table(raw, where))
    if "type" not in raw:
        raise SpecError(f"[{where}] needs a `type` (a registered model, e.g. 'linear_gaussian')")
    try:
        factory = get_model(raw["type"])
    except LvbenchInputError as exc:
        raise SpecError(f"{where}.type: {exc}") from None
    params = {k: v for k, v in raw.items() if k not in MODEL_KEYS}
    _options(factory.obj, params, f"[{where}]", 0, also=MODEL_KEYS, what="key")
    proposal = raw.get("proposal", "encoder")
    if proposal not in PROPOSALS:
        raise SpecError(f"{where}.proposal must be one of {PROPOSALS}, got {proposal!r}")
    dataset, dataset_options = _dataset(raw.get("dataset"), factory, where, base_dir)
    checkpoint = _checkpoint(raw.get("checkpoint"), where, base_dir)
    train = _train(raw.get("train", {}), where)
    if "train" in raw and checkpoint is not None:
        raise SpecError(f"[{where}] has both `train` and `checkpoint`: a checkpoint is already trained; keep one")
    encoder_fit = _fixed_table(
        _table(raw.get("encoder_fit", {}), f"{where}.encoder_fit"), ENCODER_FIT_KEYS, f"{where}.encoder_fit"
    )
    return ModelSpec(
        label=label,
        type=raw["type"],
        params=params,
        points=_int(raw.get("points", run.points), f"{where}.points"),
        proposal=proposal,
        dataset=dataset,
        dataset_options=dataset_options,
        train=train,
        checkpoint=checkpoint,
        encoder_fit=encoder_fit,
        reference=_reference(raw.get("reference", {}), where),
        bdmc=_bdmc(raw.get("bdmc", {}), where),
        inference_gaps=_gaps(raw, where),
    )


def _dataset(dataset: Any, factory: Entry, where: str, base_dir: str) -> tuple[str | None, dict[str, Any]]:
    """(dataset name, its options) of a model table, checked against what the model type declares
    (``register_model(..., dataset=...)``: none, optional or required)."""
    options: dict[str, Any] = {}
    if isinstance(dataset, dict):
        _fixed_table(dataset, DATASET_KEYS, f"{where}.dataset")
        options = {k: v for k, v in dataset.items() if k != "name"}
        dataset = dataset.get("name")
    if dataset is not None and dataset not in DATASETS:
        raise SpecError(f"{where}.dataset must be one of {list(DATASETS)} (or a table with name=...), got {dataset!r}")
    if "path" in options:
        options["path"] = os.path.join(base_dir, os.path.expanduser(options["path"]))
        if not os.path.isfile(options["path"]):
            raise SpecError(f"{where}.dataset.path: file not found: {options['path']}")
    if dataset is not None and factory.dataset == "none":
        trained = trained_model_types()
        raise SpecError(f"{where}: `dataset` is only for types {trained} (toy models simulate their data)")
    if dataset is None and factory.dataset == "required":
        raise SpecError(f"[{where}] (a {factory.name!r}) needs `dataset`, one of {list(DATASETS)}")
    return dataset, options


def dataset_options(ms: ModelSpec) -> dict[str, Any]:
    """The options a model's training data is loaded with: dynamic binarization unless the spec says
    otherwise, and the training part of a bundled dataset."""
    bundled = ms.dataset in BUNDLED_DATASETS
    return {"binarization": "dynamic", **ms.dataset_options, **({"split": "train"} if bundled else {})}


def _checkpoint(checkpoint: Any, where: str, base_dir: str) -> str | None:
    if checkpoint is None:
        return None
    checkpoint = os.path.join(base_dir, os.path.expanduser(checkpoint))
    if os.path.isdir(checkpoint):
        raise SpecError(f"{where}.checkpoint: {checkpoint} is a folder, not a checkpoint file")
    if not os.path.isfile(checkpoint):
        raise SpecError(f"{where}.checkpoint: file not found: {checkpoint}")
    return checkpoint


def _train(raw: Any, where: str) -> dict[str, Any]:
    train = _fixed_table(_table(raw, f"{where}.train"), TRAIN_KEYS, f"{where}.train")
    for key in ("epochs", "k", "batch_size"):
        if key in train:
            _int(train[key], f"{where}.train.{key}")
    if "estimator" in train:
        try:
            trainer = get_estimator(train["estimator"])
        except LvbenchInputError as exc:
            raise SpecError(f"{where}.train.estimator: {exc}") from None
        if trainer.kind != "gradient":
            raise SpecError(f"{where}.train.estimator: {trainer.name!r} is not a gradient estimator")
    return train


def _reference(raw: Any, where: str) -> dict[str, Any]:
    reference = _table(raw, f"{where}.reference")
    try:
        ref_entry = get_estimator(reference.get("estimator", "iwae"))
    except LvbenchInputError as exc:
        raise SpecError(f"{where}.reference.estimator: {exc}") from None
    if ref_entry.kind != "likelihood":
        raise SpecError(f"{where}.reference.estimator: {ref_entry.name!r} is not a likelihood estimator")
    ref_options = {k: v for k, v in reference.items() if k not in ("estimator", "k", "repeats")}
    _options(ref_entry.obj, ref_options, f"{where}.reference", 3, also=("estimator", "k", "repeats"))
    _constraints(ref_entry.constraints, ref_options, f"{where}.reference.")
    for key in ("k", "repeats"):
        if key in reference:
            _int(reference[key], f"{where}.reference.{key}")
    return reference


def _bdmc(raw: Any, where: str) -> dict[str, Any]:
    bdmc = _table(raw, f"{where}.bdmc")
    if bdmc:
        from lvbench.estimators.likelihood.ais import AIS_CONSTRAINTS
        from lvbench.estimators.likelihood.ais import bdmc as bdmc_fn

        options = {k: v for k, v in bdmc.items() if k != "points"}
        _options(bdmc_fn, options, f"{where}.bdmc", 3, also=("points",))
        _constraints(AIS_CONSTRAINTS, options, f"{where}.bdmc.")
        if "points" in bdmc:
            _int(bdmc["points"], f"{where}.bdmc.points")
    return bdmc


def _constraints(constraints: dict[str, Any], options: dict[str, Any], prefix: str) -> None:
    try:
        check_constraints(constraints, options, prefix)
    except LvbenchInputError as exc:
        raise SpecError(str(exc)) from None


def _estimator(label: str, raw: dict[str, Any], section: str) -> EstimatorSpec:
    where = f"{section}.{label}"
    raw = dict(_table(raw, where))
    name = raw.pop("estimator", label)
    try:
        entry = get_estimator(name)
    except LvbenchInputError as exc:
        raise SpecError(f"[{where}]: {exc}") from None
    kind = "likelihood" if section == "estimators" else "gradient"
    if entry.kind != kind:
        home = "estimators" if entry.kind == "likelihood" else "gradients"
        raise SpecError(f"[{where}]: {name!r} is a {entry.kind} estimator; put it under [{home}]")
    if "k" not in raw:
        close = [key for key in raw if key != "k" and did_you_mean(key, ["k"])]
        hint = f" ({close[0]!r} is not a key: did you mean 'k'?)" if close else ""
        raise SpecError(f"[{where}] needs k, a list of sample budgets such as [1, 10, 100]{hint}")
    k = _k_list(raw.pop("k"), f"{where}.k")
    repeats = raw.pop("repeats", None)
    if repeats is not None:
        repeats = _int(repeats, f"{where}.repeats")
    models = raw.pop("models", None)
    if models is not None:
        if isinstance(models, str):
            models = [models]
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise SpecError(f"{where}.models must be a list of model labels, got {models!r}")
        models = tuple(models)
    cell_timeout = _timeout(raw.pop("cell_timeout", None), f"{where}.cell_timeout")
    objective = None
    if kind == "gradient":
        objective = raw.pop("objective", entry.objectives[0])
        if objective not in entry.objectives:
            raise SpecError(f"{where}.objective: {name} estimates {list(entry.objectives)}, not {objective!r}")
    _check_estimator_options(entry, raw, where)
    return EstimatorSpec(label, name, kind, k, raw, objective, repeats, models, cell_timeout)


def _check_estimator_options(entry: Entry, options: dict[str, Any], where: str) -> None:
    """Every option is one the estimator (or, for a gradient study, the study) takes, with a fitting value."""
    extra = STUDY_OPTIONS if entry.kind == "gradient" else None
    own = {k: v for k, v in options.items() if k != "objective"}
    for name in RUNNER_OPTIONS:
        if name in own:
            raise SpecError(f"[{where}].{name} is set by the runner (fitted before the study), not by a spec")
    _options(entry.obj, own, f"[{where}]", 3, extra=extra, also=ESTIMATOR_TABLE_KEYS)
    _constraints(entry.constraints, own, f"{where}.")  # declared ranges: refused now, not when the cell runs


TRAINING_KEYS = {
    "model": str,
    "estimators": list | dict,
    "objective": Literal["elbo", "iwae"],
    "k": int | list,
    "steps": int,
    "seconds": float,
    "lr": float,
    "batch_size": int,
    "evaluations": int,
    "evaluate_at": list,
    "seeds": int,
    "train_points": int,
    "heldout_points": int,
    "heldout": dict,
    "start": Literal["init", "prepared"],
    "gradient_variance": dict,
    "epsilon": float,
    "cell_timeout": float,
}
GRADIENT_VARIANCE_KEYS = {"draws": int, "points": int}
TRAINING_ENTRY_KEYS = ("estimator", "objective", "k")


def _training(label: str, raw: Any, models: dict[str, Any]) -> TrainingSpec:
    """A [training.NAME] table: the model label, the methods (a list of names, or a table of labels with
    their estimator, objective, k and options), the budgets, the evaluation schedule and the seeds."""
    where = f"training.{label}"
    raw = _fixed_table(dict(_table(raw, where)), TRAINING_KEYS, where)
    if "model" not in raw:
        raise SpecError(f"[{where}] needs `model`, the label of a [models.*] table to train")
    if raw["model"] not in models:
        hint = did_you_mean(raw["model"], models)
        raise SpecError(f"{where}.model: the spec has no model {raw['model']!r}.{hint} It has {sorted(models)}")
    methods = raw.get("estimators")
    if not methods:
        raise SpecError(f"[{where}] needs `estimators`, e.g. ['reparam', 'score_function_loo']")
    if isinstance(methods, list):
        if not all(isinstance(m, str) for m in methods):
            raise SpecError(f"{where}.estimators must list estimator names, got {methods!r}")
        methods = {m: {} for m in methods}
    objective = raw.get("objective", "elbo")
    k = _k_list(raw.get("k", [1]), f"{where}.k")
    entries = tuple(
        _training_entry(name, opts, objective, k, f"{where}.estimators.{name}") for name, opts in methods.items()
    )
    for key in ("steps", "batch_size", "seeds", "train_points", "heldout_points"):
        if key in raw:
            _int(raw[key], f"{where}.{key}")
    evaluations = _int(raw.get("evaluations", 10), f"{where}.evaluations", 2)
    evaluate_at = None
    if "evaluate_at" in raw:
        evaluate_at = tuple(_int(s, f"{where}.evaluate_at entry", 0) for s in raw["evaluate_at"])
        steps_ = raw.get("steps", TrainingSpec.steps)
        if any(s > steps_ for s in evaluate_at):
            raise SpecError(
                f"{where}.evaluate_at: steps beyond steps = {steps_}: {[s for s in evaluate_at if s > steps_]}"
            )
    for key in ("seconds", "lr", "epsilon"):
        if key in raw and not raw[key] > 0:
            raise SpecError(f"{where}.{key} must be > 0, got {raw[key]!r}")
    heldout = {"estimator": "iwae", "k": 1000, **_table(raw.get("heldout", {}), f"{where}.heldout")}
    try:
        entry = get_estimator(heldout["estimator"])
    except LvbenchInputError as exc:
        raise SpecError(f"{where}.heldout.estimator: {exc}") from None
    if entry.kind != "likelihood":
        raise SpecError(f"{where}.heldout.estimator: {heldout['estimator']!r} is not a likelihood estimator")
    heldout_options = {k: v for k, v in heldout.items() if k not in ("estimator", "k")}
    _options(entry.obj, heldout_options, f"{where}.heldout", 3, also=("estimator", "k"))
    _constraints(entry.constraints, heldout_options, f"{where}.heldout.")
    _int(heldout["k"], f"{where}.heldout.k")
    variance = _fixed_table(
        _table(raw.get("gradient_variance", {}), f"{where}.gradient_variance"),
        GRADIENT_VARIANCE_KEYS,
        f"{where}.gradient_variance",
    )
    if "draws" in variance:
        _int(variance["draws"], f"{where}.gradient_variance.draws", 2)
    defaults = TrainingSpec  # the dataclass's own defaults
    return TrainingSpec(
        label=label,
        model=raw["model"],
        entries=entries,
        steps=raw.get("steps", defaults.steps),
        seconds=float(raw["seconds"]) if "seconds" in raw else None,
        lr=float(raw.get("lr", defaults.lr)),
        batch_size=raw.get("batch_size", defaults.batch_size),
        evaluations=evaluations,
        evaluate_at=evaluate_at,
        seeds=raw.get("seeds", defaults.seeds),
        train_points=raw.get("train_points", defaults.train_points),
        heldout_points=raw.get("heldout_points", defaults.heldout_points),
        heldout=heldout,
        start=raw.get("start", "init"),
        gradient_variance=variance,
        epsilon=float(raw.get("epsilon", defaults.epsilon)),
        cell_timeout=_timeout(raw.get("cell_timeout"), f"{where}.cell_timeout"),
    )


def _training_entry(name: str, raw: Any, objective: str, k: tuple[int, ...], where: str) -> TrainingEntry:
    from lvbench.analysis.learning import BASELINES

    options = dict(_table(raw, where))
    method = options.pop("estimator", name)
    objective = options.pop("objective", objective)
    k = _k_list(options.pop("k"), f"{where}.k") if "k" in options else k
    if method in BASELINES:
        given = sorted(set(_table(raw, where)) - {"estimator"})
        if given:
            raise SpecError(f"[{where}]: the baseline {method!r} takes no options, got {given}")
        return TrainingEntry(name, method, objective, (1,), {})
    try:
        entry = get_estimator(method)
    except LvbenchInputError as exc:
        raise SpecError(f"[{where}]: {exc} (or a baseline: {sorted(BASELINES)})") from None
    if entry.kind != "gradient":
        raise SpecError(f"[{where}]: {method!r} is a {entry.kind} estimator; a training study needs a gradient one")
    if objective not in entry.objectives:
        raise SpecError(f"{where}.objective: {method} estimates {list(entry.objectives)}, not {objective!r}")
    for runner in RUNNER_OPTIONS:
        if runner in options:
            raise SpecError(f"[{where}].{runner} is set by the runner, not by a spec")
    _options(entry.obj, options, f"[{where}]", 3, also=TRAINING_ENTRY_KEYS)
    _constraints(entry.constraints, options, f"{where}.")
    return TrainingEntry(name, method, objective, k, options)


def parse_spec(raw: dict[str, Any], base_dir: str = ".") -> Spec:
    """Validate a spec dict (as read from TOML)."""
    if not isinstance(raw, dict):
        raise SpecError(f"a spec is a table of tables, got {type(raw).__name__}")
    _check_plain(raw)
    unknown = set(raw) - {"run", "models", "estimators", "gradients", "training"}
    if unknown:
        raise SpecError(
            f"unknown top-level tables {sorted(unknown)}; expected run, models, estimators, gradients, training"
        )
    run = _run(_table(raw.get("run", {}), "run"))
    models = _table(raw.get("models", {}), "models")
    if not models:
        raise SpecError("the spec defines no [models.*]")
    estimators = _table(raw.get("estimators", {}), "estimators")
    gradients = _table(raw.get("gradients", {}), "gradients")
    training = _table(raw.get("training", {}), "training")
    if not estimators and not gradients and not training:
        raise SpecError("the spec defines no [estimators.*], [gradients.*] or [training.*]")
    spec = Spec(
        run=run,
        models=tuple(_model(label, m, run, base_dir) for label, m in models.items()),
        estimators=tuple(_estimator(label, e, "estimators") for label, e in estimators.items()),
        gradients=tuple(_estimator(label, g, "gradients") for label, g in gradients.items()),
        source=copy.deepcopy(raw),
        training=tuple(_training(label, t, models) for label, t in training.items()),
    )
    for es in spec.estimators + spec.gradients:
        unknown = set(es.models or ()) - set(models)
        if unknown:
            section = "estimators" if es.kind == "likelihood" else "gradients"
            raise SpecError(f"{section}.{es.label}.models names unknown model labels {sorted(unknown)}")
    return spec


#: How deep a spec's tables and arrays may nest (the default suite needs 4).
MAX_DEPTH = 32
PLAIN = (str, int, float, bool)


def _check_plain(raw: dict[str, Any]) -> None:
    """Refuse, naming the key, a value that is not a plain TOML string, number, boolean, array or table
    (a TOML date or time cannot be a cell's option: it has no canonical form in a content address), and
    nesting deeper than ``MAX_DEPTH`` (walked without recursion, so any depth gets this one line)."""
    stack: list[tuple[str, Any, int]] = [(key, value, 1) for key, value in raw.items()]
    while stack:
        where, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SpecError(f"{where}: the spec nests tables or arrays more than {MAX_DEPTH} deep")
        if isinstance(value, dict):
            stack += [(f"{where}.{key}", v, depth + 1) for key, v in value.items()]
        elif isinstance(value, list | tuple):
            stack += [(f"{where}[{i}]", v, depth + 1) for i, v in enumerate(value)]
        elif not isinstance(value, PLAIN) and value is not None:
            raise SpecError(
                f"{where} = {value!r}: a {type(value).__name__} is not a spec value; use a string, number, "
                "boolean, array or table"
            )


def read_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw dict of a TOML spec file (not yet validated)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SpecError(f"spec file not found: {path}")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise SpecError(f"{path}: its tables or arrays nest too deeply to read (at most {MAX_DEPTH})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec file {path}: {getattr(exc, 'strerror', None) or exc}") from None


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Read and validate a TOML spec file."""
    return parse_spec(read_spec(path), base_dir=os.path.dirname(os.path.abspath(os.fspath(path))))


def _toml_value(text: str) -> Any:
    """A --set value as TOML (5, 0.5, true, [1, 2], "x"), or the bare text as a string (float64)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise SpecError(f"--set value {text[:40]}...: nests too deeply (at most {MAX_DEPTH})") from None


def _registered(name: str) -> Entry | None:
    try:
        return get_estimator(name)
    except UnknownNameError:
        return None


def customize(
    raw: dict[str, Any],
    models: list[str] | None = None,
    estimators: list[str] | None = None,
    k: list[int] | None = None,
    sets: list[str] | None = None,
) -> dict[str, Any]:
    """A raw spec narrowed and changed from the command line or Python: keep only the ``models`` and
    ``estimators`` labels given (estimators covers [estimators.*], [gradients.*] and [training.*]; a
    registered estimator with no table gets one, for every model, when ``k`` is given), give every kept
    table the sample budgets ``k``, and apply ``sets`` ("run.repeats=5", "estimators.iwae.proposal=prior")."""
    raw = copy.deepcopy(raw)
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. run.repeats=5")
        *parents, leaf = key.strip().split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SpecError(f"--set {item!r}: {part!r} is not a table")
        node[leaf] = _toml_value(value.strip())
    tables = {name: _table(raw.get(name, {}), name) for name in ("models", "estimators", "gradients", "training")}
    if models is not None:
        for label in models:
            if label not in tables["models"]:
                hint = did_you_mean(label, tables["models"])
                raise SpecError(f"--models: the spec has no model {label!r}.{hint} It has {sorted(tables['models'])}")
        raw["models"] = {m: v for m, v in tables["models"].items() if m in models}
        for section in ("estimators", "gradients"):
            for label, table in list(raw.get(section, {}).items()):
                if isinstance(table, dict) and isinstance(table.get("models"), list):
                    kept = [m for m in table["models"] if m in models]
                    if kept:
                        table["models"] = kept
                    else:
                        del raw[section][label]
        for label, table in list(raw.get("training", {}).items()):
            if isinstance(table, dict) and table.get("model") not in models:
                del raw["training"][label]
    if estimators is not None:
        labels = {**tables["estimators"], **tables["gradients"], **tables["training"]}
        added = {}
        for label in estimators:
            if label in labels:
                continue
            entry = _registered(label)
            if entry is None:
                hint = did_you_mean(label, labels) or did_you_mean(label, ESTIMATORS.list())
                raise SpecError(
                    f"--estimators: {label!r} is neither a table of the spec nor a registered estimator.{hint} "
                    f"The spec has {sorted(labels)}; `lvbench list` shows the registered ones"
                )
            if k is None:
                raise SpecError(
                    f"--estimators: the spec has no table for the registered {entry.kind} estimator {label!r}; "
                    "give --k (e.g. --k 100) to run it at those budgets"
                )
            added[label] = "estimators" if entry.kind == "likelihood" else "gradients"
        for section in ("estimators", "gradients", "training"):
            raw[section] = {e: v for e, v in raw.get(section, {}).items() if e in estimators}
        for label, section in added.items():  # every model of the spec; k below
            raw[section][label] = {}
    if k is not None:
        for section in ("estimators", "gradients", "training"):
            for table in raw.get(section, {}).values():
                if isinstance(table, dict):
                    table["k"] = list(k)
    return raw


#: Specs shipped with lvbench, by name (``lvbench run --suite NAME``).
SUITES = ("default", "mnist")


def suite_path(name: str) -> str:
    """The file of a shipped suite: "default" (the default suite) or "mnist" (real MNIST digits)."""
    if name not in SUITES:
        raise SpecError(f"unknown suite {name!r}.{did_you_mean(name, SUITES)} Suites: {list(SUITES)}")
    return str(resources.files("lvbench.experiments").joinpath(f"{name}.toml"))


def default_spec_text() -> str:
    return resources.files("lvbench.experiments").joinpath("default.toml").read_text()


def default_spec_raw() -> dict[str, Any]:
    return tomllib.loads(default_spec_text())


def default_spec() -> Spec:
    """The default suite: both toy models and a VAE trained on the bundled digits."""
    return parse_spec(default_spec_raw())


def resolve_spec(
    spec: Spec | dict[str, Any] | str | os.PathLike[str] | None = None,
    models: Iterable[str] | None = None,
    estimators: Iterable[str] | None = None,
    k: Iterable[int] | None = None,
    sets: Iterable[str] | None = None,
) -> Spec:
    """The one way a spec is loaded (the command line and ``lvbench.run`` both come here): a TOML path, a
    dict as read from TOML, a ``Spec``, or None for the default suite, narrowed to the ``models`` and
    ``estimators`` labels, given the budgets ``k`` and changed by ``sets``, then validated."""
    base_dir = "."
    if isinstance(spec, Spec):
        if all(v is None for v in (models, estimators, k, sets)):
            return spec
        raw = spec.source
    elif spec is None:
        raw = default_spec_raw()
    elif isinstance(spec, dict):
        raw = spec
    else:
        raw, base_dir = read_spec(spec), os.path.dirname(os.path.abspath(os.fspath(spec)))
    listed = [None if v is None else list(v) for v in (models, estimators, k, sets)]
    return parse_spec(customize(raw, *listed), base_dir=base_dir)
