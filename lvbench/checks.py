"""``lvbench check NAME``: the property tests lvbench runs on its own estimators, for any registered one.

On small models with exact ground truth (linear-Gaussian with its closed-form log p(x) and gradients, a
Gaussian mixture by enumeration), for every model the estimator is compatible with:
- contract: a likelihood estimate is a real floating-point tensor of shape [N], finite, on x's device
  (CUDA too where present); a gradient surrogate is a differentiable real scalar;
- determinism: the same seed gives the same bits; different seeds do not (an estimator that reseeds
  itself would report a spread of 0);
- declared properties against exact ground truth, 5 standard errors from the estimator's own draws:
  ``lower_bound``, ``unbiased_log``, ``unbiased_p`` (``lvbench.declared``), and for gradient estimators
  ``unbiased``: every coordinate of the mean of 2,000 draws within 5 SE of the exact gradient.
Memory flat in k is measured by ``tests/test_likelihood.py`` and the asv suite, not here (it needs a
fresh process per k to be meaningful).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import torch

from lvbench.declared import Z_VIOLATION, ratio_z
from lvbench.metrics import summarize_estimates
from lvbench.registry import get_estimator, incompatibility
from lvbench.seeding import seeded

__all__ = ["check_estimator"]

REPEATS = 400
DRAWS = 2000


def _models() -> dict[str, torch.nn.Module]:
    from lvbench.models import BinaryVAE, GaussianMixture, LinearGaussian
    from lvbench.training import fit_encoder

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


def _likelihood(entry, label: str, model, x: torch.Tensor, k: int) -> list[dict]:
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
    draws = torch.stack([entry(model, x, num_samples=k).double().clone() for _ in range(REPEATS)]).numpy()
    stats = summarize_estimates(draws, truth)
    bias, se = stats["bias"], stats["bias_se"]
    text = f"bias {bias:+.4g} ± {se:.2g} nats at k = {k} ({REPEATS} repeats, {x.shape[0]} points)"
    checks = {
        "lower_bound": bias <= Z_VIOLATION * se,
        "unbiased_log": abs(bias) <= Z_VIOLATION * se,
        "unbiased_p": not ratio_z(draws, truth[None, :]) > Z_VIOLATION,
    }
    for prop, passed in checks.items():
        if prop in entry.properties:
            rows.append(_row(f"declared {prop}", label, passed, text))
    return rows


def _gradient(entry, label: str, model, x: torch.Tensor, k: int) -> list[dict]:
    from lvbench.exact import exact_gradient
    from lvbench.gradient_analysis import draw_gradients

    rows = []
    for objective in entry.objectives:
        where = f"{label}, {objective}"
        if incompatibility(entry, model, num_samples=k, objective=objective) is not None:
            continue
        try:
            a = _seeded(lambda: draw_gradients(model, x, entry.name, k, 20, objective).values, 1)  # noqa: B023
        except Exception as exc:  # noqa: BLE001 — a failing contract is the finding
            rows.append(_row("returns a differentiable real scalar surrogate", where, False, str(exc)))
            continue
        rows.append(_row("returns a differentiable real scalar surrogate", where, True, ""))
        b = _seeded(lambda: draw_gradients(model, x, entry.name, k, 20, objective).values, 1)  # noqa: B023
        rows.append(_row("same seed, same bits", where, torch.equal(a, b), ""))
        if "unbiased" not in entry.properties:
            continue
        try:
            exact = exact_gradient(model, x, objective, k)
        except Exception as exc:  # noqa: BLE001 — no exact route for this pairing
            rows.append(_row("declared unbiased", where, None, f"no exact gradient: {exc}"))
            continue
        draws = _seeded(lambda: draw_gradients(model, x, entry.name, k, DRAWS, objective), 4)  # noqa: B023
        truth = draws.vector(exact)
        se = draws.values.std(0) / math.sqrt(DRAWS)
        z = ((draws.values.mean(0) - truth).abs() / se.clamp_min(1e-300)).max().item()
        rows.append(_row("declared unbiased", where, z <= Z_VIOLATION, f"max |z| = {z:.2f} over coordinates"))
    return rows


def check_estimator(name: str, k: int | None = None) -> pd.DataFrame:
    """Every check above for estimator ``name`` on each compatible ground-truth model: one row per
    (check, model) with result pass / FAIL / skipped and the evidence."""
    entry = get_estimator(name)
    k = max(entry.min_k, 5 if entry.kind == "likelihood" else 3) if k is None else k
    rows = []
    for label, model in _models().items():
        with torch.no_grad(), seeded(5):
            x, _ = model.sample(6)
        reason = incompatibility(entry, model, num_samples=k)
        if reason is not None:
            rows.append(_row("compatible", label, None, reason))
            continue
        rows += (_likelihood if entry.kind == "likelihood" else _gradient)(entry, label, model, x, k)
    return pd.DataFrame(rows)
