// banksim console: simulation mode's control panel. One ES module, no dependencies, no build step.
//
// It logs in as an admin and then uses the public API only, with the access token kept in this module's memory
// (never in storage): the clock, the random faults, the scenario runner, the ledger report, the users and their
// balances, the event log (for schedule activity) and the Prometheus metrics (for the charts, derived from
// successive readings of the counters).

const POLL_MS = 2000;
const USERS_POLL_MS = 5000;
const CHART_POINTS = 60;
const USERS_PAGE = 20;
const EVENT_PAGES_PER_POLL = 20;
const SCHEDULE_EVENTS_SHOWN = 15;

const $ = (id) => document.getElementById(id);

/** The session: tokens in memory only. */
const session = { accessToken: null, refreshToken: null, user: null };

/** An error answer of the API, with its envelope. */
class ApiFailure extends Error {
  constructor(status, body) {
    super(body?.error ? `${status} ${body.error_code}: ${body.error}` : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function send(method, path, body, { auth = true } = {}) {
  const headers = {};
  if (auth && session.accessToken) headers.Authorization = `Bearer ${session.accessToken}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  return fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

/** A JSON request; refreshes the session once when the access token has expired. */
async function api(method, path, body, options) {
  let response = await send(method, path, body, options);
  if (response.status === 401 && session.refreshToken && (await refreshSession())) {
    response = await send(method, path, body, options);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { error: text.slice(0, 200) };
    }
  }
  if (!response.ok) throw new ApiFailure(response.status, data);
  return data;
}

async function refreshSession() {
  try {
    const response = await send('POST', '/api/v1/auth/refresh', { refresh_token: session.refreshToken }, { auth: false });
    if (!response.ok) return false;
    const tokens = await response.json();
    session.accessToken = tokens.access_token;
    session.refreshToken = tokens.refresh_token;
    return true;
  } catch {
    return false;
  }
}

/** Shows `text` in a message line, as a failure when `failed`. */
function say(id, text, failed = false) {
  const line = $(id);
  line.textContent = text;
  line.classList.toggle('failed', failed);
}

function describe(error) {
  return error instanceof ApiFailure ? error.message : `no answer (${error.message})`;
}

/** Replaces the children of `parent` with elements made from `rows`. */
function fill(parent, rows) {
  parent.replaceChildren(...rows);
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement('tr');
  for (const cell of cells) tr.append(cell instanceof Node ? cell : element('td', cell));
  return tr;
}

function definitionList(pairs) {
  const list = document.createElement('dl');
  for (const [term, value] of pairs) list.append(element('dt', term), element('dd', value));
  return list;
}

// ---- Login -------------------------------------------------------------------------------------------------

async function logIn(event) {
  event.preventDefault();
  say('login-error', '');
  const email = $('login-email').value.trim();
  const password = $('login-password').value;
  try {
    const login = await api('POST', '/api/v1/auth/login', { email, password }, { auth: false });
    if (login.user?.role !== 'admin') {
      say('login-error', 'This console is for admins: log in with an admin account.', true);
      return;
    }
    session.accessToken = login.access_token;
    session.refreshToken = login.refresh_token;
    session.user = login.user;
    $('login-password').value = '';
    start();
  } catch (error) {
    say('login-error', describe(error), true);
  }
}

function logOut() {
  const refreshToken = session.refreshToken;
  session.accessToken = null;
  session.refreshToken = null;
  session.user = null;
  if (refreshToken) send('POST', '/api/v1/auth/logout', { refresh_token: refreshToken }, { auth: false }).catch(() => {});
  window.location.reload();
}

// ---- Clock -------------------------------------------------------------------------------------------------

function showClock(clock) {
  $('clock-now').textContent = clock.now;
  $('clock-mode').textContent = clock.mode;
  const badge = $('clock-badge');
  badge.textContent = `${clock.mode === 'virtual' ? 'virtual' : 'system'} clock: ${clock.now}`;
  badge.hidden = false;
}

async function refreshClock() {
  showClock(await api('GET', '/api/v1/admin/clock'));
}

async function advanceClock(event) {
  event.preventDefault();
  const advance = $('advance-by').value.trim();
  const button = $('advance-button');
  button.disabled = true;
  say('clock-message', `advancing by ${advance}…`);
  try {
    const clock = await api('POST', '/api/v1/admin/clock', { advance });
    showClock(clock);
    say('clock-message', `advanced by ${advance}: what fell due has run`);
    // What fell due moved money: the balances and the ledger's figures changed with it.
    await Promise.allSettled([refreshEvents(), refreshUsers(), verifyLedger()]);
  } catch (error) {
    say('clock-message', describe(error), true);
  } finally {
    button.disabled = false;
  }
}

// ---- Faults ------------------------------------------------------------------------------------------------

function showFaults(faults) {
  $('faults-state').textContent = faults.enabled
    ? `on: rate ${faults.rate}, ${faults.kinds.join(', ')}, seed ${faults.seed}`
    : 'off';
  $('faults-state').dataset.enabled = String(faults.enabled);
}

async function refreshFaults() {
  showFaults(await api('GET', '/api/v1/admin/faults'));
}

async function faultsOn(event) {
  event.preventDefault();
  const kinds = [...document.querySelectorAll('#faults-form input[name="kind"]:checked')].map((box) => box.value);
  const body = { rate: $('faults-rate').value.trim(), kinds };
  const seed = $('faults-seed').value.trim();
  if (seed !== '') body.seed = Number(seed);
  try {
    showFaults(await api('PUT', '/api/v1/admin/faults', body));
    say('faults-message', 'random faults on');
  } catch (error) {
    say('faults-message', describe(error), true);
  }
}

async function faultsOff() {
  try {
    showFaults(await api('DELETE', '/api/v1/admin/faults'));
    say('faults-message', 'random faults off');
    await refreshUsers().catch(() => {});
  } catch (error) {
    say('faults-message', describe(error), true);
  }
}

// ---- Scenarios ---------------------------------------------------------------------------------------------

let scenarioNamesShown = false;

function showScenarioNames(names) {
  if (scenarioNamesShown) return;
  fill($('scenario-name'), names.map((name) => {
    const option = element('option', name);
    option.value = name;
    return option;
  }));
  scenarioNamesShown = true;
}

function showScenario(status) {
  showScenarioNames(status.scenarios);
  const run = status.run;
  const what = run ? ` (${run.scenario}, ${run.users} users, ${run.connections} connections)` : '';
  const seconds = (status.elapsed_ms / 1000).toFixed(1);
  $('scenario-state').textContent = status.state === 'idle' ? 'idle' : `${status.state}${what}, ${seconds} s`;
  $('scenario-state').dataset.state = status.state;
  $('scenario-start').disabled = status.state === 'running' || status.state === 'stopping';
  $('scenario-stop').disabled = status.state !== 'running';
  const report = $('scenario-report');
  if (status.error) {
    fill(report, [element('p', `the run could not be made: ${status.error}`, 'error')]);
  } else if (status.report) {
    const r = status.report;
    const verdict = element('p', r.passed ? 'passed' : 'failed', r.passed ? 'ok' : 'not-ok');
    const figures = definitionList([
      ['requests', `${r.requests} (${r.requests_per_sec.toFixed(1)}/s)`],
      ['movements', `${r.movements} (${r.movements_per_sec.toFixed(1)}/s)`],
      ['latency p50 / p99', `${r.latency_ms.p50} / ${r.latency_ms.p99} ms`],
      ['stopped early', status.stop_requested ? 'yes' : 'no'],
    ]);
    const failures = document.createElement('ul');
    for (const failure of r.failures ?? []) failures.append(element('li', failure));
    fill(report, [verdict, figures, failures]);
  } else {
    fill(report, []);
  }
}

async function refreshScenario() {
  try {
    showScenario(await api('GET', '/api/v1/admin/scenarios'));
  } catch (error) {
    if (error instanceof ApiFailure && error.body?.error_code === 'scenario_runner_unavailable') {
      $('scenario-state').textContent = 'unavailable: this server has no scenario runner';
      $('scenario-start').disabled = true;
      $('scenario-stop').disabled = true;
      return;
    }
    throw error;
  }
}

function numberOrNothing(id) {
  const text = $(id).value.trim();
  return text === '' ? undefined : Number(text);
}

async function startScenario(event) {
  event.preventDefault();
  const body = {
    scenario: $('scenario-name').value,
    users: numberOrNothing('scenario-users'),
    connections: numberOrNothing('scenario-connections'),
    requests: numberOrNothing('scenario-requests'),
    seed: numberOrNothing('scenario-seed'),
  };
  const duration = $('scenario-duration').value.trim();
  if (duration !== '') body.duration = duration;
  try {
    showScenario(await api('POST', '/api/v1/admin/scenarios', body));
    say('scenario-message', 'started');
  } catch (error) {
    say('scenario-message', describe(error), true);
  }
}

async function stopScenario() {
  say('scenario-message', 'stopping…');
  try {
    showScenario(await api('DELETE', '/api/v1/admin/scenarios'));
    say('scenario-message', 'stopped');
    await Promise.allSettled([refreshUsers(), verifyLedger()]);
  } catch (error) {
    say('scenario-message', describe(error), true);
  }
}

// ---- Ledger ------------------------------------------------------------------------------------------------

async function verifyLedger() {
  const report = $('ledger-report');
  fill(report, [element('p', 'checking…')]);
  try {
    const result = await api('GET', '/api/v1/admin/ledger/verify');
    const verdict = result.ok
      ? element('p', 'ok: every invariant holds', 'ok')
      : element('p', `${result.violations.length} violation(s)`, 'not-ok');
    verdict.dataset.ok = String(result.ok);
    const figures = definitionList([
      ['accounts', result.accounts],
      ['transactions', result.transactions],
      ['postings', result.postings],
    ]);
    const violations = document.createElement('ul');
    for (const violation of result.violations) violations.append(element('li', violation));
    fill(report, [verdict, figures, violations]);
  } catch (error) {
    fill(report, [element('p', describe(error), 'error')]);
  }
}

// ---- Schedule activity (the event log) ---------------------------------------------------------------------

const events = { after: 0, schedules: [] };

async function refreshEvents() {
  for (let page = 0; page < EVENT_PAGES_PER_POLL; page += 1) {
    const batch = await api('GET', `/api/v1/events?after=${events.after}&limit=100`);
    for (const event of batch.events) {
      if (event.aggregate_type === 'schedule') events.schedules.push(event);
    }
    events.after = batch.next_after;
    if (batch.events.length < 100) break;
  }
  events.schedules = events.schedules.slice(-SCHEDULE_EVENTS_SHOWN);
  fill($('schedule-events'), events.schedules.slice().reverse().map((event) => {
    const tr = row([event.sequence, event.event_type, event.aggregate_id.slice(0, 8), shortInstant(event.created_at)]);
    tr.dataset.eventType = event.event_type;
    return tr;
  }));
}

/** `2030-01-31T09:00:00.123456Z` as `2030-01-31 09:00:00Z`. */
function shortInstant(instant) {
  return instant.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

// ---- Users and balances ------------------------------------------------------------------------------------

const users = { cursor: null, next: null };

function balancesText(balances) {
  if (balances.length === 0) return '–';
  return balances.map((b) => `${b.amount} ${b.currency}`).join(', ');
}

async function refreshUsers() {
  const query = users.cursor ? `&cursor=${encodeURIComponent(users.cursor)}` : '';
  const page = await api('GET', `/api/v1/users?limit=${USERS_PAGE}&include_inactive=true${query}`);
  users.next = page.next_cursor;
  $('users-next').disabled = !page.next_cursor;
  $('users-total').textContent = `(${page.total} in all)`;
  const balances = await Promise.all(
    page.users.map((user) => api('GET', `/api/v1/users/${user.id}/balances`).then((b) => b.balances, () => null)),
  );
  fill($('users'), page.users.map((user, index) => {
    const tr = row([user.username, user.email, user.role, user.is_active ? 'yes' : 'no',
      balances[index] ? balancesText(balances[index]) : 'unavailable']);
    tr.dataset.username = user.username;
    return tr;
  }));
}

// ---- Metrics and charts ------------------------------------------------------------------------------------

/** The samples of a Prometheus text exposition: [{name, labels, value}]. */
function parseMetrics(text) {
  const samples = [];
  const line = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label = /(\w+)="((?:[^"\\]|\\.)*)"/g;
  for (const raw of text.split('\n')) {
    if (raw.startsWith('#')) continue;
    const match = line.exec(raw);
    if (!match) continue;
    const labels = {};
    for (const [, key, value] of (match[2] ?? '').matchAll(label)) labels[key] = value;
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

function total(samples, name, keep = () => true) {
  return samples.filter((s) => s.name === name && keep(s.labels)).reduce((sum, s) => sum + s.value, 0);
}

const isMoneyRequest = (labels) => labels.method === 'POST' && labels.endpoint?.startsWith('/api/v1/transactions/');

/** The counters the charts are derived from, read at one instant. */
function reading(samples) {
  const buckets = new Map();
  for (const s of samples) {
    if (s.name === 'banking_http_request_duration_seconds_bucket' && isMoneyRequest(s.labels)) {
      buckets.set(s.labels.le, (buckets.get(s.labels.le) ?? 0) + s.value);
    }
  }
  return {
    at: performance.now(),
    transfers: total(samples, 'banksim_ledger_movements_total', (l) => l.outcome === 'posted' && l.type === 'transfer'),
    movements: total(samples, 'banksim_ledger_movements_total', (l) => l.outcome === 'posted'),
    latencySum: total(samples, 'banking_http_request_duration_seconds_sum', isMoneyRequest),
    latencyCount: total(samples, 'banking_http_request_duration_seconds_count', isMoneyRequest),
    buckets,
  };
}

/** The 95th percentile between two readings, from the histogram's buckets (the upper bound of its bucket). */
function p95(before, after, count) {
  const bounds = [...after.buckets.keys()].sort((a, b) => Number(a) - Number(b));
  for (const bound of bounds) {
    const within = after.buckets.get(bound) - (before.buckets.get(bound) ?? 0);
    if (within >= 0.95 * count) return bound === '+Inf' ? NaN : Number(bound) * 1000;
  }
  return NaN;
}

const series = { transfers: [], movements: [], mean: [], p95: [] };
let lastReading = null;
let metricsAvailable = true;

function push(list, value) {
  list.push(value);
  if (list.length > CHART_POINTS) list.shift();
}

async function refreshMetrics() {
  if (!metricsAvailable) return;
  const response = await send('GET', '/metrics', undefined, { auth: false });
  if (response.status === 401 || response.status === 404) {
    metricsAvailable = false;
    say('metrics-message', response.status === 401
      ? 'the metrics need METRICS_TOKEN: the charts are off'
      : 'the metrics are served on METRICS_ADDR: the charts are off', true);
    return;
  }
  if (!response.ok) throw new ApiFailure(response.status, null);
  const now = reading(parseMetrics(await response.text()));
  if (lastReading) {
    const seconds = (now.at - lastReading.at) / 1000;
    const count = now.latencyCount - lastReading.latencyCount;
    push(series.transfers, (now.transfers - lastReading.transfers) / seconds);
    push(series.movements, (now.movements - lastReading.movements) / seconds);
    push(series.mean, count > 0 ? ((now.latencySum - lastReading.latencySum) / count) * 1000 : NaN);
    push(series.p95, count > 0 ? p95(lastReading, now, count) : NaN);
    say('metrics-message', `now: ${series.transfers.at(-1).toFixed(1)} transfers/s, `
      + `${series.movements.at(-1).toFixed(1)} movements/s`);
  }
  lastReading = now;
  drawChart($('rate-chart'), [[series.movements, '--all'], [series.transfers, '--transfers']]);
  drawChart($('latency-chart'), [[series.mean, '--mean'], [series.p95, '--p95']]);
}

/** Draws line series (values and a CSS colour variable each) on `canvas`, scaled to their largest value. */
function drawChart(canvas, lines) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const context = canvas.getContext('2d');
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  const style = getComputedStyle(document.documentElement);
  const values = lines.flatMap(([points]) => points).filter(Number.isFinite);
  const top = Math.max(1, ...values) * 1.1;
  const pad = { left: 44, right: 8, top: 8, bottom: 16 };
  const plotWidth = width - pad.left - pad.right;
  const plotHeight = height - pad.top - pad.bottom;
  context.strokeStyle = style.getPropertyValue('--line');
  context.fillStyle = style.getPropertyValue('--muted');
  context.font = '11px system-ui, sans-serif';
  context.lineWidth = 1;
  for (const fraction of [0, 0.5, 1]) {
    const y = pad.top + plotHeight * (1 - fraction);
    context.beginPath();
    context.moveTo(pad.left, y);
    context.lineTo(width - pad.right, y);
    context.stroke();
    context.fillText((top * fraction).toFixed(top * fraction >= 10 ? 0 : 1), 4, y + 4);
  }
  context.fillText(`last ${CHART_POINTS * (POLL_MS / 1000)} s`, pad.left, height - 3);
  context.lineWidth = 2;
  for (const [points, colour] of lines) {
    context.strokeStyle = style.getPropertyValue(colour);
    context.beginPath();
    let drawing = false;
    points.forEach((value, index) => {
      if (!Number.isFinite(value)) {
        drawing = false;
        return;
      }
      const x = pad.left + (plotWidth * (index + CHART_POINTS - points.length)) / (CHART_POINTS - 1);
      const y = pad.top + plotHeight * (1 - value / top);
      if (drawing) {
        context.lineTo(x, y);
      } else {
        // A point alone (the first reading, or one between gaps) shows as a dot.
        context.moveTo(x, y);
        context.arc(x, y, 1, 0, 2 * Math.PI);
        context.moveTo(x, y);
      }
      drawing = true;
    });
    context.stroke();
  }
}

// ---- Polling -----------------------------------------------------------------------------------------------

/** Runs `refresh` now and every `period` ms while logged in; a failure is shown, never thrown. */
function every(period, refresh, messageId) {
  const run = async () => {
    if (!session.accessToken) return;
    try {
      await refresh();
      // A failure shown by an earlier round is over; a message of an action stays.
      if (messageId && $(messageId).classList.contains('failed')) say(messageId, '');
    } catch (error) {
      if (messageId) say(messageId, describe(error), true);
    }
  };
  run();
  return window.setInterval(run, period);
}

function start() {
  $('login-panel').hidden = true;
  $('console').hidden = false;
  $('who').textContent = session.user.email;
  $('who').hidden = false;
  $('logout').hidden = false;
  every(POLL_MS, refreshClock, 'clock-message');
  every(POLL_MS, refreshMetrics, 'metrics-message');
  every(POLL_MS, refreshFaults, 'faults-message');
  every(POLL_MS, refreshScenario, 'scenario-message');
  every(POLL_MS, refreshEvents, 'events-message');
  every(USERS_POLL_MS, refreshUsers, 'users-message');
  verifyLedger();
}

function wire() {
  $('login-form').addEventListener('submit', logIn);
  $('logout').addEventListener('click', logOut);
  $('advance-form').addEventListener('submit', advanceClock);
  $('faults-form').addEventListener('submit', faultsOn);
  $('faults-off').addEventListener('click', faultsOff);
  $('scenario-form').addEventListener('submit', startScenario);
  $('scenario-stop').addEventListener('click', stopScenario);
  $('verify-button').addEventListener('click', verifyLedger);
  $('users-first').addEventListener('click', () => {
    users.cursor = null;
    refreshUsers().catch((error) => say('users-message', describe(error), true));
  });
  $('users-next').addEventListener('click', () => {
    if (!users.next) return;
    users.cursor = users.next;
    refreshUsers().catch((error) => say('users-message', describe(error), true));
  });
  $('users-refresh').addEventListener('click', () => {
    refreshUsers().catch((error) => say('users-message', describe(error), true));
  });
}

wire();
