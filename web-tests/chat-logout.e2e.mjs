// End-to-end test of "Log out" in headless Chromium when the server puts it off: the logout must
// stay pending in localStorage and be sent again until the server takes it, so that the token
// ends on the server (README: "the token ends on the server too"). Erin's page talks to the real
// server through a Playwright WebSocket route that answers her first Logout UNAVAILABLE (the
// server failing) and the first token Login of the pending logout SERVER_FULL (login slots full,
// the connection closed), as the server does (docs/PROTOCOL.md); everything else passes through.
// Checks: the page says it is signing out while it waits, keeps the pending logout across both
// refusals, sends it again after retry_after_ms, and in the end a copy of the token no longer logs
// in (a protocol client of the test's own on another page) and the pending logout is gone. Then
// Frank's pending logout's Login is answered RATE_LIMITED every time (the unknown tokens' count
// of a shared address): after three in a row the page gives it up and shows the login form.
// Every wait is on an event with a deadline (STEP_MS), never a sleep.
// Started by gateway/tests/browser.rs:  node web-tests/chat-logout.e2e.mjs http://127.0.0.1:PORT/ ARTIFACT_DIR
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DESKTOP, STEP_MS, check, launch, newPage, protocolClient, register } from './harness.mjs';

const [url, artifacts] = process.argv.slice(2);
if (!url || !artifacts) {
  console.error('usage: node chat-logout.e2e.mjs URL ARTIFACT_DIR');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
// The SERVER_FULL answer's retry_after_ms: long enough to see the page wait (and to look at its
// storage meanwhile), short enough for the test.
const SERVER_FULL_RETRY_MS = 3000;

const failures = [];
const fail = (why) => { console.error(why); failures.push(why); };
const browser = await launch();
const pages = [];
const shot = (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`) });

// What the page sent that the route saw ({kind, pending}), in order; `until` waits for an entry.
const seen = [];
const waiters = new Set();
function note(entry) {
  seen.push(entry);
  for (const w of [...waiters]) w();
}
// Resolves with the first entry `match` accepts (seen already, or noted later), or fails after
// `timeoutMs`.
function until(what, match, timeoutMs = STEP_MS) {
  return new Promise((resolve, reject) => {
    const check = () => {
      const hit = seen.find(match);
      if (!hit) return;
      waiters.delete(check);
      clearTimeout(timer);
      resolve(hit);
    };
    const timer = setTimeout(() => { waiters.delete(check); reject(new Error(`${what}: not within ${timeoutMs} ms`)); }, timeoutMs);
    waiters.add(check);
    check();
  });
}

try {
  const erin = await newPage(browser, 'erin', DESKTOP, fail);
  const ops = await newPage(browser, 'ops', DESKTOP, fail);
  pages.push(erin, ops);
  const e = erin.page;
  await ops.page.goto(url);

  // The route: what the page sends, seen and (twice) answered here instead of by the server.
  let logoutRefused = false;
  let loginRefused = false;
  await e.routeWebSocket(/\/ws$/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage(async (message) => {
      let frame = null;
      try { frame = JSON.parse(message); } catch { /* not JSON: passed on */ }
      if (frame?.logout && !logoutRefused) {
        // The first Logout: the server is failing (storage), safe to retry; the connection stays.
        logoutRefused = true;
        note({ kind: 'logout-refused' });
        ws.send(JSON.stringify({
          requestId: frame.requestId,
          error: { code: 'ERROR_CODE_UNAVAILABLE', message: 'storage unavailable (test)', retryAfterMs: '150' },
        }));
        return;
      }
      if (frame?.login?.token && logoutRefused) {
        // What the page holds while it sends the pending logout's Login: read before the server
        // answers, so that it is the page's own doing.
        const pending = await e.evaluate(() => localStorage.getItem('ringchat.logout'));
        if (!loginRefused) {
          // The first token Login: the shard's login slots are full; the server answers and
          // closes the connection (docs/PROTOCOL.md, SERVER_FULL).
          loginRefused = true;
          note({ kind: 'login-refused', pending });
          ws.send(JSON.stringify({
            requestId: frame.requestId,
            error: { code: 'ERROR_CODE_SERVER_FULL', message: 'too many logins in flight (test)', retryAfterMs: String(SERVER_FULL_RETRY_MS) },
          }));
          await ws.close({ code: 1013, reason: 'SERVER_FULL' });
          await server.close();
          return;
        }
        note({ kind: 'login', pending });
      } else if (frame?.logout) {
        note({ kind: 'logout' });
      }
      server.send(message);
    });
  });

  await e.goto(url);
  await register(e, 'erin');
  const token = (await e.evaluate(() => JSON.parse(localStorage.getItem('ringchat.session')))).token;
  check(token, 'no token after registering');

  await e.click('#me-button');
  await e.click('#logout');
  // Refused twice (the Logout, then the pending logout's Login): the page says why it waits and
  // still holds the logout.
  await until('the pending logout\'s Login refused SERVER_FULL (the Logout\'s UNAVAILABLE dropped it?)',
    (s) => s.kind === 'login-refused');
  check(seen[0]?.kind === 'logout-refused', `the page did not send its Logout first: ${JSON.stringify(seen)}`);
  check(JSON.parse(seen[1].pending || 'null')?.token === token,
    `the Logout answered UNAVAILABLE dropped the pending logout: ${JSON.stringify(seen)}`);
  // The page settles on waiting (or, wrongly, on the login form with the logout forgotten).
  const waiting = e.locator('#banner:not([hidden])', { hasText: 'Signing out on the server' });
  await waiting.or(e.locator('#login:not([hidden])')).waitFor();
  const during = await e.evaluate(() => localStorage.getItem('ringchat.logout'));
  check(JSON.parse(during || 'null')?.token === token, `the Login answered SERVER_FULL dropped the pending logout: ${during}`);
  check(await waiting.isVisible(), 'the page does not say that it is signing out');
  await shot(e, 'desktop-logout-put-off');

  // Sent again after retry_after_ms: the Login and the Logout reach the server, the page shows
  // the login form with nothing pending, and the token is ended on the server.
  const again = await until('the pending logout sent again', (s) => s.kind === 'login',
    SERVER_FULL_RETRY_MS * 2 + STEP_MS);
  check(JSON.parse(again.pending || 'null')?.token === token, `the retried Login is not the pending logout's: ${JSON.stringify(again)}`);
  await e.waitForSelector('#login:not([hidden])');
  check(seen.some((s) => s.kind === 'logout'), `no Logout reached the server: ${JSON.stringify(seen)}`);
  const left = await e.evaluate(() => localStorage.getItem('ringchat.logout'));
  check(left === null, `the pending logout was kept after LogoutOk: ${left}`);
  const probe = await protocolClient(ops.page, 'erin-token');
  const r = await probe.ask({ login: { token, deviceId: 'stolen-copy' } });
  check(r.error?.code === 'ERROR_CODE_INVALID_CREDENTIALS', `the token still logs in after the logout: ${JSON.stringify(r)}`);
  await probe.close();
  console.log(`logout frames: ${JSON.stringify(seen.map((s) => s.kind))}`);

  // Frank's pending logout meets the unknown tokens' count of a shared address: every token
  // Login of it is answered RATE_LIMITED (the connection stays open, as the server's). After
  // LOGOUT_RATE_LIMITED_MAX of them in a row the page gives it up and shows the login form,
  // instead of "signing out" for ever.
  const frank = await newPage(browser, 'frank', DESKTOP, fail);
  pages.push(frank);
  const f = frank.page;
  let frankLogoutRefused = false;
  // What the page held as its pending logout at each token Login answered RATE_LIMITED.
  const rateLimited = [];
  await f.routeWebSocket(/\/ws$/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage(async (message) => {
      let frame = null;
      try { frame = JSON.parse(message); } catch { /* not JSON: passed on */ }
      if (frame?.logout && !frankLogoutRefused) {
        frankLogoutRefused = true;
        ws.send(JSON.stringify({
          requestId: frame.requestId,
          error: { code: 'ERROR_CODE_UNAVAILABLE', message: 'storage unavailable (test)', retryAfterMs: '150' },
        }));
        return;
      }
      if (frame?.login?.token && frankLogoutRefused) {
        rateLimited.push(await f.evaluate(() => localStorage.getItem('ringchat.logout')));
        ws.send(JSON.stringify({
          requestId: frame.requestId,
          error: { code: 'ERROR_CODE_RATE_LIMITED', message: 'too many unknown tokens from this address (test)', retryAfterMs: '100' },
        }));
        return;
      }
      server.send(message);
    });
  });
  await f.goto(url);
  await register(f, 'frank');
  await f.click('#me-button');
  const frankToken = (await f.evaluate(() => JSON.parse(localStorage.getItem('ringchat.session')))).token;
  await f.click('#logout');
  // Kept pending through the first refusals (backing off between them), then given up: the
  // login form, nothing pending.
  await f.locator('#login:not([hidden])').waitFor({ timeout: STEP_MS * 2 });
  check(rateLimited.length === 3, `the page gave up after ${rateLimited.length} RATE_LIMITED answers, not 3`);
  check(rateLimited.every((p) => JSON.parse(p || 'null')?.token === frankToken),
    `a RATE_LIMITED answer before the third dropped the pending logout: ${JSON.stringify(rateLimited)}`);
  const frankLeft = await f.evaluate(() => localStorage.getItem('ringchat.logout'));
  check(frankLeft === null, `the pending logout was kept after the page gave up: ${frankLeft}`);
  await shot(f, 'desktop-logout-rate-limited');
} catch (err) {
  fail(`e2e failed: ${err.stack || err}`);
  for (const { name, page } of pages) await shot(page, `failure-${name}`).catch(() => {});
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(`browser e2e: ${failures.length} failure(s)`);
  process.exit(1);
}
console.log('browser e2e: 1 passed, 0 failed');
process.exit(0);
