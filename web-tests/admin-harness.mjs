// Helpers for the admin dashboard's browser tests.

// Logs `name` in on the dashboard at `url` (password from $ADMIN_PASSWORD) and waits for the shell.
export async function login(page, url, name) {
  await page.goto(url);
  await page.waitForSelector('#login:not([hidden]), #shell:not([hidden])');
  if (await page.isVisible('#shell')) return;
  await page.fill('#login-form [name=username]', name);
  await page.fill('#login-form [name=password]', process.env.ADMIN_PASSWORD);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#shell:not([hidden])');
  await page.waitForFunction((n) => document.getElementById('whoami').textContent.startsWith(n), name);
}

// Ends a script: prints the failures and exits non-zero if there were any, else says `what: ok`.
// (The harness reads stdin, which would keep node alive: exit explicitly.)
export function report(failures, what) {
  if (failures.length) {
    console.error(`FAILED:\n${failures.join('\n')}`);
    process.exit(1);
  }
  console.log(what);
  process.exit(0);
}
