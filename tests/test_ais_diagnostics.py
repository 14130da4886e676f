"""AIS, BDMC and importance-weight diagnostics against closed forms (numpy/scipy)."""

import math

import numpy as np
import pytest
import torch
from reference_numpy import lg_log_marginal
from scipy import stats

import lvbench
from lvbench.analysis.metrics import band_counts, effective_sample_size, khat_band, khat_threshold, pareto_khat
from lvbench.estimators.likelihood import bdmc, log_importance_weights
from lvbench.estimators.likelihood.ais import AISConfig, ais_log_weights, annealing_schedule, pilot_step_sizes
from lvbench.models import VAE, GaussianMixture, LinearGaussian


def lg(d=6, latent=2, noise=0.7, seed=0):
    return LinearGaussian.random(d, latent, noise, seed=seed, dtype=torch.float64)


def numpy_annealed_log_normalizer(x, W, b, sigma, beta):
    """log ∫ N(z; 0, I) N(x; Wz + b, σ²I)^β dz = D(1-β)/2 log 2πσ² - D/2 log β + log N(x; b, WWᵀ + σ²/β I)."""
    D = W.shape[0]
    if beta == 0:
        return np.zeros(x.shape[0])
    cov = W @ W.T + sigma**2 / beta * np.eye(D)
    return (
        D * (1 - beta) / 2 * np.log(2 * np.pi * sigma**2)
        - D / 2 * np.log(beta)
        + np.atleast_1d(stats.multivariate_normal(b, cov).logpdf(x))
    )


def test_ais_partial_weights_match_closed_form_normalizers_of_every_annealed_target():
    """E[Π_{s<=t} w_s] = Z_{β_t} / Z_0 at every t, whatever the mixing: check each step within 5 SE."""
    m = lg()
    x, _ = m.sample(2)
    cfg = AISConfig(steps=40, schedule="linear")
    torch.manual_seed(0)
    eps = pilot_step_sizes(m, x, cfg)
    chains = 4000
    _, trace = ais_log_weights(m, x, chains, cfg, eps, trace=True)
    betas = annealing_schedule(40, "linear").numpy()
    W, b, sigma = m.weight.detach().numpy(), m.bias.detach().numpy(), float(m.noise_std)
    for t in range(0, 41, 4):
        expected = numpy_annealed_log_normalizer(x.numpy(), W, b, sigma, betas[t])
        lw = trace[t]
        est = (torch.logsumexp(lw, 0) - math.log(chains)).numpy()
        w = torch.exp(lw - lw.max(0).values)
        se = (w.std(0) / w.mean(0) / math.sqrt(chains)).numpy()  # delta method on log of the mean
        assert np.all(np.abs(est - expected) < 5 * se + 1e-12), (t, est, expected, se)


def test_ais_matches_exact_log_p_to_hundredths():
    m = lg(10, 3, 0.5).fit_encoder_to_posterior()
    x, _ = m.sample(6)
    torch.manual_seed(1)
    est = lvbench.get_estimator("ais")(m, x, num_samples=16, steps=300, start="encoder")
    truth = lg_log_marginal(x.numpy(), m.weight.detach().numpy(), m.bias.detach().numpy(), 0.5)
    assert np.abs(est.numpy() - truth).max() < 0.05


def test_ais_from_prior_converges_with_steps_and_schedules_work():
    m = lg(5, 2, 1.0, seed=2)
    x, _ = m.sample(4)
    truth = m.log_marginal(x).detach()
    errors = {}
    for steps in (5, 400):
        torch.manual_seed(2)
        errors[steps] = (lvbench.get_estimator("ais")(m, x, num_samples=8, steps=steps) - truth).abs().mean()
    assert errors[400] < errors[5] and errors[400] < 0.1
    for kind in ("linear", "sigmoid", "geometric"):
        beta = annealing_schedule(50, kind)
        assert beta[0] == 0 and beta[-1] == 1 and (beta.diff() > 0).all()


def test_ais_runs_on_a_vae_in_float32_with_chain_batches():
    torch.manual_seed(3)
    vae = VAE(20, 3, (16,))
    x = torch.bernoulli(torch.full((3, 20), 0.3))
    out = lvbench.get_estimator("ais")(vae, x, num_samples=6, steps=20, chain_batch=4)
    assert out.shape == (3,) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_ais_refuses_discrete_latents_and_bad_options():
    gmm = GaussianMixture.random()
    with pytest.raises(lvbench.IncompatibleError, match="continuous_latent"):
        lvbench.get_estimator("ais")(gmm, gmm.sample(2)[0], num_samples=2)
    m = lg()
    x, _ = m.sample(2)
    with pytest.raises(lvbench.LvbenchInputError, match="schedule"):
        lvbench.get_estimator("ais")(m, x, num_samples=2, schedule="cosine")
    with pytest.raises(lvbench.LvbenchInputError, match="start"):
        lvbench.get_estimator("ais")(m, x, num_samples=2, start="posterior")
    with pytest.raises(lvbench.LvbenchInputError, match="shape"):
        bdmc(m, x, torch.zeros(3, 2, dtype=torch.float64))
    xg, zg = gmm.sample(2)
    with pytest.raises(lvbench.IncompatibleError, match="bdmc: ais needs continuous_latent"):
        bdmc(gmm, xg, zg)


def test_bdmc_brackets_the_exact_value_and_narrows_with_steps():
    m = lg(8, 2, 0.6, seed=4)
    x, z = m.sample(5)
    truth = m.log_marginal(x).detach().numpy()
    gaps, reps = {}, 6
    for steps in (10, 200):
        lows, ups = [], []
        for r in range(reps):
            torch.manual_seed(100 + r)
            lo, up = bdmc(m, x, z, steps=steps, chains=4)
            lows.append(lo.numpy())
            ups.append(up.numpy())
        lows, ups = np.array(lows), np.array(ups)
        # E[lower] <= log p(x) <= E[upper]: checked on the average over repeats and points
        lo_err, up_err = (lows - truth).mean(), (ups - truth).mean()
        lo_se, up_se = (
            (lows - truth).std(ddof=1) / math.sqrt(lows.size),
            (ups - truth).std(ddof=1) / math.sqrt(ups.size),
        )
        assert lo_err < 5 * lo_se and up_err > -5 * up_se, (steps, lo_err, up_err)
        gaps[steps] = (ups - lows).mean()
    assert gaps[10] > 1.0 and gaps[200] < 0.5 * gaps[10], gaps


def test_pareto_khat_recovers_known_tail_shapes():
    rng = np.random.default_rng(0)
    for shape in (0.2, 0.5, 0.9):
        w = stats.genpareto(c=shape).rvs(size=(30, 20000), random_state=rng) + 1e-3
        k = pareto_khat(np.log(w))
        se = k.std(ddof=1) / math.sqrt(k.size)
        # the PSIS prior shrinks toward 0.5 by a factor 10/(M + 10) with M = 424 tail draws
        shrink = (0.5 - shape) * 10 / 434
        assert abs(k.mean() - shape - shrink) < 5 * se, (shape, k.mean(), se)


def test_khat_flags_naive_mc_in_high_dimensions_but_not_a_good_proposal():
    big = LinearGaussian.random(50, 20, 0.5, seed=0)
    x, _ = big.sample(5)
    k_naive = pareto_khat(log_importance_weights(big, x, 2000, proposal="prior").T)
    assert (k_naive > 0.7).all() and (khat_band(k_naive, 2000) == "very bad").all()
    small = LinearGaussian.random(5, 2, 1.0, seed=0).fit_encoder_to_posterior()
    xs, _ = small.sample(5)
    k_good = pareto_khat(log_importance_weights(small, xs, 2000).T)
    assert (k_good < 0.5).all()
    exact = pareto_khat(log_importance_weights(small.double(), xs.double(), 100, proposal="posterior").T)
    assert np.isneginf(exact).all()  # equal weights: no tail at all


def test_khat_thresholds_and_bands():
    assert khat_threshold(100) == pytest.approx(0.5)
    assert khat_threshold(10_000) == pytest.approx(0.7)
    assert list(khat_band(np.array([0.3, 0.6, 0.9, 1.5]), 10_000)) == ["good", "ok", "bad", "very bad"]
    assert band_counts(np.array([0.1, 0.2, 2.0]), 1000).to_dict() == {"good": 2, "ok": 0, "bad": 0, "very bad": 1}
    with pytest.raises(ValueError, match="at least 5"):
        pareto_khat(np.zeros((2, 3)))


def test_effective_sample_size_against_numpy():
    rng = np.random.default_rng(1)
    lw = rng.normal(size=(3, 500)) * 2
    w = np.exp(lw)
    expected = w.sum(1) ** 2 / (w**2).sum(1)
    np.testing.assert_allclose(effective_sample_size(torch.from_numpy(lw)).numpy(), expected, rtol=1e-10)
    assert effective_sample_size(torch.zeros(1, 50)).item() == pytest.approx(50)
