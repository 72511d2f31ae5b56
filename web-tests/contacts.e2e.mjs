// End-to-end test of the Contacts view in headless Chromium. Alice uses a desktop window
// (1280x800), Bob a phone-sized one (390x844), Carol a desktop one. Checks: finding someone by
// username prefix and by id, a friend request with a message (badge, notice, accept), friends on
// both sides, presence dots changing when Bob switches to away and back, busy, and invisible
// (last seen, then hidden), names instead of ids in the conversation list and chat header, a
// profile edit (name and picture) showing up on the other side, a user who is not searchable not
// being listed, remove friend, cancel and reject, friends-only chats and a block stopping
// messages (the error says "does not take messages from you", never "blocked") and unblocking,
// and the phone layout. Screenshots of the contacts view at both sizes.
// Every wait is on an event with a deadline (STEP_MS), never a sleep.
// Started by gateway/tests/browser.rs:  node web-tests/contacts.e2e.mjs http://127.0.0.1:PORT/ ARTIFACT_DIR
import { mkdirSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { DESKTOP, PHONE, check, expectNoLayoutProblems, launch, newPage, register } from './harness.mjs';

const [url, artifacts] = process.argv.slice(2);
if (!url || !artifacts) {
  console.error('usage: node contacts.e2e.mjs URL ARTIFACT_DIR');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const failures = [];
const fail = (why) => { console.error(why); failures.push(why); };
const browser = await launch();
const pages = [];
const shot = (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`) });

// A picture host for avatars (the page loads avatars from wherever their URL points).
const pictures = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'image/svg+xml' });
  res.end('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" fill="#f59e0b"/><circle cx="32" cy="26" r="12" fill="#fff"/><rect x="14" y="42" width="36" height="18" rx="9" fill="#fff"/></svg>');
});
await new Promise((resolve) => pictures.listen(0, '127.0.0.1', resolve));
const pictureUrl = `http://127.0.0.1:${pictures.address().port}/bob.svg`;

const openTab = async (page, tab) => {
  await page.click(`#tabs [data-tab="${tab}"]`);
  await page.waitForSelector(`#sidebar [data-pane="${tab}"]:not([hidden])`);
};
// A person's row in one section of the contacts view.
const row = (page, section, id) => page.locator(`#${section} li.person[data-user-id="${id}"]`);
const dot = (page, id, presence) => row(page, 'friends', id).locator(`.presence-dot[data-presence="${presence}"]`);
// Picks a presence in the header's menu.
async function setPresence(page, presence) {
  await page.click('#me-button');
  await page.click(`#me-menu [data-presence="${presence}"]`);
  await page.waitForSelector(`#me-button[data-presence="${presence}"]`);
  await page.waitForSelector('#me-menu', { state: 'hidden' });
}

try {
  const alice = await newPage(browser, 'alice', DESKTOP, fail);
  const bob = await newPage(browser, 'bob', PHONE, fail);
  const carol = await newPage(browser, 'carol', DESKTOP, fail);
  pages.push(alice, bob, carol);
  for (const p of [alice, bob, carol]) await p.page.goto(url);
  alice.id = await register(alice.page, 'alice');
  bob.id = await register(bob.page, 'bob');
  carol.id = await register(carol.page, 'carol');
  console.log(`alice=${alice.id} bob=${bob.id} carol=${carol.id}`);
  const a = alice.page;
  const b = bob.page;
  const c = carol.page;

  // Alice finds Bob by the start of his username: his name, avatar, and what she can do.
  await openTab(a, 'contacts');
  await a.waitForSelector('#friends >> text=No friends yet');
  await a.fill('#search-input', 'bo');
  await a.press('#search-input', 'Enter');
  const found = row(a, 'search-results', bob.id);
  await found.waitFor();
  check((await found.locator('.person-name').textContent()) === 'bob', 'the search result is not named bob');
  check(await found.locator('.avatar').count() === 1, 'the search result has no avatar');
  check((await found.locator('.person-sub').textContent()).includes('@bob'), 'the search result does not show @bob');
  // She asks him, with a message.
  await found.locator('[data-action="add"]').click();
  await a.fill('#search-results .ask-input', 'Hi Bob, it is Alice from the climbing club');
  await a.press('#search-results .ask-input', 'Enter');
  await found.locator('.relation >> text=Request sent').waitFor();
  await found.locator('[data-action="cancel"]').waitFor();
  await row(a, 'requests-out', bob.id).waitFor();

  // Bob, on his phone: a notice and a badge on the tab; the request with its message; accept.
  await b.waitForSelector('.toast >> text=alice wants to be your friend.');
  await b.waitForSelector('#tabs [data-tab="contacts"] .badge >> text=1');
  await b.click('.toast:has-text("alice wants to be your friend.") button');
  await b.waitForSelector('#pane-contacts:not([hidden])');
  const request = row(b, 'requests-in', alice.id);
  await request.locator('.request-message >> text=Hi Bob, it is Alice from the climbing club').waitFor();
  await expectNoLayoutProblems(b, 'phone contacts with a request', 40);
  await shot(b, 'phone-contacts-request');
  await request.locator('[data-action="accept"]').click();
  await row(b, 'friends', alice.id).waitFor();
  await b.waitForSelector('#tabs [data-tab="contacts"] .badge', { state: 'hidden' });
  // Alice is told, and Bob moves from her sent requests to her friends.
  await a.waitForSelector('.toast >> text=bob and you are now friends.');
  await row(a, 'friends', bob.id).waitFor();
  await row(a, 'requests-out', bob.id).waitFor({ state: 'detached' });

  // Presence: each sees the other online; Bob goes away and comes back, Alice's dot follows;
  // invisible shows him offline with when he was last seen.
  await dot(a, bob.id, 'online').waitFor();
  await dot(b, alice.id, 'online').waitFor();
  await setPresence(b, 'away');
  await dot(a, bob.id, 'away').waitFor();
  check((await row(a, 'friends', bob.id).locator('.person-sub').textContent()) === 'Away', 'Alice does not read "Away" under Bob');
  await a.click('#me-button');
  await a.waitForSelector('#me-menu:not([hidden])');
  await shot(a, 'desktop-presence-menu');
  await a.keyboard.press('ArrowDown');
  check(await a.evaluate(() => document.activeElement?.dataset.presence) === 'away', 'the arrow keys do not move in the menu');
  await a.keyboard.press('Escape');
  await a.waitForSelector('#me-menu', { state: 'hidden' });
  await setPresence(b, 'online');
  await dot(a, bob.id, 'online').waitFor();
  await setPresence(b, 'invisible');
  await dot(a, bob.id, 'offline').waitFor();
  await row(a, 'friends', bob.id).locator('.person-sub >> text=Last seen just now').waitFor();
  await setPresence(b, 'busy');
  await dot(a, bob.id, 'busy').waitFor();

  // Carol finds Alice by id and asks too, so Alice has a request waiting in her screenshot.
  await openTab(c, 'contacts');
  await c.fill('#search-input', alice.id);
  await c.press('#search-input', 'Enter');
  await row(c, 'search-results', alice.id).locator('[data-action="add"]').click();
  await c.click('#search-results [data-action="send-request"]');
  await row(a, 'requests-in', carol.id).waitFor();

  // Names, not ids: Alice opens the chat from her friends, writes; both lists say who.
  await row(a, 'friends', bob.id).locator('.person-main').click();
  await a.waitForSelector('#peer-title >> text=bob');
  await a.fill('#text', 'see you at the wall on Friday?');
  await a.press('#text', 'Enter');
  await a.waitForSelector('#messages li.mine .tick[data-state="delivered"]');
  await openTab(a, 'chats');
  check((await a.textContent(`#conversations li[data-peer="${bob.id}"] .name`)) === 'bob', 'Alice\'s list does not name bob');
  await openTab(b, 'chats');
  const bobsRow = b.locator(`#conversations li[data-peer="${alice.id}"]`);
  await bobsRow.locator('.name >> text=alice').waitFor();
  check(!(await b.textContent('#conversations')).includes(alice.id), 'Bob\'s conversation list shows Alice\'s id');
  check(!(await b.textContent('#conversations')).includes('User '), 'Bob\'s conversation list shows a user by id');

  // Bob edits his profile: a display name and a picture, and he stops being listed by name.
  await b.click('#me-button');
  await b.click('#edit-profile');
  await b.waitForSelector('#profile-dialog[open]');
  await b.fill('#pf-nickname', 'Bobby Tables');
  await b.fill('#pf-avatar', 'ftp://example.com/me.png');
  await b.click('#profile-save');
  await b.waitForSelector('#profile-error >> text=https://');
  await b.fill('#pf-avatar', pictureUrl);
  await b.fill('#pf-bio', 'Climbs on Fridays.');
  await b.uncheck('#pf-searchable');
  await b.check('#pf-hide-last-seen');
  await b.waitForFunction(() => document.querySelector('#profile-avatar img')?.naturalWidth > 0);
  await expectNoLayoutProblems(b, 'phone profile dialog', 40);
  await shot(b, 'phone-profile');
  await b.click('#profile-save');
  await b.waitForSelector('#profile-dialog:not([open])', { state: 'attached' });
  await b.waitForSelector('#me >> text=Bobby Tables', { state: 'attached' });
  // Alice sees it when she looks at her contacts (and from then on everywhere).
  await openTab(a, 'contacts');
  await row(a, 'friends', bob.id).locator('.person-name >> text=Bobby Tables').waitFor();
  await a.waitForFunction((id) => document.querySelector(`#friends li[data-user-id="${id}"] .avatar img`)?.naturalWidth > 0, bob.id);
  await openTab(a, 'chats');
  await a.waitForSelector(`#conversations li[data-peer="${bob.id}"] .name >> text=Bobby Tables`);
  await a.waitForSelector('#peer-title >> text=Bobby Tables');
  await a.waitForSelector('#peer-sub >> text=Busy');
  // With last seen hidden, invisible Bob is just "Offline"; then he is back.
  await setPresence(b, 'invisible');
  await a.waitForSelector('#peer-sub >> text=/^Offline$/');
  await setPresence(b, 'online');
  await a.waitForSelector('#peer-sub >> text=Online');
  // Carol, who has nothing with Bob, no longer finds him by name.
  await c.fill('#search-input', 'bob');
  await c.press('#search-input', 'Enter');
  await c.waitForSelector('#search-results >> text=Nobody found');

  await openTab(a, 'contacts');
  await expectNoLayoutProblems(a, 'desktop contacts', 0);
  await shot(a, 'desktop-contacts');
  await openTab(b, 'contacts');
  await expectNoLayoutProblems(b, 'phone contacts', 40);
  await shot(b, 'phone-contacts');

  // Alice accepts Carol, then removes her (two steps); Carol's list follows.
  await row(a, 'requests-in', carol.id).locator('[data-action="accept"]').click();
  await row(c, 'friends', alice.id).waitFor();
  const carolRow = row(a, 'friends', carol.id);
  await carolRow.locator('[data-action="more"]').click();
  await carolRow.locator('[data-action="delete"]').click();
  await carolRow.locator('.confirm >> text=Remove carol from your friends?').waitFor();
  await carolRow.locator('[data-action="confirm-delete"]').click();
  await carolRow.waitFor({ state: 'detached' });
  await row(c, 'friends', alice.id).waitFor({ state: 'detached' });
  // Carol asks again and thinks better of it; asks once more, and Alice says no.
  await c.fill('#search-input', alice.id);
  await c.press('#search-input', 'Enter');
  const aliceFound = row(c, 'search-results', alice.id);
  await aliceFound.locator('[data-action="add"]').click();
  await c.click('#search-results [data-action="send-request"]');
  await row(a, 'requests-in', carol.id).waitFor();
  await aliceFound.locator('[data-action="cancel"]').click();
  await row(a, 'requests-in', carol.id).waitFor({ state: 'detached' });
  await aliceFound.locator('[data-action="add"]').click();
  await c.click('#search-results [data-action="send-request"]');
  await row(a, 'requests-in', carol.id).locator('[data-action="reject"]').click();
  await row(a, 'requests-in', carol.id).waitFor({ state: 'detached' });
  await aliceFound.locator('[data-action="add"]').waitFor();
  await row(c, 'requests-out', alice.id).waitFor({ state: 'detached' });

  // Carol takes new chats from friends only: Bob, a stranger to her, cannot start one.
  await c.click('#me-button');
  await c.click('#edit-profile');
  await c.selectOption('#pf-dm', 'friends');
  await shot(c, 'desktop-profile');
  await c.click('#profile-save');
  await c.waitForSelector('#profile-dialog:not([open])', { state: 'attached' });
  await openTab(b, 'chats');
  await b.fill('#peer-id', carol.id);
  await b.press('#peer-id', 'Enter');
  await b.fill('#text', 'hi carol');
  await b.click('#send');
  await b.waitForSelector('#messages li.msg.failed .send-error >> text=carol does not take messages from you.');
  await b.click('#messages li.msg.failed button.discard');
  await b.click('#back');

  // Alice blocks Bob (two steps). He is told only that they are no longer friends; his next
  // message fails with words that do not say "blocked".
  await openTab(a, 'contacts');
  const bobRow = row(a, 'friends', bob.id);
  await bobRow.locator('[data-action="more"]').click();
  await bobRow.locator('[data-action="block"]').click();
  await bobRow.locator('[data-action="confirm-block"]').click();
  await row(a, 'blocked', bob.id).waitFor({ state: 'attached' });
  await row(b, 'friends', alice.id).waitFor({ state: 'detached' });
  await openTab(b, 'chats');
  await bobsRow.click();
  await b.fill('#text', 'are you there?');
  await b.click('#send');
  const refused = b.locator('#messages li.msg.failed .send-error');
  await refused.locator('text=alice does not take messages from you.').waitFor();
  check(!/block/i.test(await refused.textContent()), 'the refused sender is told about the block');
  await expectNoLayoutProblems(b, 'phone refused send', 40);
  await shot(b, 'phone-send-refused');
  // Alice's conversation with Bob says she blocked him, instead of a composer.
  await openTab(a, 'chats');
  await a.click(`#conversations li[data-peer="${bob.id}"]`);
  await a.waitForSelector('#contact-bar >> text=You blocked Bobby Tables.');
  check(await a.isHidden('#composer'), 'the composer shows in a conversation with a blocked user');
  await shot(a, 'desktop-blocked-chat');
  // She unblocks him there; his retry goes through.
  await a.click('#contact-bar [data-action="unblock"]');
  await a.waitForSelector('#composer:not([hidden])');
  await b.click('#messages li.msg.failed button.retry');
  await a.waitForSelector('#messages li.theirs >> text=are you there?');
  await b.waitForSelector('#messages li.msg.failed', { state: 'detached' });
  // Not friends any more, so the bar offers to add him back.
  await a.waitForSelector('#contact-bar >> text=Bobby Tables is not in your contacts.');
  console.log(`screenshots in ${artifacts}`);
} catch (e) {
  fail(`e2e failed: ${e.stack || e}`);
  for (const { name, page } of pages) await shot(page, `failure-contacts-${name}`).catch(() => {});
} finally {
  await browser.close();
  pictures.close();
}
if (failures.length) {
  console.error(`contacts e2e: ${failures.length} failure(s)`);
  process.exit(1);
}
console.log('contacts e2e: 1 passed, 0 failed');
process.exit(0);
