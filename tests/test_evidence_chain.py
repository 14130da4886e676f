"""The chain from code, data and training to a number, attacked where it was found to break: each test
injects one fault that used to lose or silently change numbers, and checks it no longer can."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_plugin_dist
from test_integrity import run_cli_env, write_spec

from lvbench.cli import main
from lvbench.core.registry import get_estimator
from lvbench.estimators import estimator
from lvbench.experiments import ResultStore, StoreWarning, parse_spec, plan_run, run_cell, run_experiment
from lvbench.experiments.prepare import artifact_path, digest_path
from lvbench.models import read_checkpoint
from lvbench.reports import write_report

TOY = {
    "run": {"seed": 5, "repeats": 4, "points": 3},
    "models": {"lg": {"type": "linear_gaussian", "data_dim": 3, "latent_dim": 2, "encoder_fit": {"steps": 10}}},
    "estimators": {"iwae": {"k": [3]}},
}


def toy(**estimators):
    spec = json.loads(json.dumps(TOY))
    spec["estimators"].update(estimators)
    return spec


_BUFFER = {}


@estimator("evidence_reused_buffer", kind="likelihood", needs=("encoder",))
def reused_buffer(model, x, k):
    """IWAE written into one buffer that every call reuses (as a preallocating plugin would)."""
    q = model.encoder(x)
    z = q.sample((k,))
    value = torch.logsumexp(model.log_joint(x, z) - q.log_prob(z), 0) - np.log(k)
    out = _BUFFER.setdefault(tuple(value.shape), torch.empty_like(value, dtype=torch.float64))
    return out.copy_(value)


@estimator("evidence_bool", kind="likelihood")
def returns_bool(model, x, k):
    """A bool tensor of the right shape: not a log p(x)."""
    return torch.ones(x.shape[0], dtype=torch.bool)


@estimator("evidence_complex", kind="likelihood")
def returns_complex(model, x, k):
    """A complex tensor of the right shape: not a log p(x)."""
    return torch.zeros(x.shape[0], dtype=torch.complex64)


@estimator("evidence_mkldnn_off", kind="likelihood", needs=("encoder",))
def turns_off_onednn(model, x, k):
    """IWAE that also switches oneDNN off for the whole process (and never back)."""
    torch.backends.mkldnn.enabled = False
    return get_estimator("iwae")(model, x, num_samples=k)


@estimator("evidence_detached", kind="gradient", objectives=("elbo",), needs=("encoder",))
def detached_surrogate(model, x, k, objective="elbo"):
    """A surrogate cut from autograd: its 'gradients' would read as zeros."""
    q = model.encoder(x)
    z = q.sample((k,))
    return (model.log_joint(x, z) - q.log_prob(z)).mean().detach()


@estimator("evidence_mutating_reference", kind="likelihood", needs=("encoder",))
def mutating_reference(model, x, k):
    """IWAE that nudges the model's first parameter as a side effect."""
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    return get_estimator("iwae")(model, x, num_samples=k)


# -- 1. a reused output buffer ------------------------------------------------------------------------


def test_an_estimate_returned_in_a_reused_buffer_keeps_every_repeat(tmp_path):
    results = run_experiment(parse_spec(toy(evidence_reused_buffer={"k": [3]})), str(tmp_path), progress=False)
    assert results["failed"] == 0
    rows = ResultStore(str(tmp_path)).rows("likelihood")
    rows = rows[rows["estimator"] == "evidence_reused_buffer"]
    per_point = rows.groupby("point")["estimate"].nunique()
    assert (per_point == 4).all(), per_point  # four different repeats, not four copies of the last


# -- 2. training and preparation are reproducible from the spec alone ---------------------------------

VAE_SPEC = {
    "run": {"seed": 2, "repeats": 2, "points": 4},
    "models": {
        "vae": {
            "type": "vae",
            "dataset": "digits",
            "latent_dim": 3,
            "hidden": [8],
            "train": {"epochs": 1, "k": 2, "batch_size": 200},
            "reference": {"k": 50, "repeats": 2},
        }
    },
    "estimators": {"iwae": {"k": [5]}},
}


def test_the_same_spec_trains_bit_identical_models_whatever_ran_before(tmp_path):
    digests, summaries = [], []
    for i, noise in enumerate((1, 2)):
        torch.manual_seed(noise)  # a different global random state before each run
        torch.rand(noise * 7)
        out = tmp_path / f"run{i}"
        run_experiment(parse_spec(VAE_SPEC), str(out), progress=False)
        (artifact,) = (out / "models").glob("*.pt")
        digests.append(torch.load(artifact, weights_only=True)["state_dict"])
        summaries.append(pd.read_csv(write_report(str(out))["summary"])[["bias", "std", "rmse"]])
    for name in digests[0]:
        assert torch.equal(digests[0][name], digests[1][name]), name
    pd.testing.assert_frame_equal(summaries[0], summaries[1], check_exact=True)


def test_lvbench_train_with_one_seed_writes_the_same_checkpoint_twice(tmp_path):
    states = []
    for i in range(2):
        torch.manual_seed(100 + i)
        out = tmp_path / f"m{i}.pt"
        args = ["train", "--epochs", "1", "--latent-dim", "3", "--hidden", "8", "--seed", "0", "--out", str(out)]
        assert main(args) == 0
        states.append(read_checkpoint(str(out)).state_dict)
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name


# -- 3, 4. a prepared model deleted, corrupted or replaced --------------------------------------------


def _model_files(out):
    (artifact,) = (out / "models").glob("*.pt")
    return artifact, artifact.with_suffix(".sha256")


def test_a_deleted_or_corrupted_model_file_is_rebuilt_and_only_cells_of_that_very_file_count(tmp_path):
    spec = parse_spec(TOY)
    run_experiment(spec, str(tmp_path), progress=False)
    before = pd.read_csv(write_report(str(tmp_path))["summary"])[["bias", "std"]]
    artifact, record = _model_files(tmp_path)
    original = artifact.read_bytes()
    # a bit flipped: refused and rebuilt, bit-identical (preparation is seeded by the spec), cells kept
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    artifact.write_bytes(bytes(flipped))
    with pytest.warns(StoreWarning, match="does not match the digest recorded when it was prepared"):
        counts = run_experiment(spec, str(tmp_path), progress=False)
    assert artifact.read_bytes() == original and counts["resumed"] == 1
    # deleted: rebuilt the same
    artifact.unlink()
    counts = run_experiment(spec, str(tmp_path), progress=False)
    assert artifact.read_bytes() == original and counts["resumed"] == 1
    # replaced by another valid model under the same key (a rebuild that came out different): every cell
    # made from the old file is recomputed, none is mixed with the new one
    art = torch.load(artifact, weights_only=True)
    art["state_dict"] = {k: v + 0.25 if v.is_floating_point() else v for k, v in art["state_dict"].items()}
    torch.save(art, artifact)
    import hashlib

    record.write_text(hashlib.sha256(artifact.read_bytes()).hexdigest() + "\n")
    with pytest.warns(StoreWarning, match="computed from another copy of its prepared model"):
        write_report(str(tmp_path))  # the report shows the stale cell as missing, not its old numbers
    counts = run_experiment(spec, str(tmp_path), progress=False)
    assert counts["done"] == 1 and counts["resumed"] == 0
    after = pd.read_csv(write_report(str(tmp_path))["summary"])[["bias", "std"]]
    assert not after.equals(before)


def test_a_cell_refuses_a_model_file_that_changed_after_it_was_planned(tmp_path):
    spec = parse_spec(TOY)
    run_experiment(spec, str(tmp_path), progress=False)
    (cell,) = plan_run(spec, str(tmp_path)).done
    artifact, _ = _model_files(tmp_path)
    torch.save(torch.load(artifact, weights_only=True) | {"extras": {"tampered": True}}, artifact)
    result = run_cell(cell, str(tmp_path))
    assert result["status"] == "failed" and "changed or vanished since it was prepared" in result["reason"]


def test_a_reference_estimator_that_changes_the_model_is_refused(tmp_path):
    spec = {
        "run": {"seed": 0, "repeats": 2, "points": 3},
        "models": {"vae": {**VAE_SPEC["models"]["vae"], "reference": {"estimator": "evidence_mutating_reference"}}},
        "estimators": {"iwae": {"k": [2]}},
    }
    with pytest.raises(Exception, match="changed the model's parameters"):
        run_experiment(parse_spec(spec), str(tmp_path), progress=False)
    assert not list((tmp_path / "models").glob("*.pt"))  # nothing saved from the changed model


# -- 5. edited plugin code recomputes exactly its cells ------------------------------------------------

PLUGIN_SOURCE = '''
import torch
import lvbench
from lvbench.estimators import estimator

OFFSET = {offset}

@estimator("shifted_iwae", kind="likelihood", needs=("encoder",))
def shifted_iwae(model, x, k):
    """IWAE plus a constant: a plugin author's work in progress."""
    return lvbench.get_estimator("iwae")(model, x, num_samples=k) + OFFSET
'''


def _plugin(site, offset, version="0.1"):
    (site / "shifted_plugin").mkdir(exist_ok=True)
    (site / "shifted_plugin" / "__init__.py").write_text(PLUGIN_SOURCE.format(offset=offset))
    info = site / "shifted_plugin-0.1.dist-info"
    if not info.exists():
        make_plugin_dist(site, "shifted_plugin", "[lvbench.estimators]\nshifted = shifted_plugin\n")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: shifted_plugin\nVersion: {version}\n")


def _run_plugin_spec(tmp_path, env):
    spec = write_spec(tmp_path / "spec.toml", "[estimators.iwae]\nk = [2]\n[estimators.shifted_iwae]\nk = [2]\n")
    out = run_cli_env(env, "run", str(spec), "--out", str(tmp_path / "o"), "--quiet")
    assert out.returncode == 0, out.stderr
    summary = pd.read_csv(tmp_path / "o" / "report" / "summary.csv").set_index("estimator")
    return out.stdout, float(summary.loc["shifted_iwae", "bias"]) - float(summary.loc["iwae", "bias"])


def test_editing_or_bumping_a_plugin_recomputes_exactly_its_cells(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    _plugin(site, 0.0)
    text, before = _run_plugin_spec(tmp_path, env)
    assert "2 done" in text
    _plugin(site, 0.5)  # the author edits the estimator: same draws (same cell seed), half a nat more
    text, after = _run_plugin_spec(tmp_path, env)
    assert "1 done, 1 already done" in text and after - before == pytest.approx(0.5, abs=1e-6)
    _plugin(site, 0.5, version="0.2")  # same code, a new release
    text, _ = _run_plugin_spec(tmp_path, env)
    assert "1 done, 1 already done" in text


# -- 6. compare sees missing and failed cells and model identities ------------------------------------

GATE = {
    "run": {"seed": 1, "repeats": 3, "points": 4},
    "models": {"lg": {"type": "linear_gaussian", "data_dim": 3, "latent_dim": 2, "encoder_fit": {"steps": 10}}},
    "estimators": {"iwae": {"k": [2, 5]}, "elbo": {"k": [2]}},
}


def test_compare_gate_fails_on_missing_failed_cells_and_on_colliding_labels(tmp_path, capsys):
    import copy

    from lvbench.reports.compare import compare

    run_experiment(parse_spec(GATE), str(tmp_path / "a"), progress=False)
    fewer = copy.deepcopy(GATE)
    fewer["estimators"] = {"iwae": {"k": [2, 5]}}  # elbo's cell is absent from B
    run_experiment(parse_spec(fewer), str(tmp_path / "b"), progress=False)
    ResultStore(str(tmp_path / "b")).remove(plan_run(parse_spec(fewer), str(tmp_path / "b")).done[0].id)  # lost
    result = compare(str(tmp_path / "a"), str(tmp_path / "b"))
    cells = result[result["metric"] == "cell"]
    assert len(cells) == 2 and cells["regression"].all()
    assert {t.split(":")[0] for t in cells["test"]} == {"absent from B's spec", "missing in B"}
    code = main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--fail-on-regression"])
    text = capsys.readouterr().out
    assert code == 1 and "2 cells without a comparable partner or result" in text and "absent from B" in text
    # the same label for another model type: a collision, never a comparison
    other = copy.deepcopy(GATE)
    other["models"] = {"lg": {"type": "gaussian_mixture", "data_dim": 3, "components": 2, "encoder_fit": {"steps": 10}}}
    run_experiment(parse_spec(other), str(tmp_path / "c"), progress=False)
    result = compare(str(tmp_path / "a"), str(tmp_path / "c"))
    assert set(result["metric"]) == {"label collision"} and result["regression"].all()
    assert "linear_gaussian in A but gaussian_mixture in B" in result["test"].iloc[0]
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "c"), "--fail-on-regression"]) == 1


# -- markup in labels, options and paths ----------------------------------------------------------------


def test_user_strings_are_inert_in_every_report_format(tmp_path, capsys):
    nasty = "<script>x</script>|$\\frac$ $x$"
    spec = {
        **TOY,
        "models": {nasty: TOY["models"]["lg"]},
        "estimators": {nasty: {"estimator": "iwae", "k": [2], "proposal": "prior"}},
    }
    run_experiment(parse_spec(spec), str(tmp_path / "a"), progress=False)
    paths = write_report(str(tmp_path / "a"))  # matplotlib no longer parses "$\frac$" as a formula
    md = open(paths["markdown"]).read()
    assert "<script>" not in md and "&lt;script&gt;" in md and "\\|$" in md
    page = open(paths["html"]).read()  # the one script is the page's own table script, not the label
    assert "<script>x</script>" not in page and page.count("<script>") == 1 and "&lt;script&gt;x" in page
    b = tmp_path / "x<img src=x onerror=alert(1)>"
    run_experiment(parse_spec(spec), str(b), progress=False)
    assert main(["compare", str(tmp_path / "a"), str(b)]) == 0
    page = (b / "comparison" / "comparison.html").read_text()
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    table = (b / "comparison" / "comparison.md").read_text()
    assert "<img" not in table and "<script>" not in table


# -- one line, never a traceback, nothing half-written -------------------------------------------------


def test_spec_inputs_that_used_to_crash_are_one_line(tmp_path, capsys):
    deep = tmp_path / "deep.toml"
    deep.write_text("[run]\nseed = " + "[" * 5000 + "]" * 5000 + "\n")
    assert main(["run", str(deep), "--out", str(tmp_path / "o")]) == 2
    assert "nest too deeply" in capsys.readouterr().err
    dated = tmp_path / "dated.toml"
    dated.write_text('[models.lg]\ntype = "linear_gaussian"\n[estimators.iwae]\nk = [2]\nwhen = 1979-05-27\n')
    assert main(["run", str(dated), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "estimators.iwae.when = datetime.date(1979, 5, 27)" in err and len(err.strip().splitlines()) == 1
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    assert main(["run", "--models", "lg", "--out", str(link)]) == 2
    assert "symbolic link" in capsys.readouterr().err
    (tmp_path / "ckpt").mkdir()
    ckpt = tmp_path / "ckpt.toml"
    ckpt.write_text(
        f'[models.v]\ntype = "vae"\ndataset = "digits"\ncheckpoint = "{tmp_path / "ckpt"}"\n'
        "[estimators.iwae]\nk = [2]\n"
    )
    assert main(["run", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    assert "is a folder, not a checkpoint file" in capsys.readouterr().err


def test_a_full_disk_mid_run_is_one_line_keeps_finished_cells_and_resumes(tmp_path, monkeypatch, capsys):
    import errno

    import lvbench.experiments.store as store

    spec = tmp_path / "spec.toml"
    write_spec(spec, "[estimators.iwae]\nk = [1, 2, 3]\n")
    real, written = store.ResultStore.write, []

    def full_after_one(self, cell, status, *args, **kwargs):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device", "status/x.json")
        written.append(cell.id)
        return real(self, cell, status, *args, **kwargs)

    monkeypatch.setattr(store.ResultStore, "write", full_after_one)
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "kept" in err and "Traceback" not in err
    monkeypatch.setattr(store.ResultStore, "write", real)
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert "2 done, 1 already done" in capsys.readouterr().out


def test_a_report_on_a_full_disk_leaves_the_previous_files_whole(tmp_path, monkeypatch, capsys):
    import errno

    import lvbench.experiments.store as store

    run_experiment(parse_spec(TOY), str(tmp_path), progress=False)
    paths = write_report(str(tmp_path))
    before = {k: open(p, "rb").read() for k, p in paths.items()}

    def full(path, write):
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(b"cut")
        os.remove(tmp)
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(store, "atomic_write", full)
    import lvbench.reports.figures as figures

    monkeypatch.setattr(figures, "atomic_write", full)
    assert main(["report", str(tmp_path)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    for kind, path in paths.items():
        assert open(path, "rb").read() == before[kind], kind


@pytest.mark.slow
def test_a_cell_that_kills_its_dask_worker_fails_only_itself(tmp_path):
    pytest.importorskip("dask.distributed")
    site = tmp_path / "site"
    site.mkdir()
    (site / "killer_plugin.py").write_text(
        "import os\nfrom lvbench.estimators import estimator\n\n"
        '@estimator("kills_worker", kind="likelihood")\ndef kills_worker(model, x, k):\n'
        '    """Kills the process it runs in."""\n    os._exit(9)\n'
    )
    make_plugin_dist(site, "killer_plugin", "[lvbench.estimators]\nkiller = killer_plugin\n")
    spec = write_spec(tmp_path / "spec.toml", "[estimators.iwae]\nk = [2]\n[estimators.kills_worker]\nk = [1]\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = run_cli_env(
        env,
        "run",
        str(spec),
        "--out",
        str(tmp_path / "o"),
        "--quiet",
        "--executor",
        "dask",
        "--workers",
        "8",
        timeout=300,
    )
    assert out.returncode == 1, out.stderr
    assert "1 done" in out.stdout and "1 failed" in out.stdout and "Dask worker running the cell died" in out.stdout
    assert "Traceback" not in out.stderr and (tmp_path / "o" / "report" / "report.html").exists()


# -- smaller things that misled silently ----------------------------------------------------------------


@pytest.mark.parametrize("name,dtype", [("evidence_bool", "torch.bool"), ("evidence_complex", "torch.complex64")])
def test_a_non_real_estimate_fails_its_cell(tmp_path, name, dtype):
    run_experiment(parse_spec(toy(**{name: {"k": [1]}})), str(tmp_path), progress=False)
    statuses = ResultStore(str(tmp_path)).statuses()
    failed = statuses[statuses["estimator"] == name].iloc[0]
    assert failed["status"] == "failed" and f"dtype {dtype}" in failed["reason"]


def test_a_detached_gradient_surrogate_is_refused_not_recorded_as_zeros(tmp_path):
    spec = {**TOY, "estimators": {}, "gradients": {"evidence_detached": {"k": [2], "repeats": 5}}}
    run_experiment(parse_spec(spec), str(tmp_path), progress=False)
    (status,) = ResultStore(str(tmp_path)).statuses().to_dict("records")
    assert status["status"] == "failed" and "does not depend on the model's parameters" in status["reason"]


def test_a_cell_that_changes_global_torch_state_fails_alone_and_the_state_is_restored(tmp_path):
    spec = toy(evidence_mkldnn_off={"k": [2]}, elbo={"k": [2]})
    enabled = torch.backends.mkldnn.enabled
    run_experiment(parse_spec(spec), str(tmp_path), progress=False)
    assert torch.backends.mkldnn.enabled == enabled
    statuses = ResultStore(str(tmp_path)).statuses().set_index("estimator")
    assert statuses.loc["evidence_mkldnn_off", "status"] == "failed"
    assert "torch.backends.mkldnn.enabled: True -> False" in statuses.loc["evidence_mkldnn_off", "reason"]
    assert (statuses.drop("evidence_mkldnn_off")["status"] == "done").all()


def test_model_file_digests_are_recorded_beside_them(tmp_path):
    run_experiment(parse_spec(TOY), str(tmp_path), progress=False)
    artifact, record = _model_files(tmp_path)
    import hashlib

    assert record.read_text().strip() == hashlib.sha256(artifact.read_bytes()).hexdigest()
    key = artifact.stem
    assert artifact_path(str(tmp_path), key) == str(artifact) and digest_path(str(tmp_path), key) == str(record)


# -- held to what they declare --------------------------------------------------------------------------


@estimator("evidence_overshoot", kind="likelihood", needs=("encoder",), properties=("unbiased_p", "lower_bound"))
def overshoot(model, x, k):
    """IWAE plus half a nat, while declaring itself unbiased for p(x) and a lower bound."""
    return get_estimator("iwae")(model, x, num_samples=k) + 0.5


def test_lvbench_check_fails_an_estimator_that_contradicts_its_declaration(capsys):
    assert main(["check", "evidence_overshoot"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "declared unbiased_p" in out and "declared lower_bound" in out
    # declares nothing, and a reused output buffer is no fault: only its unstreamed draws fail (memory)
    assert main(["check", "evidence_reused_buffer"]) == 1
    from lvbench.analysis.checks import check_estimator as check

    reused = check("evidence_reused_buffer")
    assert set(reused[reused["result"] == "FAIL"]["check"]) == {"memory flat in k"}
    from lvbench.analysis.checks import check_estimator

    table = check_estimator("score_function_loo")
    assert (table["result"] != "FAIL").all() and (table["check"] == "declared unbiased").sum() >= 2


def test_a_declared_property_violation_comes_first_in_the_report_and_gates_compare(tmp_path):
    spec = toy(evidence_overshoot={"k": [5]})
    spec["run"]["repeats"] = 30  # a mixture, where IWAE at k = 5 is within a hundredth of a nat of log p(x)
    spec["models"] = {"lg": {"type": "gaussian_mixture", "data_dim": 2, "components": 3, "separation": 1.5}}
    run_experiment(parse_spec(spec), str(tmp_path / "a"), progress=False)
    md = open(write_report(str(tmp_path / "a"))["markdown"]).read()
    findings = md[md.index("## Findings") :]
    first = findings.splitlines()[2]
    assert "evidence_overshoot on lg at k = 5 violates its declared" in first, first
    assert md.index("## Declared properties violated") < md.index("## References")
    from lvbench.reports.compare import compare

    result = compare(str(tmp_path / "a"), str(tmp_path / "a"))
    assert (result[result["metric"] == "declared property"]["regression"]).all()


def test_one_repeat_shows_no_spread_and_identical_repeats_are_flagged(tmp_path):
    one = toy()
    one["run"]["repeats"] = 1
    run_experiment(parse_spec(one), str(tmp_path / "one"), progress=False)
    summary = pd.read_csv(write_report(str(tmp_path / "one"))["summary"])
    assert summary[["std", "bias_se", "variance"]].isna().all().all()
    md = open(tmp_path / "one" / "report" / "report.md").read()
    assert "± 0 " not in md

    @estimator("evidence_reseeds", kind="likelihood", needs=("encoder",))
    def reseeds(model, x, k):
        """IWAE that reseeds torch's generator on every call."""
        torch.manual_seed(0)
        return get_estimator("iwae")(model, x, num_samples=k)

    run_experiment(parse_spec(toy(evidence_reseeds={"k": [3]})), str(tmp_path / "same"), progress=False)
    md = open(write_report(str(tmp_path / "same"))["markdown"]).read()
    assert "evidence_reseeds on lg at k = 3 violates its declared independent repeats" in md


@estimator("evidence_unstreamed", kind="likelihood", needs=("encoder",))
def unstreamed(model, x, k):
    """IWAE over all k samples at once: memory grows with k."""
    q = model.encoder(x)
    z = q.sample((k,))
    return torch.logsumexp(model.log_joint(x, z) - q.log_prob(z), 0) - np.log(k)


def test_lvbench_check_fails_an_estimator_whose_memory_grows_with_k():
    from lvbench.analysis.checks import check_estimator

    table = check_estimator("evidence_unstreamed").set_index("check")
    assert table.loc["memory flat in k", "result"] == "FAIL", table.loc["memory flat in k", "detail"]
