"""pytest-benchmark micro-benchmarks of the hot paths, and a check that the asv suite stays runnable.

In the normal test run the micro-benchmarks execute once, untimed (``--benchmark-disable`` in
pyproject). Time them, saving JSON for comparison:

    python -m pytest tests/test_benchmarks.py --benchmark-enable --benchmark-only --benchmark-autosave
    python -m pytest tests/test_benchmarks.py --benchmark-enable --benchmark-only --benchmark-compare
"""

import os
import shutil
import subprocess
import sys

import pytest
import torch

import lvbench
from lvbench.estimators.likelihood.weights import log_weight_sampler
from lvbench.estimators.proposals import resolve_proposal
from lvbench.gradient_analysis import draw_gradients
from lvbench.models import VAE, LinearGaussian

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def paper_vae():
    torch.manual_seed(0)
    model = VAE(784, 50, (200, 200))
    x, _ = model.sample(100)
    return model, x


def test_bench_iwae_chunk(benchmark, paper_vae):
    """One chunk of IWAE log-weights: 16 samples x 100 points on the IWAE paper's VAE."""
    model, x = paper_vae
    with torch.inference_mode():
        draw = log_weight_sampler(model, x, resolve_proposal(model, x, "encoder"))
        out = benchmark(draw, 16)
    assert out.shape == (16, 100) and torch.isfinite(out).all()


def test_bench_iwae_k1000(benchmark, paper_vae):
    model, x = paper_vae
    out = benchmark(lvbench.get_estimator("iwae"), model, x, num_samples=1000)
    assert out.shape == (100,)


def test_bench_one_gradient_draw(benchmark, paper_vae):
    """One DReG IWAE-10 gradient (surrogate + backward) on the VAE."""
    model, x = paper_vae
    dreg = lvbench.get_estimator("dreg")

    def one():
        model.zero_grad(set_to_none=True)
        dreg(model, x, num_samples=10, objective="iwae").backward()

    benchmark(one)
    assert all(p.grad is not None for p in model.parameters())


def test_bench_200_gradients_vectorized(benchmark):
    model = LinearGaussian.random(10, 3)
    x, _ = model.sample(32)
    draws = benchmark(draw_gradients, model, x, "dreg", 10, 200, "iwae")
    assert draws.values.shape[0] == 200 and draws.method == "vmap"


@pytest.mark.skipif(shutil.which("asv") is None, reason="asv is not installed")
def test_asv_suite_is_valid():
    out = subprocess.run(["asv", "check", "--python=same"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "No problems found" in out.stdout, out.stdout + out.stderr


def test_asv_benchmarks_run_once(monkeypatch):
    """Call a few asv benchmarks directly (what `asv run --quick` does), so they cannot rot unnoticed."""
    monkeypatch.setenv("LVBENCH_ASV_PROFILE", "fast")
    monkeypatch.syspath_prepend(ROOT)
    for name in [m for m in sys.modules if m.startswith("benchmarks")]:
        monkeypatch.delitem(sys.modules, name)
    from benchmarks import bench_gradients, bench_likelihood, bench_quality

    assert "iwae" in bench_likelihood.TimeLikelihood.params[0]  # names come from the registry
    timing = bench_likelihood.TimeLikelihood()
    timing.setup("iwae", 10)
    timing.time_toy("iwae", 10)
    quality = bench_quality.TrackLikelihoodQuality()
    quality.setup("iwae", 100)
    assert abs(quality.track_bias("iwae", 100)) < 1.0
    grad = bench_gradients.TimeGradient()
    grad.setup("vimco", 10)
    grad.time_toy("vimco", 10)
    discrete_only = bench_gradients.TimeGradient()
    discrete_only.setup("enumeration", 2)
    with pytest.raises(NotImplementedError, match="needs enumerable"):  # asv shows it as skipped
        discrete_only.time_vae("enumeration", 2)
