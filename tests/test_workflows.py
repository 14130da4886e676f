"""How researchers use lvbench besides a TOML file: the Python API, selection from the command line,
listing what is registered, and exports of the summaries."""

import json
import re
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd
import pytest

import lvbench
from lvbench.cli import main
from lvbench.experiments import SpecError
from lvbench.experiments.spec import customize, default_spec_raw

SMALL = {
    "run": {"seed": 2, "repeats": 2, "points": 3},
    "models": {
        "lg": {"type": "linear_gaussian", "data_dim": 3, "latent_dim": 1, "encoder_fit": {"steps": 5}},
        "mix": {"type": "gaussian_mixture", "data_dim": 2, "components": 2, "encoder_fit": {"steps": 5}},
    },
    "estimators": {"iwae": {"k": [2, 5]}, "elbo": {"k": [2]}},
    "gradients": {"reparam": {"k": [2], "repeats": 10, "models": ["lg"]}},
}


def test_python_api_runs_a_dict_and_loads_the_folder_back(tmp_path):
    results = lvbench.run(SMALL, tmp_path / "o", estimators=["iwae", "reparam"], set=["run.repeats=3"])
    assert results.counts == {"done": 5, "failed": 0, "skipped": 0, "resumed": 0}
    assert set(results.summary["estimator"]) == {"iwae"} and set(results.summary["k"]) == {2, 5}
    assert (results.rows["repeat"].max() + 1) == 3 and len(results.rows) == 2 * 2 * 3 * 3
    assert set(results.gradient_summary["group"]) == {"theta", "phi"}
    again = lvbench.load_results(tmp_path / "o")
    pd.testing.assert_frame_equal(again.summary, results.summary)
    assert (again.statuses["status"] == "done").all()
    rerun = lvbench.run(SMALL, tmp_path / "o", estimators=["iwae", "reparam"], set=["run.repeats=3"])
    assert rerun.counts["resumed"] == 5 and rerun.counts["done"] == 0
    with pytest.raises(lvbench.LvbenchInputError, match="not an lvbench output folder"):
        lvbench.load_results(tmp_path)


def test_without_an_output_folder_a_run_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # read TMPDIR again
    try:
        results = lvbench.run(SMALL, models=["lg"], estimators=["elbo"])
    finally:
        tempfile.tempdir = None
    assert results.out_dir is None and results.counts["done"] == 1 and len(results.summary) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("lvbench-")] == []  # (torch keeps caches there)
    with pytest.raises(lvbench.LvbenchInputError, match="give out="):
        lvbench.run(SMALL, models=["lg"], estimators=["elbo"], report=True)


def test_customize_narrows_and_sets():
    raw = customize(default_spec_raw(), models=["lg"], estimators=["iwae", "dreg"], k=[10, 100], sets=["run.repeats=5"])
    assert list(raw["models"]) == ["lg"] and list(raw["estimators"]) == ["iwae"] and list(raw["gradients"]) == ["dreg"]
    assert raw["estimators"]["iwae"]["k"] == [10, 100] and raw["gradients"]["dreg"]["models"] == ["lg"]
    assert raw["run"]["repeats"] == 5
    raw = customize(SMALL, sets=["run.dtype=float64", "estimators.iwae.proposal=prior", "run.devices=['cpu']"])
    assert raw["run"]["dtype"] == "float64" and raw["estimators"]["iwae"]["proposal"] == "prior"
    assert raw["run"]["devices"] == ["cpu"] and "proposal" not in SMALL["estimators"]["iwae"]  # input untouched
    with pytest.raises(SpecError, match="no model 'lgg'. Did you mean 'lg'"):
        customize(SMALL, models=["lgg"])
    with pytest.raises(SpecError, match="'iwea' is neither a table of the spec nor a registered.*Did you mean 'iwae'"):
        customize(SMALL, estimators=["iwea"])
    with pytest.raises(SpecError, match="KEY=VALUE"):
        customize(SMALL, sets=["run.repeats"])


def test_cli_selection_without_toml(tmp_path, capsys):
    out = tmp_path / "o"
    args = ["run", "--models", "lg", "--estimators", "iwae,elbo", "--k", "3,7", "--set", "run.repeats=2"]
    assert main([*args, "--set", "run.points=3", "--out", str(out), "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith("4 to run, 0 already done, 0 skipped")
    assert "lg × iwae × k=7 × cpu" in listing and "mix" not in listing and "digits_vae" not in listing
    assert main(["run", "--models", "lgg", "--out", str(out)]) == 2
    assert "Did you mean 'lg'" in capsys.readouterr().err
    assert main(["run", "--k", "ten", "--out", str(out)]) == 2
    assert "--k must be comma-separated integers" in capsys.readouterr().err


def test_list_shows_options_defaults_allowed_values_and_docs(capsys):
    assert main(["list", "ais"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("ais (likelihood, from lvbench)")
    assert "schedule        default 'sigmoid'; 'sigmoid', 'linear', 'geometric'" in text
    assert "``" not in text and "unbiased for p(x)" in text
    assert main(["list", "vae"]) == 0
    assert "likelihood  default 'bernoulli'; 'bernoulli', 'gaussian'" in capsys.readouterr().out
    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {d["name"] for d in listed} >= {"iwae", "dreg", "vae", "linear_gaussian"}
    iwae = next(d for d in listed if d["name"] == "iwae")
    assert {"name": "proposal", "default": "encoder", "allowed": ["encoder", "posterior", "prior"]} in iwae["options"]
    assert main(["list", "gradient"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].startswith("Gradient estimators") and all(line.startswith("  ") for line in listing[1:])
    assert any(line.startswith("  dreg ") for line in listing)  # a name, then what it needs and is
    assert main(["list", "iwea"]) == 2
    assert "Did you mean 'iwae'" in capsys.readouterr().err


def test_summaries_are_exported_as_csv_json_and_booktabs_latex(tmp_path):
    results = lvbench.run(SMALL, tmp_path / "o", models=["lg"], report=True)
    folder = tmp_path / "o" / "report"
    summary = pd.read_csv(folder / "summary.csv")
    records = json.loads((folder / "summary.json").read_text())
    assert len(records) == len(summary) == 3
    assert records[0]["bias"] == pytest.approx(summary["bias"].iloc[0], rel=1e-12)
    tex = (folder / "summary.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "bias\\_se" in tex
    assert (folder / "gradient_summary.tex").exists() and (folder / "gradient_summary.json").exists()
    assert results.counts["failed"] == 0
    paper = (folder / "paper" / "lg.tex").read_text()  # the paper's table: estimators x k, bias ± SE
    assert "\\begin{tabular}" in paper and paper.count("\\mathbf{") == summary["k"].nunique()


COMPARED = {
    "run": {"seed": 1, "repeats": 8, "points": 16},
    "models": {
        # model seeds pinned (ground truth and encoder fit): the run seed changes the data and the draws
        "lg": {"type": "linear_gaussian", "data_dim": 5, "latent_dim": 2, "seed": 7, "encoder_fit": {"seed": 7}},
        "mix": {"type": "gaussian_mixture", "data_dim": 2, "components": 3, "seed": 7, "encoder_fit": {"seed": 7}},
    },
    "estimators": {"est": {"estimator": "importance", "k": [10, 100]}, "iwae": {"k": [10]}},
    "gradients": {"score_function_loo": {"k": [10], "repeats": 40}},
}


@pytest.mark.slow
def test_compare_finds_a_planted_regression_and_none_between_two_seeds(tmp_path, capsys):
    import copy

    from lvbench.reports.compare import compare

    lvbench.run(COMPARED, tmp_path / "a")
    other_seed = copy.deepcopy(COMPARED)
    other_seed["run"]["seed"] = 2
    lvbench.run(other_seed, tmp_path / "seed2")
    planted = copy.deepcopy(COMPARED)
    planted["estimators"]["est"]["proposal"] = "prior"  # a worse version of the estimator labelled "est"
    lvbench.run(planted, tmp_path / "planted")
    statistical = ["abs_bias", "std", "rmse"]
    null = compare(str(tmp_path / "a"), str(tmp_path / "seed2"))
    assert len(null) == 2 * 3 * 4 + 2 * 2
    assert not null[null["metric"].isin(statistical)]["significant"].any(), null[null["significant"]]
    assert null[null["kind"] == "gradient"]["test"].eq("not tested: different data").all()
    found = compare(str(tmp_path / "a"), str(tmp_path / "planted"))
    flagged = found[found["regression"] & found["metric"].isin(statistical)]
    assert set(flagged["estimator"]) == {"est"} and set(flagged["model"]) == {"lg", "mix"}
    assert not found[(found["estimator"] == "iwae") & found["metric"].isin(statistical)]["significant"].any()
    code = main(["compare", str(tmp_path / "a"), str(tmp_path / "planted"), "--fail-on-regression"])
    text = capsys.readouterr().out
    assert code == 1 and "regression: " in text and (tmp_path / "planted" / "comparison" / "comparison.html").exists()
    # timings of runs made one after another in one busy test process drift: by default they are not gated
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "seed2"), "--fail-on-regression"]) == 0
    assert "0 regressions" in capsys.readouterr().out


def test_holm_adjustment_against_a_hand_computed_example():
    from lvbench.reports.compare import holm

    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03, 0.005])), [0.03, 0.06, 0.06, 0.02])


def test_progress_moves_per_repeat_in_process_and_in_worker_processes(tmp_path, capsys):
    from collections import Counter

    from lvbench.experiments import plan_run, run_cell
    from lvbench.experiments.isolate import run_isolated
    from lvbench.experiments.spec import parse_spec

    spec = parse_spec(customize(SMALL, models=["lg"], estimators=["iwae", "reparam"]))
    lvbench.run(spec, tmp_path)
    cells = plan_run(spec, str(tmp_path)).cells
    likelihood = [c for c in cells if c.kind == "likelihood"]
    ticks = []
    result = run_cell(likelihood[0], str(tmp_path), tick=ticks.append)
    assert result["status"] == "done" and ticks == [1] * likelihood[0].repeats
    seen = Counter()
    results = list(run_isolated(cells, (str(tmp_path),), 2, lambda cell, n: seen.update({cell.id: n})))
    assert {c.id for c, _ in results} == {c.id for c in cells} and all(r["status"] == "done" for _, r in results)
    assert {c.id: seen[c.id] for c in likelihood} == {c.id: c.repeats for c in likelihood}
    # the command line draws no bar (and no carriage returns) when its output is not a terminal
    assert main(["run", "--models", "lg", "--estimators", "elbo", "--out", str(tmp_path / "o"), "--no-report"]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "\r" not in captured.out


def test_compare_gates_throughput_only_when_asked_and_marks_changes_as_asv_does(tmp_path, monkeypatch):
    """A halved throughput in B is a significant "+" (worse) change with ratio 1/2 either way, but a
    regression only under ``gate_throughput``; the quality rows are untouched, and the written table
    shows "—" for missing values, never "nan"."""
    from lvbench.reports import compare as compare_module

    spec = {
        "run": {"seed": 0, "repeats": 12, "points": 3},
        "models": {"lg": {"type": "linear_gaussian", "data_dim": 3, "latent_dim": 2, "encoder_fit": {"steps": 10}}},
        "estimators": {"iwae": {"k": [10]}},
    }
    lvbench.run(spec, tmp_path / "a")
    real = compare_module.point_metrics
    calls = []

    def slower_b(rows):
        metrics = real(rows)
        calls.append(1)
        if len(calls) % 2 == 0:  # B's: the same numbers, half the throughput
            metrics = {key: {**m, "samples_per_second": m["samples_per_second"] / 2} for key, m in metrics.items()}
        return metrics

    monkeypatch.setattr(compare_module, "point_metrics", slower_b)
    quality_only = compare_module.compare(str(tmp_path / "a"), str(tmp_path / "a"))
    gated = compare_module.compare(str(tmp_path / "a"), str(tmp_path / "a"), gate_throughput=True)
    for result, regression in ((quality_only, False), (gated, True)):
        timing = result[result["metric"] == "samples_per_second"].iloc[0]
        assert timing["significant"] and timing["mark"] == "+" and timing["ratio"] == pytest.approx(0.5)
        assert bool(timing["regression"]) is regression
        quality = result[result["metric"].isin(["abs_bias", "std", "rmse"])]
        assert not quality["significant"].any() and (quality["mark"] == "").all()
    lost = pd.DataFrame([{"kind": "cell", "metric": "cell", "test": "absent from B's spec", "regression": True}])
    paths = compare_module.write_comparison(pd.concat([quality_only, lost]), str(tmp_path / "cmp"), "a", "a")
    text = open(paths["md"]).read()
    assert "—" in text and "nan" not in text.lower()
    header = next(line for line in text.splitlines() if line.startswith("| regression"))
    assert [c.strip() for c in header.split("|")[1:5]] == ["regression", "significant", "mark", "kind"]


def test_without_a_terminal_a_run_logs_plain_progress_lines_with_elapsed_time(tmp_path):
    """stderr is a pipe here, as under CI, nohup or a notebook: no progress bars, but a line per model
    prepared and for the first and last cells, each stamped with the elapsed time; --quiet silences them."""
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[run]\nrepeats = 2\npoints = 2\n[models.lg]\ntype = "linear_gaussian"\ndata_dim = 3\nlatent_dim = 1\n'
        "encoder_fit = { steps = 5 }\n[estimators.iwae]\nk = [2, 4, 8]\n"
    )
    base = [sys.executable, "-m", "lvbench", "run", str(spec), "--no-report"]
    logged = subprocess.run([*base, "--out", str(tmp_path / "a")], capture_output=True, text=True)
    assert logged.returncode == 0, logged.stderr
    lines = logged.stderr.strip().splitlines()
    assert lines and all(re.match(r"\[\s*\d+m\d\ds\] ", line) for line in lines), lines
    text = logged.stderr
    assert "3 cells: 0 already done, 0 skipped" in text and "model 'lg' (linear_gaussian) ready in" in text
    assert "cells 1/3 (1 done, 0 failed)" in text and "cells 3/3 (3 done, 0 failed)" in text
    assert "\r" not in text  # no carriage-return bars
    quiet = subprocess.run([*base, "--out", str(tmp_path / "b"), "--quiet"], capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == ""
