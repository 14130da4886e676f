"""Controlled experiments: spec (TOML) -> grid of cells -> executor -> resumable result store."""

from lvbench.experiments.cells import Cell, expand
from lvbench.experiments.execute import run_cell, run_experiment
from lvbench.experiments.plan import Plan, clean, plan_run, read_manifest
from lvbench.experiments.spec import Spec, SpecError, default_spec, load_spec, parse_spec
from lvbench.experiments.store import ResultStore, StoreWarning

__all__ = [
    "Cell",
    "Plan",
    "ResultStore",
    "Spec",
    "SpecError",
    "StoreWarning",
    "clean",
    "default_spec",
    "expand",
    "load_spec",
    "parse_spec",
    "plan_run",
    "read_manifest",
    "run_cell",
    "run_experiment",
]
