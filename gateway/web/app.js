// ringchat browser client, the page: screens, rendering and input. The model is chat.js, the
// connection net.js. Narrow screens show the conversation list and the open conversation as
// separate views (main[data-view]); the open conversation is in the URL (#chat/<user id>, or
// #group/<conversation id>), so the browser's back button and a reload work as expected.
'use strict';

const GROUP_GAP_MS = 5 * 60000; // messages closer than this from one sender are drawn as a group
const finePointer = matchMedia('(pointer: fine)');

// ---- screens ----

function showLogin(error, username) {
  document.body.classList.add('logged-out');
  $('login').hidden = false;
  $('chat').hidden = true;
  $('me-button').hidden = true;
  toggleMenu(false);
  $('me').textContent = '';
  delete $('me').dataset.userId;
  if (username) $('username').value = username;
  $('login-error').textContent = error || '';
  setLoginBusy(false);
  ($('username').value ? $('password') : $('username')).focus();
}

function showChat() {
  const me = state.session;
  document.body.classList.remove('logged-out');
  $('login').hidden = true;
  $('chat').hidden = false;
  $('me-button').hidden = false;
  $('me').textContent = me.username || displayName(me.userId);
  $('me').dataset.userId = me.userId;
  $('my-id-value').textContent = me.userId;
  $('password').value = '';
  $('attach').hidden = !net.filesHere; // a page opened on the status service: no files there
}

// Sidebar tabs: a view registers a button in #tabs and a [data-pane] of the same name.
function showTab(name) {
  for (const b of $('tabs').querySelectorAll('[data-tab]')) b.classList.toggle('active', b.dataset.tab === name);
  for (const p of document.querySelectorAll('#sidebar [data-pane]')) p.hidden = p.dataset.pane !== name;
  // Shown again: the lists (and friends' names and pictures) as they are now.
  if (name === 'contacts' && state.loggedIn) loadContacts();
  render();
}

// #chat/<user id>, #group/<conversation id> or #system opens that conversation; anything else
// shows the list.
function route() {
  if (!state.loggedIn) return;
  if (location.hash === '#system') {
    const id = systemConvId();
    conv_(id, '');
    if (id !== state.current || !state.convs.get(id).loaded) openConversation(id);
    return;
  }
  const g = /^#group\/([0-9]{1,20})$/.exec(location.hash);
  if (g && isGroupId(g[1])) {
    const id = g[1];
    const conv = conv_(id, '');
    if (id !== state.current) openGroup(id);
    if (id !== state.current || !conv.loaded) openConversation(id);
    return;
  }
  const m = /^#chat\/([0-9]{1,20})$/.exec(location.hash);
  if (m && m[1] !== state.session.userId) {
    const id = startChat(m[1]);
    wantProfiles([m[1]], id !== state.current); // their name as it is now
    if (id !== state.current || !state.convs.get(id).loaded) {
      openConversation(id).then(() => {
        // Focus the composer where that does not pop up a screen keyboard.
        if (finePointer.matches && state.current === id) $('text').focus();
      });
    }
    return;
  }
  state.current = null;
  render();
}

function goToChat(peer) {
  goToHash(`#chat/${peer}`);
}

function goToHash(hash) {
  state.openedFromList = true;
  if (location.hash === hash) route();
  else location.hash = hash;
}

const goToConv = (c) => (c.system ? goToHash('#system') : c.group ? goToHash(`#group/${c.id}`) : goToChat(c.peer));

function goBack() {
  if (state.openedFromList) history.back();
  else location.hash = '';
  state.openedFromList = false;
}

// ---- rendering (coalesced: many model changes in one task draw once) ----

let renderQueued = false;
let scrollToEndQueued = false;
function render(opts) {
  if (opts?.scrollToEnd) scrollToEndQueued = true;
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    const scrollToEnd = scrollToEndQueued;
    scrollToEndQueued = false;
    if (!state.session) return;
    renderMe();
    renderList();
    renderContacts();
    renderConversation(scrollToEnd);
    renderUploads();
    renderGroupPanel();
    renderUnread();
    renderToasts();
  });
}

// In a group, what came before I could read it (visibleFrom) is not unread.
const unreadOf = (c) => Math.max(0, c.maxSeq - Math.max(c.readSeq, c.visibleFrom - 1));
const lastActivity = (c) => Math.max(num(c.last?.serverTimeMs), ...unsentIn(c).map((p) => p.createdMs), 0);

function renderList() {
  $('list-error').hidden = !state.loadError;
  $('conversations').setAttribute('aria-busy', String(state.listBusy));
  const convs = [...state.convs.values()]
    .filter((c) => c.last || c.id === state.current || unsentIn(c).length || (c.group && !groupOf(c.id)?.gone))
    .sort((a, b) => lastActivity(b) - lastActivity(a));
  const ul = $('conversations');
  if (!convs.length) {
    ul.replaceChildren(el('li', { class: 'empty' },
      el('strong', null, 'No conversations yet'),
      el('span', null, 'Find people in Contacts, or enter someone’s user id above. Share your id so they can write to you.')));
    return;
  }
  ul.replaceChildren(...convs.map((c) => {
    const unread = c.id === state.current ? 0 : unreadOf(c);
    const unsent = unsentIn(c);
    const failed = unsent.some((p) => p.error);
    let preview;
    if (isTyping(c)) preview = el('span', { class: 'preview typing-preview' }, 'typing…');
    else if (failed) preview = el('span', { class: 'preview failed' }, icon('alert'), 'Not sent');
    else if (stalledUpload(c)) preview = el('span', { class: 'preview failed' }, icon('clip'), stalledUpload(c));
    else if (unsent.length) preview = el('span', { class: 'preview' }, icon('clock'), unsent[unsent.length - 1].text);
    else if (c.last && isGroupEvent(c.last)) preview = el('span', { class: 'preview' }, groupEventText(eventOf(c.last)));
    else if (c.last && c.system) preview = el('span', { class: 'preview' }, noticeText(c.last));
    else if (c.last) {
      const mine = c.last.fromUserId === state.session.userId;
      const text = c.last.recalled ? 'Message deleted' : messagePreview(c.last);
      const from = mine ? 'You: ' : c.group ? `${displayName(c.last.fromUserId)}: ` : '';
      preview = el('span', { class: 'preview' }, from, text);
    } else preview = el('span', { class: 'preview' }, 'No messages yet');
    const button = el('button', { type: 'button', class: 'conv', onclick: () => goToConv(c) },
      c.system ? systemAvatar() : c.group ? groupAvatar(c.id) : avatar(c.peer, true),
      el('span', { class: 'conv-body' },
        el('span', { class: 'top' },
          el('span', { class: 'name' }, c.system ? SYSTEM_TITLE : c.group ? groupName(c.id) : displayName(c.peer)),
          c.group ? groupListMarks(c) : null,
          el('time', { class: 'when' }, listTime(lastActivity(c)))),
        el('span', { class: 'bottom' },
          preview,
          c.group && c.id !== state.current ? mentionBadge(c) : null,
          unread > 0 ? el('span', { class: `badge unread${c.muted ? ' muted' : ''}`, 'aria-label': `${unread} unread` }, String(unread)) : null)));
    return el('li', {
      class: c.id === state.current ? 'active' : null,
      dataset: { conversationId: c.id, peer: c.peer, kind: c.system ? 'system' : c.group ? 'group' : 'direct' },
    }, button);
  }));
}

function renderUnread() {
  let total = 0;
  // A muted group counts only while it mentions me.
  for (const c of state.convs.values()) if (c.id !== state.current && (!c.muted || c.unreadMentions)) total += unreadOf(c);
  document.title = total ? `(${total}) ringchat` : 'ringchat';
  const back = $('back-badge');
  back.hidden = !total;
  back.textContent = String(total);
  const tab = $('tabs').querySelector('[data-tab="chats"] .badge');
  tab.hidden = !total;
  tab.textContent = String(total);
  $('tabs').hidden = $('tabs').querySelectorAll('[data-tab]').length < 2;
}

function renderConversation(scrollToEnd) {
  const conv = state.convs.get(state.current);
  $('chat').dataset.view = conv ? 'conversation' : 'list';
  for (const id of ['conv-header', 'messages-wrap', 'composer']) $(id).hidden = !conv;
  $('no-conversation').hidden = !!conv;
  renderContactBar(conv);
  mediaFor(conv ? conv.id : null); // another conversation: the last one's blob URLs are revoked
  if (!conv) {
    $('typing').hidden = true;
    $('composer-error').hidden = true;
    return;
  }
  $('group-info-button').hidden = !conv.group;
  $('chat').dataset.kind = conv.system ? 'system' : conv.group ? 'group' : 'direct';
  if (conv.system) renderSystemHeader();
  else if (conv.group) renderGroupHeader(conv);
  else {
    $('peer-title').textContent = displayName(conv.peer);
    $('peer-avatar').replaceChildren(avatar(conv.peer, true));
    // Under the name: their presence if they are a friend, else who they are (a user known by id
    // only already shows it in the title).
    const presence = presenceText(conv.peer);
    $('peer-sub').textContent = presence || (profileOf(conv.peer) ? handleOf(conv.peer) : '');
    $('peer-sub').dataset.presence = people.presence.get(conv.peer)?.state || '';
    // Nobody can write across a block: the bar above says so, with Unblock.
    if (profileOf(conv.peer)?.blocked) $('composer').hidden = true;
  }
  const typing = !conv.system && isTyping(conv);
  $('typing').hidden = !typing;
  $('typing').textContent = typing ? `${displayName(conv.typingFrom || conv.peer)} is typing…` : '';

  const ol = $('messages');
  const fromBottom = ol.scrollHeight - ol.scrollTop - ol.clientHeight;
  const firstBefore = ol.querySelector('li.msg')?.dataset.seq;
  setChildren(ol, rows(conv));
  const firstAfter = ol.querySelector('li.msg')?.dataset.seq;
  // Messages that arrived below while the reader is scrolled up are counted on the jump button.
  if (state.renderedConv === conv.id && conv.maxSeq > state.renderedMaxSeq) state.unseenBelow = (state.unseenBelow || 0) + conv.maxSeq - state.renderedMaxSeq;
  state.renderedConv = conv.id;
  state.renderedMaxSeq = conv.maxSeq;
  if (scrollToEnd || fromBottom < 24) {
    ol.scrollTop = ol.scrollHeight;
    state.unseenBelow = 0;
  } else if (firstBefore !== firstAfter) {
    ol.scrollTop = ol.scrollHeight - ol.clientHeight - fromBottom; // older page added on top: stay put
  }
  updateJump();
}

// The open conversation's rows as last drawn, reused while what they show is the same (a push
// draws one new row): key -> {m, sig, node, alive}; only the rows of the last draw.
const drawn = { conv: null, rows: new Map() };

// The conversation's rows: day separators, a "new messages" marker, messages, then unsent ones.
function rows(conv) {
  const me = state.session.userId;
  const out = [];
  if (drawn.conv !== conv.id) drawn.rows = new Map();
  drawn.conv = conv.id;
  const kept = new Map();
  // The node drawn last time for `key` if it showed the same message (`m`), the same `sig` and,
  // for a file, the same media entry (`alive`); else a new one from `make`.
  const reuse = (key, m, sig, make, alive) => {
    const was = drawn.rows.get(key);
    const same = was && was.m === m && was.sig === sig && (alive ? alive() : null) === was.alive;
    const node = same ? was.node : make();
    kept.set(key, { m, sig, node, alive: alive ? alive() : null });
    return node;
  };
  if (conv.hasMore && conv.messages.size) {
    out.push(canLoadOlder(conv) ? el('li', { class: 'older' }, el('button', {
      id: 'older', type: 'button', class: 'ghost small', disabled: conv.loading,
      onclick: () => loadOlder(conv),
    }, conv.loading ? 'Loading…' : 'Load older messages'))
      : el('li', { class: 'note' }, 'Go to the newest messages to page back further.'));
  } else if (conv.loading) {
    out.push(el('li', { class: 'note' }, 'Loading messages…'));
  }
  if (conv.error) {
    out.push(el('li', { class: 'inline-error', role: 'alert' }, el('span', null, conv.error),
      el('button', { type: 'button', class: 'small', onclick: () => openConversation(conv.id) }, 'Retry')));
  }
  let day = null;
  let prev = null;
  let markedNew = false;
  // One row; in a group, the first of a run names its sender.
  const add = (key, m, sig, make, ms, mine, from = mine ? me : null, alive = null) => {
    if (startOfDay(ms) !== day) {
      day = startOfDay(ms);
      prev = null;
      const label = dayLabel(ms);
      out.push(reuse(`day:${key}`, null, label, () => el('li', { class: 'day-sep' }, el('span', null, label))));
    }
    // Messages of one sender close in time are drawn as a run; in a group, its first names them.
    const cont = !!prev && prev.from === from && ms - prev.ms < GROUP_GAP_MS;
    const sender = conv.group && !cont && !mine && from ? displayName(from) : null;
    out.push(reuse(key, m, `${sig}|${cont}|${sender}`, () => {
      const item = make();
      item.classList.toggle('cont', cont);
      if (sender !== null) item.prepend(el('span', { class: 'sender' }, sender));
      return item;
    }, alive));
    prev = { from, ms };
  };
  for (const seq of conv.seqs) {
    const m = conv.messages.get(seq);
    if (isRecall(m)) continue; // shown on the message it recalls
    const mine = m.fromUserId === me;
    const ms = num(m.serverTimeMs);
    if (!markedNew && conv.newFromSeq && seq >= conv.newFromSeq && !mine) {
      markedNew = true;
      if (startOfDay(ms) === day) out.push(el('li', { class: 'new-sep' }, el('span', null, 'New messages')));
    }
    const key = `seq:${seq}`;
    if (conv.system) {
      add(key, m, '', () => noticeItem(m, seq), ms, false, null);
      continue;
    }
    if (isGroupEvent(m)) {
      const text = groupEventText(eventOf(m));
      add(key, m, text, () => el('li', { class: 'system', dataset: { seq, event: eventOf(m)?.kind || '' } }, el('span', null, text)), ms, false, null);
      continue;
    }
    let tick = null;
    if (mine && !conv.group) tick = seq <= conv.peerReadSeq ? 'read' : seq <= conv.peerDeliveredSeq ? 'delivered' : 'sent';
    const media = isMedia(m) && !m.recalled;
    const mentioned = conv.group && mentionsMe(m);
    const readBy = conv.group && mine ? JSON.stringify(groups.readCounts.get(conv.id)?.get(seq) || null) : '';
    add(key, m, `${!!m.recalled}|${tick}|${mentioned}|${readBy}`, () => messageItem({
      text: m.recalled ? 'Message deleted' : media ? '' : fromB64(m.content), recalled: m.recalled, mine, ms, tick, seq,
      body: media ? fileBody(m, conv, seq) : null,
      mentioned, readBy: conv.group && mine ? readByOf(conv, seq) : null,
    }), ms, mine, m.fromUserId, media ? () => files.media.get(`${conv.id}:${seq}`) : null);
  }
  drawn.rows = kept;
  for (const p of unsentIn(conv)) {
    const ms = p.createdMs;
    if (startOfDay(ms) !== day) {
      day = startOfDay(ms);
      prev = null;
      out.push(el('li', { class: 'day-sep' }, el('span', null, dayLabel(ms))));
    }
    const item = messageItem({
      text: p.text, mine: true, ms, tick: p.error ? 'failed' : 'pending',
      body: p.echo ? fileBody({ contentType: p.contentType, content: p.echo }, conv, 0) : null,
      clientMsgId: p.clientMsgId, error: p.error, online: state.loggedIn,
    });
    item.classList.toggle('cont', !!prev && prev.from === me && ms - prev.ms < GROUP_GAP_MS);
    out.push(item);
    prev = { from: me, ms };
  }
  if (!out.some((r) => r.matches('.msg, .notice-item')) && !conv.loading && !conv.error) {
    const to = conv.group ? 'the group' : displayName(conv.peer);
    const hint = conv.system ? 'Notices from the server’s operators show here.' : `Say hello to ${to}.`;
    out.push(el('li', { class: 'empty' }, el('strong', null, conv.system ? 'No notices yet' : 'No messages yet'), el('span', null, hint)));
  }
  return out;
}

const TICKS = { sent: '✓', delivered: '✓✓', read: '✓✓' };
const TICK_TITLES = { sent: 'Sent', delivered: 'Delivered', read: 'Read', failed: 'Not sent' };

// `body`: what the bubble shows instead of `text` (a file: files.js).
function messageItem({ text, body, recalled, mine, ms, tick, seq, clientMsgId, error, online, mentioned, readBy }) {
  const meta = el('span', { class: 'meta' },
    el('time', { datetime: new Date(ms).toISOString(), title: formatFull(ms) }, formatTime(ms)));
  if (readBy) meta.append(readBy);
  if (tick) {
    const title = tick === 'pending' ? (online ? 'Sending…' : 'Waiting for the connection') : TICK_TITLES[tick];
    const t = el('span', { class: `tick ${tick}`, dataset: { state: tick }, title, 'aria-label': title });
    if (tick === 'pending') t.append(icon('clock'));
    else if (tick === 'failed') t.append(icon('alert'));
    else t.textContent = TICKS[tick];
    meta.append(t);
  }
  const li = el('li', {
    class: `msg ${mine ? 'mine' : 'theirs'}${error ? ' failed' : ''}${recalled ? ' recalled' : ''}${mentioned ? ' mentioned' : ''}`,
    dataset: { seq: seq ?? '', clientMsgId: clientMsgId ?? '' },
  }, el('div', { class: `bubble${body ? ' has-file' : ''}` }, body || el('span', { class: 'text' }, text), meta));
  if (error) {
    li.append(el('div', { class: 'send-error', role: 'alert' },
      el('span', null, `Not sent. ${error.text}`),
      el('span', { class: 'send-actions' },
        el('button', { type: 'button', class: 'retry small', onclick: () => retrySend(clientMsgId) }, 'Retry'),
        el('button', { type: 'button', class: 'discard small ghost', onclick: () => discardSend(clientMsgId) }, 'Delete'))));
  }
  return li;
}

// The "jump to newest" button shows when scrolled up, with the count of messages below.
function updateJump() {
  const ol = $('messages');
  const away = ol.scrollHeight - ol.scrollTop - ol.clientHeight > 120;
  state.scrolledUp = away; // reading back: the conversation keeps what was paged in (chat.js)
  if (!away) state.unseenBelow = 0;
  $('jump').hidden = !away;
  $('jump-count').hidden = !state.unseenBelow;
  $('jump-count').textContent = String(state.unseenBelow || '');
}

// ---- input ----

async function submitLogin(register) {
  const username = $('username').value.trim();
  const password = $('password').value;
  if (username.length < 3) return loginError('A username has at least 3 characters.', 'username');
  if (password.length < 8) return loginError('A password has at least 8 characters.', 'password');
  loginError('');
  setLoginBusy(true);
  try {
    if (register) await request({ register: { username, password } });
    await login({ username, password });
  } catch (e) {
    loginError(loginErrorText(e), e.code === 'USERNAME_TAKEN' ? 'username' : null);
  } finally {
    setLoginBusy(false);
  }
}

function loginError(text, field) {
  $('login-error').textContent = text;
  if (field) $(field).focus();
}

function setLoginBusy(busy) {
  $('do-login').disabled = busy;
  $('do-register').disabled = busy;
}

function composerCheck() {
  const text = $('text').value;
  const bytes = utf8Bytes(text);
  const max = net.limits.messageBytesMax;
  const over = bytes > max;
  $('composer-error').hidden = !over;
  $('composer-error').textContent = over ? `Too long to send: ${bytes.toLocaleString()} bytes, at most ${max.toLocaleString()}.` : '';
  $('send').disabled = over;
  // Grow with the text up to a few lines, then scroll.
  const ta = $('text');
  ta.style.height = 'auto';
  ta.style.height = `${Math.min(ta.scrollHeight, 160)}px`;
  return !over;
}

function submitComposer() {
  const text = $('text').value;
  if (!text.trim() || !state.current || !composerCheck()) return;
  $('text').value = '';
  composerCheck();
  const trimmed = text.replace(/\s+$/, '');
  sendText(trimmed, takeMentions(trimmed));
  $('text').focus();
}

$('login').onsubmit = (ev) => { ev.preventDefault(); submitLogin(false); };
$('do-register').onclick = () => submitLogin(true);
$('logout').onclick = () => logout();
$('new-chat').onsubmit = (ev) => {
  ev.preventDefault();
  const peer = $('peer-id').value.replace(/\s+/g, '');
  let error = '';
  if (!peer) error = 'Enter the user id of the person you want to write to.';
  else if (!/^[0-9]{1,20}$/.test(peer)) error = 'A user id is made of digits only, like 100000001.';
  else if (peer === state.session.userId) error = 'That is your own id. Enter someone else’s.';
  $('new-chat-error').hidden = !error;
  $('new-chat-error').textContent = error;
  if (error) { $('peer-id').focus(); return; }
  $('peer-id').value = '';
  goToChat(peer);
};
$('peer-id').oninput = () => { $('new-chat-error').hidden = true; };
$('copy-id').onclick = async () => {
  try {
    await navigator.clipboard.writeText(state.session.userId);
    $('copy-id').textContent = 'Copied';
  } catch {
    getSelection().selectAllChildren($('my-id-value'));
    $('copy-id').textContent = 'Selected';
  }
  setTimeout(() => { $('copy-id').textContent = 'Copy'; }, 1500);
};
$('list-retry').onclick = () => { state.loadError = null; render(); catchUp(); };
$('back').onclick = goBack;
$('composer').onsubmit = (ev) => { ev.preventDefault(); submitComposer(); };
$('text').onkeydown = (ev) => {
  if (mentionKey(ev)) return; // the @-member list open: the keys move in it
  // Enter sends, Shift+Enter is a new line; not while an input method is composing.
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    submitComposer();
  }
};
$('text').oninput = () => { composerCheck(); mentionInput(); if ($('text').value) sendTyping(); };
$('messages').onscroll = () => {
  const ol = $('messages');
  const conv = state.convs.get(state.current);
  if (conv && ol.scrollTop < 40 && canLoadOlder(conv) && conv.loaded && !conv.loading && !conv.error) loadOlder(conv);
  updateJump();
  // Back at the newest: what was paged in to read back goes again.
  if (conv && !state.scrolledUp && conv.messages.size > MESSAGES_KEPT_MAX) {
    trimMessages(conv);
    render();
  }
};
$('jump').onclick = () => { const ol = $('messages'); ol.scrollTop = ol.scrollHeight; updateJump(); };
for (const b of $('tabs').querySelectorAll('[data-tab]')) b.onclick = () => showTab(b.dataset.tab);
window.addEventListener('hashchange', route);
people.onChange = () => render();
// "Last seen 5 minutes ago" and the list's times move on by themselves.
setInterval(() => { if (state.loggedIn && document.visibilityState === 'visible') changed(); }, 60000);
document.addEventListener('visibilitychange', () => {
  const conv = state.convs.get(state.current);
  if (conv) { markRead(conv); render(); }
});

connect();
