// dataset.js - datasets: their versions and row counts, the cleaning report
// of a version step by step (rows dropped and why), and lineage: dataset
// version -> runs -> model versions -> aliases.
import { h, api, card, table, badge, fmt, fmtTime, note, fail, link, chart, errText } from './ui.js';
import { allVersions } from './model.js';

const enc = encodeURIComponent;

export async function render(main, { args }) {
  if (!args.length) {
    const res = await api('registry', '/v1/datasets');
    if (!res.ok) return main.replaceChildren(h('h1', {}, 'Datasets'), fail(errText(res)));
    return main.replaceChildren(h('h1', {}, 'Datasets'), card(null, table([
      { key: 'name', label: 'Dataset', render: (d) => link(`#/datasets/${enc(d.name)}`, d.name) },
      { key: 'latest_version', label: 'Latest version', num: true },
      { key: 'updated_at', label: 'Updated', render: (d) => fmtTime(d.updated_at) },
    ], res.data.datasets || [], { id: 'datasets', empty: 'No dataset yet.' })));
  }
  const [name, want] = args;
  const [vres, models] = await Promise.all([api('registry', `/v1/datasets/${enc(name)}/versions?limit=1000`), api('registry', '/v1/models?limit=1000')]);
  if (!vres.ok) return main.replaceChildren(h('h1', {}, name), fail(errText(vres)));
  const vs = vres.data.versions || [];
  const cur = vs.find((v) => String(v.version) === String(want)) || vs[0];
  const rep = (cur && cur.manifest && cur.manifest.report) || null;

  const versions = table([
    { key: 'version', label: 'Version', num: true, render: (v) => link(`#/datasets/${enc(name)}/${v.version}`, `v${v.version}`) },
    { key: 'rows', label: 'Rows', num: true, get: (v) => v.manifest && v.manifest.rows },
    { key: 'rows_in', label: 'Rows in', num: true, get: (v) => v.manifest && v.manifest.report && v.manifest.report.rows_in },
    { key: 'pipeline', label: 'Pipeline', get: (v) => v.manifest && v.manifest.pipeline },
    { key: 'created_at', label: 'Created', render: (v) => fmtTime(v.created_at) },
  ], vs, { id: 'dataset-versions', rowClass: (v) => v === cur ? 'current' : null });

  const steps = (rep && rep.steps) || [];
  const report = rep ? h('div', { id: 'cleaning' },
    h('p', {}, `v${cur.version}: ${fmt(rep.rows_in)} rows in, ${fmt(rep.rows_out)} out`,
      rep.read && rep.read.rows_bad ? `, ${fmt(rep.read.rows_bad)} unreadable` : ''),
    table([
      { key: 'i', label: '#', num: true, get: (s) => steps.indexOf(s) + 1 },
      { key: 'op', label: 'Step' },
      { key: 'rows_in', label: 'Rows in', num: true },
      { key: 'dropped', label: 'Dropped', num: true },
      { key: 'rows_out', label: 'Rows out', num: true },
      { key: 'reason', label: 'Why', render: (s) => h('span', { class: 'wrap' }, s.reason || '') },
    ], steps, { pageSize: 30, id: 'steps' }),
    chart([{ label: 'rows dropped', points: steps.map((s, i) => [i + 1, s.dropped || 0]) }], { title: 'Rows dropped per step', xlabel: 'step', bars: true, height: 180, intX: true }))
    : note('This version carries no cleaning report (it was not made by quern-prep).');

  // lineage: the model versions trained on a version of this dataset
  const lineage = [];
  for (const m of (models.ok && models.data.models) || []) {
    const mv = await allVersions(m.name, 2000);
    for (const v of mv || []) if (v.dataset && v.dataset.name === name)
      lineage.push({ dv: v.dataset.version, model: m.name, version: v.version, run: v.run_id || (v.tags || {})['quern.run_id'],
        job: (v.tags || {})['quern.job_id'], aliases: (v.aliases || []).join(', ') });
  }
  const lin = table([
    { key: 'dv', label: 'Dataset version', num: true, render: (r) => link(`#/datasets/${enc(name)}/${r.dv}`, `v${r.dv}`) },
    { key: 'run', label: 'Run', get: (r) => r.run || r.job, render: (r) => r.run ? link(`#/runs/${enc(r.run)}`, String(r.run).slice(0, 8))
      : r.job ? link(`#/jobs/${enc(r.job)}`, 'job ' + r.job.slice(0, 8)) : '–' },
    { key: 'version', label: 'Model version', get: (r) => `${r.model} v${r.version}`, render: (r) => link(`#/models/${enc(r.model)}`, `${r.model} v${r.version}`) },
    { key: 'aliases', label: 'Aliases', render: (r) => r.aliases ? r.aliases.split(', ').map((a) => [badge(a, a === 'production' ? 'ok' : 'none'), ' ']) : '–' },
  ], lineage, { id: 'lineage', empty: 'No model version was trained on this dataset yet.' });

  main.replaceChildren(h('h1', {}, `Dataset ${name}`),
    h('div', { class: 'grid' }, card('Versions', versions),
      card('Lineage: dataset → run → model version → aliases', lin),
      h('section', { class: 'card wide' }, h('h2', {}, `Cleaning report of v${cur ? cur.version : '?'}`), report)));
}
