#!/usr/bin/env node
// console.test.js - quern-console in a real headless Chromium (puppeteer-core
// driving Debian's /usr/bin/chromium).
//
// setup.py starts every service and the console on free ports with real data
// flowing (the demo's loop: ingest, prep, two trained versions, serve,
// predictions, drift reports, an alert and its retrain). Then, page by page,
// it checks what a person would: the numbers shown equal the APIs' answers,
// the charts drew their series, the links lead where they say, promote and
// roll back move the alias, and no page logs an error or fails a request.
// Every page is saved as a PNG under $QUERN_SHOTS (build/console-shots/).
// Exit 77 (ctest: skipped) only when Chromium is not installed.
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const ROOT = process.env.QUERN_SOURCE_DIR || path.join(__dirname, '../..');
const BIN = process.env.QUERN_BIN || path.join(ROOT, 'build/bin');
const SHOTS = process.env.QUERN_SHOTS || path.join(ROOT, 'build/console-shots');
const CHROMIUM = process.env.QUERN_CHROMIUM || '/usr/bin/chromium';

if (!fs.existsSync(CHROMIUM)) {
  console.log(`SKIP: ${CHROMIUM} is not installed (make deps installs Debian's chromium)`);
  process.exit(77);
}
const puppeteer = require(path.join(ROOT, 'node_modules/puppeteer-core'));

// The pages' number format (src/console/web/ui.js fmt), restated.
function fmt(v) {
  if (v == null || v === '') return '–';
  if (typeof v !== 'number') return String(v);
  if (Number.isInteger(v)) return v.toLocaleString('en-US');
  if (v !== 0 && Math.abs(v) < 0.001) return v.toExponential(2);
  return String(Number(v.toFixed(4)));
}

let world;
const results = [];
// Chromium aborts requests in flight with net::ERR_NETWORK_CHANGED when the
// host's interfaces change (other tests on this machine make and remove
// network namespaces and veths). That is the machine, not the console: such
// aborts are counted, not failures, and a step that failed while one
// happened runs once more.
let netChanges = 0;
async function step(name, fn) {
  for (let attempt = 1; ; attempt++) {
    const t0 = Date.now(), changes = netChanges;
    try {
      await fn();
      results.push([name, 'ok']);
      console.log(`ok   ${name} (${Date.now() - t0} ms)`);
      return;
    } catch (e) {
      if (attempt === 1 && netChanges > changes) {
        console.log(`again ${name}: the network changed under it (${e.message.split('\n')[0]})`);
        continue;
      }
      results.push([name, 'FAIL']);
      console.log(`FAIL ${name}: ${e.stack || e}`);
      return;
    }
  }
}
const NETCHANGE = /ERR_NETWORK_CHANGED/;

async function get(svc, p) {
  const r = await fetch(`${world.console}/api/${svc}${p}`);
  assert.equal(r.status, 200, `GET /api/${svc}${p} -> ${r.status}`);
  return r.json();
}

async function post(svc, p, body) {
  const r = await fetch(`${world.console}/api/${svc}${p}`, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
  assert.equal(r.status, 200, `POST /api/${svc}${p} -> ${r.status}`);
  return r.json();
}

// Every run the registry's search gives for body, following its pages.
async function searchRuns(body) {
  let runs = [], token;
  do {
    const b = await post('registry', '/v1/runs/search', { max_results: 1000, ...body, ...(token ? { page_token: token } : {}) });
    runs = runs.concat(b.runs);
    token = b.next_page_token;
  } while (token);
  return runs;
}

async function main() {
  if (process.env.QUERN_BROWSER_WORLD) {
    // a world already running (setup.py's line), left running afterwards
    world = JSON.parse(process.env.QUERN_BROWSER_WORLD);
    world.keep = true;
  } else {
    const out = execFileSync('/usr/bin/python3', [path.join(__dirname, 'setup.py')], { encoding: 'utf8', timeout: 900000,
      stdio: ['ignore', 'pipe', 'inherit'] });
    world = JSON.parse(out.trim().split('\n').pop());
  }
  console.log(`services up: console ${world.console} (home ${world.home})`);
  fs.mkdirSync(SHOTS, { recursive: true });

  const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true,
    args: [...(process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : []), '--disable-gpu', '--disable-dev-shm-usage'] });
  const problems = [];
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (NETCHANGE.test(m.text())) return;
    const url = (m.location() && m.location().url) || '';
    problems.push(`console error: ${m.text()} ${url}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    const why = (r.failure() && r.failure().errorText) || '';
    if (NETCHANGE.test(why)) netChanges++;
    else problems.push(`request failed: ${r.url()} ${why}`);
  });
  page.on('response', (r) => {
    const u = new URL(r.url());
    if (r.status() >= 400)
      problems.push(`HTTP ${r.status()} for ${u.pathname}${u.search}`);
  });

  const open = async (hash, pageName) => {
    await page.goto(`${world.console}/#/${hash}`, { waitUntil: 'load' });
    await page.waitForFunction((p) => document.body.dataset.page === p, { timeout: 30000 }, pageName);
  };
  const shot = async (name) => {
    await new Promise((r) => setTimeout(r, 300)); // charts draw on the next frame
    await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  };
  const cells = (sel, key) => page.$$eval(`${sel} td[data-k="${key}"]`, (tds) => tds.map((t) => ({ v: t.dataset.v, text: t.textContent })));
  // The uPlot charts drawn under sel: [{series, canvas}] once each has drawn.
  const charts = async (sel) => {
    await page.waitForFunction((s) => [...document.querySelectorAll(`${s} .chart, ${s}.chart`)].every((c) => c.dataset.drawn || c.querySelector('p')), { timeout: 10000 }, sel);
    return page.$$eval(`${sel} .chart, ${sel}.chart`, (cs) => cs.map((c) => ({ series: Number(c.dataset.drawn || 0),
      canvas: !!c.querySelector('canvas') && c.querySelector('canvas').width > 0, drawnSeries: c.__uplot ? c.__uplot.series.length - 1 : 0 })));
  };

  // The distribution chart (#dist-chart) shows feature want of report rep: its
  // shares drawn as the API's counts say, its counts in the table under it.
  const distShown = async (rep, want) => {
    await page.waitForFunction((f) => { const c = document.querySelector('#dist-chart'); return c && c.dataset.feature === f && c.__uplot && c.dataset.drawn === '2'; }, { timeout: 10000 }, want);
    const d = rep.distributions[want];
    const u = await page.evaluate(() => { const p = document.querySelector('#dist-chart').__uplot; return { xs: p.data[0], ys: p.data.slice(1), labels: p.series.slice(1).map((x) => x.label) }; });
    assert.deepEqual(u.labels, ['reference', 'current window']);
    const refN = d.reference_total - d.reference_missing, curN = d.current_total - d.current_missing;
    const share = (c, n) => (n ? (100 * c) / n : 0);
    let ref = d.reference.map((c) => share(c, refN)), cur = d.current.map((c) => share(c, curN));
    if (d.type === 'numeric') {
      assert.deepEqual(u.xs, d.edges, 'x: the reference bin edges');
      ref = [...ref, ref[ref.length - 1]];
      cur = [...cur, cur[cur.length - 1]];
    } else if (d.reference_other || d.current_other) {
      ref.push(share(d.reference_other, refN));
      cur.push(share(d.current_other, curN));
    }
    assert.deepEqual(u.ys[0], ref, `${want}: reference shares`);
    assert.deepEqual(u.ys[1], cur, `${want}: current shares`);
    const n = d.reference.length;
    assert.deepEqual((await cells('#dist-counts', 'reference')).slice(0, n).map((c) => c.v), d.reference.map(String));
    assert.deepEqual((await cells('#dist-counts', 'current')).slice(0, n).map((c) => c.text), d.current.map(fmt));
  };

  const models = (await get('registry', '/v1/models')).models;
  const model = 'retail';

  await step('overview: services, production, alerts, events', async () => {
    await open('', 'overview');
    const tiles = await page.$$eval('#services .tile', (ts) => ts.map((t) => ({ name: t.dataset.service, text: t.textContent })));
    assert.deepEqual(tiles.map((t) => t.name), ['registry', 'ingest', 'prep', 'train', 'serve', 'monitor', 'alert']);
    for (const t of tiles) {
      assert.match(t.text, /ready/, `${t.name}: ${t.text}`);
      const metrics = await (await fetch(`${world.console}/api/${t.name}/metrics`)).text();
      const ver = metrics.match(/quern_build_info\{[^}]*version="([^"]+)"/)[1];
      assert.ok(t.text.includes(`v${ver} · up `), `${t.name} shows its version ${ver}: ${t.text}`);
    }
    const alias = await get('registry', `/v1/models/${model}/aliases/production`);
    const prodModels = (await cells('#production', 'model')).map((c) => c.text);
    const prod = await cells('#production', 'version');
    assert.equal(prod[prodModels.indexOf(model)].v, String(alias.version));
    const firing = (await get('alert', '/v1/alerts?state=firing')).alerts;
    const rows = await page.$$eval('#firing tbody tr', (trs) => trs.filter((tr) => !tr.querySelector('.muted[colspan]')).length);
    assert.equal(rows, firing.length);
    const mon = (await get('monitor', '/v1/monitors')).monitors.find((m) => m.model === model);
    const drift = (await cells('#production', 'drift'))[prodModels.indexOf(model)].text;
    assert.ok(drift.startsWith(mon.latest_report.dataset_drift ? 'drift' : 'no drift'), drift);
    const evs = (await get('registry', '/v1/events?limit=1000')).events;
    const first = await page.$eval('#events li', (li) => li.textContent);
    const last = evs[evs.length - 1].event;
    assert.ok(first.includes(last.type) && (last.data.version == null || first.includes(`v${last.data.version}`)), first);
    await shot('overview');
    await page.setViewport({ width: 390, height: 844, isMobile: true });
    await open('', 'overview');
    await shot('overview-phone');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `the phone layout scrolls sideways by ${overflow}px`);
    await page.setViewport({ width: 1280, height: 900 });
  });

  await step('models list', async () => {
    await open('models', 'model');
    await page.waitForFunction(() => document.querySelector('#models td[data-k="name"]'), { timeout: 10000 });
    const names = await cells('#models', 'name');
    assert.deepEqual(names.map((c) => c.v), models.map((m) => m.name));
    await shot('models');
  });

  // A page still loading when the user moves on must not write over the
  // next one: the overview's reads are held back 1.5 s, the models list is
  // opened at once, and after the overview's answers came it is still shown.
  await step('a slow page left behind does not write over the next', async () => {
    await page.setRequestInterception(true);
    let held = 0, released = 0;
    const hold = (req) => {
      const slow = req.url().includes('/api/') && !req.url().includes('/api/registry/v1/models?limit');
      if (!slow) return req.continue().catch(() => {});
      held++;
      setTimeout(() => req.continue().catch(() => {}).finally(() => released++), 1500);
    };
    page.on('request', hold);
    try {
      await page.goto(`${world.console}/#/`, { waitUntil: 'load' });
      await page.waitForFunction(() => document.body.dataset.page === 'loading', { timeout: 10000 });
      await open('models', 'model');
      // the overview reads twice in a row (services, then each production
      // alias): wait until every held read was answered and a moment more
      for (let quiet = 0; quiet < 2; ) {
        await new Promise((r) => setTimeout(r, 1000));
        quiet = held === released ? quiet + 1 : 0;
      }
      assert.ok(held > 0, 'the overview asked for nothing');
      const names = await cells('#models', 'name');
      assert.deepEqual(names.map((c) => c.v), models.map((m) => m.name));
      assert.equal(await page.$eval('main h1', (e) => e.textContent), 'Models');
    } finally {
      page.off('request', hold);
      await page.setRequestInterception(false);
    }
  });

  const versions = (await get('registry', `/v1/models/${model}/versions`)).versions;
  await step('model: versions and metrics side by side, baseline, chart, links', async () => {
    await open(`models/${model}`, 'model');
    const shown = await cells('#versions', 'version');
    assert.deepEqual(shown.map((c) => c.v), versions.map((v) => String(v.version)));
    for (const key of ['map@10', 'baseline.map@10', 'ndcg@10', 'auc']) {
      const got = await cells('#versions', key);
      assert.deepEqual(got.map((c) => c.v), versions.map((v) => String(v.metrics[key])), key);
      assert.deepEqual(got.map((c) => c.text), versions.map((v) => fmt(v.metrics[key])), key);
    }
    const ch = await charts('#version-chart');
    assert.deepEqual(ch.map((c) => [c.series, c.canvas, c.drawnSeries]), [[2, true, 2]]); // map@10 and its baseline
    // the run behind each version (versions carry run_id)
    const runHrefs = await page.$$eval('#versions td[data-k="run"] a', (as) => as.map((a) => a.getAttribute('href')));
    assert.deepEqual(runHrefs, versions.map((v) => `#/runs/${v.run_id}`));
    assert.ok(versions.every((v) => v.run_id), 'every trained version names its run');
    // each alias: its history as a timeline, the run and dataset behind it
    for (const a of (await get('registry', `/v1/models/${model}/aliases`)).aliases) {
      const hist = (await get('registry', `/v1/models/${model}/aliases/${a.alias}/history?limit=200`)).history;
      const items = await page.$$eval(`#alias-history ul[data-alias="${a.alias}"] li`, (lis) => lis.map((li) => li.textContent));
      assert.equal(items.length, hist.length, a.alias);
      hist.forEach((e, i) => assert.ok(items[i].includes(e.from_version == null ? `set to v${e.to_version}` : `v${e.from_version} → v${e.to_version}`), `${items[i]} / ${JSON.stringify(e)}`));
      const lin = await get('registry', `/v1/models/${model}/aliases/${a.alias}/lineage`);
      const shownRun = await page.$$eval('#alias-history .lineage', (ps) => ps.map((p) => p.dataset.run));
      assert.ok(shownRun.includes(lin.run_id), `lineage of ${a.alias}: ${lin.run_id} in ${shownRun}`);
    }
    // the traffic policy in force
    const tr = await get('registry', `/v1/models/${model}/traffic`);
    assert.deepEqual((await cells('#traffic-routes', 'weight')).map((c) => c.v), tr.routes.map((r) => String(r.weight)));
    const hrefs = await page.$$eval('#versions td[data-k="dataset"] a', (as) => as.map((a) => a.getAttribute('href')));
    assert.deepEqual(hrefs, versions.map((v) => `#/datasets/${v.dataset.name}/${v.dataset.version}`));
    await shot('model');
    await page.click('#versions td[data-k="dataset"] a');
    await page.waitForFunction(() => document.body.dataset.page === 'dataset');
    const h1 = await page.$eval('h1', (e) => e.textContent);
    assert.equal(h1, `Dataset ${versions[0].dataset.name}`);
    const cur = await page.$eval('#cleaning p', (p) => p.textContent);
    assert.ok(cur.startsWith(`v${versions[0].dataset.version}:`), cur);
  });

  await step('model: promote and roll back move the alias (token asked for)', async () => {
    const before = (await get('registry', `/v1/models/${model}/aliases/production`)).version;
    const other = versions.map((v) => v.version).find((v) => v !== before);
    await open(`models/${model}`, 'model');
    await page.select('#version-sel', String(other));
    await page.click('#promote-btn');
    await page.waitForSelector('#token-dlg[open]');
    await page.type('#token-in', world.token);
    await page.click('#token-ok');
    await page.waitForFunction(() => document.querySelector('#action-msg').textContent.includes('now points'), { timeout: 15000 });
    assert.equal((await get('registry', `/v1/models/${model}/aliases/production`)).version, other);
    await page.waitForFunction(() => document.body.dataset.page === 'model' && document.querySelector('#rollback-btn'));
    await new Promise((r) => setTimeout(r, 1000)); // the page reloads itself after a move
    await page.waitForSelector('#rollback-btn');
    await page.click('#rollback-btn');
    await page.waitForFunction(() => document.querySelector('#action-msg') && document.querySelector('#action-msg').textContent.includes('now points'), { timeout: 15000 });
    assert.equal((await get('registry', `/v1/models/${model}/aliases/production`)).version, before);
    const last = (await get('registry', `/v1/models/${model}/aliases/production/history?limit=2`)).history;
    assert.deepEqual(last.map((e) => [e.from_version, e.to_version, e.reason]), [[other, before, 'rollback: from the console'], [before, other, last[1].reason]]);
    await page.waitForFunction((t) => (document.querySelector('#alias-history ul[data-alias="production"] li') || {}).textContent?.includes(t), { timeout: 15000 }, `v${other} → v${before}`);
    // a move without the token is refused by the console itself
    const r = await fetch(`${world.console}/api/registry/v1/models/${model}/aliases/production`, { method: 'PUT', body: JSON.stringify({ version: other }) });
    assert.equal(r.status, 401);
    await new Promise((r2) => setTimeout(r2, 800));
    await shot('model-after-rollback');
  });

  await step('runs: list, search, order, compare with curves', async () => {
    const all = await searchRuns({ order_by: ['attributes.start_time DESC'] });
    assert.ok(all.length >= 2, `runs: ${all.length}`);
    await open('runs', 'runs');
    assert.deepEqual((await cells('#runs', 'id')).map((c) => c.v), all.slice(0, 15).map((r) => r.run_id));
    assert.deepEqual((await cells('#runs', 'status')).map((c) => c.text), all.slice(0, 15).map((r) => r.status));
    // the in-page filter narrows what is shown
    await page.type('#run-filter', 'zzz-no-such-run');
    assert.equal(await page.$$eval('#runs tbody td[data-k="id"]', (t) => t.length), 0);
    await page.$eval('#run-filter', (i) => { i.value = ''; i.dispatchEvent(new Event('input')); });
    await shot('runs');
    // the registry's search: an MLflow filter and an order, kept in the URL
    // the kind of the retail runs (adult's one logistic run is of another kind)
    const kind = (all.find((r) => all.filter((x) => x.params.kind === r.params.kind).length >= 2) || all[0]).params.kind;
    const filter = `attributes.status = 'FINISHED' and params.kind = '${kind}'`;
    await page.type('#run-search', filter);
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => location.hash.startsWith('#/runs?filter=') && document.body.dataset.page === 'runs' && document.querySelector('#runs'));
    const want = await searchRuns({ filter, order_by: ['attributes.start_time DESC'] });
    assert.ok(want.length >= 2, `filtered runs: ${want.length}`);
    assert.deepEqual((await cells('#runs', 'id')).map((c) => c.v), want.slice(0, 15).map((r) => r.run_id));
    const order = 'attributes.start_time ASC';
    await page.select('#run-order', order);
    await page.waitForFunction((o) => new URLSearchParams(location.hash.split('?')[1]).get('order') === o && document.querySelector('#runs'), {}, order);
    await page.waitForFunction(() => document.body.dataset.page === 'runs' && document.querySelector('#runs'));
    const asc = await searchRuns({ filter, order_by: [order] });
    assert.deepEqual((await cells('#runs', 'id')).map((c) => c.v), asc.slice(0, 15).map((r) => r.run_id));
    // compare two: params side by side, loss curves overlaid
    await open('runs', 'runs');
    const boxes = await page.$$('#runs tbody input[type=checkbox]');
    // the newest retail run and the oldest shown (the first version, on the first data)
    const same = all.slice(0, 15).map((r, i) => [r, i]).filter(([r]) => r.params.kind === kind).map(([, i]) => i);
    const newest = same[0], last = same[same.length - 1];
    await boxes[newest].click();
    await boxes[last].click();
    await page.click('#compare-btn');
    await page.waitForFunction(() => location.hash.startsWith('#/runs/compare/') && document.body.dataset.page === 'runs' && document.querySelector('#params'));
    const pair = [all[newest], all[last]];
    assert.equal(await page.$$eval('#params thead th', (ths) => ths.length), 3); // name + two runs
    for (const [i, r] of pair.entries()) {
      const full = await get('registry', `/v1/runs/${r.run_id}`);
      const shown = await cells('#params', 'r' + i);
      const keys = await page.$$eval('#params td[data-k="k"]', (tds) => tds.map((t) => t.textContent));
      keys.forEach((k, j) => assert.equal(shown[j].text, full.params[k] == null ? '–' : full.params[k], `${r.run_id} param ${k}`));
      const mshown = await cells('#metrics', 'r' + i);
      const mkeys = await page.$$eval('#metrics td[data-k="k"]', (tds) => tds.map((t) => t.textContent));
      mkeys.forEach((k, j) => assert.equal(mshown[j].text, full.metrics[k] ? fmt(full.metrics[k].value) : '–', `${r.run_id} metric ${k}`));
    }
    const hist = await Promise.all(pair.map((r) => get('registry', `/v1/runs/${r.run_id}/metrics/loss?limit=10000`)));
    assert.ok(hist.every((x) => x.history.length > 1), 'each training run logged its loss per iteration');
    await charts('main');
    const loss = await page.evaluate(() => { const u = document.querySelector('.chart[data-metric="loss"]').__uplot; return { x: u.data[0], ys: u.data.slice(1), n: u.series.length }; });
    assert.equal(loss.n, 3); // x and one series per run
    hist.forEach((x, i) => {
      const pts = loss.x.map((step, j) => [step, loss.ys[i][j]]).filter(([, y]) => y != null);
      assert.deepEqual(pts, x.history.map((p) => [p.step, p.value]), `loss of ${pair[i].run_id}`);
    });
    await shot('runs-compare');
  });

  await step('dataset: versions, cleaning report, lineage', async () => {
    const ds = versions[0].dataset.name;
    const dvs = (await get('registry', `/v1/datasets/${ds}/versions`)).versions;
    await open(`datasets/${ds}`, 'dataset');
    assert.deepEqual((await cells('#dataset-versions', 'rows')).map((c) => c.v), dvs.map((v) => String(v.manifest.rows)));
    const steps = dvs[0].manifest.report.steps;
    assert.deepEqual((await cells('#steps', 'dropped')).map((c) => c.v), steps.map((s) => String(s.dropped)));
    assert.deepEqual((await cells('#steps', 'dropped')).map((c) => c.text), steps.map((s) => fmt(s.dropped)));
    const ch = await charts('#cleaning');
    assert.deepEqual(ch.map((c) => c.canvas && c.drawnSeries), [1]);
    const lin = await cells('#lineage', 'version');
    assert.deepEqual(lin.map((c) => c.v).sort(), versions.map((v) => `${model} v${v.version}`).sort());
    await shot('dataset');
    await open('datasets', 'dataset');
    await shot('datasets');
  });

  await step('jobs: finished, job detail', async () => {
    const jobs = (await get('train', '/v1/jobs?limit=500')).jobs;
    await open('jobs', 'jobs');
    const done = jobs.filter((j) => ['succeeded', 'failed', 'cancelled'].includes(j.state));
    assert.deepEqual((await cells('#finished-jobs', 'version')).map((c) => c.v), done.map((j) => String(j.result.version)));
    await shot('jobs');
    await page.click('#finished-jobs td[data-k="id"] a');
    await page.waitForFunction(() => location.hash.startsWith('#/jobs/') && document.body.dataset.page === 'jobs' && document.querySelector('#job-outcome'));
    const id = decodeURIComponent(await page.evaluate(() => location.hash.slice(7)));
    const job = jobs.find((j) => j.id === id);
    const txt = await page.$eval('#job-outcome', (e) => e.textContent);
    assert.ok(txt.includes(job.result.outcome) && txt.includes(fmt(job.result.metrics['map@10'])), txt);
    await shot('job');
  });

  await step('monitoring: drift share over time, feature statistic, latest report', async () => {
    const reports = (await get('monitor', `/v1/monitors/${model}/report?history=1000`)).reports;
    await open(`monitoring/${model}`, 'monitor');
    const ch = await charts('main');
    assert.ok(ch.length >= 3, JSON.stringify(ch));
    for (const c of ch) assert.ok(c.canvas && c.drawnSeries >= 1, JSON.stringify(c));
    const share = await page.evaluate(() => { const u = document.querySelector('#share-chart').__uplot; return { n: u.data[1].length, y: u.data[1], s: u.series.length }; });
    assert.equal(share.n, reports.length);
    assert.deepEqual(share.y, reports.slice().reverse().map((r) => r.share_drifted));
    assert.equal(share.s, 3); // x, share, threshold
    const latest = reports[0];
    assert.deepEqual((await cells('#latest-report', 'statistic')).map((c) => c.v), latest.features.map((f) => String(f.statistic)));
    const mon = (await get('monitor', '/v1/monitors')).monitors.find((m) => m.model === model);
    assert.equal(await page.$eval('#hit-rate', (e) => e.textContent), fmt(mon.hit_rate.rate));
    await page.select('#feature-sel', latest.features[1].column);
    await page.waitForFunction((f) => document.querySelector('#feature-chart .u-title') && document.querySelector('#feature-chart .u-title').textContent.startsWith(f), {}, latest.features[1].column);

    // the latest report's reference vs current distribution of a chosen feature
    const rep = await get('monitor', `/v1/monitors/${model}/report`);
    assert.equal(rep.id, latest.id);
    const names = Object.keys(rep.distributions || {});
    assert.ok(names.length >= 2, `distributions: ${names}`);
    const first = await page.$eval('#dist-sel', (e) => e.value);
    assert.ok(names.includes(first));
    await distShown(rep, first);
    // the selector works from the keyboard: focus it, arrow to the next feature
    await page.focus('#dist-sel');
    const idx = names.indexOf(first);
    await page.keyboard.press(idx < names.length - 1 ? 'ArrowDown' : 'ArrowUp');
    const next = names[idx < names.length - 1 ? idx + 1 : idx - 1];
    assert.equal(await page.$eval('#dist-sel', (e) => e.value), next);
    await distShown(rep, next);
    await page.select('#dist-sel', first);
    await distShown(rep, first);
    await shot('monitoring');
    await page.evaluate(() => document.querySelector('#distribution').scrollIntoView());
    const box = await page.$('#distribution');
    await box.screenshot({ path: path.join(SHOTS, 'monitoring-distribution.png') });
  });

  await step('monitoring: a classifier\'s quality estimated before labels (CBPE), then realised', async () => {
    const q = await get('monitor', '/v1/monitors/adult/quality?history=1000');
    const est = q.estimates; // newest first
    assert.ok(est.length >= 3, `estimates: ${est.length}`);
    assert.ok(est.filter((e) => e.realised_ready).length >= 2, 'two estimate windows have their labels');
    assert.ok(!est[0].realised_ready, 'the newest window waits for its labels');
    await open('monitoring/adult', 'monitor');
    await page.waitForSelector('#quality');
    const ch = await charts('#quality');
    for (const c of ch) assert.ok(c.canvas && c.drawnSeries >= 2, JSON.stringify(c));
    const old = est.slice().reverse();
    for (const m of ['accuracy', 'roc_auc']) {
      const u = await page.evaluate((k) => { const p = document.querySelector(`#quality .chart[data-metric="${k}"]`).__uplot; return { ys: p.data.slice(1), labels: p.series.slice(1).map((x) => x.label) }; }, m);
      const ei = u.labels.indexOf(`${m} estimated (CBPE)`), ri = u.labels.indexOf(`${m} realised (labels)`);
      assert.ok(ei >= 0 && ri >= 0, `${m}: ${u.labels}`);
      assert.deepEqual(u.ys[ei].filter((y) => y != null), old.map((e) => e.estimated[m]), `${m} estimated`);
      assert.deepEqual(u.ys[ri].filter((y) => y != null), old.filter((e) => e.realised_ready).map((e) => e.realised[m]), `${m} realised`);
      assert.ok(u.labels.includes('reference (holdout)'), `${m}: the holdout figure as a line`);
    }
    const str = (v) => (v == null ? undefined : String(v));
    assert.deepEqual((await cells('#estimates', 'acc')).map((c) => c.v), est.map((e) => str(e.estimated.accuracy)));
    assert.deepEqual((await cells('#estimates', 'auc')).map((c) => c.text), est.map((e) => fmt(e.estimated.roc_auc)));
    assert.deepEqual((await cells('#estimates', 'auc_real')).map((c) => c.v), est.map((e) => (e.realised_ready ? str(e.realised.roc_auc) : undefined)));
    assert.deepEqual((await cells('#estimates', 'acc_real')).map((c) => c.text), est.map((e) => (e.realised_ready ? fmt(e.realised.accuracy) : '–')));
    await shot('monitoring-adult');
    await page.evaluate(() => document.querySelector('#quality').scrollIntoView());
    await (await page.$('#quality')).screenshot({ path: path.join(SHOTS, 'monitoring-cbpe.png') });
    // its drift window, closed on demand: a categorical feature's distribution
    const rep = await get('monitor', '/v1/monitors/adult/report');
    const cat = Object.keys(rep.distributions).find((f) => rep.distributions[f].type === 'categorical' && rep.distributions[f].categories.length >= 4);
    assert.ok(cat, `a categorical distribution: ${Object.keys(rep.distributions)}`);
    await page.select('#dist-sel', cat);
    await distShown(rep, cat);
    await page.evaluate(() => document.querySelector('#distribution').scrollIntoView());
    await (await page.$('#distribution')).screenshot({ path: path.join(SHOTS, 'monitoring-distribution-categorical.png') });
  });

  await step('monitoring: live quality over time with the reference, shadow agreement', async () => {
    const q = await get('monitor', '/v1/monitors/demand/quality?history=1000');
    assert.ok(q.reports.length >= 3, `quality reports: ${q.reports.length}`);
    await open('monitoring/demand', 'monitor');
    await page.waitForSelector('#quality');
    await charts('#quality');
    const live = q.reports.slice().reverse();
    for (const m of ['rmse', 'mae', 'r2']) {
      const u = await page.evaluate((k) => { const p = document.querySelector(`#quality .chart[data-metric="${k}"]`).__uplot; return { ys: p.data.slice(1), labels: p.series.slice(1).map((x) => x.label) }; }, m);
      assert.deepEqual(u.labels, [`${m} live`, 'reference (holdout)'], m);
      assert.deepEqual(u.ys[0], live.map((r) => r.metrics[m].live), `${m} live`);
      assert.ok(u.ys[1].every((y) => y === live[live.length - 1].metrics[m].reference), `${m} reference line`);
    }
    const latest = q.reports[0];
    const ks = (await cells('#quality-latest', 'k')).map((c) => c.v);
    const str = (v) => (v == null ? undefined : String(v));
    assert.deepEqual((await cells('#quality-latest', 'live')).map((c) => c.v), ks.map((k) => str(latest.metrics[k].live)));
    assert.deepEqual((await cells('#quality-latest', 'reference')).map((c) => c.v), ks.map((k) => str(latest.metrics[k].reference)));
    assert.deepEqual((await cells('#quality-latest', 'live')).map((c) => c.text), ks.map((k) => fmt(latest.metrics[k].live)));
    const ag = (await get('monitor', '/v1/monitors/demand/agreement')).pairs;
    assert.ok(ag.length >= 1, 'the shadow version answered the same requests');
    assert.deepEqual((await cells('#agreement', 'requests')).map((c) => c.v), ag.map((p) => String(p.requests)));
    assert.deepEqual((await cells('#agreement', 'mean_abs_diff')).map((c) => c.text), ag.map((p) => fmt(p.mean_abs_diff)));
    assert.deepEqual((await cells('#agreement', 'agreement')).map((c) => c.text), ag.map((p) => fmt(p.agreement)));
    await page.evaluate(() => document.querySelector('#quality').scrollIntoView());
    await shot('monitoring-quality');
  });

  await step('alerts: resolved with evidence and actions', async () => {
    const resolved = (await get('alert', '/v1/alerts?state=resolved')).alerts;
    await open('alerts', 'alerts');
    assert.deepEqual((await cells('#alerts-resolved', 'rule')).map((c) => c.v), resolved.map((a) => a.rule));
    await shot('alerts');
    await page.click('#alerts-resolved td[data-k="rule"] a');
    await page.waitForFunction(() => document.body.dataset.page === 'alerts' && document.querySelector('#evidence'));
    const a = resolved[0];
    assert.deepEqual((await cells('#evidence', 'statistic')).map((c) => c.v), a.evidence.features.map((f) => String(f.statistic)));
    const job = a.actions.find((x) => x.type === 'retrain').detail.job_id;
    assert.equal(await page.$eval('#actions a', (e) => e.getAttribute('href')), `#/jobs/${job}`);
    await shot('alert');
  });

  await step('retrain from the model page: the job runs live and finishes', async () => {
    const before = (await get('train', '/v1/jobs?limit=500')).jobs.length;
    await open(`models/${model}`, 'model');
    await page.click('#retrain-btn'); // the token is already set for this tab
    await page.waitForFunction(() => /^#\/jobs\/[^/]+$/.test(location.hash) && document.body.dataset.page === 'jobs', { timeout: 30000 });
    const id = decodeURIComponent(await page.evaluate(() => location.hash.slice(7)));
    const job = await get('train', `/v1/jobs/${id}`);
    assert.equal(job.model, model);
    assert.equal(job.request.reason, 'retrain from the console');
    assert.equal((await get('train', '/v1/jobs?limit=500')).jobs.length, before + 1);
    // the page follows it without a reload: some state before the end, then the outcome
    const seen = new Set();
    const deadline = Date.now() + 300000;
    let shotRunning = false;
    while (Date.now() < deadline) {
      const st = await page.evaluate(() => (document.querySelector('main .badge') || {}).textContent);
      if (st) seen.add(st);
      if (st === 'running' && !shotRunning) { await shot('job-running'); shotRunning = true; }
      if (['succeeded', 'failed', 'cancelled'].includes(st)) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    const done = await get('train', `/v1/jobs/${id}`);
    assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
    assert.ok([...seen].some((x) => !['succeeded', 'failed', 'cancelled'].includes(x)), `states seen: ${[...seen]}`);
    await page.waitForSelector('#job-outcome');
    const txt = await page.$eval('#job-outcome', (e) => e.textContent);
    assert.ok(txt.includes(done.result.outcome), txt);
    await shot('job-retrained');
  });

  await step('keyboard: the navigation is reachable by Tab and every link works', async () => {
    await page.goto('about:blank');
    await open('', 'overview'); // a fresh load: focus starts at the top
    const order = [];
    for (let i = 0; i < 8 && order[order.length - 1] !== '#/models'; i++) {
      await page.keyboard.press('Tab');
      order.push(await page.evaluate(() => document.activeElement.getAttribute('href')));
    }
    assert.deepEqual(order, ['#main', '#/', '#/', '#/models']); // skip link, brand, Overview, Models
    const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    assert.equal(outline, 'solid', 'the focused link shows a focus ring');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.body.dataset.page === 'model');
    await open('no/such/page', 'notfound');
  });

  await step('no console errors, no failed requests', async () => {
    if (netChanges) console.log(`note: ${netChanges} requests aborted by host network changes (ERR_NETWORK_CHANGED)`);
    assert.deepEqual(problems, []);
  });
  await browser.close();
}

main().catch((e) => { console.log(`FAIL setup: ${e.stack || e}`); results.push(['setup', 'FAIL']); }).finally(() => {
  if (world && !world.keep) {
    try {
      execFileSync(path.join(BIN, 'quern'), ['down'], { env: { ...process.env, QUERN_HOME: world.home, QUERN_PORT_BASE: String(world.base) }, stdio: 'ignore', timeout: 60000 });
    } catch (e) { console.log(`quern down: ${e.message}`); }
  }
  const failed = results.filter((r) => r[1] !== 'ok').length;
  console.log(`${results.length - failed} passed, ${failed} failed; screenshots in ${SHOTS}`);
  process.exit(failed || !results.length ? 1 : 0);
});
