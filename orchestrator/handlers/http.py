"""A built-in handler that calls a real HTTP service, so a team can soak-test it with no code:
`orch soak start --profile PATH.toml --handler orchestrator.handlers.http:request`.

What it calls comes from the task's payload, else from the environment the soak runs in:
  `url`      (payload) or `ORCH_HTTP_URL`              required
  `method`   (payload) or `ORCH_HTTP_METHOD`           default POST
  `timeout`  (payload) or `ORCH_HTTP_TIMEOUT`          seconds of wall time, default 10
  `body`     (payload)                                 JSON body; default the whole payload
It sends the task's idempotency key as the `Idempotency-Key` header (the downstream dedupes by
it) and the attempt as `X-Orch-Attempt`. A 2xx answer is the side effect applied; a 409 answer
(the downstream saw the key before) is reported as deduplicated and the task ends DONE.
Anything else raises what urllib raises (`HTTPError`, `URLError`, a timeout), which the worker
classifies: 5xx server_error, 429 rate_limit, 408/504 timeout, other 4xx param_error, refused or
reset connections network.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Any

import orjson

from orchestrator.core.model import TaskError
from orchestrator.handlers.context import TaskContext

DEDUPED = 409


def _setting(payload: dict, name: str, default: Any = None) -> Any:
    value = payload.get(name)
    return value if value is not None else os.environ.get(f"ORCH_HTTP_{name.upper()}", default)


def request(ctx: TaskContext) -> dict:
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    url = _setting(payload, "url")
    if not url:
        raise TaskError("param_error", "no url: give the task payload a `url` or set ORCH_HTTP_URL")
    method = str(_setting(payload, "method", "POST")).upper()
    try:
        timeout = float(_setting(payload, "timeout", 10.0))
    except (TypeError, ValueError):
        raise TaskError("param_error", "timeout must be a number of seconds") from None
    body = payload.get("body", payload) if method not in ("GET", "HEAD", "DELETE") else None
    data = orjson.dumps(body) if body is not None else None
    headers = {"Idempotency-Key": ctx.key, "X-Orch-Attempt": str(ctx.attempt), "X-Orch-Task": ctx.task}
    if data is not None:
        headers["Content-Type"] = "application/json"
    call = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(call, timeout=timeout) as answer:
            status = answer.status
            answer.read()
    except urllib.error.HTTPError as exc:
        if exc.code != DEDUPED:
            raise
        exc.close()
        ctx.side_effect(False, downstream=url, detail="409: the downstream had the key already")
        return {"task": ctx.task, "status": DEDUPED, "deduplicated": True}
    ctx.side_effect(True, downstream=url, detail=f"HTTP {status}")
    return {"task": ctx.task, "status": status}
