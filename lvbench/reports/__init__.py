"""Reports: tidy summary tables (pandas), figures (seaborn), Markdown and HTML."""

from lvbench.reports.render import write_report
from lvbench.reports.tables import bdmc_table, gradient_summary, likelihood_summary

__all__ = ["bdmc_table", "gradient_summary", "likelihood_summary", "write_report"]
