"""Fixtures of the pre-soak check (`pytest automation/orchestrator/tests -q`): a temp home per
test and a clock the test moves by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.clock import HandClock
from orchestrator.core.model import QueueConfig, RetryPolicy
from orchestrator.queue.writes import Queue

PRESOAK_CONFIG = QueueConfig(retry=RetryPolicy(backoff=(60.0, 180.0), max_attempts=3, jitter=0.0), lease_ttl=30.0)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "orchestrator-home"


@pytest.fixture
def clock() -> HandClock:
    return HandClock(500_000.0)


@pytest.fixture
def queue(home: Path, clock: HandClock):
    with Queue(home / "db" / "queue.db", clock, PRESOAK_CONFIG) as q:
        yield q
