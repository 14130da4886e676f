"""Run experiments and read their results from Python, without the command line.

results = lvbench.run({"models": {...}, "estimators": {"iwae": {"k": [10, 100]}}})
results.summary                  # one row per likelihood cell: bias, std, RMSE, throughput, ...
results.gradient_summary         # one row per gradient study and parameter group
lvbench.load_results("results")  # the same from a folder written by `lvbench run`
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from typing import Any

from lvbench.reports.results import Results, load_results

__all__ = ["Results", "load_results", "run"]


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
    progress: bool | str = False,
    report: bool = False,
) -> Results:
    """Run a spec (a TOML path, a dict as read from TOML, a ``Spec``, or None for the default suite) into
    ``out``, resuming what is already there, and return its results. Without ``out`` the run works in a
    temporary folder that is removed once its results are read (``results.out_dir`` is then None): nothing
    is left behind, and nothing resumes. ``models``, ``estimators``, ``k`` and ``set`` narrow and change
    the spec as the command line's flags do; ``progress``: True for progress bars, "lines" for plain
    timestamped lines on stderr (a notebook's log), False for none; ``report=True`` also writes the
    HTML/Markdown report into ``out`` (so it needs one)."""
    from lvbench.core.errors import LvbenchInputError
    from lvbench.experiments import run_experiment
    from lvbench.experiments.spec import resolve_spec

    if report and out is None:
        raise LvbenchInputError("report=True writes the report into the output folder: give out=")
    spec = resolve_spec(spec, models, estimators, k, set)
    with contextlib.ExitStack() as stack:
        out_dir = (
            os.fspath(out) if out is not None else stack.enter_context(tempfile.TemporaryDirectory(prefix="lvbench-"))
        )
        counts = run_experiment(spec, out_dir, executor=executor, workers=workers, devices=devices, progress=progress)
        if report:
            from lvbench.reports import write_report

            write_report(out_dir)
        results = load_results(out_dir)
    results.counts = counts
    if out is None:
        results.out_dir = None
    return results
