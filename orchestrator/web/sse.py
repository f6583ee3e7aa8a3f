"""Server-Sent Events of the live view. A point's event id is its log `seq`: a client that
reconnects with `Last-Event-ID: N` gets every point after N, none twice; a client with no id gets
the whole run. `tiles` events (the current figures) carry no id, so they never move the cursor."""

from __future__ import annotations

from typing import Any, Callable

import orjson

from orchestrator.web.monitor import Monitor

KEEPALIVE = 15.0  # wall seconds between comments on a quiet stream


def frame(data: Any, event: str, ident: int | None = None) -> bytes:
    head = f"id: {ident}\n" if ident is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


def parse_last_id(header: str | None, query: str | None) -> int | None:
    for raw in (header, query):
        if raw is not None and raw.strip().lstrip("-").isdigit():
            return int(raw.strip())
    return None


def stream(monitor: Monitor, write: Callable[[bytes], None], last_id: int | None,
           stopped: Callable[[], bool], keepalive: float = KEEPALIVE) -> None:
    """Write the stream until the client goes (`write` raises) or `stopped()`."""
    write(b"retry: 1000\n\n")
    generation = monitor.generation
    sent_tiles = None
    while not stopped():
        if monitor.generation != generation:  # a new run started: the client starts over
            generation, last_id = monitor.generation, None
            write(frame({"generation": generation}, "reset"))
        points = monitor.points_after(last_id)
        if points:
            write(b"".join(frame(p, "point", p["seq"]) for p in points))
            last_id = points[-1]["seq"]
        tiles = monitor.current()
        if tiles is not None and tiles is not sent_tiles:
            write(frame(tiles, "tiles"))
            sent_tiles = tiles
        with monitor.cond:
            if monitor.generation == generation and not monitor.points_after_locked(last_id) \
                    and monitor.snapshot is sent_tiles and not monitor.stopping.is_set():
                if not monitor.cond.wait(keepalive):
                    write(b": keepalive\n\n")
