// ringchat browser client, me: the header's button with my name and presence, its menu
// (show me as online / away / busy / invisible, edit profile, log out) and the profile dialog
// (display name, picture, about, who can find me, who can start a chat, hide last seen).
'use strict';

// The server's defaults for contacts.*_bytes_max; it checks them too and its answer is shown.
const PROFILE_LIMITS = { nickname: 64, avatarUrl: 512, bio: 512 };

function renderMe() {
  const me = state.session;
  if (!me) return;
  const mine = myProfile();
  $('me').textContent = mine ? displayName(me.userId) : me.username || displayName(me.userId);
  const pic = avatar(me.userId);
  $('me-avatar').replaceChildren(el('span', { class: 'avatar-wrap' }, pic,
    el('span', { class: `presence-dot ${contacts.presence}`, dataset: { presence: contacts.presence } })));
  $('me-presence').textContent = PRESENCE_LABELS[contacts.presence] || '';
  $('me-button').dataset.presence = contacts.presence;
  $('me-button').setAttribute('aria-label', `${displayName(me.userId)}, shown as ${PRESENCE_LABELS[contacts.presence]}: status and profile`);
  for (const b of $('me-menu').querySelectorAll('[data-presence]')) b.setAttribute('aria-checked', String(b.dataset.presence === contacts.presence));
  $('presence-error').hidden = !contacts.presenceError;
  $('presence-error').textContent = contacts.presenceError || '';
}

function toggleMenu(open) {
  const show = open ?? $('me-menu').hidden;
  $('me-menu').hidden = !show;
  $('me-button').setAttribute('aria-expanded', String(show));
  if (show) $('me-menu').querySelector('[aria-checked="true"]')?.focus();
}

// ---- the profile dialog ----

function openProfile() {
  toggleMenu(false);
  const p = myProfile() || {};
  $('pf-nickname').value = p.nickname || '';
  $('pf-avatar').value = p.avatarUrl || '';
  $('pf-bio').value = p.bio || '';
  $('pf-searchable').checked = p.searchable !== false;
  $('pf-hide-last-seen').checked = !!p.hideLastSeen;
  $('pf-dm').value = p.dmPolicy === 'friends' ? 'friends' : 'everyone';
  $('profile-error').textContent = '';
  $('profile-save').disabled = false;
  previewProfile();
  $('profile-dialog').showModal();
  if (!myProfile()) loadContacts(); // not loaded yet (or failed): the form fills in when it is
}

// The dialog's header: how others will see me with what is typed.
function previewProfile() {
  const id = state.session.userId;
  const p = myProfile();
  const nickname = $('pf-nickname').value.trim();
  const shown = { ...(p || { userId: id, username: state.session.username }), nickname, avatarUrl: $('pf-avatar').value.trim() };
  $('profile-avatar').replaceChildren(avatar(id, false, shown));
  $('profile-name').textContent = nickname || shown.username || displayName(id);
  $('profile-handle').textContent = `@${shown.username || ''} · id ${id}`;
}

// What differs from the saved profile, checked against the limits; throws with the text to show.
function profileChanges() {
  const p = myProfile() || {};
  const fields = {};
  const nickname = $('pf-nickname').value.trim();
  const avatarUrl = $('pf-avatar').value.trim();
  const bio = $('pf-bio').value.replace(/\r\n?/g, '\n').trim();
  const over = (what, text, max) => {
    if (utf8Bytes(text) > max) throw new Error(`${what} is too long: at most ${max} bytes.`);
  };
  over('The display name', nickname, PROFILE_LIMITS.nickname);
  over('The picture link', avatarUrl, PROFILE_LIMITS.avatarUrl);
  over('“About you”', bio, PROFILE_LIMITS.bio);
  if (avatarUrl && !/^https?:\/\/\S+$/i.test(avatarUrl)) throw new Error('The picture must be a link starting with https:// or http://.');
  if (nickname !== (p.nickname || '')) fields.nickname = nickname;
  if (avatarUrl !== (p.avatarUrl || '')) fields.avatarUrl = avatarUrl;
  if (bio !== (p.bio || '')) fields.bio = bio;
  if ($('pf-searchable').checked !== (p.searchable !== false)) fields.searchable = $('pf-searchable').checked;
  if ($('pf-hide-last-seen').checked !== !!p.hideLastSeen) fields.hideLastSeen = $('pf-hide-last-seen').checked;
  const dm = $('pf-dm').value;
  const dmChanged = dm !== (p.dmPolicy === 'friends' ? 'friends' : 'everyone');
  return { fields, dm: dmChanged ? dm : undefined };
}

async function submitProfile() {
  $('profile-error').textContent = '';
  let changes;
  try {
    changes = profileChanges();
  } catch (e) {
    $('profile-error').textContent = e.message;
    return;
  }
  $('profile-save').disabled = true;
  try {
    await saveProfile(changes.fields, changes.dm);
    $('profile-dialog').close();
  } catch (e) {
    $('profile-error').textContent = e.message;
  } finally {
    $('profile-save').disabled = false;
  }
}

// ---- input ----

$('me-button').onclick = (ev) => { ev.stopPropagation(); toggleMenu(); };
for (const b of $('me-menu').querySelectorAll('[data-presence]')) {
  b.onclick = () => { toggleMenu(false); setMyPresence(b.dataset.presence); };
}
$('edit-profile').onclick = openProfile;
document.addEventListener('click', (ev) => {
  if (!$('me-menu').hidden && !$('me-menu').contains(ev.target)) toggleMenu(false);
});
document.addEventListener('keydown', (ev) => {
  if ($('me-menu').hidden) return;
  if (ev.key === 'Escape') {
    toggleMenu(false);
    $('me-button').focus();
  } else if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
    // Up and down move between the menu's items, round the end.
    ev.preventDefault();
    const items = [...$('me-menu').querySelectorAll('button')];
    const at = items.indexOf(document.activeElement);
    const next = at < 0 ? 0 : (at + (ev.key === 'ArrowDown' ? 1 : items.length - 1)) % items.length;
    items[next].focus();
  }
});
$('profile-form').onsubmit = (ev) => { ev.preventDefault(); submitProfile(); };
$('profile-close').onclick = () => $('profile-dialog').close();
$('profile-cancel').onclick = () => $('profile-dialog').close();
$('pf-nickname').oninput = previewProfile;
$('pf-avatar').oninput = previewProfile;
