"use strict";

function link(name) {
  return ka.el("a", {href: "/deployments/" + name.split("/").map(encodeURIComponent).join("/"),
                     text: name});
}

function line(d, indent) {
  const result = d.error ? d.error : d.interrupted ? "interrupted" : d.ok ? "ok" : "failed";
  const tr = ka.el("tr", {class: "deployment state-" + (d.ok ? "ok" : "failed")});
  const name = ka.el("td", {});
  name.append(indent ? "↳ " : "", link(d.name));
  tr.append(ka.el("td", {text: ka.date(d.ended)}), name,
            ka.el("td", {text: (d.source || "-") + (d.kind === "serve" ? " (served)" : "")}),
            ka.el("td", {class: "num", text: d.nodes ?? "-"}),
            ka.el("td", {class: "num", text: d.installed ?? "-"}),
            ka.el("td", {class: "num", text: d.failed ?? "-"}),
            ka.el("td", {class: "num", text: ka.duration(d.seconds)}),
            ka.el("td", {class: "num", text: d.mb_per_s ?? "-"}),
            ka.el("td", {text: result}));
  return tr;
}

async function start() {
  let list;
  try {
    list = await ka.getJSON("/api/v1/history");
  } catch (e) {
    ka.setText("error", e.message);
    return;
  }
  const body = document.getElementById("deployments");
  for (const d of list) {
    body.append(line(d, false));
    for (const w of d.waves || []) body.append(line(w, true));
  }
  document.getElementById("empty").hidden = list.length > 0;
}

start();
