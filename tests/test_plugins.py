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
