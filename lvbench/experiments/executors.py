"""Where cells run: in this process (a cell with a time limit in a kept worker process, killed at the
limit), on a pool of worker processes (``isolate``), or on a Dask cluster. Each yields (cell, result) as
cells finish; a dead worker fails only its cell."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from lvbench.core.errors import LvbenchInputError
from lvbench.experiments.cells import Cell
from lvbench.experiments.isolate import CellWorker, failure, run_isolated
from lvbench.experiments.measure_cell import _no_tick, run_cell

__all__ = ["EXECUTORS", "run_cell_guarded", "run_cells"]

EXECUTORS = ("local", "process", "dask")


_WORKER: CellWorker | None = None


def run_cell_guarded(cell: Cell, out_dir: str, tick: Callable[[int], None] = _no_tick) -> dict[str, Any]:
    """``run_cell`` in this process, or, for a cell with a time limit, in a worker process of this
    process that is killed at the limit (kept between cells)."""
    global _WORKER
    if cell.timeout is None:
        return run_cell(cell, out_dir, tick)
    if _WORKER is None:
        _WORKER = CellWorker()
    return _WORKER.run(cell, (out_dir,), tick)


def _run_local(cells: list[Cell], out_dir: str, tick: Callable[[Cell, int], None]) -> Iterator[tuple[Cell, dict]]:
    try:
        for cell in cells:
            yield cell, run_cell_guarded(cell, out_dir, lambda n, c=cell: tick(c, n))
    finally:
        _close_worker()


def _close_worker() -> None:
    global _WORKER
    if _WORKER is not None:
        _WORKER.close()
        _WORKER = None


def _run_dask(cells: list[Cell], out_dir: str, workers: int, scheduler: str | None) -> Iterator[tuple[Cell, dict]]:
    try:
        from dask.distributed import Client, LocalCluster
        from dask.distributed import as_completed as dask_completed
    except ImportError:
        raise LvbenchInputError("--executor dask needs dask.distributed: pip install 'lvbench[dask]'") from None
    import dask

    if not cells:
        return
    cluster = None
    # a cell that kills its worker fails only itself: no retry on another worker (which it would kill too)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        if scheduler:
            client = Client(scheduler)
        else:
            n = min(workers, len(cells))
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
    try:
        futures = client.map(run_cell_guarded, cells, out_dir=out_dir, pure=False, retries=0)
        by_key = {f.key: c for f, c in zip(futures, cells, strict=True)}
        for fut in dask_completed(futures):
            cell = by_key[fut.key]
            try:
                yield cell, fut.result()
            except Exception as exc:  # noqa: BLE001 — KilledWorker and the like: the cell's process died
                reason = f"the Dask worker running the cell died or failed ({type(exc).__name__}: {exc})"
                yield cell, failure(reason, math.nan)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_cells(
    cells: list[Cell],
    out_dir: str,
    executor: str,
    workers: int,
    scheduler: str | None,
    tick: Callable[[Cell, int], None],
) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """(cell, result) for each of ``cells`` as it finishes, on ``executor``."""
    if executor == "local":
        return _run_local(cells, out_dir, tick)
    if executor == "process":
        return run_isolated(cells, (out_dir,), workers, tick)
    return _run_dask(cells, out_dir, workers, scheduler)
