"""What a run will do, decided before anything is prepared or computed, and the folder's manifest.

``plan_run`` builds each model untrained (cheap: enough for its capabilities and for refusing a bad
spec), computes the content addresses of the prepared models and cells, and sorts the cells into
those to run, those skipped as incompatible (with the reason) and those already done (their rows
verified). ``manifest.json`` records the current spec's models and cells: reports show exactly those,
and ``clean`` drops what is no longer in it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

import torch

from lvbench.core.errors import LvbenchInputError
from lvbench.experiments.cells import Cell, expand
from lvbench.experiments.prepare import artifact_digest, artifact_path, digest_path, instantiate, model_key
from lvbench.experiments.spec import Spec
from lvbench.experiments.store import KINDS, ResultStore, atomic_write_json

__all__ = [
    "Plan",
    "check_output_dir",
    "clean",
    "expected_models",
    "plan_run",
    "read_manifest",
    "resolve_devices",
    "write_manifest",
]

MANIFEST = "manifest.json"


@dataclass
class Plan:
    model_keys: dict[str, str]  # label -> content address of the prepared model
    #: label -> SHA-256 of its prepared model's file as the folder holds it ("" where none is trusted yet)
    model_digests: dict[str, str]
    todo: list[Cell]
    done: list[Cell]
    skipped: list[tuple[Cell, str]]

    @property
    def cells(self) -> list[Cell]:
        return self.todo + self.done + [c for c, _ in self.skipped]

    def describe(self) -> str:
        """The dry-run listing: one line per cell, grouped as to run / already done / skipped."""
        lines = [f"{len(self.todo)} to run, {len(self.done)} already done, {len(self.skipped)} skipped"]
        for title, group in (("to run", self.todo), ("already done", self.done)):
            if group:
                lines.append(f"{title}:")
                lines += [f"  {c.describe()}  [{c.id}]" for c in group]
        if self.skipped:
            lines.append("skipped:")
            lines += [f"  {c.describe()}: {reason}" for c, reason in self.skipped]
        return "\n".join(lines)


def resolve_devices(devices: tuple[str, ...]) -> tuple[str, ...]:
    """Expand "available" into "cpu" plus "cuda" when a GPU is present, keeping order, without repeats."""
    out: list[str] = []
    for d in devices:
        for name in (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])) if d == "available" else [d]:
            if name not in out:
                out.append(name)
    return tuple(out)


def plan_run(spec: Spec, out_dir: str, devices: tuple[str, ...] | None = None) -> Plan:
    """The cells of ``spec`` (on ``devices``, default the spec's), sorted by what a run would do with them."""
    instances = {ms.label: instantiate(ms, spec.run) for ms in spec.models}
    keys = {ms.label: model_key(ms, spec.run) for ms in spec.models}
    digests = {label: artifact_digest(out_dir, key, quiet=True) or "" for label, key in keys.items()}
    cells, skipped = expand(spec, instances, keys, resolve_devices(devices or spec.run.devices))
    cells = [dataclasses.replace(c, model_sha256=digests[c.model]) for c in cells]
    no_cuda = [c for c in cells if c.device.startswith("cuda") and not torch.cuda.is_available()]
    skipped += [(c, "CUDA is not available on this machine") for c in no_cuda]
    cells = [c for c in cells if c not in no_cuda]
    store = ResultStore(out_dir)
    done = [c for c in cells if c.model_sha256 and store.is_final(c)]
    todo = [c for c in cells if c not in done]
    return Plan(keys, digests, todo, done, skipped)


def check_output_dir(out_dir: str) -> None:
    """Create ``out_dir`` if needed, or refuse in one line: an existing file, a path under a file, or a
    folder this process cannot write."""
    if os.path.islink(out_dir) and not os.path.exists(out_dir):
        raise LvbenchInputError(f"--out {out_dir} is a symbolic link to {os.readlink(out_dir)}, which does not exist")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise LvbenchInputError(f"--out {out_dir} is an existing file, not a folder")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise LvbenchInputError(f"cannot write to --out {out_dir}: {exc.strerror or exc}") from None
    probe_writable(out_dir, f"cannot write to --out {out_dir}")


def probe_writable(folder: str, message: str) -> None:
    """Create and delete a file in ``folder``, or raise ``message`` with the system's reason in one line."""
    probe = os.path.join(folder, f".lvbench-write-test-{os.getpid()}")
    try:
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise LvbenchInputError(f"{message}: {exc.strerror or exc}") from None


def write_manifest(out_dir: str, spec: Spec, plan: Plan) -> None:
    manifest = {
        "spec": spec.source,
        "models": plan.model_keys,
        "model_sha256": plan.model_digests,
        "cells": {c.id: _describe(c) for c in plan.cells},
    }
    for name, payload in ((MANIFEST, manifest), ("spec.json", spec.source)):
        atomic_write_json(os.path.join(out_dir, name), payload)


def _describe(cell: Cell) -> dict[str, Any]:
    keys = ("kind", "model", "estimator", "estimator_name", "objective", "k", "device", "dtype", "model_sha256")
    described = {key: getattr(cell, key) for key in keys}
    if cell.kind == "training":  # a study's cells differ in study and replicate too
        described.update(study=cell.study, replicate=cell.replicate)
    return described


def expected_models(out_dir: str, manifest: dict[str, Any]) -> dict[str, str]:
    """Cell id -> the SHA-256 of the prepared model its rows must come from: the file the folder holds now
    for the cell's model, if it matches the digest recorded when it was prepared ("" otherwise, so that
    no row of a vanished or changed model file is shown as if it came from the one there now)."""
    current = {label: artifact_digest(out_dir, key, quiet=True) or "" for label, key in manifest["models"].items()}
    return {i: current.get(d.get("model"), "") for i, d in manifest["cells"].items()}


def read_manifest(out_dir: str) -> dict[str, Any] | None:
    """The current spec's models ({label: key}) and cells ({id: what it is}), or None for a folder without
    a (readable) manifest."""
    try:
        with open(os.path.join(out_dir, MANIFEST)) as fh:
            manifest = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return None
    ok = isinstance(manifest, dict) and isinstance(manifest.get("cells"), dict) and "models" in manifest
    return manifest if ok else None


def clean(out_dir: str) -> dict[str, int]:
    """Delete the cells and prepared models not in the current manifest; counts of what was removed."""
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise LvbenchInputError(f"{out_dir} has no manifest.json: not an lvbench output folder, or never run")
    keep_cells, keep_models = set(manifest["cells"]), set(manifest["models"].values())  # ids, keys
    store = ResultStore(out_dir)
    removed = {"cells": 0, "models": 0}
    for cell_id in store.ids():
        if cell_id not in keep_cells:
            store.remove(cell_id)
            removed["cells"] += 1
    for kind in (*KINDS, "training-state"):
        folder = os.path.join(out_dir, "training" if kind == "training-state" else os.path.join("results", kind))
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            if name.split(".")[0] not in keep_cells:  # rows whose status was lost, stale resume points
                os.remove(os.path.join(folder, name))
    folder = os.path.join(out_dir, "models")
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        key, ext = os.path.splitext(name)
        if ext in (".pt", ".sha256") and key not in keep_models:
            os.remove(artifact_path(out_dir, key) if ext == ".pt" else digest_path(out_dir, key))
            removed["models"] += ext == ".pt"
    return removed
