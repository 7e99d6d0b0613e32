// overview.js - every service's state, version and uptime; the models in
// production with version, since when, last drift verdict and live
// hit-rate; firing alerts; the registry's recent events.
import { h, api, card, table, badge, fmt, fmtTime, ago, dur, note, link } from './ui.js';

export const SERVICES = ['registry', 'ingest', 'prep', 'train', 'serve', 'monitor', 'alert'];

// The one sample of a metric family in Prometheus text (first match).
function metric(text, name, label) {
  if (typeof text !== 'string') return null;
  const re = new RegExp(`^${name}\\{([^}]*)\\}\\s+(\\S+)`, 'm');
  const m = text.match(re);
  if (!m) return null;
  if (!label) return Number(m[2]);
  const l = m[1].match(new RegExp(`${label}="([^"]*)"`));
  return l ? l[1] : null;
}

async function service(name) {
  const [ready, metrics] = await Promise.all([api(name, '/readyz'), api(name, '/metrics')]);
  const start = metric(metrics.data, 'process_start_time_seconds');
  return {
    name, status: ready.status,
    state: ready.status === 200 ? 'ready' : ready.status === 503 ? `not ready: ${ready.data?.reason || ready.data?.error?.message || ''}` : 'down',
    version: metric(metrics.data, 'quern_build_info', 'version'),
    uptime: start ? Date.now() / 1000 - start : null,
  };
}

export async function render(main) {
  const [svcs, models, monitors, firing, events] = await Promise.all([
    Promise.all(SERVICES.map(service)),
    api('registry', '/v1/models?limit=1000'),
    api('monitor', '/v1/monitors'),
    api('alert', '/v1/alerts?state=firing&limit=100'),
    api('registry', '/v1/events?limit=1000'),
  ]);
  const tiles = h('div', { class: 'tiles', id: 'services' }, svcs.map((s) => h('div', { class: 'tile', 'data-service': s.name },
    h('b', {}, s.name), badge(s.status === 200 ? 'ready' : s.status === 503 ? 'not ready' : 'down',
      s.status === 200 ? 'ok' : s.status === 503 ? 'warn' : 'bad'),
    h('div', { class: 'muted' }, `v${s.version || '?'} · up ${dur(s.uptime)}`),
    s.status !== 200 ? h('div', { class: 'muted' }, s.state) : null)));

  const mons = new Map(((monitors.data && monitors.data.monitors) || []).map((m) => [m.model, m]));
  const prod = ((models.data && models.data.models) || []).filter((m) => m.aliases && m.aliases.production != null);
  const since = await Promise.all(prod.map((m) => api('registry', `/v1/models/${encodeURIComponent(m.name)}/aliases/production`)));
  const rows = prod.map((m, i) => {
    const mon = mons.get(m.name);
    const rep = mon && mon.latest_report;
    return { model: m.name, version: m.aliases.production, since: since[i].ok ? since[i].data.updated_at : null,
      drift: rep ? (rep.dataset_drift ? 'drift' : 'no drift') : null, drift_at: rep && rep.created_at,
      hit: mon && mon.hit_rate ? mon.hit_rate.rate : null, k: mon && mon.hit_rate ? mon.hit_rate.k : null };
  });
  const prodTable = table([
    { key: 'model', label: 'Model', render: (r) => link(`#/models/${encodeURIComponent(r.model)}`, r.model) },
    { key: 'version', label: 'Version', num: true },
    { key: 'since', label: 'In production since', render: (r) => r.since ? `${fmtTime(r.since)} (${ago(r.since)})` : '–' },
    { key: 'drift', label: 'Last drift verdict', render: (r) => r.drift ? h('span', {}, badge(r.drift, r.drift === 'drift' ? 'bad' : 'ok'), ' ',
      link(`#/monitoring/${encodeURIComponent(r.model)}`, ago(r.drift_at))) : badge('no report yet') },
    { key: 'hit', label: 'Live hit-rate', num: true, render: (r) => r.hit == null ? '–' : `${fmt(r.hit)} @${r.k}` },
  ], rows, { id: 'production', empty: 'No model is in production yet.' });

  const alerts = (firing.data && firing.data.alerts) || [];
  const alertTable = table([
    { key: 'severity', label: 'Severity', render: (a) => badge(a.severity, a.severity === 'critical' ? 'bad' : 'warn') },
    { key: 'rule', label: 'Rule', render: (a) => link(`#/alerts/${encodeURIComponent(a.id)}`, a.rule) },
    { key: 'summary', label: 'Summary' },
    { key: 'fired_at', label: 'Fired', render: (a) => `${fmtTime(a.fired_at)} (${ago(a.fired_at)})` },
  ], alerts, { id: 'firing', empty: 'No alert is firing.' });

  const evs = ((events.data && events.data.events) || []).slice(-10).reverse();
  const evList = h('ul', { class: 'timeline', id: 'events' }, evs.length ? evs.map((e) => {
    const d = e.event.data || {};
    const what = e.event.type === 'quern.model.promoted'
      ? h('span', {}, link(`#/models/${encodeURIComponent(d.model)}`, d.model), ` ${d.alias} → v${d.version}`, d.previous_version != null ? ` (was v${d.previous_version})` : '')
      : JSON.stringify(d).slice(0, 120);
    return h('li', {}, h('div', { class: 'muted' }, `${fmtTime(e.event.time)} · ${e.event.type}`), what);
  }) : h('li', { class: 'muted' }, 'No events yet.'));

  main.replaceChildren(
    h('h1', {}, 'Overview'),
    h('div', { class: 'grid' },
      h('section', { class: 'card wide' }, h('h2', {}, 'Services'), tiles),
      h('section', { class: 'card wide' }, h('h2', {}, 'Models in production'), models.ok ? prodTable : note('The registry did not answer.')),
      card('Firing alerts', firing.ok ? alertTable : note('quern-alert did not answer.')),
      card('Recent events', events.ok ? evList : note('The registry did not answer.'))));
}
