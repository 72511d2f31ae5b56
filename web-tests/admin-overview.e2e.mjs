// End-to-end test of the dashboard's overview and activity pages in headless Chromium: the
// overview is the default page; under a small load (asked of the Rust harness with
// `@load SECONDS`) its numbers and live charts move (messages/s, the messages chart, p99, CPU
// per core); the activity page shows the day's messages and the heaviest sender of the last
// hour. Screenshots. Every wait is on an event with a deadline (STEP_MS), never a sleep.
// Started by gateway/tests/browser_admin.rs:  node web-tests/admin-overview.e2e.mjs ADMIN_URL ARTIFACT_DIR
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DESKTOP, PHONE, askHarness, check, launch, newPage } from './harness.mjs';
import { login, report } from './admin-harness.mjs';

const [url, artifacts] = process.argv.slice(2);
if (!url || !artifacts) {
  console.error('usage: node admin-overview.e2e.mjs ADMIN_URL ARTIFACT_DIR');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const failures = [];
const fail = (why) => { console.error(why); failures.push(why); };
const browser = await launch();
const shot = (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
const stat = (page, key) => page.$eval(`#overview [data-stat="${key}"]`, (e) => e.textContent);
const chartData = (page, id) => page.$eval(`#${id}`, (c) => ({ points: +c.dataset.points, last: +c.dataset.last, max: +c.dataset.max }));

try {
  const { page: a } = await newPage(browser, 'root', DESKTOP, fail);
  await login(a, url, 'root');
  // The default page is the overview, with its charts drawn from the series.
  await a.waitForSelector('#overview [data-stat="connections"]');
  await a.waitForSelector('#chart-cpu[data-points]');
  check(a.url().endsWith('/') || a.url().includes('#/overview'), `default page: ${a.url()}`);
  const idle = await chartData(a, 'chart-messages');
  check(idle.max === 0, `messages chart before any load: ${JSON.stringify(idle)}`);
  const pointsBefore = (await chartData(a, 'chart-cpu')).points;

  const answer = await askHarness('load 8', 15000);
  check(answer === 'loading', `unexpected answer from the harness: ${answer}`);
  // The numbers and the charts move: messages/s above zero, the messages chart's newest point
  // above zero, a p99 latency, and more points on the CPU chart than before.
  await a.waitForFunction(() => parseFloat(document.querySelector('#overview [data-stat="messages_per_s"]').textContent) > 0, null, { timeout: 20000 });
  // Three seconds of load on the chart, the newest above zero.
  await a.waitForFunction(() => {
    const c = document.getElementById('chart-messages').dataset;
    return +c.nonzero >= 3 && +c.last > 0;
  }, null, { timeout: 20000 });
  await a.waitForFunction(() => +document.getElementById('chart-latency').dataset.max > 0, null, { timeout: 20000 });
  await a.waitForFunction(() => document.querySelector('#overview [data-stat="connections"]').textContent === '2');
  const busy = await chartData(a, 'chart-messages');
  const cpu = await chartData(a, 'chart-cpu');
  check(busy.max > 0 && busy.points >= 2, `messages chart under load: ${JSON.stringify(busy)}`);
  check(cpu.points > pointsBefore, `CPU chart did not grow: ${pointsBefore} -> ${cpu.points}`);
  console.log(`under load: ${await stat(a, 'messages_per_s')} messages/s, p50/p99/p99.9 ${await stat(a, 'latency')}`);
  await shot(a, 'admin-overview-load');

  // Activity: today's messages and the heaviest sender of the last hour.
  await a.goto(url + '#/activity');
  await a.locator('#heaviest td', { hasText: 'load-a' }).first().waitFor();
  await a.waitForFunction(() => +document.getElementById('chart-messages-per-day').dataset.last > 0);
  const summary = await a.textContent('#activity-summary');
  check(/Today: 2 active users/.test(summary), `activity summary: ${summary}`);
  await shot(a, 'admin-overview-activity');

  // On a phone the charts stack and still draw.
  const { page: p } = await newPage(browser, 'phone', PHONE, fail);
  await login(p, url, 'root');
  await p.waitForSelector('#chart-messages[data-points]');
  const width = await p.$eval('#chart-messages', (c) => c.getBoundingClientRect().width);
  check(width > 250 && width <= 390, `chart width on a phone: ${width}`);
  await shot(p, 'admin-overview-phone');
} catch (e) {
  fail(`admin overview: ${e.stack || e}`);
} finally {
  await browser.close();
}
report(failures, 'admin overview: ok');
