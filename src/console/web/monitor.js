// monitor.js - monitoring per model: the share of drifted features per
// window over time against its threshold, each feature's statistic over
// time against its threshold, the latest report with the reference vs
// current distribution of a chosen feature, live quality (and its CBPE
// estimate before labels) and hit-rate@k.
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
  // the history for the charts; the latest report alone carries the distributions
  // (the list names the latest report, so its distributions come in the same round)
  const rid = mon && mon.latest_report && mon.latest_report.id;
  const [res, qres, ares, lres0] = await Promise.all([api('monitor', `/v1/monitors/${enc(name)}/report?history=1000`),
    api('monitor', `/v1/monitors/${enc(name)}/quality?history=1000`), api('monitor', `/v1/monitors/${enc(name)}/agreement`),
    rid ? api('monitor', `/v1/monitors/${enc(name)}/reports/${rid}`) : null]);
  const reports = res.ok ? (res.data.reports || []).slice().reverse() : [];
  const newest = reports[reports.length - 1];
  // a window that closed in between: ask for the report the history ends with
  const lres = !newest ? { ok: false } : lres0 && lres0.ok && lres0.data.id === newest.id ? lres0
    : await api('monitor', `/v1/monitors/${enc(name)}/reports/${newest.id}`);
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
    ], latest.features || [], { pageSize: 20 }),
    distView(lres.ok && lres.data.id === latest.id ? lres.data : latest))
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

// The latest report's distributions (GET /v1/monitors/{model}/report:
// distributions.{feature}, docs/monitor.md): a feature selector and the
// reference vs current shares drawn over each other, as steps over the
// reference's bin edges for a numeric feature, as paired bars per category
// for a categorical one; the counts behind them in a table under the chart.
function distView(rep) {
  const dists = rep.distributions || {};
  const names = Object.keys(dists);
  if (!names.length) return h('div', { id: 'distribution' }, h('h3', {}, 'Reference vs current'), note('This report keeps no distributions (it was made before the monitor kept them).'));
  const drifted = (rep.features || []).find((f) => f.drifted && dists[f.column]);
  const sel = h('select', { id: 'dist-sel', 'aria-label': 'Feature whose distribution is shown' },
    names.map((n) => h('option', { value: n, selected: drifted && drifted.column === n }, n)));
  const box = h('div', {});
  const draw = () => box.replaceChildren(...distChart(sel.value, dists[sel.value]));
  sel.addEventListener('change', draw);
  draw();
  return h('div', { id: 'distribution' }, h('h3', {}, `Reference vs current distribution (report ${rep.id})`),
    h('div', { class: 'row' }, h('label', { for: 'dist-sel' }, 'Feature'), sel), box);
}

const REF = '#8a96a3', CUR = '#1f4e79';
const pct = (n, d) => (d ? (100 * n) / d : 0);
const short = (v) => (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-2) ? v.toPrecision(3) : String(Number(v.toFixed(2))));

// [chart, caption, counts table] of one feature's distribution d.
function distChart(name, d) {
  const num = d.type === 'numeric';
  const labels = num ? d.reference.map((_, i) => `${short(d.edges[i])} – ${short(d.edges[i + 1])}`) : [...d.categories];
  const ref = [...d.reference], cur = [...d.current];
  if (!num && (d.reference_other || d.current_other)) { labels.push('(other)'); ref.push(d.reference_other); cur.push(d.current_other); }
  const refN = d.reference_total - d.reference_missing, curN = d.current_total - d.current_missing;
  const refP = ref.map((c) => pct(c, refN)), curP = cur.map((c) => pct(c, curN));
  const el = h('div', { class: 'chart', id: 'dist-chart', role: 'img', 'data-series': '2', 'data-feature': name,
    'aria-label': `${name}: share of values per ${num ? 'bin' : 'category'}, reference and current` });
  const caption = h('p', { class: 'muted', id: 'dist-caption' },
    `Reference: ${fmt(refN)} values, ${fmt(d.reference_missing)} missing · current window: ${fmt(curN)} values, ${fmt(d.current_missing)} missing`,
    num && (d.current_below || d.current_above) ? ` · ${fmt(d.current_below)} below and ${fmt(d.current_above)} above the reference range, counted in the end bins` : '',
    num ? ' · bins: the reference\'s equal-width histogram' : ` · the ${d.categories.length} categories with the largest share on either side`);
  const rows = labels.map((l, i) => ({ bin: l, reference: ref[i], ref_share: refP[i] / 100, current: cur[i], cur_share: curP[i] / 100 }));
  const counts = h('details', {}, h('summary', {}, 'Counts'), table([
    { key: 'bin', label: num ? 'Bin' : 'Category' },
    { key: 'reference', label: 'Reference', num: true }, { key: 'ref_share', label: 'Share', num: true },
    { key: 'current', label: 'Current', num: true }, { key: 'cur_share', label: 'Share', num: true },
  ], rows, { id: 'dist-counts', pageSize: 50 }));
  if (!window.uPlot) { el.append(h('p', { class: 'muted' }, 'Charts are unavailable.')); return [el, caption, counts]; }
  requestAnimationFrame(() => {
    const width = Math.max(260, el.clientWidth || 600);
    let data, series, xAxis, xScale;
    if (num) {
      // a step per bin from its left edge; the last edge closes the last step
      const xs = [...d.edges];
      data = [xs, [...refP, refP[refP.length - 1]], [...curP, curP[curP.length - 1]]];
      const step = uPlot.paths.stepped({ align: 1 });
      // the reference as a grey area, the window as a line over it
      series = [{ label: 'reference', stroke: REF, fill: REF + '66', width: 1, paths: step, points: { show: false } },
        { label: 'current window', stroke: CUR, fill: CUR + '1a', width: 2.5, paths: step, points: { show: false } }];
      xAxis = { label: name, values: (u, vs) => vs.map(short) };
      xScale = { time: false, range: [xs[0], xs[xs.length - 1]] };
    } else {
      const xs = labels.map((_, i) => i);
      data = [xs, refP, curP];
      series = [{ label: 'reference', stroke: REF, fill: REF + '99', width: 1, paths: uPlot.paths.bars({ size: [0.36, 48], align: -1 }), points: { show: false } },
        { label: 'current window', stroke: CUR, fill: CUR + 'cc', width: 1, paths: uPlot.paths.bars({ size: [0.36, 48], align: 1 }), points: { show: false } }];
      xAxis = { label: name, incrs: [1], values: (u, vs) => vs.map((v) => (Number.isInteger(v) && labels[v] != null ? (labels[v].length > 14 ? labels[v].slice(0, 13) + '…' : labels[v]) : '')),
        rotate: labels.length > 6 ? -30 : 0, size: labels.length > 6 ? 70 : 40 };
      xScale = { time: false, range: [-0.6, xs.length - 0.4] };
    }
    el.__uplot = new uPlot({
      title: `${name}: reference vs current`, width, height: 240,
      scales: { x: xScale, y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.08)] } },
      axes: [xAxis, { label: 'share of values (%)', size: 60 }],
      series: [{ label: num ? name : 'category', value: (u, v) => (v == null ? '–' : num ? short(v) : labels[v]) },
        { ...series[0], value: (u, v) => (v == null ? '–' : `${fmt(v)} %`) }, { ...series[1], value: (u, v) => (v == null ? '–' : `${fmt(v)} %`) }],
      legend: { live: false },
    }, data, el);
    el.dataset.drawn = '2';
  });
  return [el, caption, counts];
}

// When a report was made: its created_at, else its window's end.
const when = (r) => secs(r.created_at || (r.window && r.window.end));

// Live quality from labels and the CBPE estimate before them
// (GET /v1/monitors/{model}/quality: reports[].metrics.{m}.{live,reference,
// degraded} and estimates[].{estimated,reference,realised}, newest first):
// one chart per metric over time with the reference as a line; an
// estimate's window, once labelled, also shows its realised value.
function qualityView(res) {
  if (!res.ok) return note(res.status === 404 ? 'No label has been joined for this model yet.' : errText(res));
  const live = (res.data.reports || []).slice().reverse();
  const est = (res.data.estimates || []).slice().reverse();
  // Estimation windows closed by one batch of logged predictions share their
  // closing millisecond: each keeps its own point, a millisecond apart.
  const estX = new Map();
  let prevX = -Infinity;
  for (const e of est) { const x = Math.max(when(e), prevX + 0.001); estX.set(e, x); prevX = x; }
  const labels = res.data.labels || {};
  const head = h('p', { class: 'muted', id: 'labels' }, `Labels: ${fmt(labels.joined)} joined, ${fmt(labels.unjoined)} unjoined, ${fmt(labels.bad_label)} bad · `,
    `${live.length} live reports, ${est.length} estimates (CBPE)`);
  if (!live.length && !est.length) return h('div', { id: 'quality' }, head, note('No quality window has closed yet: it closes after enough labelled predictions.'));
  const keys = [...new Set([...live.flatMap((r) => Object.keys(r.metrics || {})), ...est.flatMap((e) => Object.keys(e.estimated || {}).filter((k) => !k.endsWith('_undefined')))])]
    .filter((k) => k !== 'calibration');
  const charts = keys.map((k) => {
    const series = [];
    const lp = live.filter((r) => r.metrics && r.metrics[k] && typeof r.metrics[k].live === 'number').map((r) => [when(r), r.metrics[k].live]);
    if (lp.length) series.push({ label: `${k} live`, points: lp, color: '#1f4e79' });
    const ep = est.filter((e) => e.estimated && typeof e.estimated[k] === 'number').map((e) => [estX.get(e), e.estimated[k]]);
    if (ep.length) series.push({ label: `${k} estimated (CBPE)`, points: ep, color: '#b9770e', dash: [5, 3] });
    // the same windows once their labels landed: how far the estimate was
    const rp = est.filter((e) => e.realised_ready && e.realised && typeof e.realised[k] === 'number').map((e) => [estX.get(e), e.realised[k]]);
    if (rp.length) series.push({ label: `${k} realised (labels)`, points: rp, color: '#1e8449' });
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
  // the estimates, newest first: what CBPE said before the labels, and the truth after
  const estRows = est.slice().reverse().map((e) => ({ id: e.id, version: e.version, end: e.window && e.window.end, predictions: e.window && e.window.predictions,
    labelled: e.labelled, acc: (e.estimated || {}).accuracy, acc_real: e.realised_ready ? (e.realised || {}).accuracy : null,
    auc: (e.estimated || {}).roc_auc, auc_real: e.realised_ready ? (e.realised || {}).roc_auc : null }));
  const table2 = est.length ? h('div', {}, h('h3', {}, 'Estimates before labels (CBPE)'), table([
    { key: 'end', label: 'Window closed', render: (r) => fmtTime(r.end) }, { key: 'version', label: 'Version', num: true },
    { key: 'predictions', label: 'Predictions', num: true }, { key: 'labelled', label: 'Labelled', num: true },
    { key: 'acc', label: 'Accuracy est.', num: true }, { key: 'acc_real', label: 'realised', num: true },
    { key: 'auc', label: 'ROC AUC est.', num: true }, { key: 'auc_real', label: 'realised', num: true },
  ], estRows, { id: 'estimates', pageSize: 10 })) : null;
  return h('div', { id: 'quality' }, head, table1, table2, h('div', { class: 'grid' }, charts));
}

// Versions compared on the same requests (GET /v1/monitors/{model}/agreement).
function agreementView(res) {
  if (!res.ok) return note(errText(res));
  const pairs = (res.data.pairs || []).map((p) => ({ ...p, pair: `v${p.versions[0]} / v${p.versions[1]}` }));
  return table([{ key: 'pair', label: 'Versions' }, { key: 'requests', label: 'Requests', num: true }, { key: 'compared', label: 'Compared', num: true },
    { key: 'agreement', label: 'Agreement', num: true }, { key: 'mean_abs_diff', label: 'Mean |diff|', num: true }],
  pairs, { id: 'agreement', empty: 'No request was answered by two versions (no shadow or canary traffic).' });
}
