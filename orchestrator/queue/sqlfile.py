"""A backend's `queries.sql`: its statements under `-- name: NAME` headers, looked up by name, and
the query names that every backend's file has in common."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def statements(package: str) -> Callable[[str], str]:
    """`q(name)`: the SQL of query `name` in `package`'s `queries.sql` (KeyError names a query the
    file lacks). The file is read at the first look-up."""

    @cache
    def queries() -> dict[str, str]:
        text = resources.files(package).joinpath("queries.sql").read_text(encoding="utf-8")
        parts = _HEADER.split(text)  # [preamble, name1, body1, name2, body2, ...]
        return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2])}

    def q(name: str) -> str:
        return queries()[name]

    return q


def page_query(state: str | None, error: str | None) -> str:
    """The name of the query that serves a tasks-view page (the state/error combination picks the
    index it reads)."""
    if state and error:
        return "tasks_page_state_error"
    if state:
        return "tasks_page_state"
    if error:
        return "tasks_page_error"
    return "tasks_page"
