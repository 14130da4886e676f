"""Run experiments and read their results from Python, without the command line.

results = lvbench.run({"models": {...}, "estimators": {"iwae": {"k": [10, 100]}}})
results.summary                  # one row per likelihood cell: bias, std, RMSE, throughput, ...
results.gradient_summary         # one row per gradient study and parameter group
lvbench.load_results("results")  # the same from a folder written by `lvbench run`
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = ["Results", "load_results", "run"]


@dataclass
class Results:
    """The current spec's results in an output folder, as DataFrames."""

    out_dir: str
    rows: pd.DataFrame  # raw likelihood estimates: one row per (cell, repeat, point)
    gradient_rows: pd.DataFrame  # raw gradient-study rows: one per (cell, parameter group)
    summary: pd.DataFrame  # per likelihood cell
    gradient_summary: pd.DataFrame  # per gradient study and group (theta, phi)
    statuses: pd.DataFrame  # every cell of the spec: done, skipped (with the reason), failed, missing
    counts: dict[str, int] = field(default_factory=dict)  # of the run that produced this, if any

    def __repr__(self) -> str:
        by_status = self.statuses["status"].value_counts().to_dict() if not self.statuses.empty else {}
        return f"Results({self.out_dir!r}, cells={by_status})"


def load_results(out_dir: str | os.PathLike[str]) -> Results:
    """The results of the current spec in ``out_dir`` (a folder written by ``lvbench run`` or ``run``)."""
    from lvbench.errors import LvbenchInputError
    from lvbench.experiments import ResultStore, read_manifest
    from lvbench.experiments.plan import expected_models
    from lvbench.reports.render import with_missing
    from lvbench.reports.tables import gradient_summary, likelihood_summary

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
    )


def run(
    spec: Any = None,
    out: str | os.PathLike[str] | None = None,
    *,
    models: Iterable[str] | None = None,
    estimators: Iterable[str] | None = None,
    k: Iterable[int] | None = None,
    set: Iterable[str] | None = None,  # noqa: A002 — the command line's --set
    executor: str = "local",
    workers: int = 1,
    devices: Iterable[str] | None = None,
    progress: bool = False,
    report: bool = False,
) -> Results:
    """Run a spec (a TOML path, a dict as read from TOML, a ``Spec``, or None for the default suite) into
    ``out`` (default: a new temporary folder), resuming what is already there, and return its results.
    ``models``, ``estimators``, ``k`` and ``set`` narrow and change the spec as the command line's
    flags do; ``report=True`` also writes the HTML/Markdown report."""
    from lvbench.experiments import Spec, run_experiment
    from lvbench.experiments.spec import customize, default_spec_raw, parse_spec, read_spec

    base_dir = "."
    if isinstance(spec, Spec):
        if any(v is not None for v in (models, estimators, k, set)):
            raw = spec.source
        else:
            raw = None
    elif spec is None:
        raw = default_spec_raw()
    elif isinstance(spec, dict):
        raw = spec
    else:
        raw, base_dir = read_spec(spec), os.path.dirname(os.path.abspath(os.fspath(spec)))
    if raw is not None:
        raw = customize(
            raw,
            list(models) if models is not None else None,
            list(estimators) if estimators is not None else None,
            list(k) if k is not None else None,
            list(set) if set is not None else None,
        )
        spec = parse_spec(raw, base_dir=base_dir)
    out_dir = os.fspath(out) if out is not None else tempfile.mkdtemp(prefix="lvbench-")
    counts = run_experiment(spec, out_dir, executor=executor, workers=workers, devices=devices, progress=progress)
    if report:
        from lvbench.reports import write_report

        write_report(out_dir)
    results = load_results(out_dir)
    results.counts = counts
    return results
