// ringchat browser client, the contacts view: the Contacts tab (search, requests both ways,
// friends with their presence, blocked users), the bar over a conversation with someone who is
// not a friend, and notices. The model is contacts.js; render() in app.js calls these.
'use strict';

const SEARCH_DEBOUNCE_MS = 450;
const REQUEST_MESSAGE_BYTES_MAX = 256; // the server's contacts.friend_request_message_bytes_max
const PRESENCE_ORDER = { online: 0, busy: 1, away: 2, offline: 3 };

const cv = {
  open: null, // the friend whose actions are unfolded
  confirm: null, // {id, action: 'delete' | 'block'}: asked to confirm
  asking: null, // the user whose "add friend" form is open
  askInput: null, // that form's message field, kept across renders (its text and focus)
  askError: null,
  blockedOpen: false,
  searchTimer: null,
  drawn: -1, // the contacts.version on screen
};

// ---- the Contacts tab ----

function renderContacts() {
  const incoming = contacts.incoming.size;
  const badge = $('tabs').querySelector('[data-tab="contacts"] .badge');
  badge.hidden = !incoming;
  badge.textContent = String(incoming);
  badge.setAttribute('aria-label', `${incoming} friend request${incoming === 1 ? '' : 's'}`);
  if (cv.drawn === contacts.version) return;
  cv.drawn = contacts.version;
  const root = $('contacts-lists');
  // Drawing anew must not take the focus (or the caret) away from whoever is typing or tabbing.
  const focused = root.contains(document.activeElement) ? document.activeElement : null;
  const key = focused?.dataset.key;
  const caret = focused instanceof HTMLInputElement ? [focused.selectionStart, focused.selectionEnd] : null;
  const scroll = root.scrollTop;
  root.replaceChildren(...contactSections());
  root.scrollTop = scroll;
  const again = key && root.querySelector(`[data-key="${key}"]`);
  if (again && document.activeElement !== again) {
    again.focus();
    if (caret) try { again.setSelectionRange(...caret); } catch { /* not a text field */ }
  }
}

function contactSections() {
  const out = [];
  const s = contacts.search;
  if (s.query) out.push(searchSection(s));
  if (contacts.loadError) {
    out.push(el('p', { class: 'inline-error', role: 'alert' }, el('span', null, contacts.loadError),
      el('button', { type: 'button', class: 'small', onclick: () => loadContacts() }, 'Retry')));
  }
  if (!contacts.loaded) {
    if (contacts.loading) out.push(el('p', { class: 'note' }, 'Loading your contacts…'));
    return out;
  }
  const byName = (a, b) => displayName(a).localeCompare(displayName(b));
  if (contacts.incoming.size) {
    const ids = [...contacts.incoming.keys()].sort((a, b) => contacts.incoming.get(b).sentAtMs - contacts.incoming.get(a).sentAtMs);
    out.push(section('requests-in', 'Friend requests', ids, 'incoming'));
  }
  if (contacts.outgoing.size) out.push(section('requests-out', 'Sent requests', [...contacts.outgoing.keys()].sort(byName), 'outgoing'));
  const rank = (id) => PRESENCE_ORDER[people.presence.get(id)?.state] ?? 3;
  const friends = [...contacts.friends.keys()].sort((a, b) => rank(a) - rank(b) || byName(a, b));
  const friendSection = section('friends', 'Friends', friends, 'friends');
  if (!friends.length) {
    friendSection.append(el('div', { class: 'empty' },
      el('strong', null, 'No friends yet'),
      el('span', null, 'Find people above by their name, user id or e‑mail and send them a friend request.')));
  }
  out.push(friendSection);
  if (contacts.blocked.size) {
    const details = el('details', { class: 'section', id: 'blocked', open: cv.blockedOpen },
      el('summary', null, el('h3', null, 'Blocked', el('span', { class: 'count' }, String(contacts.blocked.size)))),
      el('ul', { class: 'people' }, ...[...contacts.blocked.keys()].sort(byName).map((id) => personRow(id, 'blocked'))));
    details.ontoggle = () => { cv.blockedOpen = details.open; };
    out.push(details);
  }
  return out;
}

function section(id, title, ids, where) {
  return el('section', { class: 'section', id, 'aria-label': title },
    el('h3', null, title, ids.length ? el('span', { class: 'count' }, String(ids.length)) : null),
    ids.length ? el('ul', { class: 'people' }, ...ids.map((u) => personRow(u, where))) : null);
}

function searchSection(s) {
  const sec = el('section', { class: 'section search-results', id: 'search-results', 'aria-label': 'Search results', 'aria-busy': s.busy ? 'true' : null },
    el('h3', null, `Results for “${s.query}”`,
      el('button', { type: 'button', class: 'ghost small clear', onclick: clearSearch }, 'Clear')));
  if (s.error) sec.append(el('p', { class: 'inline-error', role: 'alert' }, el('span', null, s.error)));
  if (s.users.length) sec.append(el('ul', { class: 'people' }, ...s.users.map((id) => personRow(id, 'search'))));
  if (s.busy) sec.append(el('p', { class: 'note' }, 'Searching…'));
  else if (s.hasMore) {
    sec.append(el('button', { type: 'button', class: 'ghost small more', onclick: () => searchUsers(s.query, true) }, 'More results'));
  } else if (s.done && !s.users.length && !s.error) {
    sec.append(el('div', { class: 'empty' }, el('strong', null, 'Nobody found'),
      el('span', null, 'Try the start of their username, their exact user id, or their e-mail address. People who chose not to be listed are found by id or e-mail only.')));
  }
  return sec;
}

// What a list says under a person's name.
function personSub(id, where) {
  const p = profileOf(id);
  const handle = handleOf(id);
  switch (where) {
    case 'friends': {
      const pres = people.presence.get(id);
      return pres ? el('span', { class: `person-sub presence-text ${pres.state}` }, presenceText(id)) : el('span', { class: 'person-sub' }, handle);
    }
    case 'incoming': return el('span', { class: 'person-sub' }, `${handle} · ${listTime(contacts.incoming.get(id)?.sentAtMs)}`);
    case 'outgoing': return el('span', { class: 'person-sub' }, `${handle} · asked ${listTime(contacts.outgoing.get(id)?.sentAtMs)}`);
    case 'search': {
      const label = p?.blocked ? 'Blocked' : { friends: 'Friend', request_sent: 'Request sent', request_received: 'Wants to be your friend' }[p?.friendState];
      return el('span', { class: 'person-sub' }, handle, label ? el('span', { class: 'relation' }, ` · ${label}`) : null);
    }
    default: return el('span', { class: 'person-sub' }, handle);
  }
}

function personRow(id, where) {
  const friend = where === 'friends';
  // Their "about" line where you decide about them (search) or look closer (a friend unfolded).
  const bio = (where === 'search' || (friend && cv.open === id)) && profileOf(id)?.bio;
  const body = el('span', { class: 'person-body' }, el('span', { class: 'person-name' }, displayName(id)), personSub(id, where),
    bio ? el('span', { class: 'person-bio' }, bio) : null);
  const main = friend
    ? el('button', { type: 'button', class: 'person-main', title: `Chat with ${displayName(id)}`, dataset: { key: `open-${id}` }, onclick: () => goToChat(id) }, avatar(id, true), body)
    : el('div', { class: 'person-main' }, avatar(id, true), body);
  const li = el('li', { class: 'person', dataset: { userId: id, state: profileOf(id)?.friendState || 'none' } },
    el('div', { class: 'person-row' }, main, el('span', { class: 'person-actions' }, ...personActions(id, where))));
  const request = (where === 'incoming' && contacts.incoming.get(id)) || (where === 'outgoing' && contacts.outgoing.get(id));
  if (request?.message) li.append(el('p', { class: 'request-message' }, request.message));
  if (cv.asking === id) li.append(askForm(id));
  if (friend && cv.open === id) li.append(friendMore(id));
  const error = contacts.errors.get(id);
  if (error) li.append(el('p', { class: 'person-error', role: 'alert' }, error));
  return li;
}

function actionButton(id, action, label, cls, onclick) {
  return el('button', {
    type: 'button', class: `small ${cls || ''}`, disabled: contacts.pending.has(id),
    dataset: { key: `${action}-${id}`, action }, onclick,
  }, label);
}

function personActions(id, where) {
  const p = profileOf(id);
  const b = (action, label, cls, onclick) => actionButton(id, action, label, cls, onclick);
  if (p?.blocked || where === 'blocked') return [b('unblock', 'Unblock', 'secondary', () => unblockUser(id))];
  if (where === 'friends') {
    const more = el('button', {
      type: 'button', class: 'icon-button more-button', 'aria-label': `More for ${displayName(id)}`,
      'aria-expanded': String(cv.open === id), dataset: { key: `more-${id}`, action: 'more' },
      onclick: () => { cv.open = cv.open === id ? null : id; cv.confirm = null; changed(); },
    });
    more.innerHTML = ICONS.more;
    return [more];
  }
  switch (p?.friendState) {
    case 'friends': return [b('message', 'Message', '', () => goToChat(id))];
    case 'request_received': return [b('accept', 'Accept', '', () => respondFriend(id, true)), b('reject', 'Reject', 'secondary', () => respondFriend(id, false))];
    case 'request_sent': return [b('cancel', 'Cancel request', 'secondary', () => cancelFriend(id))];
    default: return [
      b('add', 'Add friend', '', () => openAsk(id)),
      b('message', 'Message', 'ghost', () => goToChat(id)),
    ];
  }
}

// The short message sent with a friend request.
function askForm(id) {
  if (!cv.askInput) {
    cv.askInput = el('input', { class: 'ask-input', maxlength: String(REQUEST_MESSAGE_BYTES_MAX), dataset: { key: 'ask' }, placeholder: 'Say who you are (optional)' });
    cv.askInput.oninput = () => { if (cv.askError) { cv.askError = null; changed(); } };
  }
  cv.askInput.setAttribute('aria-label', `Message to ${displayName(id)} with your request`);
  return el('form', {
    class: 'ask', novalidate: true,
    onsubmit: (ev) => { ev.preventDefault(); sendAsk(id); },
  }, cv.askInput,
  el('span', { class: 'ask-actions' },
    el('button', { type: 'submit', class: 'small', disabled: contacts.pending.has(id), dataset: { key: `send-ask-${id}`, action: 'send-request' } }, 'Send request'),
    el('button', { type: 'button', class: 'small ghost', onclick: closeAsk }, 'Cancel')),
  cv.askError ? el('p', { class: 'person-error', role: 'alert' }, cv.askError) : null);
}

function openAsk(id) {
  cv.asking = id;
  cv.askError = null;
  if (cv.askInput) cv.askInput.value = '';
  changed();
  queueMicrotask(() => queueMicrotask(() => cv.askInput?.focus()));
}

function closeAsk() {
  cv.asking = null;
  cv.askError = null;
  changed();
}

async function sendAsk(id) {
  const text = cv.askInput.value.trim();
  if (utf8Bytes(text) > REQUEST_MESSAGE_BYTES_MAX) {
    cv.askError = `The message is too long: at most ${REQUEST_MESSAGE_BYTES_MAX} bytes.`;
    changed();
    return;
  }
  if (await askFriend(id, text)) closeAsk();
}

// A friend's unfolded actions, with a second step for the ones that cannot be undone quietly.
function friendMore(id) {
  const name = displayName(id);
  const b = (action, label, cls, onclick) => actionButton(id, action, label, cls, onclick);
  const ask = (action) => () => { cv.confirm = { id, action }; changed(); };
  const c = cv.confirm?.id === id ? cv.confirm.action : null;
  const done = () => { cv.open = null; cv.confirm = null; };
  if (c === 'delete') {
    return el('div', { class: 'confirm' }, el('span', null, `Remove ${name} from your friends? You can still write to each other.`),
      el('span', { class: 'confirm-actions' },
        b('confirm-delete', 'Remove', 'danger', () => deleteFriend(id).then(done)),
        b('keep', 'Keep', 'ghost', () => { cv.confirm = null; changed(); })));
  }
  if (c === 'block') return blockConfirm(id, () => blockUser(id).then(done));
  return el('div', { class: 'more-actions' },
    b('message', 'Message', '', () => goToChat(id)),
    b('delete', 'Remove friend', 'secondary', ask('delete')),
    b('block', 'Block', 'secondary danger-text', ask('block')));
}

function blockConfirm(id, run) {
  return el('div', { class: 'confirm' },
    el('span', null, `Block ${displayName(id)}? Neither of you can write to the other or send friend requests, and they stop seeing when you are online.`),
    el('span', { class: 'confirm-actions' },
      actionButton(id, 'confirm-block', 'Block', 'danger', run),
      actionButton(id, 'keep', 'Cancel', 'ghost', () => { cv.confirm = null; changed(); })));
}

function clearSearch() {
  clearTimeout(cv.searchTimer);
  $('search-input').value = '';
  searchUsers('');
  $('search-input').focus();
}

// ---- the bar over a conversation ----

// Over a conversation with someone who is not a friend: what you can do about them. Over one
// you blocked: that you did, instead of the composer.
function renderContactBar(conv) {
  const bar = $('contact-bar');
  const peer = conv?.peer;
  const p = peer && profileOf(peer);
  const items = [];
  if (p && contacts.loaded) {
    const name = displayName(peer);
    const b = (action, label, cls, onclick) => actionButton(peer, action, label, cls, onclick);
    const theyWrote = [...conv.messages.values()].some((m) => m.fromUserId === peer);
    if (cv.confirm?.id === peer && cv.confirm.action === 'block' && !p.blocked) {
      items.push(blockConfirm(peer, () => blockUser(peer).then(() => { cv.confirm = null; })));
    } else if (p.blocked) {
      items.push(el('span', { class: 'bar-text' }, `You blocked ${name}. Neither of you can write to the other.`),
        b('unblock', 'Unblock', 'secondary', () => unblockUser(peer)));
    } else if (p.friendState === 'request_received') {
      const message = contacts.incoming.get(peer)?.message;
      items.push(el('span', { class: 'bar-text' }, `${name} wants to be your friend.`, message ? el('q', null, message) : null),
        el('span', { class: 'bar-actions' }, b('accept', 'Accept', '', () => respondFriend(peer, true)), b('reject', 'Reject', 'secondary', () => respondFriend(peer, false))));
    } else if (p.friendState === 'none' && theyWrote) {
      items.push(el('span', { class: 'bar-text' }, `${name} is not in your contacts.`),
        el('span', { class: 'bar-actions' },
          b('add', 'Add friend', '', () => askFriend(peer, '')),
          b('block', 'Block', 'secondary danger-text', () => { cv.confirm = { id: peer, action: 'block' }; changed(); })));
    }
  }
  const error = peer && contacts.errors.get(peer);
  if (error) items.push(el('p', { class: 'person-error', role: 'alert' }, error));
  bar.hidden = !items.length;
  bar.replaceChildren(...items);
}

// ---- notices ----

function renderToasts() {
  $('toasts').replaceChildren(...contacts.toasts.map((t) => el('div', { class: 'toast', role: 'status' },
    t.peer ? avatar(t.peer) : null,
    el('span', { class: 'toast-text' }, t.text),
    el('button', { type: 'button', class: 'small ghost', onclick: () => { dismissToast(t.id); showContacts(); } }, 'View'))));
}

// The Contacts tab, brought into view (on a phone, that means leaving an open conversation).
function showContacts() {
  showTab('contacts');
  if (state.current && $('sidebar').offsetParent === null) goBack();
}

// ---- input ----

$('search').onsubmit = (ev) => {
  ev.preventDefault();
  clearTimeout(cv.searchTimer);
  searchUsers($('search-input').value);
};
// Search as you type, once the typing pauses (searches are rate-limited per minute).
$('search-input').oninput = () => {
  clearTimeout(cv.searchTimer);
  const q = $('search-input').value.trim();
  if (!q) return searchUsers('');
  cv.searchTimer = setTimeout(() => { if (q !== contacts.search.query) searchUsers(q); }, SEARCH_DEBOUNCE_MS);
};
$('search-input').onkeydown = (ev) => { if (ev.key === 'Escape' && $('search-input').value) { ev.preventDefault(); clearSearch(); } };
