// Small charts on <canvas>, drawn by hand (no library: the CSP allows only our own files).
// A chart keeps its last data in data-* attributes (points, last, max, nonzero: the first
// series' values above 0), which tests read.

const COLORS = ['#2957d8', '#c62828', '#2e7d32', '#ef6c00', '#6a1b9a', '#00838f', '#5d4037', '#455a64'];

export function color(i) { return COLORS[i % COLORS.length]; }

// A chart card: title, legend, canvas. `draw(series, opts)` redraws it.
// series: [{ label, values: [number], color? }]; opts: { unit, min0, bars, labels }.
export function chart(id, title) {
  const canvas = document.createElement('canvas');
  canvas.id = id;
  canvas.className = 'chart';
  const legend = document.createElement('div');
  legend.className = 'legend';
  const heading = document.createElement('h3');
  heading.textContent = title;
  const node = document.createElement('div');
  node.className = 'card chart-card';
  node.append(heading, legend, canvas);
  return { node, canvas, draw: (series, opts = {}) => draw(canvas, legend, series, opts) };
}

function fmt(v, unit) {
  if (!isFinite(v)) return '–';
  let s;
  if (Math.abs(v) >= 1e9) s = (v / 1e9).toFixed(1) + 'G';
  else if (Math.abs(v) >= 1e6) s = (v / 1e6).toFixed(1) + 'M';
  else if (Math.abs(v) >= 1e4) s = (v / 1e3).toFixed(0) + 'k';
  else if (Math.abs(v) >= 100 || v === Math.round(v)) s = v.toFixed(0);
  else s = v.toFixed(Math.abs(v) >= 10 ? 1 : 2);
  return unit ? `${s} ${unit}` : s;
}

export { fmt as format };

function draw(canvas, legend, series, opts) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 400;
  const h = canvas.clientHeight || 160;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const points = Math.max(0, ...series.map(s => s.values.length));
  let max = Math.max(0, ...series.flatMap(s => s.values.filter(isFinite)));
  if (opts.max !== undefined) max = Math.max(max, opts.max);
  const top = max > 0 ? niceCeil(max) : 1;
  const left = 48, right = 8, up = 8, down = opts.labels ? 18 : 6;
  const pw = w - left - right, ph = h - up - down;
  // Grid and scale.
  g.strokeStyle = '#dde1ea';
  g.fillStyle = '#6b7385';
  g.font = '11px system-ui, sans-serif';
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = up + ph - (ph * i) / 4;
    g.beginPath(); g.moveTo(left, y + 0.5); g.lineTo(w - right, y + 0.5); g.stroke();
    g.fillText(fmt((top * i) / 4, ''), 4, y + 4);
  }
  const x = (i) => left + (points <= 1 ? pw : (pw * i) / (points - 1));
  const y = (v) => up + ph - (ph * Math.min(v, top)) / top;
  series.forEach((s, si) => {
    g.strokeStyle = g.fillStyle = s.color || color(si);
    if (opts.bars) {
      const bw = Math.max(1, pw / Math.max(points, 1) / series.length - 1);
      s.values.forEach((v, i) => {
        const bx = left + (pw * i) / Math.max(points, 1) + bw * si;
        g.fillRect(bx, y(v), bw, up + ph - y(v));
      });
    } else {
      g.lineWidth = 1.5;
      g.beginPath();
      s.values.forEach((v, i) => { if (i === 0) g.moveTo(x(i), y(v)); else g.lineTo(x(i), y(v)); });
      g.stroke();
    }
  });
  if (opts.labels && points > 0) {
    g.fillStyle = '#6b7385';
    const first = opts.labels[0] || '', last = opts.labels[opts.labels.length - 1] || '';
    g.fillText(first, left, h - 4);
    g.fillText(last, w - right - g.measureText(last).width, h - 4);
  }
  legend.textContent = '';
  series.forEach((s, si) => {
    const item = document.createElement('span');
    const swatch = document.createElement('i');
    swatch.className = 'swatch c' + (si % COLORS.length);
    const last = s.values.length ? s.values[s.values.length - 1] : NaN;
    item.append(swatch, `${s.label} ${fmt(last, opts.unit)}`);
    legend.append(item);
  });
  const last = series.length && series[0].values.length ? series[0].values[series[0].values.length - 1] : 0;
  canvas.dataset.points = String(points);
  canvas.dataset.last = String(last);
  canvas.dataset.max = String(max);
  canvas.dataset.nonzero = String(series.length ? series[0].values.filter(v => v > 0).length : 0);
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}
