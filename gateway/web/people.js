// ringchat browser client, people: who a user id is. Profiles come from `getProfiles` in
// batches (one request for every id a render asked about) and are cached; friends' presence
// comes from the friend list and `presence` pushes. displayName() and avatar() are how a person
// is drawn everywhere, so no part of the page shows a bare 9-digit id once the profile is known.
'use strict';

const PROFILE_BATCH_MAX = 100; // the server's contacts.profiles_per_request_max
const PROFILE_FRESH_MS = 10 * 60000; // asked again after this (names change rarely)
const PROFILE_RETRY_MS = 30000; // after a failed fetch

const people = {
  profiles: new Map(), // userId -> Profile (protobuf JSON mapping: nickname, username, avatarUrl, ...)
  askedAt: new Map(), // userId -> when it was last asked for (also when it came back empty)
  wanted: new Set(), // ids for the next getProfiles
  flushQueued: false,
  presence: new Map(), // userId -> {state: 'online' | 'away' | 'busy' | 'offline', lastSeenMs}
  onChange: () => {}, // set by app.js: redraw
};

// The protocol's enum names without their prefix, lower case: PRESENCE_STATE_AWAY -> 'away'.
const enumName = (value, prefix) => String(value || '').replace(prefix, '').toLowerCase();

// Stores a profile from any reply or event (the freshest wins; they all come from the server).
function rememberProfile(p) {
  if (!p || !p.userId) return null;
  const id = String(p.userId);
  const profile = {
    userId: id,
    username: p.username || '',
    nickname: p.nickname || '',
    avatarUrl: p.avatarUrl || '',
    bio: p.bio || '',
    searchable: !!p.searchable,
    friendState: enumName(p.friendState, 'FRIEND_STATE_') || 'none',
    blocked: !!p.blocked,
    dmPolicy: enumName(p.dmPolicy, 'DM_POLICY_') || 'unspecified',
    hideLastSeen: !!p.hideLastSeen,
  };
  people.profiles.set(id, profile);
  people.askedAt.set(id, Date.now());
  contacts.version++;
  return profile;
}

// Changes what we know of our relation to a user without waiting for their whole profile.
function setRelation(userId, changes) {
  const p = people.profiles.get(String(userId));
  if (p) Object.assign(p, changes);
  contacts.version++;
}

// Asks for the profiles of `ids` unless known and fresh (`force`: ask anyway), in one batch with
// every other id asked for in the same task.
function wantProfiles(ids, force) {
  const now = Date.now();
  for (const raw of ids) {
    const id = String(raw || '');
    if (!/^[1-9][0-9]{0,19}$/.test(id)) continue;
    const asked = people.askedAt.get(id) || 0;
    const fresh = people.profiles.has(id) ? PROFILE_FRESH_MS : PROFILE_RETRY_MS;
    if (force || now - asked > fresh) people.wanted.add(id);
  }
  if (!people.wanted.size || people.flushQueued) return;
  people.flushQueued = true;
  setTimeout(flushProfiles, 0);
}

async function flushProfiles() {
  people.flushQueued = false;
  if (!net.ready || !state.loggedIn) return; // asked again by the renders after the next login
  const ids = [...people.wanted];
  people.wanted.clear();
  const now = Date.now();
  for (const id of ids) people.askedAt.set(id, now);
  for (let i = 0; i < ids.length; i += PROFILE_BATCH_MAX) {
    const batch = ids.slice(i, i + PROFILE_BATCH_MAX);
    try {
      const r = await request({ getProfiles: { userIds: batch } });
      for (const p of r.profileList.profiles || []) rememberProfile(p);
    } catch (e) {
      // Shown as "User <id>" meanwhile; asked again after PROFILE_RETRY_MS.
      for (const id of batch) people.askedAt.set(id, now - PROFILE_FRESH_MS + PROFILE_RETRY_MS);
      if (e.code === 'RATE_LIMITED') break;
    }
  }
  people.onChange();
}

const profileOf = (userId) => people.profiles.get(String(userId));

// The name to show: the nickname, else the username, else (profile not known or not visible)
// "User <id>". Asking for a name is what gets the profile fetched.
function displayName(userId) {
  const p = profileOf(userId);
  if (!p) wantProfiles([userId]);
  return p?.nickname || p?.username || `User ${userId}`;
}

// "@username · id 123" under a name, so two people with one nickname can be told apart.
function handleOf(userId) {
  const p = profileOf(userId);
  return p?.username ? `@${p.username}` : `id ${userId}`;
}

// A round avatar: the profile's picture, else a coloured circle with the name's initial, else a
// person's outline. `withPresence`: a dot in the corner for friends whose presence we know.
// `p`: the profile to draw (the profile dialog previews unsaved changes).
function avatar(userId, withPresence, p = profileOf(userId)) {
  const name = p?.nickname || p?.username;
  const span = el('span', { class: 'avatar', 'aria-hidden': 'true' });
  const initial = () => {
    if (name) span.textContent = Array.from(name)[0].toUpperCase();
    else span.innerHTML = ICONS.person;
  };
  if (/^https?:\/\/\S+$/i.test(p?.avatarUrl || '')) {
    // No referrer: the picture's host learns an address fetched it, not which page or who.
    const img = el('img', { src: p.avatarUrl, alt: '', referrerpolicy: 'no-referrer', loading: 'lazy', decoding: 'async' });
    img.onerror = () => { img.remove(); initial(); };
    span.append(img);
  } else initial();
  span.style.setProperty('--hue', String(Number(BigInt(userId || 0) * 47n % 360n))); // CSSOM: the CSP forbids style attributes
  const pres = withPresence && people.presence.get(String(userId));
  if (pres) {
    const wrap = el('span', { class: 'avatar-wrap' }, span);
    wrap.append(el('span', { class: `presence-dot ${pres.state}`, dataset: { presence: pres.state }, role: 'img', 'aria-label': PRESENCE_LABELS[pres.state] || pres.state }));
    return wrap;
  }
  return span;
}

// ---- presence ----

const PRESENCE_LABELS = { online: 'Online', away: 'Away', busy: 'Busy', offline: 'Offline', invisible: 'Invisible' };

function rememberPresence(userId, p) {
  if (!p) return;
  const state = enumName(p.state, 'PRESENCE_STATE_') || 'offline';
  people.presence.set(String(userId), { state: state === 'unspecified' ? 'offline' : state, lastSeenMs: num(p.lastSeenMs) });
  contacts.version++;
}

// "Online", "Away", "Last seen 5 minutes ago", "Last seen yesterday at 21:04", or "Offline".
function presenceText(userId) {
  const p = people.presence.get(String(userId));
  if (!p) return '';
  if (p.state !== 'offline') return PRESENCE_LABELS[p.state] || '';
  return p.lastSeenMs ? `Last seen ${lastSeenText(p.lastSeenMs)}` : 'Offline';
}

function lastSeenText(ms) {
  const ago = Date.now() + state.skewMs - ms; // last seen is the server's clock
  if (ago < 60000) return 'just now';
  if (ago < 3600000) {
    const m = Math.floor(ago / 60000);
    return `${m} minute${m > 1 ? 's' : ''} ago`;
  }
  const days = daysAgo(ms);
  if (days === 0) return `today at ${formatTime(ms)}`;
  if (days === 1) return `yesterday at ${formatTime(ms)}`;
  return `on ${shortDateFmt.format(ms)}`;
}
