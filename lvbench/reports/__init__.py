"""Reports: tidy summary tables (pandas), figures (seaborn), Markdown and HTML.

``write_report`` is imported on first use: rendering pulls in matplotlib and seaborn, which reading
results (``lvbench.load_results``) does not need.
"""

from typing import Any

from lvbench.reports.tables import bdmc_table, gradient_summary, likelihood_summary

__all__ = ["bdmc_table", "gradient_summary", "likelihood_summary", "write_report"]


def __getattr__(name: str) -> Any:
    if name == "write_report":
        from lvbench.reports.render import write_report

        return write_report
    raise AttributeError(f"module 'lvbench.reports' has no attribute {name!r}")
