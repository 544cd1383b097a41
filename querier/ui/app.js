// Strata's web UI: one ES module, no build step. Pages are chosen by the URL's hash
// (#/query?expr=…, #/stores, #/blocks, #/status) and call the JSON API of the server
// that served them. uPlot (a global from uPlot.iife.min.js) draws the graphs.
//
// Every value from the server goes into the page through textContent (el() below),
// never as HTML.

const main = document.getElementById('main');

// The tenant sent as X-Scope-OrgID on every API call (empty: the server's default). Kept
// in localStorage; a link may set it with `tenant=` in the hash's parameters.
const TENANT_KEY = 'strata.tenant';
let tenant = '';
try { tenant = localStorage.getItem(TENANT_KEY) || ''; } catch { /* private mode */ }

function setTenant(t) {
  tenant = t.trim();
  try { localStorage.setItem(TENANT_KEY, tenant); } catch { /* private mode */ }
  const box = document.getElementById('tenant');
  if (box && box.value !== tenant) box.value = tenant;
}

// ---------------------------------------------------------------------------------
// Helpers

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) {
    if (k === undefined || k === null || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

async function api(path, params) {
  const url = params ? `${path}?${new URLSearchParams(params)}` : path;
  const headers = { Accept: 'application/json' };
  if (tenant) headers['X-Scope-OrgID'] = tenant;
  const r = await fetch(url, { headers });
  let body;
  try { body = await r.json(); } catch { throw new Error(`${url}: HTTP ${r.status}`); }
  if (body.status === 'error') throw new Error(`${body.errorType}: ${body.error}`);
  if (!r.ok && body.status !== 'success') throw new Error(`${url}: HTTP ${r.status}`);
  return body;
}

function fmtTime(ms) {
  if (ms === undefined || ms === null) return '';
  // Prometheus's ±MinTime/MaxTime mean "no bound".
  if (ms <= -9e15) return '-∞';
  if (ms >= 9e15) return '+∞';
  return new Date(ms).toISOString().replace('.000Z', 'Z');
}

function fmtDur(ms) {
  if (!isFinite(ms)) return '';
  const units = [['d', 86400000], ['h', 3600000], ['m', 60000], ['s', 1000]];
  let out = '';
  for (const [u, n] of units) {
    if (ms >= n) { out += Math.floor(ms / n) + u; ms %= n; }
  }
  return out || `${ms}ms`;
}

// Prometheus durations: 1h, 30m, 1d2h, 15s, 500ms.
function parseDur(s) {
  const re = /(\d+(?:\.\d+)?)(ms|y|w|d|h|m|s)/g;
  const mult = { ms: 1, s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7, w: 6.048e8, y: 3.1536e10 };
  let total = 0, seen = '';
  for (const m of s.matchAll(re)) { total += parseFloat(m[1]) * mult[m[2]]; seen += m[0]; }
  return seen === s && total > 0 ? total : NaN;
}

function labelsText(metric) {
  const name = metric.__name__ || '';
  const rest = Object.entries(metric).filter(([k]) => k !== '__name__')
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  return rest.length ? `${name}{${rest.join(', ')}}` : (name || '{}');
}

function labelChips(obj) {
  return el('span', { class: 'labels' },
    Object.entries(obj || {}).map(([k, v]) => el('span', {}, `${k}="${v}"`)));
}

function table(headers, rows) {
  return el('table', {}, el('thead', {}, el('tr', {}, headers.map(h => el('th', {}, h)))),
    el('tbody', {}, rows.map(r => el('tr', {}, r.map(c =>
      c instanceof Node && c.tagName === 'TD' ? c : el('td', {}, c))))));
}

function errorBox(e) { return el('div', { class: 'error' }, String(e.message || e)); }

// ---------------------------------------------------------------------------------
// Router

function route() {
  let hash = location.hash.replace(/^#\/?/, '');
  if (!hash) {
    // Thanos's and Prometheus's page paths land on the matching page.
    const p = location.pathname.replace(/^\/+/, '');
    hash = { graph: 'query', stores: 'stores', blocks: 'blocks' }[p] || 'query';
  }
  const [page, qs] = hash.split('?');
  const params = new URLSearchParams(qs || '');
  if (params.has('tenant')) setTenant(params.get('tenant'));
  for (const a of document.querySelectorAll('nav a')) {
    a.classList.toggle('active', a.dataset.page === page);
  }
  main.replaceChildren();
  main.dataset.page = page;
  const pages = { query: queryPage, stores: storesPage, blocks: blocksPage, status: statusPage };
  (pages[page] || queryPage)(params);
}

window.addEventListener('hashchange', () => { if (!suppressHash) route(); });
let suppressHash = false;

function setHash(page, params) {
  const h = `#/${page}?${params}`;
  if (location.hash === h) return;
  suppressHash = true;
  location.hash = h;
  setTimeout(() => { suppressHash = false; }, 0);
}

// ---------------------------------------------------------------------------------
// Query page

const HISTORY_KEY = 'strata.queryHistory';

function queryHistory() {
  try { return JSON.parse(localStorage.getItem(HISTORY_KEY) || '[]'); } catch { return []; }
}

function remember(expr) {
  const h = [expr, ...queryHistory().filter(x => x !== expr)].slice(0, 50);
  try { localStorage.setItem(HISTORY_KEY, JSON.stringify(h)); } catch { /* private mode */ }
}

let plot = null;

function queryPage(params) {
  const st = {
    expr: params.get('expr') || '',
    tab: params.get('tab') || 'graph',
    range: params.get('range') || '1h',
    end: params.get('end') || '',
    step: params.get('step') || '',
    stacked: params.get('stacked') === '1',
    dedup: params.get('dedup') !== '0',
    msr: params.get('max_source_resolution') || 'auto',
  };
  const expr = el('input', { id: 'expr', type: 'text', list: 'history', value: st.expr,
    placeholder: 'PromQL expression, e.g. rate(http_requests_total[5m])', autocomplete: 'off' });
  const hist = el('datalist', { id: 'history' }, queryHistory().map(h => el('option', { value: h })));
  const rangeIn = el('input', { type: 'text', id: 'range', size: 6, value: st.range, title: 'time range, e.g. 1h, 30m, 2d' });
  const endIn = el('input', { type: 'datetime-local', id: 'end', step: 1, title: 'end (empty: now, UTC)' });
  if (st.end) endIn.value = new Date(Number(st.end) * 1000).toISOString().slice(0, 19);
  const stepIn = el('input', { type: 'text', id: 'step', size: 6, value: st.step, placeholder: 'auto', title: 'resolution step, e.g. 15s' });
  const stackedIn = el('input', { type: 'checkbox', id: 'stacked', checked: st.stacked });
  const dedupIn = el('input', { type: 'checkbox', id: 'dedup', checked: st.dedup });
  const msrIn = el('select', { id: 'msr', title: 'max_source_resolution' },
    ['auto', '0s', '5m', '1h'].map(v => el('option', { value: v, selected: v === st.msr }, v === '0s' ? 'raw only' : v)));
  const out = el('div', { id: 'result' });
  const tabs = el('div', { class: 'bar tabs' });
  for (const t of ['graph', 'table']) {
    tabs.append(el('button', { class: t === st.tab ? 'active' : '', 'data-tab': t,
      onclick: () => { st.tab = t; run(); } }, t === 'graph' ? 'Graph' : 'Table'));
  }
  const shift = (sign) => {
    const r = parseDur(rangeIn.value) || 3600000;
    const end = endIn.value ? Date.parse(endIn.value + 'Z') : Date.now();
    endIn.value = new Date(end + sign * r / 2).toISOString().slice(0, 19);
    run();
  };
  main.append(
    el('div', { class: 'bar' }, expr, hist),
    el('div', { class: 'bar' },
      el('button', { id: 'execute', onclick: () => run() }, 'Execute'),
      el('label', { for: 'range' }, 'range'), rangeIn,
      el('button', { class: 'plain', onclick: () => shift(-1), title: 'earlier' }, '◀'),
      el('label', { for: 'end' }, 'end (UTC)'), endIn,
      el('button', { class: 'plain', onclick: () => shift(1), title: 'later' }, '▶'),
      el('button', { class: 'plain', onclick: () => { endIn.value = ''; run(); } }, 'now'),
      el('label', { for: 'step' }, 'step'), stepIn,
      el('label', {}, stackedIn, ' stacked'),
      el('label', { title: 'dedup: merge HA replicas (--query.replica-label)' }, dedupIn, ' dedup'),
      el('label', { for: 'msr' }, 'max source resolution'), msrIn),
    tabs, out);
  expr.addEventListener('keydown', e => { if (e.key === 'Enter') { e.preventDefault(); run(); } });
  for (const i of [stackedIn, dedupIn, msrIn]) i.addEventListener('change', () => run());
  for (const i of [rangeIn, stepIn, endIn]) i.addEventListener('change', () => run());

  async function run() {
    st.expr = expr.value.trim();
    st.range = rangeIn.value.trim() || '1h';
    st.step = stepIn.value.trim();
    st.end = endIn.value ? String(Math.floor(Date.parse(endIn.value + 'Z') / 1000)) : '';
    st.stacked = stackedIn.checked;
    st.dedup = dedupIn.checked;
    st.msr = msrIn.value;
    for (const b of tabs.children) b.classList.toggle('active', b.dataset.tab === st.tab);
    const hp = new URLSearchParams({ expr: st.expr, tab: st.tab, range: st.range });
    if (st.end) hp.set('end', st.end);
    if (st.step) hp.set('step', st.step);
    if (st.stacked) hp.set('stacked', '1');
    if (!st.dedup) hp.set('dedup', '0');
    if (st.msr !== 'auto') hp.set('max_source_resolution', st.msr);
    if (tenant) hp.set('tenant', tenant);
    setHash('query', hp);
    if (plot) { plot.destroy(); plot = null; }
    out.replaceChildren();
    if (!st.expr) return;
    remember(st.expr);
    hist.replaceChildren(...queryHistory().map(h => el('option', { value: h })));
    const p = { query: st.expr, stats: 'all', dedup: String(st.dedup) };
    if (st.msr !== 'auto') p.max_source_resolution = st.msr;
    const endMs = st.end ? Number(st.end) * 1000 : Date.now();
    out.append(el('p', { class: 'muted' }, 'Loading…'));
    const t0 = performance.now();
    try {
      let body;
      if (st.tab === 'table') {
        body = await api('/api/v1/query', { ...p, time: String(endMs / 1000) });
      } else {
        const rangeMs = parseDur(st.range);
        if (!rangeMs) throw new Error(`invalid range ${JSON.stringify(st.range)}: use e.g. 1h or 30m`);
        let stepS = st.step ? parseDur(st.step) / 1000 : Math.max(1, Math.round(rangeMs / 1000 / 250));
        if (!stepS) throw new Error(`invalid step ${JSON.stringify(st.step)}: use e.g. 15s`);
        body = await api('/api/v1/query_range', { ...p, start: String((endMs - rangeMs) / 1000),
          end: String(endMs / 1000), step: String(stepS) });
        body.stepS = stepS; body.startMs = endMs - rangeMs; body.endMs = endMs;
      }
      const took = performance.now() - t0;
      out.replaceChildren();
      for (const w of body.warnings || []) out.append(el('div', { class: 'warn warning' }, '⚠ ' + w));
      for (const w of body.infos || []) out.append(el('div', { class: 'warn info' }, 'ℹ ' + w));
      if (st.tab === 'table') out.append(renderTable(body.data));
      else renderGraph(out, body, st.stacked);
      out.append(renderStats(body.data.stats, took));
    } catch (e) {
      out.replaceChildren(errorBox(e));
    }
  }
  if (st.expr) run();
}

function renderTable(data) {
  const r = data.result;
  const box = el('div', { id: 'table' });
  switch (data.resultType) {
    case 'scalar': case 'string':
      box.append(table(['Value'], [[el('td', { class: 'num' }, r[1])]]));
      break;
    case 'vector':
      box.append(table(['Series', 'Value'],
        r.map(s => [el('td', { class: 'mono' }, labelsText(s.metric)),
          el('td', { class: 'num' }, s.value ? s.value[1] : `histogram (count ${s.histogram[1].count})`)])));
      break;
    case 'matrix':
      box.append(table(['Series', 'Values'],
        r.map(s => [el('td', { class: 'mono' }, labelsText(s.metric)),
          el('td', { class: 'mono' }, (s.values || []).map(([t, v]) => `${v} @${t}`).join('\n'))])));
      break;
  }
  box.append(el('p', { class: 'muted', id: 'result-count' }, `${Array.isArray(r) && data.resultType !== 'scalar' && data.resultType !== 'string' ? r.length : 1} result(s)`));
  return box;
}

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2',
  '#7f7f7f', '#bcbd22', '#17becf'];

function renderGraph(out, body, stacked) {
  const series = body.data.result || [];
  const box = el('div', { id: 'graph', 'data-drawn-series': '0' });
  out.append(box);
  if (body.data.resultType !== 'matrix') {
    box.append(el('p', {}, `A range query answers a matrix, not ${body.data.resultType}.`));
    return;
  }
  if (!series.length) { box.append(el('p', { class: 'muted' }, 'Empty query result')); return; }
  // One x value per step; a series without a point there has a gap.
  const xs = [];
  const stepMs = body.stepS * 1000;
  const start = Math.ceil(body.startMs / stepMs) * stepMs;
  const tset = new Set();
  for (const s of series) for (const [t] of s.values || []) tset.add(t);
  if (!tset.size) for (let t = start; t <= body.endMs; t += stepMs) tset.add(t / 1000);
  xs.push(...[...tset].sort((a, b) => a - b));
  const idx = new Map(xs.map((t, i) => [t, i]));
  const raw = series.map(s => {
    const ys = new Array(xs.length).fill(null);
    for (const [t, v] of s.values || []) ys[idx.get(t)] = Number(v);
    return ys;
  });
  let ys = raw;
  if (stacked) {
    const acc = new Array(xs.length).fill(0);
    ys = raw.map(r => r.map((v, i) => (v === null ? null : (acc[i] += v))));
  }
  const names = series.map(s => labelsText(s.metric));
  const opts = {
    width: Math.max(400, main.clientWidth - 30),
    height: 380,
    scales: { x: { time: true } },
    legend: { live: true },
    cursor: { focus: { prox: 16 } },
    series: [{ label: 'time' }, ...names.map((n, i) => ({
      label: n,
      stroke: PALETTE[i % PALETTE.length],
      fill: stacked ? PALETTE[i % PALETTE.length] + '55' : undefined,
      width: 1.5,
      spanGaps: false,
      points: { show: false },
      // Hover shows the series' own value, also when stacked.
      value: (u, v, si, di) => (di === null || di === undefined || raw[si - 1][di] === null ? '—' : raw[si - 1][di]),
    }))],
    hooks: {
      draw: [u => {
        // Recorded for people and for the browser test: what uPlot drew.
        const shown = u.series.slice(1).filter(s => s.show).map(s => s.label);
        box.dataset.drawnSeries = String(shown.length);
        box.dataset.points = String(xs.length);
        let list = box.querySelector('#drawn-series');
        if (!list) { list = el('ul', { id: 'drawn-series', hidden: true }); box.append(list); }
        list.replaceChildren(...shown.map(n => el('li', {}, n)));
      }],
    },
  };
  // Stacked: each series fills down to the one below it, not to zero.
  if (stacked) opts.bands = names.slice(1).map((_, i) => ({ series: [i + 2, i + 1] }));
  plot = new uPlot(opts, [xs, ...ys], box);
}

function renderStats(stats, tookMs) {
  const rows = [['Round trip (browser)', `${tookMs.toFixed(0)} ms`]];
  const tables = [];
  const walk = (prefix, v) => {
    if (v === null || v === undefined) return;
    // A list of objects (Strata's per-source cost) reads best as a table.
    if (Array.isArray(v) && v.length && v.every(x => x && typeof x === 'object' && !Array.isArray(x))) {
      const cols = [...new Set(v.flatMap(Object.keys))];
      tables.push(el('div', {}, el('h3', {}, prefix), table(cols, v.map(x => cols.map(c =>
        el('td', { class: typeof x[c] === 'number' ? 'num' : 'mono' }, x[c] ?? ''))))));
      return;
    }
    if (Array.isArray(v)) { if (v.length <= 4) rows.push([prefix, JSON.stringify(v)]); return; }
    if (typeof v === 'object') { for (const [k, x] of Object.entries(v)) walk(prefix ? `${prefix}.${k}` : k, x); return; }
    rows.push([prefix, typeof v === 'number' && prefix.endsWith('Time') ? `${(v * 1000).toFixed(2)} ms` : String(v)]);
  };
  walk('', stats);
  return el('details', { id: 'stats', open: true }, el('summary', {}, 'Query cost (stats=all)'),
    el('div', { class: 'stats' }, rows.map(([k, v]) => el('div', {}, el('span', { class: 'muted' }, k + ': '), el('b', {}, v)))),
    tables);
}

// ---------------------------------------------------------------------------------
// Stores page

async function storesPage() {
  main.append(el('h2', {}, 'Stores'),
    el('p', { class: 'muted' }, 'Every Store API endpoint, ring member and bucket this querier reads, asked now (GET /api/v1/stores).'));
  try {
    const { data } = await api('/api/v1/stores');
    const groups = Object.entries(data);
    if (!groups.length) main.append(el('p', {}, 'This querier reads no store.'));
    for (const [kind, list] of groups) {
      main.append(el('h2', {}, `${kind} (${list.length})`), table(
        ['Endpoint', 'Health', 'Labels', 'Min time', 'Max time', 'Last check', 'Last error'],
        list.map(s => [
          el('td', { class: 'mono store-name' }, s.name, s.ring ? el('span', { class: 'muted' }, ' (ring)') : null),
          el('td', { class: s.lastError ? 'down' : 'up' }, s.lastError ? 'DOWN' : 'UP'),
          el('td', {}, (s.labelSets || []).map(l => el('div', {}, labelChips(l)))),
          s.lastError ? '' : fmtTime(s.minTime), s.lastError ? '' : fmtTime(s.maxTime), fmtTime(Date.parse(s.lastCheck)),
          el('td', { class: 'error-cell' }, s.lastError || ''),
        ])));
    }
  } catch (e) { main.append(errorBox(e)); }
}

// ---------------------------------------------------------------------------------
// Blocks page

function resolutionName(ms) { return ms ? fmtDur(ms) : 'raw'; }

async function blocksPage() {
  main.append(el('h2', {}, 'Blocks'));
  let body;
  try { body = await api('/api/v1/blocks'); } catch (e) { main.append(errorBox(e)); return; }
  const { blocks, refreshedAt } = body.data;
  const colours = { 0: '#3b82f6', 300000: '#10b981', 3600000: '#f59e0b' };
  main.append(el('p', { class: 'muted' }, `${blocks.length} block(s), listed ${refreshedAt}. `,
    el('span', { class: 'legend-key' }, el('span', { style: `background:${colours[0]}` }), 'raw',
      el('span', { style: `background:${colours[300000]}` }), '5m',
      el('span', { style: `background:${colours[3600000]}` }), '1h',
      el('span', { style: 'background:#999;outline:1px solid #c62828' }), 'marked for deletion',
      el('span', { style: 'border:2px dotted #000' }), 'no-compact')));
  const details = el('pre', { id: 'block-details', hidden: true });
  const byTenant = new Map();
  for (const b of blocks) {
    const t = b.tenant || '(no tenant)';
    if (!byTenant.has(t)) byTenant.set(t, []);
    byTenant.get(t).push(b);
  }
  for (const [tenant, list] of byTenant) {
    const min = Math.min(...list.map(b => b.minTime)), max = Math.max(...list.map(b => b.maxTime));
    const span = Math.max(1, max - min);
    const rows = new Map();
    for (const b of list) {
      const res = (b.thanos && b.thanos.downsample && b.thanos.downsample.resolution) || 0;
      // Blocks of different sources (external labels) overlap in time: a row each.
      const ext = Object.entries((b.thanos && b.thanos.labels) || {}).map(([k, v]) => `${k}=${v}`).join(',');
      const key = `level ${b.compaction.level} · ${resolutionName(res)}${ext ? ' · ' + ext : ''}`;
      if (!rows.has(key)) rows.set(key, { res, level: b.compaction.level, blocks: [] });
      rows.get(key).blocks.push(b);
    }
    const sorted = [...rows.entries()].sort((a, b) => a[1].res - b[1].res || a[1].level - b[1].level);
    const tl = el('div', { class: 'timeline' },
      sorted.map(([name, r]) => el('div', { class: 'row' }, el('span', { class: 'name', title: name }, name),
        el('div', { class: 'lane' }, r.blocks.map(b => el('div', {
          class: `blk${b.deletionMark ? ' deleted' : ''}${b.noCompactMark ? ' nocompact' : ''}`,
          style: `left:${((b.minTime - min) / span) * 100}%;width:${((b.maxTime - b.minTime) / span) * 100}%;background-color:${colours[r.res] || '#6b7280'}`,
          title: `${b.ulid}\n${fmtTime(b.minTime)} – ${fmtTime(b.maxTime)}`,
          'data-ulid': b.ulid,
          onclick: () => { details.hidden = false; details.textContent = JSON.stringify(b, null, 2); details.scrollIntoView(); },
        }))))),
      el('div', { class: 'axis' }, el('span', {}, fmtTime(min)), el('span', {}, fmtTime(max))));
    main.append(el('h2', {}, `Tenant ${tenant} (${list.length})`), tl, table(
      ['ULID', 'From', 'Until', 'Range', 'Level', 'Resolution', 'Series', 'Samples', 'Chunks', 'Labels', 'Source', 'Marks'],
      list.sort((a, b) => a.minTime - b.minTime).map(b => [
        el('td', { class: 'mono' }, el('a', { href: '#', class: 'ulid', onclick: (e) => { e.preventDefault(); details.hidden = false; details.textContent = JSON.stringify(b, null, 2); details.scrollIntoView(); } }, b.ulid)),
        fmtTime(b.minTime), fmtTime(b.maxTime), fmtDur(b.maxTime - b.minTime), b.compaction.level,
        resolutionName((b.thanos && b.thanos.downsample && b.thanos.downsample.resolution) || 0),
        el('td', { class: 'num' }, b.stats ? b.stats.numSeries : ''),
        el('td', { class: 'num' }, b.stats ? b.stats.numSamples : ''),
        el('td', { class: 'num' }, b.stats ? b.stats.numChunks : ''),
        el('td', {}, labelChips(b.thanos && b.thanos.labels)),
        (b.thanos && b.thanos.source) || '',
        [b.deletionMark ? 'deletion' : '', b.noCompactMark ? 'no-compact' : ''].filter(Boolean).join(', '),
      ])));
  }
  main.append(el('h2', {}, 'Block details (meta.json)'), el('p', { class: 'muted' }, 'Click a block.'), details);
}

// ---------------------------------------------------------------------------------
// Status page

async function section(title, id, fill) {
  const box = el('section', { id });
  main.append(el('h2', {}, title), box);
  try { await fill(box); } catch (e) { box.replaceChildren(errorBox(e)); }
}

function kvTable(obj) {
  return table(['Name', 'Value'], Object.entries(obj).map(([k, v]) =>
    [el('td', { class: 'mono' }, k), el('td', { class: 'mono' }, typeof v === 'object' ? JSON.stringify(v) : String(v))]));
}

function topTable(title, list) {
  return el('div', {}, el('h3', {}, title), table(['Name', 'Count'],
    (list || []).map(x => [el('td', { class: 'mono' }, x.name), el('td', { class: 'num' }, x.value)])));
}

async function statusPage() {
  await section('Build information', 'buildinfo', async box => box.append(kvTable((await api('/api/v1/status/buildinfo')).data)));
  await section('Runtime', 'runtimeinfo', async box => box.append(kvTable((await api('/api/v1/status/runtimeinfo')).data)));
  await section('Ring', 'ring', async box => {
    const r = await fetch('/ingester/ring', { headers: { Accept: 'application/json' } });
    if (r.status === 404) { box.append(el('p', { class: 'muted' }, 'No ring: this process is not in a cluster.')); return; }
    const body = await r.json();
    const members = Array.isArray(body) ? body : (body.members || body.data || []);
    box.append(el('p', {}, el('a', { href: '/ingester/ring' }, 'Ring page (/ingester/ring)')),
      table(['ID', 'Address', 'Zone', 'State', 'Tokens', 'Ownership', 'Heartbeat age'],
        members.map(m => [m.id, m.address, m.zone, el('td', { class: m.healthy ? 'up' : 'down' }, m.status),
          el('td', { class: 'num' }, m.tokens), el('td', { class: 'num' }, `${Number(m.ownership).toFixed(1)}%`),
          el('td', { class: 'num' }, `${Number(m.heartbeatAgeSeconds).toFixed(1)} s`)])));
  });
  await section('TSDB status', 'tsdb', async box => {
    let d;
    try { d = (await api('/api/v1/status/tsdb')).data; } catch (e) {
      box.append(el('p', { class: 'muted' }, `No TSDB here (${e.message}).`)); return;
    }
    if (d.headStats) box.append(kvTable({ ...d.headStats, minTime: fmtTime(d.headStats.minTime), maxTime: fmtTime(d.headStats.maxTime) }));
    box.append(topTable('Series count by metric name', d.seriesCountByMetricName),
      topTable('Label value count by label name', d.labelValueCountByLabelName),
      topTable('Memory (bytes) by label name', d.memoryInBytesByLabelName),
      topTable('Series count by label value pair', d.seriesCountByLabelValuePair));
  });
  await section('Rules', 'rules', async box => {
    const groups = (await api('/api/v1/rules')).data.groups || [];
    if (!groups.length) { box.append(el('p', { class: 'muted' }, 'No rule groups.')); return; }
    for (const g of groups) {
      box.append(el('h3', {}, `${g.name} (${g.file}, every ${g.interval}s)`), table(['Rule', 'Type', 'Health', 'Last error', 'Last evaluation'],
        g.rules.map(r => [el('td', { class: 'mono' }, `${r.name}: ${r.query}`), r.type,
          el('td', { class: r.health === 'ok' ? 'up' : 'down' }, r.health), r.lastError || '', r.lastEvaluation])));
    }
  });
  await section('Alerts', 'alerts', async box => {
    const alerts = (await api('/api/v1/alerts')).data.alerts || [];
    if (!alerts.length) { box.append(el('p', { class: 'muted' }, 'No active alerts.')); return; }
    box.append(table(['Labels', 'State', 'Active since', 'Value'],
      alerts.map(a => [el('td', {}, labelChips(a.labels)), a.state, a.activeAt || '', a.value])));
  });
  await section('Flags', 'flags', async box => box.append(kvTable((await api('/api/v1/status/flags')).data)));
}

{
  const box = document.getElementById('tenant');
  box.value = tenant;
  box.addEventListener('change', () => { setTenant(box.value); route(); });
}
route();
