#!/usr/bin/env node
// Browser check of a VNC console: noVNC in headless Chromium connects to an RFB-over-WebSocket
// URL, waits for a non-blank framebuffer, saves a PNG of the canvas and prints one JSON line.
//
//   node check.mjs <ws-url> <out.png> [timeout_ms]
//
// Exit 0: connected and the screen is not blank. Exit 1: anything else (reason on stderr).
// Env: CHROMIUM (default /usr/bin/chromium), NOVNC_DEBUG=1 (echo the page's console to stderr).
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const NOVNC = path.join(HERE, 'node_modules', '@novnc', 'novnc');
const [wsUrl, outPng, timeoutArg] = process.argv.slice(2);
const timeoutMs = Number(timeoutArg ?? 20000);
const debug = process.env.NOVNC_DEBUG === '1';

if (!wsUrl || !outPng || !/^wss?:\/\//.test(wsUrl) || !(timeoutMs > 0)) {
  process.stderr.write('usage: node check.mjs <ws://...|wss://...> <out.png> [timeout_ms]\n');
  process.exit(2);
}

const result = { connected: false, width: 0, height: 0, distinct_colors: 0, non_black_pixels: 0, desktop_name: null };
let server, browser, finished = false;

function finish(code, error) {
  if (finished) return;
  finished = true;
  if (error) result.error = error;
  process.stdout.write(JSON.stringify(result) + '\n');
  if (error) process.stderr.write(`novnc check: FAIL: ${error}\n`);
  const closing = [
    browser ? browser.close().catch(() => {}) : null,
    server ? new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }) : null,
  ];
  // playwright kills the browser process on exit anyway; don't wait for a stuck close forever.
  Promise.race([Promise.all(closing), new Promise((r) => setTimeout(r, 5000))])
    .finally(() => process.exit(code));
}

// Hard overall limit: the wait itself, plus browser start and stop.
setTimeout(() => finish(1, `hard timeout (${timeoutMs + 15000} ms) exceeded`), timeoutMs + 15000).unref();
process.on('SIGINT', () => finish(1, 'interrupted'));
process.on('SIGTERM', () => finish(1, 'terminated'));

// The page: noVNC's ES modules (core/ in the package is ESM; there is no lib/ build) in one module
// script. State for the Node side lives in window.__vnc; __stats() reads the canvas.
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>novnc check</title>
<style>html,body{margin:0;padding:0;background:#000}#screen{width:100vw;height:100vh}</style>
</head><body><div id="screen"></div>
<script type="module">
import RFB from '/novnc/core/rfb.js';
const st = window.__vnc = { connected: false, disconnected: false, clean: null, failure: null, desktop_name: null };
try {
  const url = new URLSearchParams(location.search).get('ws');
  const rfb = new RFB(document.getElementById('screen'), url, { wsProtocols: ['binary'], shared: true });
  rfb.viewOnly = true;
  rfb.addEventListener('connect', () => { st.connected = true; });
  rfb.addEventListener('disconnect', (e) => { st.disconnected = true; st.clean = e.detail.clean; });
  rfb.addEventListener('desktopname', (e) => { st.desktop_name = e.detail.name; });
  rfb.addEventListener('securityfailure', (e) => {
    st.failure = 'security failure (status ' + e.detail.status + ')' + (e.detail.reason ? ': ' + e.detail.reason : '');
  });
  rfb.addEventListener('credentialsrequired', (e) => {
    st.failure = 'server asks for credentials (' + ((e.detail && e.detail.types) || []).join(',') +
      '): it must offer security type None';
    rfb.disconnect();
  });
  window.__rfb = rfb;
} catch (e) { st.failure = 'RFB constructor: ' + e; }
window.__stats = () => {
  const c = document.querySelector('#screen canvas');
  if (!c || !c.width || !c.height) return { width: 0, height: 0, distinct_colors: 0, non_black_pixels: 0 };
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const colors = new Set();
  let nonBlack = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i] | d[i + 1] | d[i + 2]) nonBlack++;
    if (colors.size < 65536) colors.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
  }
  return { width: c.width, height: c.height, distinct_colors: colors.size, non_black_pixels: nonBlack };
};
</script></body></html>`;

const TYPES = { '.js': 'text/javascript', '.html': 'text/html', '.json': 'application/json' };

function serve(req, res) {
  const u = new URL(req.url, 'http://127.0.0.1');
  if (u.pathname === '/') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    return res.end(PAGE);
  }
  if (u.pathname === '/favicon.ico') { res.writeHead(204); return res.end(); }
  if (u.pathname.startsWith('/novnc/')) {
    const file = path.normalize(path.join(NOVNC, decodeURIComponent(u.pathname.slice('/novnc/'.length))));
    if (file.startsWith(NOVNC + path.sep)) {
      return fs.readFile(file, (err, body) => {
        if (err) { res.writeHead(404); return res.end(); }
        res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' });
        res.end(body);
      });
    }
  }
  res.writeHead(404); res.end();
}

// The pass rule: at least two colours, and at least 0.05% of the area (min 50 px) not black.
// SeaBIOS's "No bootable device." screen (720x400, grey text on black) is well above this.
function notBlank(s) {
  const need = Math.max(50, Math.ceil(s.width * s.height * 0.0005));
  return s.width > 0 && s.distinct_colors >= 2 && s.non_black_pixels >= need;
}

async function main() {
  if (!fs.existsSync(path.join(NOVNC, 'core', 'rfb.js'))) {
    return finish(1, `noVNC not installed at ${NOVNC} (run: npm ci --prefix ${HERE})`);
  }
  server = http.createServer(serve);
  await new Promise((resolve, reject) => { server.once('error', reject); server.listen(0, '127.0.0.1', resolve); });
  const pageUrl = `http://127.0.0.1:${server.address().port}/?ws=${encodeURIComponent(wsUrl)}`;

  try {
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      chromiumSandbox: false,
      timeout: 30000,
      // Root needs --no-sandbox; the rest keeps Chromium off the (closed) network.
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
             '--disable-background-networking', '--disable-component-update', '--disable-sync',
             '--disable-dev-shm-usage'],
    });
  } catch (e) {
    return finish(1, `cannot launch Chromium: ${String(e.message || e).split('\n')[0]}`);
  }
  const page = await browser.newPage({ viewport: { width: 1280, height: 1024 } });
  const consoleErrors = [];
  page.on('console', (m) => {
    if (debug) process.stderr.write(`[page ${m.type()}] ${m.text()}\n`);
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(`page error: ${e.message}`));
  await page.goto(pageUrl, { timeout: 10000 });

  const deadline = Date.now() + timeoutMs;
  let st, stats;
  for (;;) {
    st = await page.evaluate(() => window.__vnc || null);
    if (st) {
      result.connected = st.connected;
      result.desktop_name = st.desktop_name;
      if (st.failure) break;
      if (st.disconnected) break;
      if (st.connected) {
        stats = await page.evaluate(() => window.__stats());
        Object.assign(result, stats);
        if (notBlank(stats)) break;
      }
    }
    if (Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, 200));
  }

  const why = consoleErrors.length ? ` [noVNC: ${consoleErrors.slice(-2).join(' | ')}]` : '';
  if (!st) return finish(1, `page did not load noVNC${why}`);
  if (st.failure) return finish(1, st.failure);
  if (st.disconnected) {
    return finish(1, (st.connected ? 'disconnected after connect' : 'could not connect') +
      ` (clean=${st.clean})${why}`);
  }
  if (!st.connected) return finish(1, `not connected within ${timeoutMs} ms${why}`);

  // Grow the viewport to the framebuffer so the element screenshot is the whole canvas, 1:1.
  await page.setViewportSize({ width: Math.max(stats.width, 320), height: Math.max(stats.height, 200) });
  await page.locator('#screen canvas').screenshot({ path: outPng, timeout: 5000 });
  if (!notBlank(stats)) {
    return finish(1, `screen still blank after ${timeoutMs} ms (${stats.width}x${stats.height}, ` +
      `${stats.distinct_colors} colours, ${stats.non_black_pixels} non-black px); screenshot in ${outPng}`);
  }
  finish(0);
}

main().catch((e) => finish(1, String(e && e.message ? e.message : e).split('\n')[0]));
