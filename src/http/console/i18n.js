// Every label of the console in English and Simplified Chinese. Kind and metric names are not
// here: they come from the gateway's catalog (/api/v1/catalog), so a new kind needs no console
// change.

const DICT = {
  en: {
    title: 'citygate console',
    subtitle: 'City sensor monitoring',
    language: 'Language',
    operator: 'Operator',
    operator_placeholder: 'your name',
    token: 'Access token',
    conn_connecting: 'connecting…',
    conn_live: 'live',
    conn_reconnecting: 'reconnecting…',
    conn_auth: 'token needed',
    alerts: 'Live alerts',
    alerts_count: '{n} active',
    alerts_shown: '{n} shown',
    all_kinds: 'All kinds',
    all_districts: 'All districts',
    no_district: '(no district)',
    no_alerts: 'No active alerts.',
    col_severity: 'Severity',
    col_sensor: 'Sensor',
    col_kind: 'Kind',
    col_district: 'District',
    col_metric: 'Metric',
    col_value: 'Reading',
    col_since: 'Since',
    col_state: 'Ack',
    col_status: 'Status',
    col_total: 'Total',
    col_last_seen: 'Last seen',
    col_latest: 'Latest readings',
    col_alerts: 'Alerts',
    ack: 'Ack',
    acked_by: 'acked by {by}',
    ack_failed: 'Acknowledgement failed: {error}',
    ask_operator: 'Who is acknowledging? Your name is kept in this browser.',
    ask_comment: 'Comment (optional)',
    ask_token: 'This gateway needs an access token.',
    ok: 'OK',
    cancel: 'Cancel',
    prev: '‹ Prev',
    next: 'Next ›',
    page: 'Page {page} of {pages}',
    range: '{from}–{to} of {total}',
    sev_info: 'info',
    sev_warning: 'warning',
    sev_major: 'major',
    sev_critical: 'critical',
    st_ok: 'ok',
    st_suspect: 'suspect',
    st_offline: 'offline',
    st_alerting: 'alerting',
    sensors: 'Sensors',
    sensors_total: '{n} sensors',
    group_hint: 'Open a group to list its sensors.',
    group_title: '{kind} · {district}',
    close: 'Close',
    chart: 'Recent readings',
    chart_hint: 'Pick a sensor from the lists to see its readings.',
    chart_sensor: 'Sensor',
    chart_metric: 'Metric',
    chart_range: 'Range',
    range_6h: '6 h',
    range_24h: '24 h',
    range_7d: '7 days',
    chart_empty: 'No readings in this range.',
    chart_points: '{n} readings',
    threshold: '{severity} {direction} {value}',
    dir_above: '≥',
    dir_below: '≤',
    not_found: 'Sensor {id} is not known to the gateway.',
    load_failed: 'Could not load: {error}',
    never: 'never',
  },
  zh: {
    title: 'citygate 监控台',
    subtitle: '城市传感器监测',
    language: '语言',
    operator: '值班员',
    operator_placeholder: '您的姓名',
    token: '访问令牌',
    conn_connecting: '正在连接…',
    conn_live: '实时',
    conn_reconnecting: '正在重连…',
    conn_auth: '需要令牌',
    alerts: '实时告警',
    alerts_count: '{n} 条活动告警',
    alerts_shown: '显示 {n} 条',
    all_kinds: '全部类型',
    all_districts: '全部区县',
    no_district: '(无区县)',
    no_alerts: '当前没有活动告警。',
    col_severity: '级别',
    col_sensor: '传感器',
    col_kind: '类型',
    col_district: '区县',
    col_metric: '指标',
    col_value: '读数',
    col_since: '开始时间',
    col_state: '确认',
    col_status: '状态',
    col_total: '总数',
    col_last_seen: '最近上报',
    col_latest: '最新读数',
    col_alerts: '告警',
    ack: '确认',
    acked_by: '已由 {by} 确认',
    ack_failed: '确认失败:{error}',
    ask_operator: '请输入确认人姓名(保存在本浏览器中)。',
    ask_comment: '备注(可选)',
    ask_token: '此网关需要访问令牌。',
    ok: '确定',
    cancel: '取消',
    prev: '‹ 上一页',
    next: '下一页 ›',
    page: '第 {page} / {pages} 页',
    range: '第 {from}–{to} 条,共 {total} 条',
    sev_info: '提示',
    sev_warning: '警告',
    sev_major: '严重',
    sev_critical: '紧急',
    st_ok: '正常',
    st_suspect: '可疑',
    st_offline: '离线',
    st_alerting: '告警中',
    sensors: '传感器',
    sensors_total: '共 {n} 个传感器',
    group_hint: '点击分组查看其中的传感器。',
    group_title: '{kind} · {district}',
    close: '关闭',
    chart: '近期读数',
    chart_hint: '在列表中选择一个传感器以查看读数。',
    chart_sensor: '传感器',
    chart_metric: '指标',
    chart_range: '时间范围',
    range_6h: '6 小时',
    range_24h: '24 小时',
    range_7d: '7 天',
    chart_empty: '此时间范围内没有读数。',
    chart_points: '{n} 条读数',
    threshold: '{severity} {direction} {value}',
    dir_above: '≥',
    dir_below: '≤',
    not_found: '网关中没有传感器 {id}。',
    load_failed: '加载失败:{error}',
    never: '从未',
  },
};

export const LANGS = ['en', 'zh'];
const STORAGE_KEY = 'citygate.lang';

let current = pickInitial();

function pickInitial() {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (LANGS.includes(saved)) return saved;
  return (navigator.language || '').toLowerCase().startsWith('zh') ? 'zh' : 'en';
}

export function lang() {
  return current;
}

export function setLang(l) {
  if (!LANGS.includes(l)) return;
  current = l;
  localStorage.setItem(STORAGE_KEY, l);
  applyStatic(document);
}

/** A label, with `{name}` placeholders filled from `vars`. */
export function t(key, vars = {}) {
  const text = DICT[current][key] ?? DICT.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
}

/** A catalog display name `{en, zh}` in the current language. */
export function pick(name, fallback) {
  if (!name) return fallback;
  return name[current] || name.en || fallback;
}

/** Fills every element marked `data-i18n` (text) or `data-i18n-placeholder`. */
export function applyStatic(root) {
  document.documentElement.lang = current === 'zh' ? 'zh-CN' : 'en';
  document.title = DICT[current].title;
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll('[data-lang]')) {
    el.setAttribute('aria-pressed', String(el.dataset.lang === current));
  }
}

// Exported for the dictionary completeness check in the browser test.
export function missingKeys() {
  return Object.keys(DICT.en).filter((k) => !(k in DICT.zh));
}
