"""The same statistical checks on every device: the CPU always, CUDA where present (skipped cleanly
without it). References are numpy closed forms computed on the CPU; tolerances are 5 standard errors."""

import math

import numpy as np
import pytest
import torch
from helpers import assert_unbiased, gmm_model, gmm_numpy_gradient, lg_model, lg_numpy_elbo_gradient, numpy_truth
from reference_numpy import lg_elbo

import lvbench
from lvbench.analysis.gradient_analysis import draw_gradients
from lvbench.analysis.training import train_vae
from lvbench.models import VAE, LinearGaussian

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def mediocre_linear_gaussian() -> LinearGaussian:
    """Float64 linear-Gaussian model whose encoder is the posterior mean map with inflated scales."""
    model = LinearGaussian.random(4, 2, 0.7, seed=0, dtype=torch.float64).fit_encoder_to_posterior()
    with torch.no_grad():
        model.encoder.log_scale.add_(0.4)
    return model


def repeated(name: str, model, x: torch.Tensor, k: int, r: int, **options) -> torch.Tensor:
    """r independent estimates [r, N], checked to stay on x's device, returned on the CPU."""
    out = torch.stack([lvbench.get_estimator(name)(model, x, num_samples=k, **options) for _ in range(r)])
    assert out.device == x.device and out.dtype == x.dtype
    return out.cpu()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "name,k,options",
    [("naive_mc", 4, {}), ("importance", 4, {}), ("iwae", 4, {}), ("ais", 2, {"steps": 10, "start": "encoder"})],
)
def test_estimates_of_p_are_unbiased_on(device, name, k, options):
    """exp(estimate) / p(x) has mean 1 for every estimator unbiased for p(x) (AIS: for frozen step sizes)."""
    model = mediocre_linear_gaussian()
    x, _ = model.sample(3)
    truth = torch.from_numpy(numpy_truth(model, x))
    torch.manual_seed(1)
    r = 2000 if name != "ais" else 400
    ratio = (repeated(name, model.to(device), x.to(device), k, r, **options) - truth).exp()
    se = ratio.std(0) / math.sqrt(r)
    assert ((ratio.mean(0) - 1).abs() < 5 * se).all(), (ratio.mean(0), se)


@pytest.mark.parametrize("device", DEVICES)
def test_elbo_mean_matches_the_closed_form_on(device):
    model = mediocre_linear_gaussian()
    x, _ = model.sample(3)
    enc = model.encoder
    truth = lg_elbo(
        *(t.detach().numpy() for t in (x, model.weight, model.bias)),
        float(model.noise_std),
        *(t.detach().numpy() for t in (enc.weight, enc.bias, enc.log_scale)),
    )
    r = 2000
    out = repeated("elbo", model.to(device), x.to(device), 1, r).numpy()
    assert np.all(np.abs(out.mean(0) - truth) < 5 * out.std(0) / math.sqrt(r)), (out.mean(0), truth)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,k", [("reparam", 2), ("score_function_loo", 3)])
def test_elbo_gradients_are_unbiased_and_vectorized_on(device, name, k):
    model = lg_model()
    x, _ = model.sample(4)
    reference = lg_numpy_elbo_gradient(model, x)
    torch.manual_seed(2)
    draws = draw_gradients(model.to(device), x.to(device), name, k, 1500 if name == "reparam" else 4000, "elbo")
    assert draws.method == "vmap" and draws.values.device.type == device
    assert_unbiased(draws, reference)


@pytest.mark.parametrize("device", DEVICES)
def test_vimco_gradient_of_a_discrete_model_is_unbiased_on(device):
    model = gmm_model(1)
    x, _ = model.sample(3)
    reference = gmm_numpy_gradient(model, x, "iwae", 3)
    torch.manual_seed(3)
    draws = draw_gradients(model.to(device), x.to(device), "vimco", 3, 3000, "iwae")
    assert draws.method == "vmap" and draws.values.device.type == device
    assert_unbiased(draws, reference)


@pytest.mark.parametrize("device", DEVICES)
def test_vae_trains_on_device_and_its_iwae_agrees_with_the_cpu(device):
    """A VAE trained on the device gives the same IWAE distribution there as a CPU copy of it."""
    torch.manual_seed(0)
    model = VAE(64, 4, (32,)).to(device)
    data = lvbench.data.load_digits("train").tensor()[:256].to(device)
    history = train_vae(model, data, epochs=3, progress=False)
    assert len(history) == 3 and np.isfinite(history["objective"]).all()
    cpu_model = VAE(64, 4, (32,))
    cpu_model.load_state_dict({n: t.cpu() for n, t in model.state_dict().items()})
    x = data[:8]
    r = 40
    here = repeated("iwae", model, x, 50, r)
    there = repeated("iwae", cpu_model, x.cpu(), 50, r)
    se = (here.var(0) / r + there.var(0) / r).sqrt()
    assert ((here.mean(0) - there.mean(0)).abs() < 5 * se).all(), (here.mean(0), there.mean(0), se)
