"""The live on-call view over real sockets: `orch soak serve` as a process on 127.0.0.1:0.
SSE backfill and reconnection by seq, tiles equal to the aggregator's figures, /metrics names,
the tasks API, and actions with their token and refusals."""

from __future__ import annotations

import shutil
import subprocess
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sli_logs import LogBuilder
from webserve import SSEClient, deadline_wait, parse_html, path_points, start_server, stop_server

from orchestrator.core.home import Home
from orchestrator.judge.reporttext import parse_wall, pct
from orchestrator.judge.sli import aggregate_file
from orchestrator.queue.writes import Queue

TOKEN = "s3cret-token"


def busy_log(minutes: int = 180) -> LogBuilder:
    b = LogBuilder()
    for i in range(minutes * 2):
        t = i * 30.0 + 1
        task = b.enqueue(t)
        b.lease(task, t + 1)
        if i % 37 == 5:
            b.fail(task, t + 4, "param_error")
        else:
            b.complete(task, t + 4)
    return b


def finished_busy_log(home) -> dict:
    """A finished two-hour busy log as the home's 72h log; returns its figures."""
    b = busy_log(120)
    b.finish(7300.0)
    return aggregate_file(b.write(home / "logs" / "soak" / "soak_72h.jsonl")).figures()


def write_lines(path, lines: list[bytes], mode: str = "ab") -> None:
    with open(path, mode) as fh:
        fh.write(b"".join(lines))  # each line ends with its newline


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    (h / "logs" / "soak").mkdir(parents=True)
    return h


def test_binding_another_address_needs_a_token(orch_cmd, clean_env, home):
    for extra in (["--host", "0.0.0.0"], ["--allow-actions"]):
        done = subprocess.run(orch_cmd("soak", "serve", "--home", str(home), "--port", "0", *extra),
                              capture_output=True, text=True, env=clean_env(), timeout=60)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("Error: "), done.stderr


def test_sse_reconnect_by_seq_has_no_gap_and_no_duplicate(children, orch_cmd, clean_env, home):
    b = busy_log()
    lines = b.lines()
    log = home / "logs" / "soak" / "soak_72h.jsonl"
    half = len(lines) // 2
    write_lines(log, lines[:half], "wb")
    served = start_server(children, orch_cmd, clean_env, home)
    try:
        first = SSEClient(served)
        have = deadline_wait(lambda: served.get_json("/api/points")["points"], 30, "points of the first half")
        deadline_wait(lambda: first.points() and first.points()[-1]["data"]["seq"] >= have[-1]["seq"], 30, "backfill")
        got_a = first.points()
        first.close()
        b.finish(b.events[-1]["t"] + 5)
        write_lines(log, b.lines()[half:])
        full = deadline_wait(lambda: (lambda p: p if p and p[-1]["t"] > 10700 else None)(
            served.get_json("/api/points")["points"]), 30, "the whole run")
        second = SSEClient(served, last_id=int(got_a[-1]["id"]))
        deadline_wait(lambda: second.points() and second.points()[-1]["data"]["seq"] == full[-1]["seq"], 30, "resume")
        fresh = SSEClient(served)
        deadline_wait(lambda: fresh.points() and fresh.points()[-1]["data"]["seq"] == full[-1]["seq"], 30, "reload")
        ids_a = [int(e["id"]) for e in got_a]
        ids_b = [int(e["id"]) for e in second.points()]
        assert ids_a + ids_b == [p["seq"] for p in full]  # every point once, in order
        assert [e["data"] for e in fresh.points()] == full
        assert all(int(e["id"]) == e["data"]["seq"] for e in fresh.points())
        assert len(full) >= 180  # one point per soak minute
        tiles = deadline_wait(lambda: (lambda t: t if t and t["complete"] else None)(fresh.tiles()), 30, "final tiles")
        for client in (second, fresh):
            client.close()
    finally:
        stop_server(served)
    f = aggregate_file(log).figures()
    assert tiles["verdict"] == f["verdict"] and tiles["sli"]["success"] == f["sli1"]["success"]
    assert tiles["sli"]["p95"] == f["sli2"]["p95"] and tiles["states"]["FAILED"] == f["states"]["FAILED"]
    assert tiles["last_seq"] == f["run"]["last_seq"]


METRICS = {
    "orch_soak_tasks", "orch_soak_leases_in_flight", "orch_soak_leases_expired_unreaped",
    "orch_soak_heartbeat_age_soak_seconds", "orch_soak_effects",
    "orch_soak_lease_expiries", "orch_soak_stale_rejections", "orch_soak_duplicate_dispatches",
    "orch_soak_actual_duplicates", "orch_soak_log_tasks", "orch_soak_abort_rule", "orch_soak_sli_success_ratio",
    "orch_soak_sli_latency_p95_soak_seconds", "orch_soak_moving_success_ratio", "orch_soak_clock_soak_seconds",
    "orch_soak_duration_soak_seconds", "orch_soak_started_timestamp_seconds", "orch_soak_last_event_timestamp_seconds",
    "orch_soak_speed", "orch_soak_log_seq", "orch_soak_error_budget_remaining_ratio",
    "orch_soak_burn_rate", "orch_soak_burn_rate_firing", "orch_soak_verdict", "orch_soak_run_info",
}
PROMTOOL = shutil.which("promtool")


def test_metrics_names_are_pinned(children, orch_cmd, clean_env, home):
    b = busy_log(60)
    b.finish(3700.0)
    log = b.write(home / "logs" / "soak" / "soak_72h.jsonl")
    with Queue(home / "db" / "queue.db") as q:
        q.enqueue("k1", {})
        q.lease("w1")
    served = start_server(children, orch_cmd, clean_env, home)
    try:
        deadline_wait(lambda: served.get_json("/api/overview")["tiles"], 30, "tiles")
        status, body, resp = served.request("GET", "/metrics")
    finally:
        stop_server(served)
    assert status == 200 and resp.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    fams = {m.name: m for m in text_string_to_metric_families(body.decode())}
    assert METRICS <= set(fams), METRICS - set(fams)
    f = aggregate_file(log).figures()
    value = lambda name, **labels: next(s.value for s in fams[name].samples  # noqa: E731
                                        if all(s.labels.get(k) == v for k, v in labels.items()))
    assert value("orch_soak_sli_success_ratio") == pytest.approx(f["sli1"]["success"])
    assert value("orch_soak_tasks", state="IN_PROGRESS") == 1 and value("orch_soak_leases_in_flight") == 1
    assert value("orch_soak_abort_rule", rule="1", state="ok") == 1
    assert value("orch_soak_verdict", verdict=f["verdict"]) == 1
    assert value("orch_soak_run_info", run_id=f["run"]["run_id"], profile="72h", clock="constant",
                 state="finished") == 1
    assert value("orch_soak_clock_soak_seconds") == f["run"]["end_t"] and value("orch_soak_effects") == 0
    assert value("orch_soak_last_event_timestamp_seconds") == parse_wall(f["run"]["end_wall"]).timestamp()
    assert value("orch_soak_started_timestamp_seconds") == parse_wall(f["run"]["started_at"]).timestamp()


def test_soak_time_metrics_are_named_soak_seconds(home):
    """`_seconds` is wall time, so `rate()` is per wall second; soak time says so in its name."""
    from orchestrator.web.metrics import render
    from orchestrator.web.monitor import Monitor

    b = busy_log(60)
    b.finish(3700.0)
    b.write(home / "logs" / "soak" / "soak_72h.jsonl")
    with Queue(home / "db" / "queue.db") as q:
        q.enqueue("k1", {})
        q.lease("w1")
        status = q.status(recent=0)
    monitor = Monitor(Home(home))
    while monitor.poll_once():
        pass
    text = render(monitor.current(), status).decode()
    helps = {line.split()[2]: line for line in text.splitlines() if line.startswith("# HELP ")}
    timed = {name for name in helps if "_seconds" in name}
    assert {"orch_soak_clock_soak_seconds", "orch_soak_heartbeat_age_soak_seconds",
            "orch_soak_last_event_timestamp_seconds"} <= timed
    for name in timed:
        assert name.endswith("_soak_seconds") == ("(soak s)" in helps[name] or "Soak seconds" in helps[name]), \
            helps[name]


def test_metrics_of_an_empty_home_are_the_series_at_zero():
    from orchestrator.web.metrics import render

    fams = {m.name: m for m in text_string_to_metric_families(render(None, None).decode())}
    for name in ("orch_soak_tasks", "orch_soak_log_tasks"):
        assert sorted((s.labels["state"], s.value) for s in fams[name].samples) == sorted(
            (state, 0.0) for state in ("PENDING", "IN_PROGRESS", "BLOCKED", "DONE", "FAILED", "CANCELLED"))
    assert [s.value for s in fams["orch_soak_leases_in_flight"].samples] == [0.0]
    assert {s.labels["verdict"]: s.value for s in fams["orch_soak_verdict"].samples} == dict.fromkeys(
        ("PASS", "FAIL", "INCOMPLETE", "ABORTED", "STOPPED"), 0.0)


def samples(body: bytes) -> dict[tuple, float]:
    """One scrape as {(sample name, sorted labels): value}."""
    return {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
            for fam in text_string_to_metric_families(body.decode()) for smp in fam.samples}


def tasks_in(scrape: dict[tuple, float], state: str) -> float:
    return scrape[("orch_soak_tasks", (("state", state),))]


def test_a_scrape_while_a_writer_changes_the_queue_is_one_snapshot(children, orch_cmd, clean_env, home):
    db = home / "db" / "queue.db"
    with Queue(db) as q:
        q.enqueue("seed", {})
    served = start_server(children, orch_cmd, clean_env, home)
    stop = threading.Event()

    def churn() -> None:  # enqueue, lease, complete: every commit moves a task between states
        with Queue(db) as q:
            n = 0
            while not stop.is_set():
                n += 1
                q.enqueue(f"c{n}", {})
                for lease in q.lease("w1", limit=2):
                    q.complete(lease.task, lease.epoch, "w1")

    writer = threading.Thread(target=churn, daemon=True)
    writer.start()
    scrapes = []
    try:
        for _ in range(60):
            status, body, _ = served.request("GET", "/metrics")
            assert status == 200
            scrapes.append(samples(body))
    finally:
        stop.set()
        writer.join(timeout=30)
        stop_server(served)
    assert len({tasks_in(s, "DONE") for s in scrapes}) > 10  # the queue changed while it was scraped
    for scrape in scrapes:  # each scrape is of one moment: a lease is a task IN_PROGRESS, an effect a DONE
        assert tasks_in(scrape, "IN_PROGRESS") == scrape[("orch_soak_leases_in_flight", ())]
        assert tasks_in(scrape, "DONE") == scrape[("orch_soak_effects_total", ())]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")
def test_promtool_check_metrics_is_clean(children, orch_cmd, clean_env, home):
    served = start_server(children, orch_cmd, clean_env, home)
    try:
        scrapes = {"an empty home": served.request("GET", "/metrics")[1]}
        b = busy_log(90)
        b.finish(5500.0)
        b.write(home / "logs" / "soak" / "soak_72h.jsonl")
        with Queue(home / "db" / "queue.db") as q:
            for i in range(6):
                q.enqueue(f"k{i}", {})
            first, second, *_ = q.lease("w1", limit=4)
            q.complete(first.task, first.epoch, "w1")
            q.fail(second.task, second.epoch, "w1", "param_error")
        deadline_wait(lambda: (served.get_json("/api/overview")["tiles"] or {}).get("complete"), 30, "the run's tiles")
        scrapes["a busy run"] = served.request("GET", "/metrics")[1]
    finally:
        stop_server(served)
    assert b"orch_soak_heartbeat_age_soak_seconds{" in scrapes["a busy run"]
    for what, body in scrapes.items():
        done = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60)
        assert (done.returncode, done.stdout, done.stderr) == (0, b"", b""), (what, done)


@pytest.fixture
def queue_home(home):
    with Queue(home / "db" / "queue.db") as q:
        for i in range(30):
            q.enqueue(f"key-{i}", {"i": i})
        for lease in q.lease("w1", limit=12):
            if lease.task <= 8:
                q.fail(lease.task, lease.epoch, "w1", "param_error")
            elif lease.task < 12:
                q.complete(lease.task, lease.epoch, "w1")  # ORCH-12 stays IN_PROGRESS under its lease
    return home


def test_tasks_api_pages_and_timeline(children, orch_cmd, clean_env, queue_home):
    served = start_server(children, orch_cmd, clean_env, queue_home)
    try:
        seen, nxt = [], None
        while True:
            doc = served.get_json("/api/tasks?limit=7" + (f"&before={nxt}" if nxt else ""))
            seen += [t["id"] for t in doc["tasks"]]
            nxt = doc["next"]
            if nxt is None:
                break
        assert seen == [f"ORCH-{i}" for i in range(30, 0, -1)]
        failed = served.get_json("/api/tasks?state=FAILED&error=param_error")["tasks"]
        assert [t["id"] for t in failed] == [f"ORCH-{i}" for i in range(8, 0, -1)]
        assert served.get_json("/api/tasks?key=key-3")["tasks"][0]["id"] == "ORCH-4"
        timeline = served.get_json("/api/tasks/ORCH-2")
        assert [e["event"] for e in timeline["events"]] == ["enqueued", "leased", "failed"]
        assert timeline["events"][1]["epoch"] == 1
        held = served.get_json("/api/tasks/ORCH-12")["task"]
        assert held["state"] == "IN_PROGRESS" and held["heartbeat_t"] is not None and held["lease_until_t"] > 0
        status, body, _ = served.request("GET", "/api/tasks/ORCH-999")
        assert status == 404 and b"no task ORCH-999" in body
        status, body, _ = served.request("GET", "/api/tasks?state=NOPE")
        assert status == 400
        status, body, _ = served.request("GET", "/tasks")
        urls = [v for n in parse_html(body.decode()).walk() for k, v in n.attrs.items() if k in ("src", "href")]
        assert status == 200 and urls and all(u.startswith("/") and not u.startswith("//") for u in urls)  # no other host
    finally:
        stop_server(served)


def test_actions_need_the_token_and_apply_like_ops(children, orch_cmd, clean_env, queue_home, dump):
    db = queue_home / "db" / "queue.db"
    read_only = start_server(children, orch_cmd, clean_env, queue_home, "--token", TOKEN)
    try:
        before = dump(db)
        assert read_only.post("/api/actions", {"action": "retry", "task": "ORCH-1"}, TOKEN)[0] == 403
        assert dump(db) == before
    finally:
        stop_server(read_only)
    served = start_server(children, orch_cmd, clean_env, queue_home, "--token", TOKEN, "--allow-actions",
                          "--actor", "alice")
    try:
        before = dump(db)
        bulk = {"action": "retry", "filter": {"state": "FAILED"}, "notes": "upstream fixed"}
        assert served.post("/api/actions", bulk)[0] == 403  # no token
        assert served.post("/api/actions", bulk, "wrong")[0] == 403
        status, preview = served.post("/api/actions", bulk, TOKEN)
        assert status == 200 and preview["preview"] and preview["count"] == 8
        assert preview["first"][:2] == ["ORCH-1", "ORCH-2"]
        assert dump(db) == before  # a preview writes nothing
        status, refused = served.post("/api/actions", {"action": "retry", "task": "ORCH-20", "confirm": True}, TOKEN)
        assert status == 409 and "ORCH-20 is PENDING" in refused["error"]
        status, _ = served.post("/api/actions", {"action": "done", "task": "ORCH-20", "confirm": True}, TOKEN)
        assert status == 400  # notes required, like the CLI
        status, stale = served.post("/api/actions", {**bulk, "confirm": True, "expect": 9}, TOKEN)
        assert status == 409 and "changed since the preview" in stale["error"]
        assert dump(db) == before  # refusals write nothing
        status, applied = served.post("/api/actions", {**bulk, "confirm": True, "expect": 8}, TOKEN)
        assert status == 200 and applied["applied"] == 8 and applied["states"] == {"PENDING": 8}
    finally:
        stop_server(served)
    with Queue(db) as q:
        events = [e for i in range(1, 9) for e in q.history(i) if e["event"] == "retried"]
    assert len(events) == 8 and {(e["actor"], e["notes"]) for e in events} == {("web:alice", "upstream fixed")}


CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def get_page(served, path: str, code: int = 200):
    status, body, resp = served.request("GET", path)
    assert status == code, (path, status, body[:300])
    assert resp.getheader("Content-Type") == "text/html; charset=utf-8"
    assert resp.getheader("Content-Security-Policy") == CSP
    return parse_html(body.decode()), body.decode()


def assert_no_inline_code(doc, text: str) -> None:
    """What the CSP would block: inline scripts, event-handler attributes, style elements and attributes."""
    scripts = doc.all("script")
    assert scripts and all(s.attrs.get("src", "").startswith("/static/") and not s.text().strip() for s in scripts)
    assert not doc.all("style")
    assert not [n for n in doc.walk() if any(a == "style" or a.startswith("on") for a in n.attrs)]
    assert "javascript:" not in text


def test_the_overview_renders_its_figures_in_the_first_response(children, orch_cmd, clean_env, home):
    f = finished_busy_log(home)
    served = start_server(children, orch_cmd, clean_env, home)
    try:
        deadline_wait(lambda: (served.get_json("/api/overview")["tiles"] or {}).get("complete"), 30, "the whole log")
        points = served.get_json("/api/points")["points"]
        doc, text = get_page(served, "/")
        parts = served.get_json("/parts/overview")["parts"]
    finally:
        stop_server(served)
    assert_no_inline_code(doc, text)
    tiles = doc.find("tiles")
    assert tiles.attrs["data-verdict"] == f["verdict"] == "PASS"
    assert float(tiles.attrs["data-success"]) == f["sli1"]["success"] and float(tiles.attrs["data-p95"]) == f["sli2"]["p95"]
    assert int(tiles.attrs["data-seq"]) == f["run"]["last_seq"]
    assert "PASS" in tiles.text() and pct(f["sli1"]["success"]) in tiles.text() and "run finished" in tiles.text()
    counts = {td.attrs["data-state"]: int(td.text().replace(",", "")) for td in doc.find("counts").all("td")}
    assert counts == {k: f["states"][k] for k in ("enqueued", "PENDING", "IN_PROGRESS", "BLOCKED", "DONE", "FAILED",
                                                  "CANCELLED")}
    assert counts["DONE"] > 200 and counts["FAILED"] > 0
    assert [r.attrs["data-state"] for r in doc.find("rules").all("tr") if "data-state" in r.attrs] == ["ok"] * 5
    assert doc.find("npoints").text() == str(len(points)) and len(points) > 100
    for chart, series in (("chart-moving", 1), ("chart-states", 3), ("chart-ended", 3)):
        svg, = doc.find(chart).all("svg")
        assert svg.attrs["data-points"] == str(len(points))
        paths = [path_points(p.attrs["d"]) for p in svg.all("path")]
        assert len(paths) == series
        drawn = [p for p in points if p["moving"] is not None] if chart == "chart-moving" else points
        assert all(n == len(drawn) > 0 for n in paths), (chart, paths)  # one point per soak minute, each series
    # the parts the script swaps in are the same elements, rendered by the same code
    assert {k: parse_html(v).find(k).attrs for k, v in parts.items()} == {k: doc.find(k).attrs for k in parts}
    assert parse_html(parts["charts"]).find("chart-ended").text() == doc.find("chart-ended").text()


def test_the_tasks_page_renders_the_first_page_and_the_timeline(children, orch_cmd, clean_env, queue_home):
    served = start_server(children, orch_cmd, clean_env, queue_home)
    try:
        doc, text = get_page(served, "/tasks?limit=7")
        assert_no_inline_code(doc, text)
        ids = [tr.attrs["data-id"] for tr in doc.find("results").all("tr") if "data-id" in tr.attrs]
        assert ids == [f"ORCH-{i}" for i in range(30, 23, -1)]
        link, = doc.find("more").all("a")
        assert link.attrs["href"] == "/tasks?limit=7&before=ORCH-24"
        doc, _ = get_page(served, link.attrs["href"])  # the next page is a plain link
        assert [tr.attrs["data-id"] for tr in doc.find("results").all("tr") if "data-id" in tr.attrs][0] == "ORCH-23"
        doc, _ = get_page(served, "/tasks?state=FAILED&error=param_error")
        assert len([tr for tr in doc.find("results").all("tr") if "data-id" in tr.attrs]) == 8
        chosen = [o.text() for o in doc.find("f-state").all("option") if "selected" in o.attrs]
        assert chosen == ["FAILED"]  # the form keeps the query
        assert "ever had" in doc.find("search").text() and doc.find("more").children == []
        doc, _ = get_page(served, "/tasks?id=ORCH-2")
        timeline = doc.find("timeline")
        assert "Timeline of ORCH-2 (FAILED)" in timeline.text()
        assert [tr.all("td")[2].text() for tr in timeline.all("tr")[1:]] == ["enqueued", "leased", "failed"]
        doc, _ = get_page(served, "/tasks?state=NOPE", 400)  # bad input: the message, no traceback
        assert doc.find("msg").text() == "unknown state 'NOPE'" and "Traceback" not in doc.text()
        doc, _ = get_page(served, "/tasks?id=ORCH-999", 404)
        assert doc.find("msg").text() == "no task ORCH-999"
    finally:
        stop_server(served)


def test_scripts_and_styles_are_files_of_the_server(children, orch_cmd, clean_env, home):
    served = start_server(children, orch_cmd, clean_env, home)
    try:
        doc, _ = get_page(served, "/")  # an empty home: the page, waiting for the log
        assert doc.find("tiles").text() == "waiting for the log..."
        for name, ctype in (("overview.js", "text/javascript"), ("tasks.js", "text/javascript"), ("oncall.css", "text/css")):
            status, body, resp = served.request("GET", f"/static/{name}")
            assert status == 200 and resp.getheader("Content-Type") == f"{ctype}; charset=utf-8" and body
        assert b"svg.chart" in served.request("GET", "/static/oncall.css")[1]  # the charts' rules (judge/svg.py)
        for missing in ("/static/nope.js", "/static/../server.py", "/static/"):
            assert served.request("GET", missing)[0] == 404
    finally:
        stop_server(served)
