// Shared by every page: the API client (session cookie + CSRF token), paging, small DOM helpers.

let csrf = null;
let role = null;

export function setSession(info) {
  csrf = info ? info.csrf_token : null;
  role = info ? info.role : null;
}

export function isAdmin() { return role === 'admin'; }

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error.message : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error ? body.error.code : 'http_' + status;
  }
}

// One API call; throws ApiError with the server's stable code on failure.
export async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['X-CSRF-Token'] = csrf;
  const res = await fetch(path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 204) return null;
  const text = await res.text();
  const json = text ? JSON.parse(text) : null;
  if (!res.ok) throw new ApiError(res.status, json);
  return json;
}

// Builds an element: el('td', {class: 'x'}, 'text', child…). Text is always text, never HTML.
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

export function flash(text, bad = false) {
  const f = document.getElementById('flash');
  f.textContent = text;
  f.className = bad ? 'flash bad' : 'flash';
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { f.textContent = ''; }, 5000);
}

export function time(ms) {
  return ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) : '';
}

// A paged table: `load(cursor)` returns {items, next_cursor}; `columns` are [title, item => cell].
export function pagedTable(columns, load) {
  const tbody = el('tbody');
  const more = el('button', { class: 'secondary', hidden: true }, 'More');
  let cursor = null;
  async function next() {
    more.hidden = true;
    const page = await load(cursor);
    for (const item of page.items) {
      tbody.append(el('tr', {}, columns.map(([, cell]) => el('td', {}, cell(item)))));
    }
    cursor = page.next_cursor || null;
    more.hidden = !cursor;
  }
  more.addEventListener('click', () => next().catch(e => flash(e.message, true)));
  const table = el('table', {}, el('thead', {}, el('tr', {}, columns.map(([t]) => el('th', {}, t)))), tbody);
  return { node: el('div', {}, table, more), reload: () => { tbody.textContent = ''; cursor = null; return next(); } };
}
