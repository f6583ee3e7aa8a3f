"""Reading the JSONL event log by byte offset, as it grows (docs/jsonl.md).

A line without its `\\n` is a line still being written: it is left for the next read. A complete
line that does not parse is corruption: `LogError` names the file and the line number.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from orchestrator.core.errors import LogError

CHUNK = 1 << 20  # bytes read per call offline: bounds the parsed lines held at once


class LogTail:
    """Incremental reader of one JSONL file.

    `offset` is the byte position after the last complete line returned; `lines` is the
    number of complete lines returned so far (so the next line is number `lines + 1`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.offset = 0
        self.lines = 0
        self.partial = 0  # bytes of a line still without its newline at the last read

    def read(self, max_bytes: int | None = None) -> list[dict[str, Any]]:
        """The lines completed since the last call, parsed. With `max_bytes`, at most about that
        many bytes are read (at least one whole line), so a large file is read in pieces.

        When a complete line does not parse, the good lines before it are returned first and
        the next call raises `LogError` for it (the offset stops at the bad line)."""
        data = self._read_from_offset(max_bytes)
        end = data.rfind(b"\n")
        if end < 0:
            self.partial = len(data)
            return []
        self.partial = len(data) - end - 1
        parts = data[:end].split(b"\n")
        try:
            out = list(map(orjson.loads, parts))
        except orjson.JSONDecodeError:
            return self._read_up_to_bad(parts)
        if len(set(map(type, out))) != 1 or type(out[0]) is not dict:
            return self._read_up_to_bad(parts)
        self.offset += end + 1
        self.lines += len(out)
        return out

    def _read_up_to_bad(self, parts: list[bytes]) -> list[dict[str, Any]]:
        """Line by line up to the first bad line: the good ones are returned, or the error raised."""
        out: list[dict[str, Any]] = []
        pos = 0
        for raw in parts:
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                doc = exc
            if not isinstance(doc, dict):
                if out:  # return what was good; the next call starts at the bad line and raises
                    break
                raise LogError(self._bad(raw, doc))
            out.append(doc)
            pos += len(raw) + 1
        self.offset += pos
        self.lines += len(out)
        return out

    def _read_from_offset(self, max_bytes: int | None) -> bytes:
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < self.offset:
                    raise LogError(f"{self.path}: the log shrank from {self.offset} to {size} bytes "
                                   f"(truncated or replaced while being read)")
                fh.seek(self.offset)
                if max_bytes is None:
                    return fh.read()
                data = fh.read(max_bytes)
                while data and b"\n" not in data:  # one line longer than the limit: read on to its end
                    more = fh.read(max_bytes)
                    if not more:
                        break
                    data += more
                return data
        except FileNotFoundError:
            raise LogError(f"{self.path}: no such log file") from None
        except IsADirectoryError:
            raise LogError(f"{self.path}: is a directory, not a log file") from None
        except PermissionError:
            raise LogError(f"{self.path}: cannot read the log (permission denied)") from None

    def _bad(self, raw: bytes, doc: Any) -> str:
        number = self.lines + 1
        if isinstance(doc, Exception):
            why = f"not valid JSON ({str(doc).split(':')[0]})" if raw.strip() else "empty line"
        else:
            why = f"not a JSON object (a {type(doc).__name__})"
        return f"{self.path}: line {number}: {why}"

    def truncated_error(self) -> LogError:
        """The error for a file that ends in the middle of a line (offline reading)."""
        return LogError(f"{self.path}: line {self.lines + 1}: truncated ({self.partial} bytes without "
                        f"a newline at the end of the file)")
