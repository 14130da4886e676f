"""The runner: spec validation, grid expansion with skip reasons, resumable store (kill -9 included),
failure isolation, executor equivalence, reports and the command line."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch

import lvbench
from lvbench.cli import main
from lvbench.estimators import estimator
from lvbench.experiments import ResultStore, SpecError, default_spec, parse_spec, run_experiment
from lvbench.models import VAE
from lvbench.reports import write_report

TINY = {
    "run": {"seed": 3, "repeats": 3, "points": 4},
    "models": {
        "lg": {"type": "linear_gaussian", "data_dim": 4, "latent_dim": 2, "encoder_fit": {"steps": 20}},
        "mix": {"type": "gaussian_mixture", "data_dim": 2, "components": 3, "encoder_fit": {"steps": 20}},
    },
    "estimators": {"iwae": {"k": [1, 10]}, "naive_mc": {"k": [5]}},
    "gradients": {"reparam": {"k": [2], "repeats": 20}, "score_function": {"k": [2], "repeats": 20}},
}


def tiny(**changes):
    raw = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        raw[key] = value
    return parse_spec(raw)


def test_available_devices_expand_to_cpu_and_cuda_when_present():
    from lvbench.experiments.plan import resolve_devices

    expected = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
    assert resolve_devices(("available",)) == expected
    assert resolve_devices(("cpu", "available")) == expected
    assert default_spec().run.devices == ("available",)


def test_default_spec_is_valid_and_documents_every_section():
    spec = default_spec()
    assert {m.label for m in spec.models} == {"lg", "mix", "digits_vae", "digits_sbn"}
    assert {e.estimator for e in spec.estimators} >= {
        "naive_mc",
        "importance",
        "elbo",
        "iwae",
        "ais",
        "renyi",
        "cubo",
        "sumo",
        "jvi",
    }
    grid = {"ais": (1, 5, 50), "jvi": (5, 50, 500, 5000)}  # AIS: chains; JVI needs k > its order
    assert all(e.k == grid.get(e.estimator, (1, 5, 50, 500, 5000)) for e in spec.estimators)
    assert {g.estimator for g in spec.gradients} >= {"nvil", "rebar", "relax", "arm", "disarm", "vimco"}


@pytest.mark.parametrize(
    "change,pattern",
    [
        ({"models": {"a": {"type": "linear_gausian"}}}, "unknown model 'linear_gausian'"),
        ({"estimators": {"iwea": {"k": [1]}}}, "unknown estimator 'iwea'"),
        ({"estimators": {"iwae": {"k": [0, 5]}}}, "k entry must be >= 1"),
        ({"estimators": {"iwae": {"k": ["ten"]}}}, "must be an integer"),
        ({"estimators": {"iwae": {}}}, "needs k"),
        ({"run": {"repeats": 2.5}}, "run.repeats must be an integer"),
        ({"run": {"dtype": "float16"}}, "run.dtype"),
        ({"run": {"devices": ["tpu"]}}, "unknown device"),
        ({"run": {"sed": 1}}, "\\[run\\] has no key 'sed'. Did you mean 'seed'"),
        ({"models": {"v": {"type": "vae", "dataset": "digits", "checkpoint": "/nope/vae.pt"}}}, "file not found"),
        ({"models": {"v": {"type": "vae"}}}, "needs `dataset`"),
        ({"gradients": {"dreg": {"k": [2], "objective": "elbo"}}}, "dreg estimates \\['iwae'\\]"),
        ({"gradients": {"iwae": {"k": [2]}}}, "is a likelihood estimator"),
        ({"estimators": {"iwae": {"k": [1], "models": ["nope"]}}}, "unknown model labels"),
    ],
)
def test_spec_errors_name_the_problem(change, pattern):
    with pytest.raises(SpecError, match=pattern):
        tiny(**change)


def test_run_skips_incompatible_pairs_with_reasons_and_writes_raw_rows(tmp_path):
    counts = run_experiment(tiny(), str(tmp_path), progress=False)
    store = ResultStore(str(tmp_path))
    statuses = store.statuses()
    skipped = statuses[statuses["status"] == "skipped"]
    assert counts["failed"] == 0 and counts["skipped"] == len(skipped) == 1
    assert "reparam needs reparameterizable" in skipped["reason"].iloc[0]
    rows = store.rows("likelihood")
    expected = {"model", "estimator", "k", "device", "repeat", "point", "estimate", "reference", "seconds"}
    assert expected <= set(rows.columns)
    assert len(rows) == 2 * 3 * 3 * 4  # models × (iwae at 2 k + naive_mc) × repeats × points
    lg_rows = rows[rows["model"] == "lg"]
    model = lvbench.get_model("linear_gaussian")(data_dim=4, latent_dim=2, seed=3)
    x, _ = lvbench.data.sample_from_model(model, 4, seed=4)
    np.testing.assert_allclose(
        lg_rows.groupby("point")["reference"].first().to_numpy(), model.log_marginal(x).detach().numpy(), rtol=1e-5
    )
    grads = store.rows("gradient")
    assert set(grads["group"]) >= {"theta", "phi"} and (grads["reference"] == "exact").all()


def test_rerun_resumes_without_duplicating_cells(tmp_path):
    first = run_experiment(tiny(), str(tmp_path), progress=False)
    before = ResultStore(str(tmp_path)).rows("likelihood")
    second = run_experiment(tiny(), str(tmp_path), progress=False)
    assert second["done"] == 0 and second["resumed"] == first["done"]
    # a crash after a cell's rows were written but before its status: that cell alone runs again
    status_files = sorted(os.listdir(tmp_path / "status"))
    lost = next(
        f
        for f in status_files
        if json.load(open(tmp_path / "status" / f))["kind"] == "likelihood"
        and json.load(open(tmp_path / "status" / f))["status"] == "done"
    )
    os.remove(tmp_path / "status" / lost)
    third = run_experiment(tiny(), str(tmp_path), progress=False)
    assert third["done"] == 1
    after = ResultStore(str(tmp_path)).rows("likelihood")
    assert len(after) == len(before)
    assert not after.duplicated(["cell_id", "repeat", "point"]).any()


SLOW_SPEC = """
[run]
seed = 1
repeats = 30
points = 16

[models.lg]
type = "linear_gaussian"
data_dim = 20
latent_dim = 5
encoder_fit = { steps = 10 }

[estimators.naive_mc]
k = [2000, 4000, 6000, 8000, 10000, 12000, 14000, 16000]
"""


def test_kill_minus_nine_loses_at_most_the_running_cell(tmp_path):
    spec = tmp_path / "slow.toml"
    spec.write_text(SLOW_SPEC)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lvbench.cli", "run", str(spec), "--out", str(out), "--quiet", "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        done = [f for f in os.listdir(out / "status")] if (out / "status").is_dir() else []
        if len(done) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished_before = len(os.listdir(out / "status"))
    assert 2 <= finished_before < 8, "the kill should land mid-run"
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{8 - finished_before} done, {finished_before} already done" in rerun.stdout
    rows = ResultStore(str(out)).rows("likelihood")
    assert len(rows) == 8 * 30 * 16 and not rows.duplicated(["cell_id", "repeat", "point"]).any()


@estimator("test_nan_estimator", kind="likelihood")
def _nan_estimator(model, x, k):
    """Broken on purpose: NaN for the first point."""
    out = torch.zeros(x.shape[0], dtype=x.dtype)
    out[0] = float("nan")
    return out


@estimator("test_raising_estimator", kind="likelihood")
def _raising_estimator(model, x, k):
    """Broken on purpose: raises."""
    raise RuntimeError("plugin exploded")


@estimator("test_shape_estimator", kind="likelihood")
def _shape_estimator(model, x, k):
    """Broken on purpose: wrong shape."""
    return torch.zeros(x.shape[0], 2, dtype=x.dtype)


def test_failing_estimators_mark_their_cells_failed_and_the_run_goes_on(tmp_path):
    spec = tiny(
        estimators={
            "test_nan_estimator": {"k": [1]},
            "test_raising_estimator": {"k": [1]},
            "test_shape_estimator": {"k": [1]},
            "iwae": {"k": [3]},
        },
        gradients={},
    )
    counts = run_experiment(spec, str(tmp_path), progress=False)
    statuses = ResultStore(str(tmp_path)).statuses().set_index(["model", "estimator"])
    assert counts["failed"] == 6 and counts["done"] == 2
    assert "NaN or infinite values for 1 of 4 points" in statuses.loc[("lg", "test_nan_estimator"), "reason"]
    assert "plugin exploded" in statuses.loc[("lg", "test_raising_estimator"), "reason"]
    assert "expected a tensor of shape (4,)" in statuses.loc[("mix", "test_shape_estimator"), "reason"]
    assert statuses.loc[("lg", "iwae"), "status"] == "done"
    paths = write_report(str(tmp_path))
    assert "plugin exploded" in open(paths["markdown"]).read()


def _estimates(out_dir):
    rows = ResultStore(out_dir).rows("likelihood")
    return rows.sort_values(["model", "estimator", "k", "repeat", "point"])["estimate"].to_numpy()


def test_process_pool_and_dask_give_identical_results(tmp_path):
    spec = tiny(gradients={})
    run_experiment(spec, str(tmp_path / "local"), progress=False)
    run_experiment(spec, str(tmp_path / "pool"), executor="process", workers=2, progress=False)
    run_experiment(spec, str(tmp_path / "dask"), executor="dask", workers=2, progress=False)
    local = _estimates(str(tmp_path / "local"))
    np.testing.assert_allclose(_estimates(str(tmp_path / "pool")), local, rtol=1e-6)
    np.testing.assert_allclose(_estimates(str(tmp_path / "dask")), local, rtol=1e-6)


def test_dask_executor_connects_to_an_existing_scheduler_by_address(tmp_path):
    from dask.distributed import LocalCluster

    spec = tiny(gradients={}, estimators={"iwae": {"k": [4]}})
    run_experiment(spec, str(tmp_path / "local"), progress=False)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        counts = run_experiment(
            spec, str(tmp_path / "remote"), scheduler=cluster.scheduler_address, executor="dask", progress=False
        )
    assert counts["done"] == 2
    np.testing.assert_allclose(_estimates(str(tmp_path / "remote")), _estimates(str(tmp_path / "local")), rtol=1e-6)


def test_report_tables_figures_and_html(tmp_path):
    run_experiment(tiny(), str(tmp_path), progress=False)
    paths = write_report(str(tmp_path))
    summary = pd.read_csv(paths["summary"])
    for col in (
        "bias",
        "bias_se",
        "variance",
        "std",
        "rmse",
        "bias_low",
        "bias_high",
        "estimates_per_second",
        "samples_per_second",
        "peak_memory_mb",
        "khat_median",
    ):
        assert col in summary
    assert len(summary) == 6
    grad = pd.read_csv(paths["gradient_summary"])
    assert set(grad["group"]) == {"theta", "phi"} and "snr" in grad
    html = open(paths["html"]).read()
    figures = os.listdir(os.path.join(str(tmp_path), "report", "figures"))
    assert html.count("data:image/png;base64,") == len(figures) >= 6
    md = open(paths["markdown"]).read()
    assert "exact log p(x)" in md and "Run on " in md and "## Findings" in md
    # bias against the exact value is consistent with its standard error for an unbiased-in-p estimator at large k
    lg = summary[(summary["model"] == "lg") & (summary["estimator"] == "iwae") & (summary["k"] == 10)].iloc[0]
    assert lg["bias"] <= 5 * lg["bias_se"]


def test_vae_from_checkpoint_with_named_reference_and_bdmc(tmp_path):
    torch.manual_seed(0)
    vae = VAE(64, 3, (16,))
    vae.save(tmp_path / "vae.pt")
    spec = tiny(
        models={
            "v": {
                "type": "vae",
                "dataset": "digits",
                "checkpoint": str(tmp_path / "vae.pt"),
                "reference": {"estimator": "iwae", "k": 500, "repeats": 2},
                "bdmc": {"steps": 10, "chains": 2, "points": 3},
            }
        },
        estimators={"iwae": {"k": [5]}},
        gradients={},
    )
    counts = run_experiment(spec, str(tmp_path / "out"), progress=False)
    assert counts["done"] == 1
    paths = write_report(str(tmp_path / "out"))
    md = open(paths["markdown"]).read()
    assert "iwae (k=500), mean of 2 runs" in md and "BDMC sandwich bounds" in md


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lvbench.cli", *args], capture_output=True, text=True)


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[models.a]\ntype = "vae"\ndataset = "digits"\n[estimators.iwae]\nk = [0]\n')
    out = run_cli("run", str(bad), "--out", str(tmp_path / "o"))
    assert out.returncode == 2 and "k entry must be >= 1" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("run", str(tmp_path / "missing.toml"))
    assert out.returncode == 2 and "spec file not found" in out.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[run\nseed=1")
    out = run_cli("run", str(broken))
    assert out.returncode == 2 and "not valid TOML" in out.stderr
    out = run_cli("report", str(tmp_path / "nothing"))
    assert out.returncode == 2 and "not an lvbench output folder" in out.stderr
    if not torch.cuda.is_available():
        out = run_cli("run", "--device", "cuda", "--out", str(tmp_path / "o"))
        assert out.returncode == 2 and "CUDA is not available" in out.stderr


def test_cli_list_fits_the_terminal_and_python_m_lvbench_works(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    out = run_cli("list", "gradient")
    lines = out.stdout.splitlines()
    names = [line.split()[0] for line in lines if line.startswith("  ") and not line.startswith("   ")]
    assert out.returncode == 0 and "dreg" in names and "iwae" not in names
    assert lines[0].startswith("Gradient estimators") and max(map(len, lines)) <= 100
    everything = run_cli("list").stdout.splitlines()
    assert max(map(len, everything)) <= 100 and {"iwae", "dreg", "vae"} <= {
        line.split()[0] for line in everything if line
    }
    for verb in ("list", "train", "run", "report", "calibrate"):
        assert run_cli(verb, "--help").returncode == 0
    module = subprocess.run([sys.executable, "-m", "lvbench", "--help"], capture_output=True, text=True)
    assert module.returncode == 0 and module.stdout.startswith("usage: lvbench")


def test_cli_run_spec_and_report(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(
        textwrap.dedent("""
        [run]
        repeats = 2
        points = 3
        [models.lg]
        type = "linear_gaussian"
        data_dim = 3
        latent_dim = 1
        encoder_fit = { steps = 5 }
        [estimators.elbo]
        k = [1, 4]
        analytic_kl = true
    """)
    )
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert "2 done" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "o")]) == 0
    assert os.path.isfile(tmp_path / "o" / "report" / "report.html")
