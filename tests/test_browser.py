"""The on-call pages in a real headless browser: Debian's chromium driven by Playwright (its own
browser download is not used). Skipped, with the reason, only when chromium is not installed."""

from __future__ import annotations

import shutil

import pytest
from test_report import aborted_log, rich_log
from test_web import TOKEN, busy_log, finished_busy_log, queue_home, write_lines  # noqa: F401 (fixture)
from webserve import deadline_wait, path_points, start_server, stop_server

from orchestrator.judge.report import write_summary
from orchestrator.judge.reporttext import pct
from orchestrator.judge.sli import aggregate_file
from orchestrator.queue.writes import Queue

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
              pytest.mark.xdist_group("browser")]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT = 30_000  # ms


@pytest.fixture
def browser(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "chromium-profile"), executable_path=CHROMIUM,
                                                   headless=True, args=ARGS, bypass_csp=True)
        # bypass_csp: wait_for_function polls with eval, which the pages' CSP (no unsafe-eval) blocks
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture
def chromium():
    """A browser for contexts of a test's own making (JavaScript off, or the pages' real CSP)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    (h / "logs" / "soak").mkdir(parents=True)
    return h


def half_written_log(home):
    """The first half of a busy log as the home's 72h log: (its builder, its lines, the file)."""
    b = busy_log(120)
    lines = b.lines()
    log = home / "logs" / "soak" / "soak_72h.jsonl"
    write_lines(log, lines[: len(lines) // 2], "wb")
    return b, lines, log


def test_tiles_equal_the_aggregator(browser, children, orch_cmd, clean_env, home):
    f = finished_busy_log(home)
    served = start_server(children, orch_cmd, clean_env, home)
    try:
        page = browser.new_page()
        page.goto(served.url)
        page.wait_for_selector("#tiles[data-verdict]", timeout=WAIT)
        tiles = page.locator("#tiles")
        assert float(tiles.get_attribute("data-success")) == f["sli1"]["success"]
        assert float(tiles.get_attribute("data-p95")) == f["sli2"]["p95"]
        assert tiles.get_attribute("data-verdict") == f["verdict"]
        assert pct(f["sli1"]["success"]) in tiles.inner_text()
        page.wait_for_function(f"window.oncall.points.length === {len(served.get_json('/api/points')['points'])}",
                               timeout=WAIT)
        assert page.locator("#chart-moving svg").count() == 1 and page.locator("#rule-1").get_attribute("data-state") == "ok"
    finally:
        stop_server(served)


def test_a_reload_mid_run_keeps_every_point(browser, children, orch_cmd, clean_env, home):
    b, lines, log = half_written_log(home)
    served = start_server(children, orch_cmd, clean_env, home)
    try:
        page = browser.new_page()
        page.goto(served.url)
        page.wait_for_function("window.oncall.points.length > 30", timeout=WAIT)
        b.finish(7300.0)
        write_lines(log, b.lines()[len(lines) // 2:])
        page.wait_for_function("window.oncall.tiles && window.oncall.tiles.complete", timeout=WAIT)
        full = [p["seq"] for p in served.get_json("/api/points")["points"]]
        page.wait_for_function(f"window.oncall.points.length === {len(full)}", timeout=WAIT)
        assert page.evaluate("window.oncall.points.map(p => p.seq)") == full  # live: no gap, no duplicate
        page.reload()
        page.wait_for_function(f"window.oncall.points.length === {len(full)}", timeout=WAIT)
        assert page.evaluate("window.oncall.points.map(p => p.seq)") == full
    finally:
        stop_server(served)


def test_an_abort_shows_tripped_with_its_evidence(browser, children, orch_cmd, clean_env, home):
    b = aborted_log()
    b.write(home / "logs" / "soak" / "soak_72h.jsonl")
    evidence = aborted_log().aggregator().figures()["aborts"][0]["evidence"]
    served = start_server(children, orch_cmd, clean_env, home)
    try:
        page = browser.new_page()
        page.goto(served.url)
        page.wait_for_selector("#rule-2[data-state=tripped]", timeout=WAIT)
        row = page.locator("#rule-2")
        assert "tripped" in row.inner_text() and evidence[0] in row.inner_text()
        assert row.locator("a").first.get_attribute("href") == f"/tasks?id={evidence[0]}"
        assert page.locator("#tiles").get_attribute("data-verdict") == "ABORTED"
    finally:
        stop_server(served)


def test_bulk_retry_previews_applies_and_logs_n(browser, children, orch_cmd, clean_env, queue_home, dump):
    db = queue_home / "db" / "queue.db"
    served = start_server(children, orch_cmd, clean_env, queue_home, "--token", TOKEN, "--allow-actions")
    try:
        page = browser.new_page()
        page.goto(served.url + "tasks")
        page.wait_for_selector("#results tr[data-id]", timeout=WAIT)
        page.fill("#a-token", TOKEN)
        page.select_option("#f-state", "FAILED")
        page.select_option("#a-action", "retry")
        page.fill("#a-notes", "upstream fixed")
        before = dump(db)
        page.click("#a-preview")
        page.wait_for_selector("#a-count", timeout=WAIT)
        assert page.inner_text("#a-count") == "8"
        assert dump(db) == before
        page.click("#a-confirm")
        page.wait_for_selector("#a-applied", timeout=WAIT)
        assert page.inner_text("#a-applied") == "8"
    finally:
        stop_server(served)
    with Queue(db) as q:
        retried = [e for i in range(1, 31) for e in q.history(i) if e["event"] == "retried"]
    assert len(retried) == 8 and all(e["notes"] == "upstream fixed" and e["actor"].startswith("web:") for e in retried)


def test_refused_actions_write_nothing(browser, children, orch_cmd, clean_env, queue_home, dump):
    db = queue_home / "db" / "queue.db"
    served = start_server(children, orch_cmd, clean_env, queue_home, "--token", TOKEN, "--allow-actions")
    try:
        page = browser.new_page()
        page.goto(served.url + "tasks")
        page.wait_for_selector("#results tr[data-id]", timeout=WAIT)
        before = dump(db)
        page.fill("#a-token", "")  # a POST without the token
        page.select_option("#f-state", "FAILED")
        page.click("#a-preview")
        page.wait_for_selector("#a-result .err", timeout=WAIT)
        assert "a POST needs the server's token" in page.inner_text("#a-result")
        page.fill("#a-token", TOKEN)  # an illegal transition: retry a PENDING task
        page.fill("#a-task", "ORCH-20")
        page.click("#a-preview")
        page.wait_for_selector("#a-count", timeout=WAIT)
        page.click("#a-confirm")
        page.wait_for_selector("#a-result .err", timeout=WAIT)
        assert "ORCH-20 is PENDING" in page.inner_text("#a-result")
        assert dump(db) == before
    finally:
        stop_server(served)


def test_offline_report_makes_no_request(browser, tmp_path):
    agg = aggregate_file(rich_log().write(tmp_path / "soak_72h.jsonl"))
    write_summary(agg, tmp_path / "out")
    report = (tmp_path / "out" / "soak_report.html").resolve()
    requests = []
    browser.set_offline(True)
    browser.route("**/*", lambda route: (requests.append(route.request.url),
                                         route.continue_() if route.request.url == report.as_uri() else route.abort()))
    page = browser.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report.as_uri())
    page.wait_for_load_state("load")
    assert page.locator("svg").count() == 4 and "PASS" in page.inner_text("#verdict")
    assert set(requests) == {report.as_uri()}  # the document itself, nothing else


def test_the_first_paint_without_javascript_shows_the_figures(chromium, children, orch_cmd, clean_env, home):
    f = finished_busy_log(home)
    with Queue(home / "db" / "queue.db") as q:
        q.enqueue_many([(f"k{i}", {}) for i in range(60)])
    served = start_server(children, orch_cmd, clean_env, home)
    try:
        deadline_wait(lambda: (served.get_json("/api/overview")["tiles"] or {}).get("complete"), 30, "the whole log")
        points = len(served.get_json("/api/points")["points"])
        ctx = chromium.new_context(java_script_enabled=False, viewport={"width": 1200, "height": 900})
        page = ctx.new_page()
        page.goto(served.url, wait_until="load")
        shot = page.screenshot(full_page=True)  # the first screenshot, at load (kept in memory only)
        assert shot.startswith(b"\x89PNG") and len(shot) > 20_000
        tiles = page.locator("#tiles")
        assert tiles.get_attribute("data-verdict") == f["verdict"] == "PASS"
        assert "PASS" in tiles.inner_text() and pct(f["sli1"]["success"]) in tiles.inner_text()
        for state in ("DONE", "FAILED"):
            assert page.inner_text(f"#counts td[data-state={state}]") == f"{f['states'][state]:,}"
        assert page.locator("#rules tr[data-state=ok]").count() == 5
        for chart in ("chart-moving", "chart-states", "chart-ended"):
            assert page.get_attribute(f"#{chart} svg", "data-points") == str(points)
            paths = page.locator(f"#{chart} svg path")
            assert paths.count() >= 1 and all(path_points(paths.nth(i).get_attribute("d")) > 100
                                              for i in range(paths.count()))
            assert page.locator(f"#{chart} svg").bounding_box()["height"] > 100  # drawn, not collapsed
        page.goto(served.url + "tasks", wait_until="load")
        assert page.locator("#results tr[data-id]").count() == 50  # the first page of the search
        page.click("#more a")  # without a script, the next page is a page
        assert page.locator("#results tr[data-id]").count() == 10 and "before=ORCH-11" in page.url
        ctx.close()
    finally:
        stop_server(served)


def test_the_script_runs_under_the_real_csp(chromium, children, orch_cmd, clean_env, home):
    """No bypass_csp here: the pages' own policy applies; the tiles and charts follow the SSE stream."""
    b, lines, log = half_written_log(home)
    with Queue(home / "db" / "queue.db") as q:
        for i in range(3):
            q.enqueue(f"k{i}", {})
    served = start_server(children, orch_cmd, clean_env, home)
    try:
        half = deadline_wait(lambda: (served.get_json("/api/overview")["tiles"] or {}).get("last_seq"), 30, "the half")
        ctx = chromium.new_context()
        page = ctx.new_page()
        console = []
        page.on("console", lambda m: console.append(m.text))
        page.goto(served.url)
        page.wait_for_selector(f"#tiles[data-seq='{half}'][data-verdict]", timeout=WAIT)
        b.finish(7300.0)
        write_lines(log, b.lines()[len(lines) // 2:])
        final = aggregate_file(log).figures()
        done = f"#tiles[data-seq='{final['run']['last_seq']}'][data-verdict='{final['verdict']}']"
        page.wait_for_selector(done, timeout=WAIT)  # swapped in by the script after the SSE events
        points = len(served.get_json("/api/points")["points"])
        page.wait_for_selector(f"#chart-ended svg[data-points='{points}']", timeout=WAIT)
        assert "run finished" in page.inner_text("#tiles")
        assert page.inner_text("#counts td[data-state=DONE]") == f"{final['states']['DONE']:,}"
        page.goto(served.url + "tasks")
        page.click("#results a[data-show=ORCH-2]")  # the script shows the timeline in place
        page.wait_for_selector("#timeline h2", timeout=WAIT)
        assert "Timeline of ORCH-2 (PENDING)" in page.inner_text("#timeline") and "id=" not in page.url
        assert not [m for m in console if "Content Security Policy" in m], console
        ctx.close()
    finally:
        stop_server(served)
