// ringchat browser client, the groups view: a group's row parts in the conversation list, its
// header, "read by N" under my messages, the group info panel (settings, my notifications, add
// members, applications, members with roles and what owners and admins can do to them, leave)
// and the new group dialog. The model is groups.js; render() in app.js calls these. The @-member
// list of the composer is in mentions-view.js.
'use strict';

const MUTE_FOR_MS = 3600000; // "Mute 1 h" in a member's actions
const POLICY_CHOICES = [
  ['open', 'Anyone can join'],
  ['approval', 'Anyone can ask; an admin approves'],
  ['invite_only', 'Only owners and admins add people'],
];
const ROLE_LABELS = { owner: 'Owner', admin: 'Admin', member: 'Member' };
const GONE_TEXT = {
  removed: 'You are not a member of this group. Members share its link to let others in.',
  left: 'You left this group.',
  dissolved: 'This group was dissolved. Its messages stay readable.',
};

const gv = {
  panelFor: null, // the group whose info panel is open
  drawn: '', // the versions on screen in the dialogs
  openMember: null, // the member whose actions are unfolded
  confirm: null, // {userId, action: 'remove' | 'owner'} or {action: 'leave'}: asked to confirm
  invitePicked: new Set(), // friends ticked in "Add members"
  newPicked: new Set(), // friends ticked in the new group dialog
  notice: null, // {id, text}: what the last action did, when it is not obvious
  settingsEdited: false, // the settings form was changed: not refilled under the user's hands
};

// ---- the list, the header, messages ----

const groupName = (id) => groupOf(id)?.name || 'Group';
const groupAvatar = (id) => {
  const a = avatar(id, false, { nickname: groupName(id) });
  a.classList.add('group-avatar');
  return a;
};

// After a group's name in the list: its size, and a crossed bell when I muted it.
function groupListMarks(c) {
  const count = groupOf(c.id)?.memberCount;
  return el('span', { class: 'group-marks' },
    count ? el('span', { class: 'member-count', title: `${count} members`, 'aria-label': `${count} members` }, icon('people'), String(count)) : null,
    c.muted ? el('span', { class: 'muted-mark', title: 'Notifications muted', 'aria-label': 'Notifications muted' }, icon('bellOff')) : null);
}

function mentionBadge(c) {
  if (!c.unreadMentions) return null;
  return el('span', { class: 'badge mention', title: 'You were mentioned', 'aria-label': `${c.unreadMentions} unread mention${c.unreadMentions > 1 ? 's' : ''}` }, '@');
}

function renderGroupHeader(conv) {
  const g = groupOf(conv.id);
  $('peer-title').textContent = groupName(conv.id);
  $('peer-avatar').replaceChildren(groupAvatar(conv.id));
  const count = g?.memberCount || 0;
  $('peer-sub').textContent = g?.gone ? GONE_TEXT[g.gone] : count ? `${count} member${count > 1 ? 's' : ''}` : '';
  $('peer-sub').dataset.presence = '';
  // What stops me from writing, said where the composer would be.
  let why = g?.gone ? GONE_TEXT[g.gone] : g?.dissolved ? GONE_TEXT.dissolved : null;
  if (!why && g?.myMutedUntilMs > Date.now() + state.skewMs) why = `You are muted in this group until ${untilText(g.myMutedUntilMs)}.`;
  else if (!why && g?.muteAll && !isManager(g)) why = 'Only owners and admins can write in this group now.';
  const error = !gv.panelFor && groups.errors.get(conv.id);
  const bar = $('contact-bar');
  bar.hidden = !why && !error;
  // Not a member (yet): on a group's link, the way in.
  const join = g?.gone === 'removed' && state.loggedIn
    ? el('button', { id: 'group-join', type: 'button', class: 'small', disabled: groupBusy(conv.id, 'join'), onclick: () => joinGroup(conv.id) }, 'Join')
    : null;
  const hide = (g?.gone === 'removed' || g?.gone === 'dissolved') && conv.messages.size && state.loggedIn
    ? el('button', { id: 'group-hide', type: 'button', class: 'small secondary', onclick: () => leaveGroup(conv.id) }, 'Remove from list')
    : null;
  bar.replaceChildren(
    why ? el('span', { class: 'bar-text' }, why) : null,
    join,
    hide,
    error ? el('p', { class: 'person-error', role: 'alert' }, error) : null,
    error ? el('button', { type: 'button', class: 'small ghost', onclick: () => { groups.errors.delete(conv.id); groupsChanged(); } }, 'Dismiss') : null);
  if (why) $('composer').hidden = true;
}

// "Read by N" under one of my messages, once the server counted it.
function readByOf(conv, seq) {
  const c = groups.readCounts.get(conv.id)?.get(seq);
  if (!c) return null;
  const text = c.count ? `Read by ${c.count}${c.exact ? '' : '+'}` : 'Sent';
  return el('span', { class: 'read-by', dataset: { readCount: c.count }, title: `Read by ${c.count} of ${c.of} other members` }, text);
}

// ---- the group info panel ----

function openGroupPanel() {
  const id = state.current;
  if (!groupOf(id)) return;
  gv.panelFor = id;
  gv.openMember = null;
  gv.confirm = null;
  gv.notice = null;
  gv.invitePicked.clear();
  groups.errors.delete(id);
  $('gi-ids').value = '';
  gv.settingsEdited = false;
  fillGroupSettings(groupOf(id));
  gv.drawn = '';
  $('group-dialog').showModal();
  loadGroupInfo(id).then(() => fillGroupSettings(groupOf(id)));
  loadMembers(id, false);
  if (isManager(groupOf(id))) loadApplications(id);
}

function closeGroupPanel() {
  gv.panelFor = null;
  if ($('group-dialog').open) $('group-dialog').close();
  render();
}

function fillGroupSettings(g) {
  if (!g || gv.panelFor !== g.id || gv.settingsEdited) return;
  $('gs-name').value = g.name;
  $('gs-policy').value = g.joinPolicy;
  $('gs-history').checked = g.historyVisible;
  $('gs-mute-all').checked = g.muteAll;
  $('group-notify').checked = g.notifyMuted;
}

// Both dialogs, drawn again only after something they show changed.
function renderGroupPanel() {
  if (!state.convs.get(state.current)?.group) hideMentions();
  const key = `${groups.version}/${contacts.version}`;
  if (gv.drawn === key) return;
  gv.drawn = key;
  if ($('new-group-dialog').open) $('ng-friends').replaceChildren(...pickList(friendIds(), gv.newPicked, 'ng'));
  const id = gv.panelFor;
  const g = id && groupOf(id);
  if (!g || !$('group-dialog').open) return;
  if (g.gone === 'left') return closeGroupPanel();
  const count = g.memberCount;
  $('group-avatar').replaceChildren(groupAvatar(id));
  $('group-title').textContent = groupName(id);
  $('group-summary').textContent = `${count} member${count === 1 ? '' : 's'} · ${POLICY_CHOICES.find(([p]) => p === g.joinPolicy)?.[1] || ''}`;
  $('group-link').hidden = !!g.gone || g.joinPolicy === 'invite_only';
  $('group-error').textContent = groups.errors.get(id) || '';
  $('group-notice').textContent = gv.notice?.id === id ? gv.notice.text : '';
  const manager = isManager(g) && !g.gone && !g.dissolved;
  $('group-settings').hidden = !manager;
  $('gs-save').disabled = groupBusy(id, 'update');
  $('group-notify-row').hidden = !!g.gone;
  const members = groups.members.get(id);
  const canInvite = !g.gone && !g.dissolved && (manager || g.joinPolicy !== 'invite_only');
  $('group-invite').hidden = !canInvite;
  if (canInvite) {
    const inGroup = members?.list || new Map();
    $('group-invite-friends').replaceChildren(...pickList(friendIds().filter((f) => !inGroup.has(f)), gv.invitePicked, 'gi'));
    $('gi-send').disabled = groupBusy(id, 'invite');
  }
  $('group-applications').hidden = !manager || !groups.applications.get(id)?.list.length;
  if (manager) $('group-applications').replaceChildren(...applicationRows(id));
  $('group-members').replaceChildren(...memberRows(id, g, members));
  $('group-leave-row').replaceChildren(...leaveRow(id, g));
}

const friendIds = () => [...contacts.friends.keys()].sort((a, b) => displayName(a).localeCompare(displayName(b)));

// Tickable people (friends), each a check box in its label.
function pickList(ids, picked, key) {
  for (const id of picked) if (!ids.includes(id)) picked.delete(id);
  if (!ids.length) return [el('p', { class: 'note' }, contacts.loaded ? 'No friends to pick: add people by user id.' : 'Loading your friends…')];
  return ids.map((id) => {
    const box = el('input', { type: 'checkbox', value: id, checked: picked.has(id), dataset: { key: `${key}-${id}` } });
    box.onchange = () => { if (box.checked) picked.add(id); else picked.delete(id); };
    return el('label', { class: 'check pick', dataset: { userId: id } }, box, avatar(id), el('span', { class: 'pick-name' }, displayName(id)));
  });
}

function applicationRows(id) {
  const apps = groups.applications.get(id)?.list || [];
  return [el('h3', null, 'Requests to join', el('span', { class: 'count' }, String(apps.length))),
    el('ul', { class: 'people' }, ...apps.map((a) => el('li', { class: 'person', dataset: { userId: a.userId } },
      el('div', { class: 'person-row' },
        el('div', { class: 'person-main' }, avatar(a.userId), el('span', { class: 'person-body' },
          el('span', { class: 'person-name' }, displayName(a.userId)),
          el('span', { class: 'person-sub' }, `${handleOf(a.userId)} · ${listTime(a.sentAtMs)}`))),
        el('span', { class: 'person-actions' },
          memberButton(id, a.userId, 'approve', 'Approve', '', () => approveApplication(id, a.userId, true)),
          memberButton(id, a.userId, 'reject', 'Reject', 'secondary', () => approveApplication(id, a.userId, false)))),
      a.message ? el('p', { class: 'request-message' }, a.message) : null)))];
}

function memberRows(id, g, members) {
  const out = [el('h3', null, 'Members', el('span', { class: 'count' }, String(g.memberCount)))];
  if (!members) return out;
  const me = state.session.userId;
  const ids = [...members.list.keys()].sort((a, b) => GROUP_ROLES[members.list.get(b).role] - GROUP_ROLES[members.list.get(a).role]
    || displayName(a).localeCompare(displayName(b)));
  out.push(el('ul', { class: 'people' }, ...ids.map((uid) => {
    const m = members.list.get(uid);
    const muted = m.mutedUntilMs > Date.now() + state.skewMs;
    const sub = [ROLE_LABELS[m.role], muted ? `muted until ${untilText(m.mutedUntilMs)}` : null, uid === me ? 'you' : null].filter(Boolean).join(' · ');
    const actions = memberActions(id, g, m);
    const more = actions.length ? el('button', {
      type: 'button', class: 'icon-button more-button', 'aria-label': `More for ${displayName(uid)}`,
      'aria-expanded': String(gv.openMember === uid), dataset: { action: 'more' },
      onclick: () => { gv.openMember = gv.openMember === uid ? null : uid; gv.confirm = null; groupsChanged(); },
    }) : null;
    if (more) more.innerHTML = ICONS.more;
    const li = el('li', { class: 'person member', dataset: { userId: uid, role: m.role } },
      el('div', { class: 'person-row' },
        el('div', { class: 'person-main' }, avatar(uid, true), el('span', { class: 'person-body' },
          el('span', { class: 'person-name' }, displayName(uid)),
          el('span', { class: `person-sub role-${m.role}` }, sub))),
        el('span', { class: 'person-actions' }, more)));
    if (gv.openMember === uid) li.append(memberMore(id, uid, actions));
    return li;
  })));
  if (members.error) out.push(el('p', { class: 'inline-error', role: 'alert' }, el('span', null, members.error)));
  if (members.loading) out.push(el('p', { class: 'note' }, 'Loading members…'));
  else if (members.hasMore) out.push(el('button', { id: 'members-more', type: 'button', class: 'ghost small more', onclick: () => loadMembers(id, true) }, 'Load more'));
  return out;
}

// What I may do to member `m`: owners to anyone else; admins to members (the server checks too).
function memberActions(id, g, m) {
  const uid = m.userId;
  if (uid === state.session.userId || g.gone || g.dissolved || !isManager(g) || GROUP_ROLES[m.role] >= GROUP_ROLES[g.myRole]) return [];
  const b = (action, label, cls, onclick) => memberButton(id, uid, action, label, cls, onclick);
  const ask = (action) => () => { gv.confirm = { userId: uid, action }; groupsChanged(); };
  const out = [];
  if (g.myRole === 'owner') {
    out.push(m.role === 'admin'
      ? b('role', 'Make member', 'secondary', () => setGroupRole(id, uid, 'member'))
      : b('role', 'Make admin', 'secondary', () => setGroupRole(id, uid, 'admin')));
    out.push(b('owner', 'Make owner', 'secondary', ask('owner')));
  }
  out.push(m.mutedUntilMs > Date.now() + state.skewMs
    ? b('mute', 'Unmute', 'secondary', () => muteInGroup(id, uid, 0))
    : b('mute', 'Mute 1 h', 'secondary', () => muteInGroup(id, uid, Date.now() + state.skewMs + MUTE_FOR_MS)));
  out.push(b('remove', 'Remove', 'secondary danger-text', ask('remove')));
  return out;
}

function memberMore(id, uid, actions) {
  const c = gv.confirm?.userId === uid ? gv.confirm.action : null;
  const done = () => { gv.openMember = null; gv.confirm = null; };
  const keep = memberButton(id, uid, 'keep', 'Cancel', 'ghost', () => { gv.confirm = null; groupsChanged(); });
  if (c === 'remove') {
    return el('div', { class: 'confirm' }, el('span', null, `Remove ${displayName(uid)} from the group? They stop getting its messages.`),
      el('span', { class: 'confirm-actions' }, memberButton(id, uid, 'confirm-remove', 'Remove', 'danger', () => removeFromGroup(id, uid).then(done)), keep));
  }
  if (c === 'owner') {
    return el('div', { class: 'confirm' }, el('span', null, `Make ${displayName(uid)} the owner? You become an admin.`),
      el('span', { class: 'confirm-actions' }, memberButton(id, uid, 'confirm-owner', 'Make owner', 'danger',
        () => groupAct(id, `owner-${uid}`, { groupTransfer: { conversationId: id, userId: uid } }).then(done)), keep));
  }
  return el('div', { class: 'more-actions' }, ...actions);
}

function memberButton(id, uid, action, label, cls, onclick) {
  const what = action.startsWith('confirm-') ? action.slice(8) : action;
  return el('button', { type: 'button', class: `small ${cls || ''}`, disabled: groupBusy(id, `${what}-${uid}`), dataset: { action }, onclick }, label);
}

function leaveRow(id, g) {
  if (g.gone) return [];
  if (gv.confirm?.action === 'leave') {
    return [el('div', { class: 'confirm' }, el('span', null, `Leave “${groupName(id)}”? You stop getting its messages.`),
      el('span', { class: 'confirm-actions' },
        el('button', { id: 'confirm-leave', type: 'button', class: 'small danger', disabled: groupBusy(id, 'leave'), onclick: () => leaveGroup(id).then((left) => { gv.confirm = null; if (left) closeGroupPanel(); }) }, 'Leave'),
        el('button', { type: 'button', class: 'small ghost', onclick: () => { gv.confirm = null; groupsChanged(); } }, 'Stay')))];
  }
  return [el('button', { id: 'group-leave', type: 'button', class: 'secondary danger-text', onclick: () => { gv.confirm = { action: 'leave' }; groupsChanged(); } }, 'Leave group')];
}

// User ids typed in a field: digits, separated by commas or spaces. Throws with the text to show.
function parseIds(text) {
  const ids = text.split(/[\s,;]+/).filter(Boolean);
  const bad = ids.find((x) => !/^[0-9]{1,20}$/.test(x));
  if (bad) throw new Error(`“${bad}” is not a user id: ids are digits only, like 100000001.`);
  return ids.filter((x) => x !== state.session.userId);
}

async function submitGroupSettings() {
  const id = gv.panelFor;
  const g = groupOf(id);
  const name = $('gs-name').value.trim();
  const fields = {};
  if (!name || utf8Bytes(name) > GROUP_NAME_BYTES_MAX) {
    groups.errors.set(id, `A group name has 1 to ${GROUP_NAME_BYTES_MAX} bytes.`);
    return groupsChanged();
  }
  if (name !== g.name) fields.name = name;
  if ($('gs-policy').value !== g.joinPolicy) fields.joinPolicy = $('gs-policy').value;
  if ($('gs-history').checked !== g.historyVisible) fields.historyVisible = $('gs-history').checked;
  if ($('gs-mute-all').checked !== g.muteAll) fields.muteAll = $('gs-mute-all').checked;
  if (!Object.keys(fields).length) {
    gv.notice = { id, text: 'Nothing changed.' };
    return groupsChanged();
  }
  if (await updateGroup(id, fields)) {
    Object.assign(g, fields);
    gv.settingsEdited = false;
    gv.notice = { id, text: 'Saved.' };
    groupsChanged();
  }
}

async function submitInvite() {
  const id = gv.panelFor;
  let ids;
  try {
    ids = [...new Set([...gv.invitePicked, ...parseIds($('gi-ids').value)])];
  } catch (e) {
    groups.errors.set(id, e.message);
    return groupsChanged();
  }
  if (!ids.length) {
    groups.errors.set(id, 'Tick friends or enter user ids to add.');
    return groupsChanged();
  }
  const r = await inviteToGroup(id, ids);
  if (!r) return;
  const notAdded = (r.groupOk.results || []).map((x) => ({ userId: String(x.userId), code: String(x.code || '').replace('ERROR_CODE_', '') }));
  const pending = enumName(r.groupOk.state, 'GROUP_JOIN_STATE_') === 'pending';
  gv.notice = { id, text: pending ? 'Asked an admin to approve them.' : notAdded.length ? notAddedText(notAdded) : `Added ${ids.length === 1 ? displayName(ids[0]) : `${ids.length} people`}.` };
  gv.invitePicked.clear();
  $('gi-ids').value = '';
  groupsChanged();
}

async function setNotifyFromPanel() {
  const id = gv.panelFor;
  const muted = $('group-notify').checked;
  if (await setGroupNotify(id, muted)) {
    const conv = state.convs.get(id);
    if (conv) conv.muted = muted;
    if (groupOf(id)) groupOf(id).notifyMuted = muted;
  } else $('group-notify').checked = !muted;
  groupsChanged();
}

// ---- the new group dialog ----

function openNewGroup() {
  gv.newPicked.clear();
  $('ng-name').value = '';
  $('ng-ids').value = '';
  $('ng-policy').value = 'open';
  $('ng-history').checked = true;
  $('ng-error').textContent = '';
  $('ng-create').disabled = false;
  gv.drawn = '';
  $('new-group-dialog').showModal();
  if (!contacts.loaded) loadContacts();
  render();
}

async function submitNewGroup() {
  $('ng-error').textContent = '';
  const name = $('ng-name').value.trim();
  let memberIds;
  try {
    if (!name) throw new Error('Give the group a name.');
    if (utf8Bytes(name) > GROUP_NAME_BYTES_MAX) throw new Error(`The name is too long: at most ${GROUP_NAME_BYTES_MAX} bytes.`);
    memberIds = [...new Set([...gv.newPicked, ...parseIds($('ng-ids').value)])];
  } catch (e) {
    $('ng-error').textContent = e.message;
    return;
  }
  $('ng-create').disabled = true;
  try {
    const { id, notAdded } = await createGroup({ name, memberIds, joinPolicy: $('ng-policy').value, historyVisible: $('ng-history').checked });
    $('new-group-dialog').close();
    if (notAdded.length) groups.errors.set(id, notAddedText(notAdded));
    goToHash(`#group/${id}`);
  } catch (e) {
    $('ng-error').textContent = e.message;
  } finally {
    $('ng-create').disabled = false;
  }
}

// ---- input ----

for (const select of [$('gs-policy'), $('ng-policy')]) {
  select.replaceChildren(...POLICY_CHOICES.map(([value, label]) => el('option', { value }, label)));
}
$('new-group').onclick = openNewGroup;
$('new-group-form').onsubmit = (ev) => { ev.preventDefault(); submitNewGroup(); };
for (const b of [$('ng-close'), $('ng-cancel')]) b.onclick = () => $('new-group-dialog').close();
$('group-info-button').onclick = openGroupPanel;
$('group-close').onclick = closeGroupPanel;
$('group-dialog').onclose = () => { gv.panelFor = null; render(); };
$('group-settings').onsubmit = (ev) => { ev.preventDefault(); submitGroupSettings(); };
$('group-settings').oninput = () => { gv.settingsEdited = true; };
$('group-invite').onsubmit = (ev) => { ev.preventDefault(); submitInvite(); };
$('group-notify').onchange = setNotifyFromPanel;
// The group's link: whoever opens it may join (OPEN) or ask to (APPROVAL).
$('group-link').onclick = async () => {
  const link = `${location.origin}/#group/${gv.panelFor}`;
  try {
    await navigator.clipboard.writeText(link);
    gv.notice = { id: gv.panelFor, text: 'Link copied: whoever opens it can join.' };
  } catch {
    gv.notice = { id: gv.panelFor, text: link };
  }
  groupsChanged();
};
