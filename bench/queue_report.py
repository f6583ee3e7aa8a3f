"""The markdown report of bench/queue.py: tables of medians and paired ratios, and the targets."""

from __future__ import annotations

from statistics import median

TARGET_ONE_VS_BARE = 0.5
TARGET_ONE_VS_HUEY = 1.5
TARGET_BATCH_VS_BARE = 1.0
TARGET_DEPTH = 0.8  # depth 100k within 20 % of depth 1k


class Figures:
    """Medians of rates and of per-repetition ratios (a rate and its baseline measured back to back)."""

    def __init__(self, rates: dict[tuple, list[float]]):
        self.rates = rates

    def rate(self, key: tuple) -> float:
        return median(self.rates[key])

    def ratio(self, key: tuple, base: tuple) -> float:
        return median(a / b for a, b in zip(self.rates[key], self.rates[base]))

    def spread(self, key: tuple) -> str:
        values = self.rates[key]
        return f"{min(values):,.0f}–{max(values):,.0f}"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"


def verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def variants_of(lb: int) -> tuple[tuple[str, str, int], ...]:
    """(column name, drain kind, lease limit) of the queue's drain variants."""
    return (("q1", "queue", 1), ("q1cl", "queue_cl", 1), (f"q{lb}", "queue", lb), (f"q{lb}b", "queue_b", lb))


def render(rates: dict[tuple, list[float]], facts: dict, meta: dict) -> str:
    f = Figures(rates)
    plan, m = meta["plan"], meta["machine"]
    syncs, procs_list, lb, eb = meta["syncs"], meta["procs"], meta["lease_batch"], meta["enqueue_batch"]
    queue_variants = variants_of(lb)
    out: list[str] = []
    w = out.append

    w("# Queue benchmark: the lease queue beside a bare-SQLite ceiling and huey (issue 3)")
    w("")
    w(f"- Command: `{meta['command']}` (from the repository root), started {meta['started']}, "
      f"took {meta['wall']:.0f} s of wall time.")
    w(f"- Machine: {m['cores']} cores ({m['cpu']}), {m['os']}, Python {m['python']}, SQLite {m['sqlite']}, "
      f"huey {m['huey']}. Databases on {meta['filesystem']}. Load average (1/5/15 min) "
      f"{'/'.join(f'{x:.2f}' for x in meta['load'][0])} before, {'/'.join(f'{x:.2f}' for x in meta['load'][1])} after.")
    w(f"- Code: commit {meta['commit']}.")
    w(f"- Every figure is the median of {plan.reps} repetitions; each repetition runs a measurement and its "
      "baselines back to back (order rotated between repetitions), and a ratio is the median of the "
      "per-repetition ratios. Rates are tasks per second of wall time, summed over all worker processes.")
    w("")
    w("## What is compared")
    w("")
    w("- **queue**: `orchestrator.queue.writes.Queue(path, WALL, QueueConfig(synchronous=S))`, public API only. "
      "Lease+complete is `lease(worker, limit)` then `complete(task, epoch, worker)` per task: one transaction "
      "per lease call (the UPDATE plus a `leased` event per task) and one per completion (fenced read, effect "
      "row, DONE, `completed` event). Busy is handled by the queue itself (SQLite busy timeout 5 s, tenacity).")
    w("- **bare**: the least SQL that can lease and complete one row, two transactions per task: "
      "`BEGIN IMMEDIATE; UPDATE task SET state='IN_PROGRESS', epoch=epoch+1, worker=?, lease_until=? WHERE id = "
      "(SELECT id FROM task WHERE state='PENDING' ORDER BY id LIMIT 1) RETURNING id, epoch; COMMIT`, then "
      "`BEGIN IMMEDIATE; UPDATE task SET state='DONE', ... WHERE id=? AND epoch=?; COMMIT`. One table "
      "(id, state, epoch, worker, lease_until), one partial index on PENDING ids, no events, no payload. "
      "**bare1** takes and finishes a row in one transaction (no lease): the bare analogue of huey's dequeue.")
    w("- **huey**: `huey.SqliteHuey(filename=...)` with huey's defaults (WAL, busy timeout 5 s, no `fsync` "
      "argument, which leaves SQLite's default synchronous=FULL). Raw messages (one real serialized task, "
      "120 bytes) through `storage.enqueue(data)` and `storage.dequeue()`; a dequeue is one `BEGIN EXCLUSIVE` "
      "transaction that selects and deletes the row: one durable write, no lease, no timeout, no fencing. "
      "huey's constructor offers only FULL (`fsync=True` or the default) or OFF (`fsync=False`), so **its NORMAL "
      "rows set `PRAGMA synchronous=NORMAL` on the storage's own connection after it opened** (not a "
      "constructor option). huey has no batched enqueue and no batched dequeue.")
    w("- All three: WAL, the same synchronous setting (read back from each connection and checked), the same "
      "Python `sqlite3` module, default page cache and automatic checkpoints. The queue and bare databases have "
      "the queue's page size (`orchestrator.queue.sqlite.store.PAGE_SIZE`, 1 KiB); huey's has SQLite's default (4 KiB). "
      "Every worker process starts as `orch worker` does, with glibc's trim threshold raised (`orchestrator/core/heap.py`). "
      "Queue payloads are ~100 bytes of JSON. "
      "Worker processes are separate OS processes (`python -m bench.backends`), each opening its own connection, "
      "started together on a pre-filled database; pre-filling and process start-up are not timed. "
      "The drain runs the queue API directly (no handler, no heartbeat thread, no `has_due` poll).")
    w("")

    # --- enqueue ------------------------------------------------------------------------
    w("## Enqueue")
    w("")
    w(f"One by one: {plan.enqueue_one['NORMAL']:,} tasks at NORMAL, {plan.enqueue_one['FULL']:,} at FULL, one "
      f"call and one transaction each. Batched: {plan.enqueue_batched:,} tasks, `enqueue_many` of {eb} per call "
      f"(bare: `executemany` of {eb} per transaction).")
    w("")
    w("| sync | mode | queue | bare | huey | queue/bare | queue/huey |")
    w("|---|---|---:|---:|---:|---:|---:|")
    for sync in syncs:
        for batch, label in ((1, "one by one"), (eb, f"batched ({eb})")):
            q, b = ("enqueue", sync, batch, "queue"), ("enqueue", sync, batch, "bare")
            h = ("enqueue", sync, batch, "huey")
            has_h = h in rates
            w(f"| {sync} | {label} | {fmt_rate(f.rate(q))} | {fmt_rate(f.rate(b))} | "
              f"{fmt_rate(f.rate(h)) if has_h else '—'} | {fmt_ratio(f.ratio(q, b))} | "
              f"{fmt_ratio(f.ratio(q, h)) if has_h else '—'} |")
    w("")

    # --- lease + complete ---------------------------------------------------------------
    def key(sync, procs, kind, limit=1):
        return ("drain", sync, procs, kind, limit)

    w("## Lease + complete")
    w("")
    w(f"Each run drains a pre-filled database of {plan.drain['NORMAL']:,} tasks (NORMAL) or "
      f"{plan.drain['FULL']:,} (FULL), in {meta['chunks']} slices that take turns with the other variants' slices. "
      f"**q1** = queue, `lease(worker, 1)` then `complete(...)`: two transactions per task. **q1cl** = queue, one "
      f"task per lease through `complete_and_lease` (complete a task and lease the next in one transaction): one "
      f"transaction per task once running. **q{lb}** = queue, `lease(worker, {lb})`, each task then completed in its "
      f"own transaction. **q{lb}b** = queue, `lease(worker, {lb})`, then the whole batch acknowledged with "
      f"`complete_many` in one transaction (each task still fenced, with its own effect row and event). huey's rate "
      "is dequeues (it has nothing to complete). bare1 runs with one process only.")
    w("")
    w(f"| sync | procs | bare1 | bare | huey | q1 | q1cl | q{lb} | q{lb}b | queue lock retries / 1k tasks "
      f"(q1, q1cl, q{lb}, q{lb}b) |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for sync in syncs:
        for procs in procs_list:
            b1 = key(sync, procs, "bare1")
            retries = ", ".join(f"{f.rate(('lock_retries', sync, procs, kind, limit)):.1f}"
                                for _name, kind, limit in queue_variants)
            w(f"| {sync} | {procs} | {fmt_rate(f.rate(b1)) if b1 in rates else '—'} | "
              + " | ".join(fmt_rate(f.rate(key(sync, procs, kind, limit)))
                           for _name, kind, limit in (("bare", "bare", 1), ("huey", "huey", 1), *queue_variants))
              + f" | {retries} |")
    w("")
    w("Ratios (median of the per-repetition ratios):")
    w("")
    w("| sync | procs | " + " | ".join(f"{name}/{base}" for name, _kind, _limit in queue_variants
                                        for base in ("bare", "huey")) + " |")
    w("|---|---:|" + "---:|" * (2 * len(queue_variants)))
    for sync in syncs:
        for procs in procs_list:
            bare, huey = key(sync, procs, "bare"), key(sync, procs, "huey")
            cells = [fmt_ratio(f.ratio(key(sync, procs, kind, limit), base))
                     for _name, kind, limit in queue_variants for base in (bare, huey)]
            w(f"| {sync} | {procs} | " + " | ".join(cells) + " |")
    w("")
    w("Range over repetitions (min–max tasks/s), 1 process: " + "; ".join(
        f"{sync} " + ", ".join(f"{name} {f.spread(key(sync, 1, kind, limit))}" for name, kind, limit in
                               (("bare1", "bare1", 1), ("bare", "bare", 1), ("huey", "huey", 1), *queue_variants))
        for sync in syncs) + ".")
    w("")

    # --- depth ------------------------------------------------------------------------------
    small, big = plan.depth_small, plan.depth_big
    w("## Queue depth")
    w("")
    w(f"One process, one task per lease: {plan.depth_tasks['NORMAL']:,} (NORMAL) or {plan.depth_tasks['FULL']:,} "
      f"(FULL) tasks leased and completed out of a queue pre-filled with depth + "
      f"{max(plan.depth_tasks.values()):,} tasks, so at least `depth` tasks stay PENDING throughout.")
    w("")
    w(f"The history column: the same {small:,} pending (+ {max(plan.depth_tasks.values()):,}) behind {big:,} DONE "
      "tasks, each with its effect row and its `leased` and `completed` events (how a queue looks hours into a soak).")
    w("")
    w(f"| sync | depth {small:,} | depth {big:,} | {big // 1000}k / {small // 1000}k | {small // 1000}k behind "
      f"{big // 1000}k done | history / {small // 1000}k |")
    w("|---|---:|---:|---:|---:|---:|")
    for sync in syncs:
        lo, hi, hist = ("depth", sync, small), ("depth", sync, big), ("depth", sync, "history")
        w(f"| {sync} | {fmt_rate(f.rate(lo))} | {fmt_rate(f.rate(hi))} | {fmt_ratio(f.ratio(hi, lo))} | "
          f"{fmt_rate(f.rate(hist))} | {fmt_ratio(f.ratio(hist, lo))} |")
    w("")

    # --- durability -------------------------------------------------------------------------
    w("## FULL, and what the second durable write costs")
    w("")
    w("One process. A lease queue needs two durable writes per task (the lease must be durable before the work "
      "starts, the completion after it ends); huey's dequeue is one. bare1 does bare's work in one transaction; "
      "q1cl folds each lease into the previous task's completion, one transaction per task.")
    w("")
    w("| sync | bare1 (1 tx/task) | bare (2 tx/task) | bare/bare1 | huey (1 tx/task) | q1 (2 tx/task) | q1cl (1 tx/task) "
      "| q1/huey | q1cl/huey |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for sync in syncs:
        b1, b2, h = key(sync, 1, "bare1"), key(sync, 1, "bare"), key(sync, 1, "huey")
        q1, qcl = key(sync, 1, "queue"), key(sync, 1, "queue_cl")
        w(f"| {sync} | {fmt_rate(f.rate(b1))} | {fmt_rate(f.rate(b2))} | {fmt_ratio(f.ratio(b2, b1))} | "
          f"{fmt_rate(f.rate(h))} | {fmt_rate(f.rate(q1))} | {fmt_rate(f.rate(qcl))} | {fmt_ratio(f.ratio(q1, h))} | "
          f"{fmt_ratio(f.ratio(qcl, h))} |")
    w("")
    per_rep = {s: [1e6 / b2 - 1e6 / b1 for b2, b1 in zip(rates[key(s, 1, "bare")], rates[key(s, 1, "bare1")])]
               for s in syncs}
    second = {s: median(v) for s, v in per_rep.items()}
    q_rep = [1e6 / a - 1e6 / b for a, b in zip(rates[key("FULL", 1, "queue")], rates[key("FULL", 1, "queue_cl")])]
    full_cost = {k: 1e6 / f.rate(key("FULL", 1, k)) - 1e6 / f.rate(key("NORMAL", 1, k))
                 for k in ("bare", "bare1", "huey", "queue", "queue_cl")}
    w(f"The second transaction costs {second['FULL']:,.0f} µs per task at FULL (per repetition: "
      f"{', '.join(f'{x:,.0f}' for x in per_rep['FULL'])}) against {second['NORMAL']:,.0f} µs at NORMAL "
      f"(1/bare − 1/bare1, paired within each repetition; fsync times on this shared disk vary a lot"
      f"{'; in this run the noise was larger than the effect' if second['FULL'] <= 0 else ''}). In the queue, "
      f"1/q1 − 1/q1cl at FULL is {median(q_rep):,.0f} µs per task (per repetition: "
      f"{', '.join(f'{x:,.0f}' for x in q_rep)}). Going from NORMAL to FULL adds {full_cost['bare1']:,.0f} µs per "
      f"task with one durable write (bare1), {full_cost['huey']:,.0f} µs for huey, {full_cost['queue_cl']:,.0f} µs for "
      f"q1cl, {full_cost['bare']:,.0f} µs with two (bare) and {full_cost['queue']:,.0f} µs for q1.")
    w("")

    # --- targets ----------------------------------------------------------------------------
    def check(label: str, rows: list[tuple[str, float]], threshold: float) -> str:
        ok = all(r >= threshold for _, r in rows)
        return f"{label}: {verdict(ok)} — " + ", ".join(f"{name} {fmt_ratio(r)}" for name, r in rows) + "."

    def across(kind: str, limit: int, base: str, only: tuple = syncs) -> list[tuple[str, float]]:
        return [(f"{s} {p}p", f.ratio(key(s, p, kind, limit), key(s, p, base))) for s in only for p in procs_list]

    w("## Targets")
    w("")
    w("Each verdict needs the ratio at every setting listed; the figures are medians of paired ratios.")
    w("")
    w(check(f"1. One task per lease ≥ {TARGET_ONE_VS_BARE}x the bare ceiling at the same setting (q1: lease, "
            "complete)", across("queue", 1, "bare"), TARGET_ONE_VS_BARE))
    w(check("   - the same with `complete_and_lease` (q1cl)", across("queue_cl", 1, "bare"), TARGET_ONE_VS_BARE))
    w(check(f"2. One task per lease ≥ {TARGET_ONE_VS_HUEY}x huey at NORMAL (q1)", across("queue", 1, "huey", ("NORMAL",)),
            TARGET_ONE_VS_HUEY))
    w(check("   - the same with `complete_and_lease` (q1cl)", across("queue_cl", 1, "huey", ("NORMAL",)),
            TARGET_ONE_VS_HUEY))
    w(check(f"3. Batched leasing (q{lb}) ≥ {TARGET_BATCH_VS_BARE}x the one-row bare ceiling", across("queue", lb, "bare"),
            TARGET_BATCH_VS_BARE))
    w(check(f"   - the same with the batch acknowledged in one transaction (q{lb}b, `complete_many`)",
            across("queue_b", lb, "bare"), TARGET_BATCH_VS_BARE))
    w(check(f"4. Depth {big:,} within 20 % of depth {small:,} (q1, one process)",
            [(s, f.ratio(("depth", s, big), ("depth", s, small))) for s in syncs], TARGET_DEPTH))
    w(check(f"   - the same bound for {big:,} DONE tasks of history (not in the issue; a soak's queue grows so)",
            [(s, f.ratio(("depth", s, "history"), ("depth", s, small))) for s in syncs], TARGET_DEPTH))
    h_full = key("FULL", 1, "huey")
    w(f"5. FULL beside huey's default (FULL): reported — one process, huey {fmt_rate(f.rate(h_full))}/s; q1 "
      f"{fmt_rate(f.rate(key('FULL', 1, 'queue')))}/s ({fmt_ratio(f.ratio(key('FULL', 1, 'queue'), h_full))}), q1cl "
      f"{fmt_rate(f.rate(key('FULL', 1, 'queue_cl')))}/s ({fmt_ratio(f.ratio(key('FULL', 1, 'queue_cl'), h_full))}), "
      f"q{lb} {fmt_rate(f.rate(key('FULL', 1, 'queue', lb)))}/s ({fmt_ratio(f.ratio(key('FULL', 1, 'queue', lb), h_full))}). "
      f"The second durable write costs {second['FULL']:,.0f} µs per task on this disk in the bare ceiling (bare "
      f"{fmt_ratio(f.ratio(key('FULL', 1, 'bare'), key('FULL', 1, 'bare1')))} of bare1) and "
      f"{median(q_rep):,.0f} µs in the queue (q1 {fmt_ratio(f.ratio(key('FULL', 1, 'queue'), key('FULL', 1, 'queue_cl')))} "
      "of q1cl).")
    w("")

    # --- evidence ---------------------------------------------------------------------------
    evidence(w, f, facts, plan, syncs, procs_list, lb)
    return "\n".join(out) + "\n"


def evidence(w, f: Figures, facts: dict, plan, syncs, procs_list, lb: int) -> None:
    queue_variants = variants_of(lb)
    """Where the time goes, and the reasons behind the verdicts, with this run's figures."""
    prof, pages, indexes = facts["profile"], facts["wal_pages"], facts["indexes"]
    queue, replay, bare = (f.rate(("inproc", k)) for k in ("queue", "replay", "bare"))
    python_us = 1e6 / queue - 1e6 / replay
    total = sum(prof[k] for k in ("sqlite", "tenacity", "orchestrator", "other"))
    w("## Where the time goes (one process, NORMAL, one task per lease)")
    w("")
    w(f"- In the bench process, no profiler, {plan.drain['NORMAL']:,} tasks: queue {fmt_rate(queue)}/s; the "
      f"queue's own lease+complete statements from `queries.sql` replayed on its schema with no Python layer "
      f"(no tenacity, no writer lock, no dataclasses) {fmt_rate(replay)}/s; bare {fmt_rate(bare)}/s. "
      f"Queue/replay {fmt_ratio(f.ratio(('inproc', 'queue'), ('inproc', 'replay')))}, "
      f"replay/bare {fmt_ratio(f.ratio(('inproc', 'replay'), ('inproc', 'bare')))}, "
      f"queue/bare {fmt_ratio(f.ratio(('inproc', 'queue'), ('inproc', 'bare')))}: the SQL costs "
      f"{1e6 / replay:,.0f} µs per task, the Python layer {python_us:,.0f} µs more, bare {1e6 / bare:,.0f} µs in all.")
    w(f"- WAL pages (frames of one page each) written per lease+complete (checkpoints off): queue {pages['queue']:.1f}, bare "
      f"{pages['bare']:.1f} ({pages['queue'] / pages['bare']:.1f}x).")
    w(f"- cProfile of the same drain (the profiler inflates Python time): {total:,.0f} µs per task, of which "
      f"SQLite calls {prof['sqlite']:,.0f} µs ({prof['sqlite'] / total:.0%}), tenacity's retry wrapper "
      f"{prof['tenacity']:,.0f} µs ({prof['tenacity'] / total:.0%}), orchestrator code {prof['orchestrator']:,.0f} µs "
      f"({prof['orchestrator'] / total:.0%}), the rest (orjson, dataclass construction, the bench loop, stdlib) "
      f"{prof['other']:,.0f} µs ({prof['other'] / total:.0%}).")
    w("")
    w("## Why")
    w("")
    sql_share = f.ratio(("inproc", "replay"), ("inproc", "bare"))
    w("- **At NORMAL a commit does not fsync**, so a task costs what its statements and WAL pages cost. The bare "
      "ceiling updates one row of one table with one index; per task the queue also writes two event rows "
      "(`leased`, `completed`: every transition's event in the transition's transaction), an effect row under its "
      f"unique key; `tasks` carries {len(indexes['tasks'])} indexes ({', '.join(indexes['tasks'])}), `events` "
      f"{len(indexes['events'])}, `effects` {len(indexes['effects'])}, and every index whose columns a write "
      f"changes is rewritten with it: {pages['queue']:.1f} WAL pages against {pages['bare']:.1f}. Its SQL alone, with no Python at all, reaches {fmt_ratio(sql_share)} of the "
      "bare ceiling" + (f", so {TARGET_ONE_VS_BARE}x is out of reach for this schema whatever the Python does"
                        if sql_share < TARGET_ONE_VS_BARE else "")
      + f"; the Python layer ({python_us:,.0f} µs per task) takes it to "
      f"{fmt_ratio(f.ratio(('inproc', 'queue'), ('inproc', 'bare')))}. huey's dequeue deletes one row in one "
      "transaction and records nothing: with one process at NORMAL it runs at "
      f"{fmt_ratio(f.ratio(('drain', 'NORMAL', 1, 'huey', 1), ('drain', 'NORMAL', 1, 'bare', 1)))} of the "
      "two-transaction bare ceiling, which is why 1.5x huey is further still.")
    cl = {sync: f.ratio(("drain", sync, 1, "queue_cl", 1), ("drain", sync, 1, "queue", 1)) for sync in syncs}
    w(f"- **Fewer transactions, nearly the same pages.** Batched leasing (≤{lb}) shares the lease transaction among the tasks "
      "of a batch, and `complete_and_lease` folds each lease into the previous completion; either way every task "
      "still gets its own completion (DONE, effect row, event) and its own `leased` event, and the completion "
      "alone writes more pages than a whole bare lease+complete. One process, q1cl against q1: "
      + ", ".join(f"{sync} {fmt_ratio(cl[sync])}" for sync in syncs)
      + f". Acknowledging the batch in one transaction (`complete_many`, q{lb}b) shares the completion's pages "
      f"among the batch too; one process, q{lb}b against q{lb}: "
      + ", ".join(f"{sync} {fmt_ratio(f.ratio(('drain', sync, 1, 'queue_b', lb), ('drain', sync, 1, 'queue', lb)))}"
                  for sync in syncs)
      + ". `orch worker` does not batch its completions: a task's effect is committed when the task ends, not "
      "held back behind the rest of its batch.")
    w(f"- **At FULL** every commit fsyncs the WAL and the fsync dominates, so the queue's extra pages matter less "
      f"(q1 {fmt_ratio(f.ratio(('drain', 'FULL', 1, 'queue', 1), ('drain', 'FULL', 1, 'bare', 1)))} of bare with "
      f"one process); batching the lease takes the fsyncs per task from 2 to 1 + 1/{lb}, `complete_and_lease` to 1. "
      "Against huey's one durable write per task, a lease queue that leases and completes in separate "
      "transactions pays for a second one: the bare pair runs at "
      f"{fmt_ratio(f.ratio(('drain', 'FULL', 1, 'bare', 1), ('drain', 'FULL', 1, 'bare1', 1)))} of bare1 here.")
    top = max(procs_list)
    parts = []
    for sync in syncs:
        figures = ", ".join(
            f"{name} {fmt_ratio(f.ratio(('drain', sync, top, kind, limit), ('drain', sync, 1, kind, limit)))}"
            for name, kind, limit in (("bare", "bare", 1), ("huey", "huey", 1), *queue_variants))
        parts.append(f"{sync}: {figures}")
    w(f"- **More processes add no throughput** on SQLite (one writer at a time). {top} processes against 1 — "
      + "; ".join(parts) + ".")
    w("")
