// ringchat browser client, the chat model: session, conversations, messages, the outbox of
// unsent messages (kept in localStorage until acked), receipts and typing. Rendering is in
// app.js; this file calls render() after every change.
'use strict';

const SESSION_KEY = 'ringchat.session';
// This browser's device id, kept across logouts: logging in again is the same device, not one
// more that counts against login.device_tokens_max.
const DEVICE_KEY = 'ringchat.device';
// {token, deviceId}: a logout the server has not taken yet (LogoutOk), sent again at the next
// connection.
const LOGOUT_KEY = 'ringchat.logout';
// Answers to a pending logout's token Login after which there is nothing left to end: the token
// no longer logs in anywhere (docs/PROTOCOL.md: unknown or revoked, expired and deleted, or the
// account disabled, which deletes its tokens), or the stored request can never pass
// (INVALID_ARGUMENT). Any other answer (the server full, busy or failing) leaves the token
// working on the server: the logout is kept and tried again.
const LOGOUT_SETTLED = new Set(['INVALID_CREDENTIALS', 'TOKEN_EXPIRED', 'ACCOUNT_DISABLED', 'INVALID_ARGUMENT']);
// RATE_LIMITED answers in a row to a pending logout's token Login after which it is given up
// and the login form shown. A token Login is told RATE_LIMITED past the unknown tokens' count of
// its address (docs/PROTOCOL.md), which never holds back a known token: the token no longer logs
// in, and other clients behind the address (a NAT) may keep the count spent, so retrying would
// hold the page on "signing out" for ever. A few, not one: the connection's own request rate is
// RATE_LIMITED too. The token is gone from this browser either way.
const LOGOUT_RATE_LIMITED_MAX = 3;
const outboxKey = (userId) => `ringchat.outbox.${userId}`;
const HISTORY_PAGE = 30;
// Messages of one conversation held (and drawn); the oldest go past it, and "Load older" pages
// them back in from the server.
const MESSAGES_KEPT_MAX = 500;
// The same while the reader is scrolled up in the open conversation, paging back: nothing
// older is paged in past it.
const MESSAGES_READING_MAX = 5000;
const TYPING_SHOW_MS = 3000;
const TYPING_SEND_MS = 2000;
const SEND_RETRIES_MAX = 5; // automatic resends after RATE_LIMITED / UNAVAILABLE, then it fails

function loadJSON(key, fallback) {
  try {
    return JSON.parse(localStorage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

const state = {
  session: loadJSON(SESSION_KEY, null), // {userId, token, username, deviceId}
  loggedIn: false,
  convs: new Map(), // conversationId -> conversation
  current: null, // the open conversation's id
  // clientMsgId -> {clientMsgId, conversationId, toUserId ('' in groups), mentions, text,
  // createdMs, tries, inflight, error: null | {code, text}}: sends without an ack, in order.
  outbox: new Map(),
  lastTypingSent: 0,
  skewMs: 0, // server clock minus ours, for the time shown on a message not yet acked
  loadError: null, // the conversation list could not be loaded: {text}
  listBusy: false, // the conversation list is catching up after a login
};

// ---- session ----

net.onReady = async () => {
  if (!state.session && !(await finishLogout())) return;
  if (!state.session) {
    setConnection('online');
    showLogin('');
    return;
  }
  try {
    await login({ token: state.session.token });
  } catch (e) {
    if (e.code === 'DISCONNECTED') return; // the reconnect tries again
    const username = state.session.username;
    if (e.code === 'TOKEN_EXPIRED' || e.code === 'INVALID_CREDENTIALS') forgetSession();
    setConnection('online');
    showLogin(loginErrorText(e), username);
  }
};

net.onDown = () => {
  state.loggedIn = false;
  for (const p of state.outbox.values()) p.inflight = false;
  render();
};

net.onFrame = (frame) => {
  if (!state.loggedIn) return; // a token logging in only to log out (finishLogout)
  if (frame.push) onMessages([frame.push.message], 'push');
  else if (frame.receipt) onReceipt(frame.receipt);
  else if (frame.typing) onTyping(frame.typing);
  else if (frame.friendEvent) onFriendEvent(frame.friendEvent);
  else if (frame.presence) onPresence(frame.presence);
  else if (frame.syncNeeded) onSyncNeeded(frame.syncNeeded);
};

// Pushes for this session were lost between the servers (cluster mode): catch up as after a
// login, at a random moment within the spread the server asks for; hints meanwhile fold in.
let syncNeededTimer = null;
function onSyncNeeded(hint) {
  if (syncNeededTimer) return;
  syncNeededTimer = setTimeout(() => {
    syncNeededTimer = null;
    if (state.loggedIn) catchUp();
  }, Math.random() * (hint.spreadMs || 0));
}

async function login(credential) {
  const deviceId = state.session?.deviceId || localStorage.getItem(DEVICE_KEY) || `web-${crypto.randomUUID()}`;
  const account = credential.token ? {} : { username: credential.username };
  // Shown as this device last chose from the first moment (invisible never flashes online).
  const presence = `PRESENCE_STATE_${contacts.presence.toUpperCase()}`;
  const reply = await request({ login: { ...account, ...credential, deviceId, platform: 'PLATFORM_WEB', presence } });
  const ok = reply.loginOk;
  if (state.session && state.session.userId !== ok.userId) resetChats();
  state.session = {
    userId: ok.userId,
    token: ok.token,
    username: credential.username || state.session?.username || '',
    deviceId,
  };
  state.skewMs = num(ok.serverTimeMs) ? num(ok.serverTimeMs) - Date.now() : 0;
  localStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
  localStorage.setItem(DEVICE_KEY, deviceId);
  state.loggedIn = true;
  loadOutbox();
  loadUploads();
  setConnection('online');
  showChat();
  // Groups after the conversation list: it has their read cursors (see loadGroups). The list is
  // busy (aria-busy) until both are in.
  state.listBusy = true;
  const listed = catchUp().then(loadGroups).finally(() => { state.listBusy = false; render(); });
  await Promise.all([listed, loadContacts()]);
}

function loginErrorText(e) {
  switch (e.code) {
    case 'INVALID_CREDENTIALS': return 'Wrong username or password.';
    case 'TOKEN_EXPIRED': return 'Your session has expired. Please log in again.';
    case 'ACCOUNT_DISABLED': return 'This account is disabled. Contact the server\'s operators.';
    case 'REGISTRATION_CLOSED': return 'Registration is closed on this server. Ask its operators for an account.';
    case 'INVITE_INVALID': return 'This server needs a valid invite code to register.';
    case 'USERNAME_TAKEN': return 'That username is taken. Pick another one, or log in.';
    case 'RATE_LIMITED': return `Too many attempts. Try again in ${seconds(e.retryAfterMs)} s.`;
    case 'TOO_MANY_DEVICES': return 'This account is signed in on too many devices. Sign out on one of them first.';
    case 'DISCONNECTED': return 'Not connected to the server. Wait a moment and try again.';
    case 'TIMEOUT': return 'The server did not answer. Try again.';
    case 'UNAVAILABLE': return 'The server is busy. Try again in a moment.';
    default: return e.message.charAt(0).toUpperCase() + e.message.slice(1);
  }
}

function forgetSession() {
  state.session = null;
  localStorage.removeItem(SESSION_KEY);
}

function resetChats() {
  resetContacts();
  resetGroups();
  resetUploads();
  state.convs.clear();
  state.outbox.clear();
  state.current = null;
}

// Ends the session on the server too (the token stops working there), then here. Not
// connected, or the server did not take the Logout (busy): the token is kept aside and the
// Logout sent at the next connection (finishLogout).
async function logout() {
  const unsent = state.outbox.size;
  if (unsent && !confirm(`${unsent} message${unsent > 1 ? 's were' : ' was'} not sent and will be lost. Log out anyway?`)) return;
  const session = state.session;
  if (session) {
    localStorage.removeItem(outboxKey(session.userId));
    localStorage.removeItem(uploadsKey(session.userId));
    localStorage.setItem(LOGOUT_KEY, JSON.stringify({ token: session.token, deviceId: session.deviceId }));
    forgetSession();
    if (state.loggedIn) await sendLogout();
  }
  location.hash = '';
  location.reload();
}

// Null once the server answered LogoutOk (the token is ended there and the pending logout
// goes); otherwise the error, and the logout stays pending for a later connection (finishLogout).
async function sendLogout() {
  try {
    await request({ logout: {} });
  } catch (e) {
    return e;
  }
  localStorage.removeItem(LOGOUT_KEY);
  return null;
}

let logoutPutOff = 0; // pending-logout attempts the server put off in a row (the backoff's step)
let logoutRateLimited = 0; // of them, token Logins answered RATE_LIMITED in a row

// A logout left for this connection: the token logs in once more to be logged out. False when
// there was one: this connection is done with (dropped), the next one goes on. It stays in
// localStorage until LogoutOk or an answer that the token no longer logs in (LOGOUT_SETTLED).
async function finishLogout() {
  const pending = loadJSON(LOGOUT_KEY, null);
  if (!pending?.token) return true;
  let failure;
  try {
    await request({ login: { token: pending.token, deviceId: pending.deviceId || '', platform: 'PLATFORM_WEB' } });
    failure = await sendLogout();
  } catch (e) {
    if (e.code === 'DISCONNECTED' || e.code === 'TIMEOUT') return false; // the reconnect tries again
    logoutRateLimited = e.code === 'RATE_LIMITED' ? logoutRateLimited + 1 : 0;
    if (LOGOUT_SETTLED.has(e.code) || logoutRateLimited >= LOGOUT_RATE_LIMITED_MAX) {
      localStorage.removeItem(LOGOUT_KEY);
      logoutPutOff = 0;
      logoutRateLimited = 0;
      return true;
    }
    failure = e;
  }
  if (failure && failure.code !== 'DISCONNECTED' && failure.code !== 'TIMEOUT') putOffLogout(failure);
  else if (!failure) logoutPutOff = 0;
  dropSocket(); // logged in as the old user until then
  return false;
}

// The server put the pending logout off (full, busy, rate-limited, failing): the next connection
// tries again after its retry_after_ms, and backs off like a reconnect (doubling from
// RECONNECT_MIN_MS, jittered, at most RECONNECT_MAX_MS).
function putOffLogout(e) {
  logoutPutOff++;
  const backoff = RECONNECT_MIN_MS * 2 ** Math.min(logoutPutOff - 1, 10) * (0.8 + Math.random() * 0.4);
  const waitMs = Math.round(Math.min(RECONNECT_MAX_MS, Math.max(e.retryAfterMs || 0, backoff)));
  net.retryHint = { text: 'Signing out on the server: it is busy.', waitMs };
}

// After every login: the conversation list, everything missed in loaded conversations, then
// the outbox (same clientMsgId: the server answers a resend of a stored message with its ack).
async function catchUp() {
  try {
    const list = await request({ conversations: {} });
    for (const c of list.conversationList.conversations || []) {
      const conv = conv_(c.conversationId, c.peerUserId);
      conv.maxSeq = Math.max(conv.maxSeq, num(c.maxSeq));
      conv.readSeq = Math.max(conv.readSeq, num(c.readSeq));
      conv.peerDeliveredSeq = num(c.peerDeliveredSeq);
      conv.peerReadSeq = num(c.peerReadSeq);
      if (c.lastMessage && (!conv.last || num(conv.last.seq) <= num(c.lastMessage.seq))) conv.last = c.lastMessage;
      if (conv.group) rememberGroupEntry(conv, c);
    }
    // Each conversation on its own: one that fails does not keep the others from catching up.
    let failed = false;
    for (const conv of [...state.convs.values()]) {
      if (!conv.loaded) continue;
      try {
        await syncConversation(conv);
      } catch (e) {
        if (e.code === 'DISCONNECTED') throw e;
        if (e.code === 'NOT_FOUND' && conv.group) forgetGroup(conv.id); // hidden on another device
        else failed = true;
      }
    }
    state.loadError = failed ? { text: 'Could not load your conversations.' } : null;
  } catch (e) {
    if (e.code === 'DISCONNECTED') return;
    state.loadError = { text: 'Could not load your conversations.' };
  }
  for (const p of state.outbox.values()) if (!p.error) sendPending(p);
  render();
  route();
}

// From the last seq held with none missing after the first one held: a push lost between the
// servers leaves a gap that a later push does not fill. (Recall events are held too, hidden.)
function contiguousSeq(conv) {
  const seqs = conv.seqs;
  let last = seqs.length ? seqs[0] : 0;
  for (const s of seqs) {
    if (s > last + 1) break;
    last = s;
  }
  return last;
}

async function syncConversation(conv) {
  let after = contiguousSeq(conv);
  for (;;) {
    const r = await request({ sync: { conversationId: conv.id, afterSeq: String(after), limit: 100 } });
    const msgs = r.syncBatch.messages || [];
    onMessages(msgs, 'sync');
    if (!r.syncBatch.hasMore || !msgs.length) break;
    after = num(msgs[msgs.length - 1].seq);
  }
}

// ---- conversations and messages ----

function conv_(id, peerUserId) {
  let conv = state.convs.get(id);
  if (!conv) {
    const group = isGroupId(id);
    const system = isSystemId(id); // notices from the operators: read-only (system-view.js)
    conv = {
      // messages: seq -> message, at most MESSAGES_KEPT_MAX (see trimMessages); seqs: its keys, ascending.
      id, peer: group || system ? '' : String(peerUserId), system, messages: new Map(), seqs: [], maxSeq: 0, readSeq: 0,
      peerDeliveredSeq: 0, peerReadSeq: 0, last: null, loaded: false, hasMore: true,
      loading: false, error: null, typingUntil: 0, typingTimer: null, newFromSeq: 0,
      // Groups: the first seq I may read, unread mentions of me, my notifications muted.
      group, visibleFrom: 0, unreadMentions: 0, muted: false, ackedAt: 0,
      // Groups: the seq the group's details here are as of, and events after it applied here.
      infoSeq: 0, eventsApplied: new Set(),
    };
    state.convs.set(id, conv);
  }
  return conv;
}

// `source`: 'push', 'sync' (newer than what is held), 'history' (older) or 'sent' (an ack).
function onMessages(messages, source) {
  const me = state.session?.userId;
  const pushed = source === 'push';
  const touched = new Set();
  for (const m of messages) {
    if (!m) continue;
    const peer = m.fromUserId === me ? m.toUserId : m.fromUserId;
    const conv = conv_(m.conversationId, peer);
    const seq = num(m.seq);
    if (conv.group && pushed && seq > conv.readSeq && !conv.messages.has(seq) && mentionsMe(m)) {
      conv.unreadMentions = Math.min(99, conv.unreadMentions + 1);
    }
    if (isGroupEvent(m) && (pushed || source === 'sync')) takeGroupEvent(conv, m, seq);
    if (isRecall(m)) {
      const orig = conv.messages.get(num(m.recallOfSeq));
      if (orig) orig.recalled = true;
      if (orig) onRecalled(conv, num(m.recallOfSeq));
      holdMessage(conv, seq, m); // not shown; held so that its seq is no gap to catch up
    } else {
      holdMessage(conv, seq, m);
      if (state.outbox.delete(m.clientMsgId)) saveOutbox();
      if (!conv.last || num(conv.last.seq) <= seq) conv.last = m;
    }
    conv.maxSeq = Math.max(conv.maxSeq, seq);
    if (m.fromUserId === me) conv.readSeq = Math.max(conv.readSeq, seq);
    else if (pushed) conv.typingUntil = 0; // the message they were typing is here
    touched.add(conv);
  }
  for (const conv of touched) {
    trimMessages(conv);
    if (conv.maxSeq > 0 && pushed && (!conv.group || Date.now() - conv.ackedAt > GROUP_ACK_EVERY_MS)) {
      conv.ackedAt = Date.now();
      send({ deliveryAck: { conversationId: conv.id, seq: String(conv.maxSeq) } });
    }
    if (conv.id === state.current) markRead(conv);
    if (conv.id === state.current) wantReadCounts(conv);
  }
  render();
}

const isRecall = (m) => m.contentType === 'CONTENT_TYPE_RECALL';

function holdMessage(conv, seq, m) {
  if (!conv.messages.has(seq)) {
    const seqs = conv.seqs;
    if (!seqs.length || seq > seqs[seqs.length - 1]) seqs.push(seq);
    else {
      let lo = 0;
      let hi = seqs.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (seqs[mid] < seq) lo = mid + 1;
        else hi = mid;
      }
      seqs.splice(lo, 0, seq);
    }
  }
  conv.messages.set(seq, m);
}

// Past its limit a conversation lets its oldest messages go (paged back in by "Load older").
// The open one keeps what the reader paged back to while scrolled up, up to a higher limit.
function trimMessages(conv) {
  const reading = conv.id === state.current && state.scrolledUp;
  const max = reading ? MESSAGES_READING_MAX : MESSAGES_KEPT_MAX;
  if (conv.messages.size <= max) return;
  for (const seq of conv.seqs.splice(0, conv.seqs.length - max)) conv.messages.delete(seq);
  conv.hasMore = true;
}

// Older messages can be paged in: the server has more, and the reader has not paged back as far
// as this page keeps.
const canLoadOlder = (conv) => conv.hasMore && conv.messages.size < MESSAGES_READING_MAX;

function onReceipt(r) {
  const conv = state.convs.get(r.conversationId);
  if (!conv) return;
  if (r.userId === state.session?.userId) {
    conv.readSeq = Math.max(conv.readSeq, num(r.readSeq)); // read on another device
    if (conv.readSeq >= conv.maxSeq) conv.unreadMentions = 0;
  } else if (conv.group) {
    wantReadCounts(conv);
  } else {
    conv.peerDeliveredSeq = Math.max(conv.peerDeliveredSeq, num(r.deliveredSeq));
    conv.peerReadSeq = Math.max(conv.peerReadSeq, num(r.readSeq));
  }
  render();
}

function onTyping(t) {
  const conv = state.convs.get(t.conversationId);
  if (!conv || t.fromUserId === state.session?.userId) return;
  conv.typingUntil = Date.now() + TYPING_SHOW_MS;
  conv.typingFrom = t.fromUserId;
  clearTimeout(conv.typingTimer);
  conv.typingTimer = setTimeout(render, TYPING_SHOW_MS + 50);
  render();
}

const isTyping = (conv) => Date.now() < conv.typingUntil;

function sendTyping() {
  const now = Date.now();
  if (state.current && state.loggedIn && !isSystemId(state.current) && now - state.lastTypingSent > TYPING_SEND_MS) {
    state.lastTypingSent = now;
    send({ typing: { conversationId: state.current } });
  }
}

function markRead(conv) {
  if (document.visibilityState === 'hidden' || conv.readSeq >= conv.maxSeq || !state.loggedIn) return;
  conv.readSeq = conv.maxSeq;
  conv.unreadMentions = 0;
  send({ read: { conversationId: conv.id, seq: String(conv.maxSeq) } });
}

// Opens a conversation with `peer` (a user id string), creating it locally if it is new.
function startChat(peer) {
  const id = conversationId(state.session.userId, peer);
  conv_(id, peer);
  return id;
}

async function openConversation(id) {
  const conv = state.convs.get(id);
  if (!conv) return;
  const left = state.convs.get(state.current);
  state.current = id;
  if (left && left !== conv) trimMessages(left); // no longer read back in
  conv.newFromSeq = conv.maxSeq > conv.readSeq ? conv.readSeq + 1 : 0;
  if (!conv.loaded && state.loggedIn) conv.loaded = await loadOlder(conv);
  markRead(conv);
  wantReadCounts(conv);
  render({ scrollToEnd: true });
}

// The page of messages before the oldest held. True once it is here (then the conversation is
// caught up by Sync after every login).
async function loadOlder(conv) {
  if (conv.loading) return false;
  const before = conv.seqs.length ? conv.seqs[0] : 0;
  conv.loading = true;
  conv.error = null;
  render();
  try {
    const r = await request({ history: { conversationId: conv.id, beforeSeq: String(before), limit: HISTORY_PAGE } });
    conv.hasMore = !!r.historyBatch.hasMore;
    conv.loading = false;
    onMessages(r.historyBatch.messages || [], 'history');
    return true;
  } catch (e) {
    conv.loading = false;
    // A group answers NOT_FOUND to someone who is not (or no longer) a member: not loaded, so
    // that catching up does not ask it.
    if (e.code === 'NOT_FOUND') {
      conv.hasMore = false;
      if (conv.group) markGone(conv.id, 'removed');
    }
    else conv.error = e.code === 'DISCONNECTED' ? null : 'Could not load messages.';
    render();
    return false;
  }
}

// ---- sending: the outbox ----

function loadOutbox() {
  const saved = loadJSON(outboxKey(state.session.userId), []);
  for (const p of Array.isArray(saved) ? saved : []) {
    if (!p || !p.clientMsgId || state.outbox.has(p.clientMsgId)) continue;
    state.outbox.set(p.clientMsgId, { ...p, inflight: false, tries: 0 });
    conv_(p.conversationId, p.toUserId);
  }
}

function saveOutbox() {
  if (!state.session) return;
  const key = outboxKey(state.session.userId);
  const list = [...state.outbox.values()].map(({ inflight, tries, ...p }) => p);
  if (list.length) localStorage.setItem(key, JSON.stringify(list));
  else localStorage.removeItem(key);
}

// `mentions`: groups only, {mentionUserIds, mentionAll}.
function sendText(text, mentions) {
  queueSend(state.convs.get(state.current), { text, mentions });
}

// Into the outbox and sent. A file message (files.js) has its `contentType`, `content` (base64
// FileRef) and `echo` (the FileRef shown until the stored one is fetched); `text` is its preview.
function queueSend(conv, { text, mentions, contentType, content, echo }) {
  const p = {
    clientMsgId: crypto.randomUUID(),
    conversationId: conv.id,
    toUserId: conv.peer,
    mentions: conv.group ? mentions : undefined,
    text,
    contentType,
    content,
    echo,
    createdMs: Date.now() + state.skewMs,
    tries: 0,
    inflight: false,
    error: null,
  };
  conv.newFromSeq = 0;
  state.outbox.set(p.clientMsgId, p);
  saveOutbox();
  sendPending(p);
  render({ scrollToEnd: conv.id === state.current });
}

function sendPending(p) {
  if (p.inflight || !state.loggedIn || !state.outbox.has(p.clientMsgId)) return;
  p.inflight = true;
  p.tries++;
  const contentType = p.contentType || 'CONTENT_TYPE_TEXT';
  const content = p.content || toB64(p.text);
  // A group is addressed by its id, a direct chat by the peer (its id is derived).
  const to = p.toUserId ? { toUserId: p.toUserId } : { conversationId: p.conversationId, ...p.mentions };
  request({
    send: { clientMsgId: p.clientMsgId, ...to, contentType, content },
  }).then((reply) => {
    const ack = reply.sendAck;
    p.inflight = false;
    onMessages([{
      conversationId: ack.conversationId, seq: ack.seq, fromUserId: state.session.userId, toUserId: p.toUserId,
      clientMsgId: p.clientMsgId, contentType, content: p.echo || content, serverTimeMs: ack.serverTimeMs,
      ...p.mentions,
    }], 'sent');
    if (p.echo) refreshSent(ack.conversationId, ack.seq);
  }, (e) => {
    p.inflight = false;
    if (e.code === 'DISCONNECTED' || e.code === 'NOT_AUTHENTICATED' || e.code === 'TIMEOUT') {
      // Still pending: resent after the next login (a timeout drops the connection).
    } else if ((e.code === 'RATE_LIMITED' || e.code === 'UNAVAILABLE') && p.tries < SEND_RETRIES_MAX) {
      setTimeout(() => sendPending(p), Math.max(e.retryAfterMs, 500 * p.tries));
    } else {
      p.error = { code: e.code, text: sendErrorText(e, p) };
      saveOutbox();
    }
    render();
  });
}

function sendErrorText(e, p) {
  const inGroup = !p.toUserId && groupSendErrorText(e);
  if (inGroup) return inGroup;
  switch (e.code) {
    case 'USER_NOT_FOUND': return `There is no user with id ${p.toUserId}.`;
    case 'NOT_ALLOWED': return contactErrorText(e, p.toUserId, 'send');
    case 'MESSAGE_TOO_LARGE': return 'The message is too long.';
    case 'RATE_LIMITED': return 'You are sending too fast.';
    case 'UNAVAILABLE': return 'The server could not store it.';
    default: return `The server refused it: ${e.message}.`;
  }
}

function retrySend(clientMsgId) {
  const p = state.outbox.get(clientMsgId);
  if (!p) return;
  p.error = null;
  p.tries = 0;
  saveOutbox();
  sendPending(p);
  render();
}

function discardSend(clientMsgId) {
  state.outbox.delete(clientMsgId);
  saveOutbox();
  render();
}

const unsentIn = (conv) => [...state.outbox.values()].filter((p) => p.conversationId === conv.id);
