// The simulation console in a real browser: Debian's headless Chromium driven by playwright-core (no browser is
// downloaded). scripts/console-test.sh starts the banksim this test drives and sets:
//   BASE_URL        the server (SIMULATION_MODE=true, auth rate limit off for the test's own logins)
//   ADMIN_EMAIL     an admin it created from BANKSIM_ADMIN_EMAIL / BANKSIM_ADMIN_PASSWORD
//   ADMIN_PASSWORD
//   ARTIFACTS       where the screenshots go
//   CHROMIUM        the browser (default /usr/bin/chromium)
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

const BASE_URL = process.env.BASE_URL ?? 'http://127.0.0.1:8080';
const ADMIN_EMAIL = process.env.ADMIN_EMAIL ?? 'admin@example.com';
const ADMIN_PASSWORD = process.env.ADMIN_PASSWORD ?? 'password123';
const ARTIFACTS = process.env.ARTIFACTS ?? 'artifacts';
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const WAIT_MS = 20_000;

let browser;
let page;
/** Every console error and uncaught page error, with the step it happened in. */
const problems = [];
let step = 'loading';

/** A JSON request of the test itself (not the page's), as `token`'s owner. */
async function call(method, route, { token, body, headers = {} } = {}) {
  const response = await fetch(`${BASE_URL}${route}`, {
    method,
    headers: {
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

async function login(email, password) {
  const answer = await call('POST', '/api/v1/auth/login', { body: { email, password } });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.access_token;
}

async function screenshot(name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

function problemsDuring(...steps) {
  return problems.filter((problem) => steps.includes(problem.step));
}

before(async () => {
  await mkdir(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: CHROMIUM_FLAGS,
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push({ step, text: message.text() });
  });
  page.on('pageerror', (error) => problems.push({ step, text: `uncaught: ${error.message}`, uncaught: true }));
});

after(async () => {
  await browser?.close();
});

test('the console loads and an admin logs in, without console errors', async () => {
  step = 'login';
  await page.goto(`${BASE_URL}/console`);
  await page.fill('#login-email', ADMIN_EMAIL);
  await page.fill('#login-password', ADMIN_PASSWORD);
  await page.click('#login-form button[type="submit"]');
  await page.waitForSelector('#console:not([hidden])', { timeout: WAIT_MS });
  await page.waitForFunction(() => document.getElementById('clock-mode').textContent !== '–', null, { timeout: WAIT_MS });
  await page.waitForSelector('#ledger-report [data-ok="true"]', { timeout: WAIT_MS });
  await page.waitForSelector('#users tr[data-username]', { timeout: WAIT_MS });
  // Two metric readings make the first point of the charts.
  await page.waitForFunction(() => /transfers\/s/.test(document.getElementById('metrics-message').textContent),
    null, { timeout: WAIT_MS });
  await screenshot('01-logged-in');
  assert.deepEqual(problemsDuring('loading', 'login'), []);
});

test('advancing the clock from the page runs a due schedule, and the page shows it', async () => {
  step = 'schedule';
  const admin = await login(ADMIN_EMAIL, ADMIN_PASSWORD);
  const clock = await call('GET', '/api/v1/admin/clock', { token: admin });
  assert.equal(clock.status, 200);
  const payer = { username: 'console_payer', email: 'console.payer@example.com', password: 'console-payer-pw' };
  const registered = await call('POST', '/api/v1/auth/register', { body: payer });
  assert.ok([201, 409].includes(registered.status), JSON.stringify(registered.body));
  const token = await login(payer.email, payer.password);
  const executeAt = new Date(Date.parse(clock.body.now) + 3600 * 1000).toISOString();
  const schedule = await call('POST', '/api/v1/scheduled-transactions', {
    token,
    headers: { 'Idempotency-Key': `console-test-${Date.now()}` },
    body: {
      transaction_type: 'credit', amount: '12.34', currency: 'USD', schedule_type: 'once', execute_at: executeAt,
    },
  });
  assert.equal(schedule.status, 201, JSON.stringify(schedule.body));
  const scheduleId = schedule.body.id;

  await page.fill('#advance-by', '1d');
  await page.click('#advance-button');
  const shown = await page.waitForSelector(`#schedule-events tr[data-event-type="ScheduleExecuted"]`, { timeout: WAIT_MS });
  assert.match(await shown.textContent(), new RegExp(scheduleId.slice(0, 8)));
  await page.waitForFunction(() => document.getElementById('clock-mode').textContent === 'virtual', null,
    { timeout: WAIT_MS });
  await page.click('#users-refresh');
  await page.waitForFunction(() => /12\.34 USD/.test(
    document.querySelector('#users tr[data-username="console_payer"]')?.textContent ?? '',
  ), null, { timeout: WAIT_MS });
  const executions = await call('GET', `/api/v1/scheduled-transactions/${scheduleId}/executions`, { token });
  assert.equal(executions.status, 200);
  await screenshot('02-schedule-executed');
  assert.deepEqual(problemsDuring('schedule'), []);
});

test('a fault toggled on the page takes effect, and toggled off stops', async () => {
  step = 'faults';
  const admin = await login(ADMIN_EMAIL, ADMIN_PASSWORD);
  for (const box of await page.$$('#faults-form input[name="kind"]')) {
    const wanted = (await box.getAttribute('value')) === 'error_503';
    if ((await box.isChecked()) !== wanted) await box.click();
  }
  await page.fill('#faults-rate', '1');
  await page.fill('#faults-seed', '7');
  await page.click('#faults-on');
  await page.waitForSelector('#faults-state[data-enabled="true"]', { timeout: WAIT_MS });
  const setting = await call('GET', '/api/v1/admin/faults', { token: admin });
  assert.deepEqual([setting.body.enabled, setting.body.kinds, setting.body.seed], [true, ['error_503'], 7]);
  const probe = await call('GET', '/api/v1/me', { token: admin });
  assert.equal(probe.status, 503);
  assert.equal(probe.body.error_code, 'service_unavailable');
  // The page's own reads get the fault too, and it says so instead of failing.
  await page.waitForFunction(() => /503/.test(document.getElementById('users-message').textContent), null,
    { timeout: WAIT_MS });
  await screenshot('03-faults-on');

  await page.click('#faults-off');
  await page.waitForSelector('#faults-state[data-enabled="false"]', { timeout: WAIT_MS });
  step = 'after-faults';
  assert.equal((await call('GET', '/api/v1/me', { token: admin })).status, 200);
  // While the fault was on the browser logged the failed loads; the page itself threw nothing.
  assert.deepEqual(problemsDuring('faults').filter((p) => p.uncaught || !/status of 503/.test(p.text)), []);
});

test('a scenario started on the page runs until it is stopped, and its report is shown', async () => {
  step = 'scenario';
  await page.selectOption('#scenario-name', 'transfer');
  await page.fill('#scenario-users', '4');
  await page.fill('#scenario-connections', '2');
  await page.fill('#scenario-duration', '2m');
  await page.fill('#scenario-requests', '');
  await page.click('#scenario-start');
  await page.waitForSelector('#scenario-state[data-state="running"]', { timeout: WAIT_MS });
  // Traffic shows on the rate chart's reading before the stop.
  await page.waitForFunction(() => {
    const match = /([0-9.]+) transfers\/s/.exec(document.getElementById('metrics-message').textContent);
    return match && Number(match[1]) > 0;
  }, null, { timeout: 30_000 });
  // One more reading, so that both charts have a line to show.
  await page.waitForTimeout(2500);
  await screenshot('04-scenario-running');
  await page.click('#scenario-stop');
  await page.waitForSelector('#scenario-state[data-state="finished"]', { timeout: WAIT_MS });
  const verdict = await page.textContent('#scenario-report');
  assert.match(verdict, /passed/);
  assert.match(verdict, /stopped early\s*yes/);
  await page.click('#verify-button');
  await page.waitForSelector('#ledger-report [data-ok="true"]', { timeout: WAIT_MS });
  // The scenario's users registered themselves: the table lists them with their balances.
  await page.waitForFunction(() => document.querySelectorAll('#users tr[data-username]').length >= 6, null,
    { timeout: WAIT_MS });
  await screenshot('05-scenario-stopped');
  assert.deepEqual(problemsDuring('after-faults', 'scenario'), []);
});
