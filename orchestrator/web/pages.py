"""The live view's two pages. The little script they need is written here (no third-party
JavaScript or CSS); charts are drawn as inline SVG from the SSE points."""

from __future__ import annotations

from orchestrator.core.model import ErrorClass, State

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:8px 16px;display:flex;gap:18px;align-items:center;flex-wrap:wrap}
header a{color:#fff} main{padding:12px 16px;max-width:1200px} h2{font-size:15px;margin:16px 0 6px}
.tiles{display:flex;flex-wrap:wrap;gap:8px} .tile{background:#fff;border:1px solid #d0d7de;border-radius:6px;
padding:6px 10px;min-width:130px} .tile b{display:block;font-size:18px} .tile small{color:#57606a}
table{border-collapse:collapse;background:#fff} td,th{border:1px solid #d0d7de;padding:3px 7px;text-align:left}
th{background:#eef1f4} .PASS{color:#1a7f37} .FAIL{color:#b35900} .ABORTED,.tripped{color:#cf222e;font-weight:bold}
.armed{color:#9a6700} .ok{color:#1a7f37} svg{background:#fff;border:1px solid #d0d7de;width:100%;max-width:900px}
.err{color:#cf222e} input,select,button{font:inherit;margin:2px}
"""

OVERVIEW_JS = r"""
const S = {points: [], tiles: null, status: null, lastSeq: null};
window.oncall = S;
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? '-').replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
const pct = (v) => v == null ? 'n/a' : (v * 100).toFixed(2) + ' %';
const clock = (t) => { t = Math.round(t || 0); const h = Math.floor(t / 3600), m = Math.floor(t % 3600 / 60), s = t % 60;
  return h + ':' + String(m).padStart(2, '0') + ':' + String(s).padStart(2, '0'); };
const STATES = ['PENDING', 'IN_PROGRESS', 'BLOCKED', 'DONE', 'FAILED', 'CANCELLED'];
const COLORS = ['#1f77b4', '#ff7f0e', '#9467bd', '#2ca02c', '#d62728', '#8c564b'];
function chart(el, title, series, opts) {
  const W = 900, H = 220, L = 50, R = 10, T = 22, B = 24;
  const xs = S.points.map(p => p.t / 3600);
  let ys = series.flatMap(s => s.values).filter(v => v != null).concat((opts.lines || []).map(l => l.y));
  const lo = opts.min ?? Math.min(0, ...ys), hi = opts.max ?? Math.max(1, ...ys) * 1.05;
  const x0 = xs.length ? xs[0] : 0, x1 = xs.length > 1 ? xs[xs.length - 1] : x0 + 1;
  const px = x => L + (x - x0) / (x1 - x0 || 1) * (W - L - R), py = y => H - B - (y - lo) / (hi - lo || 1) * (H - T - B);
  let out = `<text x="${L}" y="15" font-weight="bold" font-size="12">${esc(title)}</text>`;
  out += `<rect x="${L}" y="${T}" width="${W-L-R}" height="${H-T-B}" fill="none" stroke="#bbb"/>`;
  for (let k = 0; k <= 4; k++) { const y = lo + (hi - lo) * k / 4;
    out += `<text x="${L-4}" y="${py(y)+4}" font-size="10" text-anchor="end">${+y.toFixed(1)}</text>`; }
  out += `<text x="${W-R}" y="${H-4}" font-size="10" text-anchor="end">soak hours ${x0.toFixed(1)} - ${x1.toFixed(1)}</text>`;
  for (const l of (opts.lines || [])) out += `<line x1="${L}" x2="${W-R}" y1="${py(l.y)}" y2="${py(l.y)}" stroke="#d62728" stroke-dasharray="5 3"/>` +
    `<text x="${L+4}" y="${py(l.y)-3}" font-size="10" fill="#d62728">${esc(l.label)}</text>`;
  series.forEach((s, i) => { let d = '', pen = 'M';
    s.values.forEach((v, j) => { if (v == null) { pen = 'M'; return; } d += pen + px(xs[j]).toFixed(1) + ',' + py(v).toFixed(1) + ' '; pen = 'L'; });
    out += `<path d="${d}" fill="none" stroke="${s.color || COLORS[i % 6]}" stroke-width="1.3"/>`;
    out += `<text x="${W - R - 90 * (series.length - i)}" y="15" font-size="10" fill="${s.color || COLORS[i % 6]}">${esc(s.label)}</text>`; });
  el.innerHTML = `<svg viewBox="0 0 ${W} ${H}" data-points="${S.points.length}">${out}</svg>`;
}
function drawCharts() {
  const th = S.tiles ? S.tiles.moving.threshold : 0.95;
  chart($('chart-moving'), '30-min moving success (%)', [{label: 'moving success', values: S.points.map(p => p.moving == null ? null : p.moving * 100)}],
        {min: Math.min(90, ...S.points.filter(p => p.moving != null).map(p => p.moving * 100)), max: 100.5, lines: [{y: th * 100, label: 'abort line ' + (th * 100) + ' %'}]});
  chart($('chart-states'), 'Open tasks by state over time', STATES.slice(0, 3).map((s, i) => ({label: s, values: S.points.map(p => p.counts[i])})), {});
  chart($('chart-ended'), 'Ended tasks by state over time', STATES.slice(3).map((s, i) => ({label: s, color: COLORS[i + 3], values: S.points.map(p => p.counts[i + 3])})), {});
  $('npoints').textContent = S.points.length;
}
function tile(label, value, sub, cls) { return `<div class="tile"><small>${esc(label)}</small><b class="${cls || ''}">${esc(value)}</b><small>${esc(sub || '')}</small></div>`; }
function drawTiles() {
  const t = S.tiles; if (!t) return;
  const slo = Object.fromEntries(t.slo.map(r => [r.name.split(' ')[0] + (r.name.includes('Lease') ? 'L' : ''), r]));
  const tgt = (name, f) => slo[name] ? (slo[name].op + ' ' + f(slo[name].target)) : '';
  $('tiles').innerHTML = [
    tile('verdict so far', t.verdict, t.live ? 'live' : (t.complete ? 'run finished' : 'log ended'), t.verdict),
    tile('soak clock', clock(t.soak_t), 'of ' + clock(t.duration)),
    tile('wall clock', (t.wall || '-').replace('T', ' ').replace('Z', ' UTC'), 'started ' + (t.started_at || '-')),
    tile('speed', t.speed + 'x', 'run ' + t.run_id),
    tile('SLI-1 success', pct(t.sli.success), 'target ' + tgt('SLI-1', v => (v * 100).toFixed(1) + ' %')),
    tile('SLI-2 p95', t.sli.p95 == null ? 'n/a' : t.sli.p95.toFixed(1) + ' s', 'target ' + tgt('SLI-2', v => v + ' s')),
    tile('SLI-3 transient recovery', pct(t.sli.transient_recovery), 'tasks retried after a transient error that ended DONE'),
    tile('SLI-4 actual duplicates', t.sli.actual_duplicates, 'target ' + tgt('SLI-4', v => v) + '; ' + t.sli.dispatches + ' duplicate dispatches'),
    tile('error budget left', pct(t.budget.remaining), 'SLO ' + (t.budget.target * 100).toFixed(1) + ' %'),
  ].join('');
  $('tiles').dataset.success = t.sli.success; $('tiles').dataset.p95 = t.sli.p95; $('tiles').dataset.verdict = t.verdict;
  $('rules').innerHTML = '<tr><th>rule</th><th>state</th><th>evidence</th><th>figures</th></tr>' + t.rules.map(r =>
    `<tr id="rule-${r.rule}" data-state="${r.state}"><td>${r.rule}. ${esc(r.title)}</td><td class="${r.state}">${r.state}</td>` +
    `<td>${r.evidence.map(e => `<a href="/tasks?id=${esc(e)}">${esc(e)}</a>`).join(' ') || '-'}</td>` +
    `<td>${r.figures ? esc(JSON.stringify(r.figures)) : '-'}</td></tr>`).join('');
  $('faults').innerHTML = '<tr><th>fault</th><th>planned</th><th>injected</th><th>observed</th></tr>' + t.faults.map(f =>
    `<tr><td>${esc(f.kind)}</td><td>${esc(f.planned)}</td><td>${esc(f.injected)}</td><td>${esc(f.observed)} ${esc(f.observed_what)}</td></tr>`).join('');
  $('budget').innerHTML = '<tr><th>pair</th><th>long window</th><th>short window</th><th>threshold</th><th>burn long</th><th>burn short</th><th>firing</th></tr>' +
    t.budget.windows.map(w => `<tr><td>${w.name} (${w.severity})</td><td>${w.long_min} min</td><td>${w.short_min} min</td><td>${w.threshold}</td>` +
    `<td>${w.burn_long == null ? 'n/a' : w.burn_long.toFixed(2)}</td><td>${w.burn_short == null ? 'n/a' : w.burn_short.toFixed(2)}</td><td class="${w.firing ? 'tripped' : 'ok'}">${w.firing ? 'FIRING' : 'no'}</td></tr>`).join('');
}
function drawStatus() {
  const s = S.status; if (!s) return;
  $('leases').innerHTML = '<tr><th>worker</th><th>leases</th><th>oldest heartbeat age (soak s)</th></tr>' +
    (s.in_flight.map(w => `<tr><td>${esc(w.worker)}</td><td>${w.tasks}</td><td>${esc(w.heartbeat_age)}</td></tr>`).join('') || '<tr><td colspan="3">no lease in flight</td></tr>') +
    `<tr><td>expired, not reaped yet</td><td colspan="2">${s.expired_leases}</td></tr>`;
}
async function pollStatus() {
  try { const r = await fetch('/api/overview'); const d = await r.json(); S.status = d.status; drawStatus();
        $('error').textContent = d.error || ''; } catch (e) { $('error').textContent = 'server unreachable'; }
}
let pending = false;
function redraw() { if (pending) return; pending = true; requestAnimationFrame(() => { pending = false; drawCharts(); drawTiles(); }); }
const es = new EventSource('/events');
es.addEventListener('point', ev => { const p = JSON.parse(ev.data);
  if (S.lastSeq != null && p.seq <= S.lastSeq) return; S.points.push(p); S.lastSeq = p.seq; redraw(); });
es.addEventListener('tiles', ev => { S.tiles = JSON.parse(ev.data); redraw(); });
es.addEventListener('reset', () => { S.points = []; S.lastSeq = null; redraw(); });
pollStatus(); setInterval(pollStatus, 5000);
"""

TASKS_JS = r"""
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? '-').replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
const T = {next: null, last: null, rows: ''}; window.tasksView = T;
function params(extra) { const p = new URLSearchParams();
  for (const k of ['id', 'key', 'state', 'error', 'from', 'to']) { const v = $('f-' + k).value.trim(); if (v) p.set(k, v); }
  for (const [k, v] of Object.entries(extra || {})) p.set(k, v); return p; }
async function search(more) {
  const r = await fetch('/api/tasks?' + params(more && T.next ? {before: T.next} : {}));
  const d = await r.json(); if (!r.ok) { $('msg').textContent = d.error; return; }
  $('msg').textContent = ''; T.next = d.next;
  const rows = d.tasks.map(t => `<tr data-id="${esc(t.id)}"><td><a href="#" onclick="show('${esc(t.id)}');return false">${esc(t.id)}</a></td>` +
    `<td>${esc(t.key)}</td><td>${esc(t.state)}</td><td>${esc(t.error)}</td><td>${t.attempt}/${t.max_attempts}</td><td>${t.epoch}</td><td>${t.enqueued_t}</td></tr>`).join('');
  const head = '<tr><th>task</th><th>key</th><th>state</th><th>error</th><th>attempt</th><th>epoch</th><th>enqueued (soak s)</th></tr>';
  T.rows = (more ? T.rows : '') + rows;
  $('results').innerHTML = head + T.rows;
  $('more').disabled = !d.next;
}
async function show(id) {
  const r = await fetch('/api/tasks/' + encodeURIComponent(id)); const d = await r.json();
  if (!r.ok) { $('timeline').innerHTML = `<p class="err">${esc(d.error)}</p>`; return; }
  const lease = d.task.state === 'IN_PROGRESS' ? ` lease epoch ${d.task.epoch} held by ${esc(d.task.worker)}, last heartbeat at soak ${esc(d.task.heartbeat_t)} s, lease until ${esc(d.task.lease_until_t)} s` : '';
  $('timeline').innerHTML = `<h2>Timeline of ${esc(id)} (${esc(d.task.state)})</h2><p>${esc(d.task.key)}; attempt ${d.task.attempt}/${d.task.max_attempts}${lease}</p><table><tr><th>seq</th><th>soak s</th><th>event</th><th>state</th><th>epoch</th><th>worker</th><th>error</th><th>actor</th><th>notes / details</th></tr>` +
    d.events.map(e => `<tr><td>${e.seq}</td><td>${e.t}</td><td>${esc(e.event)}</td><td>${esc(e.prev)} &rarr; ${esc(e.state)}</td><td>${esc(e.epoch)}</td><td>${esc(e.worker)}</td><td>${esc(e.error)}</td><td>${esc(e.actor)}</td>` +
    `<td>${esc([e.notes, e.backoff != null ? 'backoff ' + e.backoff + ' s' : null, e.stale_epoch != null ? 'stale epoch ' + e.stale_epoch + ' (' + e.call + ')' : null, e.detail].filter(x => x).join('; '))}</td></tr>`).join('') + '</table>';
}
function body(confirm) {
  const b = {action: $('a-action').value, notes: $('a-notes').value, confirm: confirm};
  const one = $('a-task').value.trim();
  if (one) b.task = one; else b.filter = Object.fromEntries(params().entries());
  if (confirm) b.expect = T.last ? T.last.count : null;
  return b; }
async function post(confirm) {
  const tok = $('a-token').value; sessionStorage.setItem('orch-token', tok);
  const r = await fetch('/api/actions', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-Orch-Token': tok}, body: JSON.stringify(body(confirm))});
  const d = await r.json();
  if (!r.ok) { $('a-result').innerHTML = `<span class="err">refused: ${esc(d.error)}</span>`; $('a-confirm').disabled = true; return d; }
  if (d.preview) { T.last = d; $('a-result').innerHTML = `<span id="a-count">${d.count}</span> tasks would be ${esc(d.action)}: ${esc(d.first.join(', '))}${d.count > d.first.length ? ' ...' : ''}`; $('a-confirm').disabled = !d.count; }
  else { T.last = null; $('a-result').innerHTML = `applied <span id="a-applied">${d.applied}</span> (${esc(JSON.stringify(d.states))})`; $('a-confirm').disabled = true; search(false); }
  return d;
}
if ($('a-token')) $('a-token').value = sessionStorage.getItem('orch-token') || '';
const q = new URLSearchParams(location.search); for (const k of ['id', 'key', 'state', 'error', 'from', 'to']) if (q.get(k)) $('f-' + k).value = q.get(k);
search(false); if (q.get('id')) show(q.get('id'));
"""


def _head(title: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<style>{CSS}</style></head><body><header><b>soak on-call</b><a href="/">overview</a>'
            '<a href="/tasks">tasks</a><a href="/metrics">metrics</a></header><main>')


def overview(allow_actions: bool) -> str:
    return (_head("Soak overview") + '<p id="error" class="err"></p><div class="tiles" id="tiles">waiting for the log...</div>'
            '<h2>Abort rules</h2><table id="rules"></table>'
            '<h2>Charts (<span id="npoints">0</span> points, one per soak minute)</h2>'
            '<div id="chart-moving"></div><div id="chart-states"></div><div id="chart-ended"></div>'
            '<h2>Leases in flight and heartbeat ages</h2><table id="leases"></table>'
            '<h2>Faults injected vs observed</h2><table id="faults"></table>'
            '<h2>Error budget and burn rates (window pairs scaled to the run)</h2><table id="budget"></table>'
            f"<script>{OVERVIEW_JS}</script></main></body></html>")


def tasks(allow_actions: bool) -> str:
    states = "".join(f"<option>{s.value}</option>" for s in State)
    errors = "".join(f"<option>{e.value}</option>" for e in ErrorClass)
    form = ('<h2>Search</h2><form onsubmit="search(false);return false">'
            '<input id="f-id" placeholder="ORCH-N" size="10"><input id="f-key" placeholder="idempotency key">'
            f'<select id="f-state"><option value="">any state</option>{states}</select>'
            f'<select id="f-error"><option value="">any error</option>{errors}</select>'
            '<input id="f-from" placeholder="from (soak s)" size="12"><input id="f-to" placeholder="to (soak s)" size="12">'
            '<button id="search">search</button></form><p id="msg" class="err"></p>'
            '<table id="results"></table><button id="more" onclick="search(true)" disabled>next page</button>')
    acts = ""
    if allow_actions:
        options = "".join(f"<option>{a}</option>" for a in ("retry", "cancel", "replan", "done", "fail"))
        acts = ('<h2>Action (on one task, or on every task the search filter selects)</h2>'
                '<input id="a-token" type="password" placeholder="token">'
                f'<select id="a-action">{options}</select><input id="a-task" placeholder="ORCH-N (empty: the filter)">'
                '<input id="a-notes" placeholder="notes" size="30"><button id="a-preview" onclick="post(false)">preview</button>'
                '<button id="a-confirm" onclick="post(true)" disabled>confirm</button><p id="a-result"></p>')
    return _head("Soak tasks") + form + acts + f'<div id="timeline"></div><script>{TASKS_JS}</script></main></body></html>'
