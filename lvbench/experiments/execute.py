"""Run cells and record them: in-process, on a pool of worker processes, or on a Dask cluster.

A cell runs ``repeats`` independent estimates per data point (likelihood) or R independent gradients
(gradient studies), after a warm-up, timing each repeat (with CUDA synchronisation on GPU) and
recording peak memory, with ``run.threads`` torch threads whatever the executor (so the bits of every
number are the same in-process, in a pool or on Dask). Anything the estimator raises (``SystemExit``
included), NaN or a wrongly shaped result marks the cell failed with the reason, and the run goes on;
a cell with a time limit runs in a worker process that is killed at the limit. Only the main process
writes to the store, as each cell finishes; Ctrl-C stops the run with every finished cell kept.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lvbench.errors import LvbenchInputError
from lvbench.estimators.gradient.fitted import fit_control
from lvbench.experiments.cells import Cell
from lvbench.experiments.identity import digest
from lvbench.experiments.isolate import CellWorker, failure, run_isolated
from lvbench.experiments.lock import RunLock
from lvbench.experiments.plan import check_output_dir, plan_run, write_manifest
from lvbench.experiments.prepare import load_prepared, prepare_model
from lvbench.experiments.spec import Spec
from lvbench.experiments.store import ResultStore, atomic_write_json
from lvbench.experiments.torch_state import guarded
from lvbench.gradient_analysis import analyze_gradients, draw_gradients
from lvbench.measure import PeakMemory, sync
from lvbench.metrics import effective_sample_size, pareto_khat
from lvbench.models.fused_mlp import cpu_matmul_backend
from lvbench.registry import get_estimator
from lvbench.seeding import seeded

__all__ = ["EXECUTORS", "machine_info", "run_cell", "run_cell_guarded", "run_experiment"]

EXECUTORS = ("local", "process", "dask")
#: Options of a gradient study that are not the estimator's (``analyze_gradients`` takes them).
STUDY_ONLY = ("reference", "reference_draws")


class CellFailure(RuntimeError):
    """The estimator misbehaved (NaN, wrong shape, ...): the cell is marked failed with this reason."""


def _diagnostics(cell: Cell, model, x: torch.Tensor, max_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pareto k-hat and ESS per point, for an estimator that declares its importance weights through the
    registry hook ``log_weights`` (model, x, k, **options) -> [k, N] (plugins included)."""
    nan = np.full(x.shape[0], np.nan)
    hook = get_estimator(cell.estimator_name).meta.get("log_weights")
    if hook is None or not 5 <= cell.k <= max_k:
        return nan, nan
    with torch.inference_mode():
        lw = hook(model, x, cell.k, **cell.options)
    if lw is None:
        return nan, nan
    lw = lw.T  # [N, k]
    return pareto_khat(lw).cpu().numpy(), effective_sample_size(lw).cpu().numpy()


def _check_estimate(est: object, n: int) -> None:
    if not isinstance(est, torch.Tensor) or est.shape != (n,):
        got = tuple(est.shape) if isinstance(est, torch.Tensor) else type(est).__name__
        raise CellFailure(f"estimator returned {got}, expected a tensor of shape ({n},)")
    if not est.is_floating_point():  # bool, integer or complex: no log p(x) a table can trust
        raise CellFailure(f"estimator returned a tensor of dtype {est.dtype}, expected a real floating-point one")
    if not torch.isfinite(est).all():
        bad = int((~torch.isfinite(est)).sum())
        raise CellFailure(f"estimator returned NaN or infinite values for {bad} of {n} points")


def _likelihood_cell(cell: Cell, prepared, device: torch.device, tick: Callable[[int], None]) -> pd.DataFrame:
    entry = get_estimator(cell.estimator_name)
    model, x = prepared.model, prepared.x
    opts = cell.options
    entry(model, x, num_samples=min(cell.k, 16), **opts)  # warm-up
    estimates, seconds, generator_states = [], [], set()
    for _ in range(cell.repeats):
        sync(device)
        start = time.perf_counter()
        est = entry(model, x, num_samples=cell.k, **opts)
        sync(device)
        seconds.append(time.perf_counter() - start)
        _check_estimate(est, x.shape[0])
        # a copy: an estimator may hand back the same buffer every call (a view would see only the last)
        estimates.append(est.detach().to("cpu", torch.float64).numpy().copy())
        generator_states.add(_generator_state(device))
        tick(1)
    with PeakMemory(device) as memory:  # one more, untimed run: memory profiling slows the CPU down
        entry(model, x, num_samples=cell.k, **opts)
    peak = memory.mb
    khat, ess = _diagnostics(cell, model, x, cell.diagnostics_max_k)
    r, n = len(estimates), x.shape[0]
    return pd.DataFrame(
        {
            "model": cell.model,
            "estimator": cell.estimator,
            "estimator_name": cell.estimator_name,
            "k": cell.k,
            "device": cell.device,
            "dtype": cell.dtype,
            "repeat": np.repeat(np.arange(r), n),
            "point": np.tile(np.arange(n), r),
            "estimate": np.concatenate(estimates),
            "reference": np.tile(prepared.reference.numpy(), r),
            "reference_se": np.tile(prepared.reference_se.numpy(), r),
            "reference_name": prepared.reference_name,
            "seconds": np.repeat(seconds, n),
            "peak_memory_mb": peak,
            "khat": np.tile(khat, r),
            "ess": np.tile(ess, r),
            "cell_id": cell.id,
            # the generator moved on between repeats: equal repeats are then a degenerate proposal's, not
            # an estimator that reseeds itself (or draws nothing)
            "fresh_draws": len(generator_states) > 1,
        }
    )


def _generator_state(device: torch.device) -> bytes:
    """The state of the random generator the estimator draws from on ``device``."""
    state = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.random.get_rng_state()
    return bytes(state.numpy())


def reference_seed(cell: Cell) -> int:
    """The seed of the Monte Carlo reference gradient of the cell's comparison: a function of (model,
    objective, k, device) alone, so every estimator compared there meets the very same reference."""
    return int(digest(["gradient reference", cell.model_key, cell.objective, cell.k, cell.device]), 16) % 2**31


def _fitted_control(cell: Cell, prepared, options: dict[str, Any]) -> dict[str, Any]:
    """For an estimator with a fitted control variate: fit it once, with a seed of its own (the draws must
    not reuse the noise it was fitted on), so the study and the memory measurement share it."""
    if get_estimator(cell.estimator_name).meta.get("fit") is None:
        return {}
    seed = int(digest(["control fit", cell.seed]), 16) % 2**31  # the cell seed: not the code digest
    with seeded(seed):
        control = fit_control(cell.estimator_name, prepared.model, prepared.x, cell.k, cell.objective, **options)
    return {"control": control}


def _gradient_cell(cell: Cell, prepared, device: torch.device) -> pd.DataFrame:
    draw_options = {k: v for k, v in cell.options.items() if k not in STUDY_ONLY}
    control = _fitted_control(cell, prepared, draw_options)
    table = analyze_gradients(
        prepared.model,
        prepared.x,
        cell.estimator_name,
        cell.k,
        objective=cell.objective,
        repeats=cell.repeats,
        seed=cell.seed,
        reference_seed=reference_seed(cell),
        **cell.options,
        **control,
    )
    draw_options.update(control)
    with PeakMemory(device) as memory:  # untimed: one vectorized batch of draws
        draw_gradients(
            prepared.model,
            prepared.x,
            cell.estimator_name,
            cell.k,
            min(cell.repeats, 64),
            cell.objective,
            **draw_options,
        )
    table.insert(0, "model", cell.model)
    table["estimator_name"] = table["estimator"]
    table["estimator"] = cell.estimator
    table["device"] = cell.device
    table["dtype"] = cell.dtype
    table["peak_memory_mb"] = memory.mb
    table["cell_id"] = cell.id
    numeric = table.select_dtypes("number")
    if not np.isfinite(numeric[["mean_norm", "trace_variance"]].to_numpy()).all():
        raise CellFailure("gradient draws contain NaN or infinite values")
    return table


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads, restoring the previous count after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _no_tick(n: int) -> None:
    pass


def progress_units(cell: Cell) -> int:
    """How many progress steps a cell reports: one per repeat of a likelihood cell, one per gradient study."""
    return cell.repeats if cell.kind == "likelihood" else 1


def run_cell(cell: Cell, out_dir: str, tick: Callable[[int], None] = _no_tick) -> dict[str, Any]:
    """Run one cell with ``cell.threads`` torch threads; never raises but for Ctrl-C. ``tick(n)`` is told
    of progress within the cell (each finished repeat). Returns {"status": "done"|"failed",
    "rows": DataFrame|None, "reason", "seconds", ["traceback"]}."""
    start = time.perf_counter()
    try:
        with torch_threads(cell.threads), guarded() as changed:
            device = torch.device(cell.device)
            if cell.matmul and cell.matmul != cpu_matmul_backend():
                raise LvbenchInputError(
                    f"this cell's id was made for CPU matmuls by {cell.matmul}, but this process has "
                    f"{cpu_matmul_backend()} (torch.backends.mkldnn enabled or not): its numbers would differ"
                )
            prepared = load_prepared(out_dir, cell.model_key, device, label=cell.model, sha256=cell.model_sha256)
            torch.manual_seed(cell.seed)
            if cell.kind == "likelihood":
                rows = _likelihood_cell(cell, prepared, device, tick)
            else:
                rows = _gradient_cell(cell, prepared, device)
        if changed:  # restored already; the numbers were computed under settings the id does not name
            raise CellFailure(f"the estimator changed torch's global settings ({'; '.join(changed)}); restored")
        return {"status": "done", "rows": rows, "reason": "", "seconds": time.perf_counter() - start}
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 — SystemExit too: whatever an estimator raises fails only its cell
        reason = f"{type(exc).__name__}: {exc}"
        return {
            "status": "failed",
            "rows": None,
            "reason": reason,
            "traceback": traceback.format_exc(limit=6),
            "seconds": time.perf_counter() - start,
        }


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


def source_info() -> dict[str, Any]:
    """The lvbench version and, for a git checkout, its commit (with a mark if it has local changes)."""
    import subprocess

    import lvbench

    here = os.path.dirname(os.path.abspath(lvbench.__file__))
    info: dict[str, Any] = {"lvbench": lvbench.__version__, "commit": None}
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip() + ("+local changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def machine_info() -> dict[str, Any]:
    """Where the numbers came from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_matmul": cpu_matmul_backend(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def run_experiment(
    spec: Spec,
    out_dir: str,
    executor: str = "local",
    workers: int = 1,
    scheduler: str | None = None,
    devices: Iterable[str] | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Plan the grid, prepare the models, run every cell not already done, and record the results.

    Holds the folder's lock throughout: a second run into the same folder stops at once.
    """
    if executor not in EXECUTORS:
        raise LvbenchInputError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if workers < 1:
        raise LvbenchInputError(f"workers must be >= 1, got {workers}")
    check_output_dir(out_dir)
    with RunLock(out_dir):
        return _run_locked(spec, out_dir, executor, workers, scheduler, devices, progress)


def _run_locked(spec, out_dir, executor, workers, scheduler, devices, progress) -> dict[str, int]:
    started = time.time()
    plan = plan_run(spec, out_dir, tuple(devices) if devices else None)
    write_manifest(out_dir, spec, plan)
    store = ResultStore(out_dir)
    for cell, reason in plan.skipped:
        store.write(cell, "skipped", reason=reason)
    with torch_threads(spec.run.threads):  # preparation too: its bits depend on the thread count
        for ms in tqdm(spec.models, desc="prepare models", disable=not progress, leave=False):
            key = prepare_model(ms, spec.run, out_dir, progress=progress)
            if key != plan.model_keys[ms.label]:  # a data or checkpoint file changed under the run
                raise LvbenchInputError(f"the inputs of model {ms.label!r} changed while the run started; rerun")
    # again, now that every model file exists with its digest: a cell is done only for the very file it
    # was computed from, so a rebuilt or changed model recomputes exactly the cells made from it
    plan = plan_run(spec, out_dir, tuple(devices) if devices else None)
    write_manifest(out_dir, spec, plan)
    todo = plan.todo
    bar = tqdm(total=sum(progress_units(c) for c in todo), desc="cells", unit="step", disable=not progress)
    ticked: dict[str, int] = {}

    def tick(cell: Cell, n: int) -> None:  # progress within a cell: the bar moves per repeat
        ticked[cell.id] = ticked.get(cell.id, 0) + n
        bar.set_postfix_str(f"running: {cell.describe()}"[:70], refresh=False)
        bar.update(n)

    if executor == "local":
        results = _run_local(todo, out_dir, tick)
    elif executor == "process":
        results = run_isolated(todo, (out_dir,), workers, tick)
    else:
        results = _run_dask(todo, out_dir, workers, scheduler)
    counts = {"done": 0, "failed": 0, "skipped": len(plan.skipped), "resumed": len(plan.done)}
    try:
        for cell, result in results:
            info = {"seconds": result["seconds"]}
            if "traceback" in result:
                info["traceback"] = result["traceback"]
            store.write(cell, result["status"], result["rows"], result["reason"], **info)
            counts[result["status"]] += 1
            bar.update(progress_units(cell) - ticked.pop(cell.id, 0))
            bar.set_postfix_str(f"finished: {cell.describe()} ({result['status']})"[:70])
    finally:
        bar.close()
        results.close()
    record = {
        "machine": machine_info(),
        "source": source_info(),
        "executor": executor,
        "workers": workers,
        "threads_per_cell": spec.run.threads,
        "seconds": time.time() - started,
        "counts": counts,
    }
    atomic_write_json(os.path.join(out_dir, "run.json"), record)
    return counts
