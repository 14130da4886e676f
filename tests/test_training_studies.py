"""Training studies: learning curves against independent ground truth (numpy/scipy PPCA optimum, the EM
theorem), exact resumption after a crash or kill -9, counted costs, and the findings they support."""

import math
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

import lvbench
from lvbench.analysis.anchors import em_step, ppca_optimum
from lvbench.analysis.learning import Evaluator, LearningRun, evaluation_steps, train_curve
from lvbench.core.registry import ESTIMATORS
from lvbench.data import sample_from_model
from lvbench.estimators.base import estimator
from lvbench.experiments.spec import SpecError, parse_spec
from lvbench.models.gaussian_mixture import GaussianMixture, gaussian_mixture
from lvbench.models.linear_gaussian import linear_gaussian
from lvbench.reports.training import budget_table, comparisons, training_findings

# -- the PPCA optimum, against numpy's eigendecomposition and scipy's Gaussian density ------------------


def _numpy_ppca_mean_loglik(x: np.ndarray, w: np.ndarray, b: np.ndarray, sigma: float) -> float:
    cov = w @ w.T + sigma**2 * np.eye(x.shape[1])
    return float(stats.multivariate_normal(mean=b, cov=cov).logpdf(x).mean())


@pytest.mark.parametrize("noise_std", [0.5, 3.0])  # 3.0: some sample eigenvalues fall below σ²
def test_ppca_optimum_is_the_maximum_of_the_likelihood_computed_with_numpy_and_scipy(noise_std):
    truth = linear_gaussian(data_dim=6, latent_dim=2, noise_std=noise_std, seed=3).double()
    x, _ = sample_from_model(truth, 400, seed=1)
    x = x.detach()
    opt = ppca_optimum(x, 2, noise_std)
    xn = x.numpy()
    centred = xn - xn.mean(0)
    lam, u = np.linalg.eigh(centred.T @ centred / len(xn))
    lam, u = lam[::-1], u[:, ::-1]
    w_numpy = u[:, :2] * np.sqrt(np.maximum(lam[:2] - noise_std**2, 0))
    best = _numpy_ppca_mean_loglik(xn, w_numpy, xn.mean(0), noise_std)
    assert opt.mean_log_likelihood == pytest.approx(best, rel=1e-10, abs=1e-10)
    attained = _numpy_ppca_mean_loglik(xn, opt.weight.numpy(), opt.bias.numpy(), noise_std)
    assert attained == pytest.approx(best, rel=1e-10, abs=1e-10)
    rng = np.random.default_rng(0)
    for _ in range(20):  # no nearby parameters do better: a maximum, not just a stationary formula
        w = w_numpy + 0.05 * rng.standard_normal(w_numpy.shape)
        b = xn.mean(0) + 0.05 * rng.standard_normal(xn.shape[1])
        assert _numpy_ppca_mean_loglik(xn, w, b, noise_std) < best
    # the rotation does not matter: W R attains the same value
    rot = np.linalg.qr(rng.standard_normal((2, 2)))[0]
    assert _numpy_ppca_mean_loglik(xn, w_numpy @ rot, xn.mean(0), noise_std) == pytest.approx(best, rel=1e-10)


# -- EM: monotone (a theorem), and reaching the optimum of a well-separated mixture -------------------


def test_em_never_decreases_the_training_log_likelihood():
    truth = gaussian_mixture(data_dim=2, components=3, separation=2.0, seed=1).double()
    x, _ = sample_from_model(truth, 500, seed=2)
    model = gaussian_mixture(data_dim=2, components=3, seed=7).double()
    trace = [em_step(model, x) for _ in range(60)]
    assert np.all(np.diff(trace) >= -1e-10), np.diff(trace).min()
    assert trace[-1] > trace[0] + 0.5  # and it did climb


def test_em_reaches_the_optimum_of_a_well_separated_mixture_from_a_good_start():
    logits = torch.zeros(3, dtype=torch.float64)
    means = torch.tensor([[-10.0, 0.0], [0.0, 10.0], [10.0, 0.0]], dtype=torch.float64)
    stds = torch.ones(3, 2, dtype=torch.float64)
    truth = GaussianMixture(logits, means, stds, encoder=False)
    n = 3000
    x, _ = sample_from_model(truth, n, seed=0)
    x = x.detach()
    start = GaussianMixture(logits + 0.3, means + 1.5, stds * 1.8, encoder=False)
    for _ in range(200):
        last = em_step(start, x)
    final = em_step(start, x)
    assert final == pytest.approx(last, abs=1e-9)  # converged
    with torch.no_grad():
        at_truth = float(truth.log_marginal(x).mean())
    assert final >= at_truth - 1e-9  # the maximum-likelihood fit is at least as likely as the truth
    se = 1.0 / math.sqrt(n / 3)  # SE of a component mean: σ / √(N π_c)
    assert torch.all((start.means - means).abs() < 5 * se)
    # the fixed point EM reaches from the truth itself is the same optimum
    for _ in range(200):
        from_truth = em_step(truth, x)
    assert final == pytest.approx(from_truth, abs=1e-8)


# -- the loop: resumption, costs, budgets ----------------------------------------------------------------


def _ppca_setup(steps=60, method="reparam", k=4, evaluations=6, **kwargs):
    truth = linear_gaussian(seed=0)
    x, _ = sample_from_model(truth, 300, seed=1)
    heldout, _ = sample_from_model(truth, 100, seed=2)
    x, heldout = x.detach(), heldout.detach()
    run = LearningRun(method, k, "elbo", steps, evaluation_steps(steps, evaluations), lr=0.01, batch_size=50, **kwargs)
    evaluator = Evaluator(heldout, x, "elbo", k, seed=5, optimum=ppca_optimum(x, 3, 0.5))
    return x, run, evaluator


def test_a_run_resumed_after_a_crash_gives_the_rows_of_an_uninterrupted_one():
    x, run, evaluator = _ppca_setup()
    whole = train_curve(linear_gaussian(seed=9), x, run, evaluator, data_seed=1, draw_seed=2)
    saved = []

    class Crash(Exception):
        pass

    def save(state):
        saved.append(state)
        if len(saved) == 3:
            raise Crash

    with pytest.raises(Crash):
        train_curve(linear_gaussian(seed=9), x, run, evaluator, data_seed=1, draw_seed=2, save=save)
    state = saved[-1]
    assert 0 < state["step"] < run.steps
    resumed = train_curve(linear_gaussian(seed=123), x, run, evaluator, data_seed=1, draw_seed=2, state=state)
    drop = ["seconds"]
    pd.testing.assert_frame_equal(pd.DataFrame(whole).drop(columns=drop), pd.DataFrame(resumed).drop(columns=drop))


@pytest.mark.parametrize(("method", "per_sample"), [("reparam", 1), ("score_function_loo", 1)])
def test_model_evaluations_are_counted_per_sample_and_point(method, per_sample):
    x, run, evaluator = _ppca_setup(steps=10, method=method, evaluations=3)
    rows = pd.DataFrame(train_curve(linear_gaussian(seed=9), x, run, evaluator, data_seed=1, draw_seed=2))
    last = rows[rows["step"] == 10].iloc[0]
    assert last["evaluations"] == per_sample * run.k * run.batch_size * 10


def test_arm_costs_more_evaluations_than_the_score_function_and_enumeration_two_to_the_l():
    from lvbench.models.binary_vae import sigmoid_belief_net

    truth = sigmoid_belief_net(data_dim=12, latent_dim=4, hidden=[8], seed=0)
    x, _ = sample_from_model(truth, 64, seed=1)
    x = x.detach()
    counts = {}
    for method in ("score_function", "arm", "enumeration"):
        run = LearningRun(method, 3, "elbo", 5, (0, 5), lr=0.01, batch_size=32)
        rows = train_curve(
            sigmoid_belief_net(data_dim=12, latent_dim=4, hidden=[8], seed=4),
            x,
            run,
            Evaluator(x, x, "elbo", 3, seed=0),
            data_seed=1,
            draw_seed=2,
        )
        counts[method] = rows[-1]["evaluations"]
    assert counts["score_function"] == 3 * 32 * 5
    assert counts["arm"] >= 2 * counts["score_function"]  # two decoder passes per antithetic draw
    assert counts["enumeration"] == 2**4 * 32 * 5


def test_a_seconds_budget_stops_training_at_an_evaluation():
    x, run, evaluator = _ppca_setup(steps=10**6, evaluations=40, seconds=0.5)
    rows = pd.DataFrame(train_curve(linear_gaussian(seed=9), x, run, evaluator, data_seed=1, draw_seed=2))
    assert rows["step"].max() < 10**6
    assert rows["seconds"].max() < 5


def test_gradient_variance_is_recorded_when_asked():
    x, run, evaluator = _ppca_setup(steps=5, evaluations=2)
    evaluator.gradient_draws = 8
    rows = pd.DataFrame(train_curve(linear_gaussian(seed=9), x, run, evaluator, data_seed=1, draw_seed=2))
    variance = rows[rows["metric"] == "grad_trace_variance"]["value"]
    assert len(variance) == 2 and (variance > 0).all()


# -- studies through the spec: exact vs unbiased, a biased plateau, EM, errors --------------------------


SBN = {"type": "sigmoid_belief_net", "data_dim": 16, "latent_dim": 4, "hidden": [16]}


def _study(tmp_path, studies, models=None, name="o"):
    spec = {
        "run": {"seed": 0},
        "models": models or {"sbn": SBN, "lg": {"type": "linear_gaussian"}},
        "training": studies,
    }
    return lvbench.run(spec, out=tmp_path / name)


def test_the_exact_gradient_is_not_significantly_worse_than_any_unbiased_estimator(tmp_path):
    study = {
        "model": "sbn",
        "estimators": ["enumeration", "score_function_loo", "disarm", "straight_through"],
        "k": 4,
        "steps": 150,
        "lr": 0.01,
        "batch_size": 50,
        "seeds": 4,
        "evaluations": 5,
        "train_points": 500,
        "heldout_points": 300,
    }
    results = _study(tmp_path, {"sbn": study})
    assert results.counts["done"] == 16
    versus = comparisons(results.training)
    unbiased = versus[versus["method_kind"] == "unbiased"]
    assert set(unbiased["estimator"]) == {"score_function_loo", "disarm"}
    assert (unbiased["versus"] == "enumeration").all()
    assert not (unbiased["significant"] & (unbiased["difference"] > 0)).any(), unbiased
    assert (versus.loc[versus["estimator"] == "straight_through", "method_kind"] == "biased").all()
    # the tidy table: one row per (cell, step, metric), with its costs
    tidy = results.training
    assert {"cell_id", "step", "seconds", "evaluations", "metric", "value", "se"} <= set(tidy.columns)
    assert not tidy.duplicated(["cell_id", "step", "metric"]).any()
    exact = tidy[tidy["metric"] == "heldout_log_px"]
    assert (exact["heldout_name"] == "exact log p(x)").all()
    # every method of a replicate starts from the same model: equal values at step 0
    start = exact[exact["step"] == 0].groupby("replicate")["value"].nunique()
    assert (start == 1).all()


@pytest.fixture
def biased_estimator():
    """A deliberately biased gradient: the reparameterized ELBO's gradient plus that of a penalty
    -0.05 ‖W‖² (weight decay the estimator does not declare), which shrinks PPCA's W below the
    maximum-likelihood solution."""

    @estimator("zz_shrunk_reparam", kind="gradient", needs=("reparameterizable", "encoder"), objectives=("elbo",))
    def shrunk(model, x, k, objective="elbo"):
        q = model.encoder(x)
        z = q.rsample((k,))
        elbo = (model.log_joint(x, z) - q.log_prob(z)).mean()
        return elbo - 0.05 * model.weight.square().sum()

    yield "zz_shrunk_reparam"
    ESTIMATORS._entries.pop("zz_shrunk_reparam", None)


def test_a_deliberately_biased_estimators_plateau_is_detected(tmp_path, biased_estimator):
    study = {
        "model": "lg",
        "estimators": ["reparam", biased_estimator],
        "k": 4,
        "steps": 800,
        "lr": 0.02,
        "seeds": 3,
        "evaluations": 6,
    }
    results = _study(tmp_path, {"ppca": study})
    versus = comparisons(results.training)
    row = versus[versus["estimator"] == biased_estimator].iloc[0]
    assert row["versus"] == "reparam" and row["plateau"], row
    findings = training_findings(results.training)
    assert any(f"{biased_estimator} plateaus" in line for line in findings)
    table = budget_table(results.training)
    reparam = table[table["estimator"] == "reparam"].iloc[0]
    biased = table[table["estimator"] == biased_estimator].iloc[0]
    assert biased["excess_nll"] > reparam["excess_nll"] + 5 * biased["excess_nll_se"]


def test_em_runs_as_a_baseline_beside_gradient_estimators_and_is_refused_elsewhere(tmp_path):
    models = {"mix": {"type": "gaussian_mixture"}, "lg": {"type": "linear_gaussian"}}
    studies = {
        "gmm": {"model": "mix", "estimators": ["em", "score_function_loo"], "k": 5, "steps": 30, "seeds": 2},
        "bad": {"model": "lg", "estimators": ["em", "nvil"], "steps": 5, "seeds": 1},
    }
    results = _study(tmp_path, studies, models)
    reasons = results.statuses.set_index("estimator").loc[["em", "nvil"]]
    skipped = results.statuses[results.statuses["status"] == "skipped"]
    assert set(skipped["estimator"]) == {"em", "nvil"}
    assert any("gaussian_mixture" in r for r in reasons["reason"])
    assert any("control variate" in r for r in reasons["reason"])
    em = results.training[(results.training["estimator"] == "em") & (results.training["metric"] == "train_log_px")]
    for _, curve in em.groupby("replicate"):
        assert np.all(np.diff(curve.sort_values("step")["value"]) >= -1e-5)


@pytest.mark.parametrize(
    ("study", "message"),
    [
        ({"estimators": ["reparam"]}, "needs `model`"),
        ({"model": "nope", "estimators": ["reparam"]}, "has no model 'nope'"),
        ({"model": "lg", "estimators": ["reparm"]}, "Did you mean 'reparam'"),
        ({"model": "lg", "estimators": ["iwae"]}, "is a likelihood estimator"),
        ({"model": "lg", "estimators": ["dreg"], "objective": "elbo"}, "not 'elbo'"),
        ({"model": "lg", "estimators": ["reparam"], "evaluations": 1}, "evaluations must be >= 2"),
        ({"model": "lg", "estimators": ["reparam"], "heldout": {"estimator": "reparam"}}, "not a likelihood estimator"),
        ({"model": "lg", "estimators": ["reparam"], "stepz": 5}, "stepz"),
        ({"model": "lg", "estimators": []}, "needs `estimators`"),
        ({"model": "lg", "estimators": {"em": {"k": 3}}}, "takes no options"),
        ({"model": "lg", "estimators": ["reparam"], "steps": 10, "evaluate_at": [5, 20]}, "beyond steps = 10"),
    ],
)
def test_bad_training_tables_are_refused_naming_the_key(study, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({"models": {"lg": {"type": "linear_gaussian"}}, "training": {"t": study}})


def test_an_explicit_evaluation_schedule_is_kept_with_the_first_and_last_steps():
    spec = parse_spec(
        {
            "models": {"lg": {"type": "linear_gaussian"}},
            "training": {"t": {"model": "lg", "estimators": ["reparam"], "steps": 50, "evaluate_at": [10, 3]}},
        }
    )
    from lvbench.experiments.cells import expand
    from lvbench.experiments.prepare import instantiate

    cells, _ = expand(spec, {"lg": instantiate(spec.models[0], spec.run)}, {"lg": "key"}, ("cpu",))
    assert {tuple(c.options["study"]["eval_steps"]) for c in cells} == {(0, 3, 10, 50)}
    assert len(cells) == 3  # one per seed


def test_kill_minus_nine_mid_training_resumes_to_the_uninterrupted_numbers(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[models.lg]\ntype = "linear_gaussian"\n[training.t]\nmodel = "lg"\nestimators = ["score_function_loo"]\n'
        "k = 8\nsteps = 2000\nlr = 0.01\nseeds = 1\nevaluations = 16\n"
    )
    base = [sys.executable, "-m", "lvbench.cli", "run", str(spec), "--quiet", "--no-report"]
    assert subprocess.run([*base, "--out", str(tmp_path / "clean")], capture_output=True).returncode == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*base, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((killed / "training").glob("*.pt")):
            time.sleep(0.02)
        time.sleep(0.3)  # into the next stretch of steps
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert list((killed / "training").glob("*.pt")), "no resume point was left"
    assert subprocess.run([*base, "--out", str(killed)], capture_output=True).returncode == 0
    assert not list((killed / "training").glob("*.pt"))  # spent once the curve is stored
    a, b = (lvbench.load_results(tmp_path / n).training.drop(columns=["seconds"]) for n in ("clean", "killed"))
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_a_training_study_runs_on_each_device_and_resumes_there(tmp_path, device):
    x, run, evaluator = _ppca_setup(steps=20, evaluations=4)
    evaluator.heldout, evaluator.train = evaluator.heldout.to(device), evaluator.train.to(device)
    saved = []
    model = linear_gaussian(seed=9).to(device)
    whole = train_curve(model, x, run, evaluator, data_seed=1, draw_seed=2, save=saved.append)
    assert next(model.parameters()).device.type == device
    resumed = train_curve(linear_gaussian(seed=1).to(device), x, run, evaluator, 1, 2, state=saved[1])
    pd.testing.assert_frame_equal(
        pd.DataFrame(whole).drop(columns=["seconds"]), pd.DataFrame(resumed).drop(columns=["seconds"])
    )


def test_compare_tests_training_outcomes_and_counts_every_lost_replicate(tmp_path):
    """The gate sees training studies: a rerun of the same study is no change; a study trained with a
    learning rate too small to learn is a significant regression of held-out log p(x) (paired over the
    replicates, which start from the same initializations); one replicate lost in B is a regression of
    its own, named by study and replicate."""
    from lvbench.reports.compare import compare

    def study(lr, seeds=3):
        return {"ppca": {"model": "lg", "estimators": ["reparam"], "k": 4, "steps": 300, "lr": lr, "seeds": seeds}}

    models = {"lg": {"type": "linear_gaussian"}}
    _study(tmp_path, study(0.02), models, name="a")
    _study(tmp_path, study(0.02), models, name="same")
    _study(tmp_path, study(1e-5), models, name="slow")
    _study(tmp_path, study(0.02, seeds=2), models, name="lost")

    def training_rows(result):
        return result[result["kind"] == "training"]

    same = compare(str(tmp_path / "a"), str(tmp_path / "same"))
    assert not same["regression"].any() and len(training_rows(same)) == 1
    assert training_rows(same)["p"].iloc[0] == 1.0  # identical replicates
    slow = training_rows(compare(str(tmp_path / "a"), str(tmp_path / "slow")))
    assert slow["metric"].tolist() == ["heldout_log_px"] and slow["test"].iloc[0] == "paired t over 3 replicates"
    assert bool(slow["regression"].iloc[0]) and slow["b"].iloc[0] < slow["a"].iloc[0]
    lost = compare(str(tmp_path / "a"), str(tmp_path / "lost"))
    gone = lost[(lost["metric"] == "cell") & lost["regression"]]
    assert len(gone) == 1 and gone["study"].iloc[0] == "ppca" and gone["replicate"].iloc[0] == 2, gone
    assert "absent from B's spec" in gone["test"].iloc[0]


@pytest.mark.parametrize("model_type", ["vae", "sigmoid_belief_net", "linear_gaussian"])
def test_an_evaluation_is_counted_once_whichever_route_reaches_the_model(model_type):
    """The VAE's log_joint calls its conditioned_log_joint; the base model's conditioned closure calls
    log_joint: either way a (z, x) pair counts once, and nothing counts outside ``counting``."""
    from lvbench.analysis.learning import EvaluationCounter
    from lvbench.core.registry import get_model

    params = {"data_dim": 6, "latent_dim": 3}
    if model_type != "linear_gaussian":
        params["hidden"] = [5]
    model = get_model(model_type).obj(**params)
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    z = model.prior().sample((7, 4))
    with EvaluationCounter(model) as counter:
        model.log_joint(x, z)  # not counting yet
        with counter.counting():
            model.log_joint(x, z)
            model.conditioned_log_joint(x)(z)
    assert counter.count == 2 * 7 * 4
    assert "log_joint" not in model.__dict__ and "conditioned_log_joint" not in model.__dict__
