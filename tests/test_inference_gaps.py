"""Inference gaps against closed forms: on a linear-Gaussian model the best diagonal Gaussian is the
mean-field solution, whose approximation gap is ½(Σ_i log Λ_ii - log det Λ) for the posterior precision
Λ (numpy); on a Gaussian mixture the categorical family holds the exact posterior (gap 0)."""

import numpy as np
import pytest
import torch
from reference_numpy import lg_log_marginal

import lvbench
from lvbench.analysis.inference_gaps import inference_gaps
from lvbench.models import VAE, GaussianMixture, LinearGaussian


@pytest.mark.slow
def test_linear_gaussian_gaps_match_the_mean_field_closed_form():
    m = LinearGaussian.random(5, 3, 0.7, seed=4, dtype=torch.float64)
    x, _ = m.sample(6)
    W, s = m.weight.detach().numpy(), float(m.noise_std)
    precision = np.eye(3) + W.T @ W / s**2
    mean_field_gap = 0.5 * (np.log(np.diag(precision)).sum() - np.linalg.slogdet(precision)[1])
    gaps = inference_gaps(m, x, steps=1500, lr=0.05)
    np.testing.assert_allclose(gaps["log_p"], lg_log_marginal(x.numpy(), W, m.bias.detach().numpy(), s), rtol=1e-10)
    # deterministic objective (whitened draws make the sample ELBO exact here): optimization accuracy only
    np.testing.assert_allclose(gaps["approximation_gap"], mean_field_gap, atol=2e-3)
    assert (gaps["amortization_gap"] > 0.01).all()  # the untrained linear encoder is far from q*
    np.testing.assert_allclose(gaps["approximation_gap"] + gaps["amortization_gap"], gaps["total_gap"], rtol=1e-12)
    exact_elbo = m.exact_elbo(x).detach().numpy()  # the encoder's ELBO in closed form
    np.testing.assert_allclose(gaps["elbo_encoder"], exact_elbo, rtol=1e-9, atol=1e-9)


def test_mixture_categorical_family_holds_the_posterior():
    m = GaussianMixture.random(2, 3, separation=1.5, seed=1, dtype=torch.float64)
    x, _ = m.sample(5)
    gaps = inference_gaps(m, x, steps=800, lr=0.1)
    assert (gaps["approximation_gap"].abs() < 1e-3).all()
    assert (gaps["amortization_gap"] > 0).all()  # the briefly fitted encoder is not the posterior
    np.testing.assert_allclose(gaps["total_gap"], gaps["amortization_gap"], atol=1e-3)


def test_vae_gaps_are_non_negative_against_a_given_reference():
    torch.manual_seed(0)
    vae = VAE(16, 2, (8,))
    x = (torch.rand(4, 16) > 0.5).float()
    torch.manual_seed(1)
    reference = torch.stack([lvbench.get_estimator("iwae")(vae, x, num_samples=5000) for _ in range(4)]).mean(0)
    gaps = inference_gaps(vae, x, steps=200, log_marginal=reference)
    assert (gaps["amortization_gap"] >= 0).all() and (gaps["approximation_gap"] > -0.05).all()
    with pytest.raises(lvbench.LvbenchInputError, match="no exact log p"):
        inference_gaps(vae, x)
    assert all(p.requires_grad for p in vae.parameters())  # the model is left as it was


def test_gaps_run_from_a_spec_and_show_in_the_report(tmp_path):
    from lvbench.experiments import parse_spec, plan_run

    spec = {
        "run": {"repeats": 2, "points": 4},
        "models": {
            "mix": {"type": "gaussian_mixture", "data_dim": 2, "components": 3, "encoder_fit": {"steps": 20}},
        },
        "estimators": {"iwae": {"k": [5]}},
    }
    without = plan_run(parse_spec(spec), str(tmp_path)).model_keys["mix"]
    spec["models"]["mix"]["inference_gaps"] = {"steps": 100}
    assert plan_run(parse_spec(spec), str(tmp_path)).model_keys["mix"] != without  # part of the model's identity
    lvbench.run(spec, tmp_path / "o", report=True)
    md = (tmp_path / "o" / "report" / "report.md").read_text()
    section = md[md.index("## Inference gaps") :]
    assert "approximation gap (nats)" in section and "| mix" in section
    spec["models"]["mix"]["inference_gaps"] = {"step": 100}
    with pytest.raises(lvbench.LvbenchInputError, match="Did you mean 'steps'"):
        parse_spec(spec)


def test_binary_latent_gaps_by_enumeration_are_consistent():
    from lvbench.models import BinaryVAE

    torch.manual_seed(0)
    m = BinaryVAE(8, 4, (6,)).double()
    x, _ = m.sample(5)
    gaps = inference_gaps(m, x, steps=300, lr=0.1)
    np.testing.assert_allclose(gaps["log_p"], m.log_marginal(x).detach().numpy(), rtol=1e-12)
    assert (gaps["approximation_gap"] >= -1e-9).all() and (gaps["amortization_gap"] >= 0).all()
    assert (gaps["amortization_gap"] > 1e-3).any()  # an untrained encoder is improvable per point
