// ui.js - the console's small toolkit: DOM building, the API client (same
// origin, /api/<service>/...), number and time formats, paged sortable
// tables, uPlot charts and the token prompt. No framework.

export function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat(Infinity)) {
    if (k == null || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return el;
}

// One call through the console's proxy. Never throws for an HTTP answer:
// {ok, status, data}; data is parsed JSON (or text), null when empty.
export async function api(svc, path, opts = {}) {
  const headers = {};
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  if (opts.token) headers.Authorization = 'Bearer ' + opts.token;
  const method = opts.method || 'GET';
  let r;
  for (let attempt = 0; ; attempt++) {
    try {
      r = await fetch(`/api/${svc}${path}`, {
        method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      });
      break;
    } catch (e) {
      // a read that never got an answer (the network changed under it) is
      // safe to ask again once
      if (attempt === 0 && (method === 'GET' || method === 'HEAD')) continue;
      return { ok: false, status: 0, data: { error: { message: `the console did not answer (${e.message})` } } };
    }
  }
  const text = await r.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  return { ok: r.ok, status: r.status, data };
}

export function errText(res) {
  const e = res && res.data && res.data.error;
  return (e && (e.message || e)) || `HTTP ${res ? res.status : '?'}`;
}

// Numbers as the pages show them (tests/browser repeats this rule):
// integers whole with thousands separators, others to 4 decimals, tiny ones
// in exponent form.
export function fmt(v) {
  if (v == null || v === '') return '–';
  if (typeof v !== 'number') return String(v);
  if (Number.isInteger(v)) return v.toLocaleString('en-US');
  if (v !== 0 && Math.abs(v) < 0.001) return v.toExponential(2);
  return String(Number(v.toFixed(4)));
}

// "2026-12-02 02:41:20" (UTC) from an RFC 3339 string or Unix seconds.
export function fmtTime(t) {
  if (t == null || t === '') return '–';
  const d = typeof t === 'number' ? new Date(t * 1000) : new Date(t);
  if (isNaN(d)) return String(t);
  return d.toISOString().replace('T', ' ').slice(0, 19);
}

export function ago(t) {
  const d = typeof t === 'number' ? t * 1000 : Date.parse(t);
  if (!d) return '';
  let s = Math.max(0, Math.round((Date.now() - d) / 1000));
  if (s < 90) return `${s}s ago`;
  if ((s = Math.round(s / 60)) < 90) return `${s}m ago`;
  if ((s = Math.round(s / 60)) < 48) return `${s}h ago`;
  return `${Math.round(s / 24)}d ago`;
}

export function dur(sec) {
  if (sec == null) return '–';
  sec = Math.round(sec);
  const d = Math.floor(sec / 86400), hh = Math.floor(sec / 3600) % 24, m = Math.floor(sec / 60) % 60;
  return d ? `${d}d ${hh}h` : hh ? `${hh}h ${m}m` : m ? `${m}m ${sec % 60}s` : `${sec}s`;
}

export function badge(text, kind) {
  return h('span', { class: `badge b-${kind || 'none'}` }, text);
}

export function card(title, ...kids) {
  return h('section', { class: 'card' }, title ? h('h2', {}, title) : null, ...kids);
}

export const note = (t) => h('p', { class: 'note' }, t);
export const fail = (t) => h('p', { class: 'err', role: 'alert' }, t);

// A table that pages and sorts. cols: [{key, label, num, get(row), render(row)}]
// (get gives the sort value and the data-v attribute, render the cell).
export function table(cols, rows, { pageSize = 15, id, empty = 'Nothing yet.', rowClass } = {}) {
  const wrap = h('div', { class: 'tablewrap', id });
  let page = 0, sortKey = null, dir = 1;
  const val = (c, r) => (c.get ? c.get(r) : r[c.key]);
  function draw() {
    let list = rows.slice();
    if (sortKey) {
      const c = cols.find((x) => x.key === sortKey);
      list.sort((a, b) => {
        const x = val(c, a), y = val(c, b);
        return (x == null) - (y == null) || (x < y ? -dir : x > y ? dir : 0);
      });
    }
    const pages = Math.max(1, Math.ceil(list.length / pageSize));
    page = Math.min(page, pages - 1);
    const shown = list.slice(page * pageSize, (page + 1) * pageSize);
    const head = h('tr', {}, cols.map((c) => h('th', {
      scope: 'col', class: c.num ? 'num' : null,
      'aria-sort': sortKey === c.key ? (dir > 0 ? 'ascending' : 'descending') : null,
    }, h('button', { type: 'button', onclick: () => { dir = sortKey === c.key ? -dir : 1; sortKey = c.key; draw(); } },
      c.label, sortKey === c.key ? (dir > 0 ? ' ▲' : ' ▼') : ''))));
    const body = shown.map((r) => h('tr', { class: rowClass ? rowClass(r) : null }, cols.map((c) => {
      const v = val(c, r);
      const out = c.render ? c.render(r) : c.num ? fmt(v) : (v == null ? '–' : String(v));
      return h('td', { class: c.num ? 'num' : null, 'data-k': c.key,
        'data-v': typeof v === 'number' || typeof v === 'string' ? String(v) : null }, out);
    })));
    const t = h('table', {}, h('thead', {}, head), h('tbody', {}, body.length ? body :
      h('tr', {}, h('td', { colspan: cols.length, class: 'muted' }, empty))));
    const pager = pages > 1 ? h('div', { class: 'pager' },
      h('button', { type: 'button', class: 'ghost', disabled: page === 0, onclick: () => { page--; draw(); } }, '‹ Prev'),
      h('span', { class: 'muted', 'aria-live': 'polite' }, `Page ${page + 1} of ${pages} (${list.length} rows)`),
      h('button', { type: 'button', class: 'ghost', disabled: page >= pages - 1, onclick: () => { page++; draw(); } }, 'Next ›')) : null;
    wrap.replaceChildren(t, pager || '');
  }
  draw();
  return wrap;
}

const PALETTE = ['#1f4e79', '#c0392b', '#1e8449', '#8e44ad', '#b9770e', '#117a8b', '#5d6d7e'];

// A uPlot chart. series: [{label, points: [[x, y], ...], color?, dash?}], x shared after
// alignment (missing points are gaps). opts: {title, time, threshold, ylabel,
// height, bars}. The element keeps data-series (how many were drawn).
export function chart(series, opts = {}) {
  const el = h('div', { class: 'chart', role: 'img', 'aria-label': opts.title || 'chart' });
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const idx = new Map(xs.map((x, i) => [x, i]));
  const data = [xs];
  const sers = [{}];
  series.forEach((s, i) => {
    const ys = new Array(xs.length).fill(null);
    for (const [x, y] of s.points) ys[idx.get(x)] = y;
    data.push(ys);
    const color = s.color || PALETTE[i % PALETTE.length];
    sers.push({ label: s.label, stroke: color, width: 2, dash: s.dash,
      fill: opts.bars ? color + '55' : undefined,
      paths: opts.bars && window.uPlot ? uPlot.paths.bars({ size: [0.7, 40] }) : undefined,
      points: { show: xs.length < 60 }, spanGaps: true });
  });
  if (opts.threshold != null) {
    data.push(xs.map(() => opts.threshold));
    sers.push({ label: opts.thresholdLabel || 'threshold', stroke: '#a4161a', dash: [6, 4], width: 1.5, points: { show: false } });
  }
  el.dataset.series = String(series.length);
  if (!window.uPlot || !xs.length) {
    el.append(h('p', { class: 'muted' }, xs.length ? 'Charts are unavailable.' : 'No points yet.'));
    return el;
  }
  requestAnimationFrame(() => {
    const width = Math.max(260, el.clientWidth || 600);
    el.__uplot = new uPlot({
      title: opts.title, width, height: opts.height || 220,
      scales: { x: { time: !!opts.time, range: opts.intX && xs.length ? [xs[0] - 0.5, xs[xs.length - 1] + 0.5] : undefined } },
      axes: [{ label: opts.xlabel, incrs: opts.intX ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] : undefined },
        { label: opts.ylabel, size: 60 }],
      series: sers,
      legend: { live: false },
    }, data, el);
    el.dataset.drawn = String(series.length);
  });
  return el;
}

// The token for actions: kept for the tab's life (sessionStorage), asked
// for in a dialog when missing. Resolves to the token or null (cancelled).
export function getToken() {
  return sessionStorage.getItem('quern-token') || '';
}
export function askToken() {
  const dlg = document.getElementById('token-dlg');
  const input = document.getElementById('token-in');
  input.value = getToken();
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => {
      if (dlg.returnValue === 'ok' && input.value) {
        sessionStorage.setItem('quern-token', input.value);
        document.dispatchEvent(new Event('quern-token'));
        resolve(input.value);
      } else resolve(null);
    }, { once: true });
    dlg.showModal();
    input.focus();
  });
}

// Runs a mutating call with the token, asking for it first when missing
// and again once when the console refuses it (401).
export async function act(svc, path, method, body) {
  let token = getToken() || await askToken();
  if (!token) return null;
  let res = await api(svc, path, { method, body, token });
  if (res.status === 401) {
    token = await askToken();
    if (!token) return res;
    res = await api(svc, path, { method, body, token });
  }
  return res;
}

export function link(href, text) {
  return h('a', { href }, text);
}
