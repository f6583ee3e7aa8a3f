"""Fixtures of the pre-soak check (`pytest automation/orchestrator/tests -q`): a temp home per
test and a clock the test moves by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.model import QueueConfig, RetryPolicy
from orchestrator.queue import Queue


class HandClock:
    """Soak time that moves only when the test says so (speed 1)."""

    speed = 1.0

    def __init__(self, start: float = 500_000.0):
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def to_wall(self, soak_seconds: float) -> float:
        return soak_seconds

    def to_soak(self, wall_seconds: float) -> float:
        return wall_seconds

    def wall_of(self, soak_time: float) -> float:
        return soak_time


PRESOAK_CONFIG = QueueConfig(retry=RetryPolicy(backoff=(60.0, 180.0), max_attempts=3, jitter=0.0), lease_ttl=30.0)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "orchestrator-home"


@pytest.fixture
def clock() -> HandClock:
    return HandClock()


@pytest.fixture
def queue(home: Path, clock: HandClock):
    with Queue(home / "db" / "queue.db", clock, PRESOAK_CONFIG) as q:
        yield q
