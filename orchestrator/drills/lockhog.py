"""A second process that holds the queue's write lock, as a foreign writer would (it does not
queue on the writers' kernel lock): `python -m orchestrator.drills.lockhog DB HOLD GAP [HOLD GAP ...]`.

Durations are soak seconds on the clock of the run in progress. For each (hold, gap) it takes the
lock (`BEGIN IMMEDIATE`, waiting as long as it must), prints `held <i> <soak t>`, keeps it for
`hold`, rolls back (writes nothing), prints `released <i> <soak t>`, and waits `gap`.
"""

from __future__ import annotations

import sys
import threading

from orchestrator.core.model import QueueConfig
from orchestrator.queue.writes import Queue


class _Release(Exception):
    """Ends a hold: the transaction rolls back, nothing is written."""


def main(argv: list[str]) -> int:
    db, *spans = argv
    times = [float(x) for x in spans]
    pause = threading.Event()
    with Queue(db, config=QueueConfig(lock_bound=86400.0)) as queue:
        clock = queue.clock
        for i in range(0, len(times), 2):
            hold, gap = times[i], times[i + 1] if i + 1 < len(times) else 0.0

            def hold_it(tx, i=i, hold=hold) -> None:
                print(f"held {i // 2} {clock.now():.3f}", flush=True)
                pause.wait(clock.to_wall(hold))
                raise _Release

            try:
                queue.write.unqueued(hold_it)
            except _Release:
                print(f"released {i // 2} {clock.now():.3f}", flush=True)
            pause.wait(clock.to_wall(gap))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
