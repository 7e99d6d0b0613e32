// jobs.js - training jobs: queued and running with live progress (and the
// loss curve filling in as the page polls), finished with their outcome.
import { h, api, card, table, badge, fmt, fmtTime, ago, dur, fail, link, chart, errText, note } from './ui.js';

const enc = encodeURIComponent;
const DONE = ['succeeded', 'failed', 'cancelled'];
const active = (j) => !DONE.includes(j.state);
const stateBadge = (s) => badge(s, s === 'succeeded' ? 'ok' : s === 'failed' || s === 'cancelled' ? 'bad' : 'warn');
const bar = (p) => p && p.fraction != null ? h('span', {}, h('progress', { max: 1, value: p.fraction, 'aria-label': 'progress' }), ` ${Math.round(p.fraction * 100)}%`) : '–';

export async function render(main, { args, isCurrent }) {
  return args.length ? one(main, args[0], isCurrent) : list(main, isCurrent);
}

async function list(main, isCurrent) {
  let timer = null;
  async function draw() {
    const res = await api('train', '/v1/jobs?limit=500');
    if (!isCurrent()) return;
    if (!res.ok) { main.replaceChildren(h('h1', {}, 'Jobs'), fail(errText(res))); return; }
    const jobs = res.data.jobs || [];
    const running = jobs.filter(active), done = jobs.filter((j) => !active(j));
    const idcol = { key: 'id', label: 'Job', render: (j) => link(`#/jobs/${enc(j.id)}`, j.id.slice(0, 8)) };
    const model = { key: 'model', label: 'Model', render: (j) => link(`#/models/${enc(j.model)}`, j.model) };
    main.replaceChildren(h('h1', {}, 'Jobs'), h('div', { class: 'grid' },
      h('section', { class: 'card wide' }, h('h2', {}, 'Queued and running'), table([idcol, model,
        { key: 'state', label: 'State', render: (j) => stateBadge(j.state) },
        { key: 'progress', label: 'Progress', get: (j) => j.progress && j.progress.fraction, render: (j) => bar(j.progress) },
        { key: 'stage', label: 'Stage', get: (j) => j.progress && j.progress.stage },
        { key: 'loss', label: 'Loss', num: true, get: (j) => j.progress && j.progress.loss },
        { key: 'eta', label: 'ETA', get: (j) => j.progress && j.progress.eta_s, render: (j) => dur(j.progress && j.progress.eta_s) },
      ], running, { id: 'active-jobs', empty: 'No job is queued or running.' })),
      h('section', { class: 'card wide' }, h('h2', {}, 'Finished'), table([idcol, model,
        { key: 'state', label: 'State', render: (j) => stateBadge(j.state) },
        { key: 'outcome', label: 'Outcome', get: (j) => j.result && j.result.outcome },
        { key: 'version', label: 'Version', num: true, get: (j) => j.result && j.result.version },
        { key: 'score', label: 'Score', num: true, get: (j) => j.result && j.result.challenger_score },
        { key: 'finished_at', label: 'Finished', render: (j) => `${fmtTime(j.finished_at)} (${ago(j.finished_at)})` },
      ], done, { id: 'finished-jobs' }))));
    timer = setTimeout(draw, running.length ? 1000 : 5000);
  }
  await draw();
  return () => clearTimeout(timer);
}

async function one(main, id, isCurrent) {
  const loss = new Map(); // iteration -> loss, gathered while the job runs
  let timer = null;
  async function draw() {
    const res = await api('train', `/v1/jobs/${enc(id)}`);
    if (!isCurrent()) return;
    if (!res.ok) { main.replaceChildren(h('h1', {}, `Job ${id}`), fail(errText(res))); return; }
    const j = res.data, p = j.progress || {}, r = j.result || {};
    if (p.loss != null && p.iteration != null) loss.set(p.iteration, p.loss);
    for (const pt of p.history || p.losses || []) if (pt.loss != null) loss.set(pt.iteration ?? pt.step, pt.loss);
    const metrics = Object.entries(r.metrics || {}).filter(([k]) => !k.startsWith('baseline.'));
    main.replaceChildren(
      h('h1', {}, `Job ${id.slice(0, 8)}`),
      h('p', {}, stateBadge(j.state), ' ', link(`#/models/${enc(j.model)}`, j.model), ` · ${j.kind} on ${j.dataset}`,
        r.version ? [' → ', link(`#/models/${enc(j.model)}`, `v${r.version}`)] : ''),
      h('div', { class: 'grid' },
        card('Progress', h('div', { class: 'tiles', id: 'job-progress' },
          h('div', { class: 'tile' }, 'Stage', h('b', {}, p.stage || j.state)),
          h('div', { class: 'tile' }, 'Progress', h('b', {}, bar(p))),
          h('div', { class: 'tile' }, 'Iteration', h('b', {}, p.iterations ? `${p.iteration} / ${p.iterations}` : '–')),
          h('div', { class: 'tile' }, 'Elapsed', h('b', {}, dur(p.elapsed_s))),
          h('div', { class: 'tile' }, 'ETA', h('b', {}, dur(p.eta_s)))),
          loss.size ? chart([{ label: 'loss', points: [...loss] }], { title: 'Training loss', xlabel: 'iteration' })
            : h('p', { class: 'muted' }, active(j) ? 'The loss curve fills in as iterations finish.' : 'This model kind reports no per-iteration loss.')),
        card('Outcome', r.outcome ? h('div', { id: 'job-outcome' }, h('p', {}, badge(r.outcome, r.promoted ? 'ok' : 'none'), ' ', r.reason || ''),
          table([{ key: 0, label: 'Metric' }, { key: 1, label: 'Value', num: true },
            { key: 'b', label: 'Baseline', num: true, get: (m) => (r.metrics || {})['baseline.' + m[0]] }], metrics, { pageSize: 20 }))
          : j.error ? fail(j.error.message || JSON.stringify(j.error)) : note('Not finished yet.')),
        card('Request', h('pre', {}, JSON.stringify(j.request || {}, null, 1)))));
    if (active(j)) timer = setTimeout(draw, 1000);
  }
  await draw();
  return () => clearTimeout(timer);
}
