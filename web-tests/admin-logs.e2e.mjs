// End-to-end test of the dashboard's Logs page in headless Chromium: the live tail shows a line
// the test caused (a failed admin login, logged at WARN), a text filter hides lines that do not
// match while showing one that does, pause holds new lines back, the search finds the line in
// the files and the export link downloads it; a viewer sees the page but cannot change the
// log filter (the server refuses it); leaving the page while it is still loading leaves no
// stream open and nothing of it on the next page; logging out ends the live tail's stream.
// Screenshots admin-logs-*.
// Every wait is on an event with a deadline (STEP_MS), never a sleep.
// Started by gateway/tests/browser_admin.rs:  node web-tests/admin-logs.e2e.mjs ADMIN_URL ARTIFACT_DIR
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DESKTOP, STEP_MS, check, launch, newPage } from './harness.mjs';
import { login, report } from './admin-harness.mjs';

const [url, artifacts] = process.argv.slice(2);
if (!url || !artifacts) {
  console.error('usage: node admin-logs.e2e.mjs ADMIN_URL ARTIFACT_DIR');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const failures = [];
const fail = (why) => { console.error(why); failures.push(why); };
const browser = await launch();
const shot = (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });

// A failed dashboard login by operator `name` (made by the test: a name no operator has is
// logged without it), from `page` (not logged in): the server logs it with the name.
async function failedLogin(page, name) {
  const status = await page.evaluate(async (n) => (await fetch('/api/session', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: n, password: 'not the password' }),
  })).status, name);
  check(status === 401, `failed login for ${name}: HTTP ${status}`);
}

const tailRow = (page, text) => page.locator('#tail-lines tr', { hasText: text });
const isTail = (r) => r.url().includes('/api/logs/stream');

// Counts the live tail's streams a page opens from now on, and those still open.
function tailStreams(page) {
  const open = new Set();
  let opened = 0;
  let wake = () => {};
  page.on('request', (r) => { if (isTail(r)) { open.add(r); opened++; wake(); } });
  for (const ended of ['requestfailed', 'requestfinished']) page.on(ended, (r) => { if (open.delete(r)) wake(); });
  return {
    // Waits (at most STEP_MS) until `done(opened, stillOpen)` holds.
    async until(what, done) {
      const deadline = Date.now() + STEP_MS;
      while (!done(opened, open.size)) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`${what}: ${opened} stream(s) opened, ${open.size} still open`);
        await new Promise((ok) => { wake = ok; setTimeout(ok, left); });
      }
    },
  };
}

try {
  const admin = await newPage(browser, 'root', DESKTOP, fail);
  const other = await newPage(browser, 'stranger', DESKTOP, fail);
  const viewer = await newPage(browser, 'watcher', DESKTOP, fail);
  const a = admin.page;
  await other.page.goto(url);

  await login(a, url, 'root');
  await a.goto(url + '#/logs');
  await a.waitForFunction(() => document.getElementById('tail-status')?.textContent === 'live');

  // The tail shows a line caused by the test.
  await failedLogin(other.page, 'browsermark1');
  await tailRow(a, 'browsermark1').first().waitFor();
  check(await tailRow(a, 'browsermark1').first().locator('.log-level').textContent() === 'WARN', 'the line is at WARN');
  await shot(a, 'admin-logs-tail');

  // A text filter: lines that do not match stay out, one that does comes in. The two events are
  // logged in this order, so once the second is shown the first was filtered out.
  await a.fill('#page [name=tail-q]', 'othermark');
  await a.click('#tail-form button[type=submit]');
  await a.waitForFunction(() => document.getElementById('tail-status').textContent === 'live'
    && document.getElementById('tail-lines').childElementCount === 0);
  await failedLogin(other.page, 'browsermark2');
  await failedLogin(other.page, 'othermark');
  await tailRow(a, 'othermark').first().waitFor();
  check(await tailRow(a, 'browsermark').count() === 0, 'the filter hides the other lines');
  await shot(a, 'admin-logs-filtered');

  // Pause: a new line is counted, not shown.
  await a.click('#tail-pause');
  await failedLogin(other.page, 'othermark-paused');
  await a.waitForFunction(() => document.getElementById('tail-status').textContent === 'paused (1 new)');
  check(await tailRow(a, 'othermark-paused').count() === 0, 'a paused tail shows nothing new');
  await a.click('#tail-pause');

  // The search finds the first line in the files; the export link downloads it.
  await a.fill('#page [name=search-q]', 'browsermark1');
  await a.selectOption('#page [name=search-level]', 'warn');
  await a.click('#search-form button[type=submit]');
  await a.locator('#search-lines tr', { hasText: 'browsermark1' }).first().waitFor();
  const href = await a.getAttribute('#export-link', 'href');
  check(href.includes('q=browsermark1') && href.includes('level=warn'), `export link: ${href}`);
  const exported = await a.evaluate(async (h) => {
    const res = await fetch(h);
    return { status: res.status, disposition: res.headers.get('content-disposition'), text: await res.text() };
  }, href);
  check(exported.status === 200 && /^attachment; filename="ringchat-logs-.*\.jsonl"$/.test(exported.disposition),
    `export: ${exported.status} ${exported.disposition}`);
  check(exported.text.trim().split('\n').length === 1 && exported.text.includes('browsermark1'), `exported: ${exported.text}`);
  await shot(a, 'admin-logs-search');

  // A viewer reads logs but cannot change the filter: the control is off and the server refuses.
  const v = viewer.page;
  await login(v, url, 'watcher');
  await v.goto(url + '#/logs');
  await v.waitForFunction(() => document.getElementById('tail-status')?.textContent === 'live');
  check(await v.isDisabled('#page [name=log-filter]'), 'the filter input is off for a viewer');
  const refused = await v.evaluate(async () => {
    const me = await (await fetch('/api/session')).json();
    const res = await fetch('/api/logs/filter', {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf_token },
      body: JSON.stringify({ filter: 'trace' }),
    });
    return { status: res.status, body: await res.json() };
  });
  check(refused.status === 403 && refused.body.error.code === 'forbidden', `viewer's change: ${JSON.stringify(refused)}`);
  await shot(v, 'admin-logs-viewer');

  // Leaving the Logs page before it has loaded: the viewer goes to Users while the log filter's
  // answer is held back. When it comes, the late Logs render must neither put its cards on the
  // Users page nor leave its live tail's stream open (it used to do both, for good).
  await v.goto(url + '#/users');
  await v.waitForSelector('#user-query');
  let filterAsked;
  const asked = new Promise((ok) => { filterAsked = ok; });
  let release;
  const held = new Promise((ok) => { release = ok; });
  await v.route('**/api/logs/filter', async (route) => {
    if (route.request().method() === 'GET') { filterAsked(); await held; }
    await route.continue();
  });
  // Counts, in the page, the log filter answers read, one task after the read: by then every
  // continuation of the read (the rest of the late render, the shell's check) has run.
  await v.evaluate(() => {
    const text = Response.prototype.text;
    window.filterReads = 0;
    Response.prototype.text = function () {
      const read = text.call(this);
      if (this.url.includes('/api/logs/filter')) read.then(() => setTimeout(() => { window.filterReads++; }, 0));
      return read;
    };
  });
  const streams = tailStreams(v);
  await v.evaluate(() => { location.hash = '#/logs'; });
  await asked;
  await v.evaluate(() => { location.hash = '#/users'; });
  await v.waitForSelector('#user-query');
  release();
  await v.waitForFunction(() => window.filterReads === 1);
  await streams.until('the late Logs page\'s stream', (opened, stillOpen) => stillOpen === 0)
    .catch((e) => fail(e.message));
  check(await v.locator('#tail-lines, #filter-form').count() === 0, 'the late Logs page put its cards on the Users page');
  check(await v.isVisible('#user-query'), 'the Users page is still shown');
  await shot(v, 'admin-logs-left-early');
  await v.unroute('**/api/logs/filter');

  // Logging out leaves the page: its live tail's stream ends (it holds one of the server's
  // log.streams_max places, and its operator's share of them).
  const tailEnded = Promise.race([
    a.waitForEvent('requestfailed', { predicate: isTail }),
    a.waitForEvent('requestfinished', { predicate: isTail }),
  ]);
  await a.click('#logout');
  await a.waitForSelector('#login:not([hidden])');
  await tailEnded.catch((e) => fail(`the live tail's stream stayed open after logout: ${e.message}`));
} catch (e) {
  fail(`admin logs page: ${e.stack || e}`);
} finally {
  await browser.close();
}
report(failures, 'admin logs page: ok');
