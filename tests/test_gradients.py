"""Gradient estimators against gradients of closed forms written in numpy (central differences),
and against each other where the objective has no closed form. Tolerances: 5 standard errors."""

import math

import numpy as np
import pytest
import torch
from helpers import assert_unbiased, gmm_model, gmm_numpy_gradient, lg_model, lg_numpy_elbo_gradient
from reference_numpy import central_difference, lg_log_marginal
from scipy import stats

import lvbench
from lvbench.analysis.gradient_analysis import analyze_gradients, draw_gradients, per_coordinate, summarize_gradients
from lvbench.models import LinearGaussian

GRADIENT = ["dreg", "enumeration", "gumbel_softmax", "reparam", "score_function", "score_function_loo", "stl", "vimco"]


def test_registry_lists_all_gradient_estimators():
    assert set(GRADIENT) <= set(lvbench.list_estimators("gradient"))
    for name in GRADIENT:
        assert lvbench.get_estimator(name).objectives
    assert "unbiased" not in lvbench.get_estimator("gumbel_softmax").properties


@pytest.mark.parametrize(
    "name,k",
    [
        ("reparam", 1),
        ("reparam", 4),
        ("stl", 1),
        ("stl", 4),
        ("score_function", 1),
        ("score_function", 3),
        ("score_function_loo", 3),
    ],
)
def test_elbo_gradients_unbiased_on_linear_gaussian(name, k):
    m = lg_model()
    x, _ = m.sample(4)
    reference = lg_numpy_elbo_gradient(m, x)
    torch.manual_seed(1)
    draws = draw_gradients(m, x, name, k, repeats=4000 if "score" in name else 1500, objective="elbo")
    assert_unbiased(draws, reference)


def test_stl_unbiased_at_k1_for_iwae_objective():
    m = lg_model(2)
    x, _ = m.sample(3)
    torch.manual_seed(2)
    draws = draw_gradients(m, x, "stl", 1, repeats=1500, objective="iwae")
    assert_unbiased(draws, lg_numpy_elbo_gradient(m, x))


@pytest.mark.parametrize("name", ["dreg", "vimco", "score_function", "score_function_loo"])
def test_iwae_gradients_agree_with_reparameterized_iwae(name):
    m = lg_model(3)
    x, _ = m.sample(3)
    k, r = 5, 3000
    torch.manual_seed(3)
    base = draw_gradients(m, x, "reparam", k, repeats=r, objective="iwae").values
    other = draw_gradients(m, x, name, k, repeats=3 * r if name != "dreg" else r, objective="iwae").values
    se = (base.var(0) / base.shape[0] + other.var(0) / other.shape[0]).sqrt()
    z = (base.mean(0) - other.mean(0)).abs() / se
    assert z.max() < 5, z.max()


def test_stl_is_biased_for_iwae_at_large_k_while_dreg_is_not():
    """Tucker et al. 2018: STL's IWAE gradient is biased for k > 1 (visible here with many draws)."""
    m = lg_model(4)
    with torch.no_grad():
        m.encoder.log_scale.add_(0.8)
    x, _ = m.sample(2)
    torch.manual_seed(4)
    reparam = draw_gradients(m, x, "reparam", 20, repeats=4000, objective="iwae")
    stl = draw_gradients(m, x, "stl", 20, repeats=4000, objective="iwae")
    phi = torch.cat([torch.arange(s.start, s.stop) for n, s in stl.slices.items() if n.startswith("encoder")])
    se = (reparam.values.var(0) / 4000 + stl.values.var(0) / 4000).sqrt()[phi]
    z = (reparam.values.mean(0) - stl.values.mean(0)).abs()[phi] / se
    assert z.max() > 8, z.max()


@pytest.mark.parametrize(
    "name,objective,k",
    [
        ("enumeration", "elbo", 1),
        ("enumeration", "iwae", 3),
        ("score_function", "elbo", 2),
        ("score_function_loo", "elbo", 4),
        ("score_function", "iwae", 3),
        ("vimco", "iwae", 3),
    ],
)
def test_discrete_latent_gradients_unbiased_against_enumeration_in_numpy(name, objective, k):
    m = gmm_model(1)
    x, _ = m.sample(3)
    reference = gmm_numpy_gradient(m, x, objective, k)
    torch.manual_seed(5)
    draws = draw_gradients(m, x, name, k, repeats=3000 if name != "enumeration" else 2, objective=objective)
    assert_unbiased(draws, reference)
    if name == "enumeration":
        assert draws.values.var(0).max() == 0


def test_gumbel_softmax_is_biased_and_less_so_at_lower_temperature():
    m = gmm_model(2)
    x, _ = m.sample(4)
    ref = gmm_numpy_gradient(m, x, "elbo")
    torch.manual_seed(6)
    errors = {}
    for tau in (2.0, 0.1):
        d = draw_gradients(m, x, "gumbel_softmax", 4, repeats=2000, objective="elbo", temperature=tau)
        errors[tau] = (d.values.mean(0) - d.vector({n: torch.as_tensor(v) for n, v in ref.items()})).norm()
    assert errors[0.1] < errors[2.0]
    assert errors[2.0] > 0.1  # clearly biased at high temperature


def test_stl_and_dreg_have_zero_variance_phi_gradients_at_the_exact_posterior():
    W = torch.tensor([[1.5, 0.0], [0.0, 0.7], [0.0, 0.0]], dtype=torch.float64)
    m = LinearGaussian(W, torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64), 0.5).fit_encoder_to_posterior()
    x, _ = m.sample(3)
    torch.manual_seed(7)
    for name, objective in [("stl", "elbo"), ("stl", "iwae"), ("dreg", "iwae"), ("reparam", "iwae")]:
        d = draw_gradients(m, x, name, 4, repeats=200, objective=objective)
        phi = torch.cat([torch.arange(s.start, s.stop) for n, s in d.slices.items() if n.startswith("encoder")])
        var = d.values[:, phi].var(0).max().item()
        if name == "reparam":
            assert var > 1e-2  # the plain pathwise estimator keeps its score-term noise
        else:
            assert var < 1e-20, (name, objective, var)


def one_dim_case():
    """D = L = 1, N = 1, k = 1: log p(x, z) = const - (a/2)(z - c)² exactly, with a = 1 + w²/σ²."""
    w, b, sigma = 1.3, 0.2, 0.6
    m = LinearGaussian(torch.tensor([[w]], dtype=torch.float64), torch.tensor([b], dtype=torch.float64), sigma)
    mean, log_s = 0.4, -0.3
    with torch.no_grad():
        m.encoder.weight.zero_()
        m.encoder.bias.fill_(mean)
        m.encoder.log_scale.fill_(log_s)
    x = torch.tensor([[1.1]], dtype=torch.float64)
    a = 1 + w**2 / sigma**2
    c = w * (1.1 - b) / sigma**2 / a
    log_px = stats.norm(b, math.sqrt(w**2 + sigma**2)).logpdf(1.1)
    return m, x, a, c, mean, math.exp(log_s), log_px


def test_gaussian_case_closed_form_gradient_and_variance_of_both_families():
    """Gradient of the ELBO w.r.t. q's mean m is -a(m - c). Pathwise: g = -a(z - c), variance a²s².
    Score function: g = (f(z) - 1) ε / s with f = α' + β ε + γ ε², whose moments are Gaussian."""
    m, x, a, c, mean, s, log_px = one_dim_case()
    d = mean - c
    alpha = log_px + 0.5 * math.log(a) + math.log(s) - 0.5 * a * d**2 - 1.0
    beta, gamma = -a * d * s, (1 - a * s**2) / 2
    sf_second_moment = (alpha**2 + 3 * beta**2 + 15 * gamma**2 + 6 * alpha * gamma) / s**2
    closed = {
        "reparam": (-a * d, a**2 * s**2),
        "score_function": (-a * d, sf_second_moment - (beta / s) ** 2),
    }
    torch.manual_seed(8)
    for name, (mean_g, var_g) in closed.items():
        r = 20000
        draws = draw_gradients(m, x, name, 1, repeats=r, objective="elbo")
        g = draws.values[:, draws.slices["encoder.bias"]].flatten().numpy()
        se_mean = g.std() / math.sqrt(r)
        assert abs(g.mean() - mean_g) < 5 * se_mean, (name, g.mean(), mean_g)
        se_var = math.sqrt((np.mean((g - g.mean()) ** 4) - g.var() ** 2) / r)
        assert abs(g.var() - var_g) < 5 * se_var, (name, g.var(), var_g, se_var)


def test_analysis_table_snr_matches_direct_computation():
    m = lg_model(9)
    x, _ = m.sample(3)
    torch.manual_seed(9)
    draws = draw_gradients(m, x, "reparam", 2, repeats=300)
    table = summarize_gradients(draws)
    g = draws.values.double().numpy()
    for group, names in draws.groups.items():
        idx = np.concatenate([np.arange(draws.slices[n].start, draws.slices[n].stop) for n in names])
        sd = g[:, idx].std(0, ddof=1)
        keep = sd > 0
        direct = np.mean(np.abs(g[:, idx].mean(0))[keep] / sd[keep])
        row = table.set_index("group").loc[group]
        assert row["snr"] == pytest.approx(direct, rel=1e-10)
        assert row["snr_median"] == pytest.approx(np.median(np.abs(g[:, idx].mean(0))[keep] / sd[keep]), rel=1e-10)
        norm = np.linalg.norm(g[:, idx].mean(0)) / np.sqrt((sd**2).sum())
        assert row["snr_norm"] == pytest.approx(norm, rel=1e-10)
        assert row["trace_variance"] == pytest.approx((sd**2).sum(), rel=1e-10)
    coords = per_coordinate(draws)
    assert len(coords) == g.shape[1]


def test_analyze_gradients_reports_bias_against_exact_reference():
    m = lg_model(10)
    x, _ = m.sample(3)
    table = analyze_gradients(m, x, "reparam", 2, objective="elbo", repeats=2000, seed=0)
    assert set(table["group"]) >= {"theta", "phi", "weight", "encoder.bias"}
    assert (table["reference"] == "exact").all()
    groups = table.set_index("group")
    assert groups.loc["theta", "bias_norm"] < 5 * groups.loc["theta", "bias_norm_se"]
    assert groups.loc["phi", "cosine"] > 0.99
    assert not table["is_reference"].any()


def test_every_estimator_of_a_comparison_meets_the_same_reference():
    """One reference per (model, objective, k): the same numbers whichever estimator is studied, and the
    reference's own estimator marked (its bias against its own kind of draws proves nothing)."""
    m = lg_model(10)
    x, _ = m.sample(3)
    tables = {
        name: analyze_gradients(
            m, x, name, 4, objective="iwae", repeats=50, reference_draws=300, seed=i, reference_seed=7
        )
        for i, name in enumerate(["dreg", "reparam", "stl"])
    }
    for name, table in tables.items():
        assert table["reference"].iloc[0] == "dreg mean of 300 draws"
        assert table["is_reference"].all() == (name == "dreg")
        rows = table.set_index("group")
        np.testing.assert_allclose(
            rows.loc["theta", "reference_norm"], tables["dreg"].set_index("group").loc["theta", "reference_norm"]
        )
    state = torch.get_rng_state()
    analyze_gradients(m, x, "dreg", 4, objective="iwae", repeats=5, reference_draws=20, seed=None, reference_seed=3)
    assert not torch.equal(state, torch.get_rng_state())  # the draws used it, the reference did not reset it


def test_vectorized_and_looped_draws_have_the_same_distribution():
    m = lg_model(11)
    x, _ = m.sample(2)
    torch.manual_seed(11)
    a = draw_gradients(m, x, "dreg", 3, repeats=1500, objective="iwae", vectorize=True)
    b = draw_gradients(m, x, "dreg", 3, repeats=1500, objective="iwae", vectorize=False)
    assert a.method == "vmap" and b.method == "loop"
    se = (a.values.var(0) / 1500 + b.values.var(0) / 1500).sqrt()
    assert ((a.values.mean(0) - b.values.mean(0)).abs() < 5 * se + 1e-9).all()
    # and the R draws are independent: not all the same
    assert a.values.std(0).max() > 0


def test_log_marginal_reference_is_exact():
    m = lg_model(12)
    x, _ = m.sample(2)
    from lvbench.analysis.exact import exact_gradient

    g = exact_gradient(m, x, "log_marginal")
    xn, sigma = x.numpy(), float(m.noise_std)
    params = {"weight": m.weight.detach().numpy().copy(), "bias": m.bias.detach().numpy().copy()}
    fd = central_difference(lambda p: lg_log_marginal(xn, p["weight"], p["bias"], sigma).mean(), params)
    np.testing.assert_allclose(g["weight"].numpy(), fd["weight"], atol=1e-6)
    np.testing.assert_allclose(g["bias"].numpy(), fd["bias"], atol=1e-6)


@lvbench.estimators.estimator(
    "test_unbatchable_reparam", kind="gradient", needs=("reparameterizable", "encoder"), objectives=("elbo",)
)
def _unbatchable(model, x, k, objective="elbo"):
    """The reparam surrogate behind a data-dependent Python branch, which vmap cannot batch."""
    surrogate = lvbench.get_estimator("reparam")(model, x, num_samples=k, objective=objective)
    if float(surrogate.detach()) > 1e30:
        raise RuntimeError("unreachable")
    return surrogate


def test_draws_fall_back_to_a_loop_where_vmap_cannot_batch():
    m = lg_model(13)
    x, _ = m.sample(3)
    for vectorize in (True, "auto"):
        d = draw_gradients(m, x, "test_unbatchable_reparam", 2, repeats=40, vectorize=vectorize)
        assert d.method == "loop" and d.values.shape[0] == 40
    with pytest.raises(ValueError, match="vectorize"):
        draw_gradients(m, x, "reparam", 2, repeats=4, vectorize="yes")


def test_auto_decides_from_the_problem_so_draws_are_bit_identical(monkeypatch):
    """ "auto" must not time anything: the same seed gives the same bits however fast each method runs."""
    import time as time_module

    m = lg_model(14)
    x, _ = m.sample(3)

    def draws():
        torch.manual_seed(5)
        return draw_gradients(m, x, "reparam", 2, repeats=40, vectorize="auto", batch=8)

    first = draws()
    clock = iter(range(10**6))
    monkeypatch.setattr(time_module, "perf_counter", lambda: float(next(clock)) ** 3)  # a wildly uneven clock
    second = draws()
    assert first.method == second.method == "vmap"
    assert torch.equal(first.values, second.values)
    assert first.values.std(0).max() > 0  # independent draws


def test_default_vmap_batch_fits_the_memory_budget():
    """Draws are batched as many as fit a chunk's budget: all R for a toy model, one at a time where a
    single draw's activations fill it (a fixed batch would exhaust memory at large N·k)."""
    from lvbench.models import VAE

    m = lg_model()
    x, _ = m.sample(4)
    assert draw_gradients(m, x, "reparam", 2, repeats=40, vectorize=True).batch == 40
    vae = VAE(784, 8, (16,))
    xv, _ = vae.sample(100)  # 100 points x 3 (8 + 16 + 784) floats x 8 bytes x k = 100: 194 MB per draw
    draws = draw_gradients(vae, xv, "reparam", 100, repeats=3, vectorize=True)
    assert draws.batch == 1 and draws.values.shape == (3, sum(p.numel() for p in vae.parameters()))
    with pytest.raises(lvbench.LvbenchInputError, match="batch"):
        draw_gradients(m, x, "reparam", 2, repeats=4, batch=0)


def test_auto_loops_when_only_one_draw_fits_a_batch():
    m = lg_model()
    x, _ = m.sample(4)
    assert draw_gradients(m, x, "reparam", 2, repeats=20, vectorize="auto", batch=1).method == "loop"
    assert draw_gradients(m, x, "reparam", 2, repeats=20, vectorize=True, batch=1).method == "vmap"


def test_exact_iwae_by_count_vectors_matches_numpy_tuples_and_monte_carlo_at_large_k():
    """The exact IWAE-k of a discrete latent sums over multinomial count vectors; against numpy's sum over
    all C^k tuples (k = 5) and, at k = 100 where tuples are out of reach, against IWAE Monte Carlo."""
    from reference_numpy import gmm_objective

    from lvbench.analysis.exact import exact_gradient, exact_objective, has_exact

    m = gmm_model(3)
    x, _ = m.sample(4)
    layers = [
        (layer.weight.detach().numpy(), layer.bias.detach().numpy())
        for layer in m.encoder.net
        if hasattr(layer, "weight")
    ]
    args = (x.numpy(), m.logits.detach().numpy(), m.means.detach().numpy(), m.log_stds.exp().detach().numpy(), layers)
    np.testing.assert_allclose(
        exact_objective(m, x, "iwae", 5).detach().numpy(), gmm_objective(*args, "iwae", 5), rtol=1e-10
    )
    assert has_exact(m, "iwae", 100, 32)
    exact = exact_objective(m, x, "iwae", 100).detach()
    torch.manual_seed(0)
    runs = torch.stack([lvbench.get_estimator("iwae")(m, x, num_samples=100) for _ in range(400)])
    se = runs.std(0) / math.sqrt(400)
    assert ((runs.mean(0) - exact).abs() < 5 * se).all()
    assert (exact_objective(m, x, "iwae", 10) < exact).all() and (exact <= m.log_marginal(x) + 1e-12).all()
    grads = exact_gradient(m, x, "iwae", 100)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_the_norm_snr_bootstrap_equals_resampling_the_draws_one_by_one_in_numpy():
    from lvbench.analysis.gradient_analysis import BOOTSTRAP, _bootstrap_norm_snr_se

    g = torch.randn(60, 300, dtype=torch.float64) * 0.5 + torch.linspace(-0.2, 0.3, 300, dtype=torch.float64)
    idx = torch.randint(0, 60, (BOOTSTRAP, 60), generator=torch.Generator().manual_seed(0)).numpy()
    draws = g.numpy()
    snr = [np.linalg.norm(draws[i].mean(0)) / np.sqrt(draws[i].var(0, ddof=1).sum()) for i in idx]
    assert _bootstrap_norm_snr_se(g) == pytest.approx(np.std(snr, ddof=1), rel=1e-10)
