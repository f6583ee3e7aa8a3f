"""Every drill, in the order of `orch drill list` and `orch drill all`: importing this module
imports the modules that define drills (each registers its drills in `base.REGISTRY`)."""

from __future__ import annotations

from orchestrator.core.errors import UsageError
from orchestrator.drills import operator, outcomes, safety, soakdrills, workers  # noqa: F401 (they register)
from orchestrator.drills.base import REGISTRY, Drill

# workers, outcomes, guards, the CLI, the soak
ORDER = ("worker-crash", "worker-stall", "cancel-midrun", "concurrency-cap", "poison-task", "timeout-all",
         "partial-success", "error-chaos", "idempotency-under-fire", "duplicate-side-effect", "guardrail-replan",
         "db-lock-storm", "fail-closed", "operator-runbook", "supervisor-restart", "log-pipeline-drop",
         "queue-pressure")


def get(name: str) -> Drill:
    if name not in REGISTRY:
        raise UsageError(f"no drill {name!r} (known: {', '.join(REGISTRY)})")
    return REGISTRY[name]


def all_drills() -> list[Drill]:
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(REGISTRY.values(), key=lambda d: rank.get(d.name, len(ORDER)))
