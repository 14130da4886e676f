"""Controlled experiments: spec (TOML) -> grid of cells -> executor -> resumable result store."""

from lvbench.experiments.cells import Cell, expand
from lvbench.experiments.execute import run_cell, run_experiment
from lvbench.experiments.spec import Spec, SpecError, default_spec, load_spec, parse_spec
from lvbench.experiments.store import ResultStore

__all__ = [
    "Cell",
    "ResultStore",
    "Spec",
    "SpecError",
    "default_spec",
    "expand",
    "load_spec",
    "parse_spec",
    "run_cell",
    "run_experiment",
]
