// Shared by the dashboard's pages. Everything that came from a node (names, reasons, logs,
// steps) is put in the page with textContent or as SVG text nodes: never as markup.
"use strict";

const ka = {};

// The token of a first visit is in the cookie now: keep it out of the address bar,
// the history and any screenshot.
if (new URLSearchParams(location.search).has("token")) {
  history.replaceState(null, "", location.pathname);
}

ka.el = function (tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k === "href") e.setAttribute("href", v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);  // strings become text nodes
  return e;
};

ka.svg = function (tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
};

ka.getJSON = async function (path) {
  const r = await fetch(path, {credentials: "same-origin", headers: {Accept: "application/json"}});
  const body = await r.json().catch(() => ({error: r.statusText}));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
};

ka.mb = (bytes) => (bytes / 1e6).toFixed(1);
ka.duration = function (seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + String(r).padStart(2, "0");
};
ka.date = (t) => (t ? new Date(t * 1000).toLocaleString() : "-");
ka.setText = function (id, text) {
  document.getElementById(id).textContent = text;
};
