// End-to-end test of the system conversation in the chat page in headless Chromium. An
// operator posts notifications by the admin API (asked of gateway/tests/browser.rs with
// `@notify JSON`). Alice (desktop) has the page open: "System notices" shows in her list
// (never "user 0"), with its own avatar and the notice as the preview; opened, it shows the
// notices as cards (title, text; markup shown as text, never run) and offers no composer and
// no typing; a second notice arrives live; after a reload it is still there (Sync). Bob
// (phone) registers after the first notice and logs in with the page closed: he gets the
// notice sent to him while he was away. Screenshots at both sizes.
// Every wait is on an event with a deadline (STEP_MS), never a sleep.
// Started by gateway/tests/browser.rs:  node web-tests/chat-system.e2e.mjs URL ARTIFACT_DIR
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DESKTOP, PHONE, askHarness, check, expectNoLayoutProblems, launch, newPage, register } from './harness.mjs';

const [url, artifacts] = process.argv.slice(2);
if (!url || !artifacts) {
  console.error('usage: node chat-system.e2e.mjs URL ARTIFACT_DIR');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const failures = [];
const fail = (why) => { console.error(why); failures.push(why); };
const browser = await launch();
const pages = [];
const shot = (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`) });

const systemRow = (page) => page.locator('#conversations li[data-kind="system"]');
const card = (page, text) => page.locator('#messages li.notice-item', { hasText: text });

// Posts a notification by the admin API; answers with its HTTP status.
async function notify(body) {
  const answer = await askHarness(`notify ${JSON.stringify(body)}`, 30000);
  check(answer.startsWith('202'), `POST /api/notifications answered ${answer}`);
}

try {
  const alice = await newPage(browser, 'alice', DESKTOP, fail);
  const bob = await newPage(browser, 'bob', PHONE, fail);
  pages.push(alice, bob);
  for (const p of [alice, bob]) await p.page.goto(url);
  alice.id = await register(alice.page, 'alice');
  bob.id = await register(bob.page, 'bob');
  const a = alice.page;
  const b = bob.page;
  // Bob closes his page: what is sent to him now reaches him by Sync at his next login.
  await b.goto('about:blank');

  await notify({
    title: 'Maintenance tonight',
    text: 'The service restarts at 23:00 UTC for about <b>five</b> minutes.',
    to: { users: [Number(alice.id), Number(bob.id)] },
  });

  // Alice's list: "System notices", its own avatar, the notice as the preview; no "user 0".
  await systemRow(a).waitFor();
  check((await systemRow(a).locator('.name').textContent()) === 'System notices', 'the system row is not named "System notices"');
  await systemRow(a).locator('.preview', { hasText: 'Maintenance tonight' }).waitFor();
  check(await systemRow(a).locator('.system-avatar').count() === 1, 'the system row has no system avatar');
  check(!(await a.locator('#conversations').textContent()).includes('user 0'), 'the list shows "user 0"');

  // Opened: the notice as a card, markup as text, read-only.
  await systemRow(a).click();
  await a.waitForSelector('#peer-title >> text=System notices');
  check(await a.evaluate(() => location.hash) === '#system', 'the system conversation is not in the URL');
  const first = card(a, 'Maintenance tonight');
  await first.waitFor();
  check((await first.locator('.notice-text').textContent()).includes('<b>five</b>'), 'the notice text is not shown as written');
  check(await first.locator('b').count() === 0, 'markup in a notice was run as HTML');
  check(!(await a.isVisible('#composer')), 'the system conversation offers a composer');
  check(!(await a.isVisible('#typing')), 'the system conversation shows typing');
  check(!(await a.isVisible('#group-info-button')), 'the system conversation offers group info');

  // A second notice arrives live, to everyone, without a title.
  await notify({ text: 'Welcome to ringchat!', to: { all: true } });
  await card(a, 'Welcome to ringchat!').waitFor();
  check(await a.locator('#messages li.notice-item').count() === 2, 'the open conversation does not show both notices');
  await expectNoLayoutProblems(a, 'desktop system notices');
  await shot(a, 'desktop-system');

  // After a reload the page has it from the server again, still read-only.
  await a.reload();
  await a.waitForSelector('#peer-title >> text=System notices');
  await card(a, 'Welcome to ringchat!').waitFor();
  check(!(await a.isVisible('#composer')), 'after a reload, the system conversation offers a composer');

  // Bob was away: back (logged in again by his saved session) he finds both notices, on a phone.
  await b.goto(url);
  await b.waitForSelector('#me[data-user-id]', { state: 'attached' });
  await systemRow(b).waitFor();
  await systemRow(b).click();
  await b.waitForSelector('#peer-title >> text=System notices');
  await card(b, 'Maintenance tonight').waitFor();
  await card(b, 'Welcome to ringchat!').waitFor();
  check(!(await b.isVisible('#composer')), 'on a phone, the system conversation offers a composer');
  await expectNoLayoutProblems(b, 'phone system notices', 40);
  await shot(b, 'phone-system');
  console.log(`screenshots in ${artifacts}`);
} catch (e) {
  fail(`e2e failed: ${e.stack || e}`);
  for (const { name, page } of pages) await shot(page, `failure-system-${name}`).catch(() => {});
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(`chat-system e2e: ${failures.length} failure(s)`);
  process.exit(1);
}
console.log('chat-system e2e: 1 passed, 0 failed');
process.exit(0);
