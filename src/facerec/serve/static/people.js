// The people page: every folder of processed/ as a gallery; rename, merge, move, reject, accept
// or refuse suggestions, cluster loose faces, undo. Galleries load a page of crops when they
// scroll into view and images load lazily, so a folder of 10,000 crops costs one page at a time.
"use strict";

const PAGE = 60;
const SECTIONS = [
  ["person", "People and clusters"], ["loose", "Loose crops"], ["suggested", "Suggestions"],
  ["singletons", "Seen once"], ["others", "Other people in albums"], ["rejected", "Rejected"],
  ["other", "Other folders"],
];
const selected = new Set();
let observer = null;
let targetNames = new Set();   // where crops can be moved now (person folders, _rejected, ...)
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

function updateSelection() {
  document.getElementById("selection").textContent = `${selected.size} selected`;
  for (const id of ["move-btn", "reject-btn", "clear-btn"]) {
    document.getElementById(id).disabled = selected.size === 0;
  }
}

async function loadPage(card) {
  const folder = card.dataset.folder;
  const offset = Number(card.dataset.loaded || 0);
  const gallery = card.querySelector(".gallery");
  const page = await api(`/api/crops?folder=${encodeURIComponent(folder)}&offset=${offset}&limit=${PAGE}`);
  gallery.querySelector(".more")?.remove();
  for (const rel of page.crops) {
    const img = el("img", { class: "crop", loading: "lazy", src: cropUrl(rel), alt: rel, title: rel });
    img.dataset.crop = rel;
    if (selected.has(rel)) img.classList.add("selected");
    img.addEventListener("click", () => {
      if (selected.has(rel)) selected.delete(rel); else selected.add(rel);
      img.classList.toggle("selected", selected.has(rel));
      updateSelection();
    });
    img.addEventListener("mouseenter", () => showPreview(rel, img));
    img.addEventListener("mouseleave", hidePreview);
    gallery.append(img);
  }
  card.dataset.loaded = String(offset + page.crops.length);
  const left = page.total - offset - page.crops.length;
  if (left > 0) {
    gallery.append(el("button", { class: "more", text: `show ${Math.min(left, PAGE)} more (${left} left)`,
                                  onclick: () => loadPage(card).catch(e => setStatus(e.message, true)) }));
  }
}

// The preview of a hovered crop: its source photo with the face box, beside the crop (on the side
// with room, never over it), gone as soon as the pointer leaves the crop.
let previewFor = null;
function hidePreview() {
  previewFor = null;
  document.getElementById("preview").style.display = "none";
}

function placePreview(panel, anchor) {
  const r = anchor.getBoundingClientRect(), gap = 12;
  const w = panel.offsetWidth, h = panel.offsetHeight;
  let left = r.right + gap;
  if (left + w > window.innerWidth - 4) left = Math.max(4, r.left - gap - w);
  const top = Math.min(Math.max(4, r.top), Math.max(4, window.innerHeight - h - 4));
  Object.assign(panel.style, { left: `${left}px`, top: `${top}px` });
}

async function showPreview(rel, anchor) {
  previewFor = rel;
  const info = await api(`/api/crops/info?path=${encodeURIComponent(rel)}`);
  if (previewFor !== rel) return;
  const panel = document.getElementById("preview");
  const img = document.getElementById("preview-img");
  const box = document.getElementById("preview-box");
  const meta = document.getElementById("preview-meta");
  let rect = null, size = null;
  if (info.photo_url && info.box) {
    img.src = info.photo_url;
    const [x, y, w, h] = info.box;
    rect = [x, y, x + w, y + h]; size = [info.width, info.height];
  } else {
    img.src = cropUrl(rel);
    rect = info.box_in_crop;
  }
  img.onload = () => {
    if (!rect) { box.style.display = "none"; return; }
    const sw = size ? size[0] : img.naturalWidth, sh = size ? size[1] : img.naturalHeight;
    const fx = img.clientWidth / sw, fy = img.clientHeight / sh;
    Object.assign(box.style, { display: "block", left: `${rect[0] * fx}px`, top: `${rect[1] * fy}px`,
                               width: `${(rect[2] - rect[0]) * fx}px`, height: `${(rect[3] - rect[1]) * fy}px` });
    if (previewFor === rel) placePreview(panel, anchor);
  };
  meta.textContent = `${rel}` + (info.source ? ` · from ${info.source}` : "") +
    (info.score != null ? ` · score ${Number(info.score).toFixed(3)}` : "") +
    (info.source && !info.photo_url ? " · start with --photos PHOTOS to see the whole photo" : "");
  panel.style.display = "block";
  placePreview(panel, anchor);
}

function groupCard(g) {
  const card = el("div", { class: "card" });
  card.dataset.folder = g.folder;
  card.dataset.kind = g.kind;
  const head = el("div", { class: "head" },
    el("span", { class: "title", text: g.kind === "suggested" ? `for ${g.name}` : g.name }),
    el("span", { class: "count", text: `${g.count} crop${g.count === 1 ? "" : "s"}` }));
  if (g.kind === "person") {
    const input = el("input", { type: "text", class: "rename-input", placeholder: "new name (existing = merge)" });
    const go = () => act(() => api(`/api/people/${encodeURIComponent(g.folder)}/rename`, { json: { new_name: input.value } }),
                         r => r.merged ? `merged ${g.folder} into ${input.value}` : `renamed ${g.folder} to ${input.value}`);
    input.addEventListener("keydown", e => { if (e.key === "Enter") go(); });
    head.append(input, el("button", { class: "rename-btn", text: "Rename / merge", onclick: go }));
  }
  if (g.kind === "suggested") {
    head.append(
      el("button", { class: "accept-btn primary", text: `Accept all into ${g.name}`,
                     onclick: () => act(() => api("/api/moves", { json: { folder: g.folder, to: g.name } }), r => `accepted ${r.moved}`) }),
      el("button", { class: "refuse-btn", text: "Refuse all",
                     onclick: () => act(() => api("/api/moves", { json: { folder: g.folder, to: "_singletons" } }), r => `refused ${r.moved}`) }));
  }
  card.append(head, el("div", { class: "gallery" }));
  observer.observe(card);
  return card;
}

async function render() {
  const { groups } = await api("/api/people");
  const root = document.getElementById("sections");
  if (observer) observer.disconnect();
  observer = new IntersectionObserver(entries => {
    for (const e of entries) {
      if (e.isIntersecting && !e.target.dataset.loaded) {
        e.target.dataset.loaded = "0";
        loadPage(e.target).catch(err => setStatus(err.message, true));
        observer.unobserve(e.target);
      }
    }
  }, { rootMargin: "300px" });
  root.replaceChildren();
  hidePreview();
  // loose crops (or, when none are left, the faces seen once) can be clustered from here
  const clusterIn = groups.some(g => g.kind === "loose") ? "loose" : "singletons";
  for (const [kind, title] of SECTIONS) {
    const mine = groups.filter(g => g.kind === kind);
    if (!mine.length) continue;
    // counts are crops (a section of one folder: its crops; of several: folders and crops)
    const crops = mine.reduce((n, g) => n + g.count, 0);
    const count = mine.length > 1 || kind === "person" ? `${plural(mine.length, "folder")}, ${plural(crops, "crop")}`
                                                        : plural(crops, "crop");
    const head = el("h2", { text: `${title} (${count})` });
    if (kind === clusterIn) {
      head.append(" ", el("button", { id: "cluster-btn", class: "primary", text: "Cluster loose faces",
        title: "group the loose crops and those seen once by person, as facerec annotate does (undoable)",
        onclick: clusterLoose }));
    }
    const section = el("section", { id: `section-${kind}` }, head);
    for (const g of mine) section.append(groupCard(g));
    root.append(section);
  }
  if (!groups.length) root.append(el("p", { class: "empty", text: "No crops in processed/ yet: run facerec detect / annotate (or facerec run)." }));
  const people = groups.filter(g => g.kind === "person").map(g => g.folder);
  targetNames = new Set([...people, "_rejected", "_singletons"]);
  const targets = document.getElementById("targets");
  targets.replaceChildren(...people.map(name => el("option", { value: name })),
                          el("option", { value: "_rejected" }), el("option", { value: "_singletons" }));
  // a name typed earlier that is gone now (merged, renamed, undone) would create a new person
  const moveTo = document.getElementById("move-to");
  if (moveTo.value.trim() && !targetNames.has(moveTo.value.trim())) moveTo.value = "";
  updateSelection();
}

function clusterLoose() {
  act(() => api("/api/cluster", { method: "POST" }), r => {
    const made = Object.keys(r.clusters).length;
    const parts = [`${plural(made, "new cluster")} (${Object.keys(r.clusters).join(", ") || "none"})`,
                   `${r.singletons} seen once`];
    const suggested = Object.values(r.suggested).reduce((a, b) => a + b, 0);
    const rejected = Object.values(r.rejected).reduce((a, b) => a + b, 0);
    if (suggested) parts.push(`${suggested} suggested`);
    if (rejected) parts.push(`${rejected} rejected`);
    return `clustered ${plural(r.loose, "loose crop")}: ${parts.join(", ")}. Rename the clusters to people's names.`;
  }, "clustering loose faces… (embedding new crops takes a moment)");
}

function describeUndo(r) {
  return `undone: ${r.what || "the last action"} (${plural(r.crops, "crop")} back where ${r.crops === 1 ? "it was" : "they were"})`;
}

async function act(call, describe, working = "working…") {
  setStatus(working);
  try {
    const result = await call();
    selected.clear();
    await render();
    setStatus(describe(result));
  } catch (e) {
    setStatus(e.message, true);
  }
}

function moveSelected(to) {
  if (!to) { setStatus("type where to move them first", true); return; }
  const crops = [...selected];
  act(() => api("/api/moves", { json: { crops, to } }), r => `moved ${r.moved} to ${to}`);
}

document.getElementById("move-btn").addEventListener("click", () => moveSelected(document.getElementById("move-to").value.trim()));
document.getElementById("reject-btn").addEventListener("click", () => moveSelected("_rejected"));
document.getElementById("clear-btn").addEventListener("click", () => {
  selected.clear();
  document.querySelectorAll(".crop.selected").forEach(n => n.classList.remove("selected"));
  updateSelection();
});
document.getElementById("undo-btn").addEventListener("click", () =>
  act(() => api("/api/undo", { method: "POST" }), describeUndo));
document.getElementById("preview").addEventListener("click", hidePreview);
window.addEventListener("scroll", hidePreview, { passive: true });
render().then(() => setStatus("ready")).catch(e => setStatus(e.message, true));
