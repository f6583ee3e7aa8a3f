// The overview's live updates. Every figure is rendered on the server, in the page itself and in
// the parts that /parts/overview and /parts/leases send ({element id: its HTML}). This script
// follows /events (SSE) and, when the figures moved, swaps the fresh parts in; window.oncall
// keeps what the stream said: the points (by seq, no gap, no duplicate) and the latest tiles.
'use strict';

const S = {points: [], tiles: null, lastSeq: null};
window.oncall = S;

// Replace each element by the part of the same id.
function swap(parts) {
  for (const [id, html] of Object.entries(parts)) {
    const old = document.getElementById(id);
    if (!old) continue;
    const fresh = document.createElement('template');
    fresh.innerHTML = html;
    old.replaceWith(fresh.content);
  }
}

// A refresh of one URL's parts: one request at a time; a call while one runs asks for one more.
function refresher(url) {
  let running = false;
  let again = false;
  return async function refresh() {
    if (running) { again = true; return; }
    running = true;
    try {
      const answer = await fetch(url);
      swap((await answer.json()).parts);
    } catch (e) {
      document.getElementById('error').textContent = 'server unreachable';
    } finally {
      running = false;
    }
    if (again) { again = false; refresh(); }
  };
}

const refreshFigures = refresher('/parts/overview');
const refreshLeases = refresher('/parts/leases');
const shownSeq = () => document.getElementById('tiles').dataset.seq;

const events = new EventSource('/events');
events.addEventListener('point', (ev) => {
  const p = JSON.parse(ev.data);
  if (S.lastSeq != null && p.seq <= S.lastSeq) return;
  S.points.push(p);
  S.lastSeq = p.seq;
});
events.addEventListener('tiles', (ev) => {
  S.tiles = JSON.parse(ev.data);
  if (String(S.tiles.last_seq) !== shownSeq()) refreshFigures();  // the page shows older figures
});
events.addEventListener('reset', () => {  // a new run replaced the one shown
  S.points = [];
  S.lastSeq = null;
  refreshFigures();
});
setInterval(refreshLeases, 5000);
