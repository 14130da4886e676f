"""The calibrated CPU kernels (``lvbench.compute.kernels``): overrides, the per-machine cache, what a
calibration leaves behind, the Bernoulli likelihood under either choice against scipy, and the one-pass
data check that replaced an elementwise one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.special import expit, log_expit
from torch.distributions import constraints

from lvbench.compute import kernels
from lvbench.compute.bernoulli import bernoulli_log_prob_autograd
from lvbench.compute.matmul import cpu_matmul_backend, onednn_enabled
from lvbench.compute.provenance import machine_info
from lvbench.core.errors import LvbenchInputError
from lvbench.core.validation import _finite_and_supported

ALL_ATEN = "linear=aten,linear_autograd=aten,bernoulli_autograd=bce"


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache folder of this test's own, and the in-process choice forgotten before and after."""
    monkeypatch.setenv(kernels.CACHE_ENV_VAR, str(tmp_path))
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    kernels._states.clear()
    yield tmp_path / "kernels.json"
    kernels._states.clear()


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("matmul=aten", "unknown kernel choice 'matmul'"),
        ("linear=mkl", "linear must be one of \\['onednn', 'aten'\\], got 'mkl'"),
        ("bernoulli_autograd=", "bernoulli_autograd must be one of"),
    ],
)
def test_bad_overrides_are_named(monkeypatch, text, pattern):
    monkeypatch.setenv(kernels.ENV_VAR, text)
    with pytest.raises(LvbenchInputError, match=pattern):
        kernels.kernel_choices()


def test_overrides_win_and_are_reported_without_measuring(fresh_cache, monkeypatch):
    monkeypatch.setenv(kernels.ENV_VAR, ALL_ATEN)
    assert kernels.kernel_choices() == {"linear": "aten", "linear_autograd": "aten", "bernoulli_autograd": "bce"}
    report = kernels.kernel_report()
    assert report["overridden"] == sorted(kernels.CHOICES) and report["milliseconds"] == {}
    assert not fresh_cache.exists()  # nothing was left to measure
    assert cpu_matmul_backend() == "aten/aten/bce"


def test_a_calibration_is_cached_per_machine_reused_and_redone_on_request(fresh_cache, monkeypatch):
    choices = kernels.kernel_choices()
    cache = json.loads(fresh_cache.read_text())
    entry = cache[kernels.cache_key()]
    assert entry["choices"] == choices and entry["threads"] == torch.get_num_threads()
    for name, candidates in kernels.CHOICES.items():
        assert choices[name] in candidates
        if name != "bernoulli_autograd" and not onednn_enabled():
            assert choices[name] == "aten" and name not in entry["milliseconds"]
            continue
        assert set(entry["milliseconds"][name]) == set(candidates)
    times = entry["milliseconds"]
    for name in ("linear", "linear_autograd", "bernoulli_autograd"):  # the fastest, unless within the margin
        if name in times:  # of the default (Bernoulli timed on the chosen autograd route)
            best, default = min(times[name], key=times[name].get), kernels.CHOICES[name][0]
            if name != "bernoulli_autograd" and not onednn_enabled():
                default = "aten"
            expected = best if times[name][best] < (1 - kernels.MARGIN) * times[name][default] else default
            assert choices[name] == expected and all(t > 0 for t in times[name].values())
    # another process reads the cache instead of measuring: a planted choice is what it gets
    planted = {**entry, "choices": {**choices, "bernoulli_autograd": "softplus_sum"}, "measured_at": "planted"}
    fresh_cache.write_text(json.dumps({**cache, kernels.cache_key(): planted}))
    kernels._states.clear()
    assert kernels.kernel("bernoulli_autograd") == "softplus_sum"
    assert kernels.kernel_report()["measured_at"] == "planted"
    report = kernels.calibrate()  # measures again and replaces it
    assert report["measured_at"] != "planted"
    assert json.loads(fresh_cache.read_text())[kernels.cache_key()]["measured_at"] == report["measured_at"]


def test_a_choice_flips_only_beyond_the_noise_margin():
    candidates = ("onednn", "aten")
    assert kernels.fastest({"onednn": 10.0, "aten": 9.7}, candidates) == "onednn"
    assert kernels.fastest({"onednn": 10.0, "aten": 9.0}, candidates) == "aten"
    assert kernels.fastest({"onednn": 9.0, "aten": 10.0}, candidates) == "onednn"


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", '{"%s": {"choices": {"linear": "mkl"}}}'])
def test_a_corrupt_or_foreign_cache_is_measured_again(fresh_cache, garbage):
    fresh_cache.write_text(garbage.replace("%s", kernels.cache_key()))
    choices = kernels.kernel_choices()
    assert all(choices[name] in candidates for name, candidates in kernels.CHOICES.items())
    assert json.loads(fresh_cache.read_text())[kernels.cache_key()]["choices"] == choices


def test_the_choice_depends_on_the_thread_count(fresh_cache):
    before = torch.get_num_threads()
    kernels.kernel_choices()
    try:
        torch.set_num_threads(1 if before > 1 else 2)
        kernels.kernel_choices()
    finally:
        torch.set_num_threads(before)
    keys = json.loads(fresh_cache.read_text())
    other = 1 if before > 1 else 2
    assert len(keys) == 2 and {v["threads"] for v in keys.values()} == {other, before}
    # a run records the kernels of its cells' thread count, not of the process's
    assert kernels.kernel_report(other)["threads"] == other and torch.get_num_threads() == before
    assert machine_info(other)["cpu_matmul"] == cpu_matmul_backend(other)


def test_calibrating_leaves_the_random_state_and_grad_mode_as_they_were(fresh_cache):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with torch.inference_mode():
        kernels.calibrate()
        assert torch.is_inference_mode_enabled()
        drawn = torch.rand(3)
    assert torch.equal(drawn, expected)
    with torch.no_grad():
        kernels.calibrate()
        assert not torch.is_grad_enabled()


def test_every_run_records_its_kernels(monkeypatch):
    monkeypatch.setenv(kernels.ENV_VAR, ALL_ATEN)
    info = machine_info()
    assert info["cpu_kernels"]["choices"] == {"linear": "aten", "linear_autograd": "aten", "bernoulli_autograd": "bce"}
    assert info["cpu_matmul"] == "aten/aten/bce"


@pytest.mark.parametrize("choice", ["bce", "softplus_sum"])
def test_the_autograd_bernoulli_likelihood_and_its_gradient_match_scipy(monkeypatch, choice):
    """Σ_d x_d l_d − softplus(l_d) and its gradient x − σ(l), under either calibrated kernel, against
    scipy in float64, logits from 10^-3 to 10^3 in size."""
    monkeypatch.setenv(kernels.ENV_VAR, f"linear=aten,linear_autograd=aten,bernoulli_autograd={choice}")
    gen = torch.Generator().manual_seed(2)
    logits = (
        torch.randn(4, 6, 200, generator=gen) * (10.0 ** torch.linspace(-3, 3, 4))[:, None, None]
    ).requires_grad_()
    x = torch.bernoulli(torch.full((6, 200), 0.4), generator=gen)
    value = bernoulli_log_prob_autograd(x, logits)
    value.sum().backward()
    l64, x64 = logits.detach().double().numpy(), x.double().numpy()
    expected = (x64 * log_expit(l64) + (1 - x64) * log_expit(-l64)).sum(-1)
    u32 = np.finfo(np.float32).eps
    magnitude = np.abs(l64).sum(-1) + 200
    np.testing.assert_array_less(np.abs(value.detach().double().numpy() - expected), 20 * u32 * magnitude)
    np.testing.assert_allclose(logits.grad.double().numpy(), x64 - expit(l64), rtol=0, atol=8 * u32)


SUPPORTS = {
    "none": None,
    "real": constraints.real,
    "boolean": constraints.boolean,
    "unit_interval": constraints.unit_interval,
    "half_open": constraints.half_open_interval(0.0, 1.0),
    "positive": constraints.positive,
}


@pytest.mark.parametrize("support", list(SUPPORTS))
def test_the_one_pass_data_check_agrees_with_the_elementwise_one(support):
    """``_finite_and_supported`` (from the minimum and maximum) against ``isfinite & support.check`` on
    data inside, on the edge of and outside each support, with NaN and infinities planted."""
    constraint = SUPPORTS[support]
    gen = torch.Generator().manual_seed(4)
    cases = [
        torch.bernoulli(torch.full((50, 30), 0.5), generator=gen),
        torch.rand(50, 30, generator=gen),
        torch.zeros(5, 3),
        torch.ones(5, 3),
        torch.randn(50, 30, generator=gen),
        torch.rand(50, 30, generator=gen) + 0.5,
    ]
    for bad in (float("nan"), float("inf"), -float("inf"), 0.5, 1.0, -0.0, 2.0):
        planted = torch.bernoulli(torch.full((50, 30), 0.5), generator=gen)
        planted[7, 11] = bad
        cases.append(planted)
    for x in cases:
        expected = torch.isfinite(x).all() if constraint is None else (torch.isfinite(x) & constraint.check(x)).all()
        assert bool(_finite_and_supported(x, constraint)) == bool(expected), (support, x.min(), x.max())
