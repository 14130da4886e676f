"""A result folder is evidence for exactly its spec, whatever happens to the run: changed specs, missing
or corrupt store files, crashes at random moments, hanging or exiting plugins, concurrent runs; and
every user error on the command line is one line with exit status 2."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_plugin_dist

import lvbench
from lvbench.cli import main
from lvbench.compute.matmul import cpu_matmul_backend
from lvbench.experiments import (
    ResultStore,
    SpecError,
    StoreWarning,
    clean,
    parse_spec,
    plan_run,
    read_manifest,
    run_cell,
    run_experiment,
)
from lvbench.models import VAE
from lvbench.reports import write_report

BASE = {
    "run": {"seed": 3, "repeats": 3, "points": 4},
    "models": {
        "lg": {"type": "linear_gaussian", "data_dim": 4, "latent_dim": 2, "encoder_fit": {"steps": 20}},
        "mix": {"type": "gaussian_mixture", "data_dim": 2, "components": 3, "encoder_fit": {"steps": 20}},
    },
    "estimators": {"iwae": {"k": [1, 10]}, "naive_mc": {"k": [5]}},
    "gradients": {
        "reparam": {"k": [2], "repeats": 20, "models": ["lg"]},
        "vimco": {"k": [10], "repeats": 20, "models": ["mix"]},
    },
}
#: Summary columns that depend on the machine's speed, not on the spec and seed.
TIMING = [
    "seconds_per_estimate_batch",
    "seconds_per_estimate",
    "estimates_per_second",
    "samples_per_second",
    "peak_memory_mb",
]
GRADIENT_TIMING = ["seconds_per_gradient", "peak_memory_mb"]


def spec_dict(**changes):
    raw = json.loads(json.dumps(BASE))
    for path, value in changes.items():
        node = raw
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return raw


def summaries(out_dir):
    """(likelihood summary, gradient summary) of the folder's report, timing columns dropped."""
    paths = write_report(str(out_dir))
    lik = pd.read_csv(paths["summary"]).drop(columns=TIMING)
    grad = pd.read_csv(paths["gradient_summary"]).drop(columns=GRADIENT_TIMING, errors="ignore")
    return lik, grad


def assert_same_numbers(a, b):
    for x, y in zip(summaries(a), summaries(b), strict=True):
        pd.testing.assert_frame_equal(x.reset_index(drop=True), y.reset_index(drop=True), check_exact=True)


# -- 1. a changed spec never reuses a result it did not produce --------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "change",
    [{"run.seed": 4}, {"models.lg.data_dim": 5}, {"run.points": 5}, {"run.dtype": "float64"}],
    ids=["seed", "model-parameter", "points", "dtype"],
)
def test_rerun_of_a_changed_spec_equals_a_fresh_run(tmp_path, change):
    shared, fresh = tmp_path / "shared", tmp_path / "fresh"
    first = run_experiment(parse_spec(spec_dict()), str(shared), progress=False)
    changed = parse_spec(spec_dict(**change))
    counts = run_experiment(changed, str(shared), progress=False)
    run_experiment(changed, str(fresh), progress=False)
    assert_same_numbers(shared, fresh)
    if "models.lg.data_dim" in change:  # only the cells of the changed model are computed again
        assert counts["resumed"] == 3 + 1 and counts["done"] == 3 + 1
    else:
        assert counts["resumed"] == 0 and counts["done"] == first["done"]
    lik, _ = summaries(shared)
    assert (lik["dtype"] == changed.run.dtype).all()
    # old cells stay in the store until `clean`; afterwards only the current spec's are left
    assert len(ResultStore(str(shared)).ids()) > len(read_manifest(str(shared))["cells"])
    removed = clean(str(shared))
    assert removed["cells"] > 0 and removed["models"] >= 1
    assert sorted(ResultStore(str(shared)).ids()) == sorted(read_manifest(str(shared))["cells"])
    assert len(list((shared / "models").glob("*.pt"))) == 2  # each beside the record of its SHA-256
    assert len(list((shared / "models").glob("*.sha256"))) == 2 and len(os.listdir(shared / "models")) == 4
    assert_same_numbers(shared, fresh)


def test_cell_identity_covers_what_determines_the_numbers(tmp_path):
    base = plan_run(parse_spec(spec_dict()), str(tmp_path))
    ids = {c.id for c in base.cells}
    for change in (
        {"estimators.iwae.proposal": "prior"},
        {"run.repeats": 4},
        {"run.threads": 2},
        {"run.diagnostics_max_k": 7},
        {"models.lg.encoder_fit": {"steps": 21}},
        {"models.lg.noise_std": 0.3},
    ):
        changed = plan_run(parse_spec(spec_dict(**change)), str(tmp_path))
        assert {c.id for c in changed.cells} != ids, change
    same = plan_run(parse_spec(spec_dict(**{"run.cell_timeout": 30})), str(tmp_path))
    assert {c.id for c in same.cells} == ids  # a time limit cannot change a number


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
def test_cpu_cells_name_their_kernels_and_refuse_to_run_under_others(tmp_path, monkeypatch):
    """oneDNN's and torch's own kernels round differently: the kernels in force (the machine's
    calibration or ``$LVBENCH_KERNELS``) are part of a CPU cell's id, and a process whose kernels differ
    from the ones the id names fails the cell instead of mixing numbers."""
    with torch.backends.mkldnn.flags(enabled=False):
        aten = plan_run(parse_spec(spec_dict()), str(tmp_path))
    assert {c.matmul for c in aten.cells} == {f"aten/aten/{cpu_matmul_backend().split('/')[2]}"}
    native = plan_run(parse_spec(spec_dict()), str(tmp_path))
    assert {c.matmul for c in native.cells} == {cpu_matmul_backend()}
    monkeypatch.setenv("LVBENCH_KERNELS", "linear=aten,linear_autograd=aten,bernoulli_autograd=bce")
    bce = plan_run(parse_spec(spec_dict()), str(tmp_path))
    monkeypatch.setenv("LVBENCH_KERNELS", "linear=aten,linear_autograd=aten,bernoulli_autograd=softplus_sum")
    softplus = plan_run(parse_spec(spec_dict()), str(tmp_path))
    assert {c.matmul for c in bce.cells} == {"aten/aten/bce"} and {c.matmul for c in softplus.cells} == {
        "aten/aten/softplus_sum"
    }
    assert not {c.id for c in bce.cells} & {c.id for c in softplus.cells}
    assert bce.model_keys != softplus.model_keys  # the prepared (trained, referenced) models too
    result = run_cell(bce.cells[0], str(tmp_path))
    assert result["status"] == "failed"
    assert "made for CPU matmuls by aten/aten/bce, but this process has aten/aten/softplus_sum" in result["reason"]


# -- 2. resume trusts only rows that read back complete ----------------------------------------------


def _done_likelihood_cell(out_dir):
    store = ResultStore(str(out_dir))
    statuses = store.statuses()
    row = statuses[(statuses["status"] == "done") & (statuses["kind"] == "likelihood")].iloc[0]
    return (
        row["id"],
        out_dir / "results" / "likelihood" / f"{row['id']}.parquet",
        out_dir / "status" / f"{row['id']}.json",
    )


@pytest.mark.parametrize(
    "damage,warning",
    [
        (lambda rows, status: rows.unlink(), "is missing although its status says done"),
        (lambda rows, status: rows.write_bytes(rows.read_bytes()[:200]), "does not match the checksum"),
        (lambda rows, status: status.write_text("{}"), "is not a status record"),
        (lambda rows, status: status.write_text("[1, 2]"), "is not a status record"),
        (lambda rows, status: status.write_bytes(b"\x00\xff\xfe binary"), "is not readable JSON"),
        (lambda rows, status: status.write_text('{"status": "done", "kind": "likelihood"'), "is not readable JSON"),
    ],
    ids=["parquet-deleted", "parquet-truncated", "status-empty", "status-list", "status-binary", "status-cut"],
)
def test_damaged_store_files_are_recomputed_with_a_warning(tmp_path, damage, warning):
    spec = parse_spec(spec_dict(gradients={}))
    first = run_experiment(spec, str(tmp_path), progress=False)
    before = summaries_lik(tmp_path)
    cell_id, rows, status = _done_likelihood_cell(tmp_path)
    damage(rows, status)
    with pytest.warns(StoreWarning, match=warning):
        write_report(str(tmp_path))  # the report still works, and says the cell is missing
    with open(tmp_path / "report" / "report.md") as fh:
        report = fh.read()
    assert "missing" in report and "no trustworthy result" in report  # the cell does not silently vanish
    with pytest.warns(StoreWarning, match=warning):
        counts = run_experiment(spec, str(tmp_path), progress=False)
    assert counts["done"] == 1 and counts["resumed"] == first["done"] - 1
    pd.testing.assert_frame_equal(summaries_lik(tmp_path), before, check_exact=True)


def summaries_lik(out_dir):
    return pd.read_csv(write_report(str(out_dir))["summary"]).drop(columns=TIMING)


def test_corrupt_prepared_model_is_prepared_again_with_a_warning(tmp_path):
    spec = parse_spec(spec_dict(gradients={}))
    run_experiment(spec, str(tmp_path), progress=False)
    before = summaries_lik(tmp_path)
    artifact = next((tmp_path / "models").glob("linear_gaussian-*.pt"))
    artifact.write_bytes(artifact.read_bytes()[:100])
    for cell_id in ResultStore(str(tmp_path)).ids():
        os.remove(tmp_path / "status" / f"{cell_id}.json")
    with pytest.warns(StoreWarning, match="preparing it again"):
        run_experiment(spec, str(tmp_path), progress=False)
    pd.testing.assert_frame_equal(summaries_lik(tmp_path), before, check_exact=True)


# -- 3. gradient studies are bit-identical whatever the executor ---------------------------------------


@pytest.mark.slow
def test_gradient_studies_are_bit_identical_across_executors_and_reruns(tmp_path):
    spec = parse_spec(spec_dict(estimators={"iwae": {"k": [10]}}))
    run_experiment(spec, str(tmp_path / "a"), progress=False)
    run_experiment(spec, str(tmp_path / "b"), progress=False)
    run_experiment(spec, str(tmp_path / "pool"), executor="process", workers=2, progress=False)
    run_experiment(spec, str(tmp_path / "dask"), executor="dask", workers=2, progress=False)
    for other in ("b", "pool", "dask"):
        assert_same_numbers(tmp_path / "a", tmp_path / other)
    rows = ResultStore(str(tmp_path / "a")).rows("gradient")
    assert set(rows["method"]) == {"vmap"}  # "auto" chose from the problem, the same way every time


# -- 4, 5. a hanging or exiting plugin fails only its own cell ----------------------------------------

FAULTY_PLUGIN = '''
import os, time, torch
from lvbench.estimators import estimator

@estimator("hangs", kind="likelihood")
def hangs(model, x, k):
    """Never returns: a plugin stuck in a loop."""
    while True:
        time.sleep(0.05)

@estimator("exits", kind="likelihood")
def exits(model, x, k):
    """Raises SystemExit, which is not an Exception."""
    raise SystemExit(3)

@estimator("crashes", kind="likelihood")
def crashes(model, x, k):
    """Kills its own process, as a segfault in an extension would."""
    os._exit(9)
'''


def faulty_plugin_env(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "faulty_plugin.py").write_text(FAULTY_PLUGIN)
    make_plugin_dist(site, "faulty_plugin", "[lvbench.estimators]\nfaulty = faulty_plugin\n")
    return {**os.environ, "PYTHONPATH": str(site)}


def run_cli_env(env, *args, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "lvbench.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def write_spec(path, estimators, run_extra=""):
    path.write_text(
        textwrap.dedent(f"""
        [run]
        seed = 1
        repeats = 2
        points = 3
        {run_extra}
        [models.lg]
        type = "linear_gaussian"
        data_dim = 3
        latent_dim = 1
        encoder_fit = {{ steps = 5 }}
        """)
        + estimators
    )
    return path


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "process", "dask"])
def test_hanging_exiting_and_crashing_plugins_fail_only_their_cells(tmp_path, executor):
    env = faulty_plugin_env(tmp_path)
    spec = write_spec(
        tmp_path / "spec.toml",
        "[estimators.hangs]\nk = [1]\ncell_timeout = 2\n[estimators.exits]\nk = [1]\n"
        "[estimators.crashes]\nk = [1]\ncell_timeout = 60\n[estimators.iwae]\nk = [2, 3]\n",
    )
    extra = ["--executor", executor, "--workers", "2"] if executor != "local" else []
    start = time.monotonic()
    out = run_cli_env(env, "run", str(spec), "--out", str(tmp_path / "o"), "--quiet", *extra)
    assert time.monotonic() - start < 200
    assert out.returncode == 1, out.stderr  # some cells failed; the run finished and wrote its report
    assert "2 done" in out.stdout and "3 failed" in out.stdout
    assert "hangs × k=1 × cpu: timed out after 2 s" in out.stdout
    assert "exits × k=1 × cpu: SystemExit: 3" in out.stdout
    assert "crashes × k=1 × cpu: the worker process running the cell died (exit status 9)" in out.stdout
    assert os.path.isfile(tmp_path / "o" / "report" / "report.html")
    again = run_cli_env(env, "run", str(spec), "--out", str(tmp_path / "o"), "--quiet", "--cell-timeout", "1", *extra)
    assert "2 already done" in again.stdout and "3 failed" in again.stdout  # failed cells are retried


def test_cell_timeout_from_the_command_line_and_spec_validation(tmp_path):
    spec = spec_dict(gradients={})
    spec["run"]["cell_timeout"] = 5
    spec["estimators"]["iwae"]["cell_timeout"] = 7.5
    parsed = parse_spec(spec)
    cells = plan_run(parsed, str(tmp_path)).cells
    assert {c.timeout for c in cells if c.estimator == "iwae"} == {7.5}
    assert {c.timeout for c in cells if c.estimator == "naive_mc"} == {5.0}
    with pytest.raises(SpecError, match="cell_timeout must be a number of seconds > 0"):
        parse_spec(spec_dict(**{"run.cell_timeout": -1}))


# -- 6. two runs into one folder ---------------------------------------------------------------------


SLOW = "[estimators.naive_mc]\nk = [200000, 400000, 600000]\nrepeats = 20\n"


def test_a_second_run_into_a_busy_folder_stops_at_once_naming_the_holder(tmp_path):
    spec = write_spec(tmp_path / "slow.toml", SLOW)
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "lvbench.cli", "run", str(spec), "--out", str(out), "--quiet", "--no-report"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (out / "manifest.json").exists():
            time.sleep(0.05)
        start = time.monotonic()
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert time.monotonic() - start < 20
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "is in use by another lvbench run" in lines[0]
        assert f"pid {first.pid}" in lines[0] and str(out) in lines[0]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the lock dies with its holder: a rerun resumes
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr


# -- fault injection: kill -9 at random moments, many times ------------------------------------------


@pytest.mark.slow
def test_kill_minus_nine_at_random_moments_never_changes_the_final_numbers(tmp_path):
    spec = write_spec(
        tmp_path / "spec.toml",
        "[estimators.iwae]\nk = [1, 10, 100, 1000, 20000]\n[estimators.naive_mc]\nk = [5, 50000]\n"
        "[gradients.reparam]\nk = [2, 20]\nrepeats = 50\n[gradients.score_function]\nk = [2, 20]\nrepeats = 50\n",
    )
    clean_out, killed_out = tmp_path / "clean", tmp_path / "killed"
    base = [sys.executable, "-m", "lvbench.cli", "run", str(spec), "--quiet"]
    assert subprocess.run([*base, "--out", str(clean_out)], capture_output=True).returncode == 0
    rng = random.Random(0)
    kills = 0
    for _ in range(12):
        proc = subprocess.Popen([*base, "--out", str(killed_out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 4.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    final = subprocess.run([*base, "--out", str(killed_out)], capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert kills >= 6  # most of the attempts really were interrupted
    assert_same_numbers(clean_out, killed_out)
    rows = ResultStore(str(killed_out)).rows("likelihood")
    assert not rows.duplicated(["cell_id", "repeat", "point"]).any()


# -- 7. every user error is one line, exit 2; a bug is a traceback --------------------------------------


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lvbench.cli", *args], capture_output=True, text=True, cwd=cwd)


def assert_one_line_error(result, pattern):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [  # warnings and the progress lines of a run without a terminal aside: the error is one line
        line
        for line in result.stderr.strip().splitlines()
        if not line.startswith("lvbench: warning") and not re.match(r"\[\s*\d+m\d\ds\] ", line)
    ]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert pattern in lines[0], lines[0]


def run_main(capsys, *args):
    """``lvbench ARGS`` in this process (faster than a subprocess; an escaping exception fails the test)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    spec = write_spec(tmp_path / "spec.toml", "[estimators.iwae]\nk = [2]\n")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(run_cli("run", str(spec), "--out", str(tmp_path / "file")), "is an existing file")
    assert_one_line_error(run_cli("run", str(spec), "--out", str(tmp_path / "file" / "sub")), "cannot write to --out")
    assert_one_line_error(run_cli("run", "--device", "tpu", "--out", str(tmp_path / "o")), "--device 'tpu'")
    assert_one_line_error(run_cli("train", "--epochs", "1", "--out", str(tmp_path / "nope" / "v.pt")), "does not exist")
    assert_one_line_error(run_main(capsys, "clean", str(tmp_path / "missing")), "is not a folder")
    assert_one_line_error(run_main(capsys, "report", str(tmp_path)), "not an lvbench output folder")
    bad = tmp_path / "bad.toml"
    for body, pattern in [
        ("[estimators.iwae]\nk = [2]\nrepeat = 3\n", "has no option 'repeat'. Did you mean 'repeats'?"),
        ("[estimators.iwae]\nk = [2]\npropsal = 'prior'\n", "has no option 'propsal'. Did you mean 'proposal'?"),
        ("[estimators.iwae]\nkk = [1]\n", "needs k"),
        ("[estimators.iwae]\nk = [2]\nproposal = 'nonsense'\n", "proposal must be one of 'encoder'"),
        ("[estimators.iwea]\nk = [2]\n", "Did you mean 'iwae'?"),
        ("[estimators.IWAE]\nk = [2]\n", "Did you mean 'iwae'?"),
        ("[estimators.naive-mc]\nk = [2]\n", "Did you mean 'naive_mc'?"),
        ("[estimators.ais]\nk = [2]\nschedule = 'cosine'\n", "schedule must be one of 'sigmoid'"),
        ("[gradients.reparam]\nk = [2]\nvectorise = true\n", "Did you mean 'vectorize'?"),
    ]:
        write_spec(bad, body)
        assert_one_line_error(run_main(capsys, "run", str(bad), "--out", str(tmp_path / "never")), pattern)
        assert not (tmp_path / "never").exists()  # refused before any model was prepared
    bad.write_text('[models.a]\ntype = "linear_gausian"\n[estimators.iwae]\nk = [1]\n')
    assert_one_line_error(run_main(capsys, "run", str(bad)), "Did you mean 'linear_gaussian'?")
    bad.write_text('[models.a]\ntype = "linear_gaussian"\ndata_dimm = 3\n[estimators.iwae]\nk = [1]\n')
    assert_one_line_error(run_main(capsys, "run", str(bad)), "Did you mean 'data_dim'?")


def test_cli_device_flag_does_not_swallow_the_spec_path(tmp_path):
    spec = write_spec(tmp_path / "spec.toml", "[estimators.iwae]\nk = [2]\n")
    result = run_cli("run", "--device", "cpu", str(spec), "--out", str(tmp_path / "o"), "--quiet", "--no-report")
    assert result.returncode == 0, result.stderr
    assert "1 done" in result.stdout


def test_cli_read_only_output_folder(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path / "spec.toml", "[estimators.iwae]\nk = [2]\n")
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert_one_line_error(run_cli("run", str(spec), "--out", str(ro / "o")), "cannot write to --out")
    real_open = open

    def read_only_open(path, mode="r", *args, **kwargs):  # what a read-only file system answers
        if "lvbench-write-test" in str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", read_only_open)
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "cannot write to --out" in capsys.readouterr().err
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "v.pt")]) == 2
    assert "cannot write --out" in capsys.readouterr().err


def test_cli_checkpoint_errors_are_one_line(tmp_path):
    good = tmp_path / "vae.pt"
    VAE(64, 3, (16,)).save(good)
    mismatched = tmp_path / "mismatched.pt"
    ckpt = torch.load(good, weights_only=True)
    ckpt["config"]["latent_dim"] = 4
    torch.save(ckpt, mismatched)
    nan = tmp_path / "nan.pt"
    ckpt = torch.load(good, weights_only=True)
    next(iter(ckpt["state_dict"].values())).fill_(float("nan"))
    torch.save(ckpt, nan)
    spec = tmp_path / "spec.toml"
    body = '[models.v]\ntype = "vae"\ndataset = "digits"\ncheckpoint = "{}"\n{}[estimators.iwae]\nk = [2]\n'
    for path, extra, pattern in [
        (mismatched, "", "weights do not match its config"),
        (good, "latent_dim = 5\n", "latent_dim = 5 contradicts the checkpoint"),
        (nan, "", "NaN or infinite parameters in checkpoint"),
    ]:
        spec.write_text(body.format(path, extra))
        assert_one_line_error(run_cli("run", str(spec), "--out", str(tmp_path / "o")), pattern)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[:500])
    spec.write_text(body.format(corrupt, ""))
    assert_one_line_error(run_cli("run", str(spec), "--out", str(tmp_path / "o")), "truncated or corrupt")


def test_cli_lets_a_real_bug_show_its_traceback(tmp_path, monkeypatch):
    import lvbench.reports

    def buggy(out_dir):
        raise TypeError("an lvbench bug")

    monkeypatch.setattr(lvbench.reports, "write_report", buggy)
    with pytest.raises(TypeError, match="an lvbench bug"):
        main(["report", str(tmp_path)])


def test_train_checks_its_output_before_training_and_writes_atomically(tmp_path):
    out = tmp_path / "vae.pt"
    result = run_cli("train", "--epochs", "1", "--latent-dim", "2", "--hidden", "8", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert VAE.load(out).latent_dim == 2 and not list(tmp_path.glob("*.tmp-*"))


def test_dry_run_lists_cells_without_writing(tmp_path, capsys):
    spec = write_spec(tmp_path / "spec.toml", "[estimators.iwae]\nk = [2, 3]\n[gradients.vimco]\nk = [1]\n")
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "2 to run, 0 already done, 1 skipped" in text and "vimco needs num_samples >= 2" in text
    assert not (tmp_path / "o").exists()
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--quiet", "--no-report"]) == 0
    capsys.readouterr()
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    assert "0 to run, 2 already done, 1 skipped" in capsys.readouterr().out


# -- 9. data outside the likelihood's support; NaN parameters --------------------------------------------


@pytest.mark.parametrize("name", ["naive_mc", "importance", "elbo", "iwae", "ais"])
def test_data_outside_the_likelihood_support_is_refused(name):
    vae = VAE(4, 2, (3,))
    with pytest.raises(lvbench.LvbenchInputError, match="outside the support .* binary values"):
        lvbench.get_estimator(name)(vae, torch.full((2, 4), 7.0), num_samples=2)
    with pytest.raises(lvbench.LvbenchInputError, match="outside the support"):
        lvbench.get_estimator(name)(vae, torch.full((2, 4), 0.5), num_samples=2)
    assert lvbench.get_estimator(name)(vae, torch.ones(2, 4), num_samples=2).shape == (2,)
    gaussian = VAE(4, 2, (3,), likelihood="gaussian")
    assert lvbench.get_estimator(name)(gaussian, torch.full((2, 4), 7.0), num_samples=2).shape == (2,)


# -- 10. any model that follows the protocol works without subclassing -------------------------------------


class ProtocolModel(torch.nn.Module):
    """z ~ N(0, 1), x | z ~ N(a z, s²) in one dimension, with a Gaussian encoder: written only against
    the documented protocol, no lvbench base class."""

    def __init__(self, a=1.5, s=0.7, seed=0):
        super().__init__()
        self.a, self.s = torch.nn.Parameter(torch.tensor(a)), s
        self.encoder = ProtocolEncoder()

    def prior(self):
        return torch.distributions.Independent(torch.distributions.Normal(torch.zeros(1), torch.ones(1)), 1)

    def likelihood(self, z):
        return torch.distributions.Independent(torch.distributions.Normal(self.a * z, self.s), 1)

    def log_joint(self, x, z):
        return self.prior().log_prob(z) + self.likelihood(z).log_prob(x)

    def sample(self, n):
        z = self.prior().sample((n,))
        return self.likelihood(z).sample(), z


class ProtocolEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w, self.b = torch.nn.Parameter(torch.tensor(0.5)), torch.nn.Parameter(torch.tensor(0.0))

    def forward(self, x):
        return torch.distributions.Independent(torch.distributions.Normal(self.w * x + self.b, 0.6), 1)


def test_a_model_that_only_follows_the_protocol_works_everywhere(tmp_path):
    from scipy import stats

    model = ProtocolModel()
    caps = lvbench.core.protocol.capabilities_of(model)
    assert caps == {"continuous_latent", "reparameterizable", "encoder"}
    x = torch.tensor([[0.3], [-1.2], [2.0]])
    exact = stats.norm(0, np.sqrt(1.5**2 + 0.7**2)).logpdf(x.numpy()[:, 0])
    torch.manual_seed(0)
    runs = torch.stack([lvbench.get_estimator("iwae")(model, x, num_samples=2000) for _ in range(20)]).double()
    se = runs.std(0) / np.sqrt(20)
    assert ((runs.mean(0).numpy() - exact) <= 5 * se.numpy() + 1e-3).all()
    assert ((runs.mean(0).numpy() - exact) >= -5 * se.numpy() - 0.01).all()
    surrogate = lvbench.get_estimator("reparam")(model, x, num_samples=4)
    surrogate.backward()
    assert model.a.grad is not None and model.encoder.w.grad is not None
    with pytest.raises(lvbench.IncompatibleError, match="needs enumerable"):
        lvbench.get_estimator("enumeration")(model, x, num_samples=1)
    with pytest.raises(lvbench.LvbenchInputError, match="lacks likelihood, log_joint"):

        class Broken(torch.nn.Module):
            def prior(self):
                return model.prior()

        lvbench.get_estimator("iwae")(Broken(), x, num_samples=2)


def test_a_protocol_model_registered_by_a_plugin_runs_in_a_spec(tmp_path):
    if "protocol_toy" not in lvbench.list_models():
        lvbench.register_model("protocol_toy")(ProtocolModel)
    spec = parse_spec(
        {
            "run": {"repeats": 2, "points": 3},
            "models": {"toy": {"type": "protocol_toy", "a": 2.0, "encoder_fit": {"steps": 5}}},
            "estimators": {"iwae": {"k": [4]}},
            "gradients": {"reparam": {"k": [2], "repeats": 10}},
        }
    )
    counts = run_experiment(spec, str(tmp_path), progress=False)
    assert counts["done"] == 2 and counts["failed"] == 0, ResultStore(str(tmp_path)).statuses()["reason"].tolist()
    lik, _ = summaries(tmp_path)
    assert lik["reference_name"].iloc[0].startswith("iwae (k=20000)")  # no exact log p(x): a strong reference


def test_ctrl_c_stops_the_run_cleanly_keeping_finished_cells_and_no_workers(tmp_path):
    spec = write_spec(tmp_path / "slow.toml", SLOW, run_extra="cell_timeout = 300")
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "lvbench.cli", "run", str(spec), "--out", str(out), "--quiet", "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "results").glob("*/*.parquet")):
        time.sleep(0.05)
    # this run's own workers (its children): tests running beside it in parallel have workers too
    workers = subprocess.run(
        ["pgrep", "-P", str(proc.pid), "-f", "lvbench.experiments.isolate"], capture_output=True, text=True
    )
    assert workers.stdout.split(), "a cell with a time limit runs in a worker process"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    time.sleep(0.5)
    for pid in workers.stdout.split():
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
    finished = ResultStore(str(out)).rows("likelihood")
    assert len(finished) >= 20 * 3  # the finished cell is kept
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "1 already done" in rerun.stdout
