"""pytest-benchmark micro-benchmarks of the hot paths, and a check that the asv suite stays runnable.

In the normal test run the micro-benchmarks execute once, untimed (``--benchmark-disable`` in
pyproject). Time them, saving JSON for comparison:

    python -m pytest tests/test_benchmarks.py --benchmark-enable --benchmark-only --benchmark-autosave
    python -m pytest tests/test_benchmarks.py --benchmark-enable --benchmark-only --benchmark-compare
"""

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
import torch

import lvbench
from lvbench.analysis.gradient_analysis import draw_gradients
from lvbench.estimators.likelihood.weights import log_weight_sampler
from lvbench.estimators.proposals import resolve_proposal
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
    """Call a few asv benchmarks directly (what `asv run --quick` does), so they cannot rot unnoticed;
    incompatible pairs are refused in setup, which asv reports as skipped (not as a failure)."""
    monkeypatch.setenv("LVBENCH_ASV_PROFILE", "fast")
    monkeypatch.syspath_prepend(ROOT)
    for name in [m for m in sys.modules if m.startswith("benchmarks")]:
        monkeypatch.delitem(sys.modules, name)
    from benchmarks import bench_gradients, bench_likelihood, bench_quality

    assert "iwae" in bench_likelihood.TimeLikelihoodToy.params[0]  # names come from the registry
    timing = bench_likelihood.TimeLikelihoodToy()
    cache = timing.setup_cache()
    timing.setup(cache, "iwae", 10)
    timing.time_toy(cache, "iwae", 10)
    grad = bench_gradients.TimeGradientToy()
    grad.setup(cache, "vimco", 10)
    grad.time_toy(cache, "vimco", 10)
    with pytest.raises(NotImplementedError, match="needs enumerable"):  # asv shows it as skipped
        bench_gradients.TimeGradientVAE().setup(cache, "enumeration", 2)
    with pytest.raises(NotImplementedError, match="needs num_samples >= 2"):
        bench_gradients.TimeGradientToy().setup(cache, "vimco", 1)
    monkeypatch.setattr(bench_quality, "likelihood_names", lambda: ["iwae", "elbo"])
    quality = bench_quality.TrackLikelihoodQuality()
    errors = quality.setup_cache()
    quality.setup(errors, "iwae", 10)
    se = errors[("iwae", 10)].mean(0).std().item() / errors[("iwae", 10)].shape[1] ** 0.5
    assert quality.track_bias(errors, "iwae", 10) <= 5 * se  # IWAE is a lower bound in expectation
    assert quality.track_rmse(errors, "iwae", 10) > 0
    monkeypatch.setattr(bench_quality, "gradient_names", lambda: ["dreg", "enumeration"])
    gradients = bench_quality.TrackGradientQuality()
    tables = gradients.setup_cache()
    gradients.setup(tables, "dreg", 10)
    assert gradients.track_snr_phi(tables, "dreg", 10) > 0
    gradients.setup(tables, "enumeration", 10)  # on the discrete toy model: exact, no variance
    assert gradients.track_variance_phi(tables, "enumeration", 10) == 0
    with pytest.raises(NotImplementedError):
        gradients.setup(tables, "dreg", 100)  # not in the fast grid: skipped, not failed
    efficiency = bench_likelihood.TrackFlopEfficiency()
    efficiency.setup("iwae")
    # a fraction of peak: far above 1 would mean a wrong FLOP count or timer (the decoder is 413,600 FLOP)
    assert 0 < efficiency.track_decoder_flop_fraction("iwae") < 1.5


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (the [peers] extra)")
def test_peers_benchmark_agrees_with_the_hand_written_jax_iwae(monkeypatch):
    """The JAX IWAE of benchmarks/peers.py computes the same bound as lvbench on identical weights."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    import peers

    model, x = peers.iwae_paper_vae("cpu", 10)
    result = peers.jax_comparison(model, x, [100], rounds=1, sgemm=1e11)
    assert result["k=100"]["sum_iwae"]["difference_in_se"] < 5
    assert result["gradient k=100"]["jax.grad_s"] > 0
