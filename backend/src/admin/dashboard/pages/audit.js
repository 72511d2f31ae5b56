// Audit: every admin change and users' security events, newest first.
import { api, el, pagedTable, time } from '../ui.js';

export const title = 'Audit';

export async function render(main) {
  const table = pagedTable([
    ['When (UTC)', e => time(e.at_ms)],
    ['Who', e => e.actor],
    ['What', e => el('code', {}, e.action)],
    ['Target', e => e.target],
    ['From', e => e.from],
    ['Detail', e => e.detail],
  ], cursor => api('GET', '/api/audit?limit=50' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : '')));
  main.append(el('div', { class: 'card', id: 'audit' }, el('h2', {}, 'Audit log'), table.node));
  await table.reload();
}
