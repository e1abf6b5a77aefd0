// A small hand-drawn SVG line chart: readings over time and the thresholds as horizontal
// lines in their severity's colour. No library, so the console works offline.

const NS = 'http://www.w3.org/2000/svg';
const W = 640;
const H = 260;
const PAD = { left: 56, right: 110, top: 12, bottom: 28 };

function el(name, attrs = {}, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** Round tick values that cover [lo, hi] with about `n` steps. */
function ticks(lo, hi, n) {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toFixed(10)));
  }
  return out;
}

/**
 * Draws into `svg`. `opts`: readings [{ts, value, quality}] (any order), thresholds
 * [{severity, direction, value}], from/to (ms), fmtTime(ms), fmtValue(v), label(threshold).
 */
export function drawChart(svg, opts) {
  const { readings, thresholds, from, to, fmtTime, fmtValue, label } = opts;
  svg.replaceChildren();
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const pts = [...readings].sort((a, b) => a.ts - b.ts);
  const values = pts.map((p) => p.value).concat(thresholds.map((t) => t.value));
  if (values.length === 0) return;
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  const margin = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 1;
  lo -= margin;
  hi += margin;
  const x0 = from ?? (pts.length ? pts[0].ts : 0);
  const x1 = Math.max(to ?? (pts.length ? pts[pts.length - 1].ts : 1), x0 + 1);
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const sx = (ts) => PAD.left + ((ts - x0) / (x1 - x0)) * plotW;
  const sy = (v) => PAD.top + (1 - (v - lo) / (hi - lo)) * plotH;

  const grid = el('g', { class: 'grid' });
  for (const v of ticks(lo, hi, 5)) {
    const y = sy(v);
    grid.append(el('line', { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y }));
    grid.append(el('text', { x: PAD.left - 6, y: y + 4, 'text-anchor': 'end' }, fmtValue(v)));
  }
  for (let i = 0; i <= 4; i++) {
    const ts = x0 + ((x1 - x0) * i) / 4;
    const anchor = i === 0 ? 'start' : i === 4 ? 'end' : 'middle';
    grid.append(el('text', { x: sx(ts), y: H - 8, 'text-anchor': anchor }, fmtTime(ts)));
  }
  svg.append(grid);

  for (const th of thresholds) {
    const y = sy(th.value);
    const g = el('g', {
      class: `threshold sev-${th.severity}`,
      'data-testid': 'chart-threshold',
      'data-severity': th.severity,
      'data-value': th.value,
    });
    g.append(el('line', { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y }));
    g.append(el('text', { x: W - PAD.right + 4, y: y + 4 }, label(th)));
    svg.append(g);
  }

  if (pts.length > 0) {
    const d = pts
      .map((p, i) => `${i ? 'L' : 'M'}${sx(p.ts).toFixed(1)},${sy(p.value).toFixed(1)}`)
      .join('');
    svg.append(el('path', { class: 'series', d, 'data-testid': 'chart-series' }));
    for (const p of pts.filter((p) => p.quality === 'suspect')) {
      svg.append(el('circle', { class: 'suspect', cx: sx(p.ts), cy: sy(p.value), r: 3 }));
    }
    if (pts.length <= 60) {
      for (const p of pts.filter((p) => p.quality !== 'suspect')) {
        svg.append(el('circle', { class: 'point', cx: sx(p.ts), cy: sy(p.value), r: 2 }));
      }
    }
  }
}
