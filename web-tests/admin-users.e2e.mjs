// End-to-end test of the dashboard's users and groups pages in headless Chromium: Alice
// registers on the chat page (at $CHAT_URL); the admin finds her by name, views her (device
// online), disables her (confirmed) and her chat page is kicked with the reason in words; her
// login is refused while disabled; the admin enables her and she logs in again. A viewer sees
// no change buttons. The groups page finds Alice's group and dissolves it. Screenshots.
// Every wait is on an event with a deadline (STEP_MS), never a sleep.
// Started by gateway/tests/browser_admin.rs:  node web-tests/admin-users.e2e.mjs ADMIN_URL ARTIFACT_DIR
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DESKTOP, check, launch, newPage, register } from './harness.mjs';
import { login, report } from './admin-harness.mjs';

const [url, artifacts] = process.argv.slice(2);
const chatUrl = process.env.CHAT_URL;
if (!url || !artifacts || !chatUrl) {
  console.error('usage: CHAT_URL=… node admin-users.e2e.mjs ADMIN_URL ARTIFACT_DIR');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const failures = [];
const fail = (why) => { console.error(why); failures.push(why); };
const browser = await launch();
const shot = (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });

try {
  const chat = (await newPage(browser, 'alice', DESKTOP, fail)).page;
  const a = (await newPage(browser, 'root', DESKTOP, fail)).page;
  const v = (await newPage(browser, 'watcher', DESKTOP, fail)).page;

  await chat.goto(chatUrl);
  await chat.waitForSelector('#login:not([hidden])');
  const aliceId = await register(chat, 'alice');

  await login(a, url, 'root');
  await a.goto(url + '#/users');
  await a.fill('#user-query', 'ALI');
  await a.click('#user-search button[type=submit]');
  await a.locator('#page td', { hasText: 'alice' }).first().waitFor();
  await a.click(`button[data-user="${aliceId}"]`);
  await a.locator('#user-detail td', { hasText: 'online' }).first().waitFor();
  await shot(a, 'admin-users-view');

  // Disable, confirmed (the reason prompt answered too): Alice's page is kicked.
  a.on('dialog', (d) => d.accept(d.type() === 'prompt' ? 'test: spam' : undefined));
  await a.click('#user-detail button[data-action="disable"]');
  await a.waitForFunction(() => document.getElementById('user-status').textContent.startsWith('disabled'));
  await chat.waitForFunction(() => document.getElementById('banner-text').textContent.includes('disabled'));
  await shot(a, 'admin-users-disabled');
  await shot(chat, 'admin-users-chat-kicked');

  // Her login is refused while disabled, on the page's own login form.
  await chat.reload();
  await chat.waitForSelector('#login:not([hidden]), #banner:not([hidden])');
  const refused = await chat.evaluate(() => document.body.textContent.includes('disabled'));
  check(refused, 'the chat page says the account is disabled');

  // Enable: she logs in again.
  await a.click('#user-detail button[data-action="enable"]');
  await a.waitForFunction(() => document.getElementById('user-status').textContent === 'enabled');
  await chat.reload();
  await chat.waitForSelector('#login:not([hidden]), #me[data-user-id]', { state: 'attached' });
  if (await chat.isVisible('#login')) {
    await chat.fill('#username', 'alice');
    await chat.fill('#password', 'correct horse battery');
    await chat.click('#do-login');
  }
  await chat.waitForSelector('#me[data-user-id]', { state: 'attached' });
  await a.click(`button[data-user="${aliceId}"]`);
  await a.locator('#user-detail td', { hasText: 'online' }).first().waitFor();
  await shot(a, 'admin-users-enabled');

  // A viewer reads the same page but gets no change buttons.
  await login(v, url, 'watcher');
  await v.goto(url + '#/users');
  await v.click(`button[data-user="${aliceId}"]`);
  await v.locator('#user-detail h2', { hasText: 'alice' }).waitFor();
  const buttons = await v.locator('#user-detail button[data-action]').count();
  check(buttons === 0, `a viewer sees ${buttons} change buttons`);

  // Groups: Alice makes one through the page's own socket; the admin finds and dissolves it.
  const groupId = await chat.evaluate(async () => {
    const reply = await request({ groupCreate: { name: 'Browser team', memberIds: [], joinPolicy: 'JOIN_POLICY_OPEN' } });
    return reply.groupCreated.group.conversationId;
  });
  await a.goto(url + '#/groups');
  await a.fill('#group-query', 'browser');
  await a.click('#page form button[type=submit]');
  await a.click(`button[data-group="${groupId}"]`);
  await a.locator('#group-detail td', { hasText: 'owner' }).waitFor();
  await a.click('#group-dissolve');
  await a.waitForFunction(() => document.getElementById('group-status').textContent === 'dissolved');
  await shot(a, 'admin-groups-dissolved');
} catch (e) {
  fail(`admin users: ${e.stack || e}`);
} finally {
  await browser.close();
}
report(failures, 'admin users: ok');
