// Activity: daily and monthly active users, messages, registrations and logins per UTC day,
// and the heaviest senders of the last hour (GET /api/activity). Refreshed every minute.
import { api, el } from '../ui.js';
import { chart, format } from '../chart.js';

export const title = 'Activity';

export async function render(main) {
  const days = el('select', { name: 'days' }, [7, 30, 90].map(d => el('option', { value: d, selected: d === 30 }, `${d} days`)));
  const summary = el('p', { id: 'activity-summary' });
  const users = chart('chart-active-users', 'Active users per day');
  const messages = chart('chart-messages-per-day', 'Messages per day');
  const signups = chart('chart-registrations', 'Registrations and logins per day');
  const senders = el('tbody');
  const dayRows = el('tbody');
  main.append(el('div', { id: 'activity' },
    el('div', { class: 'card' }, el('h2', {}, 'Activity'), el('div', { class: 'row' }, el('label', {}, 'Period', days)), summary),
    el('div', { class: 'charts' }, users.node, messages.node, signups.node),
    el('div', { class: 'card', id: 'heaviest' }, el('h3', {}, 'Heaviest senders, last hour'),
      el('table', {}, el('thead', {}, el('tr', {}, ['User id', 'Username', 'Messages', '± (may overstate by)'].map(t => el('th', {}, t)))), senders)),
    el('div', { class: 'card' }, el('h3', {}, 'Per day (UTC, days with activity)'),
      el('table', {}, el('thead', {}, el('tr', {}, ['Date', 'Active', 'Active (30 d)', 'Messages', 'Registrations', 'Logins'].map(t => el('th', {}, t)))), dayRows))));

  async function load() {
    const a = await api('GET', `/api/activity?days=${days.value}&top=20`);
    summary.textContent = `Today: ${format(a.daily_active_users)} active users · last 30 days: ${format(a.monthly_active_users)}`;
    const labels = a.days.length ? [a.days[0].date, a.days[a.days.length - 1].date] : [];
    const col = (f) => a.days.map(f);
    users.draw([{ label: 'daily', values: col(d => d.active_users) }, { label: '30 days', values: col(d => d.monthly_active_users) }], { labels });
    messages.draw([{ label: 'messages', values: col(d => d.messages) }], { bars: true, labels });
    signups.draw([{ label: 'registrations', values: col(d => d.registrations) }, { label: 'logins', values: col(d => d.logins) }], { bars: true, labels });
    senders.textContent = '';
    for (const s of a.heaviest_senders) {
      senders.append(el('tr', {}, el('td', {}, String(s.user_id)), el('td', {}, s.username || '(gone)'), el('td', {}, format(s.messages)), el('td', {}, format(s.error))));
    }
    if (!a.heaviest_senders.length) senders.append(el('tr', {}, el('td', { colspan: 4, class: 'muted' }, 'No messages in the last hour.')));
    dayRows.textContent = '';
    // Days with nothing are left out of the table (the charts show them).
    for (const d of [...a.days].reverse().filter(d => d.messages || d.logins || d.registrations)) {
      dayRows.append(el('tr', {}, [d.date, format(d.active_users), format(d.monthly_active_users), format(d.messages), format(d.registrations), format(d.logins)].map(v => el('td', {}, v))));
    }
  }

  days.addEventListener('change', () => load().catch(e => { summary.textContent = e.message; }));
  await load();
  const timer = setInterval(() => load().catch(e => { summary.textContent = e.message; }), 60_000);
  return () => clearInterval(timer);
}
