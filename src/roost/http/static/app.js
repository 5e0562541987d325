// Roost dashboard: talks only to the admin API (/api/v1/...) with the token the operator
// enters, kept in this tab's sessionStorage. No build step, no libraries: charts are
// drawn on a canvas.
"use strict";

const TOKEN_KEY = "roost-admin-token";
const REFRESH_MS = 2000;
const CHART_POINTS = 60;
const $ = (id) => document.getElementById(id);

const state = { tab: "overview", client: null, last: null, rates: { in: [], out: [] }, timer: null };

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) { logout("The token was refused."); throw new Error("unauthorized"); }
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  return td;
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.textContent = label;
  b.addEventListener("click", (event) => { event.stopPropagation(); onClick(); });
  return b;
}

function fillRows(tbodyId, items, columns, extra) {
  const rows = items.map((item) => {
    const tr = document.createElement("tr");
    columns.forEach((column) => tr.appendChild(cell(column(item))));
    if (extra) extra(tr, item);
    return tr;
  });
  $(tbodyId).replaceChildren(...rows);
}

async function act(action) {
  try { await action(); $("status").textContent = ""; } catch (error) { $("status").textContent = error.message; }
  refresh();
}

// -- overview --------------------------------------------------------------------------

function sum(values) { return values.reduce((a, b) => a + b, 0); }

function drawChart(canvas, points) {
  canvas.dataset.series = points.map((value) => value.toFixed(2)).join(" ");  // read-only, for tests
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const top = Math.max(1, ...points);
  ctx.fillStyle = "#6b7785";
  ctx.fillText(top.toFixed(0), 4, 12);
  ctx.strokeStyle = "#2f6fdf";
  ctx.lineWidth = 2;
  ctx.beginPath();
  points.forEach((value, index) => {
    const x = width - ((points.length - 1 - index) / (CHART_POINTS - 1)) * width;  // newest at the right
    const y = height - (value / top) * (height - 16);
    if (index === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

function pushRate(series, value) {
  series.push(value);
  if (series.length > CHART_POINTS) series.shift();
}

async function showOverview() {
  const figures = await api("GET", "/api/v1/stats");
  const now = performance.now();
  const received = sum(figures.messages_in), sent = sum(figures.messages_out);
  if (state.last) {
    const seconds = (now - state.last.at) / 1000;
    pushRate(state.rates.in, Math.max(0, (received - state.last.received) / seconds));
    pushRate(state.rates.out, Math.max(0, (sent - state.last.sent) / seconds));
  }
  state.last = { at: now, received, sent };
  const cards = [
    ["Clients connected", figures.clients_connected],
    ["Sessions", figures.sessions],
    ["Messages in", received],
    ["Messages out", sent],
    ["Dropped: queue full", figures.dropped.queue_full],
    ["Dropped: expired", figures.dropped.expired],
    ["Dropped: too large", figures.dropped.too_large],
    ["Queued", figures.queued],
    ["Inflight", figures.inflight],
    ["Retained", figures.retained],
    ["Pending transactions", figures.transactions_pending],
  ].map(([label, value]) => {
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.label = label;
    const v = document.createElement("div"); v.className = "value"; v.textContent = value;
    const l = document.createElement("div"); l.className = "label"; l.textContent = label;
    card.append(v, l);
    return card;
  });
  $("cards").replaceChildren(...cards);
  drawChart($("chart-in"), state.rates.in);
  drawChart($("chart-out"), state.rates.out);
}

// -- clients ---------------------------------------------------------------------------

async function showClients() {
  const q = encodeURIComponent($("client-search").value);
  const page = await api("GET", `/api/v1/clients?q=${q}`);
  fillRows("client-rows", page.items, [
    (c) => c.client_id, (c) => c.peer, (c) => c.protocol, (c) => c.subscriptions,
    (c) => c.queued, (c) => c.inflight, (c) => c.connected_for.toFixed(0),
  ], (tr, c) => tr.addEventListener("click", () => { state.client = c.client_id; showClient(); }));
  if (state.client) await showClient();
}

async function showClient() {
  const id = state.client;
  try {
    const details = await api("GET", `/api/v1/clients/${encodeURIComponent(id)}`);
    $("client-title").textContent = id;
    $("client-json").textContent = JSON.stringify(details, null, 2);
    $("client-details").hidden = false;
  } catch (error) {
    state.client = null;
    $("client-details").hidden = true;
  }
}

function kick() {
  const id = state.client;
  act(async () => {
    await api("POST", `/api/v1/clients/${encodeURIComponent(id)}/kick`, { reason: $("kick-reason").value });
    state.client = null;  // gone: do not ask for its details again
    $("client-details").hidden = true;
  });
}

// -- subscriptions, retained, transactions, nodes --------------------------------------

async function showSubscriptions() {
  const q = encodeURIComponent($("subscription-search").value);
  const page = await api("GET", `/api/v1/subscriptions?q=${q}`);
  fillRows("subscription-rows", page.items, [
    (s) => s.topic_filter, (s) => s.client_id, (s) => s.qos, (s) => s.no_local, (s) => s.identifier,
  ]);
}

async function showRetained() {
  const filter = encodeURIComponent($("retained-filter").value || "#");
  const page = await api("GET", `/api/v1/retained?filter=${filter}`);
  fillRows("retained-rows", page.items, [
    (m) => m.topic, (m) => m.encoding === "utf-8" ? m.payload : "(binary)", (m) => m.payload_size, (m) => m.qos,
  ], (tr, m) => {
    const td = document.createElement("td");
    td.appendChild(button("Delete", () => act(() => api("DELETE", `/api/v1/retained?topic=${encodeURIComponent(m.topic)}`))));
    tr.appendChild(td);
  });
}

async function showTransactions() {
  const page = await api("GET", "/api/v1/transactions");
  fillRows("transaction-rows", page.items, [
    (t) => t.transaction_id, (t) => t.group, (t) => t.topic, (t) => t.checks, (t) => t.next_check_in,
  ], (tr, t) => {
    const td = document.createElement("td");
    const path = `/api/v1/transactions/${encodeURIComponent(t.transaction_id)}/`;
    td.append(button("Commit", () => act(() => api("POST", path + "commit"))),
              button("Roll back", () => act(() => api("POST", path + "rollback"))));
    tr.appendChild(td);
  });
}

async function showNodes() {
  const { nodes } = await api("GET", "/api/v1/nodes");
  const most = Math.max(1, ...nodes.map((n) => n.connections));
  fillRows("node-rows", nodes, [
    (n) => n.node_id + (n.self ? " (this node)" : ""), (n) => n.address, (n) => n.connections,
  ], (tr, n) => {
    const load = document.createElement("td");
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * n.connections) / most}%`;
    load.appendChild(bar);
    tr.append(load, cell(n.version), cell(n.last_beat_age.toFixed(1)));
  });
}

// -- frame -----------------------------------------------------------------------------

const VIEWS = {
  overview: showOverview, clients: showClients, subscriptions: showSubscriptions,
  retained: showRetained, transactions: showTransactions, nodes: showNodes,
};

async function refresh() {
  try { await VIEWS[state.tab](); } catch (error) { $("status").textContent = error.message; }
}

function selectTab(tab) {
  state.tab = tab;
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.tab === tab));
  document.querySelectorAll("section.tab").forEach((s) => { s.hidden = s.id !== tab; });
  refresh();
}

async function start() {
  $("login").hidden = true;
  const node = await api("GET", "/api/v1/node");
  $("node-name").textContent = `${node.node_id} · roost ${node.version}`;
  $("app").hidden = false;
  $("logout").hidden = false;
  selectTab(state.tab);
  state.timer = setInterval(refresh, REFRESH_MS);
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(state.timer);
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    start().catch(() => {});
  });
  $("logout").addEventListener("click", () => logout());
  document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => selectTab(b.dataset.tab)));
  $("kick").addEventListener("click", kick);
  ["client-search", "subscription-search", "retained-filter"].forEach((id) => $(id).addEventListener("input", refresh));
  if (sessionStorage.getItem(TOKEN_KEY)) start().catch(() => {}); else logout();
});
