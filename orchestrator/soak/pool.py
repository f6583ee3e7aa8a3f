"""The supervisor's processes: workers, the log shipper and the chaos agent, each a real OS
process running one command line (`python -m orchestrator ...` unless the pool is given another
`python -m MODULE` command), so operators and tools can see and signal them by PID.

They are forked from a fork server (multiprocessing's `forkserver`: one single-threaded process
that imported the package once). A fresh `python -m orchestrator worker` spent about 0.2 s of CPU
importing before its first lease; at a rehearsal's speed a crash drill restarts a worker every few
wall seconds, and each restart took one of the machine's cores for 800-1,800 soak seconds. A
forked process starts in about 10 ms. Each child runs the command line it would have been started
with, in its own session, with the supervisor's environment and working directory at the time it
was started, and shows that command line as its process title (`ps`). The pool does not import
the command line it runs: the fork server imports the module its command names, and each child
runs that module as `__main__`, as `python -m` would.
"""

from __future__ import annotations

import gc
import importlib.util
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import setproctitle

from orchestrator.core.files import write_whole
from orchestrator.faults.client import kill
from orchestrator.queue.runs import pid_alive

# The command every process of a pool runs before its own arguments, unless the pool is given another.
COMMAND = (sys.executable, "-m", "orchestrator")

# One fork server per supervisor, started on the first spawn; it imports the module the pool's
# command runs (and so every module a child runs) before it forks anything.
_FORKS = multiprocessing.get_context("forkserver")


def _main_module(module: str) -> str:
    """What `python -m module` executes: a package's `__main__`, else the module itself."""
    spec = importlib.util.find_spec(module)
    return f"{module}.__main__" if spec is not None and spec.submodule_search_locations else module


def _run_command(argv: list[str], out: str, env: dict[str, str], cwd: str) -> None:
    """The forked child: what `subprocess.Popen(argv, stdout=out, stderr=STDOUT,
    stdin=DEVNULL, start_new_session=True)` would have run, without starting Python again."""
    setproctitle.setproctitle(" ".join(argv))  # first: it moves the environment it finds
    # What the fork server imported (about 25,000 objects the collector tracks) is never garbage:
    # out of the collector's sight, a full collection takes well under a millisecond instead of
    # 6-18 ms with the GIL held, and does not copy those pages out of the shared memory.
    gc.freeze()
    os.setsid()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    # `python -m` puts the working directory first, then PYTHONPATH (custom handlers live there).
    extra = [cwd, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    sys.path[:0] = [p for p in extra if p not in sys.path]
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    sys.argv = [argv[0], *argv[3:]]  # argv: python -m MODULE <arguments...>
    # The fork server imported the entry module under its own name (for what it imports); run
    # it afresh as __main__, as `python -m` does, without runpy's warning about the copy.
    sys.modules.pop(_main_module(argv[2]), None)
    runpy.run_module(argv[2], run_name="__main__", alter_sys=True)


class Forked:
    """A forked child behind the part of `subprocess.Popen` the pool uses: pid, poll, wait."""

    def __init__(self, process: multiprocessing.process.BaseProcess):
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        """The exit code once it has exited (negative: killed by that signal), else None."""
        return None if self.process.is_alive() else self.process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
        return self.process.exitcode


@dataclass
class Proc:
    name: str
    role: str  # worker | shipper | agent
    argv: list[str]
    popen: Forked

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass(frozen=True)
class PoolConfig:
    home: Path
    run_id: str
    workers: int
    handler: str
    ttl: float  # effective lease TTL, soak seconds
    poll: float
    batch: int
    inflight_cap: int | None
    lock_socket: Path
    folder: Path  # the run's folder under home/run/: pid file, process output
    command: tuple[str, ...] = COMMAND  # `python -m MODULE`: what each process runs, before its arguments
    db_args: tuple[str, ...] = ()  # `--db URL` when the run's database is not the home's own (`Home.db_args`)

    def __post_init__(self) -> None:
        if len(self.command) != 3 or self.command[1] != "-m":
            raise ValueError(f"a pool's command is `python -m MODULE`, got {self.command!r}")


class Pool:
    def __init__(self, config: PoolConfig):
        self.config = config
        self.procs: dict[str, Proc] = {}
        self.stopped: set[int] = set()  # pids held by SIGSTOP

    def _orch(self, *args: str) -> list[str]:
        return [*self.config.command, *args, "--home", str(self.config.home), *self.config.db_args]

    def _spawn(self, name: str, role: str, argv: list[str]) -> Proc:
        if not self.procs:  # takes effect only before the fork server starts (the first spawn)
            _FORKS.set_forkserver_preload([_main_module(self.config.command[2])])
        # daemon: should the supervisor itself end without stopping them, they are terminated.
        child = _FORKS.Process(target=_run_command, name=f"orch-{name}", daemon=True,
                               args=(argv, str(self.config.folder / f"{name}.out"), dict(os.environ), os.getcwd()))
        child.start()
        proc = Proc(name, role, argv, Forked(child))
        self.procs[name] = proc
        self.save()
        return proc

    def start(self) -> None:
        cfg = self.config
        self._spawn("agent", "agent", self._orch("soak", "agent", "--run", cfg.run_id,
                                                 "--socket", str(cfg.lock_socket)))
        self._spawn("shipper", "shipper", self._orch("soak", "ship", "--run", cfg.run_id))
        for i in range(1, cfg.workers + 1):
            self.start_worker(f"w{i}")

    def start_worker(self, name: str) -> Proc:
        cfg = self.config
        argv = self._orch("worker", "--run", cfg.run_id, "--name", name, "--handler", cfg.handler, "--ttl", repr(cfg.ttl),
                          "--poll", repr(cfg.poll), "--batch", str(cfg.batch), "--no-reap",
                          "--lock-socket", str(cfg.lock_socket))
        if cfg.inflight_cap:
            argv += ["--cap", str(cfg.inflight_cap)]
        return self._spawn(name, "worker", argv)

    def wait_ready(self, wall_timeout: float = 60.0) -> list[str]:
        """Wait until every process has said it is ready (or died); returns the names not ready."""
        deadline = time.monotonic() + wall_timeout
        while True:
            late = [p.name for p in self.procs.values()
                    if p.popen.poll() is None and not (self.config.folder / f"{p.name}.ready").exists()]
            if not late or time.monotonic() > deadline:
                return late
            time.sleep(0.01)

    def respawn(self, proc: Proc) -> Proc:
        return self._spawn(proc.name, proc.role, proc.argv)

    def dead(self) -> list[tuple[Proc, int]]:
        """Processes that exited, with their return codes (reaped)."""
        out = []
        for proc in list(self.procs.values()):
            code = proc.popen.poll()
            if code is not None:
                out.append((proc, code))
        return out

    def by_name(self, name: str) -> Proc | None:
        return self.procs.get(name)

    def pid_of(self, worker: str) -> int | None:
        proc = self.procs.get(worker)
        return proc.pid if proc and proc.role == "worker" else None

    def signal(self, proc: Proc, sig: signal.Signals, send: Callable[[int, int], bool] = kill) -> bool:
        """Signal a process of the pool, keeping track of the ones SIGSTOP holds; `send` is how
        (the skip clock sends under its lock: `SkipClock.signal`)."""
        if sig == signal.SIGSTOP:
            self.stopped.add(proc.pid)
        elif sig == signal.SIGCONT:
            self.stopped.discard(proc.pid)
        return send(proc.pid, sig)

    def stop(self, roles: tuple[str, ...], wall_timeout: float = 10.0) -> None:
        """SIGCONT (if stopped) and SIGTERM, wait, then SIGKILL what is left."""
        targets = [p for p in self.procs.values() if p.role in roles and p.popen.poll() is None]
        for proc in targets:
            if proc.pid in self.stopped:
                self.signal(proc, signal.SIGCONT)
            kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + wall_timeout
        for proc in targets:
            try:
                proc.popen.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                kill(proc.pid, signal.SIGKILL)
                proc.popen.wait()
        for proc in targets:
            self.procs.pop(proc.name, None)
        self.save()

    def save(self) -> None:
        """Write `pids.json` whole: a new file renamed over the old one, so a reader (`orch soak
        resume` after a crash, the diagnostics bundle, an operator's script) never meets it empty
        or half written, as it did when the file was rewritten in place."""
        doc = {p.name: {"pid": p.pid, "role": p.role} for p in self.procs.values()}
        write_whole(self.config.folder / "pids.json", orjson.dumps(doc))


def leftovers(folder: Path) -> list[int]:
    """After a supervisor died: the processes its pid file names that still run one of our
    commands (checked by command line, so a recycled pid is never signalled), each continued
    (SIGCONT): one stopped inside a write transaction would keep every writer out."""
    path = folder / "pids.json"
    if not path.exists():
        return []
    found = []
    for info in orjson.loads(path.read_bytes()).values():
        pid = info["pid"]
        if pid_alive(pid) and _is_ours(pid):
            kill(pid, signal.SIGCONT)
            found.append(pid)
    return found


def stop_leftovers(pids: list[int], wall_timeout: float = 10.0) -> None:
    """SIGTERM the `leftovers`, and SIGKILL those still there after `wall_timeout`."""
    for pid in pids:
        kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wall_timeout
    for pid in pids:
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid_alive(pid):
            kill(pid, signal.SIGKILL)


def _is_ours(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().replace(b"\0", b" ").split()  # a process title is one string
    except OSError:
        return False
    return b"orchestrator" in argv and (b"worker" in argv or b"soak" in argv)
