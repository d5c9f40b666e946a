// Conduit's web console. The page logs in at the manager (this origin), lists the user's
// servers and, for each, asks the manager which gateway reaches it; operations and consoles
// then go to that gateway directly: Connect calls with the access token, consoles over a
// WebSocket opened with a one-time ticket. Everything shown comes from the API and goes into
// the page as text (textContent), never as markup.

const GATEWAY = 'conduit.gateway.v1.GatewayService';
const XTERM = '/web/vendor/@xterm/xterm/lib/xterm.js';
const XTERM_CSS = '/web/vendor/@xterm/xterm/css/xterm.css';
const NOVNC = '/web/vendor/@novnc/novnc/core/rfb.js';

// ---- the page's elements -------------------------------------------------------------

// el('td', {class: 'x', onclick: f}, 'text', child…): strings become text nodes.
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== false && v != null) e.setAttribute(k, v === true ? '' : v);
  }
  e.append(...children.filter((c) => c != null));
  return e;
}

function show(...nodes) {
  closeConsole();
  document.getElementById('main').replaceChildren(...nodes.filter((n) => n != null));
}

function say(text, error = false) {
  const m = document.getElementById('message');
  m.textContent = text;
  m.className = error ? 'error' : '';
  m.setAttribute('role', error ? 'alert' : 'status');
}

function table(header, rows) {
  return el('table', {},
    el('thead', {}, el('tr', {}, ...header.map((h) => el('th', {}, h)))),
    el('tbody', {}, ...rows));
}

// ---- the login and calls --------------------------------------------------------------

const store = window.sessionStorage;
let session = JSON.parse(store.getItem('conduit.session') || 'null');
let renewing = null;
// A tab opened from this one (or duplicated) starts with a copy of its sessionStorage. A
// refresh token works once, and a second use ends the login for both, so the copy keeps
// only the access token (until it lapses) and the refresh token stays with its first tab.
if (session && window.name !== session.tab) {
  session.refresh = null;
  remember(session);
}

function remember(s) {
  s.tab = window.name = window.name || crypto.randomUUID();
  store.setItem('conduit.session', JSON.stringify(s));
}

function keep(t) {
  session = { token: t.accessToken, refresh: t.refreshToken, user: t.user,
              expires: Date.now() + t.expiresIn * 1000 };
  remember(session);
}

async function post(url, body, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  let resp;
  try {
    resp = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body || {}) });
  } catch (e) {
    throw Object.assign(new Error(`${url}: unreachable (${e.message})`), { code: 'unavailable' });
  }
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const method = url.split('/').pop();
    throw Object.assign(new Error(`${method}: ${data.message || 'HTTP ' + resp.status}`),
                        { code: data.code || 'unknown' });
  }
  return data;
}

// Renews the access token with the refresh token, once for all callers at a time.
function renew() {
  if (!session?.refresh) {
    logout(false);
    return Promise.reject(new Error('the login has ended here: log in again'));
  }
  renewing ??= post('/conduit.manager.v1.AuthService/Refresh', { refreshToken: session.refresh })
    .then(keep)
    .catch((e) => {
      // Only the manager's refusal ends the login; an outage does not.
      if (e.code === 'unauthenticated' || e.code === 'permission_denied') logout(false);
      throw e;
    })
    .finally(() => { renewing = null; });
  return renewing;
}

// A call with the login, renewed first when it is about to lapse and again on a refusal.
async function call(base, service, method, body) {
  if (!session) throw new Error('not logged in');
  if (Date.now() > session.expires - 30000) await renew();
  try {
    return await post(`${base}/${service}/${method}`, body, session.token);
  } catch (e) {
    if (e.code !== 'unauthenticated') throw e;
    await renew();
    return post(`${base}/${service}/${method}`, body, session.token);
  }
}

const manager = (service, method, body) => call('', `conduit.manager.v1.${service}`, method, body);

const located = new Map();
async function gatewayOf(serverId) {
  if (!located.has(serverId)) {
    const l = await manager('ServerService', 'Locate', { serverId });
    located.set(serverId, l.gatewayAddress.replace(/\/+$/, ''));
  }
  return located.get(serverId);
}

async function gateway(serverId, method, body) {
  const base = await gatewayOf(serverId);
  for (let attempt = 0; ; attempt++) {
    try {
      return await call(base, GATEWAY, method, body);
    } catch (e) {
      if (e.code === 'unavailable') located.delete(serverId); // the agent may have moved
      // The agent's bound on operations per server refused it before doing anything: a
      // page asking several things of one server at once waits its turn.
      if (e.code !== 'resource_exhausted' || attempt >= 4) throw e;
      await new Promise((r) => setTimeout(r, 500 * (attempt + 1)));
    }
  }
}

async function logout(tell = true) {
  if (tell && session) {
    await manager('AuthService', 'Logout', {}).catch(() => {});
  }
  session = null;
  store.removeItem('conduit.session');
  located.clear();
  location.hash = '';
  route();
}

// ---- views ----------------------------------------------------------------------------

function loginView() {
  const email = el('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = el('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const form = el('form', { class: 'login', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      keep(await post('/conduit.manager.v1.AuthService/Login', { email: email.value, password: password.value }));
      say('');
      route();
    } catch (e) {
      say(`Login failed: ${e.message}`, true);
    }
  } },
  el('h2', {}, 'Log in'),
  el('label', {}, 'E-mail ', email),
  el('label', {}, 'Password ', password),
  el('button', { type: 'submit' }, 'Log in'));
  show(form);
}

const isOperator = () => session && session.user.role !== 'viewer';
const isAdmin = () => session && session.user.role === 'admin';

function powerCell(state) {
  return el('span', { class: `power-${state}` }, state);
}

// A server's row; its live state comes with `refresh()`.
function powerRow(s) {
  const power = el('td', { 'data-field': 'power' }, '…');
  const state = el('td', { 'data-field': 'state' }, '…');
  const act = (action) => el('button', { 'data-action': action, 'aria-label': `power ${action} ${s.serverId}`,
    onclick: async (ev) => {
      const b = ev.currentTarget;
      if (action !== 'on' && !window.confirm(`Power ${action} ${s.serverId}?`)) return;
      b.disabled = true;
      try {
        say(`${s.serverId}: power ${action}…`);
        await gateway(s.serverId, 'PowerAction', { serverId: s.serverId, action });
        say(`${s.serverId}: power ${action} done`);
        await refresh();
      } catch (e) { say(`${s.serverId}: ${e.message}`, true); }
      b.disabled = false;
    } }, action);
  const refresh = async () => {
    try {
      const p = await gateway(s.serverId, 'PowerStatus', { serverId: s.serverId });
      power.replaceChildren(powerCell(p.power));
      state.textContent = 'online';
    } catch (e) {
      power.textContent = '-';
      state.textContent = e.code === 'unavailable' ? 'unreachable' : e.message;
    }
  };
  const can = (c) => s.capabilities.includes(c);
  const row = el('tr', { 'data-server': s.serverId },
    el('td', {}, el('a', { href: `#server/${encodeURIComponent(s.serverId)}` }, s.serverId)),
    el('td', {}, s.name), state, power,
    el('td', {},
      isOperator() ? act('on') : null, isOperator() ? act('off') : null,
      isOperator() ? act('cycle') : null,
      can('sol') ? el('a', { href: `#sol/${encodeURIComponent(s.serverId)}` }, 'serial console') : null, ' ',
      isOperator() && can('vnc') ? el('a', { href: `#vnc/${encodeURIComponent(s.serverId)}` }, 'graphical console') : null));
  return { row, refresh };
}

// Every page of a manager list.
async function all(service, method, body, field) {
  const rows = [];
  let pageToken;
  do {
    const page = await manager(service, method, { ...body, pageSize: 1000, pageToken });
    rows.push(...page[field]);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return rows;
}

// Runs `f` on every item, at most `n` at once (a page of many servers must not ask the
// manager and the gateways everything at the same moment).
async function bounded(items, n, f) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await f(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

async function serversView() {
  const servers = await all('ServerService', 'List', {}, 'servers');
  const rows = servers.map(powerRow);
  show(el('h2', {}, 'Servers'),
    table(['Server', 'Name', 'State', 'Power', ''], rows.map((r) => r.row)),
    servers.length ? null : el('p', {}, 'No servers are assigned to you yet.'));
  await bounded(rows, 8, (r) => r.refresh());
}

async function serverView(id) {
  const s = await manager('ServerService', 'Get', { serverId: id });
  const power = powerRow(s);
  power.refresh();
  const sensors = el('div', {}, 'Reading sensors…');
  const events = el('div', {}, 'Reading the event log…');
  const boot = el('div', {});
  show(el('h2', {}, `${s.name} (${s.serverId})`),
    table(['Datacenter', 'Protocol', 'Capabilities'],
      [el('tr', {}, el('td', {}, s.datacenter), el('td', {}, s.protocol), el('td', {}, s.capabilities.join(', ')))]),
    el('h3', {}, 'Power'), table(['Server', 'Name', 'State', 'Power', ''], [power.row]),
    el('h3', {}, 'Boot device'), boot,
    el('h3', {}, 'Sensors'), sensors,
    el('h3', {}, 'Event log'), events);
  gateway(id, 'GetSensors', { serverId: id }).then((r) => sensors.replaceChildren(
    table(['Sensor', 'Value', 'Unit', 'State'], r.sensors.map((x) => el('tr', { 'data-sensor': '' },
      el('td', {}, x.name), el('td', {}, x.value == null ? '-' : String(x.value)),
      el('td', {}, x.unit), el('td', {}, x.state))))))
    .catch((e) => sensors.replaceChildren(e.message));
  gateway(id, 'GetEventLog', { serverId: id }).then((r) => events.replaceChildren(
    table(['Id', 'Time', 'Severity', 'Sensor', 'Event'], r.events.map((x) => el('tr', {},
      el('td', {}, x.id), el('td', {}, x.time ? new Date(x.time * 1000).toISOString() : '-'),
      el('td', {}, x.severity), el('td', {}, x.sensor), el('td', {}, x.event))))))
    .catch((e) => events.replaceChildren(e.message));
  const showBoot = (b) => {
    const pick = el('select', { name: 'device' }, ...['pxe', 'disk', 'cdrom', 'bios'].map((d) => el('option', {}, d)));
    const set = el('button', { onclick: () => gateway(id, 'SetBootDevice', { serverId: id, device: pick.value })
      .then(showBoot).catch((e) => say(e.message, true)) }, 'Set for next boot');
    boot.replaceChildren(`Override: ${b.device}${b.persistent ? ' (every boot)' : ''} `,
      ...(isOperator() ? [pick, set] : []));
  };
  gateway(id, 'GetBootDevice', { serverId: id }).then(showBoot).catch((e) => boot.replaceChildren(e.message));
}

async function adminView() {
  const [gws, agents, free, customers] = await Promise.all([
    manager('GatewayService', 'List', {}),
    all('AgentService', 'List', {}, 'agents'),
    all('ServerService', 'List', { unassigned: true }, 'servers'),
    all('CustomerService', 'List', {}, 'customers'),
  ]);
  const assignRow = (s) => {
    const pick = el('select', { 'aria-label': `customer for ${s.serverId}` },
      ...customers.map((c) => el('option', { value: c.customerId }, c.name)));
    return el('tr', { 'data-server': s.serverId }, el('td', {}, s.serverId), el('td', {}, s.datacenter), el('td', {}, pick,
      el('button', { onclick: () => manager('ServerService', 'Assign', { serverId: s.serverId, customerId: pick.value })
        .then(() => { say(`${s.serverId} assigned`); adminView(); }).catch((e) => say(e.message, true)) }, 'Assign')));
  };
  show(el('h2', {}, 'Gateways'),
    table(['Gateway', 'Datacenter', 'Status', 'Address', 'Version'], gws.gateways.map((g) => el('tr', {},
      el('td', {}, g.gatewayId), el('td', {}, g.datacenter), el('td', {}, g.status), el('td', {}, g.address), el('td', {}, g.version)))),
    el('h2', {}, 'Agents'),
    table(['Agent', 'Datacenter', 'Gateway', 'State'], agents.map((a) => el('tr', {},
      el('td', {}, a.agentId), el('td', {}, a.datacenter), el('td', {}, a.gatewayId || '-'),
      el('td', {}, a.revoked ? 'revoked' : a.connected ? 'connected' : 'disconnected')))),
    el('h2', {}, 'Unassigned servers'),
    table(['Server', 'Datacenter', 'Assign to'], free.map(assignRow)));
}

// ---- consoles -------------------------------------------------------------------------

let open = null; // the console on screen: { dispose }
let generation = 0; // bumped by every navigation: a view still loading for an old one stops

function closeConsole() {
  if (open) { open.dispose(); open = null; }
}

function stale(mine) {
  return mine !== generation;
}

let xterm = null;
function loadXterm() {
  xterm ??= new Promise((resolve, reject) => {
    document.head.append(el('link', { rel: 'stylesheet', href: XTERM_CSS }));
    const s = el('script', { src: XTERM });
    s.onload = resolve;
    s.onerror = () => {
      s.remove();
      xterm = null;
      reject(new Error('the console packages are not installed at the manager (--web-assets)'));
    };
    document.head.append(s);
  });
  return xterm;
}

async function consoleSocket(id, kind) {
  const base = await gatewayOf(id);
  const t = await gateway(id, 'CreateConsoleTicket', { serverId: id, console: kind });
  return base.replace(/^http/, 'ws') + t.path;
}

async function solView(id, mine) {
  const screen = el('div', { class: 'console', id: 'terminal' });
  const keyboard = el('span', { id: 'keyboard', 'aria-live': 'polite' }, 'Keyboard: not known yet (the first viewer to arrive holds it)');
  await loadXterm();
  const url = await consoleSocket(id, 'sol');
  if (stale(mine)) return;
  const ws = new WebSocket(url, ['binary']);
  ws.binaryType = 'arraybuffer';
  const send = (o) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(o));
  show(el('h2', {}, `Serial console of ${id}`),
    el('div', { class: 'bar' }, keyboard,
      isOperator() ? el('button', { id: 'takeover', onclick: () => send({ type: 'takeover' }) }, 'Take over the keyboard') : null,
      isOperator() ? el('button', { onclick: () => send({ type: 'break' }) }, 'Send BREAK') : null,
      el('a', { href: '#' }, 'Leave')),
    screen);
  const term = new window.Terminal({
    cursorBlink: true, scrollback: 5000,
    // Links the host prints (OSC 8) open only as web pages, in a tab of their own.
    linkHandler: { activate: (e, uri) => { if (/^https?:\/\//.test(uri)) window.open(uri, '_blank', 'noopener'); } },
  });
  term.open(screen);
  term.focus();
  const bytes = new TextEncoder();
  const text = new TextDecoder();
  // The agent's status lines (`[conduit: …]`) say where the keyboard is.
  const watch = (s) => {
    if (s.includes('you have the keyboard')) keyboard.textContent = 'Keyboard: you';
    else if (s.includes('another viewer took the keyboard') || s.includes('another viewer has the keyboard')) keyboard.textContent = 'Keyboard: another viewer';
    else if (s.includes('you are watching')) keyboard.textContent = 'Keyboard: you are watching';
  };
  ws.onmessage = (e) => {
    if (typeof e.data === 'string') return;
    const chunk = new Uint8Array(e.data);
    term.write(chunk);
    watch(text.decode(chunk, { stream: true }));
  };
  ws.onopen = () => say(`Connected to ${id}'s serial console`);
  ws.onclose = (e) => say(`${id}'s console ended: ${(e.reason || 'closed').replaceAll('_', ' ')}`, e.code !== 1000);
  const typed = term.onData((d) => ws.readyState === WebSocket.OPEN && ws.send(bytes.encode(d)));
  window.__conduitTerminal = term; // for the browser tests
  open = { dispose: () => {
    ws.onclose = ws.onmessage = null;
    ws.close(1000);
    typed.dispose();
    term.dispose();
    window.__conduitTerminal = null;
  } };
}

async function vncView(id, mine) {
  const screen = el('div', { class: 'console vnc', id: 'screen' });
  let RFB;
  try {
    RFB = (await import(NOVNC)).default;
  } catch (e) {
    throw new Error('the console packages are not installed at the manager (--web-assets)');
  }
  const url = await consoleSocket(id, 'vnc');
  if (stale(mine)) return;
  show(el('h2', {}, `Graphical console of ${id}`),
    el('div', { class: 'bar' }, el('a', { href: '#' }, 'Leave')), screen);
  const rfb = new RFB(screen, url, { wsProtocols: ['binary'], shared: true });
  rfb.scaleViewport = false;
  rfb.addEventListener('connect', () => say(`Connected to ${id}'s graphical console`));
  const ended = (e) => say(`${id}'s graphical console ended`, !e.detail.clean);
  rfb.addEventListener('disconnect', ended);
  window.__conduitRfb = rfb;
  open = { dispose: () => { rfb.removeEventListener('disconnect', ended); rfb.disconnect(); } };
}

// ---- routing --------------------------------------------------------------------------

async function route() {
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');
  if (!session) {
    nav.replaceChildren();
    who.replaceChildren();
    return loginView();
  }
  const u = session.user;
  nav.replaceChildren(...[el('a', { href: '#' }, 'Servers'), ' ',
    isAdmin() ? el('a', { href: '#admin' }, 'Admin') : null].filter((n) => n != null));
  who.replaceChildren(`${u.email} (${u.role}${u.customerId ? ', ' + u.customerId : ''}) `,
    el('button', { id: 'logout', onclick: () => logout() }, 'Log out'));
  const mine = ++generation;
  try {
    const [view, arg] = location.hash.slice(1).split('/').map(decodeURIComponent);
    if (view === 'server') await serverView(arg);
    else if (view === 'sol') await solView(arg, mine);
    else if (view === 'vnc') await vncView(arg, mine);
    else if (view === 'admin') await adminView();
    else await serversView();
  } catch (e) {
    if (stale(mine)) return;
    if (!session) return loginView();
    show(el('p', { class: 'error' }, e.message));
    say(e.message, true);
  }
}

window.addEventListener('hashchange', () => { say(''); route(); });
route();
