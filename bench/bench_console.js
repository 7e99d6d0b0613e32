#!/usr/bin/env node
// bench_console.js URL - first contentful paint and time to content of every
// console page, median of 5 fresh loads each, and the assets' gzip bytes.
// Prints JSON for bench_console.py. Needs /usr/bin/chromium.
'use strict';
const path = require('node:path');
const puppeteer = require(path.join(__dirname, '..', 'node_modules', 'puppeteer-core'));

const base = process.argv[2];
const RUNS = 5;
const PAGES = { overview: ['', 'overview'], models: ['models', 'model'], 'model (all versions)': ['models/bench', 'model'],
  runs: ['runs', 'runs'], datasets: ['datasets', 'dataset'], jobs: ['jobs', 'jobs'],
  'monitoring (all reports)': ['monitoring/bench', 'monitor'], alerts: ['alerts', 'alerts'] };

(async () => {
  const browser = await puppeteer.launch({ executablePath: process.env.QUERN_CHROMIUM || '/usr/bin/chromium', headless: true,
    args: [...(process.getuid() === 0 ? ['--no-sandbox'] : []), '--disable-gpu', '--disable-dev-shm-usage'] });
  const out = { runs: RUNS, pages: {} };
  for (const [name, [hash, id]] of Object.entries(PAGES)) {
    const fcp = [], content = [];
    for (let i = 0; i < RUNS; i++) {
      const page = await browser.newPage();
      await page.setViewport({ width: 1280, height: 900 });
      await page.evaluateOnNewDocument(() => {
        new MutationObserver(() => {
          if (document.body && document.body.dataset.page && !['loading'].includes(document.body.dataset.page) && !window.__content)
            window.__content = performance.now();
        }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-page'] });
      });
      await page.goto(`${base}/#/${hash}`, { waitUntil: 'load' });
      await page.waitForFunction((p) => document.body.dataset.page === p && window.__content, { timeout: 60000 }, id);
      const t = await page.evaluate(() => ({ fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime, content: window.__content }));
      fcp.push(t.fcp || 0);
      content.push(t.content);
      await page.close();
    }
    const med = (a) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)];
    out.pages[name] = { fcp: med(fcp), content: med(content) };
  }
  let bytes = 0, count = 0;
  const html = await (await fetch(base + '/', { headers: { 'Accept-Encoding': 'gzip' } })).text();
  const names = ['index.html', 'favicon.svg', 'style.css', 'app.js', 'ui.js', 'overview.js', 'model.js', 'runs.js', 'dataset.js', 'jobs.js',
    'monitor.js', 'alerts.js', 'uPlot.iife.min.js', 'uPlot.min.css'];
  const http = require('node:http');
  for (const n of names) {
    const p = n === 'index.html' ? '/' : `/assets/${n}`;
    bytes += await new Promise((resolve, reject) => http.get(base + p, { headers: { 'Accept-Encoding': 'gzip' } }, (r) => {
      let len = 0;
      r.on('data', (c) => { len += c.length; });
      r.on('end', () => resolve(len));
    }).on('error', reject));
    count++;
  }
  out.asset_bytes = bytes;
  out.asset_count = count;
  if (!html) throw new Error('no index');
  await browser.close();
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
