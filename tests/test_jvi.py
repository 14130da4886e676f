"""Jackknife variational inference (``jvi``): the subset formula against a brute-force numpy/scipy sum over
every leave-out set, numerical safety where one weight dominates, and bias below IWAE's at the same k
against the closed-form log p(x) of a linear-Gaussian model."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from test_bounds import closed_forms, lg_with_offset_encoder

import lvbench
from lvbench.compute.measure import HostSyncs
from lvbench.estimators.likelihood import log_importance_weights
from lvbench.estimators.likelihood.jvi import jackknife_coefficients, jackknife_from_log_weights


def brute_force_jvi(lw: np.ndarray, order: int) -> float:
    """Σ_j c_j · mean over every size-(k-j) subset S of log mean_{i∈S} w_i, each subset summed directly."""
    k = len(lw)
    total = 0.0
    for j in range(order + 1):
        c = (-1) ** j * (k - j) ** order / (math.factorial(j) * math.factorial(order - j))
        subsets = [logsumexp(np.delete(lw, list(t))) - math.log(k - j) for t in itertools.combinations(range(k), j)]
        total += c * np.mean(subsets)
    return total


CASES = {
    "random": np.random.default_rng(0).normal(size=8) * 3,
    "one dominates by 700 nats": np.array([700.0, 0, -1, -2, -3, -4, -5, -6]),
    "two tie and dominate": np.array([50.0, 50, -1, -2, -3, -4, -5, -6]),
    "a negligible weight": np.array([0.0, -1, -2, -800, -3, -5, -40, -2]),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("order", [1, 2, 3])
def test_jackknife_matches_brute_force_over_all_subsets(case, order):
    lw = CASES[case]
    permuted = torch.tensor(np.random.default_rng(1).permutation(lw))[:, None]  # sample order must not matter
    ours = jackknife_from_log_weights(permuted, order).item()
    assert ours == pytest.approx(brute_force_jvi(lw, order), rel=1e-12, abs=1e-9)


def test_the_naive_leave_one_out_would_have_failed_where_one_weight_dominates():
    """log(S - w_i) as S + log1p(-w_i/S) is -inf for the dominant weight; the safe formula is not."""
    lw = torch.tensor(CASES["one dominates by 700 nats"])
    total = torch.logsumexp(lw, 0)
    assert torch.isneginf(total + torch.log1p(-torch.exp(lw[0] - total)))
    assert math.isfinite(jackknife_from_log_weights(lw[:, None], 1).item())


def test_coefficients_sum_to_one_and_order_one_is_the_classic_jackknife():
    for k, m in ((5, 1), (10, 2), (20, 3)):
        assert sum(jackknife_coefficients(k, m)) == pytest.approx(1.0, abs=1e-9)
    assert jackknife_coefficients(7, 1) == [7.0, -6.0]


def test_jvi_is_less_biased_than_iwae_at_the_same_k():
    """Bias against the closed-form log p(x) from 20,000 copies of each point; the order-2 jackknife is less
    biased still. Margins are 5 standard errors of the difference."""
    m = lg_with_offset_encoder(offset=0.5, scale=1.0)
    x, _ = m.sample(3)
    log_p = closed_forms(m, x)[0]
    runs, k = 20000, 8
    copies = x.repeat(runs, 1)

    def bias(name, **options):
        torch.manual_seed(1)
        e = lvbench.get_estimator(name)(m, copies, num_samples=k, **options).reshape(runs, 3).numpy()
        return e.mean(0) - log_p, e.std(0, ddof=1) / math.sqrt(runs)

    (b_iwae, se_iwae), (b_1, se_1), (b_2, se_2) = bias("iwae"), bias("jvi", order=1), bias("jvi", order=2)
    assert (b_iwae < -5 * se_iwae).all()  # IWAE is significantly biased here
    assert (np.abs(b_1) + 5 * np.hypot(se_1, se_iwae) < np.abs(b_iwae)).all(), (b_1, b_iwae)
    assert (np.abs(b_2) + 5 * np.hypot(se_2, se_1) < np.abs(b_1)).all(), (b_2, b_1)


def test_jvi_is_the_jackknife_of_the_importance_weights_it_draws():
    m = lg_with_offset_encoder()
    x, _ = m.sample(4)
    est = lvbench.get_estimator("jvi")
    torch.manual_seed(3)
    one = est(m, x, num_samples=30, chunk_size=30)
    torch.manual_seed(3)
    lw = log_importance_weights(m, x, 30)
    torch.testing.assert_close(one, jackknife_from_log_weights(lw, 1).to(x.dtype), rtol=0, atol=1e-12)
    with HostSyncs() as syncs:
        est(m, x, num_samples=30, chunk_size=7)
    assert syncs.total <= 1


def test_order_must_be_below_k_and_the_reason_is_given():
    m = lg_with_offset_encoder()
    x, _ = m.sample(2)
    est = lvbench.get_estimator("jvi")
    with pytest.raises(lvbench.LvbenchInputError, match="order 2 needs k > 2"):
        est(m, x, num_samples=2, order=2)
    with pytest.raises(lvbench.LvbenchInputError, match="order must be an integer >= 1"):
        est(m, x, num_samples=5, order=0)
    assert "needs k > 3" in lvbench.core.registry.incompatibility("jvi", m, num_samples=3, order=3)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_streamed_order_one_matches_brute_force_in_any_chunking(case, chunk):
    """Order 1 streams: the largest weight and power sums of the rest, no weights kept."""
    from lvbench.estimators.likelihood.jvi import StreamingJackknife

    lw = torch.tensor(np.random.default_rng(2).permutation(CASES[case]))[:, None]
    reducer = StreamingJackknife()
    for part in lw.split(chunk):
        reducer.update(part)
    assert reducer.result().item() == pytest.approx(brute_force_jvi(CASES[case], 1), rel=1e-12, abs=1e-9)
