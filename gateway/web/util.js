// ringchat browser client, shared helpers: DOM building, encoding, ids and times.
// Loaded first; every other script uses these globals. No dependencies, no build step.
'use strict';

const $ = (id) => document.getElementById(id);
const num = (v) => Number(v || 0);

// el('li', {class: 'x', dataset: {seq: 1}, onclick}, child, 'text', ...): children may be nodes,
// strings or null (skipped).
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node[k] = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

// Makes `parent`'s children exactly `nodes`, moving only what changed: nodes already there stay
// put, so one new row in a long list costs one insertion, not the whole list again.
function setChildren(parent, nodes) {
  const keep = new Set(nodes);
  for (const child of [...parent.childNodes]) if (!keep.has(child)) child.remove();
  let at = parent.firstChild;
  for (const n of nodes) {
    if (n === at) at = at.nextSibling;
    else parent.insertBefore(n, at);
  }
}

// Small inline icons (no icon font or emoji font is assumed on the machine).
const ICONS = {
  person: '<svg viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="9" r="4" fill="currentColor"/><path d="M4.5 20c.8-4 4-6 7.5-6s6.7 2 7.5 6" fill="currentColor"/></svg>',
  clock: '<svg viewBox="0 0 16 16" aria-hidden="true"><circle cx="8" cy="8" r="6.2" fill="none" stroke="currentColor" stroke-width="1.6"/><path d="M8 4.5V8l2.4 1.6" fill="none" stroke="currentColor" stroke-width="1.6" stroke-linecap="round"/></svg>',
  alert: '<svg viewBox="0 0 16 16" aria-hidden="true"><circle cx="8" cy="8" r="7" fill="currentColor"/><path d="M8 4v5M8 11.2v.6" stroke="#fff" stroke-width="1.8" stroke-linecap="round"/></svg>',
  people: '<svg viewBox="0 0 16 16" aria-hidden="true"><circle cx="6" cy="5.5" r="2.5" fill="currentColor"/><path d="M1.5 13c.4-2.6 2.2-4 4.5-4s4.1 1.4 4.5 4z" fill="currentColor"/><circle cx="11.2" cy="6" r="2" fill="currentColor" opacity=".7"/><path d="M11 13h3.6c-.3-2.1-1.6-3.4-3.4-3.5" fill="currentColor" opacity=".7"/></svg>',
  more: '<svg viewBox="0 0 24 24" aria-hidden="true"><circle cx="5" cy="12" r="2" fill="currentColor"/><circle cx="12" cy="12" r="2" fill="currentColor"/><circle cx="19" cy="12" r="2" fill="currentColor"/></svg>',
  clip: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M20 11.5l-7.8 7.8a5 5 0 0 1-7.1-7.1l8.5-8.5a3.3 3.3 0 0 1 4.7 4.7l-8.5 8.5a1.7 1.7 0 0 1-2.4-2.4l7.8-7.8" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"/></svg>',
  bellOff: '<svg viewBox="0 0 16 16" aria-hidden="true"><path d="M4 11.5h8.5L11.3 10V7a3.3 3.3 0 0 0-6.6 0v3L3.5 11.5zM6.7 13.3a1.4 1.4 0 0 0 2.6 0" fill="none" stroke="currentColor" stroke-width="1.4" stroke-linejoin="round"/><path d="M2.5 2.5l11 11" stroke="currentColor" stroke-width="1.5" stroke-linecap="round"/></svg>',
};
function icon(name) {
  const span = el('span', { class: `icon icon-${name}` });
  span.innerHTML = ICONS[name];
  return span;
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const toB64 = (text) => {
  let bin = '';
  for (const b of enc.encode(text)) bin += String.fromCharCode(b);
  return btoa(bin);
};
const fromB64 = (b64) => dec.decode(Uint8Array.from(atob(b64 || ''), (c) => c.charCodeAt(0)));
const utf8Bytes = (text) => enc.encode(text).length;

// Both users compute the same id: (min << 32) | max.
function conversationId(a, b) {
  const [x, y] = [BigInt(a), BigInt(b)].sort((p, q) => (p < q ? -1 : 1));
  return ((x << 32n) | y).toString();
}

// A conversation id's kind is in its top two bits: 00 direct, 01 group, 10 system.
const isGroupId = (id) => /^[0-9]{1,20}$/.test(String(id)) && BigInt(id) >> 62n === 1n;
const isSystemId = (id) => /^[0-9]{1,20}$/.test(String(id)) && BigInt(id) >> 62n === 2n;

// ---- times ----
const DAY_MS = 86400000;
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const weekdayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long' });
const dateFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
const shortDateFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });

const startOfDay = (ms) => { const d = new Date(ms); d.setHours(0, 0, 0, 0); return d.getTime(); };
// Whole local days between the day of `ms` and today (0 = today), DST-safe.
const daysAgo = (ms) => Math.round((startOfDay(Date.now()) - startOfDay(ms)) / DAY_MS);
const formatTime = (ms) => timeFmt.format(ms);
const formatFull = (ms) => fullFmt.format(ms);

// The label of a day separator: Today, Yesterday, a weekday within the week, else the date.
function dayLabel(ms) {
  const ago = daysAgo(ms);
  if (ago === 0) return 'Today';
  if (ago === 1) return 'Yesterday';
  if (ago > 1 && ago < 7) return weekdayFmt.format(ms);
  return dateFmt.format(ms);
}

// A conversation list's time: the time today, then Yesterday, then a short date.
function listTime(ms) {
  if (!ms) return '';
  const ago = daysAgo(ms);
  if (ago === 0) return formatTime(ms);
  if (ago === 1) return 'Yesterday';
  if (ago > 1 && ago < 7) return weekdayFmt.format(ms).slice(0, 3);
  return new Date(ms).getFullYear() === new Date().getFullYear() ? shortDateFmt.format(ms) : dateFmt.format(ms);
}

const seconds = (ms) => Math.max(1, Math.ceil(ms / 1000));
