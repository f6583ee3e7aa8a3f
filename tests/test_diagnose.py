"""`ops diagnose`: the incident bundle holds what it says, writes nothing to the queue, and
redacts secrets."""

from __future__ import annotations

import os
import tarfile

import orjson
from click.testing import CliRunner
from sli_logs import LogBuilder

from orchestrator.cli.ops import ops
from orchestrator.queue.runs import RunStore
from orchestrator.queue.writes import Queue
from orchestrator.web.diagnose import scrub

SECRET_URL = "https://hooks.example.com/services/T0/B1/SECRETPATH"


def test_scrub():
    assert scrub(f"post to {SECRET_URL}?x=1 now") == "post to https://hooks.example.com/… now"
    assert scrub("--token s3cr3t --port 1") == "--token <redacted> --port 1"
    assert scrub('{"token": "abc", "Authorization": "Bearer xyz"}') == '{"token": "<redacted>", "Authorization": "Bearer <redacted>"}'


def test_bundle(tmp_path, dump):
    home = tmp_path / "home"
    log = home / "logs" / "soak" / "soak_72h_r1.jsonl"
    b = LogBuilder(run_id="r1", description=f"alerts to {SECRET_URL}")
    for i in range(30):
        b.run_task(10.0 + i * 20)
    b.finish(700.0)
    b.write(log)
    with Queue(home / "db" / "queue.db") as q:
        q.enqueue("k1", {})
        RunStore(q).create("r1", b.profile, 14, 4320.0, 1000.0, log, None)
    (home / "run" / "r1").mkdir(parents=True)
    (home / "run" / "r1" / "pids.json").write_bytes(orjson.dumps({"supervisor": {"pid": os.getpid(), "role": "x"},
                                                                 "worker-1": {"pid": 2**22 + 7, "role": "worker"}}))
    (home / "reports" / "soak").mkdir(parents=True)
    (home / "reports" / "soak" / "incident_r1.md").write_text("# Incident\ntoken=abc123\n")
    before = dump(home / "db" / "queue.db")
    out = tmp_path / "diag.tar.gz"
    result = CliRunner().invoke(ops, ["diagnose", "--home", str(home), "--out", str(out), "--lines", "5"])
    assert result.exit_code == 0, result.output
    assert result.output == f"{out}\n"
    assert dump(home / "db" / "queue.db") == before
    with tarfile.open(out) as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read().decode() for m in tar.getmembers()}
    assert set(files) == {"versions.json", "database.json", "run.json", "log_tail.jsonl", "metrics.txt",
                          "processes.json", "incidents/incident_r1.md", "MANIFEST.json"}
    assert orjson.loads(files["database.json"])["integrity_check"] == ["ok"]
    assert orjson.loads(files["database.json"])["status"]["counts"]["PENDING"] == 1
    assert len(files["log_tail.jsonl"].splitlines()) == 5 and '"run_finished"' in files["log_tail.jsonl"]
    assert "orch_soak_sli_success_ratio 1.0" in files["metrics.txt"]
    procs = {p["name"]: p for p in orjson.loads(files["processes.json"])["processes"]}
    assert procs["supervisor"]["alive"] and not procs["worker-1"]["alive"]
    assert orjson.loads(files["run.json"])["id"] == "r1"
    everything = "".join(files.values())
    assert "SECRETPATH" not in everything and "abc123" not in everything
    assert "https://hooks.example.com/…" in files["run.json"]
    assert "sqlite" in orjson.loads(files["versions.json"])
