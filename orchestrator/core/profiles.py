"""Soak profiles: the two built in (the soak plan's numbers) and custom ones from TOML.

Every duration is in soak seconds, every rate in arrivals per soak minute, every share in 0..1.
A profile file is refused before anything starts when a key is unknown, a type is wrong or a
value is impossible; the message names the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from orchestrator.core.errors import ProfileError
from orchestrator.core.model import TRANSIENT, ErrorClass, RetryPolicy

TTL_WALL_FLOOR = 0.05  # wall seconds: the lease TTL never falls below this on the constant clock


@dataclass(frozen=True)
class Burst:
    every: float  # a burst starts every `every` soak seconds ...
    length: float  # ... lasts `length` soak seconds ...
    rate: float  # ... at this many arrivals per soak minute (instead of the base rate)
    offset: float = 0.0  # start of the first burst


@dataclass(frozen=True)
class Arrivals:
    rate: float  # base Poisson rate, arrivals per soak minute
    bursts: tuple[Burst, ...] = ()


@dataclass(frozen=True)
class Faults:
    transient: float = 0.0  # share of tasks whose first attempt raises a transient error
    transient_kinds: tuple[str, ...] = ("timeout",)
    transient_repeat: float = 0.1  # share of those that fail their second attempt too
    persistent: float = 0.0  # share of tasks that fail every attempt (retry storm material)
    db_lock: float = 0.0  # share of tasks whose attempt meets the write lock held by the hog
    lock_hold: float = 8.0  # soak seconds the lock hog holds the write lock
    duplicate_enqueue: float = 0.0  # share of arrivals enqueued a second time
    guardrail: float = 0.0  # share of tasks planned to spend past their budget
    worker_crash_every: float = 0.0  # soak seconds between SIGKILLs of a busy worker (0: none)
    worker_stall_every: float = 0.0  # soak seconds between SIGSTOPs of a busy worker (0: none)
    stall_factor: float = 1.5  # a stall lasts this many lease TTLs


@dataclass(frozen=True)
class Retry:
    backoff: tuple[float, ...] = (60.0, 180.0, 600.0)
    max_attempts: int = 4
    jitter: float = 0.1
    unknown_retries: int = 1

    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.backoff, self.max_attempts, self.jitter, self.unknown_retries)


@dataclass(frozen=True)
class Slo:
    success: float  # SLI-1 target (share)
    p95: float  # SLI-2 target, soak seconds
    lease_recovery: float = 0.0  # lease-timeout recovery target (0: not an SLO of this profile)
    max_duplicates: int = 0  # actual duplicate executions allowed (always 0 in the plan)


@dataclass(frozen=True)
class Abort:
    window: float = 1800.0  # moving-success window, soak seconds
    moving_success: float = 0.95
    min_volume: int = 20  # the window must hold this many DONE/FAILED tasks to judge
    stall: float = 600.0  # no transition this long while work waits -> abort
    log_gap: float = 900.0  # log or metrics missing this long -> abort


@dataclass(frozen=True)
class Oncall:
    replan_after: float = 600.0  # the scripted on-call replans BLOCKED tasks after this (0: off)
    budget_factor: float = 2.0  # ... with the budget raised this many times


@dataclass(frozen=True)
class Profile:
    name: str
    duration: float
    arrivals: Arrivals
    slo: Slo
    description: str = ""
    workers: int = 4
    lease_ttl: float = 30.0
    work_mean: float = 2.0  # task work time: lognormal with this mean (soak seconds) ...
    work_sigma: float = 0.5  # ... and this sigma of the underlying normal
    inflight_cap: int = 0  # global cap on tasks in flight (0: none)
    checkpoint_every: float = 21600.0
    faults: Faults = field(default_factory=Faults)
    retry: Retry = field(default_factory=Retry)
    abort: Abort = field(default_factory=Abort)
    oncall: Oncall = field(default_factory=Oncall)

    def effective_ttl(self, speed: float, *, skip: bool = False) -> float:
        """The lease TTL of a run in soak seconds, floored in wall time at high constant speeds (a
        lease must outlive a WAL checkpoint stall of 10-30 ms: docs/soak.md); the skip clock needs no
        floor (a pause of the machine stops soak time too). Every worker of the run uses it, one
        that joins from another host included."""
        return self.lease_ttl if skip else max(self.lease_ttl, TTL_WALL_FLOOR * speed)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


BUILTIN: dict[str, Profile] = {
    "24h": Profile(
        name="24h",
        description="Profile A: 24h stability. Poisson 2/min, a burst at 8/min for 3 min every 15 min, "
                    "5% transient (timeout/rate limit), backoff 1m/3m/10m, worker crashes and stalls.",
        duration=86400.0,
        arrivals=Arrivals(rate=2.0, bursts=(Burst(every=900.0, length=180.0, rate=8.0, offset=600.0),)),
        slo=Slo(success=0.99, p95=90.0, lease_recovery=0.99),
        faults=Faults(transient=0.05, transient_kinds=("timeout", "rate_limit"), transient_repeat=0.05,
                      worker_crash_every=7200.0, worker_stall_every=10800.0),
        retry=Retry(backoff=(60.0, 180.0, 600.0), max_attempts=4),
    ),
    "72h": Profile(
        name="72h",
        description="Profile B: 72h stress. Poisson 5/min, a burst at 20/min for 5 min every hour, "
                    "transient 10% (network/timeout), DB lock/busy 2%, duplicate enqueue 1%, "
                    "guardrail hard exceed 1%, at most 3 retries then FAILED.",
        duration=259200.0,
        arrivals=Arrivals(rate=5.0, bursts=(Burst(every=3600.0, length=300.0, rate=20.0, offset=1800.0),)),
        slo=Slo(success=0.97, p95=120.0),
        faults=Faults(transient=0.10, transient_kinds=("network", "timeout"), transient_repeat=0.1,
                      persistent=0.005, db_lock=0.02, duplicate_enqueue=0.01, guardrail=0.01,
                      worker_crash_every=10800.0, worker_stall_every=14400.0),
        retry=Retry(backoff=(60.0, 180.0, 600.0), max_attempts=4),
    ),
}


# --- loading and validation -------------------------------------------------------------
def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ProfileError(f"{path or 'profile'}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ProfileError(f"unknown key {_join(path, unknown[0])!r} in profile")
    values = {}
    for name, f in fields.items():
        key = _join(path, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProfileError(f"missing key {key!r} in profile")
            continue
        values[name] = _coerce(hints[name], data[name], key)
    return cls(**values)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise ProfileError(f"{key!r} must be a list, got {type(value).__name__}")
        return tuple(_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProfileError(f"{key!r} must be a number, got {type(value).__name__}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProfileError(f"{key!r} must be an integer, got {type(value).__name__}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ProfileError(f"{key!r} must be a string, got {type(value).__name__}")
        return value
    raise ProfileError(f"{key!r}: unsupported type")  # pragma: no cover - a profile field we forgot


def _check(p: Profile) -> Profile:
    def need(ok: bool, key: str, why: str) -> None:
        if not ok:
            raise ProfileError(f"{key!r} {why}")

    need(bool(p.name.strip()) and p.name.replace("-", "").replace("_", "").isalnum(), "name",
         "must be letters, digits, '-' or '_'")
    need(p.duration > 0, "duration", "must be greater than 0")
    need(p.arrivals.rate >= 0, "arrivals.rate", "must not be negative")
    for i, b in enumerate(p.arrivals.bursts):
        need(b.every > 0, f"arrivals.bursts[{i}].every", "must be greater than 0")
        need(0 < b.length <= b.every, f"arrivals.bursts[{i}].length", "must be in (0, every]")
        need(b.rate >= 0, f"arrivals.bursts[{i}].rate", "must not be negative")
        need(b.offset >= 0, f"arrivals.bursts[{i}].offset", "must not be negative")
    need(1 <= p.workers <= 64, "workers", "must be between 1 and 64")
    need(p.lease_ttl > 0, "lease_ttl", "must be greater than 0")
    need(p.work_mean > 0, "work_mean", "must be greater than 0")
    need(p.work_mean < p.lease_ttl * 10, "work_mean", "must be well under the lease TTL x 10")
    need(0 <= p.work_sigma <= 3, "work_sigma", "must be between 0 and 3")
    need(p.inflight_cap >= 0, "inflight_cap", "must not be negative (0: no cap)")
    need(p.checkpoint_every > 0, "checkpoint_every", "must be greater than 0")
    f = p.faults
    for name in ("transient", "transient_repeat", "persistent", "db_lock", "duplicate_enqueue", "guardrail"):
        need(0 <= getattr(f, name) <= 1, f"faults.{name}", "must be a share between 0 and 1")
    need(f.transient + f.persistent + f.db_lock + f.guardrail <= 1, "faults",
         "shares transient + persistent + db_lock + guardrail must not exceed 1")
    need(len(f.transient_kinds) > 0 or f.transient == 0, "faults.transient_kinds", "must not be empty")
    transient = {c.value for c in TRANSIENT} - {ErrorClass.DB_LOCK.value}
    for i, kind in enumerate(f.transient_kinds):
        need(kind in transient, f"faults.transient_kinds[{i}]", f"must be one of {sorted(transient)}")
    need(f.lock_hold > 0, "faults.lock_hold", "must be greater than 0")
    need(f.worker_crash_every >= 0, "faults.worker_crash_every", "must not be negative (0: none)")
    need(f.worker_stall_every >= 0, "faults.worker_stall_every", "must not be negative (0: none)")
    need(f.stall_factor > 1, "faults.stall_factor", "must be greater than 1 (a stall must outlive the lease)")
    r = p.retry
    need(1 <= r.max_attempts <= 20, "retry.max_attempts", "must be between 1 and 20")
    need(all(b >= 0 for b in r.backoff), "retry.backoff", "must not hold negative delays")
    need(len(r.backoff) >= 1 or r.max_attempts == 1, "retry.backoff", "must not be empty when retries are allowed")
    need(0 <= r.jitter < 1, "retry.jitter", "must be in [0, 1)")
    need(r.unknown_retries >= 0, "retry.unknown_retries", "must not be negative")
    need(0 < p.slo.success <= 1, "slo.success", "must be a share in (0, 1]")
    need(p.slo.p95 > 0, "slo.p95", "must be greater than 0")
    need(0 <= p.slo.lease_recovery <= 1, "slo.lease_recovery", "must be a share in [0, 1] (0: not an SLO)")
    need(p.slo.max_duplicates >= 0, "slo.max_duplicates", "must not be negative")
    a = p.abort
    need(a.window > 0, "abort.window", "must be greater than 0")
    need(0 <= a.moving_success <= 1, "abort.moving_success", "must be a share between 0 and 1")
    need(a.min_volume >= 1, "abort.min_volume", "must be at least 1")
    need(a.stall > 0, "abort.stall", "must be greater than 0")
    need(a.log_gap > 0, "abort.log_gap", "must be greater than 0")
    need(p.oncall.replan_after >= 0, "oncall.replan_after", "must not be negative (0: off)")
    need(p.oncall.budget_factor >= 1, "oncall.budget_factor", "must be at least 1")
    return p


def from_dict(data: dict) -> Profile:
    return _check(_build(Profile, data, ""))


def load(spec: str) -> Profile:
    """A built-in name (`24h`, `72h`) or a path to a TOML file."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    path = Path(spec)
    if not path.is_file():
        names = ", ".join(BUILTIN)
        raise ProfileError(f"no profile {spec!r}: not a built-in ({names}) and no such file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror}") from None
    return from_dict(data)
