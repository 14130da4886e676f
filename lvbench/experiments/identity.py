"""Content addresses: a cell or a prepared model is named by a digest of everything that determines
its numbers, so a changed spec can never reuse a result it did not produce."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

__all__ = ["digest", "file_digest"]


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot digest {type(value).__name__} {value!r}")


def digest(obj: Any, length: int = 20) -> str:
    """Hex SHA-256 of the canonical JSON of ``obj`` (sorted keys; tuples as lists), cut to ``length``."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_digest(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
