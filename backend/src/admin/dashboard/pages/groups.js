// Groups: search by name or id, view one with its members, and (admins) dissolve it.
import { api, el, flash, isAdmin, pagedTable, time } from '../ui.js';

export const title = 'Groups';

const q = (params) => Object.entries(params)
  .filter(([, v]) => v !== null && v !== undefined && v !== '')
  .map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');

export async function render(main) {
  const detail = el('div', { id: 'group-detail' });
  const query = el('input', { name: 'query', id: 'group-query', placeholder: 'name prefix or group id', maxlength: 256 });
  const table = pagedTable([
    ['ID', g => g.id],
    ['Name', g => g.name],
    ['Owner', g => g.owner],
    ['Members', g => g.member_count],
    ['Policy', g => g.join_policy],
    ['Status', g => g.dissolved ? 'dissolved' : 'live'],
    ['', g => el('button', { class: 'secondary', 'data-group': g.id, onclick: () => view(g.id).catch(e => flash(e.message, true)) }, 'View')],
  ], cursor => api('GET', '/api/groups?' + q({ query: query.value.trim(), cursor, limit: 50 })));

  async function view(id) {
    const g = await api('GET', `/api/groups/${id}`);
    const members = pagedTable([
      ['User', m => m.user_id],
      ['Username', m => m.username],
      ['Role', m => m.role],
      ['Joined (UTC)', m => time(m.joined_ms)],
      ['Muted until', m => time(m.muted_until_ms)],
    ], cursor => api('GET', `/api/groups/${id}/members?` + q({ cursor, limit: 50 })));
    const dissolve = isAdmin() && !g.dissolved ? el('button', { class: 'danger', id: 'group-dissolve', onclick: async () => {
      if (!confirm(`Dissolve "${g.name}"? Members are told; its history stays readable, nothing new is accepted.`)) return;
      try {
        const r = await api('POST', `/api/groups/${id}/dissolve`);
        flash(`dissolved (event ${r.event_seq})`);
        await view(id); await table.reload();
      } catch (e) { flash(e.message, true); }
    } }, 'Dissolve') : null;
    detail.textContent = '';
    detail.append(el('div', { class: 'card', 'data-group-id': g.id },
      el('h2', {}, `${g.name} (${g.id})`),
      el('p', {}, `Owner ${g.owner} · ${g.member_count} members, ${g.admin_count} admins · policy ${g.join_policy} · history ${g.history_visible ? 'visible' : 'hidden'} to new members · created ${time(g.created_ms)} · `,
        el('strong', { id: 'group-status' }, g.dissolved ? 'dissolved' : 'live')),
      g.intro ? el('p', { class: 'muted' }, g.intro) : null,
      dissolve, el('h3', {}, 'Members'), members.node));
    await members.reload();
  }

  const search = el('form', { class: 'row', onsubmit: (ev) => {
    ev.preventDefault();
    detail.textContent = '';
    table.reload().catch(e => flash(e.message, true));
  } }, el('label', {}, 'Find', query), el('button', { type: 'submit' }, 'Search'));
  main.append(el('div', { class: 'card' }, el('h2', {}, 'Groups'), search, table.node), detail);
  await table.reload();
}
