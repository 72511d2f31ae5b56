// Users: search, list, view one (profile, devices online now), and for admins: create, edit the
// profile, disable / enable, kick, reset the password (each confirmed), and invite codes.
import { api, el, flash, isAdmin, pagedTable, time } from '../ui.js';

export const title = 'Users';

const q = (params) => Object.entries(params)
  .filter(([, v]) => v !== null && v !== undefined && v !== '')
  .map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');

export async function render(main) {
  const detail = el('div', { id: 'user-detail' });
  const query = el('input', { name: 'query', id: 'user-query', placeholder: 'name prefix, user id or e-mail', maxlength: 254 });
  const table = pagedTable([
    ['ID', u => u.user_id],
    ['Username', u => u.username],
    ['E-mail', u => u.email],
    ['Created (UTC)', u => time(u.created_at_ms)],
    ['Status', u => el('span', { class: u.disabled ? 'bad' : 'ok' }, u.disabled ? 'disabled' : 'enabled')],
    ['Online', u => u.sessions_online],
    ['', u => el('button', { class: 'secondary', 'data-user': u.user_id, onclick: () => view(u.user_id) }, 'View')],
  ], cursor => api('GET', '/api/users?' + q({ query: query.value.trim(), cursor, limit: 50 })));

  async function view(id) {
    const u = await api('GET', `/api/users/${id}`);
    detail.textContent = '';
    detail.append(userCard(u, () => view(id).catch(e => flash(e.message, true)), () => table.reload()));
    detail.scrollIntoView({ block: 'nearest' });
  }

  const search = el('form', { class: 'row', id: 'user-search', onsubmit: (ev) => {
    ev.preventDefault();
    detail.textContent = '';
    table.reload().catch(e => flash(e.message, true));
  } }, el('label', {}, 'Find', query), el('button', { type: 'submit' }, 'Search'));
  main.append(el('div', { class: 'card' }, el('h2', {}, 'Users'), search, table.node), detail);
  if (isAdmin()) main.append(createCard(() => table.reload()), invitesCard());
  await table.reload();
}

function userCard(u, refresh, relist) {
  const admin = isAdmin();
  const status = u.disabled
    ? `disabled ${time(u.disabled_info.at_ms)} by ${u.disabled_info.by}${u.disabled_info.reason ? ': ' + u.disabled_info.reason : ''}`
    : 'enabled';
  const act = (label, cls, question, run) => el('button', { class: cls, 'data-action': label.toLowerCase().replace(/ /g, '-'), onclick: async () => {
    if (!confirm(question)) return;
    try { await run(); await refresh(); await relist(); } catch (e) { flash(e.message, true); }
  } }, label);
  const actions = admin ? el('div', { class: 'row' },
    u.disabled
      ? act('Enable', 'secondary', `Enable ${u.username}? They can log in again.`, async () => {
        await api('POST', `/api/users/${u.user_id}/enable`); flash(`${u.username} enabled`);
      })
      : act('Disable', 'danger', `Disable ${u.username}? Every device is signed out and no login works until enabled.`, async () => {
        const reason = prompt('Reason (for other operators, optional):', '') || '';
        const r = await api('POST', `/api/users/${u.user_id}/disable`, { reason });
        flash(`${u.username} disabled; ${r.sessions_kicked} session(s) closed`);
      }),
    act('Kick all devices', 'secondary', `Sign ${u.username} out on every device? They may log in again.`, async () => {
      const r = await api('POST', `/api/users/${u.user_id}/kick`, {});
      flash(`${r.sessions_kicked} session(s) closed`);
    }),
    act('Reset password', 'danger', `Reset ${u.username}'s password? Every token is revoked and every device signed out.`, async () => {
      const r = await api('POST', `/api/users/${u.user_id}/reset-password`, {});
      document.getElementById('new-password').textContent = `New password for ${u.username} (copy it now, it is not shown again): ${r.password}`;
    }),
  ) : null;
  const devices = el('table', {}, el('thead', {}, el('tr', {}, ['Device', 'Platform', 'Online', 'Shards', 'Last seen (UTC)', 'Token expires', ''].map(t => el('th', {}, t)))),
    el('tbody', {}, u.devices.map(d => el('tr', {},
      el('td', { class: 'mono' }, d.device_id || '(none)'),
      el('td', {}, d.platform),
      el('td', {}, d.online ? 'online' : ''),
      el('td', {}, d.shards.join(', ')),
      el('td', {}, time(d.last_seen_ms)),
      el('td', {}, time(d.token_expires_at_ms)),
      el('td', {}, admin && d.online ? act('Kick', 'secondary', `Sign out device ${d.device_id}?`, async () => {
        const r = await api('POST', `/api/users/${u.user_id}/kick`, { device_id: d.device_id });
        flash(`${r.sessions_kicked} session(s) closed`);
      }) : null),
    ))));
  const p = u.profile;
  const field = (name, value, attrs = {}) => el('input', { name, value, ...attrs, disabled: !admin });
  const nickname = field('nickname', p.nickname, { maxlength: 256 });
  const avatar = field('avatar_url', p.avatar_url, { maxlength: 1024 });
  const bio = el('textarea', { name: 'bio', rows: 2, disabled: !admin }, p.bio);
  const edit = el('form', { class: 'row', id: 'user-edit', onsubmit: async (ev) => {
    ev.preventDefault();
    if (!confirm(`Save ${u.username}'s profile?`)) return;
    try {
      await api('PATCH', `/api/users/${u.user_id}`, { nickname: nickname.value, avatar_url: avatar.value, bio: bio.value });
      flash('profile saved'); await refresh();
    } catch (e) { flash(e.message, true); }
  } }, el('label', {}, 'Nickname', nickname), el('label', {}, 'Avatar URL', avatar), el('label', {}, 'Bio', bio),
  admin ? el('button', { type: 'submit' }, 'Save profile') : null);
  return el('div', { class: 'card', 'data-user-id': u.user_id },
    el('h2', {}, `${u.username} (${u.user_id})`),
    el('p', {}, `E-mail: ${u.email || '—'} · created ${time(u.created_at_ms)} · last seen ${time(u.last_seen_ms) || 'never'} · `,
      el('strong', { id: 'user-status' }, status)),
    actions, el('p', { class: 'mono', id: 'new-password' }),
    el('h3', {}, `Devices (${u.sessions_online} session(s) online)`), devices,
    el('h3', {}, 'Profile'), edit);
}

function createCard(relist) {
  const name = el('input', { name: 'username', required: true, maxlength: 32 });
  const email = el('input', { name: 'email', type: 'email', maxlength: 254 });
  const shown = el('p', { class: 'mono' });
  const form = el('form', { class: 'row', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const r = await api('POST', '/api/users', { username: name.value, email: email.value });
      shown.textContent = `Created ${r.username} (${r.user_id}); password (copy it now, it is not shown again): ${r.password}`;
      name.value = ''; email.value = '';
      await relist();
    } catch (e) { flash(e.message, true); }
  } }, el('label', {}, 'Username', name), el('label', {}, 'E-mail (optional)', email), el('button', { type: 'submit' }, 'Create user'));
  return el('div', { class: 'card' }, el('h2', {}, 'New user'), form, shown);
}

function invitesCard() {
  const uses = el('input', { name: 'uses_max', type: 'number', min: 1, value: 1 });
  const days = el('input', { name: 'days', type: 'number', min: 1, value: 7 });
  const note = el('input', { name: 'note', maxlength: 256 });
  const shown = el('p', { class: 'mono' });
  const table = pagedTable([
    ['ID', i => i.id],
    ['Uses', i => `${i.uses} / ${i.uses_max}`],
    ['Expires (UTC)', i => time(i.expires_ms)],
    ['Usable', i => i.usable ? 'yes' : 'no'],
    ['By', i => i.issuer],
    ['Note', i => i.note],
    ['', i => el('button', { class: 'danger', onclick: async () => {
      if (!confirm(`Revoke invite ${i.id}?`)) return;
      try { await api('DELETE', `/api/invites/${i.id}`); flash('revoked'); await table.reload(); } catch (e) { flash(e.message, true); }
    } }, 'Revoke')],
  ], cursor => api('GET', '/api/invites?' + q({ cursor, limit: 50 })));
  const form = el('form', { class: 'row', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const r = await api('POST', '/api/invites', { uses_max: Number(uses.value), ttl_s: Number(days.value) * 86400, note: note.value });
      shown.textContent = `Invite code (copy it now, it is not shown again): ${r.code}`;
      await table.reload();
    } catch (e) { flash(e.message, true); }
  } }, el('label', {}, 'Uses', uses), el('label', {}, 'Days', days), el('label', {}, 'Note', note), el('button', { type: 'submit' }, 'Create invite'));
  table.reload().catch(e => flash(e.message, true));
  return el('div', { class: 'card' }, el('h2', {}, 'Invite codes'),
    el('p', { class: 'muted' }, 'Used when accounts.registration = "invite".'), form, shown, table.node);
}
