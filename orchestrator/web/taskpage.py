"""The tasks page's parts, rendered on the server: the search form (filled in from the query), the
first page of results with a plain "next page" link, one task's timeline, and the action form.

Without a script the form is a GET of `/tasks` and every link is a page. With it, the page's
script asks for the same parts (`/parts/tasks`, `/parts/timeline`) and swaps them in.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from orchestrator.core.model import ErrorClass, State
from orchestrator.web.markup import attr, esc

FILTERS = ("id", "key", "state", "error", "from", "to")
ACTIONS = ("retry", "cancel", "replan", "done", "fail")  # the first is the form's default
RESULT_HEAD = ("<tr><th>task</th><th>key</th><th>state</th><th>last error</th><th>attempt</th><th>epoch</th>"
               "<th>enqueued (soak s)</th></tr>")


def form(params: dict[str, str]) -> str:
    """The search form, its fields holding the query's values."""
    def text(name: str, placeholder: str, size: int = 0) -> str:
        width = f' size="{size}"' if size else ""
        return (f'<input id="f-{name}" name="{name}" placeholder="{attr(placeholder)}"{width} '
                f'value="{attr(params.get(name, ""))}">')

    def choice(name: str, blank: str, values: list[str]) -> str:
        chosen = params.get(name, "")
        options = "".join(f'<option{" selected" if v == chosen else ""}>{esc(v)}</option>' for v in values)
        return f'<select id="f-{name}" name="{name}"><option value="">{esc(blank)}</option>{options}</select>'

    return ('<h2>Search</h2><form id="search" method="get" action="/tasks">'
            + text("id", "ORCH-N", 10) + text("key", "idempotency key")
            + choice("state", "any state", [s.value for s in State])
            + '<label for="f-error" title="a task that had this error class on any attempt, not only the last">'
              " error ever had </label>"
            + choice("error", "any error", [e.value for e in ErrorClass])
            + text("from", "from (soak s)", 12) + text("to", "to (soak s)", 12)
            + '<button id="search-go">search</button></form>')


def message(text: str | None) -> str:
    return f'<p id="msg" class="err">{esc(text) if text else ""}</p>'


def rows(docs: list[dict[str, Any]]) -> str:
    """Result rows; a task's id links to its timeline (a page of its own without a script)."""
    out = []
    for t in docs:
        ident = attr(t["id"])
        out.append(f'<tr data-id="{ident}"><td><a href="/tasks?id={ident}" data-show="{ident}">{esc(t["id"])}</a></td>'
                   f"<td>{esc(t['key'])}</td><td>{esc(t['state'])}</td><td>{esc(t['error'])}</td>"
                   f"<td>{t['attempt']}/{t['max_attempts']}</td><td>{t['epoch']}</td><td>{t['enqueued_t']}</td></tr>")
    return "".join(out)


def results(docs: list[dict[str, Any]]) -> str:
    return f'<table id="results">{RESULT_HEAD}{rows(docs)}</table>'


def more(params: dict[str, str], nxt: str | None) -> str:
    """The next page: a link with the same filter and `before`, or nothing on the last page."""
    if nxt is None:
        return '<p id="more"></p>'
    query = urlencode([(k, params[k]) for k in (*FILTERS, "limit") if params.get(k)] + [("before", nxt)])
    return f'<p id="more"><a href="/tasks?{attr(query)}" data-next="{attr(nxt)}">next page</a></p>'


def _details(e: dict[str, Any]) -> str:
    parts = [e.get("notes"), f"backoff {e['backoff']} s" if e.get("backoff") is not None else None,
             f"stale epoch {e['stale_epoch']} ({e.get('call')})" if e.get("stale_epoch") is not None else None,
             e.get("detail")]
    return "; ".join(str(p) for p in parts if p)


def timeline(doc: dict[str, Any] | None) -> str:
    """One task and every event of it, in order."""
    if doc is None:
        return '<div id="timeline"></div>'
    task = doc["task"]
    lease = ""
    if task["state"] == "IN_PROGRESS":
        lease = (f"; lease epoch {task['epoch']} held by {esc(task['worker'])}, last heartbeat at soak "
                 f"{esc(task['heartbeat_t'])} s, lease until {esc(task['lease_until_t'])} s")
    head = ("<tr><th>seq</th><th>soak s</th><th>event</th><th>state</th><th>epoch</th><th>worker</th><th>error</th>"
            "<th>actor</th><th>notes / details</th></tr>")
    body = "".join(f"<tr><td>{e['seq']}</td><td>{e['t']}</td><td>{esc(e['event'])}</td>"
                   f"<td>{esc(e['prev'])} &rarr; {esc(e['state'])}</td><td>{esc(e['epoch'])}</td>"
                   f"<td>{esc(e['worker'])}</td><td>{esc(e['error'])}</td><td>{esc(e['actor'])}</td>"
                   f"<td>{esc(_details(e))}</td></tr>" for e in doc["events"])
    return (f'<div id="timeline"><h2>Timeline of {esc(task["id"])} ({esc(task["state"])})</h2>'
            f"<p>{esc(task['key'])}; attempt {task['attempt']}/{task['max_attempts']}{lease}</p>"
            f"<table>{head}{body}</table></div>")


def actions() -> str:
    """The action form (only with `--allow-actions`): it needs the script, which posts JSON."""
    options = "".join(f"<option>{a}</option>" for a in ACTIONS)
    return ('<h2>Action (on one task, or on every task the search filter selects)</h2>'
            '<input id="a-token" type="password" placeholder="token">'
            f'<select id="a-action">{options}</select><input id="a-task" placeholder="ORCH-N (empty: the filter)">'
            '<input id="a-notes" placeholder="notes" size="30"><button id="a-preview">preview</button>'
            '<button id="a-confirm" disabled>confirm</button><p id="a-result"></p>')
