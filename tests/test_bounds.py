"""Rényi and χ (CUBO) bounds and SUMO against closed forms computed in numpy: on a linear-Gaussian model
L_α = log p(x) - D_α(q ‖ p(z|x)) and CUBO_n = log p(x) + (n-1)/n · D_n(p(z|x) ‖ q) for Gaussian q, the
Rényi divergences between Gaussians in closed form (tests/reference_numpy.py)."""

import math

import numpy as np
import pytest
import torch
from reference_numpy import gaussian_renyi_divergence, lg_log_marginal, lg_posterior

import lvbench
from lvbench.compute.measure import HostSyncs
from lvbench.estimators.likelihood.sumo import expected_cost
from lvbench.models import LinearGaussian


def lg_with_offset_encoder(seed=0, offset=0.3, scale=1.3):
    """A linear-Gaussian model whose encoder is the exact posterior moved and widened: a decent, inexact q."""
    m = LinearGaussian.random(4, 2, 0.8, seed=seed, dtype=torch.float64).fit_encoder_to_posterior()
    with torch.no_grad():
        m.encoder.bias.add_(offset)
        m.encoder.log_scale.add_(math.log(scale))
    return m


def closed_forms(m, x):
    """Per point: exact log p(x), and q's and the posterior's moments (numpy)."""
    W, b, s = m.weight.detach().numpy(), m.bias.detach().numpy(), float(m.noise_std)
    xn = x.numpy()
    post_mean, post_cov = lg_posterior(xn, W, b, s)
    q = m.encoder(x)
    q_mean, q_var = q.mean.detach().numpy(), q.variance.detach().numpy()
    return lg_log_marginal(xn, W, b, s), post_mean, post_cov, q_mean, q_var


def repeated(name, m, x, k, runs, **options):
    torch.manual_seed(1)
    est = lvbench.get_estimator(name)
    return torch.stack([est(m, x, num_samples=k, **options) for _ in range(runs)]).numpy()


def test_renyi_at_alpha_zero_is_iwae_and_at_one_the_elbo_on_the_same_samples():
    m = lg_with_offset_encoder()
    x, _ = m.sample(5)
    for alpha, other in ((0.0, "iwae"), (1.0, "elbo")):
        torch.manual_seed(3)
        ours = lvbench.get_estimator("renyi")(m, x, num_samples=37, alpha=alpha, chunk_size=8)
        torch.manual_seed(3)
        theirs = lvbench.get_estimator(other)(m, x, num_samples=37, chunk_size=8)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.8])
def test_renyi_matches_its_closed_form_bound_and_stays_below_log_p(alpha):
    m = lg_with_offset_encoder()
    x, _ = m.sample(3)
    log_p, post_mean, post_cov, q_mean, q_var = closed_forms(m, x)
    runs = repeated("renyi", m, x, 4000, 60, alpha=alpha)
    mean, se = runs.mean(0), runs.std(0, ddof=1) / math.sqrt(runs.shape[0])
    for n in range(3):
        bound = log_p[n] - gaussian_renyi_divergence(q_mean[n], np.diag(q_var[n]), post_mean[n], post_cov, alpha)
        assert abs(mean[n] - bound) < 5 * se[n] + 1e-9, (n, mean[n], bound, se[n])
        assert bound < log_p[n]


def test_cubo_matches_its_closed_form_bound_above_log_p():
    m = lg_with_offset_encoder(offset=0.1, scale=1.4)  # a wide q keeps w² light-tailed
    x, _ = m.sample(3)
    log_p, post_mean, post_cov, q_mean, q_var = closed_forms(m, x)
    runs = repeated("cubo", m, x, 20000, 40, n=2.0)
    mean, se = runs.mean(0), runs.std(0, ddof=1) / math.sqrt(runs.shape[0])
    for n in range(3):
        bound = log_p[n] + 0.5 * gaussian_renyi_divergence(post_mean[n], post_cov, q_mean[n], np.diag(q_var[n]), 2.0)
        assert bound > log_p[n]
        assert abs(mean[n] - bound) < 5 * se[n] + 1e-9, (n, mean[n], bound, se[n])
        assert mean[n] - 5 * se[n] > log_p[n]  # the estimate at large k sits above log p(x)


@pytest.mark.slow
def test_sumo_is_unbiased_where_iwae_at_the_same_expected_cost_is_not():
    """A poor proposal (the prior): IWAE at SUMO's expected cost is significantly below log p(x); SUMO's
    mean is within 5 standard errors of it."""
    m = LinearGaussian.random(3, 1, 0.6, seed=2, dtype=torch.float64)
    x, _ = m.sample(2)
    log_p = lg_log_marginal(x.numpy(), m.weight.detach().numpy(), m.bias.detach().numpy(), float(m.noise_std))
    base, runs = 4, 20000
    cost = round(expected_cost(base))
    copies = x.repeat(runs, 1)  # every copy of a point gets its own samples (and its own K): [runs, 2]
    torch.manual_seed(1)
    sumo = lvbench.get_estimator("sumo")(m, copies, num_samples=base, proposal="prior").reshape(runs, 2).numpy()
    iwae = lvbench.get_estimator("iwae")(m, copies, num_samples=cost, proposal="prior").reshape(runs, 2).numpy()
    for n in range(2):
        se_sumo = sumo[:, n].std(ddof=1) / math.sqrt(sumo.shape[0])
        se_iwae = iwae[:, n].std(ddof=1) / math.sqrt(iwae.shape[0])
        assert abs(sumo[:, n].mean() - log_p[n]) < 5 * se_sumo, (sumo[:, n].mean(), log_p[n], se_sumo)
        assert iwae[:, n].mean() < log_p[n] - 5 * se_iwae, (iwae[:, n].mean(), log_p[n], se_iwae)


def test_sumo_expected_cost_matches_its_truncation_distribution():
    from lvbench.estimators.likelihood.sumo import _draw_truncation, tail_probability

    torch.manual_seed(0)
    draws = _draw_truncation(200_000, 80, 0.9, "cpu").double()
    se = draws.std() / math.sqrt(draws.numel())
    assert abs(draws.mean() - (expected_cost(0))) < 5 * se
    for j in (1, 2, 10, 80, 90):
        p = tail_probability(torch.tensor(j), 80, 0.9).item()
        observed = (draws >= j).double().mean().item()
        assert abs(observed - p) < 5 * math.sqrt(p * (1 - p) / draws.numel()) + 1e-12, (j, observed, p)


@pytest.mark.parametrize("name", ["renyi", "cubo", "sumo"])
def test_new_bounds_stream_without_extra_host_syncs(name):
    m = lg_with_offset_encoder()
    x, _ = m.sample(4)
    est = lvbench.get_estimator(name)
    with HostSyncs() as one:
        est(m, x, num_samples=64, chunk_size=64)
    with HostSyncs() as many:
        est(m, x, num_samples=64, chunk_size=1)
    assert one.counts == many.counts and one.total <= (2 if name == "sumo" else 1)  # sumo: also the largest K


def test_bad_options_are_refused():
    m = lg_with_offset_encoder()
    x, _ = m.sample(2)
    with pytest.raises(lvbench.LvbenchInputError, match="alpha must lie in"):
        lvbench.get_estimator("renyi")(m, x, num_samples=2, alpha=1.5)
    with pytest.raises(lvbench.LvbenchInputError, match="n must be >= 1"):
        lvbench.get_estimator("cubo")(m, x, num_samples=2, n=0.5)
    with pytest.raises(lvbench.LvbenchInputError, match="decay"):
        lvbench.get_estimator("sumo")(m, x, num_samples=2, decay=1.0)
