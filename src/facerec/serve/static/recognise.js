// The recognise page: photos go to POST /api/predict; each face is boxed and named on a canvas
// (green: a known person, orange: unknown), listed below it, and the JSON answer is shown as is.
// Photos are shown large enough to see (small ones scaled up, large ones down to the page), the
// labels stay inside the photo and never overlap, and a photo that cannot be read says why.
"use strict";

const MIN_SHOWN = 480;   // CSS pixels: a 100 px photo is scaled up to this width
const MAX_SHOWN = 900;

function errorCard(name, reason) {
  const card = el("div", { class: "result error" },
    el("div", { class: "title", text: name }),
    el("p", { class: "error-text", text: `Could not read this photo: ${reason}` }));
  card.dataset.image = name;
  card.dataset.error = reason;
  return card;
}

function overlaps(a, b) {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

// Where each face's label goes: above its box if there is room, else below it, else inside its
// top; always inside the canvas, and moved down (then up) until it overlaps no other label.
function placeLabels(faces, width, height, sizeOf) {
  const placed = [];
  for (const f of faces) {
    const { w, h } = sizeOf(f);
    const [bx, by, bw, bh] = f.rect;
    const x = Math.min(Math.max(0, bx), Math.max(0, width - w));
    const candidates = [by - h, by + bh, by].map(y => Math.min(Math.max(0, y), Math.max(0, height - h)));
    let spot = null;
    for (const y of candidates) {
      const r = { x, y, w, h };
      if (!placed.some(p => overlaps(p, r))) { spot = r; break; }
    }
    for (let step = 1; !spot && step < 200; step++) {   // slide down, then up, by a label height
      for (const y of [candidates[0] + step * h, candidates[0] - step * h]) {
        const r = { x, y: Math.min(Math.max(0, y), Math.max(0, height - h)), w, h };
        if (!placed.some(p => overlaps(p, r))) { spot = r; break; }
      }
    }
    placed.push(spot || { x, y: candidates[0], w, h });
  }
  return placed;
}

function drawResult(file, result) {
  if (result.error) return errorCard(result.image, result.error);
  const card = el("div", { class: "result" });
  card.dataset.image = result.image;
  const canvas = el("canvas");
  const list = el("ol", { class: "faces" });
  card.append(el("div", { class: "title", text: `${result.image}: ${result.faces.length} face(s)` }), canvas, list);
  for (const f of result.faces) {
    const conf = f.confidence == null ? "n/a" : f.confidence.toFixed(3);
    const li = el("li", { class: `face ${f.label === "unknown" ? "unknown" : "known"}`, text: `${f.label} (confidence ${conf}${f.label === "unknown" ? `, closest ${f.candidate}` : ""})` });
    li.dataset.label = f.label;
    list.append(li);
  }
  const img = new Image();
  img.onerror = () => card.replaceWith(errorCard(result.image, "the browser cannot show this image"));
  img.onload = () => {
    // the browser shows the photo upright (EXIF) like the server read it, so boxes match
    const room = Math.max(MIN_SHOWN, Math.min(MAX_SHOWN, (card.clientWidth || MAX_SHOWN) - 20));
    const shown = Math.min(room, Math.max(MIN_SHOWN, img.naturalWidth));
    const k = shown / img.naturalWidth;                       // photo pixels -> CSS pixels
    const dpr = window.devicePixelRatio || 1;
    const W = Math.round(img.naturalWidth * k), H = Math.round(img.naturalHeight * k);
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
    canvas.style.width = `${W}px`;   // height follows (max-width: 100% may narrow it)
    const ctx = canvas.getContext("2d");
    ctx.scale(dpr, dpr);
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(img, 0, 0, W, H);
    const s = k * img.naturalWidth / (result.width || img.naturalWidth);   // result pixels -> CSS
    const line = Math.max(2, Math.round(W / 300));
    const px = Math.max(13, Math.min(18, Math.round(W / 45)));
    ctx.font = `bold ${px}px sans-serif`;
    const faces = result.faces.map(f => ({ ...f, rect: f.box.map(v => v * s),
      text: f.confidence == null ? f.label : `${f.label} ${f.confidence.toFixed(2)}` }));
    const labels = placeLabels(faces, W, H, f => ({ w: ctx.measureText(f.text).width + 2 * line + 4, h: px + 2 * line }));
    faces.forEach((f, i) => {
      const [x, y, w, h] = f.rect;
      const colour = f.label === "unknown" ? "#ff8c00" : "#28c83c";
      ctx.lineWidth = line; ctx.strokeStyle = colour; ctx.strokeRect(x, y, w, h);
      const r = labels[i];
      ctx.fillStyle = colour; ctx.fillRect(r.x, r.y, r.w, r.h);
      ctx.fillStyle = "#000"; ctx.textBaseline = "top"; ctx.fillText(f.text, r.x + line + 2, r.y + line);
    });
    card.dataset.labels = JSON.stringify(labels.map(r => [r.x, r.y, r.w, r.h].map(v => Math.round(v * 10) / 10)));
    card.dataset.shown = JSON.stringify([W, H]);
    card.dataset.drawn = "1";
  };
  img.src = URL.createObjectURL(file);
  return card;
}

async function recognise(files) {
  files = [...files];
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  setStatus(`recognising ${files.length} photo(s)…`);
  const box = document.getElementById("results");
  try {
    const results = await api("/api/predict", { method: "POST", body: form });
    document.getElementById("json").textContent = JSON.stringify(results, null, 1);
    box.replaceChildren(...results.map((r, i) => drawResult(files[i], r)));
    const bad = results.filter(r => r.error).length;
    setStatus(`done: ${results.reduce((n, r) => n + r.faces.length, 0)} face(s)` + (bad ? `; ${bad} photo(s) could not be read` : ""), bad > 0);
  } catch (e) {
    // the whole request was refused (one photo that cannot be read, too large...): say so where
    // the results go, instead of leaving the previous ones (or nothing) there
    document.getElementById("json").textContent = e.message;
    const reason = e.message.replace(/^\d+: /, "");
    box.replaceChildren(...files.map(f => errorCard(f.name, reason)));
    setStatus(e.message, true);
  }
}

const drop = document.getElementById("drop");
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over"); recognise(e.dataTransfer.files); });
document.getElementById("file-input").addEventListener("change", e => recognise(e.target.files));

api("/api/health").then(h => {
  const m = h.model;
  document.getElementById("model").textContent = m.checkpoint
    ? `model: ${m.labels.length} people (${m.labels.join(", ")}), unknown below ${m.threshold == null ? "–" : m.threshold.toFixed(3)}`
    : "no model";
  document.getElementById("no-model").style.display = m.checkpoint ? "none" : "block";
  document.getElementById("drop").style.display = m.checkpoint ? "block" : "none";
}).catch(e => setStatus(e.message, true));
