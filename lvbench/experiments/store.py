"""A resumable result store in the output folder: one parquet file per finished cell plus a status
record, each written atomically (temporary file, then rename), so a crash or kill -9 loses at most the
running cell and a rerun never duplicates one.

Layout: ``results/<kind>/<cell id>.parquet`` (raw rows) and ``status/<cell id>.json``.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import asdict
from typing import Any

import pandas as pd

from lvbench.experiments.cells import Cell

__all__ = ["ResultStore"]

FINAL = ("done", "skipped")


def _atomic_write_bytes(path: str, write) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    write(tmp)
    os.replace(tmp, path)


class ResultStore:
    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        for sub in ("results/likelihood", "results/gradient", "status"):
            os.makedirs(os.path.join(out_dir, sub), exist_ok=True)

    def _status_path(self, cell_id: str) -> str:
        return os.path.join(self.out_dir, "status", f"{cell_id}.json")

    def status(self, cell: Cell) -> dict[str, Any] | None:
        try:
            with open(self._status_path(cell.id)) as fh:
                return json.load(fh)
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_final(self, cell: Cell) -> bool:
        st = self.status(cell)
        return st is not None and st["status"] in FINAL

    def write(self, cell: Cell, status: str, rows: pd.DataFrame | None = None, reason: str = "", **info: Any) -> None:
        """Record a finished cell: its rows first, then its status (the commit point)."""
        if rows is not None and len(rows):
            path = os.path.join(self.out_dir, "results", cell.kind, f"{cell.id}.parquet")
            _atomic_write_bytes(path, lambda tmp: rows.to_parquet(tmp, index=False))
        record = {"id": cell.id, **asdict(cell), "status": status, "reason": reason, **info}

        def dump(tmp: str) -> None:
            with open(tmp, "w") as fh:
                json.dump(record, fh, indent=1, default=str)

        _atomic_write_bytes(self._status_path(cell.id), dump)

    def rows(self, kind: str) -> pd.DataFrame:
        files = sorted(glob.glob(os.path.join(self.out_dir, "results", kind, "*.parquet")))
        if not files:
            return pd.DataFrame()
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    def statuses(self) -> pd.DataFrame:
        records = []
        for path in sorted(glob.glob(os.path.join(self.out_dir, "status", "*.json"))):
            try:
                with open(path) as fh:
                    records.append(json.load(fh))
            except json.JSONDecodeError:
                continue
        return pd.DataFrame(records)
