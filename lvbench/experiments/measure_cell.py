"""Run one cell and measure it: ``repeats`` independent estimates per data point (likelihood) or R
independent gradients (gradient studies), after a warm-up, timing each repeat (with CUDA synchronisation
on GPU) and recording peak memory, with ``cell.threads`` torch threads. Anything the estimator raises
(``SystemExit`` included), NaN or a wrongly shaped result marks the cell failed with the reason.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from lvbench.analysis.gradient_analysis import analyze_gradients, draw_gradients
from lvbench.analysis.learning import EvaluationCounter
from lvbench.analysis.metrics import effective_sample_size, pareto_khat
from lvbench.compute.matmul import cpu_matmul_backend
from lvbench.compute.measure import PeakMemory, sync
from lvbench.compute.torch_state import guarded, torch_threads
from lvbench.core.errors import LvbenchInputError
from lvbench.core.registry import get_estimator
from lvbench.core.seeding import seeded
from lvbench.estimators.gradient.fitted import fit_control
from lvbench.experiments.cells import Cell
from lvbench.experiments.identity import digest
from lvbench.experiments.prepare import load_prepared

__all__ = ["CellFailure", "progress_units", "run_cell", "torch_threads"]

#: Options of a gradient study that are not the estimator's (``analyze_gradients`` takes them).
STUDY_ONLY = ("reference", "reference_draws")


class CellFailure(RuntimeError):
    """The estimator misbehaved (NaN, wrong shape, ...): the cell is marked failed with this reason."""


def _diagnostics(cell: Cell, model, x: torch.Tensor, max_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pareto k-hat and ESS per point, for an estimator that declares its importance weights through the
    registry hook ``log_weights`` (model, x, k, **options) -> [k, N] (plugins included)."""
    nan = np.full(x.shape[0], np.nan)
    hook = get_estimator(cell.estimator_name).log_weights
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
    estimates, seconds, evaluations, generator_states = [], [], [], set()
    for _ in range(cell.repeats):
        with EvaluationCounter(model) as counter, counter.counting():  # the cost, counted: (z, x) pairs
            sync(device)
            start = time.perf_counter()
            est = entry(model, x, num_samples=cell.k, **opts)
            sync(device)
            seconds.append(time.perf_counter() - start)
        evaluations.append(counter.count / x.shape[0])
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
            # model evaluations per point of this repeat's estimate, counted: the cost that makes budgets
            # comparable across estimators (an AIS chain costs its transitions' leapfrog steps, SUMO varies)
            "evaluations": np.repeat(evaluations, n),
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


def _fitted_control(cell: Cell, prepared, options: dict[str, Any]) -> dict[str, Any]:
    """For an estimator with a fitted control variate: fit it once, with a seed of its own (the draws must
    not reuse the noise it was fitted on), so the study and the memory measurement share it."""
    if get_estimator(cell.estimator_name).fit is None:
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
        reference_seed=cell.reference_seed,
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


def _no_tick(n: int) -> None:
    pass


def progress_units(cell: Cell) -> int:
    """How many progress steps a cell reports: one per repeat of a likelihood cell, one per evaluation of
    a training cell, one per gradient study."""
    if cell.kind == "training":
        return len(cell.options["study"]["eval_steps"])
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
                    f"{cpu_matmul_backend()} (see lvbench calibrate, $LVBENCH_KERNELS, torch.backends.mkldnn): "
                    "its numbers would differ"
                )
            prepared = load_prepared(out_dir, cell.model_key, device, label=cell.model, sha256=cell.model_sha256)
            torch.manual_seed(cell.seed)
            if cell.kind == "likelihood":
                rows = _likelihood_cell(cell, prepared, device, tick)
            elif cell.kind == "training":
                from lvbench.experiments.train_cell import run_training_cell

                rows = run_training_cell(cell, prepared, device, out_dir, tick)
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
