"""soak_report.html: one self-contained page beside soak_summary.md, from the same figures."""

from __future__ import annotations

import re
from html import escape

from click.testing import CliRunner
from sli_logs import LogBuilder
from test_report import RUN, aborted_log, rich_log

from orchestrator.cli.report_cmd import report
from orchestrator.judge import report as report_mod
from orchestrator.judge.report import write_summary
from orchestrator.judge.reporttext import measured_text, pct, secs, target_text
from orchestrator.judge.sli import Aggregator, aggregate_file

EXTERNAL = re.compile(r"https?:|//[a-z]|<script[^>]*src|<link|<img|@import|url\(", re.I)


def test_html_report_is_written_beside_the_summary_from_the_same_figures(tmp_path, monkeypatch):
    agg = aggregate_file(rich_log().write(tmp_path / "soak_72h.jsonl"))
    seen = {"figures": 0}
    real_figures, real_md, real_html = Aggregator.figures, report_mod.render_summary, report_mod.render_html

    def figures(self):
        seen["figures"] += 1
        return real_figures(self)

    def md(f, **kw):
        seen["md"] = f
        return real_md(f, **kw)

    def page(f, **kw):
        seen["html"] = f
        return real_html(f, **kw)

    monkeypatch.setattr(Aggregator, "figures", figures)
    monkeypatch.setattr(report_mod, "render_summary", md)
    monkeypatch.setattr(report_mod, "render_html", page)
    write_summary(agg, tmp_path / "out")
    assert seen["figures"] == 1 and seen["md"] is seen["html"]  # one figures() dict feeds both
    html = (tmp_path / "out" / "soak_report.html").read_text()
    assert (tmp_path / "out" / f"soak_report_{RUN}.html").read_text() == html
    md_text = (tmp_path / "out" / "soak_summary.md").read_text()
    f = seen["md"]
    s1, s2 = f["sli1"], f["sli2"]
    for needle in [f"{s1['success'] * 100:.2f} %", f"{s1['done']:,} DONE / {s1['done'] + s1['failed']:,}",
                   f"p95 {s2['p95']:,.1f} s", secs(s2["p99"]), pct(f["sli3"]["rate"]), f["verdict"],
                   *(measured_text(r) for r in f["slo"]), *(target_text(r) for r in f["slo"])]:
        assert needle in md_text, needle
        assert escape(needle) in html, needle
    states = f["states"]
    row = "".join(f"<td>{states[c]:,}</td>" for c in ("enqueued", "DONE", "FAILED", "CANCELLED", "BLOCKED",
                                                       "PENDING", "IN_PROGRESS"))
    assert row in html
    assert html.count("<svg") == 4 and 'id="chart-moving"' in html
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    assert "<script" not in html


def test_aborted_run_shows_its_rule_and_evidence(tmp_path):
    agg = aborted_log().aggregator()
    write_summary(agg, tmp_path)
    html = (tmp_path / "soak_report.html").read_text()
    abort = agg.figures()["aborts"][0]
    assert "ABORTED" in html and "duplicate_execution" in html and abort["evidence"][0] in html


def test_report_command_writes_the_html(tmp_path):
    log = rich_log().write(tmp_path / "soak_72h.jsonl")
    result = CliRunner().invoke(report, ["--log", str(log), "--out", str(tmp_path / "o"), "--home", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "soak_report.html").stat().st_size > 5000


def test_a_72h_run_stays_under_2_mb(tmp_path):
    b = LogBuilder()
    for m in range(72 * 60):  # one task a soak minute, a failure every 97
        task = b.enqueue(m * 60.0 + 1)
        b.lease(task, m * 60.0 + 2)
        if m % 97 == 0:
            b.fail(task, m * 60.0 + 5)
        else:
            b.complete(task, m * 60.0 + 5)
    for i in range(600):  # more manual closes than the figures keep
        task = b.enqueue(72 * 3600.0 + i)
        b.operator("done", task, 72 * 3600.0 + i + 0.5, notes="x" * 200)
    b.finish(72 * 3600.0 + 700)
    write_summary(aggregate_file(b.write(tmp_path / "soak_72h.jsonl")), tmp_path / "out")
    size = (tmp_path / "out" / "soak_report.html").stat().st_size
    assert 10_000 < size <= 2 * 1024 * 1024, size
