"""Registry: three verbs, loud duplicates, third-party plugins through entry points."""

import subprocess
import sys
import textwrap

import pytest
from helpers import make_plugin_dist

import lvbench
from lvbench.core.registry import ESTIMATORS


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="already registered"):
        lvbench.register_estimator("iwae", kind="likelihood")(lambda m, x, k: None)
    with pytest.raises(ValueError, match="already registered"):
        lvbench.register_model("vae")(lambda: None)


def test_bad_registrations_are_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        lvbench.register_estimator("zz_bad_kind", kind="posterior")(lambda m, x, k: None)
    with pytest.raises(ValueError, match="unknown capabilities"):
        lvbench.register_estimator("zz_bad_needs", kind="likelihood", needs=("gpu",))(lambda m, x, k: None)
    with pytest.raises(ValueError, match="objectives"):
        lvbench.register_estimator("zz_no_objective", kind="gradient")(lambda m, x, k: None)
    with pytest.raises(ValueError, match="registry names"):
        lvbench.register_estimator("bad name", kind="likelihood")
    assert "zz_bad_kind" not in ESTIMATORS._entries


def test_list_and_pattern():
    assert lvbench.list_estimators("likelihood", "i*") == ["importance", "iwae"]
    with pytest.raises(ValueError, match="unknown estimator kind"):
        lvbench.list_estimators("likelihoods")
    entry = lvbench.get_estimator("iwae")
    assert entry.description.startswith("IWAE-k")


PLUGIN = """
import torch
import lvbench
from lvbench.estimators import estimator

@estimator("plugin_prior_mean", kind="likelihood", properties=("lower_bound",))
def plugin_prior_mean(model, x, k):
    '''log p(x | E[z]) with E[z] = 0: a third-party toy estimator.'''
    return model.likelihood(model.prior().mean.expand(x.shape[0], -1)).log_prob(x)
"""


def test_third_party_plugin_appears_and_broken_plugin_only_warns(tmp_path):
    (tmp_path / "good_plugin.py").write_text(PLUGIN)
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "clashing_plugin.py").write_text(PLUGIN.replace("plugin_prior_mean", "iwae"))
    make_plugin_dist(tmp_path, "good_plugin", "[lvbench.estimators]\nprior_mean = good_plugin\n")
    make_plugin_dist(tmp_path, "broken_plugin", "[lvbench.estimators]\nbroken = broken_plugin\n")
    make_plugin_dist(tmp_path, "clashing_plugin", "[lvbench.estimators]\nclash = clashing_plugin\n")
    script = textwrap.dedent(
        """
        import warnings, torch, lvbench
        from lvbench.models import LinearGaussian
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            names = lvbench.list_estimators("likelihood")
        print("listed", "plugin_prior_mean" in names)
        print("warned", any("broken" in str(w.message) and "boom" in str(w.message) for w in caught))
        print("clash", [str(w.message) for w in caught if "clash" in str(w.message)])
        m = LinearGaussian.random(4, 2)
        x, _ = m.sample(3)
        print("shape", tuple(lvbench.get_estimator("plugin_prior_mean")(m, x, num_samples=1).shape))
        print("source", lvbench.get_estimator("plugin_prior_mean").source)
        """
    )
    env = {"PYTHONPATH": str(tmp_path)}
    import os

    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    assert "listed True" in out.stdout
    assert "warned True" in out.stdout
    assert "shape (3,)" in out.stdout
    assert "plugin 'prior_mean'" in out.stdout
    # the refusal of a duplicate name names the plugin that tried, not lvbench
    assert "refusing to overwrite it with one from plugin 'clash' (clashing_plugin)" in out.stdout
    assert "iwae" in lvbench.list_estimators()


@pytest.mark.parametrize(
    "typo,meant",
    [("iwea", "iwae"), ("IWAE", "iwae"), ("naive-mc", "naive_mc"), ("score-function", "score_function")],
)
def test_unknown_estimator_suggests_the_close_name(typo, meant):
    with pytest.raises(lvbench.UnknownNameError, match=f"Did you mean '{meant}'") as err:
        lvbench.get_estimator(typo)
    assert isinstance(err.value, KeyError) and isinstance(err.value, lvbench.LvbenchInputError)


def test_unknown_model_suggests_the_close_name():
    with pytest.raises(lvbench.UnknownNameError, match="Did you mean 'linear_gaussian'"):
        lvbench.get_model("linear_gausian")
    with pytest.raises(lvbench.UnknownNameError, match="unknown model 'zzz'.  ?Registered"):
        lvbench.get_model("zzz")


def test_documented_submodules_are_bound_and_diagnostics_keep_the_input_type():
    import numpy as np
    import torch

    lw = torch.randn(3, 200, dtype=torch.float64)
    khat, ess = lvbench.metrics.pareto_khat(lw), lvbench.metrics.effective_sample_size(lw)
    assert isinstance(khat, torch.Tensor) and isinstance(ess, torch.Tensor) and khat.shape == ess.shape == (3,)
    khat_np, ess_np = lvbench.metrics.pareto_khat(lw.numpy()), lvbench.metrics.effective_sample_size(lw.numpy())
    assert isinstance(khat_np, np.ndarray) and isinstance(ess_np, np.ndarray)
    np.testing.assert_allclose(khat.numpy(), khat_np)
    np.testing.assert_allclose(ess.numpy(), ess_np)
    for name in ("data", "exact", "gradient_analysis", "measure", "metrics", "models", "training"):
        assert hasattr(lvbench, name), name
