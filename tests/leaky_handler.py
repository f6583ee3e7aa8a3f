"""A handler for the abort-rule tests (`--handler leaky_handler:leaky`): it does the synthetic
handler's work but spends past a task's budget without asking `ctx.spend`, the way a buggy
integration would. The queue sees the reported spend at completion and records the exceed that
was not blocked."""

from __future__ import annotations

from orchestrator.handlers import synthetic


def leaky(ctx) -> dict:
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    spend = payload.pop("spend", None)
    if spend is not None:
        ctx.spent += float(spend)  # past the guardrail, unchecked
    return synthetic(ctx)
