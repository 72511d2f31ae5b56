// ringchat browser client, the connection: the protocol's JSON mapping over one WebSocket
// (text messages; 64-bit integers are strings), request/reply matching, heartbeats, and
// reconnecting with a human explanation of why the connection went away.
'use strict';

const REPLY_TIMEOUT_MS = 15000;
const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 30000;

const net = {
  ws: null,
  ready: false, // Hello answered on the current socket
  nextId: 1,
  pending: new Map(), // requestId -> {resolve, reject, timer}
  heartbeat: null,
  lastFrameAt: 0,
  limits: { messageBytesMax: 32768 },
  failures: 0, // connection attempts in a row that ended without a Hello
  lastReason: null, // why the last connection ended, while reconnecting fails
  everReady: false,
  closeHint: null, // the Kicked reason or Error code the server sent just before closing
  retryAt: 0,
  retryTimer: null,
  countdown: null,
  stopped: false, // true: do not reconnect by ourselves (replaced by another tab, page too old)
  assigning: false, // asking the status service which node to connect to
  url: null, // the WebSocket address of the current (or last) connection
  // False when the page's own origin is a status-only node (its `/assign` answers with
  // `X-Ringchat-Role: status`): it serves no `/files`, so files.js offers none (README, cluster).
  filesHere: true,
  // {text, waitMs}: the next reconnect's words and exact wait, taken by the next close. Set by
  // chat.js when the server put off a pending logout (busy, full): its retry_after_ms.
  retryHint: null,
  // Set by chat.js.
  onReady: async () => {},
  onFrame: () => {},
  onDown: () => {},
};

// An Error whose `code` is the protocol's ErrorCode without its prefix ('USER_NOT_FOUND'), or
// 'DISCONNECTED' / 'TIMEOUT' for failures on our side.
function protocolError(code, message, retryAfterMs) {
  return Object.assign(new Error(message || code), { code, retryAfterMs: num(retryAfterMs) });
}

// How long the page waits for the status service's answer before using its own origin.
const ASSIGN_TIMEOUT_MS = 3000;

// The WebSocket address to connect to. In a cluster the status service (`GET /assign` on the
// page's own origin: any node, or a status-only node) names the least-loaded node, asked again
// on every reconnect so that a lost node's clients spread over the others; one box answers 404
// and the page connects to its own origin.
async function nodeUrl() {
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const own = `${proto}://${location.host}/ws`;
  try {
    const r = await fetch('/assign', { cache: 'no-store', signal: AbortSignal.timeout(ASSIGN_TIMEOUT_MS) });
    net.filesHere = r.headers.get('X-Ringchat-Role') !== 'status';
    if (!r.ok) return own;
    const addrs = (await r.json()).client_addrs || [];
    // Same scheme only: a page on https may not open ws:// (mixed content).
    return addrs.find((a) => a.startsWith(`${proto}://`)) || own;
  } catch {
    return own;
  }
}

function connect() {
  if ((net.ws && net.ws.readyState <= WebSocket.OPEN) || net.assigning) return;
  clearTimeout(net.retryTimer);
  clearInterval(net.countdown);
  net.stopped = false;
  net.closeHint = null;
  setConnection('connecting', net.everReady ? 'Reconnecting…' : 'Connecting to the server…');
  net.assigning = true;
  nodeUrl().then((url) => {
    net.assigning = false;
    if (!net.stopped) openSocket(url);
  });
}

function openSocket(url) {
  const ws = new WebSocket(url);
  net.ws = ws;
  net.url = url;
  ws.onopen = () => onOpen().catch((e) => console.warn('session start failed:', e.message));
  ws.onmessage = (ev) => {
    net.lastFrameAt = Date.now();
    onFrame(JSON.parse(ev.data));
  };
  ws.onclose = (ev) => { if (net.ws === ws) onClose(ev); };
}

function send(frame) {
  if (!net.ws || net.ws.readyState !== WebSocket.OPEN) return false;
  net.ws.send(JSON.stringify(frame));
  return true;
}

function request(body) {
  const requestId = String(net.nextId++);
  return new Promise((resolve, reject) => {
    // Anything before the Hello is answered would close the connection (HELLO_REQUIRED).
    if ((!net.ready && !body.hello) || !send({ requestId, ...body })) {
      reject(protocolError('DISCONNECTED', 'not connected'));
      return;
    }
    const timer = setTimeout(() => {
      net.pending.delete(requestId);
      reject(protocolError('TIMEOUT', 'no answer from the server'));
      dropSocket(); // a server that does not answer for this long is most likely not there
    }, REPLY_TIMEOUT_MS);
    net.pending.set(requestId, { resolve, reject, timer });
  }).then((reply) => {
    const e = reply.error;
    if (e) throw protocolError((e.code || '').replace('ERROR_CODE_', ''), e.message, e.retryAfterMs);
    return reply;
  });
}

async function onOpen() {
  const ok = await request({ hello: { protocolVersion: 1, clientName: 'ringchat-web' } });
  const hello = ok.helloOk;
  net.limits.messageBytesMax = num(hello.messageBytesMax) || net.limits.messageBytesMax;
  const interval = num(hello.heartbeatIntervalMs) || 30000;
  clearInterval(net.heartbeat);
  net.heartbeat = setInterval(() => {
    // The server answers every Ping: two silent intervals mean a dead (half-open) connection,
    // which a browser would otherwise only notice minutes later.
    if (Date.now() - net.lastFrameAt > 2 * interval) dropSocket();
    else send({ ping: { clientTimeMs: String(Date.now()) } });
  }, interval);
  net.failures = 0;
  net.lastReason = null;
  net.ready = true;
  net.everReady = true;
  await net.onReady();
}

function onFrame(frame) {
  const pending = frame.requestId && net.pending.get(frame.requestId);
  if (pending) {
    net.pending.delete(frame.requestId);
    clearTimeout(pending.timer);
    pending.resolve(frame);
    return;
  }
  if (frame.kicked) net.closeHint = frame.kicked.reason;
  else if (frame.error) {
    net.closeHint = frame.error.code;
    console.warn('server error:', frame.error.code, frame.error.message);
  } else net.onFrame(frame);
}

// Gives up on the current socket now, without waiting for a close handshake that may never come.
function dropSocket() {
  const ws = net.ws;
  if (!ws || ws.readyState > WebSocket.OPEN) return;
  ws.onclose = null;
  ws.onmessage = null;
  ws.close();
  onClose({ code: 1006, reason: '' });
}

function onClose(ev) {
  const wasReady = net.ready;
  net.ready = false;
  clearInterval(net.heartbeat);
  for (const p of net.pending.values()) {
    clearTimeout(p.timer);
    p.reject(protocolError('DISCONNECTED', 'connection closed'));
  }
  net.pending.clear();
  if (!wasReady) net.failures++;
  net.onDown();
  // Attempts that fail before a Hello keep the first reason: "the server is restarting" stays
  // true while it restarts, though each refused attempt alone looks like a lost connection.
  let why = closeReason(net.closeHint || ev.reason, ev.code, wasReady);
  if (!wasReady && !net.closeHint && net.lastReason) why = net.lastReason;
  const hint = net.retryHint;
  net.retryHint = null;
  if (hint) why = { text: hint.text };
  net.lastReason = why;
  if (why.stop) {
    net.stopped = true;
    setConnection('stopped', why.text, why.action);
    return;
  }
  if (!navigator.onLine) {
    setConnection('offline', 'You are offline. Waiting for the network…', { label: 'Try now', run: connect });
    return;
  }
  // Exponential backoff with jitter, so that a restarted server is not hit by every page at once.
  const base = why.delayMs || Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** Math.max(0, net.failures - 1));
  const delay = hint ? hint.waitMs : Math.round(base * (0.8 + Math.random() * 0.4));
  net.retryAt = Date.now() + delay;
  const tick = () => {
    const left = net.retryAt - Date.now();
    setConnection('waiting', `${why.text} Reconnecting in ${seconds(left)} s…`, { label: 'Reconnect now', run: connect });
  };
  tick();
  clearInterval(net.countdown);
  net.countdown = setInterval(tick, 1000);
  clearTimeout(net.retryTimer);
  net.retryTimer = setTimeout(connect, delay);
}

// Why the socket closed, in words, and what to do about it. `hint` is the Kicked reason or the
// Error code the server sent before closing (also the close frame's reason on WebSocket).
function closeReason(hint, code, wasReady) {
  const h = String(hint || '');
  if (h.endsWith('REPLACED')) {
    return {
      stop: true,
      text: 'ringchat is open in another tab or window.',
      action: { label: 'Use here', run: connect },
    };
  }
  if (h.endsWith('UNSUPPORTED_PROTOCOL_VERSION') || h.endsWith('HELLO_REQUIRED') || h.endsWith('BAD_FRAME')) {
    return {
      stop: true,
      text: 'This page is out of date for the server.',
      action: { label: 'Reload', run: () => location.reload() },
    };
  }
  if (h.endsWith('ACCOUNT_DISABLED')) return { stop: true, text: 'This account was disabled by the server\'s operators.' };
  if (h.endsWith('KICKED_BY_OPERATOR')) return { stop: true, text: 'You were signed out by the server\'s operators.', action: { label: 'Reconnect', run: connect } };
  if (h.endsWith('LOGGED_OUT')) return { text: 'Signed out.' };
  if (h.endsWith('SERVER_SHUTDOWN') || code === 1001) return { text: 'The server is restarting.' };
  if (h.endsWith('SERVER_FULL') || code === 1013) return { text: 'The server is busy.', delayMs: 5000 * 2 ** Math.min(net.failures, 3) };
  if (h.endsWith('IDLE_TIMEOUT')) return { text: 'The connection went quiet and was closed.' };
  if (h.endsWith('SLOW_CONSUMER')) return { text: 'The connection fell behind.' };
  if (h.endsWith('HANDSHAKE_TIMEOUT')) return { text: 'Signing in took too long.' };
  if (h.endsWith('FRAME_TOO_LARGE') || code === 1009) return { text: 'The server refused a message that was too large.' };
  if (!wasReady && !net.everReady) return { text: 'Cannot reach the server.' };
  return { text: 'Connection lost.' };
}

// The header's status pill and, when not online, the banner under it.
function setConnection(kind, text, action) {
  const online = kind === 'online';
  const pill = $('status');
  pill.classList.toggle('online', online);
  pill.dataset.state = kind;
  pill.querySelector('.label').textContent = online ? 'Connected' : kind === 'connecting' ? 'Connecting…' : 'Offline';
  if (online) clearInterval(net.countdown);
  const banner = $('banner');
  banner.hidden = online || (kind === 'connecting' && !net.everReady);
  banner.dataset.state = kind;
  $('banner-text').textContent = text || '';
  const button = $('banner-action');
  button.hidden = !action;
  if (action) {
    button.textContent = action.label;
    button.onclick = action.run;
  }
}

window.addEventListener('online', () => { if (!net.stopped && !net.ready) connect(); });
window.addEventListener('offline', () => {
  if (!net.ready) setConnection('offline', 'You are offline. Waiting for the network…', { label: 'Try now', run: connect });
});
// A page coming back to the foreground does not wait out the backoff.
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && !net.stopped && !net.ready && net.retryAt > Date.now()) connect();
});
