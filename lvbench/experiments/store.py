"""A resumable, self-checking result store in the output folder.

Layout: ``results/<kind>/<cell id>.parquet`` (raw rows) and ``status/<cell id>.json``, where the cell id
is a digest of everything that determines the cell's numbers. Each file is written atomically
(temporary file, then rename), rows before status, and the status records the rows' count and
SHA-256. A cell counts as done only if its status is a well-formed record and its rows read back
complete and unchanged; anything else (a missing or truncated parquet, a malformed status) is
recomputed, with one warning naming the file. A crash or kill -9 loses at most the running cells.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from lvbench.experiments.cells import Cell
from lvbench.experiments.identity import file_digest

__all__ = [
    "KINDS",
    "ResultStore",
    "StoreWarning",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "warn_untrusted",
]

FINAL = ("done", "skipped")
#: The kinds of cells, each with its folder of rows under results/.
KINDS = ("likelihood", "gradient", "training")


class StoreWarning(UserWarning):
    """A store file could not be trusted; the cell it belongs to is recomputed (or left out of a report)."""


def atomic_write(path: str, write) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it over ``path``."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str) -> None:
    """``text`` at ``path``, written atomically: a full disk leaves the old file or none, never a cut one."""

    def dump(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    atomic_write(path, dump)


def atomic_write_json(path: str, payload: Any) -> None:
    """``payload`` as indented JSON at ``path``, written atomically."""

    def dump(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(payload, fh, indent=1, default=str)

    atomic_write(path, dump)


def warn_untrusted(message: str) -> None:
    """One warning that a file in the output folder cannot be trusted (and what happens instead)."""
    warnings.warn(message, StoreWarning, stacklevel=3)


class ResultStore:
    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def _status_path(self, cell_id: str) -> str:
        return os.path.join(self.out_dir, "status", f"{cell_id}.json")

    def _rows_path(self, kind: str, cell_id: str) -> str:
        return os.path.join(self.out_dir, "results", kind, f"{cell_id}.parquet")

    def _relative(self, path: str) -> str:
        return os.path.relpath(path, self.out_dir)

    # -- reading -----------------------------------------------------------------------------------
    def status(self, cell_id: str, quiet: bool = False) -> dict[str, Any] | None:
        """The status record of a cell, or None (with a warning if the file exists but is malformed)."""
        path = self._status_path(cell_id)
        try:
            with open(path, "rb") as fh:
                record = json.loads(fh.read().decode())
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            quiet or warn_untrusted(f"{self._relative(path)} is not readable JSON ({type(exc).__name__}); ignoring it")
            return None
        if not isinstance(record, dict) or record.get("status") not in (*FINAL, "failed") or "kind" not in record:
            quiet or warn_untrusted(f"{self._relative(path)} is not a status record; ignoring it")
            return None
        return record

    def verified(self, cell_id: str, quiet: bool = False, model_sha256: str | None = None) -> dict[str, Any] | None:
        """The status of a finished cell whose rows read back complete and unchanged (and, with
        ``model_sha256``, were computed from exactly that prepared-model file), else None (warned)."""
        record = self.status(cell_id, quiet)
        if record is None or record["status"] != "done":
            return record if record is not None and record["status"] == "skipped" else None
        path = self._rows_path(record["kind"], cell_id)
        name = self._relative(path)
        if model_sha256 is not None and record.get("model_sha256") != model_sha256:
            quiet or warn_untrusted(
                f"{self._relative(self._status_path(cell_id))} was computed from another copy of its prepared "
                "model (the model file was rebuilt or changed since); recomputing"
            )
            return None
        if not os.path.isfile(path):
            quiet or warn_untrusted(f"{name} is missing although its status says done; the cell will be recomputed")
            return None
        if not isinstance(record.get("sha256"), str) or file_digest(path) != record["sha256"]:
            quiet or warn_untrusted(
                f"{name} does not match the checksum in its status (truncated or changed); recomputing"
            )
            return None
        try:
            rows = pq.read_metadata(path).num_rows
        except Exception as exc:  # noqa: BLE001 — any parquet failure means the rows cannot be trusted
            quiet or warn_untrusted(f"{name} is not a readable parquet file ({type(exc).__name__}); recomputing")
            return None
        if rows != record.get("rows"):
            quiet or warn_untrusted(f"{name} holds {rows} rows, its status says {record.get('rows')}; recomputing")
            return None
        return record

    def is_final(self, cell: Cell) -> bool:
        return self.verified(cell.id, model_sha256=cell.model_sha256) is not None

    def rows(self, kind: str, ids: list[str] | None = None, models: dict[str, str] | None = None) -> pd.DataFrame:
        """Raw rows of the verified finished cells among ``ids`` (default: every cell in the folder); with
        ``models`` (cell id -> prepared model's SHA-256), only rows computed from those very files."""
        ids = self.ids(ids)
        frames = []
        for cell_id in ids:
            record = self.verified(cell_id, model_sha256=None if models is None else models.get(cell_id, ""))
            if record is None or record["status"] != "done" or record["kind"] != kind:
                continue
            frames.append(pd.read_parquet(self._rows_path(kind, cell_id)))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def statuses(self, ids: list[str] | None = None) -> pd.DataFrame:
        """Status records of ``ids`` (default: every cell in the folder); malformed ones are warned about."""
        records = [r for r in (self.status(i) for i in self.ids(ids)) if r is not None]
        return pd.DataFrame(records)

    def ids(self, ids: list[str] | None = None) -> list[str]:
        """``ids``, or every cell id with a status file in the folder."""
        if ids is not None:
            return list(ids)
        folder = os.path.join(self.out_dir, "status")
        if not os.path.isdir(folder):
            return []
        return sorted(name[: -len(".json")] for name in os.listdir(folder) if name.endswith(".json"))

    # -- writing -----------------------------------------------------------------------------------
    def write(self, cell: Cell, status: str, rows: pd.DataFrame | None = None, reason: str = "", **info: Any) -> None:
        """Record a finished cell: its rows first, then its status with their count and checksum (the
        commit point)."""
        record = {"id": cell.id, **asdict(cell), "status": status, "reason": reason, **info}
        if rows is not None and len(rows):
            path = self._rows_path(cell.kind, cell.id)
            os.makedirs(os.path.dirname(path), exist_ok=True)

            def write_rows(tmp: str) -> None:
                rows.to_parquet(tmp, index=False)
                record.update(rows=len(rows), sha256=file_digest(tmp))

            atomic_write(path, write_rows)

        os.makedirs(os.path.join(self.out_dir, "status"), exist_ok=True)
        atomic_write_json(self._status_path(cell.id), record)

    def remove(self, cell_id: str) -> int:
        """Delete a cell's status and rows; the number of files removed."""
        removed = 0
        for path in [self._status_path(cell_id)] + [self._rows_path(k, cell_id) for k in KINDS]:
            if os.path.exists(path):
                os.remove(path)
                removed += 1
        return removed
