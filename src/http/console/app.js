// The operators' console: live alerts (SSE), sensors by group, a chart of recent readings.
//
// It must stay usable with 10,000 sensors and thousands of active alerts, so: every list is
// paged and only the visible page is in the DOM; SSE events only mark parts of the page
// dirty, and one requestAnimationFrame redraws each dirty part at most once per frame.

import { t, pick, lang, setLang, applyStatic } from './i18n.js';
import { api, followAlerts, onTokenNeeded } from './api.js';
import { drawChart } from './chart.js';

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const PAGE = 50;
const SEV_RANK = { info: 0, warning: 1, major: 2, critical: 3 };
const OPERATOR_KEY = 'citygate.operator';
const REFRESH_MS = 15000;
const EVENT_REFRESH_MS = 2000;

const state = {
  timezone: 'UTC',
  kinds: new Map(), // kind → {name, metrics: Map(metric → {name, unit})}
  alerts: new Map(), // id → Alert (active only)
  alertList: null, // filtered and sorted; null when it must be recomputed
  alertPage: 0,
  filter: { kind: '', district: '' },
  districts: new Set(),
  filterKey: '',
  conn: 'connecting',
  summary: null,
  group: null, // {kind, district, offset, data}
  chart: { sensor: '', metric: '', detail: null, readings: [], status: 'chart_hint', vars: {} },
};

// ---- batched rendering --------------------------------------------------------------------

const dirty = new Set();
let frame = 0;

function invalidate(...parts) {
  for (const p of parts) dirty.add(p);
  if (!frame) frame = requestAnimationFrame(flush);
}

function flush() {
  frame = 0;
  const parts = [...dirty];
  dirty.clear();
  for (const p of parts) RENDER[p]();
}

const RENDER = {
  conn: renderConn,
  filters: renderFilters,
  alerts: renderAlerts,
  summary: renderSummary,
  group: renderGroup,
  chart: renderChart,
};
const ALL_PARTS = Object.keys(RENDER);

// ---- formatting ---------------------------------------------------------------------------

const timeFormats = new Map();
function fmtTime(ms) {
  if (ms === null || ms === undefined) return t('never');
  const key = `${lang()}|${state.timezone}`;
  let f = timeFormats.get(key);
  if (!f) {
    f = new Intl.DateTimeFormat(lang() === 'zh' ? 'zh-CN' : 'en-GB', {
      timeZone: state.timezone,
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
      hour12: false,
    });
    timeFormats.set(key, f);
  }
  return f.format(new Date(ms));
}

function fmtNum(v) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return String(v);
  if (Math.abs(v) >= 10000) return v.toFixed(0);
  return String(Number(v.toPrecision(4)));
}

function kindName(kind) {
  return pick(state.kinds.get(kind)?.name, kind);
}

function metricInfo(kind, metric) {
  return state.kinds.get(kind)?.metrics.get(metric);
}

function metricName(kind, metric) {
  return pick(metricInfo(kind, metric)?.name, metric);
}

function withUnit(kind, metric, v) {
  const unit = metricInfo(kind, metric)?.unit;
  return unit ? `${fmtNum(v)} ${unit}` : fmtNum(v);
}

function districtName(d) {
  return d ? d : t('no_district');
}

function cell(tr, text, cls) {
  const td = document.createElement('td');
  if (cls) td.className = cls;
  td.textContent = text;
  tr.append(td);
  return td;
}

// ---- dialogs and messages -----------------------------------------------------------------

let dialogQueue = Promise.resolve();

/** Asks the operator for a value; resolves to {value, comment} or null when cancelled. */
function ask({ text, value = '', secret = false, comment = false }) {
  const run = () =>
    new Promise((resolve) => {
      const dlg = $('dialog');
      const input = $('dialog-input');
      const extra = $('dialog-comment');
      $('dialog-text').textContent = text;
      input.type = secret ? 'password' : 'text';
      input.value = value;
      input.placeholder = '';
      extra.hidden = !comment;
      extra.value = '';
      extra.placeholder = t('ask_comment');
      dlg.returnValue = '';
      dlg.addEventListener(
        'close',
        () => resolve(dlg.returnValue === 'ok' ? { value: input.value, comment: extra.value } : null),
        { once: true },
      );
      dlg.showModal();
      input.focus();
    });
  const p = dialogQueue.then(run);
  dialogQueue = p.catch(() => {});
  return p;
}

let toastTimer = 0;
function toast(text) {
  const el = $('toast');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), 6000);
}

onTokenNeeded(async () => {
  const answer = await ask({ text: t('ask_token'), secret: true });
  return answer?.value.trim() || null;
});

// ---- connection -----------------------------------------------------------------------------

function renderConn() {
  const el = $('conn-status');
  el.dataset.state = state.conn;
  el.querySelector('.conn-label').textContent = t(`conn_${state.conn}`);
}

// ---- alerts ---------------------------------------------------------------------------------

function noteDistrict(d) {
  if (d && !state.districts.has(d)) {
    state.districts.add(d);
    invalidate('filters');
  }
}

function alertDistrict(a) {
  return a.tags?.district ?? null;
}

function setAlerts(list) {
  state.alerts = new Map(list.map((a) => [a.id, a]));
  for (const a of list) noteDistrict(alertDistrict(a));
  state.alertList = null;
  invalidate('alerts');
}

function applyMessage(msg) {
  const a = msg.alert;
  if (!a?.id) return;
  if (a.state === 'resolved' || msg.event === 'resolved') state.alerts.delete(a.id);
  else {
    state.alerts.set(a.id, a);
    noteDistrict(alertDistrict(a));
  }
  state.alertList = null;
  invalidate('alerts');
  // A sensor's status follows its alerts: refresh the counts soon, not once per event.
  soon('summary', loadSummary);
  if (state.group) soon('group', loadGroup);
  if (a.sensor === state.chart.sensor) soon('chart', loadReadings);
}

function visibleAlerts() {
  if (state.alertList) return state.alertList;
  const { kind, district } = state.filter;
  const list = [];
  for (const a of state.alerts.values()) {
    if (kind && a.kind !== kind) continue;
    if (district && alertDistrict(a) !== district) continue;
    list.push(a);
  }
  // Worst first; within a severity the ones nobody took care of yet, then the newest.
  list.sort(
    (x, y) =>
      (SEV_RANK[y.severity] ?? 0) - (SEV_RANK[x.severity] ?? 0) ||
      Number(Boolean(x.ack)) - Number(Boolean(y.ack)) ||
      y.started_at - x.started_at ||
      (x.sensor < y.sensor ? -1 : x.sensor > y.sensor ? 1 : 0),
  );
  state.alertList = list;
  return list;
}

function renderAlerts() {
  const list = visibleAlerts();
  const pages = Math.max(1, Math.ceil(list.length / PAGE));
  state.alertPage = Math.min(state.alertPage, pages - 1);
  const start = state.alertPage * PAGE;
  const rows = document.createDocumentFragment();
  for (const a of list.slice(start, start + PAGE)) rows.append(alertRow(a));
  $('alert-list').replaceChildren(rows);
  $('alerts-empty').hidden = list.length > 0;
  const filtered = state.filter.kind || state.filter.district;
  $('alerts-count').textContent =
    t('alerts_count', { n: state.alerts.size }) +
    (filtered ? ` · ${t('alerts_shown', { n: list.length })}` : '');
  $('alerts-page').textContent = t('page', { page: state.alertPage + 1, pages });
  $('alerts-prev').disabled = state.alertPage === 0;
  $('alerts-next').disabled = state.alertPage >= pages - 1;
}

function alertRow(a) {
  const tr = document.createElement('tr');
  tr.className = `sev-${a.severity}${a.ack ? ' acked' : ''}`;
  if (a.sensor === state.chart.sensor) tr.classList.add('selected');
  tr.dataset.testid = 'alert-row';
  tr.dataset.alertId = a.id;
  tr.dataset.sensor = a.sensor;
  tr.dataset.metric = a.metric;
  tr.dataset.rule = a.rule;
  tr.dataset.severity = a.severity;
  tr.dataset.acked = String(Boolean(a.ack));
  const sev = document.createElement('span');
  sev.className = `sev sev-${a.severity}`;
  sev.textContent = t(`sev_${a.severity}`);
  const td = document.createElement('td');
  td.append(sev);
  tr.append(td);
  const who = cell(tr, a.sensor, 'mono');
  const kind = document.createElement('div');
  kind.className = 'sub';
  kind.dataset.testid = 'alert-kind';
  kind.textContent = kindName(a.kind);
  who.append(kind);
  cell(tr, districtName(alertDistrict(a)));
  const what = cell(tr, `${metricName(a.kind, a.metric)} ${withUnit(a.kind, a.metric, a.value)}`, 'value');
  if (a.message) {
    const msg = document.createElement('div');
    msg.className = 'sub message';
    msg.textContent = a.message;
    what.append(msg);
  }
  cell(tr, fmtTime(a.started_at), 'since');
  const ackCell = document.createElement('td');
  if (a.ack) {
    const s = document.createElement('span');
    s.className = 'acked-by';
    s.dataset.testid = 'alert-acked';
    s.textContent = t('acked_by', { by: a.ack.by });
    s.title = [fmtTime(a.ack.at), a.ack.comment].filter(Boolean).join(' · ');
    ackCell.append(s);
  } else {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'ack';
    b.dataset.testid = 'alert-ack';
    b.textContent = t('ack');
    ackCell.append(b);
  }
  tr.append(ackCell);
  return tr;
}

async function ackAlert(id, button) {
  const input = $('operator-input');
  let operator = input.value.trim();
  const answer = operator
    ? await ask({ text: t('ask_comment') })
    : await ask({ text: t('ask_operator'), comment: true });
  if (!answer) return;
  let comment = answer.value;
  if (!operator) {
    operator = answer.value.trim();
    comment = answer.comment;
    if (!operator) return;
    input.value = operator;
    localStorage.setItem(OPERATOR_KEY, operator);
  }
  button.disabled = true;
  try {
    const res = await api(`/api/v1/alerts/${encodeURIComponent(id)}/ack`, {
      method: 'POST',
      body: { by: operator, comment: comment.trim() },
    });
    // The SSE stream brings the same change; this only makes the click feel immediate. An
    // alert the stream already resolved must not come back.
    if (res?.alert && state.alerts.has(id) && res.alert.state === 'active') {
      state.alerts.set(id, res.alert);
      state.alertList = null;
      invalidate('alerts');
    }
  } catch (e) {
    button.disabled = false;
    toast(t('ack_failed', { error: e.message }));
  }
}

function renderFilters() {
  const kinds = [...state.kinds.keys()];
  const districts = [...state.districts].sort();
  // Rebuilding a <select> while the operator has it open would close it: only on change.
  const key = `${lang()}|${kinds.join(',')}|${districts.join(',')}`;
  if (key === state.filterKey) return;
  state.filterKey = key;
  const fill = (sel, first, values, label, current) => {
    const opts = [new Option(first, '')];
    for (const v of values) opts.push(new Option(label(v), v));
    sel.replaceChildren(...opts);
    sel.value = current;
  };
  fill($('alert-filter-kind'), t('all_kinds'), kinds, kindName, state.filter.kind);
  fill($('alert-filter-district'), t('all_districts'), districts, (d) => d, state.filter.district);
}

// ---- sensors --------------------------------------------------------------------------------

let summaryText = '';
async function loadSummary() {
  let next;
  try {
    next = await api('/api/v1/sensors/summary');
    for (const g of next.groups || []) noteDistrict(g.district);
  } catch (e) {
    next = { error: e.message };
  }
  // The periodic refresh mostly finds nothing new: leave the DOM alone then.
  const text = JSON.stringify(next);
  if (text === summaryText) return;
  summaryText = text;
  state.summary = next;
  invalidate('summary');
}

function renderSummary() {
  const s = state.summary;
  const body = $('summary-list');
  if (!s) return;
  if (s.error) {
    $('sensors-total').textContent = t('load_failed', { error: s.error });
    return;
  }
  $('sensors-total').textContent = t('sensors_total', { n: s.total });
  const rows = document.createDocumentFragment();
  for (const g of s.groups || []) {
    const tr = document.createElement('tr');
    tr.dataset.testid = 'summary-row';
    tr.dataset.kind = g.kind;
    tr.dataset.district = g.district ?? '';
    if (state.group && state.group.kind === g.kind && state.group.district === (g.district ?? null)) {
      tr.classList.add('selected');
    }
    cell(tr, kindName(g.kind)).dataset.testid = 'summary-kind';
    cell(tr, districtName(g.district));
    for (const key of ['total', 'ok', 'suspect', 'offline', 'alerting']) {
      const n = g[key] ?? 0;
      const td = cell(tr, String(n), `num${n === 0 && key !== 'total' ? ' n-zero' : ''}`);
      if (n > 0 && key !== 'total' && key !== 'ok') td.classList.add('status', `status-${key}`);
      td.dataset.testid = 'group-count';
      td.dataset.status = key;
    }
    rows.append(tr);
  }
  body.replaceChildren(rows);
}

function openGroup(kind, district) {
  state.group = { kind, district, offset: 0, data: null };
  $('group').hidden = false;
  $('group-hint').hidden = true;
  invalidate('summary', 'group');
  loadGroup();
}

let groupRequest = 0;
async function loadGroup() {
  const g = state.group;
  if (!g) return;
  const q = new URLSearchParams({ kind: g.kind, offset: g.offset, limit: PAGE });
  // The contract has no "no district" filter: a group without a district lists the kind.
  if (g.district) q.set('district', g.district);
  const mine = ++groupRequest;
  try {
    const data = await api(`/api/v1/sensors?${q}`);
    if (mine !== groupRequest || state.group !== g) return;
    if (g.data && JSON.stringify(g.data) === JSON.stringify(data)) return;
    g.data = data;
  } catch (e) {
    if (mine !== groupRequest) return;
    g.data = { error: e.message };
  }
  invalidate('group');
}

function renderGroup() {
  const g = state.group;
  if (!g) return;
  $('group-title').textContent = t('group_title', {
    kind: kindName(g.kind),
    district: districtName(g.district),
  });
  const d = g.data;
  if (!d) return;
  if (d.error) {
    $('sensors-range').textContent = t('load_failed', { error: d.error });
    return;
  }
  const rows = document.createDocumentFragment();
  for (const s of d.sensors || []) rows.append(sensorRow(s));
  $('sensor-list').replaceChildren(rows);
  const pages = Math.max(1, Math.ceil(d.total / PAGE));
  const page = Math.floor(d.offset / PAGE);
  $('sensors-range').textContent = t('range', {
    from: d.count ? d.offset + 1 : 0,
    to: d.offset + d.count,
    total: d.total,
  });
  $('sensors-page').textContent = t('page', { page: page + 1, pages });
  $('sensors-prev').disabled = d.offset === 0;
  $('sensors-next').disabled = d.offset + d.count >= d.total;
}

function sensorRow(s) {
  const tr = document.createElement('tr');
  tr.dataset.testid = 'sensor-row';
  tr.dataset.sensorId = s.id;
  tr.dataset.status = s.status;
  if (s.id === state.chart.sensor) tr.classList.add('selected');
  cell(tr, s.id, 'mono');
  cell(tr, t(`st_${s.status}`), `status status-${s.status}`);
  cell(tr, fmtTime(s.last_seen));
  const latest = Object.entries(s.latest || {})
    .slice(0, 4)
    .map(([m, r]) => `${metricName(s.kind, m)} ${withUnit(s.kind, m, r.value)}`)
    .join(' · ');
  cell(tr, latest, 'latest');
  cell(tr, String(s.active_alerts ?? 0), 'num');
  return tr;
}

function pageGroup(delta) {
  const g = state.group;
  if (!g?.data || g.data.error) return;
  const next = g.offset + delta * PAGE;
  if (next < 0 || next >= g.data.total) return;
  g.offset = next;
  loadGroup();
}

// ---- chart ----------------------------------------------------------------------------------

let chartRequest = 0;

async function selectSensor(id, metric) {
  id = id.trim();
  const c = state.chart;
  c.sensor = id;
  c.metric = metric || '';
  c.detail = null;
  c.readings = [];
  $('chart-sensor').value = id;
  invalidate('alerts', 'group');
  if (!id) {
    setChartStatus('chart_hint');
    return;
  }
  const mine = ++chartRequest;
  try {
    const detail = await api(`/api/v1/sensors/${encodeURIComponent(id)}`);
    if (mine !== chartRequest) return;
    c.detail = detail;
    const metrics = detail.metrics || [];
    if (!metrics.some((m) => m.metric === c.metric)) c.metric = metrics[0]?.metric || '';
    fillMetricPicker();
    await loadReadings();
  } catch (e) {
    if (mine !== chartRequest) return;
    setChartStatus(e.reason === 'not_found' ? 'not_found' : 'load_failed', {
      id,
      error: e.message,
    });
  }
}

function fillMetricPicker() {
  const c = state.chart;
  const kind = c.detail?.sensor?.kind;
  const opts = (c.detail?.metrics || []).map(
    (m) => new Option(pick(m.name, metricName(kind, m.metric)), m.metric),
  );
  $('chart-metric').replaceChildren(...opts);
  $('chart-metric').value = c.metric;
}

function setChartStatus(key, vars = {}) {
  state.chart.status = key;
  state.chart.vars = vars;
  invalidate('chart');
}

async function loadReadings() {
  const c = state.chart;
  if (!c.sensor || !c.metric) return;
  const range = Number($('chart-range').value) || 86400000;
  const to = Date.now();
  const from = to - range;
  const q = new URLSearchParams({ metric: c.metric, from, limit: 5000, order: 'desc' });
  const mine = ++chartRequest;
  try {
    const data = await api(`/api/v1/sensors/${encodeURIComponent(c.sensor)}/readings?${q}`);
    if (mine !== chartRequest) return;
    c.readings = data.readings || [];
    c.from = from;
    c.to = to;
    setChartStatus(c.readings.length ? 'chart_points' : 'chart_empty', { n: c.readings.length });
  } catch (e) {
    if (mine !== chartRequest) return;
    setChartStatus('load_failed', { error: e.message });
  }
}

function renderChart() {
  const c = state.chart;
  $('chart-status').textContent = t(c.status, c.vars);
  const svg = $('chart-svg');
  if (!c.detail || !c.metric) {
    svg.replaceChildren();
    return;
  }
  fillMetricPicker();
  const kind = c.detail.sensor?.kind;
  const m = (c.detail.metrics || []).find((x) => x.metric === c.metric);
  const unit = m?.unit || '';
  drawChart(svg, {
    readings: c.readings,
    thresholds: m?.thresholds || [],
    from: c.from,
    to: c.to,
    fmtTime: (ms) => fmtTime(ms).replace(/:\d\d$/, ''),
    fmtValue: fmtNum,
    label: (th) =>
      t('threshold', {
        severity: t(`sev_${th.severity}`),
        direction: t(th.direction === 'below' ? 'dir_below' : 'dir_above'),
        value: unit ? `${fmtNum(th.value)} ${unit}` : fmtNum(th.value),
      }),
  });
  svg.dataset.sensor = c.sensor;
  svg.dataset.metric = c.metric;
  svg.dataset.kind = kind || '';
}

// ---- catalog, refresh, wiring -------------------------------------------------------------

async function loadCatalog() {
  for (let wait = 1000; ; wait = Math.min(wait * 2, 30000)) {
    try {
      const cat = await api('/api/v1/catalog');
      state.timezone = cat.timezone || 'UTC';
      state.kinds = new Map(
        (cat.kinds || []).map((k) => [
          k.kind,
          { name: k.name, metrics: new Map((k.metrics || []).map((m) => [m.metric, m])) },
        ]),
      );
      document.body.dataset.catalog = 'loaded';
      invalidate(...ALL_PARTS);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

const pending = new Map();
/** Runs `fn` once within the next EVENT_REFRESH_MS however many events asked for it. */
function soon(name, fn) {
  if (pending.has(name)) return;
  pending.set(
    name,
    setTimeout(() => {
      pending.delete(name);
      fn();
    }, EVENT_REFRESH_MS),
  );
}

function periodic() {
  if (document.hidden) return;
  loadSummary();
  if (state.group) loadGroup();
  if (state.chart.detail) loadReadings();
}

function wire() {
  for (const b of document.querySelectorAll('[data-lang]')) {
    b.addEventListener('click', () => {
      setLang(b.dataset.lang);
      invalidate(...ALL_PARTS);
    });
  }
  const op = $('operator-input');
  op.value = localStorage.getItem(OPERATOR_KEY) || '';
  op.addEventListener('input', () => localStorage.setItem(OPERATOR_KEY, op.value.trim()));

  $('alert-filter-kind').addEventListener('change', (e) => {
    state.filter.kind = e.target.value;
    state.alertPage = 0;
    state.alertList = null;
    invalidate('alerts');
  });
  $('alert-filter-district').addEventListener('change', (e) => {
    state.filter.district = e.target.value;
    state.alertPage = 0;
    state.alertList = null;
    invalidate('alerts');
  });
  $('alerts-prev').addEventListener('click', () => {
    state.alertPage = Math.max(0, state.alertPage - 1);
    invalidate('alerts');
  });
  $('alerts-next').addEventListener('click', () => {
    state.alertPage += 1;
    invalidate('alerts');
  });
  $('alert-list').addEventListener('click', (e) => {
    const row = e.target.closest('tr[data-alert-id]');
    if (!row) return;
    const ack = e.target.closest('button.ack');
    if (ack) ackAlert(row.dataset.alertId, ack);
    else selectSensor(row.dataset.sensor, row.dataset.metric);
  });

  $('summary-list').addEventListener('click', (e) => {
    const row = e.target.closest('tr[data-kind]');
    if (row) openGroup(row.dataset.kind, row.dataset.district || null);
  });
  $('group-close').addEventListener('click', () => {
    state.group = null;
    $('group').hidden = true;
    $('group-hint').hidden = false;
    invalidate('summary');
  });
  $('sensors-prev').addEventListener('click', () => pageGroup(-1));
  $('sensors-next').addEventListener('click', () => pageGroup(1));
  $('sensor-list').addEventListener('click', (e) => {
    const row = e.target.closest('tr[data-sensor-id]');
    if (row) selectSensor(row.dataset.sensorId);
  });

  $('chart-sensor').addEventListener('change', (e) => selectSensor(e.target.value));
  $('chart-metric').addEventListener('change', (e) => {
    state.chart.metric = e.target.value;
    loadReadings();
  });
  $('chart-range').addEventListener('change', () => loadReadings());
}

function start() {
  applyStatic(document);
  wire();
  invalidate(...ALL_PARTS);
  followAlerts({
    onSnapshot: (snap) => setAlerts(snap.alerts || []),
    onMessage: applyMessage,
    onState: (s) => {
      state.conn = s;
      invalidate('conn');
    },
  });
  loadCatalog();
  loadSummary();
  setInterval(periodic, REFRESH_MS);
}

start();
