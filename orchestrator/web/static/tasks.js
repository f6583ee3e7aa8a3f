// The tasks page without reloads. The server renders the results, the "next page" link and a
// task's timeline (in the page and in /parts/tasks, /parts/timeline); this script fetches those
// parts instead of following the form and the links, and posts the operator actions (JSON).
'use strict';

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? '-').replace(/[&<>"]/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]));
const FILTERS = ['id', 'key', 'state', 'error', 'from', 'to'];
const T = {last: null};  // the last preview of an action
window.tasksView = T;

function swap(id, html) {
  const fresh = document.createElement('template');
  fresh.innerHTML = html;
  $(id).replaceWith(fresh.content);
}

// The search form's filter (what a bulk action acts on).
function filters() {
  const p = new URLSearchParams();
  for (const k of FILTERS) {
    const v = $('f-' + k).value.trim();
    if (v) p.set(k, v);
  }
  return p;
}

// The filter, the page size the address asked for, and the page to start after.
function query(before) {
  const p = filters();
  const limit = new URLSearchParams(location.search).get('limit');
  if (limit) p.set('limit', limit);
  if (before) p.set('before', before);
  return p;
}

// A fresh search (the first page), or the page after `before`, appended.
async function search(before) {
  const answer = await fetch('/parts/tasks?' + query(before));
  const d = await answer.json();
  if (!answer.ok) { $('msg').textContent = d.error; return; }
  $('msg').textContent = '';
  if (before) {
    $('results').insertAdjacentHTML('beforeend', d.rows);
  } else {
    $('results').innerHTML = d.head + d.rows;
    history.replaceState(null, '', '/tasks?' + query(null));
  }
  swap('more', d.more);
}

async function show(id) {
  const answer = await fetch('/parts/timeline?' + new URLSearchParams({id}));
  const d = await answer.json();
  if (!answer.ok) { $('timeline').innerHTML = `<p class="err">${esc(d.error)}</p>`; return; }
  swap('timeline', d.timeline);
}

function actionBody(confirm) {
  const b = {action: $('a-action').value, notes: $('a-notes').value, confirm};
  const one = $('a-task').value.trim();
  if (one) b.task = one; else b.filter = Object.fromEntries(filters().entries());
  if (confirm) b.expect = T.last ? T.last.count : null;
  return b;
}

async function post(confirm) {
  const token = $('a-token').value;
  sessionStorage.setItem('orch-token', token);
  const answer = await fetch('/api/actions', {method: 'POST', body: JSON.stringify(actionBody(confirm)),
    headers: {'Content-Type': 'application/json', 'X-Orch-Token': token}});
  const d = await answer.json();
  if (!answer.ok) {
    $('a-result').innerHTML = `<span class="err">refused: ${esc(d.error)}</span>`;
    $('a-confirm').disabled = true;
  } else if (d.preview) {
    T.last = d;
    const more = d.count > d.first.length ? ' ...' : '';
    $('a-result').innerHTML = `<span id="a-count">${d.count}</span> tasks would be ${esc(d.action)}: ${esc(d.first.join(', '))}${more}`;
    $('a-confirm').disabled = !d.count;
  } else {
    T.last = null;
    $('a-result').innerHTML = `applied <span id="a-applied">${d.applied}</span> (${esc(JSON.stringify(d.states))})`;
    $('a-confirm').disabled = true;
    search(null);
  }
}

$('search').addEventListener('submit', (ev) => { ev.preventDefault(); search(null); });
document.addEventListener('click', (ev) => {
  const link = ev.target.closest('a[data-show], #more a[data-next]');
  if (!link) return;
  ev.preventDefault();
  if (link.dataset.show) show(link.dataset.show); else search(link.dataset.next);
});
if ($('a-token')) {
  $('a-token').value = sessionStorage.getItem('orch-token') || '';
  $('a-preview').addEventListener('click', () => post(false));
  $('a-confirm').addEventListener('click', () => post(true));
}
