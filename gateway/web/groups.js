// ringchat browser client, the groups model: my groups (name, roles, settings), their members
// (paged), applications, the actions owners, admins and members can take, what group events
// change, mentions and "read by" counts. Rendering is in groups-view.js; every change calls
// changed().
'use strict';

const GROUP_LIST_PAGE = 100; // list_groups page; a user is in at most groups.per_user_max (500)
const MEMBER_PAGE = 50; // one "load more" of the member list
const APPLICATION_PAGE = 50;
const READ_COUNT_OWN_MAX = 5; // my newest messages in the open group that show "read by N"
const READ_COUNT_POLL_MS = 15000; // big groups push no receipts: the open one is asked again
const GROUP_ACK_EVERY_MS = 5000; // PROTOCOL: a DeliveryAck for a group at most every 5 s
const GROUP_NAME_BYTES_MAX = 64; // the server's groups.name_bytes_max; it checks too
const MENTION_ALL = 'everyone'; // typed as @everyone (owners and admins only)
// Events of one group applied here since its details were last read (each is applied once);
// past it the details are read again.
const GROUP_EVENTS_APPLIED_MAX = 1000;

const groups = {
  info: new Map(), // conversationId -> group (see rememberGroup)
  members: new Map(), // conversationId -> {list: Map userId -> member, hasMore, loading, error}
  applications: new Map(), // conversationId -> {list: [{userId, message, sentAtMs}], hasMore, loading}
  readCounts: new Map(), // conversationId -> Map seq -> {count, exact}
  busy: new Set(), // `${conversationId}/${what}`: an action on its way
  errors: new Map(), // conversationId -> what went wrong with the last action in that group
  version: 0, // bumped by every change the group panel shows
};

const GROUP_ROLES = { member: 0, admin: 1, owner: 2 };
const isManager = (g) => !!g && (g.myRole === 'owner' || g.myRole === 'admin');
const groupOf = (id) => groups.info.get(String(id));

function groupsChanged() {
  groups.version++;
  changed();
}

function resetGroups() {
  for (const m of [groups.info, groups.members, groups.applications, groups.readCounts, groups.errors]) m.clear();
  groups.version++;
}

// A Group from any reply, in the page's words. The JSON mapping leaves out default values:
// a missing enum is its first value (OPEN, MEMBER). A former member is answered too, with the
// group as it stood when it left (`maxSeq` the event it left by): it stays gone here unless the
// group is past the seq it went at (it came back).
function rememberGroup(g) {
  if (!g || !g.conversationId) return null;
  const id = String(g.conversationId);
  const was = groupOf(id);
  const still = !!was?.gone && num(g.maxSeq) <= was.goneSeq;
  const group = {
    id,
    name: g.name || '',
    intro: g.intro || '',
    ownerId: String(g.ownerId || ''),
    joinPolicy: enumName(g.joinPolicy, 'JOIN_POLICY_') || 'open',
    historyVisible: !!g.historyVisible,
    muteAll: !!g.muteAll,
    memberCount: num(g.memberCount),
    dissolved: !!g.dissolved,
    myRole: enumName(g.myRole, 'GROUP_ROLE_') || 'member',
    myMutedUntilMs: num(g.myMutedUntilMs),
    visibleFrom: num(g.myVisibleFromSeq),
    notifyMuted: !!g.myNotifyMuted,
    gone: still ? was.gone : null, // 'removed' | 'left' | 'dissolved': I am no longer a member
    goneSeq: still ? was.goneSeq : 0, // the last seq it was known gone at
  };
  groups.info.set(id, group);
  const conv = conv_(id, '');
  conv.visibleFrom = group.visibleFrom;
  conv.maxSeq = Math.max(conv.maxSeq, num(g.maxSeq));
  // These details are as of maxSeq: only later events change them.
  conv.infoSeq = Math.max(conv.infoSeq, num(g.maxSeq));
  for (const seq of conv.eventsApplied) if (seq <= conv.infoSeq) conv.eventsApplied.delete(seq);
  conv.muted = group.notifyMuted;
  groups.version++;
  return group;
}

// After every login: every page of my groups.
async function loadGroups() {
  let after = '0';
  try {
    for (;;) {
      const r = await request({ listGroups: { afterConversationId: after, limit: GROUP_LIST_PAGE } });
      const list = r.groupList.groups || [];
      for (const g of list) {
        rememberGroup(g);
        // A group the conversation list did not name has no read cursor here: counted as read
        // up to now, so that a reload does not show its whole history as unread.
        const conv = state.convs.get(String(g.conversationId));
        if (!conv.listed) conv.readSeq = Math.max(conv.readSeq, num(g.maxSeq));
      }
      if (!r.groupList.hasMore || !list.length) break;
      after = list[list.length - 1].conversationId;
    }
  } catch (e) {
    if (e.code !== 'DISCONNECTED') console.warn('could not load groups:', e.code, e.message);
  }
  groupsChanged();
}

// A Conversations entry of kind GROUP: name, size, mentions and my notification setting. A
// former member's last message is the event it left by.
function rememberGroupEntry(conv, c) {
  conv.listed = true;
  conv.unreadMentions = num(c.unreadMentions);
  conv.muted = !!c.muted;
  const why = c.lastMessage && isGroupEvent(c.lastMessage) && goneBy(eventOf(c.lastMessage));
  if (why) markGone(conv.id, why, num(c.lastMessage.seq));
  const g = groupOf(conv.id);
  if (g) {
    g.name = c.groupName || g.name;
    g.memberCount = num(c.memberCount) || g.memberCount;
  } else if (c.groupName) {
    groups.info.set(conv.id, { id: conv.id, name: c.groupName, memberCount: num(c.memberCount), myRole: 'member', joinPolicy: 'open', partial: true });
  }
}

// Opening a group: its info as it is now, and the first page of members (for @mentions).
function openGroup(id) {
  if (!state.loggedIn) return;
  loadGroupInfo(id);
  loadMembers(id, false);
}

async function loadGroupInfo(id) {
  try {
    const r = await request({ groupInfo: { conversationId: id } });
    rememberGroup(r.group);
  } catch (e) {
    if (e.code === 'NOT_FOUND') markGone(id, 'removed');
  }
  groupsChanged();
}

// `seq`: the group's seq I am known gone at (default: the newest seq seen of it).
function markGone(id, why, seq) {
  const at = seq ?? state.convs.get(id)?.maxSeq ?? 0;
  const g = groupOf(id);
  if (g) {
    g.gone = why;
    g.goneSeq = Math.max(g.goneSeq || 0, at);
  } else groups.info.set(id, { id, name: '', memberCount: 0, myRole: 'member', joinPolicy: 'open', gone: why, goneSeq: at });
  groups.members.delete(id);
  groups.version++;
}

// The member list, a page at a time (`more`: the next page, else the first again).
// The first page again keeps the list on screen until the answer replaces it.
async function loadMembers(id, more) {
  const cur = groups.members.get(id) || { list: new Map(), after: '0', hasMore: false, loading: false, error: null };
  if (cur.loading) return;
  groups.members.set(id, cur);
  cur.loading = true;
  cur.error = null;
  groupsChanged();
  try {
    const r = await request({ groupMembers: { conversationId: id, afterUserId: more ? cur.after : '0', limit: MEMBER_PAGE } });
    const list = more ? cur.list : new Map();
    if (!more) cur.after = '0';
    for (const m of r.groupMemberList.members || []) {
      const p = rememberProfile(m.profile);
      if (!p) continue;
      list.set(p.userId, {
        userId: p.userId, role: enumName(m.role, 'GROUP_ROLE_') || 'member',
        joinedMs: num(m.joinedMs), mutedUntilMs: num(m.mutedUntilMs),
      });
      cur.after = p.userId; // pages go by user id
    }
    cur.list = list;
    cur.hasMore = !!r.groupMemberList.hasMore;
  } catch (e) {
    if (e.code === 'NOT_FOUND') markGone(id, 'removed');
    else if (e.code !== 'DISCONNECTED') cur.error = groupErrorText(e, 'members');
  } finally {
    cur.loading = false;
    groupsChanged();
  }
}

async function loadApplications(id) {
  const cur = { list: [], hasMore: false, loading: true };
  groups.applications.set(id, cur);
  try {
    const r = await request({ groupApplications: { conversationId: id, afterUserId: '0', limit: APPLICATION_PAGE } });
    for (const a of r.groupApplicationList.applications || []) {
      const p = rememberProfile(a.profile);
      if (p) cur.list.push({ userId: p.userId, message: a.message || '', sentAtMs: num(a.sentAtMs) });
    }
    cur.hasMore = !!r.groupApplicationList.hasMore;
  } catch (e) {
    if (e.code !== 'DISCONNECTED') groups.errors.set(id, groupErrorText(e, 'applications'));
  } finally {
    cur.loading = false;
    groupsChanged();
  }
}

// ---- actions ----

// Runs one action in group `id` (`what` names it for its busy mark and its error text); the
// group's info, and its member list if loaded, are read again after it. Returns the reply or null.
async function groupAct(id, what, body) {
  const key = `${id}/${what}`;
  if (groups.busy.has(key)) return null;
  groups.busy.add(key);
  groups.errors.delete(id);
  groupsChanged();
  try {
    const reply = await request(body);
    // The event this action wrote is pushed to everyone but this connection: fetched here.
    const conv = state.convs.get(id);
    if (num(reply.groupOk?.eventSeq) && conv?.loaded) syncConversation(conv).catch(() => {});
    return reply;
  } catch (e) {
    groups.errors.set(id, groupErrorText(e, what));
    return null;
  } finally {
    groups.busy.delete(key);
    refreshGroup(id);
    groupsChanged();
  }
}

const groupBusy = (id, what) => groups.busy.has(`${id}/${what}`);

// `fields`: {name, joinPolicy, historyVisible, muteAll}, only the changed ones.
function updateGroup(id, fields) {
  const body = { conversationId: id, ...fields };
  if (fields.joinPolicy) body.joinPolicy = `JOIN_POLICY_${fields.joinPolicy.toUpperCase()}`;
  return groupAct(id, 'update', { groupUpdate: body });
}
const inviteToGroup = (id, userIds) => groupAct(id, 'invite', { groupInvite: { conversationId: id, userIds } });
const removeFromGroup = (id, userId) => groupAct(id, `remove-${userId}`, { groupRemove: { conversationId: id, userIds: [userId] } });
const setGroupRole = (id, userId, role) => groupAct(id, `role-${userId}`, { groupSetRole: { conversationId: id, userId, role: `GROUP_ROLE_${role.toUpperCase()}` } });
const muteInGroup = (id, userId, untilMs) => groupAct(id, `mute-${userId}`, { groupMute: { conversationId: id, userId, untilMs: String(untilMs) } });
const setGroupNotify = (id, muted) => groupAct(id, 'notify', { groupSetNotify: { conversationId: id, muted } });
// Someone who is not a member, on the group's link: joined at once (OPEN), or an application.
async function joinGroup(id) {
  const r = await groupAct(id, 'join', { groupJoin: { conversationId: id, message: '' } });
  if (!r) return;
  if (enumName(r.groupOk.state, 'GROUP_JOIN_STATE_') === 'pending') {
    groups.errors.set(id, 'You asked to join: an owner or admin will decide.');
    return groupsChanged();
  }
  const conv = conv_(id, '');
  conv.loaded = false;
  conv.hasMore = true;
  await loadGroupInfo(id);
  openConversation(id);
}

async function approveApplication(id, userId, accept) {
  if (await groupAct(id, `approve-${userId}`, { groupApprove: { conversationId: id, userId, accept } })) loadApplications(id);
}

// Leaving keeps the history readable until a second GroupLeave hides the group: the page hides
// it at once (a removed member does the same with "Remove from list").
async function leaveGroup(id) {
  const gone = groupOf(id)?.gone;
  if (!gone && !(await groupAct(id, 'leave', { groupLeave: { conversationId: id } }))) return false;
  try {
    await request({ groupLeave: { conversationId: id } });
  } catch (e) {
    if (e.code !== 'NOT_FOUND') console.warn('could not hide the group:', e.code, e.message);
  }
  forgetGroup(id);
  return true;
}

// Gone from this page's list (left here or on another device).
function forgetGroup(id) {
  markGone(id, 'left');
  state.convs.delete(id);
  if (state.current === id) {
    state.current = null;
    location.hash = '';
  }
  groupsChanged();
}

// Creates a group; resolves to {id, notAdded: [{userId, code}]} or throws an Error with the text.
async function createGroup({ name, memberIds, joinPolicy, historyVisible }) {
  let r;
  try {
    r = await request({
      groupCreate: {
        name, memberIds, historyVisible,
        joinPolicy: `JOIN_POLICY_${joinPolicy.toUpperCase()}`,
      },
    });
  } catch (e) {
    throw new Error(groupErrorText(e, 'create'));
  }
  const g = rememberGroup(r.groupCreated.group);
  groupsChanged();
  const notAdded = (r.groupCreated.results || []).map((x) => ({ userId: String(x.userId), code: String(x.code || '').replace('ERROR_CODE_', '') }));
  return { id: g.id, notAdded };
}

// What happened to the members that were not added, in words.
function notAddedText(results) {
  return results.map(({ userId, code }) => {
    const name = displayName(userId);
    switch (code) {
      case 'USER_NOT_FOUND': return `There is no user with id ${userId}.`;
      case 'NOT_ALLOWED': return `${name} does not take invitations from you.`;
      case 'TOO_MANY_GROUPS': return `${name} is in as many groups as they can be.`;
      case 'GROUP_FULL': return `The group is full: ${name} was not added.`;
      default: return `${name} was not added.`;
    }
  }).join(' ');
}

// Re-reads a group's info (and its member list and applications, if shown) once after a burst
// of events.
const refreshTimers = new Map();
function refreshGroup(id) {
  clearTimeout(refreshTimers.get(id));
  refreshTimers.set(id, setTimeout(() => {
    refreshTimers.delete(id);
    if (!state.loggedIn || groupOf(id)?.gone) return;
    loadGroupInfo(id);
    if (groups.members.has(id)) loadMembers(id, false);
    if (gv.panelFor === id && isManager(groupOf(id))) loadApplications(id);
  }, 250));
}

// ---- events (decoded and put in words by group-events.js) ----

// What event `ev` ends for me: 'removed', 'left' or 'dissolved', else null.
function goneBy(ev) {
  const me = state.session?.userId;
  if (!ev) return null;
  if (ev.kind === 'removed' && ev.userIds.includes(me)) return 'removed';
  if (ev.kind === 'left' && ev.actorId === me) return 'left';
  return ev.kind === 'dissolved' ? 'dissolved' : null;
}

// A group event pushed or synced (`seq` its seq): applied once, and only if the group's details
// here are from before it (a sync after a reconnect brings events the details already have).
function takeGroupEvent(conv, m, seq) {
  if (seq <= conv.infoSeq || conv.eventsApplied.has(seq)) return;
  conv.eventsApplied.add(seq);
  if (conv.eventsApplied.size > GROUP_EVENTS_APPLIED_MAX) {
    conv.eventsApplied.delete(conv.eventsApplied.values().next().value);
    refreshGroup(conv.id);
  }
  onGroupEvent(conv, m, seq);
}

// A group event arrived: applied here, so that an event in a big group does not make every
// member's page ask the server again. Only a group this page does not know yet, or the one whose
// panel is open, is read again.
function onGroupEvent(conv, m, seq) {
  const ev = eventOf(m);
  const me = state.session.userId;
  if (!ev) return;
  const g = groupOf(conv.id);
  const why = goneBy(ev);
  if (why === 'left') {
    forgetGroup(conv.id); // left on another device
    return;
  }
  if (why) {
    markGone(conv.id, why, seq);
    return;
  }
  if (g?.gone && (ev.kind === 'joined' || ev.kind === 'invited') && [ev.actorId, ...ev.userIds].includes(me)) {
    g.gone = null; // back in: its details are read again
    g.goneSeq = 0;
    return refreshGroup(conv.id);
  }
  if (!g || g.partial) return refreshGroup(conv.id);
  applyGroupEvent(g, groups.members.get(conv.id)?.list, ev, me);
  if (gv.panelFor === conv.id) refreshGroup(conv.id);
  groupsChanged();
}

function applyGroupEvent(g, members, ev, me) {
  // Each event is applied once (seq order), and the loaded members may be only the first pages.
  const joined = (ids) => {
    g.memberCount += ids.length;
    for (const id of ids) members?.set(id, { userId: id, role: 'member', joinedMs: Date.now(), mutedUntilMs: 0 });
  };
  const gone = (ids) => {
    g.memberCount = Math.max(0, g.memberCount - ids.length);
    for (const id of ids) members?.delete(id);
  };
  const member = (id) => members?.get(id);
  switch (ev.kind) {
    case 'joined': joined(ev.userIds.length ? ev.userIds : [ev.actorId]); break;
    case 'invited': joined(ev.userIds); break;
    case 'left': gone([ev.actorId]); break;
    case 'removed': gone(ev.userIds); break;
    case 'role_changed':
      for (const id of ev.userIds) {
        if (id === me) g.myRole = ev.role;
        if (member(id)) member(id).role = ev.role;
      }
      break;
    case 'owner_changed':
      for (const id of [g.ownerId, ...ev.userIds]) {
        const role = id === g.ownerId ? 'admin' : 'owner';
        if (id === me) g.myRole = role;
        if (member(id)) member(id).role = role;
      }
      g.ownerId = ev.userIds[0] || g.ownerId;
      break;
    case 'muted': case 'unmuted':
      for (const id of ev.userIds) {
        const until = ev.kind === 'muted' ? ev.untilMs : 0;
        if (id === me) g.myMutedUntilMs = until;
        if (member(id)) member(id).mutedUntilMs = until;
      }
      break;
    case 'mute_all': g.muteAll = !!ev.untilMs; break;
    case 'updated':
      for (const k of ['name', 'intro', 'joinPolicy', 'historyVisible']) if (ev[k] !== undefined) g[k] = ev[k];
      break;
    default: break;
  }
}

// ---- mentions ----

const mentionsMe = (m) => m.fromUserId !== state.session?.userId
  && (!!m.mentionAll || (m.mentionUserIds || []).map(String).includes(state.session?.userId));

// The members to mention for what follows an "@": loaded members whose name starts with it.
function mentionCandidates(convId, query) {
  const q = query.toLowerCase();
  const me = state.session.userId;
  const out = [];
  const g = groupOf(convId);
  if (isManager(g) && MENTION_ALL.startsWith(q)) out.push({ userId: MENTION_ALL, name: MENTION_ALL });
  for (const id of groups.members.get(convId)?.list.keys() || []) {
    if (id === me) continue;
    const p = profileOf(id);
    const names = [displayName(id), p?.username || ''].map((n) => n.toLowerCase());
    if (names.some((n) => n && n.startsWith(q))) out.push({ userId: id, name: displayName(id) });
  }
  return out.slice(0, 8);
}

// The mentions of a text about to be sent: those picked from the list that are still in it.
function mentionsIn(text, picked) {
  const ids = new Set();
  let all = false;
  for (const [name, id] of picked) {
    if (!text.includes(`@${name}`)) continue;
    if (id === MENTION_ALL) all = true;
    else ids.add(id);
  }
  return { mentionUserIds: [...ids], mentionAll: all };
}

// ---- read counts ----

// "Read by N" under my newest messages in an open group: counted by the server from read
// cursors. Asked again when a receipt (small groups) or a message arrives, and every
// READ_COUNT_POLL_MS while the group is open.
const readCountTimers = new Map();
function wantReadCounts(conv) {
  if (!conv?.group || readCountTimers.has(conv.id)) return;
  readCountTimers.set(conv.id, setTimeout(() => {
    readCountTimers.delete(conv.id);
    loadReadCounts(conv);
  }, 1000));
}

async function loadReadCounts(conv) {
  if (!state.loggedIn || state.current !== conv.id || document.visibilityState === 'hidden') return;
  const me = state.session.userId;
  const counts = groups.readCounts.get(conv.id) || new Map();
  groups.readCounts.set(conv.id, counts);
  // Not asked again: a message every other member has read.
  const newest = [];
  for (let i = conv.seqs.length - 1; i >= 0 && newest.length < READ_COUNT_OWN_MAX; i--) {
    const m = conv.messages.get(conv.seqs[i]);
    if (m.fromUserId === me && !isGroupEvent(m) && !isRecall(m)) newest.push(conv.seqs[i]);
  }
  const mine = newest.filter((seq) => !(counts.get(seq)?.count >= counts.get(seq)?.of && counts.get(seq)?.of > 0));
  try {
    const replies = await Promise.all(mine.map((seq) => request({ groupReadCount: { conversationId: conv.id, seq: String(seq) } })));
    for (const r of replies) {
      const ok = r.groupReadCountOk;
      // The count includes me (sending moves my own read cursor).
      counts.set(num(ok.seq), { count: Math.max(0, num(ok.readCount) - 1), of: Math.max(0, num(ok.memberCount) - 1), exact: !!ok.exact });
    }
  } catch (e) {
    if (e.code !== 'DISCONNECTED') console.warn('read counts:', e.code, e.message);
  }
  render();
}

setInterval(() => {
  const conv = state.convs.get(state.current);
  if (conv?.group) wantReadCounts(conv);
}, READ_COUNT_POLL_MS);

// ---- words ----

function groupErrorText(e, what) {
  const m = String(e.message || '');
  switch (e.code) {
    case 'FORBIDDEN': return what === 'invite' ? 'Only owners and admins can add members to this group.' : 'Only owners and admins can do that.';
    case 'NOT_FOUND': return what === 'join' ? 'There is no such group.' : 'You are not a member of this group.';
    case 'GROUP_FULL': return 'The group is full.';
    case 'TOO_MANY_GROUPS': return m.startsWith('you') || what === 'create' ? 'You are in as many groups as you can be. Leave one first.' : sentence(m);
    case 'GROUP_DISSOLVED': return 'This group was dissolved: nothing can change any more.';
    case 'JOIN_NOT_ALLOWED': return 'This group takes new members only from its admins.';
    case 'TOO_MANY_APPLICATIONS': return 'Too many requests to join are waiting. Try again later.';
    case 'TOO_MANY_ADMINS': return 'The group has as many admins as it can have.';
    case 'OWNER_MUST_TRANSFER': return 'You own this group: make someone else the owner before you leave.';
    case 'NOT_ALLOWED': return 'They do not take invitations from you.';
    default: return contactErrorText(e, '', what);
  }
}

function groupSendErrorText(e) {
  switch (e.code) {
    case 'MUTED': return e.retryAfterMs ? `You are muted in this group for ${waitText(e.retryAfterMs)}.` : 'Only admins can write in this group now.';
    case 'GROUP_DISSOLVED': return 'This group was dissolved.';
    case 'NOT_FOUND': return 'You are no longer a member of this group.';
    case 'TOO_MANY_MENTIONS': return 'Too many people mentioned in one message.';
    case 'FORBIDDEN': return 'Only owners and admins can mention everyone.';
    default: return null;
  }
}
