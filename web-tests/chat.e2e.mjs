// End-to-end test of the chat page in headless Chromium: two browser pages register as two
// users and chat; checks unread counts, delivered/read ticks, typing, history, and catching up
// after the connection drops. Started by gateway/tests/browser.rs:
//   node web-tests/chat.e2e.mjs http://127.0.0.1:PORT/ ARTIFACT_DIR
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [url, artifacts] = process.argv.slice(2);
if (!url || !artifacts) {
  console.error('usage: node chat.e2e.mjs URL ARTIFACT_DIR');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const executablePath = process.env.RINGCHAT_CHROMIUM || '/usr/bin/chromium';
const STEP_MS = 15000;

// Playwright gives each launch a new, empty --user-data-dir of its own.
const browser = await chromium.launch({
  executablePath,
  headless: true,
  timeout: 60000,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});

let failed = false;
const pages = [];
try {
  const open = async (name) => {
    const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_MS);
    page.on('console', (m) => console.log(`[${name}] ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => { console.error(`[${name}] page error: ${e}`); failed = true; });
    await page.goto(url);
    await page.fill('#username', name);
    await page.fill('#password', 'correct horse battery');
    await page.click('#do-register');
    await page.waitForSelector('#me[data-user-id]');
    const id = await page.getAttribute('#me', 'data-user-id');
    pages.push({ name, page, context });
    return { page, context, id };
  };
  const alice = await open('alice');
  const bob = await open('bob');
  console.log(`alice=${alice.id} bob=${bob.id}`);

  const send = async (page, text) => {
    await page.fill('#text', text);
    await page.click('#composer button');
  };
  const lastTick = (page) => page.locator('#messages li.mine .tick').last();

  // Alice opens a chat with Bob and writes.
  await alice.page.fill('#peer-id', bob.id);
  await alice.page.click('#new-chat button');
  await send(alice.page, 'hello bob');
  await alice.page.waitForSelector('#messages li.mine .tick[data-state="delivered"]');

  // Bob sees the conversation with one unread message, opens it: Alice's tick turns read.
  const badge = bob.page.locator(`#conversations li[data-peer="${alice.id}"] .badge`);
  await badge.waitFor();
  if ((await badge.textContent()) !== '1') throw new Error('unread count is not 1');
  await bob.page.click(`#conversations li[data-peer="${alice.id}"]`);
  await bob.page.waitForSelector('#messages li.theirs >> text=hello bob');
  await alice.page.waitForSelector('#messages li.mine .tick[data-state="read"]');

  // Bob types: Alice sees the indicator. Then he answers.
  await bob.page.type('#text', 'hi al', { delay: 20 });
  await alice.page.waitForSelector('#typing:not([hidden])');
  await bob.page.fill('#text', '');
  await send(bob.page, 'hi alice');
  await alice.page.waitForSelector('#messages li.theirs >> text=hi alice');

  // Alice's connection drops; Bob writes meanwhile; Alice reconnects and syncs.
  await alice.page.evaluate(() => { state.kickedForGood = true; state.ws.close(); });
  await alice.page.waitForSelector('#status:not(.online)');
  await send(bob.page, 'while you were away');
  await lastTick(bob.page).and(bob.page.locator('[data-state="sent"], [data-state="delivered"]')).waitFor();
  await alice.page.evaluate(() => { state.kickedForGood = false; connect(); });
  await alice.page.waitForSelector('#status.online');
  await alice.page.waitForSelector('#messages li.theirs >> text=while you were away');

  // A reload logs in again with the stored token and pages history back in.
  await alice.page.reload();
  await alice.page.waitForSelector('#status.online');
  await alice.page.click(`#conversations li[data-peer="${bob.id}"]`);
  await alice.page.waitForSelector('#messages li >> text=hello bob');

  await alice.page.screenshot({ path: join(artifacts, 'chat-alice.png') });
  await bob.page.screenshot({ path: join(artifacts, 'chat-bob.png') });
  console.log(`screenshots in ${artifacts}`);
} catch (e) {
  failed = true;
  console.error(`e2e failed: ${e.stack || e}`);
  for (const { name, page } of pages) {
    await page.screenshot({ path: join(artifacts, `failure-${name}.png`) }).catch(() => {});
  }
} finally {
  await browser.close();
}
if (failed) process.exit(1);
console.log('browser e2e: 1 passed, 0 failed');
