"""Files written whole: a reader (another process, a person, a later run) finds the old content
or the new, never an empty or half-written file."""

from __future__ import annotations

import os
from pathlib import Path


def write_whole(path: Path, data: bytes | str) -> Path:
    """Write `data` to a hidden file beside `path` (`.<name>.<pid>`), then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)
    return path
