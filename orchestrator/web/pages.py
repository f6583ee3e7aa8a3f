"""The live view's two pages, whole: the parts rendered on the server (`overview`, `taskpage`) in
a shell that loads the page's script and the style sheet from `/static/` (no inline script, so
the Content-Security-Policy allows scripts from this server only; no third-party JavaScript or CSS).
The scripts and the style sheet are files in `static/`, written here, not downloaded."""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import Any

from orchestrator.judge import svg
from orchestrator.web import overview, taskpage

# Scripts and styles from this server only; no inline script, style element or attribute.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
STATIC = {"overview.js": "text/javascript; charset=utf-8", "tasks.js": "text/javascript; charset=utf-8",
          "oncall.css": "text/css; charset=utf-8"}


@functools.cache
def static_file(name: str) -> bytes | None:
    """A file of `static/` by its name (only the ones listed), or None."""
    if name not in STATIC:
        return None
    text = (files("orchestrator.web") / "static" / name).read_text(encoding="utf-8")
    if name == "oncall.css":
        text += svg.CSS
    return text.encode()


def _page(title: str, body: str, script: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            '<link rel="stylesheet" href="/static/oncall.css"></head><body><header><b>soak on-call</b>'
            '<a href="/">overview</a><a href="/tasks">tasks</a><a href="/metrics">metrics</a></header>'
            f'<main>{body}</main><script src="/static/{script}"></script></body></html>')


def overview_page(snap: dict[str, Any] | None, points: list[dict[str, Any]], error: str | None,
                  status: dict[str, Any] | None) -> str:
    p = {**overview.figure_parts(snap, points, error), **overview.lease_parts(status)}
    body = (p["error"] + p["tiles"] + "<h2>Tasks by state (the run's log)</h2>" + p["counts"]
            + "<h2>Abort rules</h2>" + p["rules"] + p["charts"]
            + "<h2>Leases in flight and heartbeat ages</h2>" + p["leases"]
            + "<h2>Faults injected vs observed</h2>" + p["faults"]
            + "<h2>Error budget and burn rates (window pairs scaled to the run)</h2>" + p["budget"])
    return _page("Soak overview", body, "overview.js")


def tasks_page(params: dict[str, str], docs: list[dict[str, Any]], nxt: str | None,
               shown: dict[str, Any] | None, error: str | None, allow_actions: bool) -> str:
    """The search form and the first page of `docs` (the next page's `before` is `nxt`), the
    timeline of the task `shown`, and the action form with `--allow-actions`."""
    body = (taskpage.form(params) + taskpage.message(error) + taskpage.results(docs) + taskpage.more(params, nxt)
            + (taskpage.actions() if allow_actions else "") + taskpage.timeline(shown))
    return _page("Soak tasks", body, "tasks.js")
