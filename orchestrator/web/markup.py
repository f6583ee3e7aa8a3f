"""HTML helpers of the live view's pages. Every value that reaches the markup goes through `esc`
(text) or `attr` (attribute values), here and nowhere else."""

from __future__ import annotations

from html import escape
from typing import Any, Iterable


def esc(value: Any) -> str:
    """Text for a cell: `-` for nothing, escaped otherwise."""
    return "-" if value is None else escape(str(value))


def attr(value: Any) -> str:
    """An attribute value. A number is written as the script would (`null` for nothing), so a
    `data-*` attribute reads the same whether the server or an update wrote it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(str(value), quote=True)


def table(ident: str, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """A plain table with a header row; cells are escaped."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table id="{ident}"><tr>{head}</tr>{body}</table>'
