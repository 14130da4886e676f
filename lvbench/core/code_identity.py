"""The identity of the code behind a number: which distribution, which version, which source bytes.

A cell's numbers depend on the estimator's and the model's code as much as on their options, so their
code identity belongs in the cell's content address: editing a plugin (or bumping its version)
recomputes exactly the cells it computes, and lvbench's own identity includes a digest of its source,
so a development checkout with local edits never reuses numbers of other code. The source digest is
taken over every ``.py`` file of the object's top-level package (a plugin's estimator may call helpers
in other modules of its package), or over its one module file, or, for code with no file (a notebook
cell), over the function's source or bytecode.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import marshal
import os
import sys
from typing import Any

__all__ = ["VERSION", "code_identity", "lvbench_identity", "lvbench_version", "source_digest"]

#: lvbench's release version (``lvbench.__version__``; pyproject.toml states the same).
VERSION = "0.5.0"


def _files(root: str) -> list[str]:
    if os.path.isfile(root):
        return [root]
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        found += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")]
    return found


@functools.lru_cache(maxsize=256)
def _digest_files(root: str, stamp: tuple) -> str:
    h = hashlib.sha256()
    for path in _files(root):
        h.update(os.path.relpath(path, root).encode() + b"\0")
        with open(path, "rb") as fh:
            h.update(fh.read())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _source_root(obj: Any) -> str | None:
    """The package folder (or module file) whose source determines ``obj``'s behaviour."""
    module = inspect.getmodule(obj)
    name = getattr(module, "__name__", None)
    if module is None or name is None:
        return None
    top = sys.modules.get(name.split(".")[0], module)
    path = getattr(top, "__file__", None)
    if not path:
        return None
    if os.path.basename(path) == "__init__.py":
        return os.path.dirname(path)
    return path


def source_digest(obj: Any) -> str:
    """SHA-256 (cut) of the source ``obj`` comes from: its top-level package's ``.py`` files, its module
    file, else its own source text or bytecode."""
    root = _source_root(obj)
    if root is not None and os.path.exists(root):
        stamp = tuple((p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in _files(root))
        return _digest_files(root, stamp)
    try:
        text = inspect.getsource(obj).encode()
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        text = marshal.dumps(code) if code is not None else repr(obj).encode()
    return hashlib.sha256(text).hexdigest()[:20]


@functools.lru_cache(maxsize=64)
def _distribution_of(top: str) -> tuple[str, str] | None:
    if top == "lvbench":  # lvbench's own estimators: no scan of every installed distribution at import
        try:
            return "lvbench", importlib.metadata.version("lvbench")
        except importlib.metadata.PackageNotFoundError:
            return None
    names = importlib.metadata.packages_distributions().get(top) or []
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def code_identity(obj: Any, distribution: tuple[str, str] | None = None) -> dict[str, str]:
    """{distribution, version, source}: what a cell computed by ``obj`` must be recomputed for when it
    changes. ``distribution`` (name, version) where the caller knows it (an entry point's), else looked up
    from the installed distributions; "" where there is none (a script or a notebook)."""
    module = getattr(inspect.getmodule(obj), "__name__", "") or ""
    if distribution is None:
        distribution = _distribution_of(module.split(".")[0]) if module else None
    name, version = distribution or ("", "")
    return {"distribution": name, "version": version, "module": module, "source": source_digest(obj)}


def lvbench_identity() -> dict[str, str]:
    """lvbench's own code identity: its version and a digest of its source (a release's is fixed; a
    checkout's changes with every edit)."""
    return {"distribution": "lvbench", "version": VERSION, "source": source_digest(lvbench_identity)}


def lvbench_version() -> str:
    """lvbench's version and source digest in one string, as cells and prepared models record it."""
    ident = lvbench_identity()
    return f"{ident['version']}+{ident['source']}"
