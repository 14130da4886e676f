"""What a registered estimator or model is and takes, as plain data: for ``lvbench list`` and notebooks."""

from __future__ import annotations

import inspect
import re
import typing
from typing import Any, Literal

from lvbench.core.errors import UnknownNameError, did_you_mean
from lvbench.core.options import describe_annotation, signature_options, type_hints
from lvbench.core.registry import ESTIMATORS, MODELS, Entry, get_estimator, get_model
from lvbench.estimators.gradient.fitted import RUNNER_OPTIONS

__all__ = ["describe", "describe_all", "plain_text"]


def plain_text(doc: str) -> str:
    """A docstring without reStructuredText markup (``code``, :role:`x`)."""
    doc = re.sub(r":[a-z]+:`([^`]*)`", r"\1", doc)
    return doc.replace("``", "`")


def _allowed(ann: Any) -> list[Any] | str | None:
    if ann is None:
        return None
    origin = typing.get_origin(ann)
    if origin is Literal:
        return list(typing.get_args(ann))
    literals = [a for arg in typing.get_args(ann) if typing.get_origin(arg) is Literal for a in typing.get_args(arg)]
    if literals:
        return literals
    return describe_annotation(ann) or None


def _default(value: Any) -> Any:
    if value is inspect.Parameter.empty:
        return "(required)"
    return list(value) if isinstance(value, tuple) else value


def _options(entry: Entry, skip: int) -> list[dict[str, Any]]:
    params, _ = signature_options(entry.obj, skip)
    hints = type_hints(entry.obj)
    options = []
    for name, p in params.items():
        if name == "objective" or name in RUNNER_OPTIONS:
            continue
        option = {"name": name, "default": _default(p.default), "allowed": _allowed(hints.get(name))}
        if name in entry.constraints:  # the declared range, as the spec loader enforces it
            option["range"] = f"must {entry.constraints[name].describe()}"
        options.append(option)
    return options


def describe(name: str) -> dict[str, Any]:
    """A registered estimator's or model's kind, needs, properties, objectives, options (default and
    allowed values), source and docstring."""
    if name in MODELS.list():
        entry = get_model(name)
        return {
            "name": entry.name,
            "kind": "model",
            "source": entry.source,
            "parameters": _options(entry, 0),
            "doc": plain_text(inspect.getdoc(entry.obj) or ""),
        }
    if name not in ESTIMATORS.list():
        hint = did_you_mean(name, ESTIMATORS.list() + MODELS.list())
        raise UnknownNameError(f"no estimator or model is registered as {name!r}.{hint}")
    entry = get_estimator(name)
    return {
        "name": entry.name,
        "kind": entry.kind,
        "needs": sorted(entry.needs),
        "properties": sorted(entry.properties),
        "objectives": list(entry.objectives),
        "min_k": entry.min_k,
        "source": entry.source,
        "options": _options(entry, 3),
        "doc": plain_text(inspect.getdoc(entry.obj) or ""),
    }


def describe_all(kind: str = "all") -> list[dict[str, Any]]:
    """``describe`` of every registered estimator and model (or those of one kind)."""
    names = [e.name for e in ESTIMATORS.entries()] + MODELS.list()
    out = [describe(n) for n in names]
    return [d for d in out if kind == "all" or d["kind"] == kind]
