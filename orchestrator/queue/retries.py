"""The write lock's retry policy, the same for every backend: a writer that meets the lock busy
tries again with jittered exponential backoff until the lock bound (soak seconds), then raises
`DbLockError` (class `db_lock`).

On the constant clock the driver's own wait per try is the busy timeout (through the clock, never
under its wall floor) and the backoff is wall time. On the skip clock the driver's own wait is a
blink (`SKIP_BUSY_MS`) and the backoff is a wait on the clock (LOCK: while the lock hog, a
participant, holds the lock, until it lets go), so a writer kept out lets the clock jump instead of
holding it at the busy rate (docs/soak.md, "Writers and the lock hog").
"""

from __future__ import annotations

from collections.abc import Callable

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from orchestrator.core.clock import Clock
from orchestrator.core.errors import DbLockError
from orchestrator.core.model import QueueConfig
from orchestrator.core.skipclock import LOCK

SKIP_BUSY_MS = 1  # the skip clock: the driver's wait per try, wall ms (SQLite: one short sleep; a read
# that meets a WAL reset needs it, 0 made such reads fail at once)
SKIP_BACKOFF = 0.05  # the skip clock: soak seconds of the first backoff (jittered, x2 per try, to 0.8)


class LockRetries:
    """A writer's retries for the write lock: `lock_retries` counts the busy answers, `_retrying`
    runs a transaction again until the bound, `_retry_from` is when the current write began."""

    lock_retries: int

    def _retry_policy(self, clock: Clock, config: QueueConfig, is_busy: Callable[[BaseException], bool]) -> float:
        """Set the policy up; return the wall seconds the driver may wait for the lock on one try."""
        self.clock = clock
        self.lock_retries = 0
        self._bound_soak = config.lock_bound
        self._bound_wall = max(clock.to_wall(config.lock_bound), config.lock_bound_wall_floor)
        self._retry_from = 0.0
        if clock.skips:
            self._retrying = Retrying(
                retry=retry_if_exception(is_busy),
                wait=wait_random_exponential(multiplier=SKIP_BACKOFF, max=SKIP_BACKOFF * 16),
                stop=lambda _state: self.clock.now() - self._retry_from >= self._bound_soak,
                sleep=lambda soak_seconds: self.clock.wait(None, soak_seconds, LOCK,
                                                           seen=self._retry_from + self._bound_soak),
                before_sleep=self._count,
                reraise=False,
            )
            return SKIP_BUSY_MS / 1000
        busy_wall = max(clock.to_wall(config.busy_timeout), config.busy_wall_floor)
        self._retrying = Retrying(
            retry=retry_if_exception(is_busy),
            wait=wait_random_exponential(multiplier=busy_wall, max=max(busy_wall * 8, 0.002)),
            stop=stop_after_delay(self._bound_wall),
            before_sleep=self._count,
            reraise=False,
        )
        return busy_wall

    def _count(self, _state) -> None:
        self.lock_retries += 1

    def _lock_error(self) -> DbLockError:
        return DbLockError(f"write lock not acquired within {self._bound_soak:g} soak seconds")
