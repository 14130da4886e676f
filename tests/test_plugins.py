"""The example plugin package under examples/, pip-installed into a temporary folder, appears in every
table with no change to lvbench, and is benchmarked against the built-in IWAE."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "lvbench-example-plugin"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(PLUGIN),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return {**os.environ, "PYTHONPATH": str(target)}


def test_installed_plugin_is_listed_with_its_options(plugin_env):
    out = subprocess.run(
        [sys.executable, "-m", "lvbench.cli", "list", "antithetic_iwae", "--json"],
        capture_output=True,
        text=True,
        env=plugin_env,
    )
    assert out.returncode == 0, out.stderr
    described = json.loads(out.stdout)
    assert described["source"].startswith("plugin 'antithetic_iwae'")
    assert described["properties"] == ["consistent", "lower_bound", "unbiased_p"]
    assert [o["name"] for o in described["options"]] == ["proposal", "chunk_size"]


@pytest.mark.slow
def test_plugin_is_benchmarked_against_the_builtins(plugin_env, tmp_path):
    """Same spec, the plugin beside iwae: it runs, is unbiased for p(x) on the linear-Gaussian model (its
    exp-estimate within 5 SE of exact p(x)), gets k-hat diagnostics through its hook, and shows up in
    the report's tables and findings."""
    script = textwrap.dedent(f"""
        import json, numpy as np, lvbench
        spec = {{
            "run": {{"seed": 0, "repeats": 200, "points": 4}},
            "models": {{"lg": {{"type": "linear_gaussian", "data_dim": 3, "latent_dim": 2,
                               "encoder_fit": {{"steps": 50}}}}}},
            "estimators": {{"iwae": {{"k": [2, 20]}}, "antithetic_iwae": {{"k": [2, 20]}}}},
        }}
        r = lvbench.run(spec, {str(tmp_path / "o")!r}, report=True)
        rows = r.rows[r.rows["estimator"] == "antithetic_iwae"]
        z = []
        for (k, point), g in rows.groupby(["k", "point"]):
            ratio = np.exp(g["estimate"] - g["reference"])  # p-hat / p: mean 1 if unbiased for p(x)
            z.append(abs(ratio.mean() - 1) / (ratio.std(ddof=1) / np.sqrt(len(ratio))))
        khat = r.summary.set_index(["estimator", "k"]).loc[("antithetic_iwae", 20), "khat_median"]
        print(json.dumps({{"z": max(z), "khat": float(khat), "counts": r.counts}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=plugin_env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["counts"]["done"] == 4 and result["counts"]["failed"] == 0
    assert result["z"] < 5 and result["khat"] == result["khat"]  # unbiased within 5 SE; k-hat recorded
    md = (tmp_path / "o" / "report" / "report.md").read_text()
    assert "antithetic_iwae" in md[md.index("## Likelihood estimators") :]  # in the report's tables


MINE = '''
import math

import torch

from lvbench.core.protocol import conditioned_log_joint
from lvbench.estimators import estimator
from lvbench.estimators.proposals import resolve_proposal


@estimator("mine", kind="likelihood", properties=("lower_bound", "unbiased_p", "consistent"))
def mine(model, x, k):
    """IWAE-k from the encoder in four lines: log (1/k) sum_i p(x, z_i) / q(z_i | x)."""
    q = resolve_proposal(model, x, "encoder")
    z = q.sample((k,))
    return torch.logsumexp(conditioned_log_joint(model, x)(z) - q.log_prob(z), 0) - math.log(k)
'''


def test_a_plugin_file_runs_beside_iwae_in_worker_processes_and_its_edits_recompute_its_cells(tmp_path):
    """``lvbench run --plugin mine.py --estimators iwae,mine --k 10``: a file that is not a package, an
    estimator the spec names no table for, cells in two worker processes (which load the file from
    $LVBENCH_PLUGINS); editing the file recomputes its cell and only it."""
    plugin = tmp_path / "mine.py"
    plugin.write_text(MINE)
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[run]\nrepeats = 20\npoints = 3\n[models.lg]\ntype = "linear_gaussian"\ndata_dim = 3\nlatent_dim = 2\n'
        "encoder_fit = { steps = 20 }\n[estimators.iwae]\nk = [2]\n[estimators.elbo]\nk = [2]\n"
    )
    out = tmp_path / "o"
    run = [sys.executable, "-m", "lvbench", "run", str(spec), "--out", str(out), "--quiet", "--no-report"]
    mine = [*run, "--plugin", str(plugin), "--estimators", "iwae,mine", "--k", "10"]
    first = subprocess.run([*mine, "--executor", "process", "--workers", "2"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "2 done" in first.stdout
    import lvbench

    summary = lvbench.load_results(out).summary.set_index("estimator")
    assert set(summary.index) == {"iwae", "mine"} and (summary["k"] == 10).all()
    # both estimate log p(x) from below, unbiased for p(x): each mean within 5 SE of the other's
    gap = abs(summary.loc["mine", "bias"] - summary.loc["iwae", "bias"])
    assert gap < 5 * (summary.loc["mine", "bias_se"] ** 2 + summary.loc["iwae", "bias_se"] ** 2) ** 0.5
    plugin.write_text(MINE.replace("in four lines", "in four lines, edited"))
    again = subprocess.run(mine, capture_output=True, text=True)
    assert again.returncode == 0 and "1 done, 1 already done" in again.stdout, again.stdout + again.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--plugin", "nowhere.py"], "nowhere.py' not found"),
        (["--estimators", "iwae,iwea"], "'iwea' is neither a table of the spec nor a registered estimator"),
        (["--estimators", "dreg"], "no table for the registered gradient estimator 'dreg'; give --k"),
    ],
)
def test_plugin_and_estimator_selection_errors_are_one_line(tmp_path, extra, message):
    spec = tmp_path / "spec.toml"
    spec.write_text('[models.lg]\ntype = "linear_gaussian"\n[estimators.iwae]\nk = [2]\n')
    out = subprocess.run(
        [sys.executable, "-m", "lvbench", "run", str(spec), "--out", str(tmp_path / "o"), *extra],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
