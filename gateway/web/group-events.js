// ringchat browser client, group events: the content of a CONTENT_TYPE_GROUP_EVENT message is
// an encoded GroupEvent (protobuf, base64 in the JSON mapping), decoded here without a library,
// and each event put in one line of words ("alice added bob", "bob left").
'use strict';

const EVENT_KINDS = ['unspecified', 'created', 'joined', 'invited', 'left', 'removed', 'applied', 'role_changed',
  'muted', 'unmuted', 'mute_all', 'updated', 'owner_changed', 'dissolved', 'rejected'];
const JOIN_POLICIES = ['open', 'approval', 'invite_only'];
const ROLES = ['member', 'admin', 'owner'];

// One varint of `bytes` at `at.i` (moved past it), as a BigInt (uint64 needs more than 53 bits).
function readVarint(bytes, at) {
  let v = 0n;
  for (let shift = 0n; shift < 70n; shift += 7n) {
    if (at.i >= bytes.length) throw new Error('truncated varint');
    const b = bytes[at.i++];
    v |= BigInt(b & 0x7f) << shift;
    if (b < 0x80) return v;
  }
  throw new Error('varint too long');
}

// Protobuf wire format: field number -> values (BigInt for varints, bytes for length-delimited).
function protoFields(bytes) {
  const fields = new Map();
  const at = { i: 0 };
  while (at.i < bytes.length) {
    const key = Number(readVarint(bytes, at));
    const wire = key & 7;
    let v;
    if (wire === 0) v = readVarint(bytes, at);
    else if (wire === 2) {
      const n = Number(readVarint(bytes, at));
      if (at.i + n > bytes.length) throw new Error('truncated field');
      v = bytes.subarray(at.i, at.i + n);
      at.i += n;
    } else if (wire === 1 || wire === 5) {
      at.i += wire === 1 ? 8 : 4;
      continue;
    } else throw new Error(`wire type ${wire}`);
    const no = key >>> 3;
    if (!fields.has(no)) fields.set(no, []);
    fields.get(no).push(v);
  }
  return fields;
}

// A repeated uint64 field's values, packed (proto3's default) or not.
function uint64s(values) {
  const out = [];
  for (const v of values || []) {
    if (typeof v === 'bigint') out.push(String(v));
    else for (const at = { i: 0 }; at.i < v.length;) out.push(String(readVarint(v, at)));
  }
  return out;
}

// A GROUP_EVENT message's content (base64 of an encoded GroupEvent), or null if unreadable.
function decodeGroupEvent(b64) {
  try {
    const f = protoFields(Uint8Array.from(atob(b64 || ''), (c) => c.charCodeAt(0)));
    const one = (no) => f.get(no)?.[f.get(no).length - 1];
    const str = (no) => (one(no) === undefined ? undefined : dec.decode(one(no)));
    return {
      kind: EVENT_KINDS[Number(one(1) || 0n)] || 'unspecified',
      actorId: String(one(2) || 0n),
      userIds: uint64s(f.get(3)),
      role: ROLES[Number(one(4) || 0n)] || 'member',
      untilMs: Number(one(5) || 0n),
      name: str(6),
      avatarUrl: str(7),
      intro: str(8),
      joinPolicy: one(9) === undefined ? undefined : JOIN_POLICIES[Number(one(9))],
      historyVisible: one(10) === undefined ? undefined : one(10) !== 0n,
    };
  } catch (e) {
    console.warn('unreadable group event:', e.message);
    return null;
  }
}

const eventOf = (m) => {
  if (!('event' in m)) m.event = decodeGroupEvent(m.content); // decoded once per message
  return m.event;
};
const isGroupEvent = (m) => m.contentType === 'CONTENT_TYPE_GROUP_EVENT';

// "You", or the person's name.
const who = (id, capital) => (id === state.session?.userId ? (capital ? 'You' : 'you') : displayName(id));

// "bob", "bob and carol", "bob, carol and 3 others".
function whoList(ids) {
  const names = ids.map((id) => who(id));
  if (names.length <= 2) return names.join(' and ');
  if (names.length === 3) return `${names[0]}, ${names[1]} and ${names[2]}`;
  return `${names[0]}, ${names[1]} and ${names.length - 2} others`;
}

const POLICY_TEXT = { open: 'anyone can join', approval: 'joining needs approval', invite_only: 'only admins add members' };

// One line for a group event: "alice added bob", "bob left", "alice renamed the group to …".
function groupEventText(ev) {
  if (!ev) return 'The group changed.';
  const actor = who(ev.actorId, true);
  const users = whoList(ev.userIds);
  switch (ev.kind) {
    case 'created': return `${actor} created the group${ev.name ? ` “${ev.name}”` : ''}${ev.userIds.length ? ` with ${users}` : ''}`;
    case 'joined': return `${ev.userIds.length && ev.userIds[0] !== ev.actorId ? users : actor} joined`;
    case 'invited': return `${actor} added ${users}`;
    case 'left': return `${actor} left`;
    case 'removed': return `${actor} removed ${users}`;
    case 'applied': return `${actor} asked to join`;
    case 'rejected': return `${actor} turned down ${users}’s request to join`;
    case 'role_changed': return ev.role === 'admin' ? `${actor} made ${users} an admin` : `${actor} made ${users} a member (no longer admin)`;
    case 'muted': return `${actor} muted ${users}${ev.untilMs ? ` until ${untilText(ev.untilMs)}` : ''}`;
    case 'unmuted': return `${actor} unmuted ${users}`;
    case 'mute_all': return ev.untilMs ? `${actor} allowed only admins to write` : `${actor} allowed everyone to write`;
    case 'owner_changed': return `${actor} made ${users} the owner`;
    case 'dissolved': return `${actor} dissolved the group`;
    case 'updated': {
      const parts = [];
      if (ev.name !== undefined) parts.push(`renamed the group to “${ev.name}”`);
      if (ev.joinPolicy !== undefined) parts.push(`changed the group so that ${POLICY_TEXT[ev.joinPolicy] || 'joining changed'}`);
      if (ev.historyVisible !== undefined) parts.push(ev.historyVisible ? 'let new members see earlier messages' : 'hid earlier messages from new members');
      if (ev.intro !== undefined) parts.push('changed the description');
      if (ev.avatarUrl !== undefined) parts.push('changed the picture');
      return `${actor} ${parts.join(', ') || 'changed the group'}`;
    }
    default: return `${actor} changed the group`;
  }
}

const untilText = (ms) => (daysAgo(ms) === 0 ? formatTime(ms) : `${shortDateFmt.format(ms)} ${formatTime(ms)}`);

