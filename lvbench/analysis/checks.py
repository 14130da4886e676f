"""``lvbench check NAME``: the property tests lvbench runs on its own estimators, for any registered one.

On small models with exact ground truth (linear-Gaussian with its closed-form log p(x) and gradients, a
Gaussian mixture by enumeration), for every model the estimator is compatible with:
- contract: a likelihood estimate is a real floating-point tensor of shape [N], finite, on x's device
  (CUDA too where present); a gradient surrogate is a differentiable real scalar;
- determinism: the same seed gives the same bits; different seeds do not (an estimator that reseeds
  itself would report a spread of 0);
- declared properties against exact ground truth, 5 standard errors from the estimator's own draws
  (400 repeats, or as many as 20 s per model allow, at least 30):
  ``lower_bound``, ``unbiased_log``, ``unbiased_p`` (``lvbench.declared``), and for gradient estimators
  ``unbiased`` (for the objectives it declares, e.g. STL for the ELBO only): every coordinate of the mean
  of 2,000 draws within 5 SE of the exact gradient.
- torch's global settings (oneDNN, determinism, default dtype, validation, ...) as the estimator found
  them: a change is reported and undone;
- memory flat in k (likelihood estimators): on a 20-dimensional linear-Gaussian model, the peak extra
  memory at k = 10⁶ exceeds that at k = 10⁴ by less than one unstreamed [k, N, D] float32 tensor would
  hold (160 MB for N = 2): an estimator that keeps all k samples fails, one streaming in chunks within
  the memory budget (64 MiB on the CPU) passes. Skipped where k = 10⁶ would take over a minute.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from lvbench.analysis.declared import Z_VIOLATION, ratio_z
from lvbench.analysis.metrics import summarize_estimates
from lvbench.compute.torch_state import guarded
from lvbench.core.registry import get_estimator, incompatibility
from lvbench.core.seeding import seeded

__all__ = ["FULL", "QUICK", "Scale", "check_estimator"]

#: Repeats for the declared likelihood properties: up to REPEATS, fewer (at least MIN_REPEATS) where they
#: would take more than REPEAT_SECONDS per model (AIS's chains cost hundreds of gradient steps each);
#: the test's SE comes from the repeats drawn, so fewer repeats make it weaker, never wrong.
REPEATS, MIN_REPEATS, REPEAT_SECONDS = 400, 30, 20.0
DRAWS = 2000


@dataclass(frozen=True)
class Scale:
    """How much evidence a check gathers: likelihood repeats (at most ``repeats``, at least
    ``min_repeats``, for up to ``seconds`` per model), gradient draws, and whether memory is measured."""

    repeats: int = REPEATS
    min_repeats: int = MIN_REPEATS
    seconds: float = REPEAT_SECONDS
    draws: int = DRAWS
    memory: bool = True


#: ``lvbench check``'s scale, and the test suite's (every registered estimator, each declared property,
#: within minutes on 2 cores: fewer repeats make a 5 SE test weaker, never wrong).
FULL, QUICK = Scale(), Scale(repeats=100, min_repeats=10, seconds=1.0, draws=400, memory=False)
#: The two budgets of the memory check, its model's data dimension and points, and its time limit.
SMALL_K, LARGE_K, MEMORY_DIM, MEMORY_POINTS, MEMORY_SECONDS = 10**4, 10**6, 20, 2, 60.0


def _models() -> dict[str, torch.nn.Module]:
    from lvbench.analysis.training import fit_encoder
    from lvbench.models import BinaryVAE, GaussianMixture, LinearGaussian

    lg = LinearGaussian.random(data_dim=4, latent_dim=2, seed=0, dtype=torch.float64)
    mix = GaussianMixture.random(2, 3, separation=1.5, seed=0, dtype=torch.float64)
    with seeded(0):
        sbn = BinaryVAE(6, 3, (5,)).double()  # 8 latent configurations: exact log p(x) and gradients
        for model in (lg, mix):  # an imperfect amortized proposal, as in a real benchmark
            x, _ = model.sample(64)
            fit_encoder(model, x, steps=30, seed=0)
    return {"linear_gaussian": lg, "gaussian_mixture": mix, "sigmoid_belief_net": sbn}


def _row(check: str, model: str, ok: bool | None, detail: str) -> dict:
    return {
        "check": check,
        "model": model,
        "result": {True: "pass", False: "FAIL", None: "skipped"}[ok],
        "detail": detail,
    }


def _seeded(fn: Callable[[], torch.Tensor], seed: int) -> torch.Tensor:
    with seeded(seed):
        out = fn()
        return out.clone() if isinstance(out, torch.Tensor) else out  # a reused output buffer is fine


def _likelihood(entry, label: str, model, x: torch.Tensor, k: int, scale: Scale) -> list[dict]:
    rows = []
    est = entry(model, x, num_samples=k)
    ok = isinstance(est, torch.Tensor) and est.shape == (x.shape[0],) and est.is_floating_point()
    ok = ok and bool(torch.isfinite(est).all()) and est.device == x.device
    got = f"{tuple(est.shape)} {est.dtype} on {est.device}" if isinstance(est, torch.Tensor) else type(est).__name__
    rows.append(_row("returns a finite real [N] tensor on x's device", label, ok, got))
    if not ok:
        return rows
    if torch.cuda.is_available():
        on = entry(model.to("cuda"), x.to("cuda"), num_samples=k)
        model.to("cpu")
        rows.append(_row("runs on CUDA", label, on.device.type == "cuda" and on.shape == est.shape, str(on.device)))
    a, b = (_seeded(lambda: entry(model, x, num_samples=k), s) for s in (1, 1))
    c = _seeded(lambda: entry(model, x, num_samples=k), 2)
    rows.append(_row("same seed, same bits", label, torch.equal(a, b), ""))
    rows.append(
        _row(
            "different seeds, different draws",
            label,
            not torch.equal(a, c),
            "identical: reseeds itself?" if torch.equal(a, c) else "",
        )
    )
    with torch.no_grad():
        truth = model.log_marginal(x).double().numpy()
    torch.manual_seed(3)
    draws, start = [], time.perf_counter()
    while len(draws) < scale.repeats and (
        len(draws) < scale.min_repeats or time.perf_counter() - start < scale.seconds
    ):
        draws.append(entry(model, x, num_samples=k).double().clone())
    draws = torch.stack(draws).numpy()
    stats = summarize_estimates(draws, truth)
    bias, se = stats["bias"], stats["bias_se"]
    text = f"bias {bias:+.4g} ± {se:.2g} nats at k = {k} ({len(draws)} repeats, {x.shape[0]} points)"
    checks = {
        "lower_bound": bias <= Z_VIOLATION * se,
        "unbiased_log": abs(bias) <= Z_VIOLATION * se,
        "unbiased_p": not ratio_z(draws, truth[None, :]) > Z_VIOLATION,
    }
    for prop, passed in checks.items():
        if prop in entry.properties:
            rows.append(_row(f"declared {prop}", label, passed, text))
    return rows


def _flat_memory(entry) -> dict:
    """Peak extra memory at k = 10⁶ against k = 10⁴ (see the module's docstring)."""
    from lvbench.compute.measure import PeakMemory
    from lvbench.models import LinearGaussian

    label = f"linear_gaussian ({MEMORY_DIM}-dim)"
    model = LinearGaussian.random(MEMORY_DIM, 5, 0.5, seed=0)
    if incompatibility(entry, model, num_samples=LARGE_K) is not None:
        return _row("memory flat in k", label, None, incompatibility(entry, model, num_samples=LARGE_K))
    with torch.no_grad(), seeded(6):
        x, _ = model.sample(MEMORY_POINTS)
    peaks = {}
    for k in (SMALL_K, LARGE_K):
        start = time.perf_counter()
        with PeakMemory("cpu") as memory:
            entry(model, x, num_samples=k)
        peaks[k] = memory.mb
        if k == SMALL_K and (time.perf_counter() - start) * LARGE_K / SMALL_K > MEMORY_SECONDS:
            return _row("memory flat in k", label, None, f"k = {LARGE_K:,} would take over {MEMORY_SECONDS:g} s")
    unstreamed = LARGE_K * MEMORY_POINTS * MEMORY_DIM * 4 / 2**20
    growth = peaks[LARGE_K] - peaks[SMALL_K]
    detail = f"peak extra {peaks[SMALL_K]:.0f} MiB at k = {SMALL_K:,}, {peaks[LARGE_K]:.0f} MiB at k = {LARGE_K:,}"
    return _row("memory flat in k", label, growth < unstreamed, f"{detail} (limit: +{unstreamed:.0f} MiB)")


def _gradient(entry, label: str, model, x: torch.Tensor, k: int, scale: Scale) -> list[dict]:
    from lvbench.analysis.exact import exact_gradient
    from lvbench.analysis.gradient_analysis import draw_gradients
    from lvbench.estimators.gradient.fitted import fit_control

    rows = []
    for objective in entry.objectives:
        where = f"{label}, {objective}"
        if incompatibility(entry, model, num_samples=k, objective=objective) is not None:
            continue
        try:  # a learned control variate is fitted once, and every draw below uses that one
            fitted = {}
            if entry.fit is not None:
                fitted["control"] = _seeded(lambda: fit_control(entry.name, model, x, k, objective), 0)  # noqa: B023
            a = _seeded(lambda: draw_gradients(model, x, entry.name, k, 20, objective, **fitted).values, 1)  # noqa: B023
        except Exception as exc:  # noqa: BLE001 — a failing contract is the finding
            rows.append(_row("returns a differentiable real scalar surrogate", where, False, str(exc)))
            continue
        rows.append(_row("returns a differentiable real scalar surrogate", where, True, ""))
        b = _seeded(lambda: draw_gradients(model, x, entry.name, k, 20, objective, **fitted).values, 1)  # noqa: B023
        rows.append(_row("same seed, same bits", where, torch.equal(a, b), ""))
        if not entry.unbiased_for_objective(objective):
            continue
        try:
            exact = exact_gradient(model, x, objective, k)
        except Exception as exc:  # noqa: BLE001 — no exact route for this pairing
            rows.append(_row("declared unbiased", where, None, f"no exact gradient: {exc}"))
            continue
        draws = _seeded(
            lambda: draw_gradients(model, x, entry.name, k, scale.draws, objective, **fitted),  # noqa: B023
            4,
        )
        truth = draws.vector(exact)
        se = draws.values.std(0) / math.sqrt(scale.draws)
        # a zero-variance estimator (exact enumeration) differs from the exact gradient by rounding alone
        rounding = torch.finfo(truth.dtype).eps ** 0.5 * (1 + truth.abs())
        z = ((draws.values.mean(0) - truth).abs() / torch.maximum(se, rounding)).max().item()
        rows.append(_row("declared unbiased", where, z <= Z_VIOLATION, f"max |z| = {z:.2f} over coordinates"))
    return rows


def check_estimator(name: str, k: int | None = None, scale: Scale = FULL) -> pd.DataFrame:
    """Every check above for estimator ``name`` on each compatible ground-truth model: one row per
    (check, model) with result pass / FAIL / skipped and the evidence, at ``scale`` (``QUICK``: the
    test suite's)."""
    entry = get_estimator(name)
    k = max(entry.min_k, 5 if entry.kind == "likelihood" else 3) if k is None else k
    rows = []
    with guarded() as changed:  # an estimator that changes torch's global settings must not leak them
        for label, model in _models().items():
            with torch.no_grad(), seeded(5):
                x, _ = model.sample(6)
            reason = incompatibility(entry, model, num_samples=k)
            if reason is not None:
                rows.append(_row("compatible", label, None, reason))
                continue
            rows += (_likelihood if entry.kind == "likelihood" else _gradient)(entry, label, model, x, k, scale)
        if entry.kind == "likelihood" and scale.memory:
            rows.append(_flat_memory(entry))
    rows.append(_row("leaves torch's global settings as it found them", "all", not changed, "; ".join(changed)))
    return pd.DataFrame(rows)
