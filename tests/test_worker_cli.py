"""`orch worker` run by a person: it says on stderr what it is doing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# the console script, as a user runs it: unlike `python -m`, it does not put the current
# directory on sys.path by itself
ORCH = str(Path(sys.executable).with_name("orch"))


def test_a_worker_says_what_it_does_when_it_waits_and_when_it_exits_idle(tmp_path, orch_cmd, clean_env):
    home = tmp_path / "home"
    enq = subprocess.run(orch_cmd("enqueue", "--key", "k1", "--payload", '{"work": 0.1}', "--home", str(home)),
                         capture_output=True, text=True, timeout=60, env=clean_env())
    assert enq.returncode == 0, enq.stderr
    done = subprocess.run(orch_cmd("worker", "--name", "w9", "--idle-exit", "2", "--poll", "0.2",
                                   "--home", str(home)), capture_output=True, text=True, timeout=60, env=clean_env())
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == (f"w9: leasing from {home / 'db' / 'queue.db'} with handler orchestrator.handlers:synthetic, "
                        "lease TTL 30 soak s")
    assert "w9: no task due: waiting (a look every 0.2 soak s, exiting after 2 idle soak s)" in lines
    assert lines[-2:] == ["w9: no task due for 2 soak s: exiting (--idle-exit)", "w9: exited (idle) after 1 tasks"]


def test_a_handler_module_in_the_current_directory_is_found_and_a_missing_one_names_the_search(
        tmp_path, orch_cmd, clean_env):
    (tmp_path / "team_handler.py").write_text("def run(ctx):\n    return {'task': ctx.task}\n")
    home = tmp_path / "home"
    subprocess.run(orch_cmd("enqueue", "--key", "k1", "--home", str(home)), check=True, capture_output=True,
                   timeout=60, env=clean_env(), cwd=tmp_path)
    ran = subprocess.run([ORCH, "worker", "--handler", "team_handler:run", "--idle-exit", "1", "--poll", "0.2",
                          "--home", str(home)], capture_output=True, text=True, timeout=60,
                         env=clean_env(), cwd=tmp_path)
    assert ran.returncode == 0 and "exited (idle) after 1 tasks" in ran.stderr, ran.stderr
    missing = subprocess.run([ORCH, "worker", "--handler", "no_such_module:run", "--home", str(home)],
                             capture_output=True, text=True, timeout=60, env=clean_env(), cwd=tmp_path)
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1, missing.stderr
    assert missing.stderr.startswith("Error: cannot import handler module 'no_such_module': No module named "
                                     f"'no_such_module'; searched the current directory ({tmp_path}) first, then ")
