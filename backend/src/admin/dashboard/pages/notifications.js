// System notifications: compose one (admins) to everyone, listed users or a group's members,
// and the history with each one's progress, refreshed while one is being sent.
import { api, el, flash, isAdmin, time } from '../ui.js';

export const title = 'Notifications';

// How often the history is asked again while a notification is being sent.
const REFRESH_MS = 1000;

function progress(n) {
  const total = n.recipients_total;
  const bar = el('progress', { max: Math.max(total, 1), value: n.state === 'done' ? Math.max(total, 1) : n.recipients_done });
  return el('span', { class: 'progress' }, bar, ` ${n.recipients_done} / ${total}`);
}

function target(n) {
  if (n.target === 'group') return `group ${n.group}`;
  return n.target === 'all' ? 'everyone' : 'listed users';
}

function compose(onSent) {
  const text = el('textarea', { name: 'text', rows: 3, required: true, maxlength: 65536 });
  const heading = el('input', { name: 'title', maxlength: 256 });
  const type = el('select', { name: 'content_type' },
    el('option', { value: 'text/plain' }, 'text/plain'), el('option', { value: 'text/markdown' }, 'text/markdown'));
  const users = el('textarea', { name: 'users', rows: 2, placeholder: 'user ids, separated by spaces or commas', hidden: true });
  const group = el('input', { name: 'group', placeholder: 'group conversation id', hidden: true, inputmode: 'numeric' });
  const radio = (value, label, checked) => el('label', { class: 'inline' },
    el('input', { type: 'radio', name: 'to', value, checked, onchange: () => {
      users.hidden = value !== 'users';
      group.hidden = value !== 'group';
    } }), label);
  const id = el('input', { name: 'id', maxlength: 64, placeholder: 'optional: makes a resend safe' });
  const form = el('form', { class: 'stack', onsubmit: async (ev) => {
    ev.preventDefault();
    const to = new FormData(form).get('to');
    const body = { text: text.value, content_type: type.value };
    if (heading.value) body.title = heading.value;
    if (id.value) body.id = id.value;
    if (to === 'all') body.to = { all: true };
    else if (to === 'users') {
      const ids = users.value.split(/[\s,]+/).filter(Boolean).map(Number);
      if (ids.some(x => !Number.isSafeInteger(x) || x <= 0)) return flash('user ids are numbers', true);
      body.to = { users: ids };
    } else {
      // Sent as a string: group ids pass 2^53, where a Number would round them to another id.
      const g = group.value.trim();
      if (!/^\d{1,20}$/.test(g)) return flash('the group id is a number (its digits)', true);
      body.to = { group: g };
    }
    if (to === 'all' && !confirm('Send this notification to every user?')) return;
    try {
      const r = await api('POST', '/api/notifications', body);
      flash(r.repeated ? `already sent as ${r.notification_id}` : `sending to ${r.recipients} users`);
      text.value = ''; heading.value = ''; id.value = '';
      onSent();
    } catch (e) { flash(e.message, true); }
  } },
  el('label', {}, 'Title (optional)', heading),
  el('label', {}, 'Text', text),
  el('div', { class: 'row' },
    el('label', {}, 'Format', type),
    el('fieldset', { class: 'row' }, el('legend', {}, 'To'),
      radio('all', 'everyone', true), radio('users', 'users', false), radio('group', 'group', false))),
  users, group,
  el('label', {}, 'Id', id),
  el('div', {}, el('button', { type: 'submit', id: 'notify-send' }, 'Send notification')));
  return el('div', { class: 'card' }, el('h2', {}, 'New notification'), form);
}

export async function render(main) {
  const tbody = el('tbody', { id: 'notify-history' });
  const more = el('button', { class: 'secondary', hidden: true }, 'More');
  let cursor = null;
  let timer = null;
  // Set when the page is left: a request still on its way then sets no new timer.
  let stopped = false;
  const row = n => el('tr', { 'data-id': n.notification_id, 'data-state': n.state },
    el('td', {}, time(n.created_ms)),
    el('td', {}, n.title ? el('strong', {}, n.title) : null, n.title ? el('br') : null, n.text),
    el('td', {}, target(n)),
    el('td', {}, n.operator),
    el('td', { class: 'state' }, n.state, n.error ? el('div', { class: 'error' }, n.error) : null),
    el('td', {}, progress(n)));
  async function load(reset) {
    if (reset) cursor = null;
    const page = await api('GET', '/api/notifications?limit=50' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''));
    if (stopped) return;
    if (reset) tbody.textContent = '';
    for (const n of page.items) tbody.append(row(n));
    cursor = page.next_cursor || null;
    more.hidden = !cursor;
    // Ask again while something is being sent (only the first page moves).
    clearTimeout(timer);
    if (page.items.some(n => n.state === 'running')) {
      timer = setTimeout(() => load(true).catch(e => flash(e.message, true)), REFRESH_MS);
    }
  }
  more.addEventListener('click', () => load(false).catch(e => flash(e.message, true)));
  if (isAdmin()) main.append(compose(() => load(true).catch(e => flash(e.message, true))));
  else main.append(el('p', { class: 'muted' }, 'Only admins send notifications.'));
  const table = el('table', {},
    el('thead', {}, el('tr', {}, ['Sent (UTC)', 'Notification', 'To', 'By', 'State', 'Progress'].map(t => el('th', {}, t)))),
    tbody);
  main.append(el('div', { class: 'card' }, el('h2', {}, 'Sent since the server started'), table, more));
  await load(true);
  return () => { stopped = true; clearTimeout(timer); };
}
