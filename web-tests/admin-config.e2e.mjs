// End-to-end test of the dashboard's configuration page in headless Chromium: the admin sees
// the effective configuration with each key's source, changes a live key (the rate limit) and
// sees it applied (value, source "override", the audit entry); a bad value is refused with the
// server's reason shown; a key the server lowered (connections per shard past the open-file
// limit) is shown with what it runs at and why; the IP rules editor applies a deny list and clears it; a viewer sees
// the page read-only and a change sent from the viewer's page is refused (403). Screenshots.
// Every wait is on an event with a deadline, never a sleep.
// Started by gateway/tests/browser_admin.rs:  node web-tests/admin-config.e2e.mjs ADMIN_URL ARTIFACT_DIR
// (operators root/admin and watcher/viewer exist with the password in $ADMIN_PASSWORD).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DESKTOP, check, launch, newPage } from './harness.mjs';
import { login, report } from './admin-harness.mjs';

const [url, artifacts] = process.argv.slice(2);
if (!url || !artifacts) {
  console.error('usage: node admin-config.e2e.mjs ADMIN_URL ARTIFACT_DIR');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const failures = [];
const fail = (why) => { console.error(why); failures.push(why); };
const browser = await launch();
const shot = (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
const KEY = 'limits.messages_per_s_max';
const row = (page) => page.locator(`#config-table tr[data-key="${KEY}"]`);

try {
  const admin = await newPage(browser, 'root', DESKTOP, fail);
  const viewer = await newPage(browser, 'watcher', DESKTOP, fail);
  const a = admin.page;
  const v = viewer.page;

  await login(a, url, 'root');
  await a.goto(url + '#/config');
  await row(a).waitFor();
  // The test machine's open-file limit cannot hold the default connections per shard: the
  // server lowered it, and the page says so, with the reason.
  await a.locator('#config-lowered li').first().waitFor();
  const low = await a.locator('#config-lowered').textContent();
  check(low.includes('gateway.conns_per_shard_max') && low.includes('configured 500000'), `lowered: ${low}`);
  await a.fill('#config-filter', 'conns_per_shard_max');
  await a.waitForFunction(() => {
    const r = document.querySelector('#config-table tr[data-key="gateway.conns_per_shard_max"]');
    return r && r.textContent.includes('runs at');
  });
  await a.fill('#config-filter', 'limits.');
  await a.locator('#config-table tr[data-key="limits.sync_page_max"]').waitFor();
  check(await a.locator('#config-table tr[data-key="gateway.tcp_listen"]').count() === 0, 'the filter hides other keys');

  // A bad value: the server's reason is shown, nothing changes.
  await row(a).locator('input').fill('0');
  await row(a).locator('button').click();
  await a.waitForFunction(() => document.getElementById('config-error').textContent.includes('must be at least 1'));
  await shot(a, 'admin-config-refused');

  // A good one: applied, shown with its new source, audited.
  await row(a).locator('input').fill('250');
  await row(a).locator('button').click();
  await a.waitForFunction((k) => {
    const r = document.querySelector(`#config-table tr[data-key="${k}"]`);
    return r && r.textContent.includes('override') && r.querySelector('input').value === '250';
  }, KEY);
  const applied = await a.evaluate(async (k) => (await (await fetch('/api/config')).json()).keys.find(x => x.key === k), KEY);
  check(applied.value === 250 && applied.source === 'override', `applied: ${JSON.stringify(applied)}`);
  await shot(a, 'admin-config-changed');

  // IP rules: a deny list applied, then cleared.
  await a.fill('#ip-deny', '203.0.113.0/24\n2001:db8::/32');
  await a.click('#ip-save');
  await a.waitForFunction(() => document.getElementById('flash').textContent.includes('IP rules applied'));
  const rules = await a.evaluate(async () => (await fetch('/api/security/ip-rules')).json());
  check(rules.deny.length === 2, `rules: ${JSON.stringify(rules)}`);
  await a.fill('#ip-deny', 'not-an-address');
  await a.click('#ip-save');
  await a.waitForFunction(() => document.getElementById('ip-error').textContent.includes('neither an IP address'));
  await shot(a, 'admin-config-ip-rules');
  await a.fill('#ip-deny', '');
  await a.click('#ip-save');
  await a.waitForFunction(() => document.getElementById('ip-error').textContent === '');

  await a.goto(url + '#/audit');
  await a.locator('#audit td', { hasText: 'config.change' }).first().waitFor();

  // The viewer: read-only, and the server refuses a change anyway.
  await login(v, url, 'watcher');
  await v.goto(url + '#/config');
  await v.locator('#config-read-only').waitFor();
  await row(v).waitFor();
  check(await row(v).locator('input').count() === 0, 'no inputs for a viewer');
  check(await v.isHidden('#ip-save'), 'no IP rules button for a viewer');
  const refused = await v.evaluate(async (k) => {
    const me = await (await fetch('/api/session')).json();
    const res = await fetch('/api/config', {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf_token },
      body: JSON.stringify({ [k]: 1 }),
    });
    return { status: res.status, body: await res.json() };
  }, KEY);
  check(refused.status === 403 && refused.body.error.code === 'forbidden', `viewer's change: ${JSON.stringify(refused)}`);
  await shot(v, 'admin-config-viewer');
} catch (e) {
  fail(`admin config page: ${e.stack || e}`);
} finally {
  await browser.close();
}
report(failures, 'admin config page: ok');
