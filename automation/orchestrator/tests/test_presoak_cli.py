"""Pre-soak: the on-call CLI answers with the documented messages and exit codes."""

from __future__ import annotations

import orjson
from click.testing import CliRunner

from orchestrator.cli.ops import ops
from orchestrator.cli.orch import orch


def run(cli, *args: str):
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result


def test_cli_smoke(home):
    h = ("--home", str(home))
    assert run(orch, "enqueue", "--key", "smoke-1", "--payload", '{"work": 1}', "--actor", "presoak", *h).stdout \
        == "ORCH-1 enqueued\n"
    doc = orjson.loads(run(ops, "status", "--json", *h).stdout)
    assert doc["counts"]["PENDING"] == 1 and doc["total"] == 1
    runbook = [
        (ops, ["cancel", "--id", "ORCH-1"], "ORCH-1: cancel by presoak -> CANCELLED\n"),
        (ops, ["replan", "--id", "ORCH-1", "--notes", "DB lock hotspot, split workload"],
         "ORCH-1: plan recorded by presoak (still CANCELLED); run `ops retry --id ORCH-1` to run it\n"),
        (ops, ["retry", "--id", "ORCH-1"], "ORCH-1: retry by presoak -> PENDING\n"),
        (orch, ["done", "--id", "ORCH-1", "--notes", "incident mitigated"], "ORCH-1: done by presoak -> DONE\n"),
    ]
    for cli, args, out in runbook:
        r = run(cli, *args, "--actor", "presoak", *h)
        assert (r.exit_code, r.stdout) == (0, out), args


def test_cli_exit_codes(home):
    h = ("--home", str(home))
    run(orch, "enqueue", "--key", "smoke-1", *h)
    r = run(ops, "cancel", "--id", "ORCH-x", *h)
    assert (r.exit_code, r.stderr) == (2, "Error: malformed task id 'ORCH-x' (expected ORCH-<n>, e.g. ORCH-12)\n")
    r = run(ops, "cancel", "--id", "ORCH-7", *h)
    assert (r.exit_code, r.stderr) == (3, "Error: no task ORCH-7\n")
    r = run(ops, "retry", "--id", "ORCH-1", *h)
    assert (r.exit_code, r.stderr) == (4, "Error: ORCH-1 is PENDING; retry is allowed from FAILED, CANCELLED\n")
