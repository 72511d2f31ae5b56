// API keys: create (the key is shown once) and revoke. Admins only.
import { api, el, flash, isAdmin, pagedTable, time } from '../ui.js';

export const title = 'API keys';

export async function render(main) {
  if (!isAdmin()) {
    main.append(el('p', { class: 'muted' }, 'Only admins manage API keys.'));
    return;
  }
  const shown = el('p', { class: 'mono', id: 'new-key' });
  const table = pagedTable([
    ['Name', k => k.name],
    ['Role', k => k.role],
    ['Created (UTC)', k => time(k.created_ms)],
    ['By', k => k.created_by],
    ['', k => el('button', { class: 'danger', onclick: async () => {
      if (!confirm(`Revoke ${k.name}?`)) return;
      try { await api('DELETE', '/api/keys/' + encodeURIComponent(k.name)); flash('revoked'); await table.reload(); }
      catch (e) { flash(e.message, true); }
    } }, 'Revoke')],
  ], cursor => api('GET', '/api/keys?limit=50' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : '')));
  const name = el('input', { name: 'name', required: true, maxlength: 64, pattern: '[A-Za-z0-9._\\-]+' });
  const role = el('select', { name: 'role' }, el('option', { value: 'viewer' }, 'viewer'), el('option', { value: 'admin' }, 'admin'));
  const form = el('form', { class: 'row', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const k = await api('POST', '/api/keys', { name: name.value, role: role.value });
      shown.textContent = `Key for ${k.name} (copy it now, it is not shown again): ${k.key}`;
      name.value = '';
      await table.reload();
    } catch (e) { flash(e.message, true); }
  } }, el('label', {}, 'Name', name), el('label', {}, 'Role', role), el('button', { type: 'submit' }, 'Create key'));
  main.append(el('div', { class: 'card' }, el('h2', {}, 'API keys'), form, shown, table.node));
  await table.reload();
}
