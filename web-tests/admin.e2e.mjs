// End-to-end test of the admin dashboard's access rules in headless Chromium: a wrong password
// is refused on the login form; the admin logs in, sees the audit log (their own login in it),
// creates an API key (shown once) and revokes it; a viewer logs in on a second page, reads the
// audit log, is told keys are for admins, and a change attempted from the viewer's page is
// refused by the server (403 forbidden); logging out returns to the login form. Screenshots.
// Every wait is on an event with a deadline (STEP_MS), never a sleep.
// Started by gateway/tests/browser_admin.rs:  node web-tests/admin.e2e.mjs ADMIN_URL ARTIFACT_DIR
// (operators root/admin and watcher/viewer exist with the password in $ADMIN_PASSWORD).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DESKTOP, check, launch, newPage } from './harness.mjs';
import { login, report } from './admin-harness.mjs';

const [url, artifacts] = process.argv.slice(2);
if (!url || !artifacts) {
  console.error('usage: node admin.e2e.mjs ADMIN_URL ARTIFACT_DIR');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const failures = [];
const fail = (why) => { console.error(why); failures.push(why); };
const browser = await launch();
const shot = (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });

try {
  const admin = await newPage(browser, 'root', DESKTOP, fail);
  const viewer = await newPage(browser, 'watcher', DESKTOP, fail);
  const a = admin.page;
  const v = viewer.page;

  // A wrong password is refused on the form.
  await a.goto(url);
  await a.fill('#login-form [name=username]', 'root');
  await a.fill('#login-form [name=password]', 'not the password');
  await a.click('#login-form button[type=submit]');
  await a.waitForFunction(() => document.getElementById('login-error').textContent.includes('wrong'));
  await shot(a, 'admin-login-refused');

  await login(a, url, 'root');
  await a.goto(url + '#/audit');
  await a.locator('#audit td', { hasText: 'admin.login' }).first().waitFor();

  await a.goto(url + '#/keys');
  await a.fill('#page [name=name]', 'grafana');
  await a.selectOption('#page [name=role]', 'viewer');
  await a.click('#page button[type=submit]');
  await a.waitForFunction(() => /rck_[0-9a-f]{64}/.test(document.getElementById('new-key').textContent));
  await a.locator('#page td', { hasText: 'grafana' }).waitFor();
  await shot(a, 'admin-keys');
  a.once('dialog', (d) => d.accept());
  await a.click('#page tr:has(td:text-is("grafana")) button.danger');
  await a.locator('#page td', { hasText: 'grafana' }).waitFor({ state: 'detached' });

  await login(v, url, 'watcher');
  await v.goto(url + '#/audit');
  await v.locator('#audit td', { hasText: 'admin.key_revoke' }).first().waitFor();
  await v.goto(url + '#/keys');
  await v.locator('#page', { hasText: 'Only admins' }).waitFor();
  // The page hides the controls, and the server refuses the change anyway.
  const refused = await v.evaluate(async () => {
    const me = await (await fetch('/api/session')).json();
    const res = await fetch('/api/keys', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf_token },
      body: JSON.stringify({ name: 'sneaky', role: 'admin' }),
    });
    return { status: res.status, body: await res.json() };
  });
  check(refused.status === 403 && refused.body.error.code === 'forbidden', `viewer's change: ${JSON.stringify(refused)}`);
  await shot(v, 'admin-viewer-refused');

  await v.click('#logout');
  await v.waitForSelector('#login:not([hidden])');
} catch (e) {
  fail(`admin dashboard: ${e.stack || e}`);
} finally {
  await browser.close();
}
report(failures, 'admin dashboard: ok');
