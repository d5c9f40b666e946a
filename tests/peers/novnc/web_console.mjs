#!/usr/bin/env node
// Browser check of Conduit's web console (served by the manager), in headless Chromium: what
// a person does, step by step, and what the page shows. The Rust test around it holds the
// host's serial port and the VNC server, and checks the other side.
//
//   node web_console.mjs '<json plan>'
//
// The plan: { manager, server, unassigned, operator: [email, password], viewer: [...],
//             other: [...], admin: [...], png, timeoutMs }. Prints one JSON report line; exit 0 when every step ran (the
// assertions on its contents are the Rust test's), 1 on a step that failed (reason in `error`).
import fs from 'node:fs';
import { chromium } from 'playwright-core';

const plan = JSON.parse(process.argv[2] || '{}');
const wait = plan.timeoutMs || 20000;
const report = { steps: [], pageErrors: [] };
let browser;

async function finish(code, error) {
  if (error) report.error = error;
  process.stdout.write(JSON.stringify(report) + '\n');
  if (browser) await Promise.race([browser.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
  process.exit(code);
}
setTimeout(() => finish(1, 'hard timeout'), wait * 8).unref();

async function page(ctx) {
  const p = await ctx.newPage({ viewport: { width: 1280, height: 1024 } });
  p.on('console', (m) => {
    if (process.env.WEB_DEBUG === '1') process.stderr.write(`[page ${m.type()}] ${m.text()}\n`);
    if (m.type() === 'error') report.pageErrors.push(m.text());
  });
  p.on('pageerror', (e) => report.pageErrors.push(`page error: ${e.message}`));
  // CSP violations, as the page sees them.
  await p.addInitScript(() => document.addEventListener('securitypolicyviolation',
    (e) => console.error(`CSP: ${e.violatedDirective} ${e.blockedURI}`)));
  return p;
}

async function login(ctx, [email, password]) {
  const p = await page(ctx);
  await p.goto(plan.manager + '/', { timeout: wait });
  await p.fill('input[name=email]', email);
  await p.fill('input[name=password]', password);
  await p.click('button[type=submit]');
  await p.waitForSelector('#logout', { timeout: wait });
  return p;
}

// The text of the terminal's buffer (xterm.js), all lines.
const screenText = (p) => p.evaluate(() => {
  const b = window.__conduitTerminal?.buffer.active;
  if (!b) return '';
  const lines = [];
  for (let i = 0; i < b.length; i++) lines.push(b.getLine(i)?.translateToString(true) ?? '');
  return lines.join('\n');
});

async function until(what, f) {
  const end = Date.now() + wait;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${wait} ms`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

async function openSol(p) {
  await p.goto(`${plan.manager}/#sol/${plan.server}`);
  await until('the serial console connects', async () =>
    (await p.textContent('#message'))?.includes('Connected'));
  await p.click('#terminal');
}

async function main() {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true, chromiumSandbox: false, timeout: 30000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync',
           '--disable-dev-shm-usage'],
  });
  const step = (s) => report.steps.push(s);

  // The operator: their servers, with power state.
  const opCtx = await browser.newContext();
  const op = await login(opCtx, plan.operator);
  await op.waitForSelector('tr[data-server]', { timeout: wait });
  report.servers = await op.$$eval('tr[data-server]', (rows) => rows.map((r) => r.dataset.server));
  const power = `tr[data-server="${plan.server}"] [data-field=power]`;
  report.powerBefore = await until('the power state', async () => {
    const t = (await op.textContent(power))?.trim();
    return t && t !== '…' ? t : null;
  });
  await op.click(`tr[data-server="${plan.server}"] button[data-action=on]`);
  report.powerAfter = await until('the power turns on', async () =>
    ((await op.textContent(power))?.trim() === 'on') && 'on');
  step('power');

  // The server's page: sensors as text (a sensor name with markup stays text).
  await op.goto(`${plan.manager}/#server/${plan.server}`);
  await op.waitForSelector('tr[data-sensor]', { timeout: wait });
  report.sensorNames = await op.$$eval('tr[data-sensor] td:first-child', (tds) => tds.map((t) => t.textContent));
  report.markupInCells = await op.$$eval('td *:not(a):not(button):not(select):not(option):not(span.power-on):not(span.power-off)', (e) => e.map((x) => x.tagName));
  step('sensors');

  // The serial console: type, see the host's echo.
  await openSol(op);
  await op.keyboard.type('hello-web');
  await op.keyboard.press('Enter');
  await until('the host echoes', async () => (await screenText(op)).includes('echo: hello-web'));
  step('sol-typed');

  // A viewer of the same customer watches the same session; its keys never reach the host.
  const viewerCtx = await browser.newContext();
  const viewer = await login(viewerCtx, plan.viewer);
  await openSol(viewer);
  report.viewerHasTakeover = (await viewer.$('#takeover')) !== null;
  await viewer.keyboard.type('viewer-typed');
  await viewer.keyboard.press('Enter');
  await until('the viewer is told it watches', async () => (await screenText(viewer)).includes('you are watching'));
  report.viewerKeyboard = await viewer.textContent('#keyboard');
  await op.keyboard.type('shared');
  await op.keyboard.press('Enter');
  await until('the viewer sees the operator\'s session', async () => (await screenText(viewer)).includes('echo: shared'));
  step('sol-shared');

  // An admin takes the keyboard: both pages say where it is; the operator's keys are dropped.
  const adminCtx = await browser.newContext();
  const admin = await login(adminCtx, plan.admin);
  await openSol(admin);
  await admin.click('#takeover');
  report.adminKeyboard = await until('the admin holds the keyboard', async () => {
    const t = await admin.textContent('#keyboard');
    return t.includes('you') && !t.includes('not known') ? t : null;
  });
  report.operatorKeyboard = await until('the operator is told', async () => {
    const t = await op.textContent('#keyboard');
    return t.includes('another viewer') ? t : null;
  });
  await op.click('#terminal');
  await op.keyboard.type('dropped-keys');
  await op.keyboard.press('Enter');
  await admin.click('#terminal');
  await admin.keyboard.type('admin-typed');
  await admin.keyboard.press('Enter');
  await until('the host echoes the admin', async () => (await screenText(admin)).includes('echo: admin-typed'));
  step('takeover');

  // The admin's view: gateways, agents, unassigned servers, and assigning one.
  await admin.goto(`${plan.manager}/#admin`);
  await admin.waitForSelector(`tr[data-server="${plan.unassigned}"]`, { timeout: wait });
  report.adminText = await admin.textContent('main');
  await admin.selectOption(`tr[data-server="${plan.unassigned}"] select`, { label: plan.assignTo });
  await admin.click(`tr[data-server="${plan.unassigned}"] button`);
  await until('assigned', async () => (await admin.textContent('#message'))?.includes('assigned'));
  step('admin');

  // The graphical console: noVNC's canvas, saved for the comparison with vncdotool's capture.
  await op.goto(`${plan.manager}/#vnc/${plan.server}`);
  await until('the graphical console connects', async () =>
    (await op.textContent('#message'))?.includes('Connected'));
  const png = await until('the screen is drawn', async () => op.evaluate(() => {
    const c = document.querySelector('#screen canvas');
    if (!c || c.width < 100) return null;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let lit = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] | d[i + 1] | d[i + 2]) lit++;
    return lit > 500 ? { width: c.width, height: c.height, data: c.toDataURL('image/png') } : null;
  }));
  await new Promise((r) => setTimeout(r, 1000)); // the rest of the first update
  const final = await op.evaluate(() => document.querySelector('#screen canvas').toDataURL('image/png'));
  fs.writeFileSync(plan.png, Buffer.from(final.split(',')[1], 'base64'));
  report.canvas = [png.width, png.height];
  step('vnc');

  // Another customer's user: the same console URL shows nothing of the server.
  const otherCtx = await browser.newContext();
  const other = await login(otherCtx, plan.other);
  await other.waitForSelector('main h2, main p', { timeout: wait });
  report.otherServers = await other.$$eval('tr[data-server]', (rows) => rows.map((r) => r.dataset.server));
  await other.goto(`${plan.manager}/#sol/${plan.server}`);
  report.otherConsole = await until('the other user is refused', async () => {
    const t = await other.textContent('#message');
    return t && t.length ? t : null;
  });
  report.otherTerminal = await other.evaluate(() => Boolean(window.__conduitTerminal));
  step('other');

  // Logging out: the login form again, nothing kept in the tab.
  await op.goto(`${plan.manager}/#`);
  await op.click('#logout');
  await op.waitForSelector('input[name=email]', { timeout: wait });
  report.keptAfterLogout = await op.evaluate(() => window.sessionStorage.length);
  step('logout');
  finish(0);
}

main().catch((e) => finish(1, String(e && e.message ? e.message : e).split('\n')[0]));
