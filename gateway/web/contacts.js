// ringchat browser client, the contacts model: friends, requests both ways, blocks, search,
// my profile and privacy, my presence; live updates from `friendEvent` and `presence` pushes.
// Rendering is in contacts-view.js; every change calls changed().
'use strict';

const LIST_PAGE = 200; // the server's contacts.list_page_max
const SEARCH_PAGE = 20;
const PRESENCE_KEY = 'ringchat.presence';
const PRESENCE_CHOICES = ['online', 'away', 'busy', 'invisible'];

const contacts = {
  loaded: false,
  loading: false,
  loadError: null,
  friends: new Map(), // userId -> {sinceMs}
  incoming: new Map(), // userId -> {message, sentAtMs}
  outgoing: new Map(), // userId -> {message, sentAtMs}
  blocked: new Map(), // userId -> {sinceMs}
  // What the search box found: {query, users: [userId], hasMore, nextAfter, busy, error}.
  search: { query: '', users: [], hasMore: false, nextAfter: '', busy: false, error: null, done: false },
  pending: new Set(), // userIds with an action on its way
  errors: new Map(), // userId -> what went wrong with the last action on them
  presence: PRESENCE_CHOICES.find((p) => p === localStorage.getItem(PRESENCE_KEY)) || 'online', // this device's choice
  presenceError: null,
  toasts: [], // [{id, text, peer}] notifications shown for a few seconds
  version: 0, // bumped by every change the contacts view shows
};

// The contacts view is drawn again only after something it shows changed (a busy chat must not
// redraw a long friend list for each message): whatever changes it calls changed().
function changed() {
  contacts.version++;
  render();
}

function resetContacts() {
  contacts.version++;
  for (const m of [contacts.friends, contacts.incoming, contacts.outgoing, contacts.blocked, contacts.errors]) m.clear();
  contacts.loaded = false;
  contacts.search = { query: '', users: [], hasMore: false, nextAfter: '', busy: false, error: null, done: false };
  people.presence.clear();
}

// Every page of a paged contacts list: `body(after)` is the request, `items(reply)` the page.
async function allPages(body, items) {
  const all = [];
  let after = '0';
  for (;;) {
    const reply = await request(body(after));
    const page = items(reply);
    all.push(...page.list);
    if (!page.hasMore || !page.list.length) return all;
    after = page.lastId(page.list[page.list.length - 1]);
  }
}

// After every login: the lists (friends with their presence), and my own profile.
async function loadContacts() {
  if (contacts.loading) {
    contacts.loadAgain = true; // what changed meanwhile may not be in the answer on its way
    return;
  }
  contacts.loading = true;
  contacts.loadAgain = false;
  contacts.loadError = null;
  changed();
  try {
    const idOf = (x) => x.profile.userId;
    const [friends, incoming, outgoing, blocked, mine] = await Promise.all([
      allPages((after) => ({ listFriends: { afterUserId: after, limit: LIST_PAGE } }),
        (r) => ({ list: r.friendList.friends || [], hasMore: r.friendList.hasMore, lastId: idOf })),
      allPages((after) => ({ listFriendRequests: { direction: 'REQUEST_DIRECTION_INCOMING', afterUserId: after, limit: LIST_PAGE } }),
        (r) => ({ list: r.friendRequestList.requests || [], hasMore: r.friendRequestList.hasMore, lastId: idOf })),
      allPages((after) => ({ listFriendRequests: { direction: 'REQUEST_DIRECTION_OUTGOING', afterUserId: after, limit: LIST_PAGE } }),
        (r) => ({ list: r.friendRequestList.requests || [], hasMore: r.friendRequestList.hasMore, lastId: idOf })),
      allPages((after) => ({ listBlocks: { afterUserId: after, limit: LIST_PAGE } }),
        (r) => ({ list: r.blockList.users || [], hasMore: r.blockList.hasMore, lastId: idOf })),
      request({ getProfiles: { userIds: [state.session.userId] } }),
    ]);
    for (const m of [contacts.friends, contacts.incoming, contacts.outgoing, contacts.blocked]) m.clear();
    for (const f of friends) {
      const p = rememberProfile(f.profile);
      contacts.friends.set(p.userId, { sinceMs: num(f.sinceMs) });
      rememberPresence(p.userId, f.presence || {}); // no presence: offline, last seen unknown
    }
    for (const [list, map] of [[incoming, contacts.incoming], [outgoing, contacts.outgoing]]) {
      for (const r of list) map.set(rememberProfile(r.profile).userId, { message: r.message || '', sentAtMs: num(r.sentAtMs) });
    }
    for (const b of blocked) contacts.blocked.set(rememberProfile(b.profile).userId, { sinceMs: num(b.sinceMs) });
    for (const p of mine.profileList.profiles || []) rememberProfile(p);
    contacts.loaded = true;
  } catch (e) {
    if (e.code !== 'DISCONNECTED') contacts.loadError = 'Could not load your contacts.';
  } finally {
    contacts.loading = false;
    changed();
  }
  if (contacts.loadAgain && state.loggedIn) loadContacts();
}

const myProfile = () => profileOf(state.session?.userId);

// ---- pushes ----

function onFriendEvent(ev) {
  const kind = enumName(ev.kind, 'FRIEND_EVENT_KIND_');
  const id = String(ev.userId);
  const friendState = enumName(ev.state, 'FRIEND_STATE_') || 'none';
  if (ev.profile) rememberProfile({ ...ev.profile, friendState: ev.state });
  else setRelation(id, { friendState });
  contacts.incoming.delete(id);
  contacts.outgoing.delete(id);
  if (friendState !== 'friends') {
    contacts.friends.delete(id);
    people.presence.delete(id);
  }
  const at = num(ev.timeMs) || Date.now();
  if (friendState === 'request_received') contacts.incoming.set(id, { message: ev.message || '', sentAtMs: at });
  if (friendState === 'request_sent') contacts.outgoing.set(id, { message: ev.message || '', sentAtMs: at });
  if (friendState === 'friends' && !contacts.friends.has(id)) {
    contacts.friends.set(id, { sinceMs: at });
    reloadFriendPresence();
  }
  if (kind === 'blocked') {
    contacts.blocked.set(id, { sinceMs: at });
    setRelation(id, { blocked: true });
  } else if (kind === 'unblocked') {
    contacts.blocked.delete(id);
    setRelation(id, { blocked: false });
  }
  contacts.errors.delete(id);
  // Tell the user about what someone else did (not about what their other devices did).
  const name = displayName(id);
  if (kind === 'request' && friendState === 'request_received') toast(`${name} wants to be your friend.`, id);
  else if (kind === 'accepted' && !contacts.pending.has(id)) toast(`${name} and you are now friends.`, id);
  changed();
}

function onPresence(p) {
  rememberPresence(p.userId, p);
  changed();
}

// A short notice (at most 3, each for 6 s); its View button opens the Contacts tab.
function toast(text, peer) {
  const t = { id: crypto.randomUUID(), text, peer };
  contacts.toasts.push(t);
  if (contacts.toasts.length > 3) contacts.toasts.shift();
  setTimeout(() => dismissToast(t.id), 6000);
  changed();
}

function dismissToast(id) {
  contacts.toasts = contacts.toasts.filter((t) => t.id !== id);
  changed();
}

// ---- actions on a user ----

// Runs one action on `userId`: marks it pending, shows its error next to that user, and applies
// the reply with `apply`.
async function act(userId, body, apply, what) {
  const id = String(userId);
  if (contacts.pending.has(id)) return false;
  contacts.pending.add(id);
  contacts.errors.delete(id);
  changed();
  try {
    const reply = await request(body);
    apply(reply);
    return true;
  } catch (e) {
    contacts.errors.set(id, contactErrorText(e, id, what));
    // Our picture of this user is stale (e.g. they cancelled meanwhile): ask again.
    if (e.code === 'NOT_FOUND' || e.code === 'NOT_ALLOWED') wantProfiles([id], true);
    return false;
  } finally {
    contacts.pending.delete(id);
    changed();
  }
}

// The friend state a FriendOk reply says, applied to the lists.
function applyFriendState(id, stateName, message) {
  const friendState = enumName(stateName, 'FRIEND_STATE_') || 'none';
  setRelation(id, { friendState });
  contacts.incoming.delete(id);
  contacts.outgoing.delete(id);
  if (friendState === 'request_sent') contacts.outgoing.set(id, { message: message || '', sentAtMs: Date.now() });
  if (friendState === 'friends') {
    if (!contacts.friends.has(id)) contacts.friends.set(id, { sinceMs: Date.now() });
    reloadFriendPresence();
  } else {
    contacts.friends.delete(id);
    people.presence.delete(id);
  }
}

// A new friend's presence comes with the friend list (pushes follow only changes).
let presenceReload = null;
function reloadFriendPresence() {
  clearTimeout(presenceReload);
  presenceReload = setTimeout(() => { if (state.loggedIn) loadContacts(); }, 300);
}

const askFriend = (id, message) => act(id, { friendRequest: { userId: id, message } },
  (r) => applyFriendState(id, r.friendOk.state, message), 'request');
const respondFriend = (id, accept) => act(id, { friendRespond: { userId: id, accept } },
  (r) => applyFriendState(id, r.friendOk.state), 'respond');
const cancelFriend = (id) => act(id, { friendCancel: { userId: id } },
  (r) => applyFriendState(id, r.friendOk.state), 'cancel');
const deleteFriend = (id) => act(id, { friendDelete: { userId: id } },
  (r) => applyFriendState(id, r.friendOk.state), 'delete');

const blockUser = (id) => act(id, { block: { userId: id } }, () => {
  // A block ends the friendship and any request between us.
  applyFriendState(id, 'FRIEND_STATE_NONE');
  contacts.blocked.set(id, { sinceMs: Date.now() });
  setRelation(id, { blocked: true });
}, 'block');

const unblockUser = (id) => act(id, { unblock: { userId: id } }, () => {
  contacts.blocked.delete(id);
  setRelation(id, { blocked: false });
}, 'unblock');

// ---- search ----

// A query is an id (digits), an e-mail address (has @) or the start of a username.
function searchQuery(text) {
  const q = text.trim();
  if (/^[0-9]{1,20}$/.test(q)) return { userId: q };
  if (q.includes('@') && q.indexOf('@') > 0) return { email: q };
  return { usernamePrefix: q.replace(/^@/, '') };
}

async function searchUsers(text, more) {
  const s = contacts.search;
  const q = text.trim();
  if (!more) contacts.search = { query: q, users: [], hasMore: false, nextAfter: '', busy: false, error: null, done: false };
  const cur = contacts.search;
  if (!q) {
    changed();
    return;
  }
  cur.busy = true;
  changed();
  try {
    const r = await request({ searchUsers: { ...searchQuery(q), after: more ? s.nextAfter : '', limit: SEARCH_PAGE } });
    if (contacts.search !== cur) return; // a newer search replaced this one
    const list = r.userList;
    for (const p of list.users || []) {
      const id = rememberProfile(p).userId;
      if (id !== state.session.userId && !cur.users.includes(id)) cur.users.push(id);
    }
    cur.hasMore = !!list.hasMore;
    cur.nextAfter = list.nextAfter || '';
    cur.done = true;
  } catch (e) {
    if (contacts.search !== cur) return;
    cur.error = e.code === 'RATE_LIMITED'
      ? `You searched a lot in a short time. Try again in ${waitText(e.retryAfterMs)}.`
      : e.code === 'INVALID_ARGUMENT' ? `Search for a name of at most 32 characters, a user id or an e-mail address.`
        : contactErrorText(e, '', 'search');
  } finally {
    cur.busy = false;
    changed();
  }
}

// ---- my profile, privacy, presence ----

// `fields`: the changed ones of {nickname, avatarUrl, bio, searchable, hideLastSeen}; `dmPolicy`:
// 'everyone' | 'friends' or undefined when unchanged. Throws an Error with the text to show.
async function saveProfile(fields, dmPolicy) {
  try {
    if (Object.keys(fields).length) {
      const r = await request({ updateProfile: fields });
      rememberProfile(r.profile);
    }
    if (dmPolicy) {
      const r = await request({ setPrivacy: { dmPolicy: `DM_POLICY_${dmPolicy.toUpperCase()}` } });
      setRelation(state.session.userId, { dmPolicy: enumName(r.privacy.dmPolicy, 'DM_POLICY_') });
    }
  } catch (e) {
    throw new Error(e.code === 'INVALID_ARGUMENT' ? sentence(e.message) : contactErrorText(e, '', 'profile'));
  } finally {
    changed();
  }
}

async function setMyPresence(choice) {
  if (!PRESENCE_CHOICES.includes(choice)) return;
  const before = contacts.presence;
  contacts.presence = choice;
  contacts.presenceError = null;
  localStorage.setItem(PRESENCE_KEY, choice);
  changed();
  try {
    await request({ setPresence: { state: `PRESENCE_STATE_${choice.toUpperCase()}` } });
  } catch (e) {
    contacts.presence = before;
    localStorage.setItem(PRESENCE_KEY, before);
    contacts.presenceError = contactErrorText(e, '', 'presence');
  }
  changed();
}

// ---- words ----

const sentence = (s) => { const t = String(s || '').trim(); return t ? `${t[0].toUpperCase()}${t.slice(1)}${/[.!?]$/.test(t) ? '' : '.'}` : ''; };

function waitText(ms) {
  const s = seconds(ms);
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

// What went wrong with an action on `userId`, in words that never tell a blocked user more
// than "they do not take this from you".
function contactErrorText(e, userId, what) {
  const name = userId ? displayName(userId) : 'This user';
  const m = String(e.message || '');
  switch (e.code) {
    case 'NOT_ALLOWED':
      if (m.startsWith('you blocked')) return `You blocked ${name}. Unblock them first.`;
      return what === 'request' ? `${name} does not take friend requests from you.` : `${name} does not take messages from you.`;
    case 'TOO_MANY_FRIENDS':
      return m.startsWith('your') ? 'Your friend list is full. Remove someone first.' : `${name}’s friend list is full.`;
    case 'TOO_MANY_FRIEND_REQUESTS':
      return m.startsWith('you') ? 'Too many of your requests are waiting for an answer. Cancel one first.' : `${name} has too many requests waiting.`;
    case 'TOO_MANY_BLOCKS': return 'You have blocked as many people as you can. Unblock someone first.';
    case 'RATE_LIMITED':
      return what === 'request' && e.retryAfterMs > 3600000
        ? 'You sent as many friend requests as you can today. Try again tomorrow.'
        : `Too many tries. Try again in ${waitText(e.retryAfterMs)}.`;
    case 'USER_NOT_FOUND': return 'There is no such user.';
    case 'NOT_FOUND':
      return what === 'delete' ? `${name} is no longer your friend.` : 'That request is no longer there.';
    case 'INVALID_ARGUMENT': return sentence(m);
    case 'DISCONNECTED': return 'Not connected. Try again once the connection is back.';
    case 'TIMEOUT': return 'The server did not answer. Try again.';
    case 'UNAVAILABLE': return 'The server is busy. Try again in a moment.';
    default: return sentence(m) || 'Something went wrong.';
  }
}
