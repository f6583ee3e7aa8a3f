"""The domain's closed sets: task states, operator actions, error classes, the retry policy."""

from __future__ import annotations

import errno
import random
import re
import socket
from dataclasses import dataclass, field
from enum import Enum

from orchestrator.core.errors import DbLockError, UsageError


class State(str, Enum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    DONE = "DONE"
    FAILED = "FAILED"
    BLOCKED = "BLOCKED"
    CANCELLED = "CANCELLED"


TERMINAL = frozenset({State.DONE, State.FAILED, State.CANCELLED})
OPEN = frozenset({State.PENDING, State.IN_PROGRESS, State.BLOCKED})

# Operator actions: the states each one is allowed from, and the state it leads to
# (None: the state stays, the action records a plan).
OPERATOR_ACTIONS: dict[str, tuple[frozenset[State], State | None]] = {
    "cancel": (frozenset({State.PENDING, State.IN_PROGRESS, State.BLOCKED}), State.CANCELLED),
    "replan": (frozenset({State.BLOCKED, State.CANCELLED, State.FAILED}), None),
    "retry": (frozenset({State.FAILED, State.CANCELLED}), State.PENDING),
    "done": (OPEN, State.DONE),
    "fail": (OPEN, State.FAILED),
}
# The event each operator action writes.
ACTION_EVENTS = {
    "cancel": "cancelled",
    "replan": "replanned",
    "retry": "retried",
    "done": "closed_done",
    "fail": "closed_failed",
}


class ErrorClass(str, Enum):
    """Closed set of error classes; raw exception text is never a class."""

    TIMEOUT = "timeout"
    RATE_LIMIT = "rate_limit"
    NETWORK = "network"
    SERVER_ERROR = "server_error"
    DB_LOCK = "db_lock"
    PARAM_ERROR = "param_error"
    GUARDRAIL = "guardrail"
    LEASE_TIMEOUT = "lease_timeout"
    UNKNOWN = "unknown"
    OPERATOR = "operator"  # a manual close as FAILED


TRANSIENT = frozenset(
    {ErrorClass.TIMEOUT, ErrorClass.RATE_LIMIT, ErrorClass.NETWORK, ErrorClass.SERVER_ERROR, ErrorClass.DB_LOCK}
)
DETAIL_MAX = 200


class TaskError(Exception):
    """Raised by a handler to fail a task with an explicit error class."""

    def __init__(self, error_class: ErrorClass | str, detail: str = ""):
        super().__init__(detail or str(error_class))
        self.error_class = ErrorClass(error_class)
        self.detail = detail


class GuardrailExceeded(Exception):
    """Raised by a handler whose spend would pass the task's budget: the task is BLOCKED."""

    def __init__(self, spend: float, budget: float):
        super().__init__(f"spend {spend:g} exceeds budget {budget:g}")
        self.spend = spend
        self.budget = budget


_HTTP_STATUS = re.compile(r"\b([45]\d\d)\b")
# Exception types of HTTP clients, matched by name along the type's MRO so that no optional
# library is imported: requests (ConnectionError, ConnectTimeout, ReadTimeout, Timeout,
# ChunkedEncodingError), httpx (ConnectError, ReadError, WriteError, NetworkError,
# RemoteProtocolError, TimeoutException and its ConnectTimeout/ReadTimeout/WriteTimeout/
# PoolTimeout), urllib3 (ProtocolError, NewConnectionError) and urllib (URLError).
_TIMEOUT_TYPES = frozenset({"Timeout", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout",
                            "TimeoutException", "ReadTimeoutError", "ConnectTimeoutError"})
_NETWORK_TYPES = frozenset({"ConnectionError", "ConnectError", "ReadError", "WriteError", "NetworkError",
                            "RemoteProtocolError", "ProtocolError", "NewConnectionError", "ChunkedEncodingError",
                            "URLError"})
_NETWORK_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH,
                             errno.ENETUNREACH, errno.ENETDOWN, errno.EPIPE, errno.ENOTCONN})


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries: on itself (`status`, `status_code`, urllib's `code`)
    or on its `response` (requests' HTTPError, httpx's HTTPStatusError)."""
    for holder in (exc, getattr(exc, "response", None)):
        if holder is None:
            continue
        for attr in ("status", "status_code", "code"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and 400 <= value < 600:
                return value
    return None


def _is_sqlite_busy(exc: BaseException) -> bool:
    """A handler's own SQLite database was locked or busy (`sqlite3.OperationalError`, told by its
    class rather than imported: only the queue's SQLite backend imports the driver)."""
    return (any(k.__module__ == "sqlite3" and k.__name__ == "OperationalError" for k in type(exc).__mro__)
            and ("locked" in str(exc) or "busy" in str(exc)))


def classify(exc: BaseException) -> ErrorClass:
    """Map an exception from a handler or the database to one class of the closed enum."""
    if isinstance(exc, TaskError):
        return exc.error_class
    if isinstance(exc, GuardrailExceeded):
        return ErrorClass.GUARDRAIL
    if isinstance(exc, DbLockError):
        return ErrorClass.DB_LOCK
    names = {klass.__name__ for klass in type(exc).__mro__}
    if _is_sqlite_busy(exc):
        return ErrorClass.DB_LOCK
    status = _http_status(exc)
    if status is None:
        if isinstance(exc, (TimeoutError, socket.timeout)) or names & _TIMEOUT_TYPES:
            return ErrorClass.TIMEOUT
        reason = getattr(exc, "reason", None)  # urllib's URLError wraps the socket's error
        if "URLError" in names and isinstance(reason, BaseException):
            inner = classify(reason)
            return inner if inner in (ErrorClass.TIMEOUT, ErrorClass.NETWORK) else ErrorClass.NETWORK
        if (isinstance(exc, (ConnectionError, socket.gaierror)) or names & _NETWORK_TYPES
                or (isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS)):
            return ErrorClass.NETWORK
        match = _HTTP_STATUS.search(str(exc)[:80])
        status = int(match.group(1)) if match else None
    if isinstance(status, int):
        if status == 429:
            return ErrorClass.RATE_LIMIT
        if status in (408, 504):
            return ErrorClass.TIMEOUT
        if 500 <= status < 600:
            return ErrorClass.SERVER_ERROR
        if 400 <= status < 500:
            return ErrorClass.PARAM_ERROR
    if isinstance(exc, (ValueError, TypeError, KeyError, UsageError)):
        return ErrorClass.PARAM_ERROR
    return ErrorClass.UNKNOWN


def shorten(text: str, limit: int = DETAIL_MAX) -> str:
    """Keep raw error text as detail, on one line and at most `limit` characters."""
    one_line = " ".join(str(text).split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def describe(exc: BaseException) -> str:
    return shorten(f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed attempt is retried, and after how long (soak seconds)."""

    backoff: tuple[float, ...] = (60.0, 180.0, 600.0)
    max_attempts: int = 4  # first attempt + len(backoff) retries
    jitter: float = 0.1  # +/- share of the backoff
    unknown_retries: int = 1  # `unknown` errors are retried at most this often

    def decide(self, error: ErrorClass, attempt: int, unknown_seen: int, rng: random.Random,
               max_attempts: int | None = None) -> float | None:
        """Backoff before the next attempt, or None when the task must fail now.

        `attempt` is the attempt that just failed (1-based); `unknown_seen` counts earlier
        `unknown` failures of the task in its current plan; `max_attempts` is the task's own
        limit (recorded when it was enqueued), the policy's when not given.
        """
        if attempt >= (self.max_attempts if max_attempts is None else max_attempts):
            return None
        if error in TRANSIENT or error is ErrorClass.LEASE_TIMEOUT:
            pass
        elif error is ErrorClass.UNKNOWN and unknown_seen < self.unknown_retries:
            pass
        else:
            return None
        base = self.backoff[min(attempt - 1, len(self.backoff) - 1)] if self.backoff else 0.0
        return base * (1 + self.jitter * (2 * rng.random() - 1))


@dataclass(frozen=True)
class QueueConfig:
    """How one process uses the queue. Durations are soak seconds."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    lease_ttl: float = 30.0
    busy_timeout: float = 5.0  # SQLite's own busy wait per statement
    lock_bound: float = 60.0  # total wait for the write lock before `db_lock` is raised
    lock_bound_wall_floor: float = 2.0  # ... but never less than this many wall seconds
    busy_wall_floor: float = 0.001
    synchronous: str = "NORMAL"  # or FULL: see docs/durability.md
    inflight_cap: int | None = None  # global cap on IN_PROGRESS tasks (None: no cap)
    writer_queue: bool = True  # queue writers on a kernel lock (flock) before BEGIN IMMEDIATE
    # TEST-ONLY: False lets `complete` skip the epoch fence, so the drills' tests can show that a
    # drill reports FAIL when fencing is broken. Nothing in the product sets it (no option, no
    # environment variable): only a test builds such a config, through this API, and every
    # worker records its value in `worker_started` (docs/drills.md).
    fencing: bool = True
