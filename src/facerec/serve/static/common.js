// facerec serve: the few helpers every page uses. The token (when the server has one) travels
// in an HttpOnly cookie set from the ?token= link, so fetch() only has to send same-origin cookies.
"use strict";

async function api(path, options = {}) {
  const opts = { credentials: "same-origin", ...options };
  if (opts.json !== undefined) {
    opts.method = opts.method || "POST";
    opts.headers = { "Content-Type": "application/json", ...(opts.headers || {}) };
    opts.body = JSON.stringify(opts.json);
    delete opts.json;
  }
  const response = await fetch(path, opts);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    let detail = data && data.detail !== undefined ? data.detail : response.statusText;
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    throw new Error(`${response.status}: ${detail}`);
  }
  return data;
}

// Crop paths are relative to processed/; each segment is URL-encoded on its own.
function cropUrl(rel) {
  return "/files/processed/" + rel.split("/").map(encodeURIComponent).join("/");
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;      // never innerHTML: names come from disk
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function setStatus(message, isError = false) {
  const s = document.getElementById("status");
  if (!s) return;
  s.textContent = message;
  s.className = isError ? "error" : "";
}
