"""A finished (or partial) run's results as DataFrames: exactly the current spec's cells, each verified
against its checksums and the model file it was computed from; a cell without a trustworthy result is
listed as missing, never dropped."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

from lvbench.core.errors import LvbenchInputError
from lvbench.experiments.plan import expected_models, read_manifest
from lvbench.experiments.store import ResultStore
from lvbench.reports.tables import gradient_summary, likelihood_summary

__all__ = ["Results", "load_results", "with_missing"]


@dataclass
class Results:
    """The current spec's results in an output folder, as DataFrames."""

    out_dir: str | None  # None: read from a temporary folder since removed (``lvbench.run`` without ``out``)
    rows: pd.DataFrame  # raw likelihood estimates: one row per (cell, repeat, point)
    gradient_rows: pd.DataFrame  # raw gradient-study rows: one per (cell, parameter group)
    summary: pd.DataFrame  # per likelihood cell
    gradient_summary: pd.DataFrame  # per gradient study and group (theta, phi)
    statuses: pd.DataFrame  # every cell of the spec: done, skipped (with the reason), failed, missing
    counts: dict[str, int] = field(default_factory=dict)  # of the run that produced this, if any
    #: training studies' learning curves, tidy: one row per (cell, evaluation step, metric) with the step's
    #: training seconds and model evaluations, the value and its standard error over points
    training: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __repr__(self) -> str:
        by_status = self.statuses["status"].value_counts().to_dict() if not self.statuses.empty else {}
        return f"Results({self.out_dir!r}, cells={by_status})"


def load_results(out_dir: str | os.PathLike[str]) -> Results:
    """The results of the current spec in ``out_dir`` (a folder written by ``lvbench run`` or ``run``)."""
    out_dir = os.fspath(out_dir)
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise LvbenchInputError(f"{out_dir} is not an lvbench output folder (no readable manifest.json)")
    store = ResultStore(out_dir)
    ids = list(manifest["cells"])
    models = expected_models(out_dir, manifest)
    rows, grad_rows = store.rows("likelihood", ids, models), store.rows("gradient", ids, models)
    return Results(
        out_dir=out_dir,
        rows=rows,
        gradient_rows=grad_rows,
        summary=likelihood_summary(rows),
        gradient_summary=gradient_summary(grad_rows),
        statuses=with_missing(store.statuses(ids), store, manifest["cells"], models),
        training=store.rows("training", ids, models),
    )


def with_missing(
    statuses: pd.DataFrame, store: ResultStore, cells: dict[str, dict], models: dict[str, str]
) -> pd.DataFrame:
    """Statuses of the current cells, with those whose rows or status do not read back (or that never
    ran) marked missing: a cell never silently vanishes from a report."""
    reason = "no trustworthy result (never ran, interrupted, or its files are missing or corrupt): rerun the spec"
    ok = {i for i in cells if store.verified(i, quiet=True, model_sha256=models.get(i, "")) is not None}
    records = statuses.to_dict("records") if not statuses.empty else []
    for record in records:
        if record["status"] == "done" and record["id"] not in ok:
            record.update(status="missing", reason=reason)
    seen = {r["id"] for r in records}
    records += [{"id": i, **what, "status": "missing", "reason": reason} for i, what in cells.items() if i not in seen]
    return pd.DataFrame(records)
