// The live page: one snapshot, then every change over server-sent events.
"use strict";

const nodes = new Map();  // key -> node
const rows = new Map();   // key -> <tr>
let deployment = null;
let selected = null;
let pending = false;
const COLUMNS = ["position", "name", "state", "step", "session", "mb", "rate", "eta",
                 "result", "reason"];

function row(key) {
  let tr = rows.get(key);
  if (!tr) {
    tr = ka.el("tr", {class: "node"});
    tr.dataset.key = key;
    for (const c of COLUMNS) {
      const td = ka.el("td", {class: c});
      if (["position", "mb", "rate", "eta"].includes(c)) td.classList.add("num");
      tr.append(td);
    }
    tr.addEventListener("click", () => select(key));
    rows.set(key, tr);
  }
  return tr;
}

function cells(n) {
  return [n.position || "", n.name, n.state, n.step, n.session, ka.mb(n.bytes),
          n.mb_per_s.toFixed(1), n.eta, n.result || "", n.reason || ""];
}

function render() {
  pending = false;
  if (deployment) {
    const t = deployment.totals;
    ka.setText("title", deployment.prefix + " · " + (deployment.source || "") +
               (deployment.finished ? (deployment.ok ? " · finished" : " · finished, with failures") : ""));
    ka.setText("t-installed", t.installed);
    ka.setText("t-failed", t.failed);
    ka.setText("t-running", t.running);
    ka.setText("t-nodes", t.nodes + " / " + deployment.nodes_expected);
    ka.setText("t-session", deployment.session || "-");
    ka.setText("t-rate", t.mb_per_s.toFixed(1));
    ka.setText("t-rate-node", t.mb_per_s_node.toFixed(1));
    ka.setText("t-elapsed", ka.duration(deployment.elapsed));
    ka.setText("t-eta", t.eta || "-");
    ka.setText("errors", deployment.errors.join("; "));
  }
  const filter = document.getElementById("filter").value;
  const failuresFirst = document.getElementById("failures-first").checked;
  let list = [...nodes.values()].sort((a, b) => (a.position || 1e9) - (b.position || 1e9));
  drawChain(list);
  if (filter) list = list.filter((n) => matches(n, filter));
  if (failuresFirst) list.sort((a, b) => Number(b.failing) - Number(a.failing));
  const body = document.getElementById("nodes");
  const keep = new Set(list.map((n) => n.key));
  for (const [key, tr] of rows) if (!keep.has(key)) tr.remove();
  list.forEach((n, i) => {
    const tr = row(n.key);
    const values = cells(n);
    tr.querySelectorAll("td").forEach((td, i) => {
      const text = String(values[i]);
      if (td.textContent !== text) td.textContent = text;
    });
    const state = n.result === "ok" ? "installed" : n.failing ? "failed" : n.state;
    tr.className = "node state-" + state + (n.key === selected ? " selected" : "");
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
  });
  ka.setText("shown", list.length + " of " + nodes.size + " node(s) shown");
}

function matches(n, filter) {
  if (filter === "failed") return n.failing;
  if (filter === "installed") return n.result === "ok";
  if (filter === "running") return n.result === null && !n.failing;
  return n.state === filter;
}

// The chain as the sender sees it: the golden node, then every node in chain order, each
// link drawn from a node to the next one. Rows snake (left to right, then back) so that a
// link never crosses the picture, and squares shrink as nodes grow, so 1,000 fit. A failed
// node's links are broken (red, dashed); a node re-attached past a failed one gets its
// healed link, an arc from the nearest working node before it.
let chainDrawn = "";

function chainClass(n) {
  return n.result === "ok" ? "ok" : n.failing ? "failed" : n.state;
}

function drawChain(list) {
  const chain = document.getElementById("chain");
  const width = Math.max(200, chain.clientWidth || 800);
  const signature = width + "|" + list.map((n) => n.key + ":" + chainClass(n) + ":" +
                                           n.healed).join("|");
  if (signature === chainDrawn) return;  // nothing to redraw: cheap at 1,000 nodes
  chainDrawn = signature;
  const size = list.length > 300 ? 8 : list.length > 60 ? 12 : 18;
  const step = size * 2, pad = 4;
  const perRow = Math.max(2, Math.floor((width - 2 * pad) / step));
  const items = [{key: null, name: "golden (the sender)", cls: "sender"},
                 ...list.map((n) => ({key: n.key, name: n.name, cls: chainClass(n), node: n}))];
  const rows = Math.ceil(items.length / perRow);
  const at = (i) => {
    const r = Math.floor(i / perRow), c = i % perRow;
    const col = r % 2 === 0 ? c : perRow - 1 - c;
    return {x: pad + col * step + size / 2, y: pad + size + r * step + size / 2};
  };
  const svg = ka.svg("svg", {width: width, height: pad * 2 + size + rows * step,
                             role: "img", "aria-label": "the chain, from the sender"});
  const links = ka.svg("g", {class: "links"}), squares = ka.svg("g", {class: "squares"});
  for (let i = 1; i < items.length; i++) {
    const a = at(i - 1), b = at(i);
    const broken = items[i].cls === "failed" || items[i - 1].cls === "failed";
    links.append(ka.svg("line", {x1: a.x, y1: a.y, x2: b.x, y2: b.y,
                                 class: "link" + (broken ? " broken" : "")}));
    const n = items[i].node;
    if (n && n.healed && !n.failing) {
      let j = i - 1;
      while (j > 0 && items[j].cls === "failed") j--;
      const from = at(j);
      const lift = size * (i - j > 1 ? 1.1 : 0.7);
      const mx = (from.x + b.x) / 2, my = Math.min(from.y, b.y) - lift;
      links.append(ka.svg("path", {d: `M${from.x},${from.y - size / 2} Q${mx},${my} ` +
                                      `${b.x},${b.y - size / 2}`, class: "healed"}));
    }
  }
  items.forEach((item, i) => {
    const p = at(i);
    const r = ka.svg("rect", {x: p.x - size / 2, y: p.y - size / 2, width: size, height: size,
                              class: item.cls + (item.node && item.node.healed ? " healed" : "")});
    const title = ka.svg("title");
    title.textContent = item.name + (item.node ? ": " + item.node.state +
      (item.node.reason ? " · " + item.node.reason : "") +
      (item.node.healed ? " · re-attached " + item.node.healed + "×" : "") : "");
    r.append(title);
    if (item.key) {
      r.dataset.key = item.key;
      r.addEventListener("click", () => select(item.key));
    }
    squares.append(r);
  });
  svg.append(links, squares);
  chain.replaceChildren(svg);
}

function schedule() {
  if (!pending) {
    pending = true;
    setTimeout(() => requestAnimationFrame(render), 200);
  }
}

function addEvents(events) {
  const box = document.getElementById("events");
  for (const e of events) {
    const time = new Date(e.time * 1000).toLocaleTimeString();
    box.append(ka.el("div", {text: time + " [" + e.session + "] " + e.message}));
  }
  while (box.childNodes.length > 300) box.firstChild.remove();
  box.scrollTop = box.scrollHeight;
}

let follow = null;  // the EventSource of the selected node's log
const LOG_LINES = 2000;

async function select(key) {
  selected = key;
  schedule();
  document.getElementById("detail").hidden = false;
  const n = nodes.get(key);
  ka.setText("detail-name", n ? n.name : key);
  ka.setText("detail-info", n ? (n.address || "") + " · " + n.sessions.length + " session(s)" +
             (n.reason ? " · " + n.reason : "") : "");
  if (follow) follow.close();
  follow = null;
  ka.setText("log", "");
  if (n && n.result === null && !(deployment && deployment.finished)) followLog(key);
  else await showLog(key);
}

// A running node's log as it comes (its status service, through the golden node); when it
// cannot be followed (too many followed, no status service), a look every 3 s instead.
function followLog(key) {
  const pre = document.getElementById("log");
  const es = new EventSource("/api/v1/nodes/" + encodeURIComponent(key) + "/log/follow");
  follow = es;
  const stepIs = (step) => ka.setText("log-status", "following · step: " + (step || "-"));
  ka.setText("log-status", "following…");
  es.addEventListener("step", (m) => stepIs(JSON.parse(m.data).step));
  es.addEventListener("line", (m) => {
    const d = JSON.parse(m.data);
    pre.append(d.line + "\n");  // a text node: a log line is never markup
    while (pre.childNodes.length > LOG_LINES) pre.firstChild.remove();
    pre.scrollTop = pre.scrollHeight;
    stepIs(d.step);
  });
  es.addEventListener("end", (m) => {
    es.close();
    if (follow === es) follow = null;
    ka.setText("log-status", JSON.parse(m.data).reason);
  });
  es.onerror = () => {
    es.close();
    if (follow !== es) return;
    follow = null;
    if (!pre.childNodes.length) showLog(key);
  };
}

async function showLog(key) {
  if (selected !== key || follow) return;
  try {
    const log = await ka.getJSON("/api/v1/nodes/" + encodeURIComponent(key) + "/log");
    ka.setText("log-status", log.error ? log.error : "step: " + (log.step || "-"));
    if (log.lines.length || !log.error) ka.setText("log", log.lines.join("\n"));
  } catch (e) {
    ka.setText("log-status", e.message);
  }
  const n = nodes.get(key);
  if (!deployment || !deployment.finished || (n && n.result === null)) {
    setTimeout(() => showLog(key), 3000);
  }
}

function listen(version) {
  const events = new EventSource("/api/v1/events?after=" + version);
  events.addEventListener("update", (m) => {
    const change = JSON.parse(m.data);
    deployment = change.deployment;
    for (const n of change.nodes) nodes.set(n.key, n);
    addEvents(change.events);
    ka.setText("status", "live");
    schedule();
  });
  events.addEventListener("end", () => {
    events.close();
    ka.setText("status", "finished");
  });
  events.onerror = () => ka.setText("status", "reconnecting…");
}

async function start() {
  document.getElementById("filter").addEventListener("change", schedule);
  document.getElementById("failures-first").addEventListener("change", schedule);
  try {
    deployment = await ka.getJSON("/api/v1/deployment");
  } catch (e) {
    document.getElementById("none").hidden = false;
    document.getElementById("totals").hidden = true;
    ka.setText("title", "history only");
    return;
  }
  listen(0);  // from the start: every node and every kept event
  render();
}

start();
