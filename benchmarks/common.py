"""Shared set-up for the asv suites: the models and data each benchmark runs on.

Profile (environment variable LVBENCH_ASV_PROFILE): "regular" (default) uses the IWAE paper's VAE
(784-200-200-50) on 100 points, k up to 1000 and 100 gradient draws per quality benchmark; "fast"
shrinks every grid (20 VAE points, k up to 100, 30 draws) so a whole `asv run --quick` fits in CI.
Incompatible (estimator, model) pairs are refused in ``setup``, which asv reports as skipped.
"""

from __future__ import annotations

import functools
import os
import time

import torch

import lvbench
from lvbench.models import VAE

PROFILE = os.environ.get("LVBENCH_ASV_PROFILE", "regular")
FAST = PROFILE == "fast"
VAE_POINTS = 20 if FAST else 100
TOY_POINTS = 32
# asv starts one process per benchmark and parameter set (~2.5 s of imports each on 2 cores), so the
# fast profile keeps one k per estimator: about a hundred processes in all.
K_VALUES = [10] if FAST else [1, 10, 100, 1000]
GRADIENT_K = [10] if FAST else [2, 10, 100]
PEAKMEM_K = [1_000, 10_000] if FAST else [1_000, 10_000, 100_000]
#: Gradient draws and reference draws per quality benchmark.
QUALITY_DRAWS = (30, 100) if FAST else (100, 500)

#: Options that keep expensive estimators' benchmarks affordable (documented in the README).
ESTIMATOR_OPTIONS = {"ais": {"steps": 20}}


def models() -> dict:
    """Every model the suites use, built once: asv's ``setup_cache`` returns this to all of a class's
    processes, so no process refits the toy encoders."""
    return {"continuous": toy("continuous"), "discrete": toy("discrete"), "vae": paper_vae()}


@functools.cache
def toy(kind: str = "continuous"):
    """The default suite's toy models, with encoders fitted briefly: (model, x, exact log p(x))."""
    from lvbench.analysis.training import fit_encoder

    name = "linear_gaussian" if kind == "continuous" else "gaussian_mixture"
    model = lvbench.get_model(name)()
    x, _ = lvbench.data.sample_from_model(model, TOY_POINTS, seed=1)
    fit_encoder(model, x, steps=100)
    with torch.no_grad():
        truth = model.log_marginal(x)
    return model, x, truth


@functools.cache
def paper_vae():
    """The IWAE paper's VAE shape with MNIST-size binary points simulated from it."""
    torch.manual_seed(0)
    model = VAE(784, 50, (200, 200), "tanh", "bernoulli")
    x, _ = model.sample(VAE_POINTS)
    return model, x


def skip_if_incompatible(name: str, model, **options) -> None:
    """Call from ``setup``: asv reports a benchmark whose setup raises NotImplementedError as skipped (n/a);
    raised from the benchmark itself it would be a failure."""
    reason = lvbench.incompatibility(name, model, **options)
    if reason is not None:
        raise NotImplementedError(reason)


def likelihood_names() -> list[str]:
    """Every registered likelihood estimator, plugins included."""
    return lvbench.list_estimators("likelihood")


def gradient_names() -> list[str]:
    return lvbench.list_estimators("gradient")


def objective(name: str) -> str:
    return lvbench.get_estimator(name).objectives[0]


def toy_for(name: str, cache: dict | None = None):
    """The continuous toy model, or the discrete one for estimators that need a discrete latent."""
    cache = cache or {"continuous": toy("continuous"), "discrete": toy("discrete")}
    continuous = cache["continuous"]
    return continuous if lvbench.incompatibility(name, continuous[0]) is None else cache["discrete"]


def decoder_flop(model: VAE) -> int:
    """FLOP of one decoder pass for one latent sample and point (a multiply-add counts 2): for the IWAE
    paper's VAE 2·(50·200 + 200·200 + 200·784) = 413,600, the bulk of every streamed estimator's work."""
    return 2 * sum(m.in_features * m.out_features for m in model.decoder if hasattr(m, "in_features"))


def sgemm_rates(seconds: float = 1.0) -> dict[str, float]:
    """The best single-precision GEMM rate (FLOP/s) of each matmul library torch can call here, with
    torch's current threads, over shapes like the decoder's chunks and a square one: "aten" is
    ``torch.mm`` (MKL on x86 wheels: half oneDNN's rate on the 2-core AMD EPYC, measured), "onednn"
    the kernel lvbench's inference path uses (``lvbench.compute.matmul``), where available."""
    from lvbench.compute.matmul import onednn_enabled, onednn_linear

    gemms = {"aten": lambda a, b, bt: torch.mm(a, b)}
    if onednn_enabled():
        gemms["onednn"] = lambda a, b, bt: onednn_linear(a, bt)
    rates = {}
    with torch.inference_mode():
        for name, gemm in gemms.items():
            best = 0.0
            for m, k, n in ((2000, 200, 784), (2000, 200, 200), (1024, 1024, 1024)):
                a, b = torch.randn(m, k), torch.randn(k, n)
                bt = b.T.contiguous()
                gemm(a, b, bt)
                reps, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds / (3 * len(gemms)):
                    gemm(a, b, bt)
                    reps += 1
                best = max(best, 2 * m * k * n * reps / (time.perf_counter() - start))
            rates[name] = best
    return rates


def sgemm_rate(seconds: float = 1.0) -> float:
    """The machine's best single-precision GEMM rate (FLOP/s): the fastest library in ``sgemm_rates``."""
    return max(sgemm_rates(seconds).values())
