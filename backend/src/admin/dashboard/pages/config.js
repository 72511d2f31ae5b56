// Configuration: the effective config with each key's source; live keys edited in place
// (admins; the server validates like `ringchat check-config` and says why it refuses); keys
// the server runs lower than configured, and why; the IP allow / deny lists. Viewers see
// everything read-only.
import { api, el, flash, isAdmin } from '../ui.js';

export const title = 'Configuration';

// A value as typed into an input, back to JSON: numbers, booleans and lists stay typed.
function parseValue(text, previous) {
  if (Array.isArray(previous)) return text.split(/[\s,]+/).filter(Boolean);
  if (typeof previous === 'number') return text.trim() === '' ? text : Number(text);
  if (typeof previous === 'boolean') return text === 'true';
  return text;
}

function shown(value) {
  if (Array.isArray(value)) return value.join(', ');
  if (value !== null && typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

function sourceText(k) {
  return k.origin ? `${k.source} (${k.origin})` : k.source;
}

function ipRules(main, reload) {
  const admin = isAdmin();
  const allow = el('textarea', { id: 'ip-allow', rows: 4, readonly: !admin, placeholder: 'everyone not denied' });
  const deny = el('textarea', { id: 'ip-deny', rows: 4, readonly: !admin, placeholder: 'nobody' });
  const error = el('p', { class: 'error', id: 'ip-error' });
  const limit = el('p', { class: 'muted' });
  const lines = t => t.value.split(/[\s,]+/).filter(Boolean);
  const load = async () => {
    const r = await api('GET', '/api/security/ip-rules');
    allow.value = r.allow.join('\n');
    deny.value = r.deny.join('\n');
    limit.textContent = `Addresses or CIDR ranges, IPv4 or IPv6, one per line; at most ${r.entries_max} per list. A deny wins; with an allow list, nobody else gets in. Checked when a client connects; open connections stay.`;
  };
  const save = el('button', { id: 'ip-save', hidden: !admin, onclick: async () => {
    error.textContent = '';
    try {
      await api('PUT', '/api/security/ip-rules', { allow: lines(allow), deny: lines(deny) });
      flash('IP rules applied');
      await load();
      await reload();
    } catch (e) { error.textContent = e.message; }
  } }, 'Apply IP rules');
  main.append(el('div', { class: 'card' }, el('h2', {}, 'Who may connect'), limit,
    el('div', { class: 'grid' }, el('label', {}, 'Allow', allow), el('label', {}, 'Deny', deny)),
    save, error));
  return load;
}

export async function render(main) {
  const admin = isAdmin();
  const files = el('p', { class: 'muted' });
  const filter = el('input', { id: 'config-filter', placeholder: 'filter keys', type: 'search' });
  const liveOnly = el('input', { type: 'checkbox', id: 'config-live-only' });
  const tbody = el('tbody');
  const error = el('p', { class: 'error', id: 'config-error' });
  const lowered = el('ul', { id: 'config-lowered' });
  const loweredCard = el('div', { class: 'card', hidden: true },
    el('h2', {}, 'Lowered by the server'),
    el('p', { class: 'muted' }, 'These keys run at a lower value than configured; raise the limit named to get the configured one.'),
    lowered);
  let keys = [];
  let lower = new Map();

  async function save(k, input, row) {
    error.textContent = '';
    const value = input.value.trim() === '' && k.source === 'override' ? null : parseValue(input.value, k.value);
    try {
      const r = await api('PATCH', '/api/config', { [k.key]: value });
      flash(r.changed.length ? r.changed.map(c => `${c.key}: ${shown(c.old)} → ${shown(c.new)}`).join('; ') : 'unchanged');
      await reload();
    } catch (e) {
      error.textContent = e.message;
      row.classList.add('refused');
    }
  }

  function draw() {
    tbody.textContent = '';
    const q = filter.value.trim().toLowerCase();
    for (const k of keys) {
      if (q && !k.key.includes(q)) continue;
      if (liveOnly.checked && !k.live) continue;
      const row = el('tr', { 'data-key': k.key });
      let cell;
      if (k.live && admin) {
        const input = el('input', { value: shown(k.value), 'aria-label': k.key, class: 'mono' });
        const apply = el('button', { class: 'secondary', onclick: () => save(k, input, row) }, 'Apply');
        input.addEventListener('keydown', ev => { if (ev.key === 'Enter') save(k, input, row); });
        cell = el('div', { class: 'row' }, input, apply);
      } else {
        cell = el('span', { class: 'mono' }, shown(k.value));
      }
      const low = lower.get(k.key);
      if (low) cell = el('div', {}, cell, el('span', { class: 'error' }, `runs at ${shown(low.effective)}`));
      row.append(el('td', { class: 'mono' }, k.key), el('td', {}, cell),
        el('td', {}, k.live ? 'live' : 'restart'), el('td', { class: 'muted' }, sourceText(k)));
      tbody.append(row);
    }
  }

  async function reload() {
    const view = await api('GET', '/api/config');
    keys = view.keys;
    lower = new Map(view.lowered.map(l => [l.key, l]));
    lowered.textContent = '';
    for (const l of view.lowered) {
      lowered.append(el('li', {}, el('span', { class: 'mono' }, l.key), `: configured ${shown(l.configured)}, runs at ${shown(l.effective)} (${l.why})`));
    }
    loweredCard.hidden = view.lowered.length === 0;
    files.textContent = `Configuration file: ${view.config_file || 'none (defaults and environment)'}. Live changes are kept in ${view.overrides_file} and win over the file and the environment; SIGHUP re-reads the file.`;
    draw();
  }

  filter.addEventListener('input', draw);
  liveOnly.addEventListener('change', draw);
  const loadRules = ipRules(main, reload);
  main.append(loweredCard);
  main.append(el('div', { class: 'card' }, el('h2', {}, 'Effective configuration'), files,
    admin ? null : el('p', { class: 'muted', id: 'config-read-only' }, 'Read-only: only admins change the configuration.'),
    el('div', { class: 'row' }, el('label', {}, 'Key', filter), el('label', {}, 'Live keys only', liveOnly)),
    error,
    el('table', { id: 'config-table' }, el('thead', {}, el('tr', {}, ['Key', 'Value', 'Applies', 'Source'].map(t => el('th', {}, t)))), tbody)));
  await Promise.all([reload(), loadRules()]);
}
