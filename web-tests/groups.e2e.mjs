// End-to-end test of groups in the chat page in headless Chromium. Alice uses a desktop window,
// Bob a phone-sized one (390x844), Carol a desktop one. Checks: Alice and Bob become friends and
// Alice creates a group with him (picked from her friends), both see it in their lists (name,
// member count) and chat (sender names, the "created" notice); the "read by" count under
// Alice's message goes up when Bob reads it; a mention of Bob (picked from the @ list) shows an
// "@" badge in his list and is highlighted for him; Alice adds Carol in the group panel (members
// with roles), and Carol sees the messages from before she joined (the group shows its history
// to new members); Alice renames the group and makes Carol an admin (notices, Carol's panel);
// Bob leaves and Alice sees "bob left"; Alice removes Carol while Carol's page is cut off (through
// a TCP proxy), and Carol's page shows her removed once it is back, still after another
// reconnect and a reload; the phone layout (no sideways scrolling, tap targets >= 40 px).
// Screenshots at both sizes.
// Every wait is on an event with a deadline (STEP_MS), never a sleep.
// Started by gateway/tests/browser.rs:  node web-tests/groups.e2e.mjs http://127.0.0.1:PORT/ ARTIFACT_DIR
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  DESKTOP, PHONE, STEP_MS, check, expectNoLayoutProblems, launch, newPage, register, startProxy, waitForFrame,
} from './harness.mjs';

const [url, artifacts] = process.argv.slice(2);
if (!url || !artifacts) {
  console.error('usage: node groups.e2e.mjs URL ARTIFACT_DIR');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const READ_COUNT_POLL_MS = 15000; // groups.js: how often the open group's read counts are asked again

const failures = [];
const fail = (why) => { console.error(why); failures.push(why); };
const browser = await launch();
const proxy = await startProxy(url); // Carol's way to the server, cut at will
const pages = [];
const shot = (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`) });

const openTab = async (page, tab) => {
  await page.click(`#tabs [data-tab="${tab}"]`);
  await page.waitForSelector(`#sidebar [data-pane="${tab}"]:not([hidden])`);
};
const groupRow = (page) => page.locator('#conversations li[data-kind="group"]');
const mine = (page, text) => page.locator('#messages li.msg.mine', { hasText: text });
const notice = (page, text) => page.locator('#messages li.system', { hasText: text });

try {
  const alice = await newPage(browser, 'alice', DESKTOP, fail);
  const bob = await newPage(browser, 'bob', PHONE, fail);
  const carol = await newPage(browser, 'carol', DESKTOP, fail);
  pages.push(alice, bob, carol);
  for (const p of [alice, bob]) await p.page.goto(url);
  await carol.page.goto(proxy.url);
  alice.id = await register(alice.page, 'alice');
  bob.id = await register(bob.page, 'bob');
  carol.id = await register(carol.page, 'carol');
  console.log(`alice=${alice.id} bob=${bob.id} carol=${carol.id}`);
  const a = alice.page;
  const b = bob.page;
  const c = carol.page;

  // Alice and Bob become friends, so that she can pick him for a group.
  await openTab(a, 'contacts');
  await a.fill('#search-input', bob.id);
  await a.press('#search-input', 'Enter');
  await a.locator(`#search-results li.person[data-user-id="${bob.id}"] [data-action="add"]`).click();
  await a.locator('#search-results [data-action="send-request"]').click();
  await openTab(b, 'contacts');
  await b.locator(`#requests-in li.person[data-user-id="${alice.id}"] [data-action="accept"]`).click();
  await a.waitForSelector(`#friends li.person[data-user-id="${bob.id}"]`);
  await openTab(a, 'chats');
  await openTab(b, 'chats');

  // Alice creates "Weekend trip" with Bob; the name is required.
  await a.click('#new-group');
  await a.waitForSelector('#new-group-dialog[open]');
  await a.click('#ng-create');
  await a.waitForSelector('#ng-error >> text=Give the group a name.');
  await a.fill('#ng-name', 'Weekend trip');
  await a.check(`#ng-friends label[data-user-id="${bob.id}"] input`);
  check(await a.isChecked('#ng-history'), 'new groups do not show their history to new members by default');
  await a.click('#ng-create');
  await a.waitForSelector('#new-group-dialog', { state: 'hidden' });
  await a.waitForSelector('#peer-title >> text=Weekend trip');
  await a.waitForSelector('#peer-sub >> text=2 members');
  await notice(a, 'You created the group').waitFor();
  check(/^#group\/[0-9]+$/.test(await a.evaluate(() => location.hash)), 'the open group is not in the URL');
  await a.fill('#text', 'hello group');
  await a.press('#text', 'Enter');
  // Nobody else has read it yet.
  await mine(a, 'hello group').locator('.read-by[data-read-count="0"]').waitFor();

  // Bob, on his phone: the group in his list with its name, size and unread count.
  const bobsRow = groupRow(b);
  await bobsRow.locator('.name >> text=Weekend trip').waitFor();
  await bobsRow.locator('.preview >> text=alice: hello group').waitFor();
  check((await bobsRow.locator('.member-count').textContent()) === '2', 'the list does not show 2 members');
  await bobsRow.locator('.badge.unread').waitFor();
  await expectNoLayoutProblems(b, 'phone group list', 40);
  await bobsRow.click();
  const theirs = b.locator('#messages li.msg.theirs', { hasText: 'hello group' });
  await theirs.waitFor();
  check((await theirs.locator('.sender').textContent()) === 'alice', 'the group message does not name its sender');
  await notice(b, 'alice created the group').waitFor();

  // Bob read it: the count under Alice's message goes up (pushed receipt, or the next poll).
  await mine(a, 'hello group').locator('.read-by[data-read-count="1"]').waitFor({ timeout: READ_COUNT_POLL_MS + STEP_MS });
  check((await mine(a, 'hello group').locator('.read-by').textContent()) === 'Read by 1', 'the read count is not "Read by 1"');

  // Bob answers; Alice sees his name on it.
  await b.fill('#text', 'hi all');
  await b.press('#text', 'Enter');
  const fromBob = a.locator('#messages li.msg.theirs', { hasText: 'hi all' });
  await fromBob.waitFor();
  check((await fromBob.locator('.sender').textContent()) === 'bob', 'Bob\'s message does not name him');
  await expectNoLayoutProblems(b, 'phone group chat', 40);
  await b.click('#back');
  await b.waitForSelector('#sidebar:not([hidden]) #conversations');

  // Alice mentions Bob, picked from the list "@" opens.
  await a.click('#text');
  await a.type('#text', '@bo', { delay: 20 });
  const option = a.locator(`#mention-list .mention-option[data-user-id="${bob.id}"]`);
  await option.waitFor();
  await option.click();
  check((await a.inputValue('#text')) === '@bob ', `picking a member writes ${JSON.stringify(await a.inputValue('#text'))}`);
  await a.waitForSelector('#mention-list', { state: 'hidden' });
  await a.type('#text', 'bring the rope', { delay: 5 });
  await a.press('#text', 'Enter');
  await mine(a, 'bring the rope').waitFor();
  check(!(await mine(a, 'bring the rope').getAttribute('class')).includes('mentioned'), 'the sender sees her own mention highlighted');

  // Bob's list shows the "@" badge; inside, the message is highlighted for him.
  await bobsRow.locator('.badge.mention').waitFor();
  await shot(b, 'phone-group-list');
  await bobsRow.click();
  await b.locator('#messages li.msg.theirs.mentioned', { hasText: 'bring the rope' }).waitFor();
  check(await b.locator('#messages li.msg.mentioned').count() === 1, 'a message that does not mention Bob is highlighted');
  await expectNoLayoutProblems(b, 'phone group chat with mention', 40);
  await shot(b, 'phone-group-chat');

  // Alice opens the group panel: members with roles; she adds Carol by her user id.
  await a.click('#group-info-button');
  await a.waitForSelector('#group-dialog[open]');
  await a.waitForSelector(`#group-members li.member[data-user-id="${alice.id}"][data-role="owner"]`);
  await a.waitForSelector(`#group-members li.member[data-user-id="${bob.id}"][data-role="member"]`);
  check(await a.isVisible('#group-settings'), 'the owner does not see the group settings');
  await a.fill('#gi-ids', 'carol');
  await a.click('#gi-send');
  await a.waitForSelector('#group-error >> text=is not a user id');
  await a.fill('#gi-ids', carol.id);
  await a.click('#gi-send');
  await a.waitForSelector(`#group-members li.member[data-user-id="${carol.id}"]`);
  await a.waitForSelector('#group-summary >> text=3 members');
  await expectNoLayoutProblems(a, 'desktop group info');
  await shot(a, 'desktop-group-info');
  await a.click('#group-close');
  await a.waitForSelector('#group-dialog', { state: 'hidden' });
  await notice(a, 'You added carol').waitFor();

  // Carol: the group in her list; inside, the messages from before she was added.
  await groupRow(c).locator('.name >> text=Weekend trip').waitFor();
  await groupRow(c).click();
  await c.locator('#messages li.msg.theirs', { hasText: 'hello group' }).waitFor();
  await c.locator('#messages li.msg.theirs', { hasText: 'hi all' }).waitFor();
  await notice(c, 'alice added you').waitFor();
  check(await c.locator('#messages li.msg.mentioned').count() === 0, 'Carol sees the mention of Bob highlighted');
  check(!(await c.isVisible('#group-settings')), 'a member sees the settings form before opening the panel');

  // Alice renames the group and makes Carol an admin; Carol sees both as notices, the new name
  // in her header, and the settings in her panel.
  await a.click('#group-info-button');
  await a.fill('#gs-name', 'Climbing trip');
  await a.click('#gs-save');
  await a.waitForSelector('#group-notice >> text=Saved.');
  const carolsRow = a.locator(`#group-members li.member[data-user-id="${carol.id}"]`);
  await carolsRow.locator('[data-action="more"]').click();
  await carolsRow.locator('[data-action="role"]').click();
  await a.waitForSelector(`#group-members li.member[data-user-id="${carol.id}"][data-role="admin"]`);
  await a.click('#group-close');
  await notice(c, 'alice renamed the group to “Climbing trip”').waitFor();
  await c.waitForSelector('#peer-title >> text=Climbing trip');
  await notice(c, 'alice made you an admin').waitFor();
  await c.click('#group-info-button');
  await c.waitForSelector('#group-settings:not([hidden])');
  await c.click('#group-close');

  // Bob's panel on the phone: a member sees no settings; he leaves (two steps).
  await b.click('#group-info-button');
  await b.waitForSelector('#group-dialog[open]');
  await b.waitForSelector(`#group-members li.member[data-user-id="${carol.id}"]`);
  check(!(await b.isVisible('#group-settings')), 'a member sees the group settings');
  check(await b.locator('#group-members [data-action="more"]').count() === 0, 'a member is offered actions on other members');
  await expectNoLayoutProblems(b, 'phone group info', 40);
  await shot(b, 'phone-group-info');
  await b.click('#group-leave');
  await b.click('#confirm-leave');
  await b.waitForSelector('#group-dialog', { state: 'hidden' });
  await b.waitForSelector('#sidebar:not([hidden]) #conversations');
  await groupRow(b).waitFor({ state: 'detached' });

  // Alice sees it as a notice, and the group has two members again.
  await notice(a, 'bob left').waitFor();
  await a.waitForSelector('#peer-sub >> text=2 members');
  await expectNoLayoutProblems(a, 'desktop group chat');
  await shot(a, 'desktop-group-chat');

  // Alice removes Carol while Carol's page is cut off: once back, Carol's page learns it from
  // the events it missed (not a live group with a composer), and keeps it after another
  // reconnect (a catch-up re-reads her groups, which still lists a former member's) and a reload.
  proxy.refuse(true);
  proxy.cut();
  await c.waitForSelector('#banner:not([hidden]) >> text=Connection lost');
  await a.click('#group-info-button');
  const carolsRowAgain = a.locator(`#group-members li.member[data-user-id="${carol.id}"]`);
  await carolsRowAgain.locator('[data-action="more"]').click();
  await carolsRowAgain.locator('[data-action="remove"]').click();
  await carolsRowAgain.locator('[data-action="confirm-remove"]').click();
  await carolsRowAgain.waitFor({ state: 'detached' });
  await a.click('#group-close');
  await notice(a, 'You removed carol').waitFor();
  const removed = async (when) => {
    await c.waitForSelector('#group-join');
    check(await c.isHidden('#composer'), `Carol's page offers the composer ${when}`);
    check((await c.textContent('#peer-sub')).includes('not a member'), `Carol's header does not say she is not a member ${when}`);
  };
  let groupsRead = waitForFrame(c, 'received', (f) => !!f.groupList); // the catch-up's last step
  proxy.refuse(false);
  await groupsRead;
  await c.waitForSelector('#conversations[aria-busy="false"]'); // the groups' answer applied
  await notice(c, 'alice removed you').waitFor();
  await removed('after the reconnect');
  groupsRead = waitForFrame(c, 'received', (f) => !!f.groupList);
  proxy.cut();
  await groupsRead;
  await c.waitForSelector('#conversations[aria-busy="false"]'); // the groups' answer applied
  await removed('after a second reconnect');
  await c.reload();
  await c.waitForSelector('#status.online');
  await removed('after a reload');
  console.log(`screenshots in ${artifacts}`);
} catch (e) {
  fail(`e2e failed: ${e.stack || e}`);
  for (const { name, page } of pages) await shot(page, `failure-groups-${name}`).catch(() => {});
} finally {
  await browser.close();
  await proxy.close();
}
if (failures.length) {
  console.error(`groups e2e: ${failures.length} failure(s)`);
  process.exit(1);
}
console.log('groups e2e: 1 passed, 0 failed');
process.exit(0);
