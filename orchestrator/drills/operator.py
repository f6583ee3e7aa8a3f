"""Drills on the command line: bad input fails closed; the runbook's lines work verbatim."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from orchestrator.drills.base import drill
from orchestrator.queue.tasks import task_name

H = "orchestrator.drills.handlers:"
OPS = "import sys; from orchestrator.cli.ops import ops; ops(prog_name='ops')"
REPO = Path(__file__).resolve().parents[2]
BATCH = 4  # fail-closed commands run at once


@dataclass(frozen=True)
class Case:
    what: str
    argv: tuple[str, ...]  # after `orch` (or `ops` when ops=True); {pending} {done} {failed} {profile...}
    code: int
    says: str  # a fragment the one-line message must hold
    ops: bool = False


BAD_PROFILES = {
    "bad_type": ('name = "x"\nduration = "a day"\n', "duration"),
    "unknown_key": ('name = "x"\nduration = 60.0\ntypo_key = 1\n', "typo_key"),
    "not_toml": ("name = [unclosed\n", "TOML"),
}

CASES = (
    Case("payload not JSON", ("enqueue", "--key", "k-bad", "--payload", "{bad"), 2, "not valid JSON"),
    Case("empty key", ("enqueue", "--key", " "), 2, "--key"),
    Case("budget not positive", ("enqueue", "--key", "k-b", "--budget", "-1"), 2, "--budget"),
    Case("budget wrong type", ("enqueue", "--key", "k-b", "--budget", "lots"), 2, "budget"),
    Case("key reused with another payload", ("enqueue", "--key", "{pending_key}", "--payload", '{"x": 2}'), 4,
         "another payload"),
    Case("malformed id", ("cancel", "--id", "ORCH-x"), 2, "malformed task id", ops=True),
    Case("unknown id", ("cancel", "--id", "ORCH-999999"), 3, "ORCH-999999", ops=True),
    Case("unknown id (status)", ("status", "--id", "ORCH-999999"), 3, "ORCH-999999", ops=True),
    Case("illegal transition: retry DONE", ("retry", "--id", "{done}"), 4, "DONE", ops=True),
    Case("illegal transition: replan PENDING", ("replan", "--id", "{pending}", "--notes", "n"), 4, "PENDING",
         ops=True),
    Case("illegal transition: done on DONE", ("done", "--id", "{done}", "--notes", "n"), 4, "DONE"),
    Case("illegal transition: fail on FAILED", ("fail", "--id", "{failed}", "--notes", "n"), 4, "FAILED"),
    Case("missing --notes", ("done", "--id", "{pending}"), 2, "--notes"),
    Case("empty --notes", ("replan", "--id", "{failed}", "--notes", " "), 2, "--notes", ops=True),
    Case("bulk retry without a state", ("retry", "--error-class", "timeout"), 2, "--state", ops=True),
    Case("unknown error class", ("retry", "--state", "FAILED", "--error-class", "oops"), 2, "oops", ops=True),
    Case("cap not a positive number", ("worker", "--cap", "0"), 2, "--cap"),
    Case("handler that does not exist", ("worker", "--handler", "nosuchmodule:fn"), 2, "nosuchmodule"),
    Case("a second run while one is in progress", ("soak", "start", "--profile", "24h"), 4, "in progress"),
    *(Case(f"profile: {name.replace('_', ' ')}", ("soak", "start", "--profile", f"{{profile_{name}}}"), 2, says)
      for name, (_, says) in BAD_PROFILES.items()),
    Case("unknown drill", ("drill", "run", "no-such-drill"), 2, "no-such-drill"),
)


def _judge(h, case: Case, argv: list[str], out: subprocess.CompletedProcess, wrote: bool) -> None:
    lines = [x for x in out.stderr.strip().splitlines() if x.startswith("Error: ")]
    # one `Error: ...` line, the last one (click's own parse errors print the usage above it)
    one_line = (len(lines) == 1 and out.stderr.strip().splitlines()[-1] == lines[0]
                and "Traceback" not in out.stderr)
    ok = out.returncode == case.code and one_line and case.says in out.stderr and not wrote
    shown = " ".join(shlex.quote(a) for a in (["ops"] if case.ops else ["orch"]) + argv)
    h.check(case.what, shown, f"exit {case.code}, one line naming `{case.says}`, no write",
            f"exit {out.returncode}: {(lines[0] if lines else out.stdout.strip())[:140]}; database "
            f"{'CHANGED' if wrote else 'unchanged'}", ok)


def _fill(arg: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        arg = arg.replace("{" + name + "}", value)
    return arg


@drill("fail-closed", "bad input to every command and to profile files: bad JSON, wrong types, unknown ids, "
       "illegal transitions, a bad cap, a second run, bad profiles",
       "each refused with one line `Error: ...` naming the problem and its documented exit code (2 usage, "
       "3 unknown id, 4 refused), and the database unchanged, row for row",
       abort={"stall": 86400.0})  # no worker on purpose: its PENDING task is not a stall
def fail_closed(h, cases: tuple[Case, ...] = CASES) -> None:
    pending = h.enqueue("pending", {"work": 1.0})
    done = h.enqueue("done", {"work": 1.0})
    failed = h.enqueue("failed", {"work": 1.0})
    h.operate("done", done, notes="drill: closed by hand")
    h.operate("fail", failed, notes="drill: failed by hand")
    values = {"pending": task_name(pending), "done": task_name(done), "failed": task_name(failed),
              "pending_key": h.key("pending")}
    for name, (text, _) in BAD_PROFILES.items():
        path = h.folder / f"{name}.toml"
        path.write_text(text)
        values[f"profile_{name}"] = str(path)
    def run(case: Case) -> subprocess.CompletedProcess:
        argv = [_fill(a, values) for a in case.argv]
        cmd = ([sys.executable, "-c", OPS] if case.ops else h.orch()) + argv + ["--home", str(h.home.root)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    # Four at a time, the database's digest taken around each batch; a batch that changed it is
    # run again one command at a time, so the command that wrote is the one named.
    for i in range(0, len(cases), BATCH):
        batch = cases[i:i + BATCH]
        before = h.db_digest()
        with ThreadPoolExecutor(len(batch)) as pool:
            outs = list(pool.map(run, batch))
        changed = [before != h.db_digest()] * len(batch)
        if changed[0]:
            outs, changed = [], []
            for case in batch:
                before = h.db_digest()
                outs.append(run(case))
                changed.append(before != h.db_digest())
        for case, out, wrote in zip(batch, outs, changed):
            _judge(h, case, [_fill(a, values) for a in case.argv], out, wrote)
    h.operate("cancel", pending, notes="drill: end of the fail-closed drill")


@drill("operator-runbook", "the runbook's lines run verbatim (`python3 automation/orchestrator/ops.py status`, "
       "cancel, replan --notes, retry, `orch.py done --notes`, `orch.py fail --notes`) against live workers",
       "each exits 0 with its documented effect and event (actor and notes recorded); status writes nothing")
def operator_runbook(h) -> None:
    scripts = REPO / "automation" / "orchestrator"
    if not h.check("runbook scripts present", str(scripts), "ops.py and orch.py", "found" if
                   (scripts / "ops.py").exists() else "missing (not a checkout)", (scripts / "ops.py").exists()):
        return
    x = h.enqueue("runbook-x", {"work": 3600.0})
    y = h.enqueue("runbook-y", {"work": 3600.0})
    h.enqueue_many([(f"bg-{i}", {"work": 10.0}) for i in range(10)])
    env = {**os.environ, "ORCH_HOME": str(h.home.root), "ORCH_ACTOR": "drill-oncall"}
    before = h.db_digest()
    out = subprocess.run([sys.executable, str(scripts / "ops.py"), "status"], capture_output=True, text=True,
                         timeout=60, env=env, cwd=h.folder, stdin=subprocess.DEVNULL)
    h.check("look (quiet queue)", "python3 automation/orchestrator/ops.py status", "exit 0, counts; no write",
            f"exit {out.returncode}; database {'unchanged' if before == h.db_digest() else 'CHANGED'}",
            out.returncode == 0 and "PENDING" in out.stdout and before == h.db_digest())
    for i in range(3):
        h.worker(f"w{i}", H + "synthetic")
    h.wait(lambda: h.state(x) == "IN_PROGRESS" and h.state(y) == "IN_PROGRESS", 600)
    steps = [
        ("ops.py status", None, None, "status"),
        (f'ops.py cancel --id {task_name(x)} --notes "poison input"', "cancel", "poison input", "cancelled"),
        (f'ops.py replan --id {task_name(x)} --notes "DB lock hotspot, split workload"', "replan",
         "DB lock hotspot, split workload", "replanned"),
        (f"ops.py retry --id {task_name(x)}", "retry", None, "retried"),
        (f'orch.py done --id {task_name(x)} --notes "incident mitigated"', "done", "incident mitigated",
         "closed_done"),
        (f'orch.py fail --id {task_name(y)} --notes "persistent failure; action required"', "fail",
         "persistent failure; action required", "closed_failed"),
    ]
    for line, action, notes, event in steps:
        task = y if "fail" == action else x
        before_seq = h.queue.last_seq()
        shown = f"python3 automation/orchestrator/{line}"
        argv = [sys.executable, str(scripts / line.split()[0]), *shlex.split(line)[1:]]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=h.folder,
                             stdin=subprocess.DEVNULL)
        if action is None:
            h.check("look (live)", shown, "exit 0, counts per state and in-flight workers",
                    f"exit {out.returncode}; {'shows' if 'IN_PROGRESS' in out.stdout else 'lacks'} IN_PROGRESS",
                    out.returncode == 0 and "IN_PROGRESS" in out.stdout)
            continue
        h.actions.append({"action": action, "task": task_name(task), "actor": "drill-oncall", "notes": notes})
        got = [e for e in h.events(event, task) if e["seq"] > before_seq]
        ok = out.returncode == 0 and len(got) == 1 and got[0]["actor"] == "drill-oncall" and got[0]["notes"] == notes
        h.check(action, shown, f"exit 0; one `{event}` event with actor and notes",
                f"exit {out.returncode}: {(out.stdout or out.stderr).strip()[:100]}; {len(got)} `{event}`",
                ok, [task], [e["seq"] for e in got])
    h.check("end states", "after the runbook", f"{task_name(x)} DONE (no effect), {task_name(y)} FAILED (operator)",
            f"{h.state(x)} ({'an' if h.queue.effect_of(h.key('runbook-x')) else 'no'} effect), {h.state(y)} "
            f"({h.queue.get(y).error})", h.state(x) == "DONE" and not h.queue.effect_of(h.key("runbook-x"))
            and h.state(y) == "FAILED" and h.queue.get(y).error == "operator", [x, y])
    h.wait(h.settled, 600)
