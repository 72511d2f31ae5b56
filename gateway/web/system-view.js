// ringchat browser client, the system conversation: notices from the server's operators
// (CONVERSATION_KIND_SYSTEM, messages of CONTENT_TYPE_SYSTEM_NOTICE). Shown as "System
// notices", read-only (no composer, no typing); a notice is drawn as plain text, whatever its
// content type, so an operator's text can never run as markup in the page.
'use strict';

const SYSTEM_TITLE = 'System notices';

// My system conversation's id: kind bits 10, then my user id.
const systemConvId = () => ((2n << 62n) | BigInt(state.session.userId)).toString();

// The fields of an encoded SystemNotice (1 notification_id, 2 title, 3 text, 4 content_type;
// all strings). Unknown fields are skipped; a damaged notice decodes as far as it is whole.
function decodeNotice(b64) {
  const bytes = Uint8Array.from(atob(b64 || ''), (c) => c.charCodeAt(0));
  const out = { id: '', title: '', text: '', contentType: '' };
  const names = { 1: 'id', 2: 'title', 3: 'text', 4: 'contentType' };
  let i = 0;
  const varint = () => {
    let v = 0;
    for (let shift = 0; i < bytes.length && shift < 35; shift += 7) {
      const b = bytes[i++];
      v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return v;
    }
    throw new Error('bad varint');
  };
  try {
    while (i < bytes.length) {
      const key = varint();
      const [field, wire] = [Math.floor(key / 8), key % 8];
      if (wire === 0) varint();
      else if (wire === 2) {
        const len = varint();
        if (i + len > bytes.length) break;
        if (names[field]) out[names[field]] = dec.decode(bytes.subarray(i, i + len));
        i += len;
      } else if (wire === 1) i += 8;
      else if (wire === 5) i += 4;
      else break;
    }
  } catch { /* keep what was whole */ }
  return out;
}

const isNotice = (m) => m.contentType === 'CONTENT_TYPE_SYSTEM_NOTICE';

function noticeText(m) {
  if (!isNotice(m)) return fromB64(m.content);
  const n = decodeNotice(m.content);
  return n.title ? `${n.title}: ${n.text}` : n.text;
}

const systemAvatar = () => {
  const a = el('span', { class: 'avatar system-avatar', 'aria-hidden': 'true' });
  a.innerHTML = '<svg viewBox="0 0 24 24"><path d="M5 10v4h3l5 4V6L8 10z" fill="currentColor"/><path d="M16 9.5a3.5 3.5 0 0 1 0 5M18.5 7a7 7 0 0 1 0 10" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round"/></svg>';
  return a;
};

function renderSystemHeader() {
  $('peer-title').textContent = SYSTEM_TITLE;
  $('peer-avatar').replaceChildren(systemAvatar());
  $('peer-sub').textContent = 'From the server’s operators · read-only';
  $('peer-sub').dataset.presence = '';
  $('composer').hidden = true;
  $('typing').hidden = true;
}

// One notice: its title over its text, in a card of its own.
function noticeItem(m, seq) {
  const ms = num(m.serverTimeMs);
  const n = isNotice(m) ? decodeNotice(m.content) : { title: '', text: fromB64(m.content) };
  return el('li', { class: 'notice-item', dataset: { seq, notificationId: n.id || '' } },
    el('div', { class: 'notice-card' },
      n.title ? el('strong', { class: 'notice-title' }, n.title) : null,
      el('p', { class: 'notice-text' }, n.text),
      el('time', { datetime: new Date(ms).toISOString(), title: formatFull(ms) }, formatTime(ms))));
}
