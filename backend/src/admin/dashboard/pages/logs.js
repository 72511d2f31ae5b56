// Logs: the live tail (EventSource on /api/logs/stream, filtered, pausable, a bounded number of
// lines kept), a search over the retained files (paged), an export link, and the live filter
// (admins change it).
import { api, el, flash, isAdmin } from '../ui.js';

export const title = 'Logs';

// Lines kept in the live view; older ones are removed as new ones arrive.
const LIVE_LINES_MAX = 500;
const BACKLOG = 100;
const LEVELS = ['', 'trace', 'debug', 'info', 'warn', 'error'];

function stylesheet() {
  if (document.getElementById('logs-css')) return;
  document.head.append(el('link', { id: 'logs-css', rel: 'stylesheet', href: '/pages/logs.css' }));
}

// One log line as a table row: time, level, target, message and fields.
function row(line) {
  const fields = line.fields && Object.keys(line.fields).length
    ? el('span', { class: 'log-fields' }, Object.entries(line.fields).map(([k, v]) => ` ${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(''))
    : null;
  return el('tr', { class: `log-${line.level.toLowerCase()}` },
    el('td', { class: 'mono nowrap' }, line.ts.replace('T', ' ').replace('Z', '')),
    el('td', { class: 'log-level' }, line.level),
    el('td', { class: 'mono' }, line.target),
    el('td', { class: 'log-msg' }, line.msg, fields));
}

function table(id) {
  const tbody = el('tbody', { id });
  return { tbody, node: el('table', { class: 'log-table' },
    el('thead', {}, el('tr', {}, ['Time (UTC)', 'Level', 'Target', 'Message'].map(t => el('th', {}, t)))), tbody) };
}

// The filter inputs shared by the tail and the search.
function filterInputs(prefix) {
  const level = el('select', { name: `${prefix}-level` }, LEVELS.map(l => el('option', { value: l }, l || 'any level')));
  const target = el('input', { name: `${prefix}-target`, placeholder: 'target prefix', maxlength: 256 });
  const q = el('input', { name: `${prefix}-q`, placeholder: 'text', maxlength: 256 });
  const params = () => {
    const p = new URLSearchParams();
    if (level.value) p.set('level', level.value);
    if (target.value) p.set('target', target.value);
    if (q.value) p.set('q', q.value);
    return p;
  };
  return { level, target, q, params, nodes: [el('label', {}, 'Level', level), el('label', {}, 'Target', target), el('label', {}, 'Contains', q)] };
}

function liveTail() {
  const f = filterInputs('tail');
  const { tbody, node } = table('tail-lines');
  const status = el('span', { class: 'muted', id: 'tail-status' }, 'connecting…');
  const pause = el('button', { type: 'button', class: 'secondary', id: 'tail-pause' }, 'Pause');
  let source = null;
  let paused = false;
  let held = 0;

  function add(line) {
    if (paused) { held++; status.textContent = `paused (${held} new)`; return; }
    tbody.prepend(row(line));
    while (tbody.childElementCount > LIVE_LINES_MAX) tbody.lastElementChild.remove();
  }
  function connect() {
    if (source) source.close();
    tbody.textContent = '';
    status.textContent = 'connecting…';
    const p = f.params();
    p.set('backlog', BACKLOG);
    source = new EventSource('/api/logs/stream?' + p);
    source.addEventListener('open', () => { status.textContent = paused ? 'paused' : 'live'; });
    source.addEventListener('log', (ev) => add(JSON.parse(ev.data)));
    source.addEventListener('skipped', (ev) => {
      const n = JSON.parse(ev.data).missed;
      tbody.prepend(el('tr', { class: 'log-skipped' }, el('td', { colspan: 4 }, `… ${n} line(s) skipped: this view fell behind`)));
    });
    source.addEventListener('error', () => {
      status.textContent = source.readyState === EventSource.CLOSED ? 'disconnected (reload the page)' : 'reconnecting…';
    });
  }
  pause.addEventListener('click', () => {
    paused = !paused;
    held = 0;
    pause.textContent = paused ? 'Resume' : 'Pause';
    status.textContent = paused ? 'paused' : 'live';
  });
  const form = el('form', { class: 'row', id: 'tail-form', onsubmit: (ev) => { ev.preventDefault(); connect(); } },
    f.nodes, el('button', { type: 'submit' }, 'Apply'), pause, status);
  connect();
  return { node: el('div', { class: 'card' }, el('h2', {}, 'Live tail'), form, el('div', { class: 'log-scroll' }, node)),
    stop: () => { if (source) source.close(); } };
}

function search() {
  const f = filterInputs('search');
  const since = el('input', { name: 'search-since', placeholder: '2026-12-02T10:00:00Z', size: 22 });
  const until = el('input', { name: 'search-until', placeholder: 'until (RFC 3339)', size: 22 });
  const { tbody, node } = table('search-lines');
  const more = el('button', { type: 'button', class: 'secondary', hidden: true, id: 'search-more' }, 'More');
  const note = el('p', { class: 'muted', id: 'search-note' });
  const exportLink = el('a', { id: 'export-link', href: '/api/logs/export', download: '' }, 'Export matching lines (.jsonl)');
  let cursor = null;
  const params = () => {
    const p = f.params();
    if (since.value) p.set('since', since.value);
    if (until.value) p.set('until', until.value);
    return p;
  };
  async function next() {
    more.hidden = true;
    const p = params();
    p.set('limit', 100);
    if (cursor) p.set('cursor', cursor);
    const page = await api('GET', '/api/logs?' + p);
    for (const line of page.items) tbody.append(row(line));
    cursor = page.next_cursor || null;
    more.hidden = !cursor;
    note.textContent = `${tbody.childElementCount} line(s) shown; read ${(page.scanned_bytes / 1048576).toFixed(1)} MiB of logs for this page` +
      (cursor ? '; more may follow' : '; every retained file read');
  }
  async function run() {
    tbody.textContent = '';
    cursor = null;
    exportLink.href = '/api/logs/export?' + params();
    await next();
  }
  more.addEventListener('click', () => next().catch(e => flash(e.message, true)));
  const form = el('form', { class: 'row', id: 'search-form', onsubmit: (ev) => { ev.preventDefault(); run().catch(e => flash(e.message, true)); } },
    f.nodes, el('label', {}, 'Since', since), el('label', {}, 'Until', until), el('button', { type: 'submit' }, 'Search'), exportLink);
  return { node: el('div', { class: 'card' }, el('h2', {}, 'Search the log files'), form, note, el('div', { class: 'log-scroll' }, node), more) };
}

async function filterCard() {
  const info = await api('GET', '/api/logs/filter');
  const input = el('input', { name: 'log-filter', value: info.filter, size: 50, maxlength: 1024, disabled: !isAdmin() });
  const form = el('form', { class: 'row', id: 'filter-form', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const now = await api('PUT', '/api/logs/filter', { filter: input.value });
      input.value = now.filter;
      flash('log filter changed');
    } catch (e) { flash(e.message, true); }
  } }, el('label', {}, 'Filter (which events are logged at all)', input),
  isAdmin() ? el('button', { type: 'submit' }, 'Set') : el('span', { class: 'muted' }, 'admins change it'),
  el('span', { class: 'muted' }, `started with ${info.initial}`));
  return el('div', { class: 'card' }, el('h2', {}, 'Log filter'), form);
}

export async function render(main) {
  stylesheet();
  // The filter is read before the tail's stream opens: a failed read leaves no stream behind,
  // and nothing is awaited between opening it and handing its stop to the shell.
  const filter = await filterCard();
  const tail = liveTail();
  const found = search();
  main.append(filter, tail.node, found.node);
  return tail.stop;
}
