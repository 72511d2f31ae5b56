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
// function to call when the page is left, to stop timers and streams; called at once when the
// page was left before its render finished, so a render must not await after opening one).
const PAGES = { overview, activity, audit, keys, logs, users, groups, notifications, config };
const DEFAULT_PAGE = 'overview';

let leave = null;
// Bumped by every page change (and by leaving the shell): a render that finishes after a later
// one began is stale, and is stopped and removed instead of taking over the page.
let shown = 0;

function leavePage() {
  shown++;
  if (leave) { leave(); leave = null; }
}

async function show(name) {
  const page = PAGES[name] || PAGES[DEFAULT_PAGE];
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === name);
  leavePage();
  const mine = shown;
  const main = document.getElementById('page');
  main.textContent = '';
  // A container of its own: a stale render's late nodes go with it, not into the next page.
  const box = el('div');
  main.append(box);
  try {
    const stop = (await page.render(box)) || null;
    if (mine !== shown) {
      if (stop) stop();
      box.remove();
      return;
    }
    leave = stop;
  } catch (e) {
    if (mine !== shown) return box.remove();
    if (e instanceof ApiError && e.status === 401) return showLogin();
    box.append(el('p', { class: 'error' }, e.message));
  }
}

function route() { show(location.hash.replace(/^#\//, '') || DEFAULT_PAGE); }

// Leaving the shell (logout, or a 401) leaves the page too: its timers and streams stop (the
// Logs page's live tail holds one of the server's log.streams_max places while open).
function showLogin() {
  leavePage();
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
