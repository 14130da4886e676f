"""The VAE trained by others (BDMC reference weights): our loader and estimators against a numpy forward pass."""

import copy

import numpy as np
import pytest
import torch
from conftest import REFERENCE_VAE
from scipy import stats
from scipy.special import expit, logsumexp

import lvbench
from lvbench.models import load_npz_vae


def elu(a):
    return np.where(a > 0, a, np.expm1(np.minimum(a, 0)))


def numpy_log_joint(w, x, z):
    h = elu(z @ w["fc4_weight"].T + w["fc4_bias"])
    h = elu(h @ w["fc5_weight"].T + w["fc5_bias"])
    logits = h @ w["fc6_weight"].T + w["fc6_bias"]
    p = expit(logits)
    loglik = np.sum(x * np.log(p) + (1 - x) * np.log1p(-p), -1)
    return loglik + stats.norm.logpdf(z).sum(-1)


def numpy_encoder(w, x):
    h = elu(x @ w["fc1_weight"].T + w["fc1_bias"])
    h = elu(h @ w["fc2_weight"].T + w["fc2_bias"])
    out = h @ w["fc3_weight"].T + w["fc3_bias"]
    return out[:, :50], np.exp(0.5 * out[:, 50:])


@pytest.fixture(scope="module")
def reference():
    model, extras = load_npz_vae(REFERENCE_VAE)
    weights = {k: v.astype(np.float64) for k, v in np.load(REFERENCE_VAE).items()}
    return model.double(), extras, weights


def test_log_joint_and_encoder_match_numpy_forward_pass(reference):
    model, extras, w = reference
    x, z = extras["x"].double(), extras["z"].double()
    np.testing.assert_allclose(model.log_joint(x, z).detach().numpy(), numpy_log_joint(w, w["x"], w["z"]), rtol=1e-9)
    q = model.encoder(x)
    mu, sd = numpy_encoder(w, w["x"])
    np.testing.assert_allclose(q.mean.detach().numpy(), mu, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(q.stddev.detach().numpy(), sd, rtol=1e-9)


def test_iwae_matches_numpy_importance_sampling_on_the_same_draws(reference):
    """IWAE on the real model equals a numpy log-mean-exp of weights computed from the same z draws."""
    model, extras, w = reference
    x = extras["x"].double()[:4]
    k = 64
    torch.manual_seed(3)
    got = lvbench.get_estimator("iwae")(model, x, num_samples=k, chunk_size=k)
    torch.manual_seed(3)
    z = model.encoder(x).sample((k,)).numpy()  # same RNG stream as the estimator's single chunk
    mu, sd = numpy_encoder(w, w["x"][:4])
    lw = numpy_log_joint(w, w["x"][:4], z) - stats.norm(mu, sd).logpdf(z).sum(-1)
    np.testing.assert_allclose(got.numpy(), logsumexp(lw, 0) - np.log(k), rtol=1e-9)


def test_bounds_are_ordered_on_the_real_model(reference):
    model, extras, _ = reference
    x = extras["x"].float()
    m = copy.deepcopy(model).float()
    torch.manual_seed(0)
    elbo = torch.stack([lvbench.get_estimator("elbo")(m, x, num_samples=1) for _ in range(200)])
    iw = torch.stack([lvbench.get_estimator("iwae")(m, x, num_samples=100) for _ in range(20)])
    diff = iw.mean(0) - elbo.mean(0)
    se = (iw.var(0) / 20 + elbo.var(0) / 200).sqrt()
    assert (diff > -5 * se).all()
    assert diff.mean() > 0.5  # the IWAE-100 gap over the ELBO is several nats on this model
