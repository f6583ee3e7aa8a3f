"""Read-only inspection of a queue database with sqlite-utils: row counts and full snapshots.

Tests and drills use `snapshot` to prove that a refused command wrote nothing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlite_utils


def _open(path: Path) -> sqlite_utils.Database:
    return sqlite_utils.Database(sqlite3.connect(f"file:{path}?mode=ro", uri=True))


def table_counts(path: Path) -> dict[str, int]:
    db = _open(path)
    try:
        return {name: db[name].count for name in db.table_names()}
    finally:
        db.conn.close()


def key_order(db: sqlite_utils.Database, name: str) -> str:
    """An ORDER BY list that sorts `name` by its key: rowid, or the primary key of a table
    WITHOUT ROWID (which has no rowid)."""
    return ", ".join(f"[{pk}]" for pk in db[name].pks)


def snapshot(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, in key order (compare two snapshots for 'no write')."""
    db = _open(path)
    try:
        return {name: list(db.query(f"SELECT * FROM [{name}] ORDER BY {key_order(db, name)}"))
                for name in db.table_names()}
    finally:
        db.conn.close()
