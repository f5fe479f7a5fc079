// The recognise page: photos go to POST /api/predict; each face is boxed and named on a canvas
// (green: a known person, orange: unknown), listed below it, and the JSON answer is shown as is.
"use strict";

function drawResult(file, result) {
  const card = el("div", { class: "result" });
  card.dataset.image = result.image;
  const canvas = el("canvas");
  const list = el("ol", { class: "faces" });
  card.append(el("div", { text: result.image + (result.error ? ` — ${result.error}` : `: ${result.faces.length} face(s)`) }), canvas, list);
  for (const f of result.faces) {
    const conf = f.confidence == null ? "n/a" : f.confidence.toFixed(3);
    const li = el("li", { class: `face ${f.label === "unknown" ? "unknown" : "known"}`, text: `${f.label} (confidence ${conf}${f.label === "unknown" ? `, closest ${f.candidate}` : ""})` });
    li.dataset.label = f.label;
    list.append(li);
  }
  const img = new Image();
  img.onload = () => {
    // the browser shows the photo upright (EXIF) like the server read it, so boxes match
    const scale = Math.min(1, 900 / img.naturalWidth);
    canvas.width = Math.round(img.naturalWidth * scale);
    canvas.height = Math.round(img.naturalHeight * scale);
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    const k = canvas.width / (result.width || img.naturalWidth);
    const line = Math.max(2, Math.round(canvas.width / 250));
    ctx.font = `bold ${Math.max(13, Math.round(canvas.width / 40))}px sans-serif`;
    for (const f of result.faces) {
      const [x, y, w, h] = f.box.map(v => v * k);
      const colour = f.label === "unknown" ? "#ff8c00" : "#28c83c";
      ctx.lineWidth = line; ctx.strokeStyle = colour; ctx.strokeRect(x, y, w, h);
      const text = f.confidence == null ? f.label : `${f.label} ${f.confidence.toFixed(2)}`;
      const tw = ctx.measureText(text).width, th = parseInt(ctx.font.match(/(\d+)px/)[1], 10);
      const ty = y - th - 2 * line >= 0 ? y - th - 2 * line : y + h;
      ctx.fillStyle = colour; ctx.fillRect(x, ty, tw + 2 * line, th + 2 * line);
      ctx.fillStyle = "#000"; ctx.textBaseline = "top"; ctx.fillText(text, x + line, ty + line);
    }
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
  try {
    const results = await api("/api/predict", { method: "POST", body: form });
    document.getElementById("json").textContent = JSON.stringify(results, null, 1);
    const box = document.getElementById("results");
    box.replaceChildren(...results.map((r, i) => drawResult(files[i], r)));
    setStatus(`done: ${results.reduce((n, r) => n + r.faces.length, 0)} face(s)`);
  } catch (e) {
    document.getElementById("json").textContent = e.message;
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
