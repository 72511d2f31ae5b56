// ringchat browser client: speaks the protocol's JSON mapping over WebSocket (text messages).
// 64-bit integers are strings in JSON; ids stay strings here, seqs become numbers (< 2^53).
'use strict';

const $ = (id) => document.getElementById(id);
const SESSION_KEY = 'ringchat.session';
const HISTORY_PAGE = 30;
const TYPING_SHOW_MS = 3000;
const TYPING_SEND_MS = 2000;
const REPLY_TIMEOUT_MS = 15000;

const state = {
  ws: null,
  online: false,
  nextId: 1,
  pending: new Map(), // requestId -> {resolve, reject, timer}
  session: JSON.parse(localStorage.getItem(SESSION_KEY) || 'null'), // {userId, token, username, deviceId}
  convs: new Map(), // conversationId -> conversation
  current: null,
  outbox: new Map(), // clientMsgId -> unacked send, resent after a reconnect
  heartbeat: null,
  reconnectMs: 1000,
  kickedForGood: false,
  lastTypingSent: 0,
};

const num = (v) => Number(v || 0);
const enc = new TextEncoder();
const dec = new TextDecoder();
const toB64 = (text) => btoa(String.fromCharCode(...enc.encode(text)));
const fromB64 = (b64) => dec.decode(Uint8Array.from(atob(b64 || ''), (c) => c.charCodeAt(0)));
// Both users compute the same id: (min << 32) | max.
const conversationId = (a, b) => {
  const [x, y] = [BigInt(a), BigInt(b)].sort((p, q) => (p < q ? -1 : 1));
  return ((x << 32n) | y).toString();
};

function setStatus(text, online) {
  $('status').textContent = text;
  $('status').classList.toggle('online', !!online);
}

// ---- transport ----

function connect() {
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${proto}://${location.host}/ws`);
  state.ws = ws;
  setStatus('connecting…');
  ws.onopen = () => onOpen().catch((e) => console.warn('session start failed', e));
  ws.onmessage = (ev) => onFrame(JSON.parse(ev.data));
  ws.onclose = (ev) => onClose(ev);
}

function send(frame) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(frame));
}

function request(body) {
  const requestId = String(state.nextId++);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      state.pending.delete(requestId);
      reject(new Error('no reply in time'));
    }, REPLY_TIMEOUT_MS);
    state.pending.set(requestId, { resolve, reject, timer });
    send({ requestId, ...body });
  }).then((reply) => {
    if (reply.error) throw Object.assign(new Error(reply.error.message), { code: reply.error.code });
    return reply;
  });
}

async function onOpen() {
  const ok = await request({ hello: { protocolVersion: 1, clientName: 'ringchat-web' } });
  const interval = num(ok.helloOk.heartbeatIntervalMs) || 30000;
  clearInterval(state.heartbeat);
  state.heartbeat = setInterval(() => send({ ping: { clientTimeMs: String(Date.now()) } }), interval);
  state.reconnectMs = 1000;
  if (state.session) {
    try {
      await login({ token: state.session.token });
    } catch (e) {
      // An expired or unknown token: ask for the password again.
      forgetSession();
      showLogin(e.message);
    }
  } else {
    showLogin('');
  }
}

function onClose(ev) {
  state.online = false;
  clearInterval(state.heartbeat);
  for (const p of state.pending.values()) {
    clearTimeout(p.timer);
    p.reject(new Error('connection closed'));
  }
  state.pending.clear();
  setStatus(`offline (${ev.code})`);
  if (state.kickedForGood) return;
  const wait = state.reconnectMs;
  state.reconnectMs = Math.min(wait * 2, 10000);
  setStatus(`offline (${ev.code}) — reconnecting`);
  setTimeout(connect, wait);
}

function onFrame(frame) {
  const pending = frame.requestId && state.pending.get(frame.requestId);
  if (pending) {
    state.pending.delete(frame.requestId);
    clearTimeout(pending.timer);
    pending.resolve(frame);
    return;
  }
  if (frame.push) onMessages([frame.push.message], true);
  else if (frame.receipt) onReceipt(frame.receipt);
  else if (frame.typing) onTyping(frame.typing);
  else if (frame.kicked) onKicked(frame.kicked);
  else if (frame.error) console.warn('server error', frame.error);
}

// ---- session ----

async function login(credential) {
  const deviceId = state.session?.deviceId || `web-${crypto.randomUUID()}`;
  const account = credential.token ? {} : { username: credential.username };
  const reply = await request({
    login: { ...account, ...credential, deviceId, platform: 'PLATFORM_WEB' },
  });
  const ok = reply.loginOk;
  state.session = {
    userId: ok.userId,
    token: ok.token,
    username: credential.username || state.session?.username || '',
    deviceId,
  };
  localStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
  state.online = true;
  setStatus('online', true);
  showChat();
  await catchUp();
}

function forgetSession() {
  state.session = null;
  localStorage.removeItem(SESSION_KEY);
}

function showLogin(error) {
  $('login').hidden = false;
  $('chat').hidden = true;
  $('logout').hidden = true;
  $('me').textContent = '';
  $('login-error').textContent = error || '';
  setStatus('connected', true);
}

function showChat() {
  $('login').hidden = true;
  $('chat').hidden = false;
  $('logout').hidden = false;
  $('me').textContent = `${state.session.username} · id ${state.session.userId}`;
  $('me').dataset.userId = state.session.userId;
}

function onKicked(kicked) {
  if (kicked.reason === 'KICK_REASON_REPLACED') {
    state.kickedForGood = true;
    setStatus('signed in elsewhere');
  }
}

// After every login: the conversation list, then everything missed in loaded conversations,
// then resend what was never acked (same clientMsgId: the server answers the original ack).
async function catchUp() {
  const list = await request({ conversations: {} });
  for (const c of list.conversationList.conversations || []) {
    const conv = conv_(c.conversationId, c.peerUserId);
    conv.maxSeq = Math.max(conv.maxSeq, num(c.maxSeq));
    conv.readSeq = num(c.readSeq);
    conv.peerDeliveredSeq = num(c.peerDeliveredSeq);
    conv.peerReadSeq = num(c.peerReadSeq);
    if (c.lastMessage) conv.last = c.lastMessage;
  }
  for (const conv of state.convs.values()) {
    if (conv.loaded) await syncConversation(conv);
  }
  for (const pending of state.outbox.values()) sendPending(pending);
  if (state.current) await openConversation(state.current);
  renderList();
}

async function syncConversation(conv) {
  let after = conv.messages.size ? Math.max(...conv.messages.keys()) : 0;
  for (;;) {
    const r = await request({ sync: { conversationId: conv.id, afterSeq: String(after), limit: 100 } });
    const msgs = r.syncBatch.messages || [];
    onMessages(msgs, false);
    if (!r.syncBatch.hasMore || !msgs.length) break;
    after = num(msgs[msgs.length - 1].seq);
  }
}

// ---- conversations and messages ----

function conv_(id, peerUserId) {
  let conv = state.convs.get(id);
  if (!conv) {
    conv = {
      id, peer: peerUserId, messages: new Map(), maxSeq: 0, readSeq: 0,
      peerDeliveredSeq: 0, peerReadSeq: 0, last: null, loaded: false, hasMore: true, typingUntil: 0,
    };
    state.convs.set(id, conv);
  }
  return conv;
}

function onMessages(messages, pushed) {
  const me = state.session?.userId;
  const touched = new Set();
  for (const m of messages) {
    if (!m) continue;
    const peer = m.fromUserId === me ? m.toUserId : m.fromUserId;
    const conv = conv_(m.conversationId, peer);
    const seq = num(m.seq);
    if (m.contentType === 'CONTENT_TYPE_RECALL') {
      const orig = conv.messages.get(num(m.recallOfSeq));
      if (orig) orig.recalled = true;
    } else {
      conv.messages.set(seq, m);
      state.outbox.delete(m.clientMsgId);
      if (!conv.last || num(conv.last.seq) <= seq) conv.last = m;
    }
    conv.maxSeq = Math.max(conv.maxSeq, seq);
    if (m.fromUserId === me) conv.readSeq = Math.max(conv.readSeq, seq);
    touched.add(conv);
  }
  for (const conv of touched) {
    if (conv.maxSeq > 0 && pushed) {
      send({ deliveryAck: { conversationId: conv.id, seq: String(conv.maxSeq) } });
    }
    if (conv.id === state.current) markRead(conv);
  }
  renderList();
  renderConversation();
}

function onReceipt(r) {
  const conv = state.convs.get(r.conversationId);
  if (!conv) return;
  if (r.userId === state.session?.userId) {
    conv.readSeq = Math.max(conv.readSeq, num(r.readSeq)); // read on another device
  } else {
    conv.peerDeliveredSeq = Math.max(conv.peerDeliveredSeq, num(r.deliveredSeq));
    conv.peerReadSeq = Math.max(conv.peerReadSeq, num(r.readSeq));
  }
  renderList();
  renderConversation();
}

function onTyping(t) {
  const conv = state.convs.get(t.conversationId);
  if (!conv) return;
  conv.typingUntil = Date.now() + TYPING_SHOW_MS;
  renderConversation();
  setTimeout(renderConversation, TYPING_SHOW_MS + 50);
}

function markRead(conv) {
  if (document.visibilityState === 'hidden' || conv.readSeq >= conv.maxSeq) return;
  conv.readSeq = conv.maxSeq;
  send({ read: { conversationId: conv.id, seq: String(conv.maxSeq) } });
}

async function openConversation(id) {
  state.current = id;
  const conv = state.convs.get(id);
  if (!conv.loaded && state.online) {
    await loadOlder(conv);
    conv.loaded = true;
  }
  markRead(conv);
  renderList();
  renderConversation(true);
}

async function loadOlder(conv) {
  const before = conv.messages.size ? Math.min(...conv.messages.keys()) : 0;
  const r = await request({
    history: { conversationId: conv.id, beforeSeq: String(before), limit: HISTORY_PAGE },
  });
  conv.hasMore = !!r.historyBatch.hasMore;
  onMessages(r.historyBatch.messages || [], false);
}

function sendText(text) {
  const conv = state.convs.get(state.current);
  const pending = {
    clientMsgId: crypto.randomUUID(),
    conversationId: conv.id,
    toUserId: conv.peer,
    text,
    fromUserId: state.session.userId,
  };
  state.outbox.set(pending.clientMsgId, pending);
  sendPending(pending);
  renderConversation(true);
}

function sendPending(p) {
  request({
    send: { clientMsgId: p.clientMsgId, toUserId: p.toUserId, contentType: 'CONTENT_TYPE_TEXT', content: toB64(p.text) },
  }).then((reply) => {
    const ack = reply.sendAck;
    state.outbox.delete(p.clientMsgId);
    onMessages([{
      conversationId: ack.conversationId, seq: ack.seq, fromUserId: p.fromUserId, toUserId: p.toUserId,
      clientMsgId: p.clientMsgId, contentType: 'CONTENT_TYPE_TEXT', content: toB64(p.text), serverTimeMs: ack.serverTimeMs,
    }], false);
  }, (e) => console.warn('send not acked yet; resent after reconnect', e.message));
}

// ---- rendering ----

function renderList() {
  const ul = $('conversations');
  const convs = [...state.convs.values()].sort((a, b) => num(b.last?.serverTimeMs) - num(a.last?.serverTimeMs));
  ul.replaceChildren(...convs.map((c) => {
    const li = document.createElement('li');
    li.dataset.conversationId = c.id;
    li.dataset.peer = c.peer;
    li.classList.toggle('active', c.id === state.current);
    const unread = Math.max(0, c.maxSeq - c.readSeq);
    const top = document.createElement('div');
    top.className = 'top';
    top.append(`User ${c.peer}`);
    if (unread > 0 && c.id !== state.current) {
      const badge = document.createElement('span');
      badge.className = 'badge unread';
      badge.textContent = String(unread);
      top.append(badge);
    }
    const last = document.createElement('div');
    last.className = 'last';
    last.textContent = c.last ? (c.last.recalled ? '(recalled)' : fromB64(c.last.content)) : '';
    li.append(top, last);
    li.onclick = () => openConversation(c.id);
    return li;
  }));
}

function renderConversation(scroll) {
  const conv = state.convs.get(state.current);
  $('composer').hidden = !conv;
  if (!conv) return;
  const me = state.session.userId;
  $('peer-title').textContent = `User ${conv.peer}`;
  $('older').hidden = !conv.hasMore || conv.messages.size === 0;
  $('typing').hidden = Date.now() > conv.typingUntil;
  const ol = $('messages');
  const atBottom = ol.scrollTop + ol.clientHeight >= ol.scrollHeight - 4;
  const items = [...conv.messages.entries()].sort((a, b) => a[0] - b[0]).map(([seq, m]) => {
    const mine = m.fromUserId === me;
    let tick = '';
    if (mine) tick = seq <= conv.peerReadSeq ? '✓✓' : seq <= conv.peerDeliveredSeq ? '✓✓' : '✓';
    return messageItem(m.recalled ? '(recalled)' : fromB64(m.content), mine, tick, seq <= conv.peerReadSeq, seq);
  });
  for (const p of state.outbox.values()) {
    if (p.conversationId === conv.id) items.push(messageItem(p.text, true, '🕓', false, ''));
  }
  ol.replaceChildren(...items);
  if (scroll || atBottom) ol.scrollTop = ol.scrollHeight;
}

function messageItem(text, mine, tick, read, seq) {
  const li = document.createElement('li');
  li.className = mine ? 'mine' : 'theirs';
  li.dataset.seq = seq;
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  li.append(body);
  if (tick) {
    const t = document.createElement('span');
    t.className = `meta tick${read ? ' read' : ''}`;
    t.dataset.state = tick === '🕓' ? 'pending' : read ? 'read' : tick === '✓✓' ? 'delivered' : 'sent';
    t.textContent = tick;
    li.append(t);
  }
  return li;
}

// ---- wiring ----

async function submitLogin(register) {
  const username = $('username').value.trim();
  const password = $('password').value;
  $('login-error').textContent = '';
  try {
    if (register) await request({ register: { username, password } });
    await login({ username, password });
  } catch (e) {
    $('login-error').textContent = e.message;
  }
}

$('login').onsubmit = (ev) => { ev.preventDefault(); submitLogin(false); };
$('do-register').onclick = () => { if ($('login').reportValidity()) submitLogin(true); };
$('logout').onclick = () => { forgetSession(); location.reload(); };
$('new-chat').onsubmit = (ev) => {
  ev.preventDefault();
  const peer = $('peer-id').value.trim();
  if (!/^[0-9]+$/.test(peer) || peer === state.session.userId) return;
  const id = conversationId(state.session.userId, peer);
  conv_(id, peer);
  $('peer-id').value = '';
  openConversation(id);
};
$('composer').onsubmit = (ev) => {
  ev.preventDefault();
  const text = $('text').value;
  if (!text.trim()) return;
  $('text').value = '';
  sendText(text);
};
$('text').oninput = () => {
  const now = Date.now();
  if (state.current && now - state.lastTypingSent > TYPING_SEND_MS) {
    state.lastTypingSent = now;
    send({ typing: { conversationId: state.current } });
  }
};
$('older').onclick = async () => {
  const conv = state.convs.get(state.current);
  if (conv) await loadOlder(conv);
};
document.addEventListener('visibilitychange', () => {
  const conv = state.convs.get(state.current);
  if (conv) { markRead(conv); renderList(); }
});

connect();
