"""Reports state findings computed from the data, draw figures that cannot mislead, and render as HTML
that fits a laptop screen (checked in a real headless Chromium where one is installed)."""

import json
import math
import re
import shutil
import subprocess

import pandas as pd
import pytest

import lvbench
from lvbench.reports.findings import gradient_findings, likelihood_findings

SPEC = {
    "run": {"seed": 1, "repeats": 3, "points": 5},
    "models": {
        "lg": {"type": "linear_gaussian", "data_dim": 3, "latent_dim": 1, "encoder_fit": {"steps": 20}},
        "mix": {"type": "gaussian_mixture", "data_dim": 2, "components": 3, "encoder_fit": {"steps": 20}},
    },
    "estimators": {"iwae": {"k": [2, 10, 100]}, "naive_mc": {"k": [10, 100]}, "ais": {"k": [2], "steps": 5}},
    "gradients": {
        "reparam": {"k": [1, 10], "repeats": 20},
        "score_function_loo": {"k": [10], "repeats": 20},
        "gumbel_softmax": {"k": [10], "repeats": 20, "temperature": 0.5},
        "enumeration": {"k": [1]},
    },
}


def lik_row(model, estimator, k, rmse, mse_se, seconds, points=10):
    return {
        "model": model,
        "estimator": estimator,
        "estimator_name": estimator,
        "k": k,
        "device": "cpu",
        "rmse": rmse,
        "mse": rmse**2,
        "mse_se": mse_se,
        "seconds_per_estimate_batch": seconds,
        "points": points,
    }


def test_likelihood_findings_name_the_winner_and_the_ties_of_a_hand_made_table():
    table = pd.DataFrame(
        [
            lik_row("m", "a", 10, rmse=0.10, mse_se=1e-4, seconds=1.0),
            lik_row("m", "b", 10, rmse=0.30, mse_se=1e-4, seconds=0.01),  # clearly worse at k = 10, but fast
            lik_row("m", "c", 10, rmse=0.1005, mse_se=1e-3, seconds=2.0),  # tied with a
            lik_row("m", "a", 100, rmse=0.05, mse_se=1e-5, seconds=10.0),
            lik_row("m", "b", 100, rmse=0.20, mse_se=1e-5, seconds=0.1),
        ]
    )
    # counted costs: a and c cost k evaluations, b ten times k (say, an AIS chain of 10 steps)
    table["evaluations_per_estimate"] = table["k"] * table["estimator"].map({"a": 1, "b": 10, "c": 1})
    text = likelihood_findings(table)
    # MSE × seconds per estimate (batch seconds / 10 points): b at k = 10 is 0.09 × 0.001 = 9e-5, the lowest
    assert text[0] == (
        "**m**, lowest error at equal compute time (MSE × seconds per estimate): b (k = 10), 9e-05 nats² s "
        "(RMSE 0.3 nats at 0.001 s per estimate)."
    )
    # MSE × evaluations: a at k = 10 is 0.01 × 10 = 0.1 (b: 0.09 × 100 = 9; a at k = 100: 0.25), tied with c
    assert text[1] == (
        "**m**, lowest error at equal model evaluations (MSE × evaluations per estimate): a (k = 10), 0.1 nats² "
        "(RMSE 0.1 nats at 10 evaluations per estimate); not significantly different: c (k = 10)."
    )
    assert text[2] == (  # equal k, the secondary view, last
        "**m**, lowest RMSE at each k — k = 10: a, RMSE 0.1 nats (not significantly different: c); "
        "k = 100: a, RMSE 0.05 nats."
    )


def grad_row(estimator, k, snr, se, bias, bias_se, trace_variance, group="theta", objective="elbo"):
    return {
        "model": "m",
        "estimator": estimator,
        "estimator_name": estimator,
        "objective": objective,
        "k": k,
        "group": group,
        "snr_norm": snr,
        "snr_norm_se": se,
        "bias_norm": bias,
        "bias_norm_se": bias_se,
        "trace_variance": trace_variance,
    }


def test_gradient_findings_prefer_unbiased_estimators_and_flag_loud_bias():
    table = pd.DataFrame(
        [
            grad_row("reparam", 10, snr=3.0, se=0.1, bias=0.01, bias_se=0.01, trace_variance=1.0),
            grad_row("score_function", 10, snr=1.0, se=0.1, bias=0.02, bias_se=0.02, trace_variance=4.0),
            grad_row("gumbel_softmax", 10, snr=9.0, se=0.1, bias=2.0, bias_se=0.05, trace_variance=0.25),
            grad_row("enumeration", 1, snr=math.inf, se=math.nan, bias=0.0, bias_se=0.0, trace_variance=0.0),
        ]
    )
    text = gradient_findings(table)
    assert text[0] == (
        "**m, ELBO gradient, θ (generative)**: highest SNR ‖E g‖/√tr Var g among unbiased estimators — "
        "k = 10: reparam (SNR 3); exact enumeration has no noise (enumeration)."
    )
    assert text[1].startswith("**m, ELBO gradient, θ (generative)**: gumbel_softmax at k = 10 is biased: ‖bias‖ = 2")
    assert "SNR of 9 measures a consistently wrong direction" in text[1]
    tied = table.copy()
    tied.loc[1, "snr_norm"] = 2.9
    assert "reparam (SNR 3, not significantly above score_function)" in gradient_findings(tied)[0]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    lvbench.run(SPEC, out, report=True)
    return out


def test_report_opens_with_findings_and_shows_units_options_and_glossary(report):
    md = (report / "report" / "report.md").read_text()
    assert md.index("## Findings") < md.index("## References") < md.index("## Likelihood estimators")
    findings = md[md.index("## Findings") : md.index("## References")]
    assert "**lg**, lowest RMSE at each k" in findings and "gumbel_softmax at k = 10 is biased" in findings
    for header in (
        "bias (nats)",
        "seconds per estimate (s)",
        "peak memory (MB)",
        "k-hat (median)",
        "SNR ‖E g‖/√tr Var",
    ):
        assert header in md
    assert "temperature = 0.5" in md and "steps = 5" in md  # each label's options
    assert "## Glossary" in md and "**BDMC**" in md
    assert "nan" not in md and "<NA>" not in md and "-inf" not in md
    grad = pd.read_csv(report / "report" / "gradient_summary.csv")
    lg = grad[(grad["model"] == "lg") & (grad["objective"] == "elbo") & (grad["k"] == 10)]
    assert lg["reference"].nunique() == 1  # one reference per comparison
    assert {"snr_norm", "snr_median", "snr", "snr_norm_se", "is_reference"} <= set(grad.columns)


def test_report_figures_show_signed_bias_frontier_and_gradient_bias(report):
    figures = {p.name for p in (report / "report" / "figures").iterdir()}
    assert {"likelihood_bias.png", "likelihood_rmse_vs_time.png", "gradient_theta.png", "gradient_phi.png"} <= figures
    assert "khat_points.png" in figures
    html = (report / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figures)
    assert "symmetric-log" in html.lower() and "95% interval as a band" in html


def _probe(html_path, tmp_path):
    """Open the page in headless Chromium at 1280 px; return its width and image-load state."""
    script = (
        "<script>window.addEventListener('load', () => { const imgs = Array.from(document.images);"
        "document.title = 'PROBE' + JSON.stringify({scroll: document.documentElement.scrollWidth,"
        "client: document.documentElement.clientWidth, images: imgs.length,"
        "broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length, ...sorting()}); });"
        # the inline table script: click a numeric column's header, then filter the rows by a word
        "function sorting() { const filters = document.querySelectorAll('input.filter').length;"
        "for (const table of document.querySelectorAll('div.table-box table')) {"
        "const body = table.tBodies[0]; if (!body || body.rows.length < 3) continue;"
        "const col = Array.from(body.rows[0].cells).findIndex(c => c.classList.contains('num'));"
        "if (col < 0) continue; table.querySelectorAll('thead th')[col].click();"
        "const v = Array.from(body.rows).map(r => parseFloat(r.cells[col].textContent.replace(/\u2212/g, '-')))"
        ".filter(x => !isNaN(x)); const sorted = v.every((x, i) => i === 0 || v[i - 1] <= x);"
        "const input = table.parentNode.previousElementSibling; const word = body.rows[0].cells[0].textContent;"
        "input.value = word; input.dispatchEvent(new Event('input'));"
        "const shown = Array.from(body.rows).filter(r => r.style.display !== 'none');"
        "return {filters, sorted, sortedValues: v.length, filtered: shown.every(r => r.textContent.includes(word)),"
        "shownRows: shown.length, rows: body.rows.length, toc: document.querySelectorAll('nav.toc a').length}; }"
        "return {filters, sorted: null}; }</script>"
    )
    probe = tmp_path / "probe.html"
    probe.write_text(html_path.read_text().replace("</body>", script + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    flags += ["--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'p'}"]
    out = subprocess.run(
        [
            shutil.which("chromium"),
            *flags,
            "--window-size=1280,900",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r"<title>PROBE(.*?)</title>", out.stdout)
    assert match, out.stderr[-2000:]
    return json.loads(match.group(1))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed (apt-get install chromium)")
def test_html_fits_a_1280_px_laptop_and_every_figure_loads(report, tmp_path):
    state = _probe(report / "report" / "report.html", tmp_path)
    assert state["scroll"] <= state["client"], state  # no horizontal scroll: wide tables scroll in their box
    assert state["images"] >= 5 and state["broken"] == 0, state
    # the inline script ran: a contents list, a filter box per table, a column sorted by one click
    assert state["toc"] >= 5 and state["filters"] >= 3 and state["sorted"] and state["sortedValues"] >= 3, state
    assert state["filtered"] and 1 <= state["shownRows"] <= state["rows"], state


def test_html_table_cells_are_formatted_once(report):
    html = (report / "report" / "report.html").read_text()
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", html)
    assert cells and not any(c in ("nan", "<NA>", "", "None") for c in cells)
    numbers = [c for c in cells if re.fullmatch(r"-?[0-9.]+(e[-+][0-9]+)?", c)]
    assert all(len(re.sub(r"[^0-9]", "", n.split("e")[0]).lstrip("0")) <= 4 for n in numbers)
    assert "position: sticky" in html and "overflow: auto" in html and "text-align: left" in html


def test_figures_are_palette_pngs_that_keep_their_line_colours(tmp_path):
    """Figures are quantized to a 256-colour palette (a quarter of the bytes of true colour), and the
    colours that carry meaning, the estimators' lines, survive within a few levels per channel."""
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    from lvbench.reports.figures import _write

    fig, ax = plt.subplots(figsize=(4, 3))
    colours = {"tab:blue": (31, 119, 180), "tab:orange": (255, 127, 14)}
    for i, name in enumerate(colours):
        ax.fill_between([0, 1], [i, i + 0.5], [i + 0.3, i + 0.8], color=name, alpha=0.2)
        ax.plot([0, 1], [i, i + 0.5], color=name, linewidth=4)
    _write(fig, str(tmp_path / "f.png"))
    with Image.open(tmp_path / "f.png") as image:
        assert image.mode == "P"
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    for rgb in colours.values():
        assert np.abs(pixels - np.array(rgb)).max(axis=1).min() <= 4, rgb


def test_symlog_bias_ticks_never_crowd_each_other_around_zero():
    """A symlog axis packs ±linthresh and the first decades into a few pixels around zero, where the
    bias figure's labels overprinted; the kept ticks are 16 px apart at least, zero among them."""
    import matplotlib.pyplot as plt
    import numpy as np

    from lvbench.reports.figures import _spaced_symlog_ticks

    fig, ax = plt.subplots(figsize=(3, 1.8))
    ax.plot([10, 100], [-1.5, 0.12])
    ax.set_yscale("symlog", linthresh=1e-5)  # matplotlib's own ticks here: 11 px apart at the closest
    _spaced_symlog_ticks(ax)
    ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    pixels = np.sort(ax.transData.transform([(10, t) for t in ticks])[:, 1])
    plt.close(fig)
    assert 0.0 in ticks and len(ticks) >= 3
    assert np.diff(pixels).min() >= 16


def test_an_estimator_keeps_its_colour_across_figures_and_runs_and_none_share_one_in_a_family():
    from lvbench.core.registry import ESTIMATORS
    from lvbench.reports.figures import GRADIENT_SLOTS, LIKELIHOOD_SLOTS, _styles, style_of

    assert _styles(["iwae", "elbo"])["iwae"] == _styles(["ais (k = chains)", "iwae · cuda", "mine"])["iwae · cuda"]
    assert style_of("ais (k = chains)") == style_of("ais") and style_of("mine") == style_of("mine")
    for family, kind in ((LIKELIHOOD_SLOTS, "likelihood"), (GRADIENT_SLOTS, "gradient")):
        colours = [style_of(name)[0] for name in family]
        assert len(set(colours)) == len(colours), family  # one hue per estimator within a family
        builtins = {e.name for e in ESTIMATORS.entries(kind) if e.obj.__module__.startswith("lvbench.estimators.")}
        assert builtins and builtins <= set(family)  # a new built-in needs its slot


def test_the_winner_grid_stars_the_lowest_rmse_marks_its_ties_and_groups_families():
    from lvbench.reports.winners import family_of, winner_grid

    table = pd.DataFrame(
        [
            lik_row("m", "iwae", 10, rmse=0.10, mse_se=1e-4, seconds=1.0),
            lik_row("m", "sumo", 10, rmse=0.1005, mse_se=1e-3, seconds=2.0),  # tied with iwae
            lik_row("m", "jvi", 10, rmse=0.30, mse_se=1e-4, seconds=1.0),
            lik_row("m", "iwae", 100, rmse=0.05, mse_se=1e-5, seconds=10.0),
        ]
    )
    grid = winner_grid(table, "m")
    assert list(grid.columns) == ["k", "iwae (bound)", "sumo (unbiased)", "jvi (other)"]
    assert grid.iloc[0].tolist() == [10, "★ 0.1", "≈ 0.101", "0.3"]
    assert grid.iloc[1].tolist() == [100, "★ 0.05", "—", "—"]
    assert family_of("cubo") == "bound" and family_of("not_registered") == "other"
