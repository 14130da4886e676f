"""The same estimators on CUDA agree with CPU; skipped cleanly on machines without a GPU."""

import pytest
import torch

import lvbench
from lvbench.gradient_analysis import draw_gradients
from lvbench.models import VAE, GaussianMixture, LinearGaussian

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("name", ["naive_mc", "importance", "elbo", "iwae", "ais"])
def test_likelihood_estimators_on_cuda_match_exact(name):
    model = LinearGaussian.random(6, 2, 0.7, seed=0, dtype=torch.float64).fit_encoder_to_posterior().cuda()
    x, _ = model.sample(8)
    exact = model.log_marginal(x).detach()
    opts = {"steps": 200, "start": "encoder"} if name == "ais" else {}
    torch.manual_seed(0)
    out = lvbench.get_estimator(name)(model, x, num_samples=2000 if name != "ais" else 16, **opts)
    assert out.device.type == "cuda"
    tolerance = 1.0 if name == "elbo" else (0.5 if name == "naive_mc" else 0.05)
    assert (out - exact).abs().max() < tolerance


def test_gradient_draws_on_cuda_are_vectorized_and_unbiased():
    model = GaussianMixture.random(2, 3, seed=0).cuda()
    x, _ = model.sample(8)
    draws = draw_gradients(model, x, "score_function_loo", 4, 500, "elbo")
    assert draws.method == "vmap" and draws.values.device.type == "cuda"


def test_vae_training_and_iwae_on_cuda():
    model = VAE(64, 4, (32,)).cuda()
    data = lvbench.data.load_digits("train").tensor()[:256].cuda()
    from lvbench.training import train_vae

    history = train_vae(model, data, epochs=3, progress=False)
    assert len(history) == 3
    assert torch.isfinite(lvbench.get_estimator("iwae")(model, data[:16], num_samples=100)).all()
