"""Check keyword options against a function's signature and type hints before anything runs.

A spec's estimator options, model parameters and nested tables are all checked this way at load time:
an unknown name is refused with a did-you-mean suggestion, and a value is checked against the
parameter's annotation (``bool``, ``int``, ``float``, ``str``, ``Literal[...]`` choices, unions,
``None``). Plugins get the same checks from their own annotations; unannotated options pass.

Ranges an annotation cannot say (Rényi's α in [0, 1], SUMO's decay in (0, 1)) are declared once, as
``Interval`` constraints at registration: the estimator's call, the spec loader and ``lvbench list`` all
read the same declaration, so a spec with ``alpha = 2`` is refused when it loads, not when its cell runs.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

from lvbench.core.errors import LvbenchInputError, UnknownNameError, did_you_mean

__all__ = [
    "Interval",
    "check_constraints",
    "check_keys",
    "check_options",
    "check_value",
    "describe_annotation",
    "signature_options",
    "type_hints",
]


@functools.cache
def signature_options(fn: Callable[..., Any], skip: int = 0) -> tuple[dict[str, inspect.Parameter], bool]:
    """(keyword parameters of ``fn`` after the first ``skip`` positional ones, whether it takes **kwargs)."""
    fn = inspect.unwrap(fn)
    params = list(inspect.signature(fn).parameters.values())
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    named = {p.name: p for p in params[skip:] if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return named, var_kw


@functools.cache
def type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    target = inspect.unwrap(fn)
    target = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 — unresolvable annotations (a plugin's): no value checks
        return {}


def _accepts(value: Any, ann: Any) -> bool | None:
    """Whether ``value`` fits ``ann``; None where the annotation says nothing checkable."""
    if ann is Any or ann is inspect.Parameter.empty:
        return None
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is Literal:
        return value in args
    if origin in (Union, types.UnionType):
        verdicts = [_accepts(value, a) for a in args]
        if any(v is True for v in verdicts):
            return True
        return False if all(v is False for v in verdicts) else None
    if ann is type(None):
        return value is None
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if ann is str:
        return isinstance(value, str)
    if origin in (list, tuple, typing.Sequence, Iterable) or ann in (list, tuple):
        return isinstance(value, list | tuple)
    if origin is not None and origin.__module__ == "collections.abc" and origin.__name__ == "Callable":
        return callable(value)
    if inspect.isclass(ann):
        return isinstance(value, ann)
    return None


def describe_annotation(ann: Any) -> str:
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe_annotation(a) for a in args if describe_annotation(a))
    if ann is type(None):
        return "none"
    if inspect.isclass(ann) and ann.__module__ == "builtins":
        return {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}.get(
            ann.__name__, ann.__name__
        )
    return ""  # a Distribution or callable: not writable in a spec, so not worth naming


def check_value(value: Any, ann: Any, where: str) -> None:
    """Refuse ``value`` where it cannot fit the annotation ``ann``, naming ``where`` and what fits."""
    if _accepts(value, ann) is False:
        choices = [a for a in _literals(ann) if isinstance(a, str)]
        hint = did_you_mean(value, choices) if choices else ""
        raise LvbenchInputError(
            f"{where} must be {describe_annotation(ann) or 'of another type'}, got {value!r}.{hint}".rstrip(".")
        )


def _literals(ann: Any) -> list[Any]:
    if typing.get_origin(ann) is Literal:
        return list(typing.get_args(ann))
    return [v for a in typing.get_args(ann) for v in _literals(a)]


def check_keys(
    given: Iterable[str], allowed: Iterable[str], where: str, also: Iterable[str] = (), what: str = "key"
) -> None:
    """Refuse keys of ``given`` not in ``allowed``, suggesting close names among ``allowed`` and ``also``."""
    allowed = list(allowed)
    for key in given:
        if key not in allowed:
            hint = did_you_mean(key, [*allowed, *also])
            raise UnknownNameError(f"{where} has no {what} {key!r}.{hint} Allowed: {sorted({*allowed, *also})}")


def check_options(
    fn: Callable[..., Any],
    options: Mapping[str, Any],
    where: str,
    skip: int = 0,
    extra: Mapping[str, Any] | None = None,
    also: Iterable[str] = (),
    what: str = "option",
) -> None:
    """Check ``options`` against ``fn``'s keyword parameters (after ``skip`` positional ones) and the
    annotated ``extra`` options ({name: annotation}); ``also`` are other valid names in the same table,
    offered as suggestions."""
    params, var_kw = signature_options(fn, skip)
    hints = {**type_hints(fn), **(extra or {})}
    names = [*params, *(extra or {})]
    if not var_kw:
        check_keys(options, names, where, also, what=what)
    for name, value in options.items():
        if name in hints:
            check_value(value, hints[name], f"{where}.{name}")


@dataclass(frozen=True)
class Interval:
    """A number's admissible range: ``low`` < (or <=) value < (or <=) ``high``; ``None`` is unbounded.
    ``why`` says in a few words what the range is for (it ends the refusal)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    why: str = ""
    #: whole numbers only (a count: steps, an order)
    integer: bool = False

    def admits(self, value: Any) -> bool:
        if value is None:  # an optional option left unset
            return True
        if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
            return False
        if self.integer and not isinstance(value, int):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def describe(self) -> str:
        """ "lie in [0, 1)", "be >= 1", "be an integer >= 1", "be > 0"."""
        what = "be an integer " if self.integer else "be "
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            where = f"in {left}{self.low:g}, {self.high:g}{right}"
            return f"{what}{where}" if self.integer else f"lie {where}"
        if self.low is not None:
            return f"{what}{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{what}{'<' if self.high_open else '<='} {self.high:g}"
        return what.strip() if self.integer else "be a number"


def check_constraints(constraints: Mapping[str, Interval], options: Mapping[str, Any], prefix: str) -> None:
    """Refuse an option outside its declared ``Interval``: "<prefix><name> must lie in [0, 1] (why), got 2"."""
    for name, interval in constraints.items():
        if name in options and not interval.admits(options[name]):
            why = f" ({interval.why})" if interval.why else ""
            raise LvbenchInputError(f"{prefix}{name} must {interval.describe()}{why}, got {options[name]!r}")
