"""The terminal views of issue 16: the supervisor's live view (run id, SLO targets, the five abort
rules' states, 80 columns, Ctrl-C on a real terminal), the one-line title of `orch soak status
--watch`, and one end time of a run across the live view, `orch soak status` and the summary.

The real-terminal tests run `orch soak start` inside tmux (a real pseudo-terminal with its own
line discipline: Ctrl-C is typed, echoed and turned into SIGINT as for a person) and read the
screen tmux keeps.
"""

from __future__ import annotations

import dataclasses
import io
import re
import shlex
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from sli_logs import LogBuilder

from orchestrator.cli.orch import orch
from orchestrator.cli.watch import _panel
from orchestrator.core import profiles
from orchestrator.core.clock import Clock, HandClock, RunEnd, iso_utc
from orchestrator.core.home import Home
from orchestrator.judge.report import render_summary
from orchestrator.judge.reporttext import ended
from orchestrator.judge.rules import RULE_STATES
from orchestrator.judge.sli import aggregate_file
from orchestrator.queue.runs import RunStore
from orchestrator.queue.writes import Queue
from orchestrator.soak.control import status
from orchestrator.soak.progress import WIDTH, table
from orchestrator.soak.shipper import event_line
from orchestrator.web.monitor import Monitor

RUN_ID = "20261203T113338Z-s14-3f87"
RULES = ("moving success", "duplicate execution", "transition stall", "guardrail not blocked", "log missing")


def render(renderable, width: int = 80) -> list[str]:
    console = Console(record=True, width=width, force_terminal=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text().splitlines()


def snapshot(agg, **over) -> dict:
    """What the supervisor gives the live view (Supervisor.snapshot), from an aggregator."""
    view = agg.progress()
    snap = {"run_id": RUN_ID, "profile": "24h", "speed": 1440.0, "clock": "constant", "soak_t": 5000.0,
            "duration": 86400.0, "arrivals": 40, "planned": 276480,
            "counts": {"PENDING": 0, "IN_PROGRESS": 0, "BLOCKED": 0, "DONE": 40, "FAILED": 0, "CANCELLED": 0},
            "success": view["success"], "p95": view["p95"], "faults": view["faults"], "slo": view["slo"],
            "rules": view["rules"], "end": None}
    snap.update(over)
    return snap


def healthy(n: int = 40) -> LogBuilder:
    b = LogBuilder("24h")
    for i in range(n):
        b.run_task(10.0 + 20.0 * i)
    return b


# --- the live view ------------------------------------------------------------------------
def test_the_live_view_shows_the_run_id_each_slo_beside_its_target_and_the_rule_states():
    b = healthy()
    b.enqueue(900.0)  # one task waits: rule 3 is armed
    lines = render(table(snapshot(b.aggregator())))
    text = "\n".join(lines)
    assert RUN_ID in lines[0]
    rows = {line.split("  ")[0]: re.split(r"\s{2,}", line.strip()) for line in lines}
    assert rows["SLI-1 success"] == ["SLI-1 success", "100.00 %", ">= 99.0 %", "met"]
    assert rows["SLI-2 p95"] == ["SLI-2 p95", "3.0 s", "<= 90 s", "met"]
    assert rows["lease recovery"] == ["lease recovery", "n/a", ">= 99.0 %", "no data"]
    assert rows["SLI-4 duplicates"] == ["SLI-4 duplicates", "0", "<= 0", "met"]
    states = {r[1]: r[2] for r in rows.values() if r[0].startswith("rule ")}
    assert states == dict.fromkeys(RULES, "armed"), text


def test_the_live_view_shows_a_tripped_rule_and_an_slo_missed():
    b = LogBuilder("24h")
    b.run_task(10.0, key="same-key", side_effect=False)
    b.run_task(20.0, key="same-key", side_effect=False)  # a second effect of one key: rule 2
    b.fail(b.enqueue(30.0), 31.0)
    agg = b.aggregator()
    agg.check(60.0)
    rows = {line.split("  ")[0]: re.split(r"\s{2,}", line.strip()) for line in render(table(snapshot(agg)))}
    assert rows["rule 2"][1:] == ["duplicate execution", "tripped"]
    assert rows["rule 1"][1:] == ["moving success", "ok"]  # 3 tasks: below the window's minimum volume
    assert rows["SLI-1 success"][1:] == ["66.67 %", ">= 99.0 %", "MISSED"]
    assert rows["SLI-4 duplicates"][1:] == ["1", "<= 0", "MISSED"]


def test_the_live_view_fits_80_columns_with_two_to_spare():
    """Large counts, every rule tripped and the end row: no line wraps, none is cut, and none
    reaches the last two columns (where a line that fills the terminal makes the echoed `^C` wrap)."""
    b = healthy()
    agg = b.aggregator()
    rules = [{**r, "state": "tripped"} for r in agg.rule_states()]
    counts = {"PENDING": 123_456, "IN_PROGRESS": 64, "BLOCKED": 12_345, "DONE": 12_345_678, "FAILED": 123_456,
              "CANCELLED": 12_345}
    for end in (None, RunEnd(259_199.4, "2026-12-06T11:35:21.123Z")):
        snap = snapshot(agg, counts=counts, arrivals=1_234_567, planned=1_296_000, faults=123_456,
                        soak_t=259_199.0, duration=259_200.0, rules=rules, end=end, clock="skip")
        lines = render(table(snap))
        assert all(len(line.rstrip()) <= WIDTH for line in lines), "\n".join(lines)
        assert WIDTH <= 78
        text = "\n".join(lines)
        assert "…" not in text
        for label in ("soak time", "arrivals", "faults injected", "PENDING 123,456", "CANCELLED 12,345",
                      "SLI-1 success", "SLI-2 p95", "lease recovery", "SLI-4 duplicates", "target", *RULES,
                      RUN_ID, "71:59:59 of 72h"):
            assert label in text, label
        # the same lines at a wider terminal: the view does not stretch to fill it
        assert render(table(snap), width=120) == lines
    assert lines[-1].startswith("ended") and "soak 71:59:59, wall 2026-12-06 11:35:21.123 UTC" in lines[-1]


# --- the rule states: one function for every view ----------------------------------------------
def test_rule_states_follow_the_documented_rules():
    b = LogBuilder("24h")
    for i in range(5):
        b.run_task(10.0 + 20.0 * i)
    agg = b.aggregator()
    agg.check(200.0)
    states = {r["rule"]: r["state"] for r in agg.rule_states()}
    assert states == {1: "ok", 2: "armed", 3: "ok", 4: "armed", 5: "armed"}  # 5 tasks < min_volume 20; nothing waits
    for i in range(20):
        b.run_task(200.0 + 10.0 * i)
    b.enqueue(500.0)
    agg = b.aggregator()
    agg.check(600.0)
    assert {r["rule"]: r["state"] for r in agg.rule_states()} == dict.fromkeys(range(1, 6), "armed")
    b.finish(700.0)
    agg = b.aggregator()
    assert {r["state"] for r in agg.rule_states()} == {"ok"}  # the run is over and none fired
    assert all(r["state"] in RULE_STATES for r in agg.rule_states())


def test_the_web_view_takes_its_rule_states_from_the_judge(tmp_path):
    b = LogBuilder("24h")
    b.run_task(10.0, key="same-key", side_effect=False)
    b.run_task(20.0, key="same-key", side_effect=False)
    for i in range(25):
        b.run_task(100.0 + 10.0 * i)
    b.enqueue(400.0)
    b.run_task(500.0)
    path = b.write(tmp_path / "home" / "logs" / "soak" / "soak_24h_r.jsonl")
    monitor = Monitor(Home.resolve(str(tmp_path / "home")), log=path, snapshot_every=0.0)
    monitor.poll_once()
    web = monitor.current()["rules"]
    assert web == aggregate_file(path).rule_states()
    assert [r["state"] for r in web] == ["armed", "tripped", "armed", "armed", "armed"]


# --- `orch soak status --watch` ------------------------------------------------------------------
def status_doc(**over) -> dict:
    doc = {"run_id": RUN_ID, "profile": "72h", "seed": 14, "speed": 1440.0, "clock": "constant",
           "status": "interrupted", "verdict": "INCOMPLETE", "supervisor_pid": None, "soak_t": 259_199.0,
           "duration": 259_200.0, "ended": None, "arrivals_enqueued": 1_234_567, "commit": None, "log": "x",
           "counts": {"PENDING": 12_345, "IN_PROGRESS": 64, "BLOCKED": 0, "DONE": 1_234_567, "FAILED": 1_234,
                      "CANCELLED": 3},
           "oldest_pending_age": 1.0, "expired_leases": 2, "faults": {"worker_crash": 36, "timeout": 1_234}}
    doc.update(over)
    return doc


def test_watch_panel_has_a_one_line_title_and_fits_80_columns():
    for doc in (status_doc(), status_doc(status="finished", verdict="PASS",
                                         ended={"t": 259_201.5, "wall": "2026-12-06T11:35:21.123Z"})):
        lines = render(_panel(doc))
        titled = [line for line in lines if RUN_ID in line]
        assert len(titled) == 1 and lines[0] == titled[0], "\n".join(lines)
        assert lines[0].endswith(f"run {RUN_ID} {doc['status']} · soak 71:59:59 of 72h"), lines[0]
        assert "PENDING" in lines[1] and "CANCELLED" in lines[1]  # the table's header follows the title at once
        assert all(len(line.rstrip()) <= 78 for line in lines), "\n".join(lines)
        text = "\n".join(lines)
        assert "faults injected 1,270" in text and "expired leases 2" in text and f"verdict {doc['verdict']}" in text
    assert lines[-1] == "ended soak 72:00:02, wall 2026-12-06 11:35:21.123 UTC"


# --- one end of a run -------------------------------------------------------------------------
def test_status_reads_the_end_the_log_line_of_run_finished_carries(tmp_path):
    """`orch soak status` and the log (so the summary) take a run's end from its `run_finished`
    event, not from when the run's record was closed."""
    home = Home.resolve(str(tmp_path / "home"))
    home.ensure()
    origin = time.time()
    with Queue(home.db, Clock(origin, 1440.0)) as queue:
        store = RunStore(queue)
        store.create("r1", profiles.BUILTIN["24h"].to_dict(), 14, 1440.0, origin, home.logs / "soak_24h_r1.jsonl",
                     None)
        run = store.go("r1", origin)
        # `run_finished` at soak 0:10:00 (a hand clock); the record is closed now, a moment of wall
        # time after the start (which, at 1440x, the old reading took for the end)
        with Queue(home.db, HandClock(origin + 600.0)) as writer:
            writer.record("run_finished", data={"verdict": "STOPPED", "reason": "test"})
        row = queue.events_after(run.first_seq - 1)[-1]
        line = orjson.loads(event_line(row, run.started_soak))
        store.end("r1", "stopped", "STOPPED")
    assert line["event"] == "run_finished" and line["t"] == 600.0
    doc = status(home)
    assert doc["ended"] == {"t": line["t"], "wall": line["wall"]} and doc["soak_t"] == line["t"]
    result = CliRunner().invoke(orch, ["soak", "status", "--home", str(home.root)])
    assert f"ended {ended(line['t'], line['wall'])}\n" in result.output, result.output
    assert RunEnd.of_event(line) == RunEnd(line["t"], line["wall"])


def test_the_summary_ends_at_run_finished_even_when_a_line_follows_it():
    b = healthy(5)
    b.finish(700.0)
    b.ev(705.0, "worker_exited", worker="w1")  # a late line after the end (counted, not the end)
    f = b.aggregator().figures()
    assert f["run"]["ended"] == {"t": 700.0, "wall": b.wall(700.0)}
    assert (f["run"]["end_t"], f["run"]["end_wall"]) == (700.0, b.wall(700.0))
    text = render_summary(f)
    assert f"| ended | soak 0:11:40, wall {b.wall(700.0).replace('T', ' ').replace('Z', ' UTC')} (" in text
    assert "| soak time | 0:00:00 -> 0:11:40 of 24:00:00 planned |" in text
    assert render_summary(healthy(5).aggregator().figures()).count("| log ends | soak 0:01:33, wall ") == 1


# --- a real terminal -----------------------------------------------------------------------------
pytestmark_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (.ci/run installs it)")


class Tmux:
    """One tmux server of the test's own (its socket in tmp_path), one 80-column window."""

    def __init__(self, folder: Path, env: dict[str, str]):
        self.sock = folder / "tmux.sock"
        self.conf = folder / "tmux.conf"
        self.conf.write_text("set -g remain-on-exit on\nset -g history-limit 10000\n")
        self.env = env

    def __call__(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-S", str(self.sock), *args], capture_output=True, text=True, timeout=20,
                             env=self.env, check=True)
        return out.stdout

    def start(self, argv: list[str], cwd: Path) -> None:
        self("-f", str(self.conf), "new-session", "-d", "-x", "80", "-y", "50", "-s", "t", "-c", str(cwd),
             shlex.join(argv))

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "t", "-S", "-")

    def dead(self) -> int | None:
        """The command's exit status once it has ended (None while it runs); killed by a signal,
        128 + the signal's number, as a shell says it."""
        dead, status, killed = (self("display-message", "-p", "-t", "t",
                                     "#{pane_dead}:#{pane_dead_status}:#{pane_dead_signal}").strip().split(":") + ["", ""])[:3]
        if dead != "1":
            return None
        return int(status) if status else 128 + int(killed or 0)

    def close(self, wait_for) -> None:
        try:
            # a failed test: stop the run as a person would (killing the server would hang up on
            # the supervisor and leave its processes behind), then the server
            if self.dead() is None:
                self("send-keys", "-t", "t", "C-c")
                wait_for(lambda: self.dead() is not None, 60, "the soak to stop")
        finally:
            subprocess.run(["tmux", "-S", str(self.sock), "kill-server"], capture_output=True, timeout=20,
                           env=self.env)


@pytest.fixture
def tmux(tmp_path, clean_env, wait_for):
    t = Tmux(tmp_path, clean_env())
    yield t
    t.close(wait_for)


def small_profile(tmp_path: Path, name: str, duration: float) -> Path:
    """Profile A's load with no faults, for `duration` soak seconds."""
    p = profiles.BUILTIN["24h"]
    path = tmp_path / f"{name}.toml"
    path.write_text(dataclasses.replace(p, name=name, duration=duration, faults=profiles.Faults()).to_toml())
    return path


def end_of_log(home: Path) -> dict:
    log = next((home / "logs" / "soak").glob("soak_*_*.jsonl"))
    last = orjson.loads(log.read_bytes().splitlines()[-1])
    assert last["event"] == "run_finished"
    return last


@pytestmark_tmux
@pytest.mark.xdist_group("soak")
def test_ctrl_c_on_a_terminal_leaves_the_title_once(tmp_path, tmux, orch_cmd, wait_for):
    home = tmp_path / "home"
    profile = small_profile(tmp_path, "ctrlc", 4 * 3600.0)
    tmux.start(orch_cmd("soak", "start", "--profile", str(profile), "--speed", "120", "--home", str(home)), tmp_path)
    # the view is up and has redrawn a few times (soak time past 5 minutes, about 3 s of wall time)
    wait_for(lambda: re.search(r"soak time[\s│]+0:(0[5-9]|[1-5]\d):", tmux.screen()), 90, "the live view")
    tmux("send-keys", "-t", "t", "C-c")
    wait_for(lambda: tmux.dead() is not None, 90, "the run to stop")
    code = tmux.dead()
    screen = tmux.screen()
    assert code == 1, screen  # STOPPED
    lines = screen.splitlines()
    first = next(line for line in lines if line.strip())  # the view's title, as the terminal shows it
    assert lines.count(first) == 1 and first.startswith("soak run "), screen
    assert len(re.findall(r"^soak time", screen, re.M)) == 1, screen
    assert "Traceback" not in screen and ": STOPPED" in screen
    finished = end_of_log(home)
    assert re.search(r"^ended\s+soak \d+:\d\d:\d\d, wall ", screen, re.M), screen
    assert finished["wall"].replace("T", " ").replace("Z", " UTC") in screen


@pytestmark_tmux
@pytest.mark.xdist_group("soak")
def test_one_run_ends_at_the_same_time_in_the_live_view_status_and_summary(tmp_path, tmux, orch_cmd, clean_env,
                                                                           wait_for):
    home = tmp_path / "home"
    profile = small_profile(tmp_path, "short", 20 * 60.0)
    tmux.start(orch_cmd("soak", "start", "--profile", str(profile), "--speed", "600", "--home", str(home)), tmp_path)
    wait_for(lambda: tmux.dead() is not None, 120, "the run to end")
    code = tmux.dead()
    screen = tmux.screen()
    assert code in (0, 1) and "Traceback" not in screen, screen
    finished = end_of_log(home)
    assert finished["reason"] == "finished"
    wall = finished["wall"].replace("T", " ").replace("Z", " UTC")
    whole = int(round(finished["t"]))
    clock = f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
    end = f"soak {clock}, wall {wall}"
    # the live view's last frame
    assert re.search(rf"^ended\s+{re.escape(end)}$", screen, re.M), (end, screen)
    assert re.search(rf"^soak time\s+{re.escape(clock)} of 20m$", screen, re.M), screen
    # `orch soak status`, text and JSON
    status = subprocess.run(orch_cmd("soak", "status", "--home", str(home)), capture_output=True, text=True,
                            timeout=60, env=clean_env(), check=True).stdout
    assert f"ended {end}\n" in status and f"soak time {clock} of 20m" in status, status
    doc = orjson.loads(subprocess.run(orch_cmd("soak", "status", "--home", str(home), "--json"), capture_output=True,
                                      timeout=60, env=clean_env(), check=True).stdout)
    assert doc["ended"] == {"t": finished["t"], "wall": finished["wall"]} and doc["soak_t"] == finished["t"]
    # the summary (and its figures)
    summary = (home / "reports" / "soak" / "soak_summary.md").read_text()
    assert f"| ended | {end} (" in summary, summary[:2000]
    assert f"0:00:00 -> {clock} of 0:20:00 planned" in summary
    log = next((home / "logs" / "soak").glob("soak_short_*.jsonl"))
    run = aggregate_file(log).figures()["run"]
    assert (run["end_t"], run["end_wall"]) == (finished["t"], finished["wall"])


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.floats(min_value=0, max_value=4e9, allow_nan=False),
                 st.integers(min_value=0, max_value=4_000_000_000).map(lambda s: s + 0.9995),
                 st.integers(min_value=0, max_value=4_000_000_000).map(lambda s: s + 0.9999995)))
def test_iso_utc_writes_what_datetime_writes(wall):
    """The log's `wall` is datetime's own ISO form to the millisecond (half-even microseconds),
    though `iso_utc` works the date out once per second; the edges of a second included."""
    expected = datetime.fromtimestamp(wall, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert iso_utc(wall) == expected
