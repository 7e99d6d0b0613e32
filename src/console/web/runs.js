// runs.js - tracking runs: a list with filter and sort, one run, and a
// comparison of two or more (params side by side, metric curves overlaid).
// It reads the registry's tracking API (POST or GET /v1/runs/search, /v1/runs/{id},
// /v1/runs/{id}/metrics/{key}); on a registry without it, quern-train's
// jobs stand in as runs (their params and final metrics, no curves).
import { h, api, card, table, badge, fmt, fmtTime, note, fail, link, chart, errText } from './ui.js';

const enc = encodeURIComponent;

// {key: value} from an object or from MLflow's [{key, value}] lists.
const kv = (x) => Array.isArray(x) ? Object.fromEntries(x.map((e) => [e.key, e.value])) : (x || {});

function normRun(r) {
  const info = r.info || r;
  const data = r.data || r;
  return {
    id: info.run_id || info.id, name: info.run_name || info.name || '', status: info.status || '',
    experiment: info.experiment_id ?? info.experiment ?? '', start: info.start_time, end: info.end_time,
    params: kv(data.params), metrics: kv(data.metrics), tags: kv(data.tags), source: 'runs',
  };
}

function jobAsRun(j) {
  const r = j.result || {};
  return { id: j.id, name: `${j.model} (${j.kind})`, status: j.state, experiment: j.model, start: j.started_at, end: j.finished_at,
    params: Object.fromEntries(Object.entries(((j.request || {}).spec || {}).params || r.params || {}).map(([k, v]) => [k, String(v)])),
    metrics: Object.fromEntries(Object.entries(r.metrics || {}).filter(([, v]) => typeof v === 'number')), tags: {}, source: 'jobs' };
}

// Every run we can see: {runs, source, note}.
async function loadRuns() {
  let res = await api('registry', '/v1/runs/search', { method: 'POST', body: { max_results: 1000 } });
  if (res.status === 404 || res.status === 405) res = await api('registry', '/v1/runs/search?max_results=1000');
  if (res.ok) {
    const list = res.data.runs || [];
    return { runs: list.map(normRun), source: 'runs' };
  }
  const jobs = await api('train', '/v1/jobs?limit=500');
  return { runs: ((jobs.ok && jobs.data.jobs) || []).map(jobAsRun), source: 'jobs',
    note: `The registry has no tracking API yet (${res.status}); quern-train's jobs are shown as runs.` };
}

async function loadRun(id) {
  const res = await api('registry', `/v1/runs/${enc(id)}`);
  if (res.ok) return normRun(res.data.run || res.data);
  const job = await api('train', `/v1/jobs/${enc(id)}`);
  return job.ok ? jobAsRun(job.data) : null;
}

// One metric's history as [[step, value]...], or null.
async function curve(run, key) {
  if (run.source !== 'runs') return null;
  const res = await api('registry', `/v1/runs/${enc(run.id)}/metrics/${enc(key)}`);
  if (!res.ok) return null;
  const list = res.data.metrics || res.data.history || res.data.points || [];
  return list.map((p, i) => [p.step ?? i, p.value]);
}

export async function render(main, { path, args }) {
  if (path.startsWith('runs/compare/')) return compare(main, args[0].split(',').filter(Boolean));
  if (args.length) return compare(main, [args[0]]);
  const { runs, note: why } = await loadRuns();
  const filter = h('input', { id: 'run-filter', type: 'search', placeholder: 'model, status, param…', 'aria-label': 'Filter runs' });
  const chosen = new Set();
  const go = h('button', { type: 'button', id: 'compare-btn', disabled: true,
    onclick: () => { location.hash = `#/runs/compare/${[...chosen].map(enc).join(',')}`; } }, 'Compare selected');
  const mkeys = [...new Set(runs.flatMap((r) => Object.keys(r.metrics)))].filter((k) => !k.startsWith('baseline.') && !k.startsWith('n_')).sort().slice(0, 4);
  const cols = [
    { key: 'sel', label: '', render: (r) => h('input', { type: 'checkbox', 'aria-label': `select run ${r.id}`, checked: chosen.has(r.id),
      onchange: (e) => { e.target.checked ? chosen.add(r.id) : chosen.delete(r.id); go.disabled = chosen.size < 2; } }) },
    { key: 'id', label: 'Run', render: (r) => link(`#/runs/${enc(r.id)}`, String(r.id).slice(0, 8)) },
    { key: 'name', label: 'Name' },
    { key: 'status', label: 'Status', render: (r) => badge(r.status, /FINISHED|succeeded/i.test(r.status) ? 'ok' : /FAIL|KILL|failed|cancel/i.test(r.status) ? 'bad' : 'warn') },
    { key: 'start', label: 'Started', render: (r) => fmtTime(typeof r.start === 'number' && r.start > 1e11 ? r.start / 1000 : r.start) },
    ...mkeys.map((k) => ({ key: 'm.' + k, label: k, num: true, get: (r) => r.metrics[k] })),
  ];
  const holder = h('div', {});
  const draw = () => {
    const q = filter.value.trim().toLowerCase();
    const shown = q ? runs.filter((r) => JSON.stringify(r).toLowerCase().includes(q)) : runs;
    holder.replaceChildren(table(cols, shown, { id: 'runs', empty: 'No run yet.' }));
  };
  filter.addEventListener('input', draw);
  draw();
  main.replaceChildren(h('h1', {}, 'Runs'), why ? note(why) : '', card(null, h('div', { class: 'row' }, h('label', { for: 'run-filter' }, 'Filter'), filter, go), holder));
}

async function compare(main, ids) {
  const runs = (await Promise.all(ids.map(loadRun))).filter(Boolean);
  const title = runs.length === 1 ? `Run ${String(runs[0].id).slice(0, 8)}` : `Compare ${runs.length} runs`;
  if (!runs.length) return main.replaceChildren(h('h1', {}, title), fail('No such run.'));
  const side = (obj) => {
    const keys = [...new Set(runs.flatMap((r) => Object.keys(obj(r))))].sort();
    return table([{ key: 'k', label: 'Name' }, ...runs.map((r, i) => ({ key: 'r' + i, label: String(r.id).slice(0, 8),
      num: true, get: (row) => obj(r)[row.k] }))], keys.map((k) => ({ k })), { pageSize: 25 });
  };
  const mkeys = [...new Set(runs.flatMap((r) => Object.keys(r.metrics)))].sort();
  const curves = [];
  for (const k of mkeys.slice(0, 6)) {
    const series = [];
    for (const r of runs) {
      const pts = await curve(r, k);
      if (pts && pts.length) series.push({ label: String(r.id).slice(0, 8), points: pts });
    }
    if (series.length) curves.push(card(k, chart(series, { title: k, xlabel: 'step' })));
  }
  main.replaceChildren(h('h1', {}, title),
    h('p', {}, runs.map((r) => h('span', {}, link(r.source === 'jobs' ? `#/jobs/${enc(r.id)}` : `#/runs/${enc(r.id)}`, String(r.id).slice(0, 8)), ` ${r.name} `, badge(r.status), ' '))),
    h('div', { class: 'grid' }, card('Params', h('div', { id: 'params' }, side((r) => r.params))), card('Metrics', h('div', { id: 'metrics' }, side((r) => r.metrics))),
      ...(curves.length ? curves : [card('Metric curves', note(runs[0].source === 'jobs' ? 'Jobs keep final metrics only; curves come with the tracking API.' : 'No metric history logged.'))])));
}
