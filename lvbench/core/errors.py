"""The errors lvbench raises for bad input: each names the problem in one sentence.

``LvbenchInputError`` is the one base of user errors: the command line prints its message as one line
and exits with status 2; anything else that escapes is a bug and shows its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["LvbenchInputError", "NoExactReference", "UnknownNameError", "did_you_mean", "suggest"]


class LvbenchInputError(ValueError):
    """Bad input to an lvbench function: the message names the problem."""


class UnknownNameError(LvbenchInputError, KeyError):
    """An unknown registry name, option or key (also a ``KeyError``); the message suggests close matches."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class NoExactReference(LvbenchInputError):
    """No closed form or enumeration gives this objective on this model."""


def _normal(name: str) -> str:
    return name.lower().replace("-", "_").replace(" ", "_")


def suggest(name: object, choices: Iterable[str], n: int = 3) -> list[str]:
    """Close matches of ``name`` among ``choices``: same name up to case and '-'/'_' first, then typos."""
    choices = list(choices)
    if not isinstance(name, str):
        return []
    by_normal = {_normal(c): c for c in choices}
    if _normal(name) in by_normal:
        return [by_normal[_normal(name)]]
    scores = {key: difflib.SequenceMatcher(None, _normal(name), key).ratio() for key in by_normal}
    best = max(scores.values(), default=0.0)
    close = [key for key in sorted(scores, key=scores.get, reverse=True) if scores[key] >= max(0.6, best - 0.05)]
    close += [key for key in by_normal if _normal(name) in key and key not in close]
    return [by_normal[key] for key in close][:n]


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' (or '' when nothing is close), to append to an error message."""
    close = suggest(name, choices)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
