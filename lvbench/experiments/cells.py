"""A spec expands into cells — model × estimator × k × device (× objective for gradient studies).

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
from lvbench.experiments.spec import Spec

__all__ = ["Cell", "expand"]

#: Cell fields that cannot change a number (the model file's digest is checked apart, against the store)
NOT_IDENTITY = ("timeout", "model_sha256")


@dataclass(frozen=True)
class Cell:
    kind: str  # "likelihood" or "gradient"
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
    #: (a move, a comment) draws the same reference; 0 for likelihood cells
    reference_seed: int
    dtype: str
    threads: int
    diagnostics_max_k: int  # likelihood cells: k-hat/ESS recorded up to this k (0 for gradient studies)
    lvbench: str  # version and source digest of the lvbench that computes the numbers
    #: digest of the estimator's code identity (distribution, version, source): an edited plugin's
    #: cells get new ids
    code: str
    #: CPU cells: the library of float32 matmuls ("onednn" or "aten", ``cpu_matmul_backend``), whose
    #: rounding differs; "" on other devices
    matmul: str
    #: seconds the cell may run (None: no limit); not part of the identity: it cannot change a number
    timeout: float | None = field(default=None, compare=False)
    #: SHA-256 of the prepared model's file the cell is computed from, known once it is prepared: not
    #: part of the id (the model's content address is), but a done cell counts only for this very file
    model_sha256: str = field(default="", compare=False)

    @property
    def options(self) -> dict[str, Any]:
        return json.loads(self.options_json)

    @property
    def id(self) -> str:
        return digest({k: v for k, v in asdict(self).items() if k not in NOT_IDENTITY})

    def describe(self) -> str:
        obj = f" {self.objective}" if self.objective else ""
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
                            matmul=cpu_matmul_backend() if device.startswith("cpu") else "",
                            timeout=es.cell_timeout if es.cell_timeout is not None else run.cell_timeout,
                        )
                        check = {"num_samples": k, **options}
                        if es.objective:
                            check["objective"] = es.objective
                        reason = incompatibility(entry, model, **check)
                        (skipped.append((cell, reason)) if reason else cells.append(cell))
    return cells, skipped
