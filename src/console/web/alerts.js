// alerts.js - alerts firing and resolved, each with its evidence and the
// actions taken (a retrain links to its job).
import { h, api, card, table, badge, fmtTime, ago, fail, link, errText, note } from './ui.js';

const enc = encodeURIComponent;
const sev = (a) => badge(a.severity, a.severity === 'critical' ? 'bad' : 'warn');

function actions(a) {
  return table([
    { key: 'type', label: 'Action' }, { key: 'status', label: 'Status' },
    { key: 'attempts', label: 'Attempts', num: true },
    { key: 'detail', label: 'Detail', get: (x) => JSON.stringify(x.detail || {}),
      render: (x) => x.detail && x.detail.job_id ? link(`#/jobs/${enc(x.detail.job_id)}`, `job ${x.detail.job_id.slice(0, 8)}`) : JSON.stringify(x.detail || {}) },
    { key: 'updated_at', label: 'Updated', render: (x) => fmtTime(x.updated_at) },
  ], a.actions || [], { empty: 'No action.' });
}

function evidence(a) {
  const e = a.evidence || {};
  const feats = e.features || [];
  return h('div', {},
    e.model ? h('p', {}, 'Model ', link(`#/monitoring/${enc(e.model)}`, e.model), e.version != null ? ` v${e.version}` : '',
      e.share_drifted != null ? ` · share drifted ${e.share_drifted} (threshold ${e.share_threshold})` : '') : '',
    feats.length ? table([{ key: 'column', label: 'Feature' }, { key: 'method', label: 'Method' },
      { key: 'statistic', label: 'Statistic', num: true }, { key: 'threshold', label: 'Threshold', num: true },
      { key: 'drifted', label: 'Drifted', get: (f) => (f.drifted ? 'yes' : 'no') }], feats)
      : h('pre', {}, JSON.stringify(e, null, 1)));
}

export async function render(main, { args }) {
  if (args.length) {
    const r = await api('alert', `/v1/alerts/${enc(args[0])}`);
    if (!r.ok) return main.replaceChildren(h('h1', {}, 'Alert'), fail(errText(r)));
    const a = r.data.alert || r.data;
    return main.replaceChildren(h('h1', {}, `Alert ${a.rule}`),
      h('p', {}, badge(a.state, a.state === 'firing' ? 'bad' : 'ok'), ' ', sev(a), ` ${a.summary} · fired ${fmtTime(a.fired_at)} (${ago(a.fired_at)})`,
        a.resolved_at ? ` · resolved ${fmtTime(a.resolved_at)} by ${a.resolved_by || '?'}` : '', ` · seen ${a.count} time${a.count === 1 ? "" : "s"}`),
      h('div', { class: 'grid' }, card('Evidence', h('div', { id: 'evidence' }, evidence(a))), card('Actions taken', h('div', { id: 'actions' }, actions(a)))));
  }
  const [firing, resolved] = await Promise.all([api('alert', '/v1/alerts?state=firing&limit=500'), api('alert', '/v1/alerts?state=resolved&limit=500')]);
  if (!firing.ok) return main.replaceChildren(h('h1', {}, 'Alerts'), fail(errText(firing)));
  const cols = (state) => [
    { key: 'severity', label: 'Severity', render: sev },
    { key: 'rule', label: 'Rule', render: (a) => link(`#/alerts/${enc(a.id)}`, a.rule) },
    { key: 'summary', label: 'Summary' },
    { key: 'fired_at', label: 'Fired', render: (a) => fmtTime(a.fired_at) },
    state === 'resolved' ? { key: 'resolved_at', label: 'Resolved', render: (a) => `${fmtTime(a.resolved_at)} (${a.resolved_by || ''})` } : { key: 'count', label: 'Count', num: true },
    { key: 'actions', label: 'Actions', get: (a) => (a.actions || []).map((x) => `${x.type}:${x.status}`).join(', ') },
  ];
  main.replaceChildren(h('h1', {}, 'Alerts'), h('div', { class: 'grid' },
    h('section', { class: 'card wide' }, h('h2', {}, 'Firing'), table(cols('firing'), firing.data.alerts || [], { id: 'alerts-firing', empty: 'No alert is firing.' })),
    h('section', { class: 'card wide' }, h('h2', {}, 'Resolved'), resolved.ok ? table(cols('resolved'), resolved.data.alerts || [], { id: 'alerts-resolved', empty: 'None resolved yet.' }) : note(errText(resolved)))));
}
