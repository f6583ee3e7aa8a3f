"""The skip clock: soak time that runs at a busy rate while the run works and jumps to the next
soak-time event when every participant waits (docs/soak.md, "The skip clock").

One file per run (`run/<run>/clock.bin`), mapped into every process of the run:

- a header with the time base (soak time = base_soak + (wall - base_wall) x rate), written under
  a sequence lock so a reader never sees half of a jump, plus the jump count, the work generation
  and the frozen flag;
- one slot per participant thread: its pid and the process's start time (so a dead or reused pid
  is recognised), its state (busy or waiting), the soak time its wait ends (infinity: until woken),
  what it waits for (a timer, work to lease, events to ship), and what it has seen (the soak time of
  a worker's last look at the queue, the seq a shipper has shipped).

Every change of a slot and every jump happens under one lock: a thread lock in the process and an
flock on the file across processes. A waiting thread sleeps on its own abstract Unix datagram
socket (after looking at its slot for SPIN_WALL); whoever wakes it first marks its slot busy
(under the lock), then, once the lock is let go, sends one byte. So a wake in flight is already
counted as work, and the thread that finds every slot waiting (the last one to go idle, or any
waiter's periodic look) may jump: nothing can be in flight that the slots do not show. The
database's part (tasks due, leases to expire, events not shipped) comes from a probe the process
installs, read under the same lock. The shipper is an observer (it only reads the database
and writes the log): its work holds no jump, and it is woken for a batch of events (SHIP_BACKLOG);
a reader of the log has it ship what there is and waits for it (LOG).
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.files import write_whole

HEADER = struct.Struct("<QdddQQQQd")  # seq, base_soak, base_wall, rate, jumps, signals, frozen, slots in use, skipped
SLOT = struct.Struct("<qqqqddq")  # pid, starttime, state, topic, deadline, seen, ident
SLOT_FLOATS = (4, 5)  # the slot's words that hold a double (deadline, seen; the rest are integers)
SLOTS = 256
SIZE = HEADER.size + SLOT.size * SLOTS
FREE, BUSY, WAITING = 0, 1, 2
# What a waiting slot waits for. REAP: its timer, or a lease's expiry. SHIP: events to ship (the
# shipper, an observer: it only reads the database and writes the log, so its work holds no jump).
# LOG: the shipper to have shipped the seq in the slot's `seen` (an evaluation of the abort rules).
# HOLD: a timer of a participant that holds the database's write lock meanwhile (the lock hog).
# LOCK: a writer kept out of the write lock: until the HOLD ends (`released`), else its backoff.
TIMER, WORK, SHIP, REAP, LOG, HOLD, LOCK = 0, 1, 2, 3, 4, 5, 6
SHIP_BACKLOG = 256  # events: the shipper is woken when this many wait to be shipped (or a reader waits)
# wall seconds a waiter looks at its slot before it sleeps: a wake-up that comes meanwhile costs
# no sleep and no wake of an idle core (about 55 us a hand-off between processes otherwise)
SPIN_WALL = 0.0005
LOOK_WALL = 0.05  # wall seconds: a waiter's periodic look (a lost wake, a signal, a dead peer)
STOP_WALL = 2.0  # wall seconds `signal` holds the lock at most for a SIGSTOP to take effect
INF = math.inf


@dataclass(frozen=True)
class Probe:
    """What the database says at a jump: the latest due time of a PENDING task that is due now
    (None: none), the earliest due time of one that is not due yet (a backoff's end), the earliest
    lease expiry (the reaper's next work), and the last event's seq."""

    due_now: float | None
    next_due: float | None
    lease_end: float | None
    last_seq: int


def _stat(path: str) -> list[bytes]:
    """The fields of a `/proc/.../stat` file after the command's name: [0] the state letter,
    [19] the start time. Raises OSError (gone) or IndexError (not a stat line)."""
    with open(path, "rb") as fh:
        return fh.read().rsplit(b") ", 1)[1].split()


def process_state(pid: int, starttime: int) -> str:
    """'run', 'stopped' or 'dead' (gone, a zombie, or the pid now names another process)."""
    try:
        fields = _stat(f"/proc/{pid}/stat")
    except (OSError, IndexError):
        return "dead"
    if fields[0] in (b"Z", b"X") or int(fields[19]) != starttime:
        return "dead"
    return "stopped" if fields[0] in (b"T", b"t") else "run"


def threads_stopped(pid: int) -> bool:
    """Whether every thread of `pid` is stopped (or gone)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for tid in threads:
        try:
            state = _stat(f"/proc/{pid}/task/{tid}/stat")[0]
        except (OSError, IndexError):
            continue  # that thread ended
        if state not in (b"T", b"t", b"Z", b"X"):
            return False
    return True


def await_stopped(pid: int, wall_timeout: float) -> bool:
    """Wait until every thread of `pid` has stopped after a SIGSTOP (`kill` returns before they
    have), at most `wall_timeout` wall seconds; whether they have."""
    deadline = time.monotonic() + wall_timeout
    while not threads_stopped(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0002)
    return True


def _starttime(pid: int) -> int:
    return int(_stat(f"/proc/{pid}/stat")[19])


class SkipClock:
    """The run's skip clock, as one process sees it. Threads that take part in the run register
    with `participant()` (or `enter()`); any thread may read `now()`."""

    skips = True

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._mutex = threading.RLock()
        self._local = threading.local()
        self._events: dict[int, threading.Event] = {}  # slot -> the event its thread waits on
        self._pid = -1
        self.probe: Callable[[float], Probe] | None = None  # the database's part of a jump
        self._open()
        self.speed = self.rate

    @classmethod
    def create(cls, path: Path | str, origin: float, rate: float) -> SkipClock:
        """A new run's clock file: soak time `origin` now, advancing at `rate` while busy."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_whole(path, HEADER.pack(0, origin, time.time(), rate, 0, 0, 0, 0, 0.0) + bytes(SLOT.size * SLOTS))
        return cls(path)

    # --- the file --------------------------------------------------------------------------
    def _open(self) -> None:
        self._pid = os.getpid()
        self._fd = os.open(self.path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, SIZE)
        # Writes go word by word through these views: every field is an aligned 8-byte word, and
        # a word store is never seen half done. (`struct.pack_into` zero-fills the whole record
        # before it writes the fields, so a reader without the lock could see a rate or a
        # deadline of 0.)
        self._ints = memoryview(self._map).cast("q")
        self._floats = memoryview(self._map).cast("d")
        st = os.fstat(self._fd)
        self._name = f"orch-clock-{st.st_dev:x}-{st.st_ino:x}-".encode()
        self._sockets: dict[int, socket.socket] = {}
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)
        self._local = threading.local()
        self._events = {}
        self._running: dict[int, tuple[int, int]] = {}  # pid -> (start time, signals) when last seen running
        self._wakes: list[bytes] = []  # addresses of the threads woken under the lock, to send a byte

    def _check_fork(self) -> None:
        """A forked child must not share its parent's flock (one open file): it opens its own."""
        if os.getpid() != self._pid:
            self._open()

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sender.close()
        self._ints.release()
        self._floats.release()
        self._map.close()
        os.close(self._fd)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The clock's lock; the wake-up bytes `_wake` queued go out once it is let go (the slots
        already say who is busy, and the woken thread may want the lock at once)."""
        self._check_fork()
        with self._mutex:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                wakes, self._wakes = self._wakes, []
        for address in wakes:
            try:
                self._sender.sendto(b"w", address)
            except OSError:
                pass  # its socket is gone (a dead process) or full (it is awake anyway)

    def _header(self) -> tuple:
        return HEADER.unpack_from(self._map, 0)

    def _slots(self) -> Iterator[tuple]:
        """Every slot in use, read at once (under the lock, or as a look that may be stale)."""
        return SLOT.iter_unpack(self._map[HEADER.size:HEADER.size + SLOT.size * self._ints[7]])

    def _slot(self, i: int) -> list:
        return list(SLOT.unpack_from(self._map, HEADER.size + i * SLOT.size))

    @staticmethod
    def _word(i: int) -> int:
        """The index of slot `i`'s first word in the word views (`_ints`, `_floats`)."""
        return (HEADER.size + i * SLOT.size) // 8

    def _put(self, i: int, slot: list) -> None:
        """Write slot `i` (under the lock), field by field."""
        base = self._word(i)
        for k, value in enumerate(slot):
            (self._floats if k in SLOT_FLOATS else self._ints)[base + k] = value

    def _set_base(self, base_soak: float, base_wall: float, skipped: float) -> None:
        """A jump (under the lock): the sequence goes odd, the base changes, the sequence goes
        even; `now()` retries a reading taken while it was odd or that it changed."""
        seq, _, _, _, jumps, _, _, _, total = self._header()
        self._ints[0] = seq + 1
        self._floats[1] = base_soak
        self._floats[2] = base_wall
        self._ints[4] = jumps + 1
        self._floats[8] = total + skipped
        self._ints[0] = seq + 2

    def _bump(self, field: int, value: int | None = None) -> None:
        """Count one more (or set) an integer header field that `now()` does not read."""
        self._ints[field] = self._ints[field] + 1 if value is None else value

    # --- reading the time ------------------------------------------------------------------
    def now(self) -> float:
        """Current soak time; lock-free (a sequence lock: retried while a jump is written)."""
        ints, floats = self._ints, self._floats
        tries = 0
        while True:
            seq = ints[0]
            base_soak, base_wall, rate = floats[1], floats[2], floats[3]
            wall = time.time()
            if seq & 1 == 0 and ints[0] == seq:
                return base_soak + (wall - base_wall) * rate
            tries += 1
            if tries % 10_000 == 0:
                self._repair()

    def _repair(self) -> None:
        """A jump half written for a long time: its writer died inside it (a stranger's SIGKILL:
        the supervisor signals only under the lock). Jumps are written under the lock, so holding
        it means no writer is at work; the sequence is made even again. The base is then the old
        one, the new one, or the new soak time with the old wall time: soak time runs ahead by the
        busy stretch before that jump times the rate, and never backwards."""
        with self._locked():
            if self._ints[0] & 1:
                self._ints[0] += 1

    def _used(self) -> int:
        return self._header()[7]

    @property
    def rate(self) -> float:
        return self._header()[3]

    @property
    def jumps(self) -> int:
        return self._header()[4]

    @property
    def skipped(self) -> float:
        """Soak seconds the jumps skipped, in all (the rest ran at the busy rate)."""
        return self._header()[8]

    @property
    def frozen(self) -> bool:
        return bool(self._header()[6])

    def to_wall(self, soak_seconds: float) -> float:
        """Wall seconds `soak_seconds` take at most (when nothing lets the clock jump)."""
        return soak_seconds / self.speed

    def to_soak(self, wall_seconds: float) -> float:
        return wall_seconds * self.speed

    def wall_of(self, soak_time: float) -> float:
        """The wall time of `soak_time` in the current stretch (exact for the present)."""
        _, base_soak, base_wall, rate = self._header()[:4]
        return base_wall + (soak_time - base_soak) / rate

    # --- taking part -----------------------------------------------------------------------
    def enter(self) -> int:
        """Register the calling thread as a busy participant; returns its slot."""
        self._check_fork()
        have = getattr(self._local, "slot", None)
        if have is not None:
            return have
        pid, start = os.getpid(), _starttime(os.getpid())
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with self._locked():  # the slot and its socket's name change hands together, under the lock
            for i in range(SLOTS):
                slot = self._slot(i)
                if slot[2] == FREE or (slot[0] != pid and process_state(slot[0], slot[1]) == "dead"):
                    break
            else:
                sock.close()
                raise RuntimeError(f"{self.path}: all {SLOTS} participant slots are taken")
            try:
                sock.bind(b"\0" + self._name + str(i).encode())
            except OSError:
                sock.close()
                raise
            self._put(i, [pid, start, BUSY, TIMER, INF, 0.0, threading.get_ident()])
            if i >= self._used():
                self._bump(7, i + 1)
            self._sockets[i] = sock
        self._local.slot = i
        return i

    def leave(self) -> None:
        i = getattr(self._local, "slot", None)
        if i is None:
            return
        with self._locked():
            # The socket goes before the slot is free: the next thread to take the slot binds
            # its name (a socket still open here made that bind fail and left the slot busy).
            self._sockets.pop(i).close()
            self._put(i, [0, 0, FREE, TIMER, INF, 0.0, 0])
            self._try_jump()  # the last busy one may leave: what waited can go on
        self._local.slot = None

    @contextmanager
    def participant(self) -> Iterator[int]:
        slot = self.enter()
        try:
            yield slot
        finally:
            self.leave()

    # --- waiting ---------------------------------------------------------------------------
    def sleep(self, soak_seconds: float) -> None:
        self.wait(None, soak_seconds)

    def wait(self, event: threading.Event | None, soak_seconds: float | None, topic: int = TIMER,
             seen: float = 0.0) -> bool:
        """Wait until `event` is set or `soak_seconds` of soak time passed (None: until woken);
        returns whether the event is set. `topic` WORK: wake when work may be due (`seen` is the
        soak time of this worker's last look at the queue); SHIP: wake when events wait to be
        shipped (`seen`: the last seq shipped; the thread is the shipper, whose work holds no
        jump); REAP: wake at the deadline or when a lease has expired (the reaper: it needs no
        timer of its own for leases that heartbeats keep moving); LOG: wake when the shipper has
        shipped seq `seen` (no jump until then, unless no shipper is running) or at the deadline;
        HOLD: a timer while holding the write lock; LOCK: a writer's backoff, or, while a HOLD
        holds the lock, until its `released` (a hold of 8 soak seconds costs one more try, not a
        dozen) or soak time `seen`, when the writer gives up (0: never).
        A thread that is not a participant polls."""
        deadline = INF if soak_seconds is None else self.now() + max(soak_seconds, 0.0)
        i = getattr(self._local, "slot", None)
        if i is None:
            return self._poll(event, deadline)
        if event is not None and event.is_set():
            return True
        sock = self._sockets[i]
        with self._locked():
            if topic == LOCK and self._holder() is not None:
                deadline = seen or INF  # the holder's `released` wakes it, or the writer gives up
            slot = self._slot(i)
            slot[2:6] = [WAITING, topic, deadline, seen]
            self._put(i, slot)
            if event is not None:
                self._events[i] = event
            self._try_jump()
        state = self._word(i) + 2  # the slot's state word; its deadline is two words on
        spin = True
        try:
            while True:
                if event is not None and event.is_set():
                    return True
                deadline = self._floats[state + 2]  # `retime` may have brought it forward
                left = deadline - self.now()
                if left <= 0:
                    return False
                if self._ints[state] == BUSY:  # woken
                    if topic not in (TIMER, HOLD):
                        return event is not None and event.is_set()
                    with self._locked():  # a wake for a timer that is not due yet: wait on
                        slot = self._slot(i)
                        slot[2] = WAITING
                        self._put(i, slot)
                        self._try_jump()  # it may be the last one at work again
                if spin:
                    spin = False
                    if self._spin(state, event):
                        continue
                sock.settimeout(max(min(left / self.rate, LOOK_WALL), 1e-6))
                try:
                    while True:
                        sock.recv(16)
                        sock.setblocking(False)  # drain the wakes that piled up
                except (TimeoutError, BlockingIOError):
                    if self._ints[state] == WAITING and self._may_jump():
                        with self._locked():
                            self._try_jump(look=True)
        finally:
            with self._mutex:
                self._events.pop(i, None)
            if self._ints[state] == BUSY:
                # A waker marked the slot busy under the lock, and only this thread changes a busy
                # slot (it waits again under the lock): no lock to take on the way out of a wake.
                self._floats[state + 2] = INF
            else:
                with self._locked():
                    self._ints[state] = BUSY
                    self._floats[state + 2] = INF

    def _spin(self, state: int, event: threading.Event | None) -> bool:
        """Look at the slot for SPIN_WALL before sleeping; whether it was woken meanwhile."""
        ints, until = self._ints, time.perf_counter() + SPIN_WALL
        while ints[state] != BUSY and not (event is not None and event.is_set()):
            if time.perf_counter() > until:
                return False
            os.sched_yield()
        return True

    def _poll(self, event: threading.Event | None, deadline: float) -> bool:
        pause = event or threading.Event()
        while True:
            left = deadline - self.now()
            if pause.is_set() or left <= 0:
                return pause.is_set()
            pause.wait(min(left / self.rate, LOOK_WALL))

    # --- waking ----------------------------------------------------------------------------
    def _wake(self, i: int) -> None:
        """Mark slot `i` busy (call under the lock); its thread gets one byte when the lock is
        let go."""
        self._ints[self._word(i) + 2] = BUSY
        self._wakes.append(b"\0" + self._name + str(i).encode())

    def set(self, event: threading.Event) -> None:
        """Set `event` and wake this process's participants that wait on it."""
        event.set()
        with self._locked():
            for i, waited in list(self._events.items()):
                if waited is event and self._slot(i)[2] == WAITING:
                    self._wake(i)

    def kick(self, count: int = SLOTS, topic: int = WORK) -> None:
        """Wake up to `count` participants waiting for `topic` (after a commit that made that
        many tasks due)."""
        with self._locked():
            self._wake_waiting(topic, count)

    def retime(self, slot: int, deadline: float, *, sooner_only: bool = False) -> bool:
        """Move the wait of `slot` (a thread of this process) to `deadline` (INF: until woken)
        without waking it: it reads its deadline from its slot, and a jump wakes it there. False
        when the slot is not waiting (its thread has yet to choose its deadline)."""
        with self._locked():
            current = self._slot(slot)
            if current[2] != WAITING:
                return False
            if not (sooner_only and deadline >= current[4]):
                current[4] = deadline
                self._put(slot, current)
            return True

    def _holder(self) -> int | None:
        """Under the lock: the slot of a live participant holding the write lock (HOLD), if any."""
        for i in range(self._used()):
            slot = self._slot(i)
            if slot[2] != FREE and slot[3] == HOLD and (
                    slot[0] == self._pid or process_state(slot[0], slot[1]) != "dead"):
                return i
        return None

    def holding(self) -> bool:
        """Without the lock: whether a participant holds the database's write lock (a HOLD)."""
        ints, step = self._ints, SLOT.size // 8
        first = self._word(0) + 3  # the topic word of slot 0
        for topic in range(first, first + step * ints[7], step):
            if ints[topic] == HOLD and ints[topic - 1] != FREE:
                return True
        return False

    def released(self) -> None:
        """The calling participant let the write lock go (its HOLD ended): wake the writers that
        wait for it (LOCK)."""
        with self._locked():
            i = getattr(self._local, "slot", None)
            slot = None if i is None else self._slot(i)
            if slot is not None and slot[3] == HOLD:  # no longer the holder
                slot[3] = TIMER
                self._put(i, slot)
            self._wake_waiting(LOCK)

    def _wake_waiting(self, topic: int, count: int = SLOTS) -> None:
        """Under the lock: wake up to `count` participants waiting for `topic` (workers: those
        that looked last first, `_hottest`)."""
        waiting = [(i, slot) for i, slot in enumerate(self._slots()) if slot[2] == WAITING and slot[3] == topic]
        for i, _slot in (_hottest(waiting, count) if topic == WORK else waiting[:count]):
            self._wake(i)

    def await_log(self, seq: int, soak_seconds: float) -> None:
        """Wait until the shipper has written every event up to `seq` to the log, at most
        `soak_seconds` (a shipper that is gone does not hold the clock for longer)."""
        self.wait(None, soak_seconds, LOG, seen=seq)

    def freeze(self) -> None:
        """No more jumps (the run winds down): soak time runs on at the busy rate. The workers
        waiting for work are woken: no jump will wake them now, so they look on their own (a
        worker that joined the run leaves when it sees the run is over)."""
        with self._locked():
            self._bump(6, 1)
            self._wake_waiting(WORK)

    def thaw(self) -> None:
        """Jumps again (a resumed run whose supervisor died while winding down)."""
        with self._locked():
            self._bump(6, 0)

    def signal(self, pid: int, sig: int) -> bool:
        """Send `sig` holding the clock's lock, so SIGSTOP never stops a process inside it (and
        SIGKILL never ends one halfway through a jump). `kill` returns before the target has
        stopped: a thread of it that waits for this lock, woken by our release, would take it and
        stop holding it (every participant, the one that sends SIGCONT too, would then wait on it
        for ever). So the lock is let go once every thread of the target has stopped."""
        with self._locked():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return False  # gone already
            self._bump(5)  # what each process believes of the others' states is out of date
            if sig == signal.SIGSTOP:
                await_stopped(pid, STOP_WALL)
            return True

    # --- the jump --------------------------------------------------------------------------
    def _may_jump(self) -> bool:
        """A look without the lock: False when a participant is plainly at work (a busy slot of
        a running process, the shipper aside), so a waiter's periodic look takes the lock only
        when a jump may be due (every participant waiting, or a busy one stopped or dead)."""
        t = self.now()
        for slot in self._slots():
            if (slot[2] == BUSY and slot[3] != SHIP or (slot[2] == WAITING and slot[4] <= t)) and (
                    slot[0] == self._pid or process_state(slot[0], slot[1]) == "run"):
                return False
        return True

    def _try_jump(self, look: bool = False) -> None:
        """Under the lock: when every live, running participant waits and the database has no
        work unseen and no event unshipped, move soak time to the earliest event; wake who waits
        for it. Otherwise do nothing (time runs on at the busy rate). Only a waiter's periodic
        `look` asks `/proc` whether a busy participant of another process is stopped or dead; a
        check made on the way into a wait takes it to be running (a `/proc` read cost about 30 us
        on every such check, and a stopped or dead participant is rare: the next look, at most
        `LOOK_WALL` later, finds it)."""
        if self.frozen or self.probe is None:
            return
        t = self.now()
        earliest, looked, shipped = INF, INF, None
        waiting: list[tuple[int, tuple]] = []
        shipping: list[tuple] = []  # the shipper at work: an observer, it holds no jump
        for i, slot in enumerate(self._slots()):
            if slot[2] == FREE:
                continue
            if slot[2] == BUSY and slot[3] == SHIP:
                shipping.append(slot)
                continue
            due = slot[2] == BUSY or slot[4] <= t
            if due:
                state = self._state_of(slot[0], slot[1], look)
                if state == "dead":
                    self._put(i, [0, 0, FREE, TIMER, INF, 0.0, 0])
                    if slot[3] == HOLD:  # its lock died with it: the writers waiting for it try again
                        self._wake_waiting(LOCK)
                        return
                    continue
                if state == "run":
                    if slot[2] == WAITING:  # its timer ran out while the clock ran at the busy rate:
                        self._wake(i)  # wake it now, not at its next periodic look (up to LOOK_WALL)
                    return  # someone works, or is about to
                continue  # stopped (SIGSTOP): it does nothing until SIGCONT, as in a real run
            waiting.append((i, slot))
            earliest = min(earliest, slot[4])
            if slot[3] == WORK:
                looked = min(looked, slot[5])
            elif slot[3] == SHIP:
                shipped = slot[5] if shipped is None else min(shipped, slot[5])
        try:
            probe = self.probe(t)
        except Exception:  # the database cannot answer now (busy, gone): no jump; a later look asks again
            return
        readers = [(i, slot) for i, slot in waiting if slot[3] == LOG]
        if shipped is not None and (probe.last_seq - shipped >= SHIP_BACKLOG or (readers and probe.last_seq > shipped)):
            # The shipper ships beside the run, a batch at a time; an evaluation that waits for
            # the log (LOG) has it ship what is there at once.
            self._wake_topic(waiting, SHIP)
        if probe.due_now is not None and probe.due_now >= looked:
            # a task fell due since a worker last looked: wake one that has not looked since
            self._wake_one_worker([(i, slot) for i, slot in waiting if slot[5] <= probe.due_now])
            return
        if probe.lease_end is not None and probe.lease_end <= t and self._wake_topic(waiting, REAP):
            return  # a lease expired that the reaper has yet to return
        if readers:
            ready = [(i, slot) for i, slot in readers if shipped is not None and slot[5] <= shipped]
            if ready:
                self._wake_topic(ready, LOG)  # the events it needs are in the log: read it
                return
            if shipped is not None or any(slot[0] == self._pid or process_state(slot[0], slot[1]) == "run"
                                          for slot in shipping):
                return  # no jump while the log a reader waits for is being written
            # no shipper running (dead, restarting): the reader's deadline bounds the jump
        for when in (probe.next_due, probe.lease_end):
            if when is not None:
                earliest = min(earliest, when)
        if earliest == INF or earliest <= t:
            return
        self._set_base(earliest, time.time(), earliest - t)
        for i, slot in waiting:
            if slot[4] <= earliest or (slot[3] == REAP and probe.lease_end is not None and probe.lease_end <= earliest):
                self._wake(i)
        if probe.next_due is not None and probe.next_due <= earliest:
            # a task falls due (a backoff's end): one worker, not all of them (one would lease it,
            # the others would each take the write lock to find nothing); should more be due,
            # the check above wakes the next one when this one waits again
            self._wake_one_worker(waiting)

    def _state_of(self, pid: int, starttime: int, look: bool) -> str:
        """Under the lock: the state of a participant's process. A process this one saw running
        is taken to run on, without a `/proc` read, until a signal goes through the clock
        (`signal` counts them) or a waiter's periodic `look` asks again: a stop or a death by any
        other means is found at the next look, at most `LOOK_WALL` later."""
        if pid == self._pid:
            return "run"
        signals = self._ints[5]
        if not look and self._running.get(pid) == (starttime, signals):
            return "run"
        state = process_state(pid, starttime)
        if state == "run":
            self._running[pid] = (starttime, signals)
        else:
            self._running.pop(pid, None)
        return state

    def _wake_one_worker(self, waiting: list[tuple[int, list]]) -> None:
        """Wake the worker waiting for work that looked last (unless a worker is woken already)."""
        workers = [(i, slot) for i, slot in waiting if slot[3] == WORK]
        if workers and all(self._ints[self._word(i) + 2] == WAITING for i, _slot in workers):
            self._wake(_hottest(workers, 1)[0][0])

    def _wake_topic(self, waiting: list[tuple[int, list]], topic: int) -> bool:
        """Wake who waits for `topic`; whether anyone did."""
        woken = False
        for i, slot in waiting:
            if slot[3] == topic:
                self._wake(i)
                woken = True
        return woken


def _hottest(workers: list[tuple[int, tuple]], count: int) -> list[tuple[int, tuple]]:
    """The `count` workers waiting for work that looked last (`seen`, soak time): the likeliest
    to be still looking at their slot (`SPIN_WALL`) rather than asleep."""
    return sorted(workers, key=lambda w: w[1][5], reverse=True)[:count]


_SHARED: dict[Path, SkipClock] = {}
_SHARED_LOCK = threading.Lock()


def shared(path: Path) -> SkipClock:
    """This process's one view of the clock file at `path` (one lock, one set of slots)."""
    with _SHARED_LOCK:
        clock = _SHARED.get(path)
        if clock is None:
            clock = _SHARED[path] = SkipClock(path)
        return clock
