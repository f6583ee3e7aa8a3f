"""Alertmanager-compatible webhooks (`--alert-webhook URL`, repeatable).

The live view's monitor hands every new snapshot to `Alerter.observe`, which only compares and
enqueues (it never blocks on the network): an alert fires when an abort rule trips or a burn-rate
pair fires, and resolves when the pair stops firing or the run is replaced. Each alert is sent
once per change (deduplicated by fingerprint). A background thread POSTs the Alertmanager webhook
payload (version 4) with a timeout and tenacity retries; a receiver that is down or slow only
delays this thread. URLs are redacted in every log line (credentials, path and query hidden).
"""

from __future__ import annotations

import hashlib
import queue
import sys
import threading
import urllib.request
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import urlsplit

import orjson
from tenacity import Retrying, stop_after_attempt, wait_exponential

from orchestrator.core.errors import UsageError

RECEIVER = "orch-soak"


def redact(url: str) -> str:
    """scheme://host:port/… : no credentials, path or query (they often hold the secret)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def check_urls(urls: list[str]) -> list[str]:
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--alert-webhook must be an http(s) URL, got {redact(url)}")
    return list(urls)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256(orjson.dumps(labels, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def wanted(tiles: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The alerts a snapshot calls for, by fingerprint."""
    out = {}
    for rule in tiles["rules"]:
        if rule["state"] == "tripped":
            labels = {"alertname": "SoakAbortRuleTripped", "run_id": tiles["run_id"], "rule": str(rule["rule"]),
                      "rule_name": rule["name"], "severity": "critical"}
            notes = {"summary": f"abort rule {rule['rule']} ({rule['title']}) tripped",
                     "evidence": ", ".join(rule["evidence"][:20]), "figures": orjson.dumps(rule["figures"]).decode()}
            out[_fingerprint(labels)] = {"labels": labels, "annotations": notes}
    for w in tiles["budget"]["windows"]:
        if w["firing"]:
            labels = {"alertname": "SoakErrorBudgetBurn", "run_id": tiles["run_id"], "pair": w["name"],
                      "severity": "page" if w["severity"] == "page" else "ticket"}
            notes = {"summary": f"error budget burning at {w['burn_long']:.1f}x ({w['long_min']} min) and "
                                f"{w['burn_short']:.1f}x ({w['short_min']} min), threshold {w['threshold']:g}"}
            out[_fingerprint(labels)] = {"labels": labels, "annotations": notes}
    return out


def payload(alerts: list[dict[str, Any]], status: str, external_url: str) -> dict[str, Any]:
    common = {k: v for k, v in alerts[0]["labels"].items() if all(a["labels"].get(k) == v for a in alerts)}
    return {"version": "4", "groupKey": f"{{}}:{{alertname=\"{alerts[0]['labels']['alertname']}\"}}",
            "truncatedAlerts": 0, "status": status, "receiver": RECEIVER,
            "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]}, "commonLabels": common,
            "commonAnnotations": {}, "externalURL": external_url, "alerts": alerts}


class Alerter:
    def __init__(self, urls: list[str], *, external_url: str = "", timeout: float = 5.0, attempts: int = 3,
                 log: Callable[[str], None] | None = None):
        self.urls = check_urls(urls)
        self.external_url = external_url
        self.timeout = timeout
        self.attempts = attempts
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.active: dict[str, dict[str, Any]] = {}
        self.outbox: queue.Queue = queue.Queue(maxsize=1000)
        self.sent = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self._thread.start()

    def observe(self, tiles: dict[str, Any] | None) -> None:
        """Compare with what is firing; enqueue the changes. Never blocks."""
        want = wanted(tiles) if tiles else {}
        fired = [fp for fp in want if fp not in self.active]
        gone = [fp for fp in self.active if fp not in want]
        now = _now()
        for fp in fired:
            alert = {"status": "firing", **want[fp], "startsAt": now, "endsAt": "0001-01-01T00:00:00Z",
                     "generatorURL": self.external_url, "fingerprint": fp}
            self.active[fp] = alert
            self._enqueue(alert, "firing")
        for fp in gone:
            alert = {**self.active.pop(fp), "status": "resolved", "endsAt": now}
            self._enqueue(alert, "resolved")

    def _enqueue(self, alert: dict[str, Any], status: str) -> None:
        try:
            self.outbox.put_nowait(payload([alert], status, self.external_url))
        except queue.Full:
            self.failed += 1
            self.log("alerts: outbox full, an alert was dropped")

    def _run(self) -> None:
        while True:
            doc = self.outbox.get()
            if doc is None:
                return
            body = orjson.dumps(doc)
            for url in self.urls:
                try:
                    for attempt in Retrying(stop=stop_after_attempt(self.attempts), reraise=True,
                                            wait=wait_exponential(multiplier=0.2, max=2.0)):
                        with attempt:
                            self._post(url, body)
                    self.sent += 1
                except (OSError, ValueError) as exc:
                    self.failed += 1
                    reason = getattr(exc, "reason", None) or type(exc).__name__
                    self.log(f"alerts: delivery to {redact(url)} failed after {self.attempts} attempts ({reason})")

    def _post(self, url: str, body: bytes) -> None:
        req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (http(s) checked)
            resp.read()

    def close(self) -> None:
        self.outbox.put(None)
        self._thread.join(timeout=self.timeout * self.attempts + 5)
