"""Generic tests that iterate the registry: every registered estimator is held to what it declares
(``lvbench check`` at the test suite's scale) and to its declared option ranges at spec load, and every
registered model to what it declares about data. A new estimator or model is tested here with no test
written for it."""

from __future__ import annotations

import pytest
import torch

import lvbench
from lvbench.analysis.checks import QUICK, check_estimator
from lvbench.core.options import type_hints
from lvbench.core.registry import DATASET_USES
from lvbench.estimators import estimator
from lvbench.experiments.spec import SpecError, resolve_spec

#: lvbench's estimators and installed plugins' (not the deliberately broken ones test modules register)
PACKAGED = [n for n in lvbench.list_estimators() if lvbench.get_estimator(n).code.get("distribution")]
#: Declarations no finite-k check can refute: consistency (a limit) and CUBO's upper bound (reached as
#: k -> infinity, biased low at every finite k).
LIMITS = {"consistent", "upper_bound"}


def test_the_generic_tests_cover_every_builtin_estimator():
    from lvbench.core.registry import ESTIMATORS

    builtin = {e.name for e in ESTIMATORS.entries() if e.code.get("module", "").startswith("lvbench.")}
    assert len(builtin) >= 20 and builtin <= set(PACKAGED)


@pytest.mark.parametrize("name", PACKAGED)
def test_every_estimator_meets_its_contract_and_declared_properties(name):
    table = check_estimator(name, scale=QUICK)
    failed = table[table["result"] == "FAIL"]
    assert failed.empty, failed.to_string()
    ran = table[table["result"] == "pass"]
    assert not ran.empty, f"{name}: no check could run on any ground-truth model:\n{table.to_string()}"
    entry = lvbench.get_estimator(name)
    declared = (set(entry.properties) - LIMITS) | ({"unbiased"} if entry.unbiased_for else set())
    checked = {c.removeprefix("declared ") for c in table["check"] if c.startswith("declared ")}
    assert declared <= checked, f"{name} declares {sorted(declared - checked)} but nothing checked it"


def _outside(entry, option: str) -> float:
    """A value of the option's type (an int for an int option) that its declared interval refuses."""
    interval = entry.constraints[option]
    if interval.low is not None:
        value = interval.low - 1.0 if not interval.low_open else interval.low
    else:
        value = interval.high + 1.0 if not interval.high_open else interval.high
    return int(value) if type_hints(entry.obj).get(option) is int else value


CONSTRAINED = [(n, option) for n in PACKAGED for option in lvbench.get_estimator(n).constraints]


@pytest.mark.parametrize(("name", "option"), CONSTRAINED)
def test_a_declared_range_is_refused_when_the_spec_loads(name, option):
    entry = lvbench.get_estimator(name)
    section = "estimators" if entry.kind == "likelihood" else "gradients"
    value = _outside(entry, option)
    spec = {"models": {"lg": {"type": "linear_gaussian"}}, section: {name: {"k": [5], option: value}}}
    with pytest.raises(SpecError, match=rf"{section}\.{name}\.{option} must (lie in|be)"):
        resolve_spec(spec)
    with pytest.raises(lvbench.LvbenchInputError, match=rf"{name}: {option} must"):  # and on a direct call
        model = lvbench.get_model("linear_gaussian")()
        entry(model, model.sample(2)[0], num_samples=5, **{option: value})


def test_constraints_are_shown_by_lvbench_list():
    from lvbench.describe import describe

    for name, option in CONSTRAINED:
        shown = {o["name"]: o for o in describe(name)["options"]}
        assert shown[option]["range"].startswith("must "), (name, option)


@pytest.mark.parametrize("name", lvbench.list_models())
def test_every_model_is_held_to_its_declared_use_of_data(name):
    entry = lvbench.get_model(name)
    assert entry.dataset in DATASET_USES
    with_data = {"models": {"m": {"type": name, "dataset": "digits"}}, "estimators": {"iwae": {"k": [5]}}}
    without = {"models": {"m": {"type": name}}, "estimators": {"iwae": {"k": [5]}}}
    if entry.dataset == "none":
        with pytest.raises(SpecError, match="`dataset` is only for types"):
            resolve_spec(with_data)
    else:
        resolve_spec(with_data)
    if entry.dataset == "required":
        with pytest.raises(SpecError, match="needs `dataset`"):
            resolve_spec(without)
    else:
        resolve_spec(without)


@estimator("contracts_turns_onednn_off", kind="likelihood", needs=("encoder",))
def _turns_onednn_off(model, x, k):
    """IWAE, after switching oneDNN off for the whole process (the fault)."""
    torch.backends.mkldnn.enabled = False
    return lvbench.get_estimator("iwae")(model, x, num_samples=k)


def test_lvbench_check_reports_and_undoes_a_change_to_torch_global_settings():
    before = torch.backends.mkldnn.enabled
    table = check_estimator("contracts_turns_onednn_off", scale=QUICK).set_index("check")
    row = table.loc["leaves torch's global settings as it found them"]
    assert row["result"] == "FAIL" and "mkldnn" in row["detail"]
    assert torch.backends.mkldnn.enabled == before  # undone
