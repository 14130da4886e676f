"""NVIL, REBAR and RELAX: control variates fitted before the study. Unbiased against the exact gradient of
the binary-latent VAE (enumeration) whatever the fit, with φ-gradient variance far below the plain score
function's; the fit is recorded, seeded apart from the draws, and never taken from a spec."""

import json
import math

import pytest
import torch
from helpers import assert_unbiased
from test_binary_latents import small_model

import lvbench
from lvbench.analysis.exact import exact_gradient
from lvbench.analysis.gradient_analysis import analyze_gradients, draw_gradients


def phi_gradients(draws):
    return torch.cat([draws.values[:, draws.slices[n]] for n in draws.groups["phi"]], 1)


@pytest.mark.parametrize(
    "name,options",
    [("nvil", {}), ("rebar", {}), ("relax", {}), ("rebar", {"fit_steps": 0}), ("relax", {"fit_steps": 0})],
)
@pytest.mark.parametrize("objective,k", [("elbo", 1), ("elbo", 2), ("iwae", 3)])
def test_fitted_control_variates_are_unbiased_against_the_exact_gradient(name, options, objective, k):
    m = small_model(1)
    x, _ = m.sample(3)
    torch.manual_seed(2)
    draws = draw_gradients(m, x, name, k, repeats=4000, objective=objective, **options)
    assert draws.fit["fit_steps"] == options.get("fit_steps", 300 if name == "nvil" else 200)
    assert_unbiased(draws, exact_gradient(m, x, objective, k))


@pytest.mark.parametrize("objective,k", [("elbo", 1), ("iwae", 3)])
def test_rebar_relax_and_nvil_have_less_variance_than_the_plain_score_function(objective, k):
    """Total φ-gradient variance over 3,000 draws each; margin 5 SE of the sample variances."""
    m = small_model(1)
    x, _ = m.sample(3)
    variances = {}
    for name in ("score_function", "nvil", "rebar", "relax"):
        torch.manual_seed(3)
        variances[name] = phi_gradients(draw_gradients(m, x, name, k, repeats=3000, objective=objective)).var(0).sum()
    rel_se = math.sqrt(2 / 2999)  # relative SE of a sample variance (normal approximation)
    for name in ("nvil", "rebar", "relax"):
        assert variances[name] * (1 + 5 * rel_se) < variances["score_function"] * (1 - 5 * rel_se), variances


def test_nvil_variance_normalization_rescales_phi_by_the_recorded_residual_std():
    m = small_model(1)
    x, _ = m.sample(3)
    torch.manual_seed(4)
    control = lvbench.fit_control("nvil", m, x, 2, "elbo")
    scale = max(1.0, control.record["residual_std"])
    draws = draw_gradients(m, x, "nvil", 2, repeats=4000, objective="elbo", normalize=True, control=control)
    exact = exact_gradient(m, x, "elbo", 2)
    rescaled = {n: (v / scale if n.startswith("encoder") else v) for n, v in exact.items()}
    assert scale > 1.0
    assert_unbiased(draws, rescaled)


def test_the_fit_is_recorded_in_the_study_and_the_runner_seeds_it_apart_from_the_draws(tmp_path):
    m = small_model(1)
    x, _ = m.sample(3)
    table = analyze_gradients(m, x, "rebar", 2, repeats=50, fit_steps=30)
    record = json.loads(table["fit"].iloc[0])
    assert record["fit_steps"] == 30 and record["temperature"] > 0 and "loss_last_steps" in record
    spec = {
        "run": {"repeats": 2, "points": 3},
        "models": {"sbn": {"type": "sigmoid_belief_net", "data_dim": 6, "latent_dim": 3, "hidden": [5]}},
        "gradients": {"relax": {"k": [2], "repeats": 30, "fit_steps": 20}, "nvil": {"k": [2], "repeats": 30}},
    }
    first = lvbench.run(spec, tmp_path / "a").gradient_summary
    again = lvbench.run(spec, tmp_path / "b").gradient_summary
    for name, steps in (("relax", 20), ("nvil", 300)):
        rows = first[first["estimator"] == name]
        assert json.loads(rows["fit"].iloc[0])["fit_steps"] == steps

    def untimed(summary):  # the same fit and draws in a second folder, bit for bit (but the fit's seconds)
        fits = [{k: v for k, v in json.loads(f).items() if k != "fit_seconds"} for f in summary["fit"]]
        table = summary.assign(fit=[json.dumps(f, sort_keys=True) for f in fits]).sort_values(["estimator", "group"])
        return table[["estimator", "group", "mean_norm", "trace_variance", "fit"]].reset_index(drop=True)

    assert untimed(first).equals(untimed(again))


def test_a_spec_cannot_set_the_control_and_bad_fit_options_are_refused(tmp_path):
    spec = {
        "models": {"sbn": {"type": "sigmoid_belief_net", "data_dim": 6, "latent_dim": 3, "hidden": [5]}},
        "gradients": {"rebar": {"k": [2], "control": 1.0}},
    }
    with pytest.raises(lvbench.LvbenchInputError, match="control is set by the runner"):
        lvbench.run(spec, tmp_path)
    m = small_model(1)
    x, _ = m.sample(2)
    with pytest.raises(lvbench.LvbenchInputError, match="fit_steps must be an integer >= 0"):
        draw_gradients(m, x, "rebar", 2, repeats=2, fit_steps=-1)
    gaussian = lvbench.get_model("linear_gaussian")()
    xg, _ = gaussian.sample(2)
    with pytest.raises(lvbench.LvbenchInputError, match="rebar needs binary_latent"):
        draw_gradients(gaussian, xg, "rebar", 2, repeats=2)
