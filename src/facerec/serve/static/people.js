// The people page: every folder of processed/ as a gallery; rename, merge, move, reject, accept
// or refuse suggestions, undo. Galleries load a page of crops when they scroll into view and
// images load lazily, so a folder of 10,000 crops costs one page at a time.
"use strict";

const PAGE = 60;
const SECTIONS = [
  ["person", "People and clusters"], ["loose", "Loose crops"], ["suggested", "Suggestions"],
  ["singletons", "Seen once"], ["others", "Other people in albums"], ["rejected", "Rejected"],
  ["other", "Other folders"],
];
const selected = new Set();
let observer = null;

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
    img.addEventListener("mouseenter", () => showPreview(rel));
    gallery.append(img);
  }
  card.dataset.loaded = String(offset + page.crops.length);
  const left = page.total - offset - page.crops.length;
  if (left > 0) {
    gallery.append(el("button", { class: "more", text: `show ${Math.min(left, PAGE)} more (${left} left)`,
                                  onclick: () => loadPage(card).catch(e => setStatus(e.message, true)) }));
  }
}

let previewFor = null;
async function showPreview(rel) {
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
  };
  meta.textContent = `${rel}` + (info.source ? ` · from ${info.source}` : "") +
    (info.score != null ? ` · score ${Number(info.score).toFixed(3)}` : "") +
    (info.source && !info.photo_url ? " · start with --photos PHOTOS to see the whole photo" : "");
  panel.style.display = "block";
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
  for (const [kind, title] of SECTIONS) {
    const mine = groups.filter(g => g.kind === kind);
    if (!mine.length) continue;
    const section = el("section", { id: `section-${kind}` }, el("h2", { text: `${title} (${mine.length})` }));
    for (const g of mine) section.append(groupCard(g));
    root.append(section);
  }
  if (!groups.length) root.append(el("p", { class: "empty", text: "No crops in processed/ yet: run facerec detect / annotate (or facerec run)." }));
  const targets = document.getElementById("targets");
  targets.replaceChildren(...groups.filter(g => g.kind === "person").map(g => el("option", { value: g.folder })),
                          el("option", { value: "_rejected" }), el("option", { value: "_singletons" }));
  updateSelection();
}

async function act(call, describe) {
  setStatus("working…");
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
  act(() => api("/api/undo", { method: "POST" }), r => `undid ${r.op}: ${r.restored} put back`));
document.getElementById("preview").addEventListener("click", e => { e.currentTarget.style.display = "none"; });
render().then(() => setStatus("ready")).catch(e => setStatus(e.message, true));
