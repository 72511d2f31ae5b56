// The dashboard's shell: login, navigation, and one page at a time (hash routes: #/audit …).
import { api, setSession, el, flash, ApiError } from './ui.js';
import * as audit from './pages/audit.js';
import * as keys from './pages/keys.js';
import * as overview from './pages/overview.js';
import * as activity from './pages/activity.js';
import * as logs from './pages/logs.js';
import * as users from './pages/users.js';
import * as groups from './pages/groups.js';
import * as notifications from './pages/notifications.js';
import * as config from './pages/config.js';

// Navigation order; a page module exports `title` and `render(main)` (which may return a
// function to call when the page is left, to stop timers and streams).
const PAGES = { overview, activity, audit, keys, logs, users, groups, notifications, config };
const DEFAULT_PAGE = 'overview';

let leave = null;

async function show(name) {
  const page = PAGES[name] || PAGES[DEFAULT_PAGE];
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === name);
  if (leave) { leave(); leave = null; }
  const main = document.getElementById('page');
  main.textContent = '';
  try {
    leave = (await page.render(main)) || null;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return showLogin();
    main.append(el('p', { class: 'error' }, e.message));
  }
}

function route() { show(location.hash.replace(/^#\//, '') || DEFAULT_PAGE); }

// Leaving the shell (logout, or a 401) leaves the page too: its timers and streams stop (the
// Logs page's live tail holds one of the server's log.streams_max places while open).
function showLogin() {
  if (leave) { leave(); leave = null; }
  setSession(null);
  document.getElementById('shell').hidden = true;
  document.getElementById('login').hidden = false;
}

function showShell(info) {
  setSession(info);
  document.getElementById('login').hidden = true;
  document.getElementById('shell').hidden = false;
  document.getElementById('whoami').textContent = `${info.operator} (${info.role})`;
  const nav = document.getElementById('nav');
  nav.textContent = '';
  for (const [name, page] of Object.entries(PAGES)) {
    nav.append(el('a', { href: `#/${name}`, 'data-page': name }, page.title));
  }
  route();
}

window.addEventListener('hashchange', route);

document.getElementById('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  const error = document.getElementById('login-error');
  error.textContent = '';
  try {
    const info = await api('POST', '/api/session', { username: form.get('username'), password: form.get('password') });
    ev.target.reset();
    showShell(info);
  } catch (e) {
    error.textContent = e.message;
  }
});

document.getElementById('logout').addEventListener('click', async () => {
  try { await api('DELETE', '/api/session'); } catch (e) { flash(e.message, true); }
  showLogin();
});

api('GET', '/api/session').then(showShell, showLogin);
