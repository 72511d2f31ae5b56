// End-to-end test of the dashboard's Notifications page in headless Chromium: two chat users
// exist (registered over the protocol from a page on the chat port, JSON over WebSocket), the
// admin composes a notification to everyone and sends it, the history shows it done for both
// recipients, one of them finds it in their system conversation by Sync; one to a group (its id
// past 2^53, entered and shown digit for digit) reaches its members; and a viewer sees the
// history without the compose form. Screenshots. Every wait is an event with a deadline.
// Started by gateway/tests/browser_admin.rs:  node web-tests/admin-notify.e2e.mjs ADMIN_URL ARTIFACT_DIR
// ($CHAT_URL is the chat port; operators root/admin and watcher/viewer exist).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DESKTOP, check, launch, newPage } from './harness.mjs';
import { login, report } from './admin-harness.mjs';

const [url, artifacts] = process.argv.slice(2);
const chatUrl = process.env.CHAT_URL;
if (!url || !artifacts || !chatUrl) {
  console.error('usage: CHAT_URL=… node admin-notify.e2e.mjs ADMIN_URL ARTIFACT_DIR');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const failures = [];
const fail = (why) => { console.error(why); failures.push(why); };
const browser = await launch();
const shot = (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });

// In a page on the chat port: registers (or logs in) `name`, then does `then` ('sync-system':
// returns the system conversation's messages; 'create-group': creates a group with the user
// `arg` and returns its id; null: returns the user's id). JSON text frames, answered by request id.
async function protocol(page, name, then, arg) {
  return page.evaluate(async ({ name, then, arg }) => {
    const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/ws');
    let next = 0;
    const waiting = new Map();
    ws.onmessage = (ev) => {
      const frame = JSON.parse(ev.data);
      const w = waiting.get(frame.requestId);
      if (w) { waiting.delete(frame.requestId); w(frame); }
    };
    await new Promise((ok, bad) => { ws.onopen = ok; ws.onerror = () => bad(new Error('ws')); });
    const ask = (body) => new Promise((ok, bad) => {
      const id = String(++next);
      const timer = setTimeout(() => bad(new Error('no answer to ' + JSON.stringify(body))), 10000);
      waiting.set(id, (f) => { clearTimeout(timer); ok(f); });
      ws.send(JSON.stringify({ requestId: id, ...body }));
    });
    await ask({ hello: { protocolVersion: 1 } });
    const password = 'a long enough password';
    await ask({ register: { username: name, password } });
    const login = await ask({ login: { username: name, password, deviceId: name + '-web' } });
    const me = BigInt(login.loginOk.userId);
    let out = me.toString();
    if (then === 'create-group') {
      const r = await ask({ groupCreate: { name: 'notified', memberIds: [arg], joinPolicy: 'JOIN_POLICY_INVITE_ONLY' } });
      out = r.groupCreated ? String(r.groupCreated.group.conversationId) : JSON.stringify(r);
    }
    if (then === 'sync-system') {
      const conv = ((2n << 62n) | me).toString();
      const batch = await ask({ sync: { conversationId: conv } });
      out = (batch.syncBatch.messages || []).map((m) => ({ type: m.contentType, from: m.fromUserId || '0', seq: m.seq }));
    }
    ws.close();
    return out;
  }, { name, then, arg });
}

try {
  const chat = await browser.newPage();
  await chat.goto(chatUrl);
  await protocol(chat, 'ann', null);
  const benId = await protocol(chat, 'ben', null);

  const admin = await newPage(browser, 'root', DESKTOP, fail);
  const a = admin.page;
  await login(a, url, 'root');
  await a.goto(url + '#/notifications');
  await a.fill('#page [name=title]', 'Maintenance tonight');
  await a.fill('#page [name=text]', 'The service restarts at 02:00 UTC for about ten minutes.');
  a.once('dialog', (d) => d.accept());
  await a.click('#notify-send');
  // The history row moves to done with both users counted.
  await a.locator('#notify-history tr[data-state="done"]', { hasText: 'Maintenance tonight' }).waitFor({ timeout: 15000 });
  const progress = await a.locator('#notify-history tr[data-state="done"] .progress').first().textContent();
  check(progress.trim() === '2 / 2', `progress: ${progress}`);
  await shot(a, 'admin-notify-sent');

  // Ann has it in her system conversation, from the server.
  const got = await protocol(chat, 'ann', 'sync-system').catch(async () => null);
  check(Array.isArray(got) && got.length === 1 && got[0].type === 'CONTENT_TYPE_SYSTEM_NOTICE' && got[0].from === '0',
    `ann's system conversation: ${JSON.stringify(got)}`);

  // To a group: its id is past 2^53, so it goes as a string, digit for digit, both ways.
  const groupId = await protocol(chat, 'ann', 'create-group', benId);
  check(/^\d+$/.test(groupId) && BigInt(groupId) > 2n ** 53n, `group id: ${groupId}`);
  await a.fill('#page [name=text]', 'Team meeting moved to 15:00.');
  await a.check('#page input[name=to][value=group]');
  await a.fill('#page [name=group]', groupId);
  await a.click('#notify-send');
  const groupRow = a.locator('#notify-history tr[data-state="done"]', { hasText: 'Team meeting moved' });
  await groupRow.waitFor({ timeout: 15000 }).catch(async () => fail(`no group notification done; flash: ${await a.textContent('#flash')}`));
  const to = (await groupRow.locator('td').nth(2).textContent().catch(() => '')).trim();
  check(to === `group ${groupId}`, `the history names the group ${groupId}: ${to}`);
  const groupProgress = (await groupRow.locator('.progress').textContent().catch(() => '')).trim();
  check(groupProgress === '2 / 2', `group progress: ${groupProgress}`);
  await shot(a, 'admin-notify-group');

  // A viewer sees the history but no compose form.
  const viewer = await newPage(browser, 'watcher', DESKTOP, fail);
  const v = viewer.page;
  await login(v, url, 'watcher');
  await v.goto(url + '#/notifications');
  await v.locator('#page', { hasText: 'Only admins send notifications' }).waitFor();
  await v.locator('#notify-history td', { hasText: 'Maintenance tonight' }).waitFor();
  check(await v.locator('#notify-send').count() === 0, 'the viewer has no send button');
  await shot(v, 'admin-notify-viewer');
} catch (e) {
  fail(`admin notifications: ${e.stack || e}`);
} finally {
  await browser.close();
}
report(failures, 'admin notifications: ok');
