"""`ops diagnose`: one tar.gz an engineer attaches to an incident. Read-only on the queue.

Members: `versions.json` (Python, SQLite, platform, package and dependency versions),
`run.json` (the latest run record with its profile), `log_tail.jsonl` (the last N lines of the
run's log), `database.json` (`PRAGMA integrity_check` and `ops status` counts), `metrics.txt`
(the /metrics exposition computed offline from the log and the database), `incidents/` (the run's
incident records), `processes.json` (the run's processes from pids.json, alive or not, with their
command lines) and `MANIFEST.json`. Every text member is scrubbed: URLs keep only scheme and host,
and tokens / secrets / passwords / bearer credentials are replaced by `<redacted>`.
"""

from __future__ import annotations

import io
import platform
import re
import sys
import tarfile
import time
from collections import deque
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from orchestrator.core.errors import StoreError
from orchestrator.core.home import Home
from orchestrator.queue.runs import Run, RunStore, pid_alive
from orchestrator.queue.backend import engine_versions
from orchestrator.queue.writes import Queue

URL = re.compile(r"\b(https?)://([^\s\"'/?#@]*@)?([^\s\"'/?#:]+)(:\d+)?[^\s\"']*")
SECRET = re.compile(r"(?i)((?:--)?(?:token|secret|password|passwd|api[_-]?key|webhook)[\"']?\s*[=:]?\s*[\"']?|"
                    r"Bearer\s+)([^\s\"',&]+)")
DEPENDENCIES = ("click", "apscheduler", "numpy", "tenacity", "orjson", "rich", "matplotlib", "psutil",
                "prometheus-client", "soak-orchestrator")


def scrub(text: str) -> str:
    """URLs reduced to scheme://host[:port]/…, secret-looking values replaced."""
    text = URL.sub(lambda m: f"{m.group(1)}://{m.group(3)}{m.group(4) or ''}/…", text)
    return SECRET.sub(lambda m: m.group(1) + "<redacted>", text)


def versions() -> dict[str, Any]:
    deps = {}
    for name in DEPENDENCIES:
        try:
            deps[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            deps[name] = None
    return {"python": sys.version, **engine_versions(), "platform": platform.platform(), "packages": deps}


def tail_lines(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return b"".join(deque(fh, maxlen=n))
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})\n".encode()


def processes(folder: Path) -> dict[str, Any]:
    path = folder / "pids.json"
    if not path.exists():
        return {"pids_json": None, "processes": []}
    out = []
    for name, info in orjson.loads(path.read_bytes()).items():
        pid = info.get("pid")
        row = {"name": name, "role": info.get("role"), "pid": pid, "alive": pid_alive(pid)}
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                row["cmdline"] = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
                row["status"] = {k: v.strip() for k, v in (line.split(":", 1) for line in fh if ":" in line)
                                 if k in ("State", "VmRSS", "Threads")}
        except OSError:
            pass
        out.append(row)
    return {"pids_json": str(path), "processes": out}


def offline_metrics(home: Home, log: Path | None, status: dict[str, Any] | None) -> str:
    from orchestrator.web import metrics
    from orchestrator.web.monitor import Monitor

    snap = None
    if log is not None and log.exists():
        mon = Monitor(home, log=log, snapshot_every=0.0)
        while mon.poll_once():
            pass
        snap = mon.current()
    return metrics.render(snap, status).decode()


def collect(home: Home, lines: int = 200) -> dict[str, bytes]:
    """Every member of the archive, by name (already scrubbed)."""
    members: dict[str, Any] = {"versions.json": versions()}
    run: Run | None = None
    status = None
    if home.has_db():
        try:
            with Queue(home.db, create=False) as queue:
                run = RunStore(queue).latest()
                check = queue.store.integrity_check()
                status = queue.status(recent=20)
                members["database.json"] = {"path": home.db_shown, "integrity_check": check, "status": status}
        except StoreError as exc:
            members["database.json"] = {"path": home.db_shown, "error": str(exc)}
    else:
        members["database.json"] = {"path": home.db_shown, "error": "no queue database"}
    members["run.json"] = asdict(run) if run is not None else None
    log = Path(run.log_path) if run is not None else None
    if log is not None:
        members["log_tail.jsonl"] = tail_lines(log, lines)
    try:
        members["metrics.txt"] = offline_metrics(home, log, status)
    except Exception as exc:  # noqa: BLE001 - a diagnostic bundle still ships without its metrics
        members["metrics.txt"] = f"(metrics unavailable: {type(exc).__name__}: {exc})\n"
    if run is not None:
        members["processes.json"] = processes(home.runtime / run.id)
        for path in sorted(home.soak_reports.glob(f"incident_*{run.id}*.md")):
            members[f"incidents/{path.name}"] = path.read_bytes()
    out = {}
    for name, value in members.items():
        raw = value if isinstance(value, bytes) else (value.encode() if isinstance(value, str) else
                                                       orjson.dumps(value, option=orjson.OPT_INDENT_2
                                                                    | orjson.OPT_NON_STR_KEYS))
        out[name] = scrub(raw.decode("utf-8", errors="replace")).encode()
    out["MANIFEST.json"] = orjson.dumps({"created": time.time(), "home": str(home.root), "lines": lines,
                                         "members": sorted(out)}, option=orjson.OPT_INDENT_2)
    return out


def write_bundle(home: Home, out: Path | None = None, lines: int = 200) -> Path:
    members = collect(home, lines)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = Path(out) if out is not None else home.root / "reports" / f"diagnose_{stamp}.tar.gz"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(target, "w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(f"diagnose/{name}")
                info.size = len(data)
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(data))
    except OSError as exc:
        raise StoreError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target
