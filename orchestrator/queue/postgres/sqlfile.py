"""Loads `queries.sql`: the PostgreSQL backend's statements under `-- name: NAME` headers, looked up by name."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    text = resources.files(__package__).joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    # parts: [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2])}


def q(name: str) -> str:
    """The SQL of query `name` (KeyError names a query the file lacks)."""
    return queries()[name]
