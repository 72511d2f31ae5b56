// The chat page started from the status service (cluster mode) in headless Chromium. Both pages
// are opened on a status-only node, which serves the page but no chat: each asks it `/assign`,
// connects its WebSocket to the chat node named there, registers, and Alice's message reaches
// Bob (across nodes when they were sent to different ones). Then Bob's node is stopped: his page
// asks the status service again and reconnects to the node that is left, with the message still
// there. Pages opened on the status node offer no files (it serves no `/files`): no attach
// button, and a file message without a download.
// Started by gateway/tests/cluster_browser.rs:
//   CHAT_NODES=ws://…/ws,ws://…/ws node web-tests/cluster.e2e.mjs STATUS_URL ARTIFACT_DIR
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DESKTOP, askHarness, check, launch, newPage, register } from './harness.mjs';

const [url, artifacts] = process.argv.slice(2);
const chatNodes = (process.env.CHAT_NODES || '').split(',').filter(Boolean);
if (!url || !artifacts || chatNodes.length < 2) {
  console.error('usage: CHAT_NODES=ws://…,ws://… node cluster.e2e.mjs STATUS_URL ARTIFACT_DIR');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const failures = [];
const fail = (why) => { console.error(why); failures.push(why); };
const browser = await launch();
const pages = [];
const shot = (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`) });
// The WebSocket address the page is connected to (net.js keeps it).
const nodeOf = (page) => page.evaluate(() => net.url);

try {
  const alice = await newPage(browser, 'alice', DESKTOP, fail);
  const bob = await newPage(browser, 'bob', DESKTOP, fail);
  pages.push(alice, bob);
  for (const p of [alice, bob]) {
    await p.page.goto(url);
    p.id = await register(p.page, p.name);
    p.node = await nodeOf(p.page);
    check(chatNodes.includes(p.node), `${p.name} is connected to ${p.node}, not to a chat node`);
  }
  console.log(`alice=${alice.id} on ${alice.node}, bob=${bob.id} on ${bob.node}`);
  const a = alice.page;
  const b = bob.page;

  await a.fill('#peer-id', bob.id);
  await a.press('#peer-id', 'Enter');
  await a.fill('#text', 'hello across the cluster');
  await a.press('#text', 'Enter');
  await a.waitForSelector('#messages li.mine .tick[data-state="delivered"]');
  await b.click(`#conversations li[data-peer="${alice.id}"]`);
  await b.waitForSelector('#messages li.theirs >> text=hello across the cluster');
  await shot(b, 'cluster-chat');

  // The status node serves no `/files`: a page opened there offers no attach button, and a file
  // message shows its name without a download that could only fail. (These nodes run with files
  // off, so the message is handed to Bob's page as a push would be, not uploaded.)
  for (const [name, page] of [['alice', a], ['bob', b]]) {
    check(!(await page.evaluate(() => net.filesHere)), `${name}'s page on the status node thinks it has files there`);
    check(await page.isHidden('#attach'), `${name}'s page on the status node offers to attach a file`);
  }
  await b.evaluate(({ from, to }) => {
    const conv = [...state.convs.values()].find((c) => c.peer === from);
    onMessages([{
      conversationId: conv.id, seq: String(conv.maxSeq + 1), fromUserId: from, toUserId: to, serverTimeMs: String(Date.now()),
      clientMsgId: 'e2e-file', contentType: 'CONTENT_TYPE_FILE', content: encodeFileRef({ fileId: 'f-e2e', name: 'notes.txt', size: 12 }),
    }], 'push');
  }, { from: alice.id, to: bob.id });
  const card = b.locator('#messages li.theirs .file-card', { hasText: 'notes.txt' });
  await card.locator('.file-elsewhere', { hasText: 'Not downloadable here' }).waitFor();
  check(await card.locator('.file-download').count() === 0, 'the status node\'s page offers a download that can only fail');
  await shot(b, 'cluster-files-elsewhere');

  // Bob's node goes away: the status service sends his page to the node that is left.
  const answer = await askHarness(`stop-node ${bob.node}`, 60000);
  check(answer === 'stopped', `unexpected answer from the harness: ${answer}`);
  await b.waitForFunction((gone) => net.ready && net.url !== gone, bob.node, { timeout: 30000 });
  const now = await nodeOf(b);
  check(chatNodes.includes(now) && now !== bob.node, `bob reconnected to ${now}`);
  await b.waitForSelector('#status.online');
  await b.waitForSelector('#messages li.theirs >> text=hello across the cluster');
  await shot(b, 'cluster-moved');
  console.log(`bob moved from ${bob.node} to ${now}`);
} catch (e) {
  fail(`e2e failed: ${e.stack || e}`);
  for (const { name, page } of pages) await shot(page, `failure-${name}`).catch(() => {});
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(`browser e2e: ${failures.length} failure(s)`);
  process.exit(1);
}
console.log('browser e2e: 1 passed, 0 failed');
process.exit(0); // stdin (the harness's answers) would keep node running
