"""A spec expands into cells — model × estimator × k × device (× objective for gradient studies; a
training study's cells are estimator × objective × k × seed × device).

A cell's identity (``Cell.id``) is a digest of everything that determines its numbers: the prepared
model's content address (its full configuration: type, parameters, data, training, reference, run
seed, dtype), the estimator and all its options, k, objective, device, dtype, repeats, the thread
count, the diagnostics setting, the lvbench version with a digest of its source, and the estimator's
code identity (distribution, version, source digest: an edited plugin recomputes its cells). Each
cell has its own seed derived from the run seed and the cell's place in the grid, so results do not
depend on the order or the process in which cells run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from lvbench.compute.matmul import cpu_matmul_backend
from lvbench.core.code_identity import lvbench_version
from lvbench.core.options import signature_options
from lvbench.core.registry import get_estimator, incompatibility
from lvbench.experiments.identity import digest
from lvbench.experiments.spec import Spec, TrainingSpec, dataset_options

__all__ = ["Cell", "expand", "training_replicate"]

#: Cell fields that cannot change a number (the model file's digest is checked apart, against the store)
NOT_IDENTITY = ("timeout", "model_sha256")


def training_replicate(kind: str, options_json: str) -> int | None:
    """The replicate of a training cell from its ``options_json`` (as stored in its status record)."""
    return int(json.loads(options_json)["study"]["replicate"]) if kind == "training" else None


@dataclass(frozen=True)
class Cell:
    kind: str  # "likelihood", "gradient" or "training"
    model: str  # model label
    model_key: str  # content address of the prepared model
    estimator: str  # estimator label in the spec
    estimator_name: str  # registered estimator
    k: int
    device: str
    repeats: int
    options_json: str  # sorted JSON of the estimator's options
    objective: str | None
    seed: int
    #: gradient studies: the seed of the Monte Carlo reference gradient of the cell's comparison, a
    #: function of (run seed, model, objective, k, device) alone, so every estimator compared there meets
    #: the very same reference, and free of code digests, so a change of code that changes no number
    #: (a move, a comment) draws the same reference; 0 for likelihood cells. Training cells: the seed of
    #: the replicate's initialization and minibatch order, the same for every method of the study (a
    #: paired comparison)
    reference_seed: int
    dtype: str
    threads: int
    diagnostics_max_k: int  # likelihood cells: k-hat/ESS recorded up to this k (0 for gradient studies)
    lvbench: str  # version and source digest of the lvbench that computes the numbers
    #: digest of the estimator's code identity (distribution, version, source): an edited plugin's
    #: cells get new ids
    code: str
    #: CPU cells: the kernels of float32 matmuls and Bernoulli terms (``cpu_matmul_backend``, e.g.
    #: "onednn/aten/bce", or "eager"), whose rounding differs; "" on other devices
    matmul: str
    #: seconds the cell may run (None: no limit); not part of the identity: it cannot change a number
    timeout: float | None = field(default=None, compare=False)
    #: SHA-256 of the prepared model's file the cell is computed from, known once it is prepared: not
    #: part of the id (the model's content address is), but a done cell counts only for this very file
    model_sha256: str = field(default="", compare=False)
    #: training cells: the study's label ([training.NAME]); "" for other cells
    study: str = ""

    @property
    def options(self) -> dict[str, Any]:
        return json.loads(self.options_json)

    @property
    def replicate(self) -> int | None:
        """A training cell's replicate (which seed of its study), None for other cells."""
        return training_replicate(self.kind, self.options_json)

    @property
    def id(self) -> str:
        return digest({k: v for k, v in asdict(self).items() if k not in NOT_IDENTITY})

    def describe(self) -> str:
        obj = f" {self.objective}" if self.objective else ""
        if self.kind == "training":
            replicate = self.options["study"]["replicate"]
            return f"{self.study}: {self.model} × {self.estimator}{obj} × k={self.k} × seed {replicate} × {self.device}"
        return f"{self.model} × {self.estimator}{obj} × k={self.k} × {self.device}"


def _seed(run_seed: int, parts: tuple) -> int:
    digest_ = hashlib.sha256(json.dumps([run_seed, *parts]).encode()).hexdigest()
    return int(digest_[:8], 16)


def expand(
    spec: Spec, models: dict[str, Any], model_keys: dict[str, str], devices: tuple[str, ...] | None = None
) -> tuple[list[Cell], list[tuple[Cell, str]]]:
    """(cells to run, [(cell, reason)] skipped as incompatible). ``models`` maps labels to model instances
    (read only for their capabilities: an untrained instance will do), ``model_keys`` labels to the
    content addresses of the prepared models."""
    run = spec.run
    version = lvbench_version()
    cells, skipped = [], []
    for ms in spec.models:
        model = models[ms.label]
        for group in (spec.estimators, spec.gradients):
            for es in group:
                if es.models is not None and ms.label not in es.models:
                    continue
                entry = get_estimator(es.estimator)
                options = dict(es.options)
                params, takes_any = signature_options(entry.obj, 3)
                if es.kind == "likelihood" and "proposal" not in options and (takes_any or "proposal" in params):
                    options["proposal"] = ms.proposal
                for device in devices or run.devices:
                    for k in es.k:
                        parts = (es.kind, ms.label, es.label, k, device, es.objective, sorted(options.items()))
                        cell = Cell(
                            kind=es.kind,
                            model=ms.label,
                            model_key=model_keys[ms.label],
                            estimator=es.label,
                            estimator_name=es.estimator,
                            k=k,
                            device=device,
                            repeats=es.repeats or (run.repeats if es.kind == "likelihood" else 100),
                            options_json=json.dumps(options, sort_keys=True),
                            objective=es.objective,
                            seed=_seed(run.seed, parts),
                            reference_seed=(
                                _seed(run.seed, ("gradient reference", ms.label, es.objective, k, device))
                                if es.kind == "gradient"
                                else 0
                            ),
                            dtype=run.dtype,
                            threads=run.threads,
                            diagnostics_max_k=run.diagnostics_max_k if es.kind == "likelihood" else 0,
                            lvbench=version,
                            code=digest(entry.code),
                            matmul=cpu_matmul_backend(run.threads) if device.startswith("cpu") else "",
                            timeout=es.cell_timeout if es.cell_timeout is not None else run.cell_timeout,
                        )
                        check = {"num_samples": k, **options}
                        if es.objective:
                            check["objective"] = es.objective
                        reason = incompatibility(entry, model, **check)
                        (skipped.append((cell, reason)) if reason else cells.append(cell))
    for study in spec.training:
        ms = next(m for m in spec.models if m.label == study.model)
        for cell, reason in _training_cells(spec, study, ms, models[ms.label], model_keys[ms.label], devices, version):
            (skipped.append((cell, reason)) if reason else cells.append(cell))
    return cells, skipped


def _training_cells(spec: Spec, study: TrainingSpec, ms, model, key: str, devices, version: str):
    """(cell, reason it cannot run or None) for each method × k × seed × device of a training study."""
    from lvbench.analysis.learning import BASELINES, evaluation_steps

    run = spec.run
    if ms.dataset is not None:
        data = {"dataset": ms.dataset, "options": dataset_options(ms), "heldout_seed": run.seed}
    else:  # simulated from the prepared (true) model: one training and one held-out set per study
        data = {"simulate": True, "seed": _seed(run.seed, ("training data", study.label))}
    settings = {
        "steps": study.steps,
        "seconds": study.seconds,
        "lr": study.lr,
        "batch_size": study.batch_size,
        "eval_steps": (
            sorted({0, study.steps, *study.evaluate_at})
            if study.evaluate_at is not None
            else list(evaluation_steps(study.steps, study.evaluations))
        ),
        "train_points": study.train_points,
        "heldout_points": study.heldout_points,
        "heldout": study.heldout,
        "start": study.start,
        "gradient_variance": study.gradient_variance,
        "data": data,
    }
    for entry in study.entries:
        baseline = entry.method in BASELINES
        registered = None if baseline else get_estimator(entry.method)
        for device in devices or run.devices:
            for k in entry.k:
                for replicate in range(study.seeds):
                    parts = ("training", study.label, entry.label, k, device, entry.objective, replicate)
                    options = {"estimator": entry.options, "study": {**settings, "replicate": replicate}}
                    cell = Cell(
                        kind="training",
                        model=ms.label,
                        model_key=key,
                        estimator=entry.label,
                        estimator_name=entry.method,
                        k=k,
                        device=device,
                        repeats=1,
                        options_json=json.dumps(options, sort_keys=True),
                        objective=entry.objective,
                        seed=_seed(run.seed, parts),
                        reference_seed=_seed(run.seed, ("training replicate", study.label, replicate)),
                        dtype=run.dtype,
                        threads=run.threads,
                        diagnostics_max_k=0,
                        lvbench=version,
                        code="" if baseline else digest(registered.code),
                        matmul=cpu_matmul_backend(run.threads) if device.startswith("cpu") else "",
                        timeout=study.cell_timeout if study.cell_timeout is not None else run.cell_timeout,
                        study=study.label,
                    )
                    yield cell, _training_incompatibility(entry.method, registered, model, k, entry)


def _training_incompatibility(method: str, registered, model, k: int, entry) -> str | None:
    from lvbench.analysis.learning import BASELINES
    from lvbench.models.gaussian_mixture import GaussianMixture

    if registered is None:
        ok = isinstance(model, GaussianMixture)
        return None if ok else f"{method} needs {BASELINES[method]}, not a {type(model).__name__}"
    if registered.fit is not None:
        return (
            f"{method} fits its control variate at one frozen parameter (registry hook `fit`); training "
            "studies do not refit it as the model moves, so they do not train with it"
        )
    return incompatibility(registered, model, num_samples=k, objective=entry.objective, **entry.options)
