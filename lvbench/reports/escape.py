"""User strings (labels, options, folder paths, reasons) made inert in every output format.

HTML goes through Jinja's autoescape or ``html.escape``; Markdown has no escape of its own, so a label
like ``<script>``, ``a|b`` or one with a newline would inject markup or break a table: ``markdown``
turns the characters that open HTML, links and table cells into entities or backslash escapes, and
line breaks into spaces; ``latex`` does the same for LaTeX tables. In figures, labels are text, never
mathtext (``figures`` turns parsing off).
"""

from __future__ import annotations

import pandas as pd

__all__ = ["latex", "markdown", "markdown_frame"]

_MARKDOWN = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        "|": "\\|",
        "[": "\\[",
        "]": "\\]",
        "`": "\\`",
        "\\": "\\\\",
        "\n": " ",
        "\r": " ",
    }
)


def markdown(text: object) -> str:
    """``text`` as Markdown that renders as exactly that text (bold marks ``**`` are left alone)."""
    return str(text).translate(_MARKDOWN)


def markdown_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell and column name of ``frame`` escaped for a Markdown table."""
    out = frame.map(lambda v: markdown(v) if isinstance(v, str) else v)
    out.columns = [markdown(c) for c in frame.columns]
    return out


def latex(text: object) -> str:
    """``text`` as LaTeX text mode renders it: the characters that open commands, groups, math,
    comments, alignment tabs and subscripts escaped."""
    return "".join("\\" + c if c in "&%$#_{}" else c for c in str(text))
