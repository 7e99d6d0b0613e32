// monitor.js - monitoring per model: the share of drifted features per
// window over time against its threshold, each feature's statistic over
// time against its threshold, the latest report, and live hit-rate@k.
import { h, api, card, table, badge, fmt, fmtTime, ago, note, fail, link, chart, errText } from './ui.js';

const enc = encodeURIComponent;
const secs = (t) => Date.parse(t) / 1000;

// How far a statistic is toward its threshold (the bar's middle mark), to twice it.
function meter(f) {
  if (f.statistic == null || !f.threshold) return '–';
  const r = f.statistic / f.threshold;
  return h('span', { class: 'meter', title: `${fmt(r)} × threshold` },
    h('span', { class: f.drifted ? 'fill bad' : 'fill', style: `width:${Math.min(100, r * 50)}%` }), h('span', { class: 'mark' }));
}

export async function render(main, { args }) {
  const mons = await api('monitor', '/v1/monitors');
  if (!mons.ok) return main.replaceChildren(h('h1', {}, 'Monitoring'), fail(errText(mons)));
  const list = mons.data.monitors || [];
  if (!args.length) {
    return main.replaceChildren(h('h1', {}, 'Monitoring'), card(null, table([
      { key: 'model', label: 'Model', render: (m) => link(`#/monitoring/${enc(m.model)}`, m.model) },
      { key: 'predictions', label: 'Predictions', num: true, get: (m) => m.counts && m.counts.predictions },
      { key: 'drifted', label: 'Windows drifted', num: true, get: (m) => m.counts && m.counts.windows_drifted },
      { key: 'clean', label: 'Windows clean', num: true, get: (m) => m.counts && m.counts.windows_clean },
      { key: 'verdict', label: 'Last verdict', get: (m) => m.latest_report ? (m.latest_report.dataset_drift ? 'drift' : 'no drift') : null,
        render: (m) => m.latest_report ? badge(m.latest_report.dataset_drift ? 'drift' : 'no drift', m.latest_report.dataset_drift ? 'bad' : 'ok') : '–' },
    ], list, { id: 'monitors', empty: 'The monitor has seen no model yet.' })));
  }
  const name = args[0];
  const mon = list.find((m) => m.model === name);
  const [res, qres, ares] = await Promise.all([api('monitor', `/v1/monitors/${enc(name)}/report?history=1000`),
    api('monitor', `/v1/monitors/${enc(name)}/quality?history=1000`), api('monitor', `/v1/monitors/${enc(name)}/agreement`)]);
  const reports = res.ok ? (res.data.reports || []).slice().reverse() : [];
  const quality = qualityView(qres);
  const agreement = agreementView(ares);
  if (!mon && !reports.length) return main.replaceChildren(h('h1', {}, `Monitoring ${name}`), note('The monitor has no report for this model yet.'));

  const share = reports.length ? chart([{ label: 'share drifted', points: reports.map((r) => [secs(r.created_at), r.share_drifted]) }],
    { title: 'Share of drifted features per window', time: true, threshold: reports[reports.length - 1].share_threshold, thresholdLabel: 'dataset drift at' }) : note('No window has closed yet.');
  if (share) share.id = 'share-chart';

  const feats = [...new Set(reports.flatMap((r) => (r.features || []).map((f) => f.column)))];
  const sel = h('select', { id: 'feature-sel', 'aria-label': 'Feature' }, feats.map((f) => h('option', { value: f }, f)));
  const featBox = h('div', { id: 'feature-chart' });
  const drawFeature = () => {
    const f = sel.value;
    const pts = reports.map((r) => [secs(r.created_at), (r.features || []).find((x) => x.column === f)]).filter(([, x]) => x && x.statistic != null);
    const last = pts.length ? pts[pts.length - 1][1] : null;
    featBox.replaceChildren(chart([{ label: `${f} (${last ? last.method : ''})`, points: pts.map(([t, x]) => [t, x.statistic]) }],
      { title: `${f}: statistic per window`, time: true, threshold: last ? last.threshold : null }));
  };
  sel.addEventListener('change', drawFeature);
  if (feats.length) drawFeature();
  const all = feats.length ? chart(feats.map((f) => ({ label: f, points: reports.map((r) => [secs(r.created_at), ((r.features || []).find((x) => x.column === f) || {}).statistic]).filter(([, v]) => v != null) })),
    { title: 'Every feature: statistic per window', time: true }) : null;
  if (all) all.id = 'features-chart';

  const latest = reports[reports.length - 1];
  const latestBox = latest ? h('div', { id: 'latest-report' },
    h('p', {}, badge(latest.dataset_drift ? 'dataset drift' : 'no dataset drift', latest.dataset_drift ? 'bad' : 'ok'),
      ` report ${latest.id} · v${latest.version} · ${fmtTime(latest.created_at)} (${ago(latest.created_at)}) · window of ${fmt(latest.window && latest.window.rows)} rows`),
    table([
      { key: 'column', label: 'Feature' }, { key: 'method', label: 'Method' },
      { key: 'statistic', label: 'Statistic', num: true }, { key: 'p_value', label: 'p-value', num: true },
      { key: 'threshold', label: 'Threshold', num: true },
      { key: 'n_reference', label: 'Reference rows', num: true }, { key: 'n_current', label: 'Current rows', num: true },
      { key: 'drifted', label: 'Drifted', get: (f) => f.drifted ? 'yes' : 'no', render: (f) => badge(f.drifted ? 'drifted' : 'ok', f.drifted ? 'bad' : 'ok') },
      { key: 'meter', label: 'Statistic / threshold', get: (f) => f.threshold ? f.statistic / f.threshold : null, render: (f) => meter(f) },
    ], latest.features || [], { pageSize: 20 }))
    : note('No report yet.');

  const hr = mon && mon.hit_rate;
  // a classifier or regressor (the quality join knows its task): hit-rate@k is for recommenders
  const graded = qres.ok && ((qres.data.state && qres.data.state.windows) || []).some((w) => w.task);
  const tiles = h('div', { class: 'tiles', id: 'monitor-tiles' },
    h('div', { class: 'tile' }, 'Predictions', h('b', {}, fmt(mon && mon.counts.predictions))),
    h('div', { class: 'tile' }, 'Windows drifted', h('b', {}, fmt(mon && mon.counts.windows_drifted))),
    h('div', { class: 'tile' }, 'Windows clean', h('b', {}, fmt(mon && mon.counts.windows_clean))),
    hr && !graded ? h('div', { class: 'tile' }, `Hit-rate@${hr.k}`, h('b', { id: 'hit-rate' }, hr.rate != null ? fmt(hr.rate) : '–'),
      h('span', { class: 'muted' }, `${fmt(hr.hits)} hits of ${fmt(hr.joined)} joined`)) : null,
    h('div', { class: 'tile' }, 'Feedback', h('b', {}, fmt(mon && mon.counts.feedback))));

  main.replaceChildren(h('h1', {}, `Monitoring ${name}`),
    h('p', { class: 'muted' }, `${reports.length} drift reports · `, link(`#/models/${enc(name)}`, 'model')),
    tiles,
    h('div', { class: 'grid', style: 'margin-top:16px' },
      ...(reports.length ? [h('section', { class: 'card wide' }, share),
        card('Feature statistic over time', h('div', { class: 'row' }, h('label', { for: 'feature-sel' }, 'Feature'), sel), featBox),
        all ? card('All features', all) : null,
        h('section', { class: 'card wide' }, h('h2', {}, 'Latest drift report'), latestBox)]
        : [h('section', { class: 'card wide' }, h('h2', {}, 'Drift'), note('No drift window has closed yet.'))]),
      graded || (qres.ok && (qres.data.reports || []).length) ? h('section', { class: 'card wide' }, h('h2', {}, 'Live quality'), quality) : null,
      card('Agreement between versions (shadow traffic)', agreement)));
}

// When a report was made: its created_at, else its window's end.
const when = (r) => secs(r.created_at || (r.window && r.window.end));

// Live quality from labels and the CBPE estimate before them
// (GET /v1/monitors/{model}/quality: reports[].metrics.{m}.{live,reference,
// degraded} and estimates[].{estimated,reference,realised}, newest first):
// one chart per metric over time with the reference as a line.
function qualityView(res) {
  if (!res.ok) return note(res.status === 404 ? 'No label has been joined for this model yet.' : errText(res));
  const live = (res.data.reports || []).slice().reverse();
  const est = (res.data.estimates || []).slice().reverse();
  const labels = res.data.labels || {};
  const head = h('p', { class: 'muted', id: 'labels' }, `Labels: ${fmt(labels.joined)} joined, ${fmt(labels.unjoined)} unjoined, ${fmt(labels.bad_label)} bad · `,
    `${live.length} live reports, ${est.length} estimates (CBPE)`);
  if (!live.length && !est.length) return h('div', { id: 'quality' }, head, note('No quality window has closed yet: it closes after enough labelled predictions.'));
  const keys = [...new Set([...live.flatMap((r) => Object.keys(r.metrics || {})), ...est.flatMap((e) => Object.keys(e.estimated || {}).filter((k) => !k.endsWith('_undefined')))])]
    .filter((k) => k !== 'calibration');
  const charts = keys.map((k) => {
    const series = [];
    const lp = live.filter((r) => r.metrics && r.metrics[k] && typeof r.metrics[k].live === 'number').map((r) => [when(r), r.metrics[k].live]);
    if (lp.length) series.push({ label: `${k} live`, points: lp });
    const ep = est.filter((e) => e.estimated && typeof e.estimated[k] === 'number').map((e) => [when(e), e.estimated[k]]);
    if (ep.length) series.push({ label: `${k} estimated (CBPE)`, points: ep });
    const last = live.filter((r) => r.metrics && r.metrics[k]).pop();
    const ref = last ? last.metrics[k].reference : (est.filter((e) => e.reference && e.reference[k] != null).pop() || { reference: {} }).reference[k];
    const c = chart(series, { title: `${k} over time`, time: true, threshold: typeof ref === 'number' ? ref : null, thresholdLabel: 'reference (holdout)' });
    c.dataset.metric = k;
    return card(k, c);
  });
  const latest = live[live.length - 1];
  const table1 = latest ? h('div', {}, h('p', {}, badge(latest.degraded ? 'degraded' : 'within margin', latest.degraded ? 'bad' : 'ok'),
    ` v${latest.version} · ${fmt(latest.measured)} labelled predictions · ${fmtTime(latest.created_at)}`),
  table([{ key: 'k', label: 'Metric' }, { key: 'live', label: 'Live', num: true }, { key: 'reference', label: 'Reference', num: true },
    { key: 'degraded', label: 'Degraded', get: (m) => m.degraded == null ? null : m.degraded ? 'yes' : 'no',
      render: (m) => m.degraded == null ? '–' : badge(m.degraded ? 'degraded' : 'ok', m.degraded ? 'bad' : 'ok') }],
  Object.entries(latest.metrics || {}).filter(([k]) => k !== 'calibration').map(([k, m]) => ({ k, ...m })), { id: 'quality-latest' })) : null;
  return h('div', { id: 'quality' }, head, table1, h('div', { class: 'grid' }, charts));
}

// Versions compared on the same requests (GET /v1/monitors/{model}/agreement).
function agreementView(res) {
  if (!res.ok) return note(errText(res));
  const pairs = (res.data.pairs || []).map((p) => ({ ...p, pair: `v${p.versions[0]} / v${p.versions[1]}` }));
  return table([{ key: 'pair', label: 'Versions' }, { key: 'requests', label: 'Requests', num: true }, { key: 'compared', label: 'Compared', num: true },
    { key: 'agreement', label: 'Agreement', num: true }, { key: 'mean_abs_diff', label: 'Mean |diff|', num: true }],
  pairs, { id: 'agreement', empty: 'No request was answered by two versions (no shadow or canary traffic).' });
}
