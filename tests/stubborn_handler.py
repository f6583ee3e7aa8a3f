"""A handler for `orch worker --handler stubborn_handler:run` in the process tests.

It works for `payload.work` soak seconds and does not stop when its lease is lost (like a
blocking call that cannot be interrupted), so its completion really arrives late and the queue
must refuse it.
"""

from __future__ import annotations

import threading
import time


def run(ctx) -> dict:
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    deadline = time.monotonic() + ctx.clock.to_wall(float(payload.get("work", 0.0)))
    pause = threading.Event()  # never set: ignores ctx.lost on purpose
    while (left := deadline - time.monotonic()) > 0:
        pause.wait(left)
    return {"task": ctx.task, "attempt": ctx.attempt, "epoch": ctx.epoch, "stubborn": True}
