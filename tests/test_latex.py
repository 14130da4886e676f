"""The paper-ready LaTeX tables: rounding, the best in bold, booktabs, escapes, and the report writes one
per model."""

from __future__ import annotations

import pandas as pd
import pytest

from lvbench.reports.latex import mean_pm_se, paper_table


@pytest.mark.parametrize(
    ("mean", "se", "text"),
    [
        (-0.0054321, 0.0031234, "-0.0054 \\pm 0.0031"),
        (-12.7123, 0.3412, "-12.71 \\pm 0.34"),
        (0.19, 0.15, "0.19 \\pm 0.15"),
        (1234.5678, 12.3, "1235 \\pm 12"),
        (0.5, 0.0, "0.5"),
        (float("nan"), 0.1, "--"),
    ],
)
def test_a_mean_keeps_the_decimals_of_its_two_significant_digit_se(mean, se, text):
    assert mean_pm_se(mean, se) == text


def test_each_budget_bolds_its_lowest_rmse_and_missing_cells_are_dashes():
    summary = pd.DataFrame(
        [
            # model, estimator, k, bias, bias_se, rmse
            ("m", "iwae", 1, -1.0, 0.1, 1.2),
            ("m", "iwae", 10, -0.1, 0.01, 0.15),
            ("m", "naive_mc", 1, -5.0, 0.5, 6.0),
            ("m", "naive_mc", 10, -0.5, 0.05, 0.05),  # worse bias, but the lowest RMSE at k = 10
            ("m", "ais", 1, -0.2, 0.02, 0.3),
            ("other", "iwae", 1, 0.0, 0.1, 0.1),
        ],
        columns=["model", "estimator", "k", "bias", "bias_se", "rmse"],
    ).assign(device="cpu")
    tex = paper_table(summary, "m")
    lines = tex.splitlines()
    assert {"\\toprule", "\\midrule", "\\bottomrule"} <= set(lines)
    assert "estimator & $k = 1$ & $k = 10$ \\\\" in lines
    assert "ais & $\\mathbf{-0.200 \\pm 0.020}$ & -- \\\\" in lines
    assert "iwae & $-1.00 \\pm 0.10$ & $-0.100 \\pm 0.010$ \\\\" in lines
    assert "naive\\_mc & $-5.00 \\pm 0.50$ & $\\mathbf{-0.500 \\pm 0.050}$ \\\\" in lines
    assert "other" not in tex.split("\\toprule")[1]
    with pytest.raises(ValueError, match="no likelihood results for model 'absent'"):
        paper_table(summary, "absent")
