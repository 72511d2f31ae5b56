// Helpers for the browser end-to-end test: a TCP proxy that can cut a page's connection, the
// browser launch, pages that register users, and layout checks run inside a page.
import { chromium } from 'playwright-core';
import net from 'node:net';
import { createInterface } from 'node:readline';

export const STEP_MS = 15000;
export const DESKTOP = { viewport: { width: 1280, height: 800 } };
export const PHONE = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };

// A TCP proxy in front of the server: cut() drops every connection through it (the browser
// sees an abnormal close, 1006), refuse(true) drops new ones at once until refuse(false).
export async function startProxy(target) {
  let { hostname, port } = new URL(target);
  const sockets = new Set();
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(port), hostname);
    const pair = [client, upstream];
    const done = () => pair.forEach((s) => { s.destroy(); sockets.delete(s); });
    for (const s of pair) {
      sockets.add(s);
      s.on('error', done);
      s.on('close', done);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    cut: () => { for (const s of [...sockets]) s.destroy(); },
    refuse: (on) => { refusing = on; },
    retarget: (url) => ({ hostname, port } = new URL(url)),
    close: () => new Promise((resolve) => { for (const s of sockets) s.destroy(); server.close(resolve); }),
  };
}

export function launch() {
  // Playwright gives each launch a new, empty --user-data-dir of its own.
  return chromium.launch({
    executablePath: process.env.RINGCHAT_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    timeout: 60000,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

// Opens a page in a new context (its own storage) with console and page errors reported;
// a page error or a Content-Security-Policy refusal fails the test.
export async function newPage(browser, name, options, onFailure) {
  const context = await browser.newContext({ ...options, timezoneId: 'UTC', locale: 'en-GB' });
  const page = await watch(await context.newPage(), name, onFailure);
  return { name, context, page };
}

export async function watch(page, name, onFailure) {
  page.setDefaultTimeout(STEP_MS);
  page.on('console', (m) => {
    console.log(`[${name}] ${m.type()}: ${m.text()}`);
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) onFailure(`${name}: ${m.text()}`);
  });
  page.on('pageerror', (e) => onFailure(`${name}: page error: ${e}`));
  return page;
}

// Registers `name` on an open page; returns its user id.
export async function register(page, name) {
  await page.fill('#username', name);
  await page.fill('#password', 'correct horse battery');
  await page.click('#do-register');
  await page.waitForSelector('#me[data-user-id]', { state: 'attached' });
  return page.getAttribute('#me', 'data-user-id');
}

// Problems with the page's layout at its current size: horizontal overflow anywhere, and
// visible controls smaller than `minTap` px (tap targets on phones).
export function layoutProblems(page, minTap) {
  return page.evaluate((minTap) => {
    const problems = [];
    const width = window.innerWidth;
    for (const node of [document.documentElement, document.body, document.getElementById('messages')]) {
      if (node && node.scrollWidth > node.clientWidth + 1) {
        problems.push(`${node.id || node.tagName} scrolls sideways: ${node.scrollWidth} > ${node.clientWidth}`);
      }
    }
    for (const node of document.querySelectorAll('body *')) {
      const r = node.getBoundingClientRect();
      if (r.width && r.right > width + 1) problems.push(`${node.tagName}#${node.id}.${node.className} ends at ${r.right} > ${width}`);
    }
    if (minTap) {
      for (const node of document.querySelectorAll('button, input, textarea, select, #conversations li')) {
        // A check box is tapped through its label.
        const target = node.matches('input[type="checkbox"], input[type="radio"]') ? node.closest('label') || node : node;
        const r = target.getBoundingClientRect();
        if (!r.width || !r.height) continue; // not shown
        if (r.height < minTap || r.width < minTap) {
          problems.push(`tap target ${node.tagName}#${node.id}.${node.className} "${node.textContent.trim().slice(0, 20)}" is ${r.width}x${r.height}`);
        }
      }
    }
    return problems;
  }, minTap || 0);
}

export async function expectNoLayoutProblems(page, what, minTap) {
  const problems = await layoutProblems(page, minTap);
  if (problems.length) throw new Error(`${what}: ${problems.join('; ')}`);
}

// A protocol client of the test's own (JSON over WebSocket, as any client speaks it) in `page`,
// a page on the chat port: ask(body) resolves to the reply frame (an error frame too),
// askAll(bodies) sends them all at once and resolves to the replies in order. It pings so that
// the server does not close it as idle.
export async function protocolClient(page, name) {
  await page.evaluate(async ({ name, timeoutMs }) => {
    const ws = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/ws`);
    const waiting = new Map();
    let next = 0;
    ws.onmessage = (ev) => {
      const frame = JSON.parse(ev.data);
      const w = waiting.get(frame.requestId);
      if (w) { waiting.delete(frame.requestId); w(frame); }
    };
    await new Promise((ok, bad) => { ws.onopen = ok; ws.onerror = () => bad(new Error(`${name}: the WebSocket did not open`)); });
    const ask = (body) => new Promise((ok, bad) => {
      const id = String(++next);
      const timer = setTimeout(() => { waiting.delete(id); bad(new Error(`${name}: no answer to ${Object.keys(body)[0]}`)); }, timeoutMs);
      waiting.set(id, (frame) => { clearTimeout(timer); ok(frame); });
      ws.send(JSON.stringify({ requestId: id, ...body }));
    });
    const ping = setInterval(() => ws.send(JSON.stringify({ ping: { clientTimeMs: String(Date.now()) } })), 10000);
    ws.addEventListener('close', () => clearInterval(ping));
    (window.e2eClients ||= {})[name] = { ws, ask };
    await ask({ hello: { protocolVersion: 1, clientName: 'e2e' } });
  }, { name, timeoutMs: STEP_MS });
  return {
    ask: (body) => page.evaluate(([n, b]) => window.e2eClients[n].ask(b), [name, body]),
    askAll: (bodies) => page.evaluate(([n, bs]) => Promise.all(bs.map((b) => window.e2eClients[n].ask(b))), [name, bodies]),
    close: () => page.evaluate((n) => window.e2eClients[n].ws.close(), name),
  };
}

// A text message's Send body.
export const textTo = (to, text) => ({
  send: { clientMsgId: `e2e-${Math.random().toString(36).slice(2)}`, ...to, contentType: 'CONTENT_TYPE_TEXT', content: Buffer.from(text).toString('base64') },
});

// The first frame (parsed JSON) the page sends (`dir` 'sent') or receives ('received') on a
// WebSocket it opens from now on that `match` accepts; fails after `timeoutMs`.
export function waitForFrame(page, dir, match, timeoutMs = STEP_MS) {
  return new Promise((resolve, reject) => {
    let done = false;
    const onSocket = (ws) => ws.on(`frame${dir}`, ({ payload }) => {
      let frame;
      try { frame = JSON.parse(payload); } catch { return; }
      if (done || !match(frame)) return;
      done = true;
      clearTimeout(timer);
      page.off('websocket', onSocket);
      resolve(frame);
    });
    const timer = setTimeout(() => {
      done = true;
      page.off('websocket', onSocket);
      reject(new Error(`no ${dir} frame as expected in ${timeoutMs} ms`));
    }, timeoutMs);
    page.on('websocket', onSocket);
  });
}

// Every frame (parsed JSON) the page sends on the WebSockets it opens from now on.
export function framesSent(page) {
  const frames = [];
  page.on('websocket', (ws) => ws.on('framesent', ({ payload }) => {
    try { frames.push(JSON.parse(payload)); } catch { /* not JSON: not ours */ }
  }));
  return frames;
}

export function check(condition, message) {
  if (!condition) throw new Error(message);
}

// Asks gateway/tests/browser.rs to do something to the server (a line `@command` on stdout) and
// waits for its one-line answer on stdin.
const harnessLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
export async function askHarness(command, timeoutMs) {
  console.log(`@${command}`);
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer to @${command} in ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const { value, done } = await Promise.race([harnessLines.next(), timeout]);
    if (done) throw new Error(`stdin closed before the answer to @${command}`);
    return value;
  } finally {
    clearTimeout(timer);
  }
}
