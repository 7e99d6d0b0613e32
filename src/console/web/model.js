// model.js - the model list, and one model: its versions with their
// metrics side by side (and the baseline's), the run and dataset behind
// each, each alias's history as a timeline, promote and roll back.
import { h, api, act, card, table, badge, fmt, fmtTime, ago, note, fail, link, chart, errText } from './ui.js';

const enc = encodeURIComponent;

export async function render(main, { args }) {
  if (!args.length) return list(main);
  return one(main, args[0]);
}

async function list(main) {
  const res = await api('registry', '/v1/models?limit=1000');
  if (!res.ok) return main.replaceChildren(h('h1', {}, 'Models'), fail(errText(res)));
  const rows = res.data.models || [];
  main.replaceChildren(h('h1', {}, 'Models'), card(null, table([
    { key: 'name', label: 'Model', render: (m) => link(`#/models/${enc(m.name)}`, m.name) },
    { key: 'latest_version', label: 'Latest version', num: true },
    { key: 'production', label: 'Production', num: true, get: (m) => m.aliases && m.aliases.production },
    { key: 'aliases', label: 'Aliases', get: (m) => Object.entries(m.aliases || {}).map(([a, v]) => `${a}=v${v}`).join(', ') },
    { key: 'updated_at', label: 'Updated', render: (m) => fmtTime(m.updated_at) },
  ], rows, { id: 'models', empty: 'No model is registered yet.' })));
}

// Every version, newest first, following the registry's pages.
export async function allVersions(name, max = 5000) {
  let out = [], token = '';
  while (out.length < max) {
    const r = await api('registry', `/v1/models/${enc(name)}/versions?limit=1000${token ? '&page_token=' + enc(token) : ''}`);
    if (!r.ok) return out.length ? out : null;
    out = out.concat(r.data.versions || []);
    token = r.data.next_page_token;
    if (!token) break;
  }
  return out;
}

// The moves of an alias, oldest first, from GET .../aliases/{alias}/history
// ({history:[{id, at, from_version, to_version, reason, who}]}, newest first,
// paged); null when the registry does not answer it.
async function history(name, alias, max = 1000) {
  let list = [], token = '';
  while (list.length < max) {
    const r = await api('registry', `/v1/models/${enc(name)}/aliases/${enc(alias)}/history?limit=200${token ? '&page_token=' + enc(token) : ''}`);
    if (!r.ok) return list.length ? list.reverse() : null;
    list = list.concat(r.data.history || []);
    token = r.data.next_page_token;
    if (!token) break;
  }
  return list.map((e) => ({ id: e.id, at: e.at, reason: e.reason, who: e.who, from: e.from_version, to: e.to_version })).reverse();
}

// The run and dataset behind an alias (GET .../aliases/{alias}/lineage).
function lineageLine(res) {
  if (!res || !res.ok) return null;
  const l = res.data, ds = l.dataset;
  return h('p', { class: 'muted lineage', 'data-run': l.run_id || '' }, 'from ',
    l.run_id ? link(`#/runs/${enc(l.run_id)}`, `run ${String(l.run_id).slice(0, 8)}`) : 'no run',
    ' on ', ds && ds.name ? link(`#/datasets/${enc(ds.name)}/${ds.version}`, `${ds.name} v${ds.version}`) : 'no recorded dataset');
}

// The traffic policy in force (GET /v1/models/{name}/traffic): routes by
// weight, the shadow, stickiness; the default when none is stored.
function trafficView(res) {
  if (!res.ok) return fail(errText(res));
  const t = res.data;
  return h('div', { id: 'traffic' },
    table([{ key: 'alias', label: 'Alias' }, { key: 'weight', label: 'Weight %', num: true }], t.routes || [], { id: 'traffic-routes' }),
    h('p', { class: 'muted' }, t.default ? 'No policy stored: everything goes to production.' : `Set ${fmtTime(t.updated_at)}.`,
      t.shadow ? ` Shadow: ${t.shadow.alias} on ${fmt(t.shadow.fraction * 100)}% of requests.` : ' No shadow.',
      t.sticky ? ` Sticky by ${t.sticky}.` : ''));
}

async function one(main, name) {
  const [model, versions, aliases, traffic] = await Promise.all([
    api('registry', `/v1/models/${enc(name)}`), allVersions(name), api('registry', `/v1/models/${enc(name)}/aliases`),
    api('registry', `/v1/models/${enc(name)}/traffic`)]);
  if (!model.ok) return main.replaceChildren(h('h1', {}, name), fail(errText(model)));
  const al = (aliases.ok && aliases.data.aliases) || [];
  const vs = versions || [];
  const hist = await Promise.all(al.map((a) => history(name, a.alias)));
  const lineage = await Promise.all(al.map((a) => api('registry', `/v1/models/${enc(name)}/aliases/${enc(a.alias)}/lineage`)));

  // metric columns: every metric, its baseline beside it when there is one
  const keys = [...new Set(vs.flatMap((v) => Object.keys(v.metrics || {})))].filter((k) => !k.startsWith('baseline.') && !k.startsWith('n_')).sort();
  const cols = [
    { key: 'version', label: 'Version', num: true, render: (v) => h('span', {}, `v${v.version}`, ...(v.aliases || []).map((a) => [' ', badge(a, a === 'production' ? 'ok' : 'none')])) },
    { key: 'created_at', label: 'Created', render: (v) => fmtTime(v.created_at) },
    { key: 'decision', label: 'Decision', get: (v) => v.tags && v.tags.decision },
  ];
  for (const k of keys) {
    cols.push({ key: k, label: k, num: true, get: (v) => v.metrics && v.metrics[k] });
    if (vs.some((v) => v.metrics && v.metrics['baseline.' + k] != null))
      cols.push({ key: 'baseline.' + k, label: 'baseline', num: true, get: (v) => v.metrics && v.metrics['baseline.' + k] });
  }
  cols.push(
    { key: 'run', label: 'Run', get: (v) => v.run_id || (v.tags && v.tags['quern.job_id']),
      render: (v) => v.run_id ? link(`#/runs/${enc(v.run_id)}`, String(v.run_id).slice(0, 8))
        : v.tags?.['quern.job_id'] ? link(`#/jobs/${enc(v.tags['quern.job_id'])}`, 'job ' + v.tags['quern.job_id'].slice(0, 8)) : '–' },
    { key: 'dataset', label: 'Dataset', get: (v) => v.dataset && `${v.dataset.name} v${v.dataset.version}`,
      render: (v) => v.dataset && v.dataset.name ? link(`#/datasets/${enc(v.dataset.name)}/${v.dataset.version}`, `${v.dataset.name} v${v.dataset.version}`) : '–' });

  const primary = (vs.find((v) => v.tags && v.tags.metric) || {}).tags?.metric || keys[0];
  const curve = primary ? chart([
    { label: primary, points: vs.filter((v) => v.metrics && v.metrics[primary] != null).map((v) => [v.version, v.metrics[primary]]) },
    ...(vs.some((v) => v.metrics && v.metrics['baseline.' + primary] != null) ? [{ label: 'baseline ' + primary,
      points: vs.filter((v) => v.metrics && v.metrics['baseline.' + primary] != null).map((v) => [v.version, v.metrics['baseline.' + primary]]) }] : []),
  ], { title: `${primary} by version`, xlabel: 'version', intX: true }) : null;
  if (curve) curve.id = 'version-chart';

  const timelines = h('div', { id: 'alias-history' }, al.length ? al.map((a, i) => h('div', {},
    h('h3', {}, `${a.alias}: v${a.version}`, h('span', { class: 'muted' }, ` since ${fmtTime(a.updated_at)} (${ago(a.updated_at)})`)),
    lineageLine(lineage[i]),
    hist[i] === null ? h('p', { class: 'muted', 'data-history': 'none' }, 'No history (the registry does not record alias moves).')
      : h('ul', { class: 'timeline', 'data-alias': a.alias }, hist[i].slice().reverse().map((e) => h('li', {},
        h('div', { class: 'muted' }, `${fmtTime(e.at)}${e.who ? ' · ' + e.who : ''}`),
        e.from == null ? `set to v${e.to}` : `v${e.from} → v${e.to}`, e.reason ? h('span', { class: 'muted' }, ` · ${e.reason}`) : ''))))) : note('No alias points at a version of this model.'));

  // promote / roll back
  const msg = h('p', { 'aria-live': 'polite', id: 'action-msg' });
  const aliasIn = h('input', { id: 'alias-in', value: 'production', size: 12, 'aria-label': 'Alias' });
  const verSel = h('select', { id: 'version-sel', 'aria-label': 'Version' }, vs.map((v) => h('option', { value: v.version }, `v${v.version}`)));
  async function move(version) {
    const alias = aliasIn.value.trim() || 'production';
    const r = await act('registry', `/v1/models/${enc(name)}/aliases/${enc(alias)}`, 'PUT', { version: Number(version) });
    if (!r) return;
    if (!r.ok) { msg.replaceChildren(fail(`Not moved: ${errText(r)}`)); return; }
    msg.replaceChildren(note(`${alias} now points at v${r.data.version}${r.data.previous_version != null ? ` (was v${r.data.previous_version})` : ''}.`));
    setTimeout(() => { if (location.hash === `#/models/${enc(name)}`) one(main, name); }, 600);
  }
  async function rollback() {
    const alias = aliasIn.value.trim() || 'production';
    const r = await act('registry', `/v1/models/${enc(name)}/aliases/${enc(alias)}/rollback`, 'POST', { reason: 'from the console' });
    if (!r) return;
    if (!r.ok) { msg.replaceChildren(fail(`Not rolled back: ${errText(r)}`)); return; }
    msg.replaceChildren(note(`${alias} now points at v${r.data.version} (rolled back from v${r.data.from_version}).`));
    setTimeout(() => { if (location.hash === `#/models/${enc(name)}`) one(main, name); }, 600);
  }
  // retrain: the model's newest job asked again, on the dataset's latest version
  async function retrain() {
    const last = await api('train', `/v1/jobs?model=${enc(name)}&limit=1`);
    const req = last.ok && last.data.jobs && last.data.jobs[0] && last.data.jobs[0].request;
    if (!req) { msg.replaceChildren(fail('No earlier training job of this model to repeat.')); return; }
    const body = { ...req, reason: 'retrain from the console' };
    delete body.dataset_version;
    const r = await act('train', '/v1/jobs', 'POST', body);
    if (!r) return;
    if (!r.ok) { msg.replaceChildren(fail(`Not started: ${errText(r)}`)); return; }
    location.hash = `#/jobs/${enc(r.data.id)}`;
  }
  const actions = h('div', {},
    h('div', { class: 'row' }, h('label', { for: 'alias-in' }, 'Alias'), aliasIn, h('label', { for: 'version-sel' }, 'Version'), verSel,
      h('button', { type: 'button', id: 'promote-btn', onclick: () => move(verSel.value) }, 'Promote'),
      h('button', { type: 'button', id: 'rollback-btn', class: 'ghost', onclick: rollback }, 'Roll back'),
      h('button', { type: 'button', id: 'retrain-btn', class: 'ghost', onclick: retrain }, 'Retrain')),
    h('p', { class: 'muted' }, 'Each asks for the token; the console checks it and sends the call on. Retrain repeats the newest job on the latest data.'), msg);

  const m = model.data;
  main.replaceChildren(
    h('h1', {}, `Model ${name}`),
    h('p', { class: 'muted' }, m.description || '', ` · ${vs.length} versions · latest v${m.latest_version}`, ' · ', link(`#/monitoring/${enc(name)}`, 'monitoring')),
    h('div', { class: 'grid' },
      h('section', { class: 'card wide' }, h('h2', {}, 'Versions'), table(cols, vs, { id: 'versions', empty: 'No version yet.' })),
      curve ? card('Metric by version', curve) : null,
      card('Aliases', timelines),
      card('Traffic', trafficView(traffic)),
      card('Actions', actions)));
}
