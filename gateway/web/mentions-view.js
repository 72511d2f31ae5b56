// ringchat browser client, @mentions in the composer: typing "@" in a group offers its members
// (and "everyone" to owners and admins); picking one writes "@Name " and remembers whom it
// names, so the send carries their id (mentionsIn in groups.js decides what is still mentioned).
'use strict';

const mv = {
  open: false,
  items: [], // [{userId, name}]
  index: 0, // the highlighted item
  start: 0, // where the "@…" being typed starts in the text
  picked: new Map(), // name -> userId (or MENTION_ALL), for the message being written
};

// After every keystroke: the "@…" right before the caret, if any, and the members it fits.
function mentionInput() {
  const conv = state.convs.get(state.current);
  const ta = $('text');
  if (!ta.value) mv.picked.clear();
  if (!conv?.group) return hideMentions();
  const upto = ta.value.slice(0, ta.selectionStart);
  const m = /(^|\s)@([^\s@]{0,32})$/.exec(upto);
  if (!m) return hideMentions();
  mv.items = mentionCandidates(conv.id, m[2]);
  if (!mv.items.length) return hideMentions();
  mv.start = upto.length - m[2].length - 1;
  mv.index = 0;
  mv.open = true;
  drawMentions();
}

function drawMentions() {
  const ul = $('mention-list');
  ul.hidden = !mv.open;
  ul.replaceChildren(...mv.items.map((item, i) => {
    const all = item.userId === MENTION_ALL;
    const b = el('button', {
      type: 'button', class: 'mention-option', role: 'option', 'aria-selected': String(i === mv.index),
      dataset: { userId: item.userId },
      onclick: () => pickMention(i),
    }, all ? el('span', { class: 'avatar all' }, '@') : avatar(item.userId),
    el('span', { class: 'mention-name' }, all ? '@everyone' : item.name),
    el('span', { class: 'mention-sub' }, all ? 'Notify every member' : handleOf(item.userId)));
    b.onmousedown = (ev) => ev.preventDefault(); // keep the composer focused
    return el('li', null, b);
  }));
}

function hideMentions() {
  if (!mv.open) return;
  mv.open = false;
  $('mention-list').hidden = true;
}

function pickMention(i) {
  const item = mv.items[i];
  const ta = $('text');
  if (!item) return;
  const insert = `@${item.name} `;
  ta.value = ta.value.slice(0, mv.start) + insert + ta.value.slice(ta.selectionStart);
  const caret = mv.start + insert.length;
  ta.setSelectionRange(caret, caret);
  mv.picked.set(item.name, item.userId);
  hideMentions();
  composerCheck();
  ta.focus();
}

// Keys while the list is open: up and down move, Enter or Tab picks, Escape closes. True when
// the key was for the list.
function mentionKey(ev) {
  if (!mv.open || ev.isComposing) return false;
  const n = mv.items.length;
  if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') mv.index = (mv.index + (ev.key === 'ArrowDown' ? 1 : n - 1)) % n;
  else if (ev.key === 'Enter' || ev.key === 'Tab') pickMention(mv.index);
  else if (ev.key === 'Escape') hideMentions();
  else return false;
  ev.preventDefault();
  if (mv.open) drawMentions();
  return true;
}

// The mentions of the text being sent; the next message starts with none.
function takeMentions(text) {
  const conv = state.convs.get(state.current);
  const mentions = conv?.group ? mentionsIn(text, mv.picked) : undefined;
  mv.picked.clear();
  hideMentions();
  return mentions;
}

$('text').addEventListener('blur', hideMentions);
