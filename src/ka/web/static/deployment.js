"use strict";

const COLOURS = {ok: "#2e7d32", failed: "#c62828", warning: "#ef6c00", skipped: "#9e9e9e"};
const LABEL = 160, ROW = 22, WIDTH = 900;

function timeline(nodes, t0) {
  const withSteps = nodes.filter((n) => n.report && Array.isArray(n.report.steps));
  const box = document.getElementById("timeline");
  if (!withSteps.length) {
    box.append(ka.el("p", {text: "No node report with steps."}));
    return;
  }
  let end = t0;
  for (const n of withSteps) for (const s of n.report.steps) end = Math.max(end, s.started + s.seconds);
  const span = Math.max(end - t0, 1);
  const height = ROW * withSteps.length + 30;
  const svg = ka.svg("svg", {width: LABEL + WIDTH + 20, height: height, id: "timeline-chart",
                             role: "img"});
  // A step that began before the deployment's estimated start is drawn from it, never over
  // the names.
  const x = (t) => LABEL + Math.max(0, (t - t0) / span) * WIDTH;
  for (let i = 0; i <= 5; i++) {  // the time axis
    const t = t0 + (span * i) / 5;
    svg.append(ka.svg("line", {x1: x(t), x2: x(t), y1: 0, y2: height - 18, stroke: "#ddd"}));
    const label = ka.svg("text", {x: x(t) - 10, y: height - 4});
    label.textContent = ka.duration(t - t0);
    svg.append(label);
  }
  withSteps.forEach((n, i) => {
    const y = i * ROW + 4;
    const name = ka.svg("text", {x: 4, y: y + 13, class: "node-name",
                                 textLength: LABEL - 12, lengthAdjust: "spacingAndGlyphs"});
    name.textContent = n.name;
    if (String(n.name).length <= 22) name.removeAttribute("textLength");
    svg.append(name);
    for (const s of n.report.steps) {
      const bar = ka.svg("rect", {x: x(s.started), y: y, height: ROW - 6,
                                  width: Math.max(((s.seconds) / span) * WIDTH, 2),
                                  fill: COLOURS[s.result] || "#1565c0", stroke: "#fff",
                                  class: "step"});
      const tip = ka.svg("title", {});
      tip.textContent = s.name + ": " + s.result + ", " + s.seconds.toFixed(1) + " s" +
        (s.detail ? " (" + s.detail + ")" : "");
      bar.append(tip);
      svg.append(bar);
    }
  });
  box.append(svg);
}

function nodeTable(nodes) {
  const body = document.getElementById("nodes");
  const reports = document.getElementById("reports");
  for (const n of nodes) {
    const secs = n.report && typeof n.report.seconds === "number" ? n.report.seconds.toFixed(1) : "-";
    body.append(ka.el("tr", {class: "state-" + (n.result === "ok" ? "ok" : "failed")},
      ka.el("td", {class: "num", text: n.position ?? ""}), ka.el("td", {text: n.name ?? ""}),
      ka.el("td", {text: n.result ?? ""}), ka.el("td", {class: "num", text: secs}),
      ka.el("td", {text: n.address || n.ip || "-"}), ka.el("td", {text: n.mac || "-"}),
      ka.el("td", {class: "reason", text: n.reason || ""})));
    const details = ka.el("details", {}, ka.el("summary", {text: String(n.name ?? "")}),
      ka.el("pre", {text: n.report ? JSON.stringify(n.report, null, 2) : "no report stored"}));
    reports.append(details);
  }
}

async function start() {
  const name = location.pathname.replace(/^\/deployments\//, "");
  const parts = name.split("/").map(decodeURIComponent);
  let d;
  try {
    d = await ka.getJSON("/api/v1/history/" + parts.map(encodeURIComponent).join("/"));
  } catch (e) {
    ka.setText("error", e.message);
    return;
  }
  ka.setText("title", parts.join("/"));
  document.title = "ka: " + parts.join("/");
  ka.setText("info", (d.source || "") + " · ended " + ka.date(d.ended) + " · " +
             ka.duration(d.seconds) + " · " + (d.installed ?? 0) + " installed, " +
             (d.failed ?? 0) + " failed" + (d.mb_per_s ? " · " + d.mb_per_s + " MB/s" : "") +
             (d.errors && d.errors.length ? " · errors: " + [].concat(d.errors).join("; ") : ""));
  if (d.kind === "serve") {
    const box = document.getElementById("waves");
    for (const w of d.waves || []) {
      box.append(ka.el("p", {}, ka.el("a", {href: "/deployments/" + w.name.split("/")
        .map(encodeURIComponent).join("/"), text: w.name}), " " + (w.installed ?? 0) +
        " installed, " + (w.failed ?? 0) + " failed"));
    }
    return;
  }
  timeline(d.nodes || [], d.started);
  nodeTable(d.nodes || []);
}

start();
