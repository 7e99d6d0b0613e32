// app.js - the console's shell: hash routes (every page has a URL, deep
// links work), the navigation state and the token button. Each page is a
// module exporting render(main, ...params) that fills <main> and may return
// a cleanup function (timers of live pages).
import { h, fail, askToken, getToken } from './ui.js';

const routes = [
  [/^$/, 'overview.js', 'Overview'],
  [/^models$/, 'model.js', 'Models'],
  [/^models\/([^/]+)$/, 'model.js', 'Model'],
  [/^runs(?:\?.*)?$/, 'runs.js', 'Runs'],
  [/^runs\/compare\/([^/]+)$/, 'runs.js', 'Compare runs'],
  [/^runs\/([^/]+)$/, 'runs.js', 'Run'],
  [/^datasets$/, 'dataset.js', 'Datasets'],
  [/^datasets\/([^/]+)(?:\/(\d+))?$/, 'dataset.js', 'Dataset'],
  [/^jobs$/, 'jobs.js', 'Jobs'],
  [/^jobs\/([^/]+)$/, 'jobs.js', 'Job'],
  [/^monitoring$/, 'monitor.js', 'Monitoring'],
  [/^monitoring\/([^/]+)$/, 'monitor.js', 'Monitoring'],
  [/^alerts$/, 'alerts.js', 'Alerts'],
  [/^alerts\/([^/]+)$/, 'alerts.js', 'Alert'],
];

const main = document.getElementById('main');
let cleanup = null;
let seq = 0;

async function route() {
  const path = decodeURIComponent(location.hash.replace(/^#\/?/, '')).replace(/\/$/, '');
  if (cleanup) { cleanup(); cleanup = null; }
  const mine = ++seq;
  for (const a of document.querySelectorAll('.top nav a')) {
    const target = a.getAttribute('href').slice(2);
    const on = target ? path === target || path.startsWith(target + '/') || path.startsWith(target + '?') || (target === 'models' && path.startsWith('models')) : path === '';
    if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const hit = routes.map(([re, mod, title]) => [path.match(re), mod, title]).find(([m]) => m);
  document.body.dataset.page = 'loading';
  if (!hit) {
    main.replaceChildren(h('h1', {}, 'Not found'), fail(`No page at #/${path}.`), h('p', {}, h('a', { href: '#/' }, 'Overview')));
    document.body.dataset.page = 'notfound';
    return;
  }
  const [m, mod, title] = hit;
  document.title = `${title} · Quern`;
  try {
    const page = await import(`./${mod}`);
    if (mine !== seq) return;
    // Each visit renders into its own view: a page still loading when the
    // user has moved on writes into a node no longer shown, never over the
    // page that replaced it.
    const view = h('div', { class: 'view' }, h('p', { class: 'muted' }, 'Loading…'));
    main.replaceChildren(view);
    const out = await page.render(view, { path, args: m.slice(1).filter((x) => x !== undefined), isCurrent: () => mine === seq });
    if (mine !== seq) { if (typeof out === 'function') out(); return; }
    cleanup = typeof out === 'function' ? out : null;
  } catch (e) {
    console.warn(e);
    if (mine === seq) main.replaceChildren(h('h1', {}, title), fail(`This page failed: ${e.message}`));
  }
  if (mine === seq) document.body.dataset.page = mod.replace('.js', '');
}

function tokenLabel() {
  document.getElementById('token-btn').textContent = getToken() ? 'Token set' : 'Sign in';
}
document.getElementById('token-btn').addEventListener('click', askToken);
document.addEventListener('quern-token', tokenLabel);
window.addEventListener('hashchange', () => { route(); main.focus({ preventScroll: true }); });
tokenLabel();
route();
