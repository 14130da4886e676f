"""Run an experiment: plan the grid, prepare the models, run every cell not already done on an executor
(``executors``) and record each result as it finishes. Only the main process writes to the store;
Ctrl-C stops the run with every finished cell kept.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable

from tqdm.auto import tqdm

from lvbench.compute.provenance import machine_info, source_info
from lvbench.core.errors import LvbenchInputError
from lvbench.experiments.cells import Cell
from lvbench.experiments.executors import EXECUTORS, run_cells
from lvbench.experiments.lock import RunLock
from lvbench.experiments.measure_cell import progress_units, run_cell, torch_threads
from lvbench.experiments.plan import check_output_dir, plan_run, write_manifest
from lvbench.experiments.prepare import prepare_model
from lvbench.experiments.spec import Spec
from lvbench.experiments.store import ResultStore, atomic_write_json
from lvbench.experiments.train_cell import remove_training_state

__all__ = ["EXECUTORS", "machine_info", "run_cell", "run_experiment"]


def run_experiment(
    spec: Spec,
    out_dir: str,
    executor: str = "local",
    workers: int = 1,
    scheduler: str | None = None,
    devices: Iterable[str] | None = None,
    progress: bool | str = True,
) -> dict[str, int]:
    """Plan the grid, prepare the models, run every cell not already done, and record the results.
    ``progress``: True for progress bars (a terminal), "lines" for plain timestamped lines on stderr (a
    log: CI, nohup, a notebook), False for nothing.

    Holds the folder's lock throughout: a second run into the same folder stops at once.
    """
    if progress not in (True, False, "lines"):
        raise LvbenchInputError(f"progress must be True, False or 'lines', got {progress!r}")
    if executor not in EXECUTORS:
        raise LvbenchInputError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if workers < 1:
        raise LvbenchInputError(f"workers must be >= 1, got {workers}")
    check_output_dir(out_dir)
    with RunLock(out_dir):
        return _run_locked(spec, out_dir, executor, workers, scheduler, devices, progress)


class LogLines:
    """Progress as plain lines with the elapsed time, for output that is not a terminal: one per model
    prepared, and one per cell finished at most every ``every`` seconds (and for the first and last)."""

    def __init__(self, started: float, every: float = 15.0):
        self.started, self.every, self.last = started, every, -math.inf

    def __call__(self, text: str) -> None:
        elapsed = int(time.time() - self.started)
        print(f"[{elapsed // 60:3d}m{elapsed % 60:02d}s] {text}", file=sys.stderr, flush=True)

    def cell(self, finished: int, total: int, counts: dict[str, int], cell: Cell, status: str) -> None:
        now = time.time()
        if finished in (1, total) or now - self.last >= self.every:
            self.last = now
            self(
                f"cells {finished}/{total} ({counts['done']} done, {counts['failed']} failed); "
                f"last: {cell.describe()} ({status})"
            )


def _run_locked(spec, out_dir, executor, workers, scheduler, devices, progress) -> dict[str, int]:
    started = time.time()
    lines = LogLines(started) if progress == "lines" else None
    bars = progress is True
    plan = plan_run(spec, out_dir, tuple(devices) if devices else None)
    write_manifest(out_dir, spec, plan)
    store = ResultStore(out_dir)
    for cell, reason in plan.skipped:
        store.write(cell, "skipped", reason=reason)
    if lines:
        lines(
            f"{len(plan.cells)} cells: {len(plan.done)} already done, {len(plan.skipped)} skipped as "
            f"incompatible; preparing {len(spec.models)} model(s)"
        )
    with torch_threads(spec.run.threads):  # preparation too: its bits depend on the thread count
        for ms in tqdm(spec.models, desc="prepare models", disable=not bars, leave=False):
            before = time.time()
            key = prepare_model(ms, spec.run, out_dir, progress=bars)
            if key != plan.model_keys[ms.label]:  # a data or checkpoint file changed under the run
                raise LvbenchInputError(f"the inputs of model {ms.label!r} changed while the run started; rerun")
            if lines:
                lines(f"model {ms.label!r} ({ms.type}) ready in {time.time() - before:.1f} s")
    # again, now that every model file exists with its digest: a cell is done only for the very file it
    # was computed from, so a rebuilt or changed model recomputes exactly the cells made from it
    plan = plan_run(spec, out_dir, tuple(devices) if devices else None)
    write_manifest(out_dir, spec, plan)
    todo = plan.todo
    bar = tqdm(total=sum(progress_units(c) for c in todo), desc="cells", unit="step", disable=not bars)
    if lines:
        lines(f"running {len(todo)} cells ({executor} executor, {workers} worker(s))")
    ticked: dict[str, int] = {}

    def tick(cell: Cell, n: int) -> None:  # progress within a cell: the bar moves per repeat
        ticked[cell.id] = ticked.get(cell.id, 0) + n
        bar.set_postfix_str(f"running: {cell.describe()}"[:70], refresh=False)
        bar.update(n)

    results = run_cells(todo, out_dir, executor, workers, scheduler, tick)
    counts = {"done": 0, "failed": 0, "skipped": len(plan.skipped), "resumed": len(plan.done)}
    try:
        for cell, result in results:
            info = {"seconds": result["seconds"]}
            if "traceback" in result:
                info["traceback"] = result["traceback"]
            store.write(cell, result["status"], result["rows"], result["reason"], **info)
            if cell.kind == "training" and result["status"] == "done":
                remove_training_state(out_dir, cell.id)  # its curve is stored: the resume point is spent
            counts[result["status"]] += 1
            if lines:
                lines.cell(counts["done"] + counts["failed"], len(todo), counts, cell, result["status"])
            bar.update(progress_units(cell) - ticked.pop(cell.id, 0))
            bar.set_postfix_str(f"finished: {cell.describe()} ({result['status']})"[:70])
    finally:
        bar.close()
        results.close()
    record = {
        "machine": machine_info(spec.run.threads),
        "source": source_info(),
        "executor": executor,
        "workers": workers,
        "threads_per_cell": spec.run.threads,
        "seconds": time.time() - started,
        "counts": counts,
    }
    atomic_write_json(os.path.join(out_dir, "run.json"), record)
    return counts
