// The train page: split + train + evaluate the labelled person folders in the server's background
// thread (POST /api/train), poll GET /api/train/{id} for the epoch and metrics, show the result.
"use strict";

let polling = null;
const pct = v => (v == null ? "–" : `${(100 * v).toFixed(1)} %`);
// every number as what it is: accuracies as percentages, losses and scores with three decimals
// (1 and 0.447 side by side read as if on one scale), epochs as whole numbers
const fmt = (v, key = "") => (v == null ? "–" : key === "epoch" ? String(v)
  : /_acc$|^accuracy$/.test(key) ? pct(v) : typeof v === "number" ? v.toFixed(3) : String(v));

async function showPeople() {
  const { groups } = await api("/api/people");
  const people = groups.filter(g => g.kind === "person" && g.count > 0);
  const box = document.getElementById("people");
  box.replaceChildren();
  if (!people.length) { box.append(el("span", { class: "empty", text: "No person folders with crops: label some on the People page." })); return; }
  box.append(el("span", { text: people.map(g => `${g.name} (${g.count})`).join(" · ") }));
  if (people.some(g => /^person_\d+$/.test(g.name))) {
    box.append(el("p", { class: "note", text: "Some folders are still unnamed clusters (person_NN): rename them on the People page to get names in predictions." }));
  }
}

function showJob(job) {
  const prog = document.getElementById("progress");
  const last = job.history.length ? job.history[job.history.length - 1] : {};
  const bar = el("div", { class: "bar" }, el("div"));
  bar.firstChild.style.width = `${Math.min(100, (100 * job.epoch) / job.max_epochs)}%`;
  const keys = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_f1"];
  const table = el("table", {}, el("tr", {}, ...keys.map(k => el("th", { text: k }))));
  for (const row of job.history.slice(-8)) table.append(el("tr", {}, ...keys.map(k => el("td", { text: fmt(row[k], k) }))));
  const r = job.result || {};
  let epochText = `  epoch ${job.epoch} / ${job.max_epochs}`;
  if (job.state === "done" && r.stopped_early) {
    epochText += ` — stopped early: ${r.stopped_early}` + (r.best_epoch ? `; the model kept is epoch ${r.best_epoch}` : "");
  } else if (job.state === "done" && r.best_epoch) {
    epochText += ` — all epochs run; the model kept is epoch ${r.best_epoch}`;
  }
  if (job.state === "done" && r.stopped_early) bar.firstChild.style.width = "100%";
  prog.replaceChildren(
    el("div", { id: "job-state", text: `job ${job.id}: ${job.state}${job.stage ? ` (${job.stage})` : ""}` }),
    el("div", {}, bar, el("span", { id: "job-epoch", class: r.stopped_early ? "stopped" : "", text: epochText })),
    table);
  if (job.error) prog.append(el("p", { class: "note", id: "job-error", text: job.error }));
  const res = document.getElementById("result");
  if (job.state === "done" && job.result) {
    res.replaceChildren(
      el("div", { id: "result-accuracy", text: `test accuracy: ${pct(r.accuracy)}` }),
      el("div", { text: `unknown threshold: ${r.threshold == null ? "–" : r.threshold.toFixed(4)} (a face whose confidence is below it is "unknown") · ${r.people} people: ${r.labels.join(", ")}` }),
      el("div", { text: `trained ${r.epochs} of at most ${r.max_epochs || job.max_epochs} epochs · checkpoint: ${r.checkpoint}` }),
      el("div", { text: "The server now recognises with this model." }));
    if (r.confusion_png) res.append(el("img", { id: "confusion", alt: "confusion matrix", style: "max-width:520px;margin-top:.5em",
      src: "/files/" + r.confusion_png.split("/").map(encodeURIComponent).join("/") + `?job=${job.id}` }));
  }
  const running = job.state === "running" || job.state === "queued";
  document.getElementById("train-btn").disabled = running;
  if (!running && polling) { clearInterval(polling); polling = null; setStatus(job.state === "done" ? "done" : "failed", job.state !== "done"); }
}

function poll(id) {
  if (polling) clearInterval(polling);
  const tick = () => api(`/api/train/${id}`).then(showJob).catch(e => setStatus(e.message, true));
  polling = setInterval(tick, 1000);
  tick();
}

document.getElementById("train-btn").addEventListener("click", async () => {
  try {
    const backbone = document.getElementById("backbone").value;   // "": the server's default
    const job = await api("/api/train", { json: {
      max_epochs: Number(document.getElementById("max-epochs").value),
      ...(backbone ? { backbone } : {}) } });
    setStatus("training…");
    poll(job.id);
  } catch (e) { setStatus(e.message, true); }
});

(async () => {
  try {
    await showPeople();
    const { jobs } = await api("/api/train");
    if (jobs.length) { const job = jobs[jobs.length - 1]; showJob(job); if (job.state === "running" || job.state === "queued") poll(job.id); }
    const health = await api("/api/health");
    const first = document.getElementById("backbone").options[0];   // name the server's default
    if (health.default_backbone && first.value === "") first.textContent = `${health.default_backbone} (default)`;
    setStatus(health.model.checkpoint ? `model: ${health.model.checkpoint.split("/").slice(-4).join("/")}` : "no model yet");
  } catch (e) { setStatus(e.message, true); }
})();
