// runs.js - tracking runs: a list with filter and sort, one run, and a
// comparison of two or more (params side by side, metric curves overlaid).
// It reads the registry's tracking API (docs/registry.md, Tracking): POST
// /v1/runs/search (filter, order_by, page_token; the console lets this POST
// through as a read), GET /v1/runs/{id}, /v1/runs/{id}/metrics/{key} and
// /v1/runs/{id}/versions. When the search does not answer at all, quern-train's
// jobs stand in as runs (their params and final metrics, no curves).
import { h, api, card, table, badge, fmt, fmtTime, note, fail, link, chart, errText } from './ui.js';

const enc = encodeURIComponent;

// {key: value} from an object or from MLflow's [{key, value}] lists.
const kv = (x) => Array.isArray(x) ? Object.fromEntries(x.map((e) => [e.key, e.value])) : (x || {});
// The registry's metrics are {key: {value, step, timestamp}} (the latest of
// each key); MLflow's are [{key, value, step, timestamp}].
const latest = (x) => Object.fromEntries(Object.entries(kv(x)).map(([k, v]) => [k, v && typeof v === 'object' ? v.value : v]));

// A dataset input {name, digest, source_type, source}: a Quern dataset's source
// is "quern:datasets/<name>/versions/<n>".
function input(d) {
  const m = /^quern:datasets\/(.+)\/versions\/(\d+)$/.exec(d.source || '');
  return { dataset: m ? m[1] : d.name, version: m ? Number(m[2]) : null };
}

// A run as GET /v1/runs/{id} and POST /v1/runs/search give it (docs/registry.md,
// Tracking): run_id, experiment_id, name, status, start_time/end_time in ms.
function normRun(r) {
  return {
    id: r.run_id, name: r.name || '', status: r.status || '', experiment: r.experiment_id ?? '',
    start: r.start_time != null ? r.start_time / 1000 : null, end: r.end_time != null ? r.end_time / 1000 : null,
    params: kv(r.params), metrics: latest(r.metrics), tags: kv(r.tags), inputs: (r.inputs || []).map(input), source: 'runs',
  };
}

function jobAsRun(j) {
  const r = j.result || {};
  return { id: j.id, name: `${j.model} (${j.kind})`, status: j.state, experiment: j.model, start: j.started_at, end: j.finished_at,
    params: Object.fromEntries(Object.entries(((j.request || {}).spec || {}).params || r.params || {}).map(([k, v]) => [k, String(v)])),
    metrics: Object.fromEntries(Object.entries(r.metrics || {}).filter(([, v]) => typeof v === 'number')), tags: {}, source: 'jobs' };
}

// Every run, newest first, following the search's pages: {runs, source, note}.
async function loadRuns(search = {}, max = 5000) {
  let runs = [], token = '', res;
  while (runs.length < max) {
    res = await api('registry', '/v1/runs/search', { method: 'POST',
      body: { max_results: 1000, order_by: [search.order || 'attributes.start_time DESC'], ...(search.filter ? { filter: search.filter } : {}),
        ...(token ? { page_token: token } : {}) } });
    if (!res.ok) break;
    runs = runs.concat((res.data.runs || []).map(normRun));
    token = res.data.next_page_token;
    if (!token) return { runs, source: 'runs' };
  }
  if (res.ok || runs.length) return { runs, source: 'runs' };
  if (search.filter) return { runs: [], source: 'runs', error: errText(res) }; // a filter the registry refused (400 naming the token)
  const jobs = await api('train', '/v1/jobs?limit=500');
  return { runs: ((jobs.ok && jobs.data.jobs) || []).map(jobAsRun), source: 'jobs',
    note: `The registry's run search did not answer (${errText(res)}); quern-train's jobs are shown as runs.` };
}

async function loadRun(id) {
  const res = await api('registry', `/v1/runs/${enc(id)}`);
  if (res.ok) return normRun(res.data);
  const job = await api('train', `/v1/jobs/${enc(id)}`);
  return job.ok ? jobAsRun(job.data) : null;
}

// One metric's history as [[step, value]...] by step, following its pages, or null.
async function curve(run, key) {
  if (run.source !== 'runs') return null;
  let out = [], token = '';
  for (let i = 0; i < 20; i++) {
    const res = await api('registry', `/v1/runs/${enc(run.id)}/metrics/${enc(key)}?limit=10000${token ? '&page_token=' + enc(token) : ''}`);
    if (!res.ok) return out.length ? out : null;
    out = out.concat((res.data.history || []).filter((p) => typeof p.value === 'number').map((p) => [p.step, p.value]));
    token = res.data.next_page_token;
    if (!token) break;
  }
  return out;
}

export async function render(main, { path, args }) {
  if (path.startsWith('runs/compare/')) return compare(main, args[0].split(',').filter(Boolean));
  if (args.length) return compare(main, [args[0]]);
  // The search (MLflow's filter grammar and order_by) runs in the registry and
  // lives in the URL: #/runs?filter=...&order=...
  const q = new URLSearchParams(location.hash.split('?')[1] || '');
  const search = { filter: q.get('filter') || '', order: q.get('order') || '' };
  const { runs, note: why, error } = await loadRuns(search);
  const fin = h('input', { id: 'run-search', type: 'search', size: 36, value: search.filter, placeholder: "metrics.loss < 1 and params.kind = 'train'",
    'aria-label': 'Search filter (MLflow grammar)' });
  const orders = ['attributes.start_time DESC', 'attributes.start_time ASC', 'attributes.run_name ASC',
    ...[...new Set(runs.flatMap((r) => Object.keys(r.metrics)))].sort().flatMap((k) => [`metrics.\`${k}\` DESC`, `metrics.\`${k}\` ASC`])];
  if (search.order && !orders.includes(search.order)) orders.unshift(search.order);
  const osel = h('select', { id: 'run-order', 'aria-label': 'Order by' }, orders.map((o) => h('option', { value: o, selected: o === (search.order || orders[0]) }, o)));
  const submit = () => {
    const p = new URLSearchParams();
    if (fin.value.trim()) p.set('filter', fin.value.trim());
    if (osel.value !== orders[0]) p.set('order', osel.value);
    location.hash = `#/runs${p.toString() ? '?' + p.toString() : ''}`;
  };
  const form = h('form', { class: 'row', id: 'run-search-form', onsubmit: (e) => { e.preventDefault(); submit(); } },
    h('label', { for: 'run-search' }, 'Search'), fin, h('label', { for: 'run-order' }, 'Order'), osel, h('button', { type: 'submit' }, 'Search'));
  osel.addEventListener('change', submit);
  const filter = h('input', { id: 'run-filter', type: 'search', placeholder: 'within these: name, status, param…', 'aria-label': 'Filter the runs shown' });
  const chosen = new Set();
  const go = h('button', { type: 'button', id: 'compare-btn', disabled: true,
    onclick: () => { location.hash = `#/runs/compare/${[...chosen].map(enc).join(',')}`; } }, 'Compare selected');
  const mkeys = [...new Set(runs.flatMap((r) => Object.keys(r.metrics)))].filter((k) => !k.startsWith('baseline.') && !k.startsWith('n_') && !k.startsWith('calibration.')).sort().slice(0, 5);
  const cols = [
    { key: 'sel', label: '', render: (r) => h('input', { type: 'checkbox', 'aria-label': `select run ${r.id}`, checked: chosen.has(r.id),
      onchange: (e) => { e.target.checked ? chosen.add(r.id) : chosen.delete(r.id); go.disabled = chosen.size < 2; } }) },
    { key: 'id', label: 'Run', render: (r) => link(`#/runs/${enc(r.id)}`, String(r.id).slice(0, 8)) },
    { key: 'name', label: 'Name' },
    { key: 'model', label: 'Model', get: (r) => r.tags['quern.model'] || r.experiment },
    { key: 'status', label: 'Status', render: (r) => badge(r.status, /FINISHED|succeeded/i.test(r.status) ? 'ok' : /FAIL|KILL|failed|cancel/i.test(r.status) ? 'bad' : 'warn') },
    { key: 'start', label: 'Started', render: (r) => fmtTime(r.start) },
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
  main.replaceChildren(h('h1', {}, 'Runs'), why ? note(why) : '', error ? fail(`Search refused: ${error}`) : '',
    card(null, form, h('div', { class: 'row' }, h('label', { for: 'run-filter' }, 'Filter'), filter, go), holder));
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
  // curves: every series some run logged at more than one step (loss per
  // iteration first); the final metrics (one point each) stay in the table
  const mkeys = [...new Set(runs.flatMap((r) => Object.keys(r.metrics)))]
    .filter((k) => !k.startsWith('baseline.') && !k.startsWith('calibration.') && !k.startsWith('n_'))
    .sort((a, b) => (b === 'loss') - (a === 'loss') || (a < b ? -1 : 1));
  const hists = await Promise.all(mkeys.map((k) => Promise.all(runs.map((r) => curve(r, k)))));
  const curves = [];
  mkeys.forEach((k, i) => {
    if (!hists[i].some((pts) => pts && pts.length > 1)) return;
    const series = runs.map((r, j) => ({ label: String(r.id).slice(0, 8), points: hists[i][j] || [] })).filter((s) => s.points.length);
    const c = chart(series, { title: `${k} by step`, xlabel: 'step' });
    c.dataset.metric = k;
    curves.push(h('section', { class: 'card wide' }, h('h2', {}, k), c));
  });
  // what each run read and what it made
  const made = await Promise.all(runs.map((r) => r.source === 'runs' ? api('registry', `/v1/runs/${enc(r.id)}/versions`) : null));
  const about = table([{ key: 'k', label: '' }, ...runs.map((r, i) => ({ key: 'r' + i, label: String(r.id).slice(0, 8), get: (row) => row.v[i], render: (row) => row.v[i] }))], [
    { k: 'Name', v: runs.map((r) => r.name) },
    { k: 'Status', v: runs.map((r) => badge(r.status, /FINISHED|succeeded/i.test(r.status) ? 'ok' : /FAIL|KILL|failed/i.test(r.status) ? 'bad' : 'warn')) },
    { k: 'Started', v: runs.map((r) => fmtTime(r.start)) },
    { k: 'Ended', v: runs.map((r) => fmtTime(r.end)) },
    { k: 'Dataset', v: runs.map((r) => (r.inputs || []).length ? h('span', {}, r.inputs.map((d) => d.version != null ? link(`#/datasets/${enc(d.dataset)}/${d.version}`, `${d.dataset} v${d.version}`) : d.dataset)) : '–') },
    { k: 'Job', v: runs.map((r) => r.tags['quern.job_id'] ? link(`#/jobs/${enc(r.tags['quern.job_id'])}`, r.tags['quern.job_id'].slice(0, 8)) : '–') },
    { k: 'Model versions', v: made.map((m) => m && m.ok && (m.data.versions || []).length
      ? h('span', {}, m.data.versions.map((v) => [link(`#/models/${enc(v.model)}`, `${v.model} v${v.version}`), ' '])) : '–') },
  ], { id: 'run-about', pageSize: 10 });
  main.replaceChildren(h('h1', {}, title),
    h('p', {}, runs.map((r) => h('span', {}, link(r.source === 'jobs' ? `#/jobs/${enc(r.id)}` : `#/runs/${enc(r.id)}`, String(r.id).slice(0, 8)), ` ${r.name} `, badge(r.status), ' '))),
    h('div', { class: 'grid' }, h('section', { class: 'card wide' }, h('h2', {}, 'Runs'), about), card('Params', h('div', { id: 'params' }, side((r) => r.params))), card('Metrics', h('div', { id: 'metrics' }, side((r) => r.metrics))),
      ...(curves.length ? curves : [card('Metric curves', note(runs[0].source === 'jobs' ? 'Jobs keep final metrics only; curves come with the tracking API.' : 'No metric was logged at more than one step.'))])));
}
