"""Models: exact quantities against independent numpy/scipy closed forms, protocol shapes, persistence."""

import numpy as np
import pytest
import torch
from reference_numpy import gmm_log_marginal, lg_elbo, lg_log_marginal, lg_posterior

from lvbench import LvbenchInputError
from lvbench.models import VAE, GaussianMixture, LinearGaussian, load_vae


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_gaussian_log_marginal_matches_scipy(dtype):
    m = LinearGaussian.random(data_dim=6, latent_dim=3, noise_std=0.7, seed=1, dtype=dtype)
    x, _ = m.sample(20)
    W, b = m.weight.detach().double().numpy(), m.bias.detach().double().numpy()
    expected = lg_log_marginal(x.double().numpy(), W, b, 0.7)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(m.log_marginal(x).detach().double().numpy(), expected, rtol=tol, atol=tol)


def test_linear_gaussian_posterior_matches_bayes_rule():
    m = LinearGaussian.random(5, 2, 0.5, seed=2, dtype=torch.float64)
    x, _ = m.sample(7)
    mean, cov = lg_posterior(x.numpy(), m.weight.detach().numpy(), m.bias.detach().numpy(), 0.5)
    post = m.posterior(x)
    np.testing.assert_allclose(post.mean.detach().numpy(), mean, atol=1e-10)
    np.testing.assert_allclose(post.covariance_matrix[0].detach().numpy(), cov, atol=1e-10)


def test_linear_gaussian_exact_elbo_matches_numpy():
    m = LinearGaussian.random(4, 2, 0.6, seed=3, dtype=torch.float64)
    with torch.no_grad():
        m.encoder.weight.normal_()
        m.encoder.bias.normal_()
        m.encoder.log_scale.normal_(0, 0.3)
    x, _ = m.sample(5)
    e = m.encoder
    expected = lg_elbo(
        x.numpy(),
        m.weight.detach().numpy(),
        m.bias.detach().numpy(),
        0.6,
        e.weight.detach().numpy(),
        e.bias.detach().numpy(),
        e.log_scale.detach().numpy(),
    )
    np.testing.assert_allclose(m.exact_elbo(x).detach().numpy(), expected, atol=1e-10)


def test_fit_encoder_to_posterior_is_exact_for_orthogonal_weights():
    W = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    m = LinearGaussian(W, torch.zeros(3, dtype=torch.float64), 0.5).fit_encoder_to_posterior()
    x, _ = m.sample(4)
    mean, cov = lg_posterior(x.numpy(), W.numpy(), np.zeros(3), 0.5)
    q = m.encoder(x)
    np.testing.assert_allclose(q.mean.detach().numpy(), mean, atol=1e-12)
    np.testing.assert_allclose(q.variance[0].detach().numpy(), np.diag(cov), atol=1e-12)
    # the ELBO then equals log p(x)
    np.testing.assert_allclose(m.exact_elbo(x).detach().numpy(), m.log_marginal(x).detach().numpy(), atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_mixture_log_marginal_matches_scipy(dtype):
    m = GaussianMixture.random(data_dim=3, components=4, seed=5, dtype=dtype)
    x, _ = m.sample(30)
    expected = gmm_log_marginal(
        x.double().numpy(),
        m.logits.detach().double().numpy(),
        m.means.detach().double().numpy(),
        m.log_stds.exp().detach().double().numpy(),
    )
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(m.log_marginal(x).detach().double().numpy(), expected, rtol=tol, atol=tol)


def test_gaussian_mixture_posterior_sums_to_one_and_is_bayes():
    m = GaussianMixture.random(2, 3, seed=0, dtype=torch.float64)
    x, _ = m.sample(6)
    post = m.posterior(x).probs.detach().numpy()
    np.testing.assert_allclose(post.sum(-1), 1.0, atol=1e-12)
    joint = np.exp(m.log_joint(x, torch.arange(3)[:, None].expand(3, 6)).detach().numpy()).T
    np.testing.assert_allclose(post, joint / joint.sum(-1, keepdims=True), atol=1e-12)


@pytest.mark.parametrize(
    "model",
    [
        LinearGaussian.random(5, 2),
        GaussianMixture.random(2, 3),
        VAE(16, 3, (8,)),
        VAE(16, 3, (8,), likelihood="gaussian"),
    ],
    ids=["lg", "gmm", "vae-bernoulli", "vae-gaussian"],
)
def test_protocol_shapes_broadcast_over_sample_dims(model):
    x, z = model.sample(4)
    assert x.shape == (4, model.data_dim)
    zk = model.prior().sample((7, 4))
    assert model.log_joint(x, zk).shape == (7, 4)
    assert model.likelihood(zk).batch_shape == (7, 4)
    assert model.generative_parameters() and model.inference_parameters()
    ids = {id(p) for p in model.generative_parameters()} & {id(p) for p in model.inference_parameters()}
    assert not ids


def test_capabilities_declare_what_models_offer():
    assert {
        "exact_marginal",
        "exact_posterior",
        "reparameterizable",
        "encoder",
    } <= LinearGaussian.random().capabilities()
    gmm = GaussianMixture.random().capabilities()
    assert {"discrete_latent", "enumerable", "relaxable"} <= gmm and "reparameterizable" not in gmm
    vae = VAE(10, 2, (4,)).capabilities()
    assert "exact_marginal" not in vae and "reparameterizable" in vae


def test_vae_save_load_roundtrip(tmp_path):
    torch.manual_seed(1)
    model = VAE(12, 3, (6, 5), activation="elu", likelihood="gaussian").double()
    path = tmp_path / "vae.pt"
    model.save(path, note="test")
    loaded = load_vae(path)
    assert loaded.config == model.config and next(loaded.parameters()).dtype == torch.float64
    x, z = model.sample(3)
    torch.testing.assert_close(loaded.log_joint(x, z), model.log_joint(x, z))


def test_vae_load_refuses_arbitrary_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed!",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "lvbench.vae/1", "payload": Evil()}, path)
    with pytest.raises(LvbenchInputError, match="refused to load .* pickled Python objects") as refusal:
        load_vae(path)
    assert "weights_only=False" not in str(refusal.value)  # never relay torch's hint to turn the check off
    with pytest.raises(LvbenchInputError, match="not found"):
        load_vae(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    VAE(6, 2, (4,)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(LvbenchInputError, match="truncated or corrupt"):
        load_vae(truncated)
    mismatched = tmp_path / "mismatched.pt"
    VAE(6, 2, (4,)).save(mismatched)
    ckpt = torch.load(mismatched, weights_only=True)
    ckpt["config"]["latent_dim"] = 3
    torch.save(ckpt, mismatched)
    with pytest.raises(LvbenchInputError, match="weights do not match its config: size mismatch"):
        load_vae(mismatched)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="not an lvbench VAE checkpoint"):
        load_vae(other)
