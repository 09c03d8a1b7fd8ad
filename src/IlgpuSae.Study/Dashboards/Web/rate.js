// The rating page of a blinded study (served by `ilgpu-sae serve`): one feature at a time, Yes / Maybe / No.
"use strict";
(function () {
  const D = window.IlgpuSaeDashboard;
  const $ = (id) => document.getElementById(id);
  let features = [], ratings = {}, current = null, busy = false;
  const raterInput = $("rater");
  raterInput.value = localStorage.getItem("ilgpusae-rater") || "";

  function status(text, kind) { const s = $("status"); s.textContent = text; s.className = kind || ""; }
  function rater() { return raterInput.value.trim(); }

  async function api(path, options) {
    const r = await fetch(path, options);
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    return body;
  }

  function drawList() {
    const list = $("feature-list");
    list.replaceChildren(...features.map((id, j) => {
      const a = D.el("a", { href: `#${id}`, "data-id": id, text: String(j + 1) });
      const r = ratings[id];
      a.className = (r ? `l-${r.label}` : "") + (id === current ? " current" : "");
      a.title = r ? `${id}: ${r.label}` : `${id}: not rated`;
      a.addEventListener("click", (e) => { e.preventDefault(); show(id); });
      return a;
    }));
    const done = features.filter((id) => ratings[id]).length;
    $("progress").textContent = `${done} of ${features.length} rated`;
  }

  function markChosen() {
    const r = current ? ratings[current] : null;
    document.querySelectorAll("button.label").forEach((b) => b.classList.toggle("chosen", !!r && b.dataset.label === r.label));
  }

  function show(id) {
    if (id === null) {
      current = null;
      $("feature").replaceChildren(D.el("h2", { id: "all-done", text: "All features are rated. Thank you!" }));
      drawList(); markChosen();
      return;
    }
    current = id;
    history.replaceState(null, "", `#${id}`);
    $("description").value = ratings[id] ? ratings[id].description || "" : "";
    D.loadFeatureScript(id, (f) => { if (current === id) { D.renderFeature($("feature"), f, {}); document.title = `Rate ${id}`; } },
      (why) => status(why, "error"));
    drawList(); markChosen();
  }

  function nextUnrated(after) {
    const start = Math.max(0, features.indexOf(after) + 1);
    for (let k = 0; k < features.length; k++) {
      const id = features[(start + k) % features.length];
      if (!ratings[id]) return id;
    }
    return null;
  }

  async function rate(label) {
    if (!current || busy) return;
    if (!rater()) { status("Enter your name first.", "error"); raterInput.focus(); return; }
    busy = true;
    const id = current;
    status("Saving…");
    try {
      const body = await api("api/ratings", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ rater: rater(), feature: id, label, description: $("description").value }),
      });
      ratings[id] = { label, description: $("description").value };
      status(`Saved: ${label} (#${body.sequence})`, "ok");
      show(nextUnrated(id));
    } catch (e) {
      status(`Not saved: ${e.message}`, "error");
    } finally {
      busy = false;
    }
  }

  async function load() {
    const name = rater();
    const study = await api("api/study");
    features = study.features;
    const state = await api(`api/state?rater=${encodeURIComponent(name)}`);
    ratings = state.ratings || {};
    const fromHash = location.hash.slice(1);
    show(features.includes(fromHash) && ratings[fromHash] ? fromHash : state.next);
  }

  document.querySelectorAll("button.label").forEach((b) => b.addEventListener("click", () => rate(b.dataset.label)));
  raterInput.addEventListener("change", () => { localStorage.setItem("ilgpusae-rater", rater()); load().catch((e) => status(e.message, "error")); });
  document.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLTextAreaElement || e.target instanceof HTMLInputElement || e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key.toLowerCase();
    const label = { y: "yes", 1: "yes", m: "maybe", 2: "maybe", n: "no", 3: "no" }[k];
    if (label) { e.preventDefault(); rate(label); return; }
    const j = features.indexOf(current);
    if (e.key === "ArrowRight" && j + 1 < features.length) show(features[j + 1]);
    if (e.key === "ArrowLeft" && j > 0) show(features[j - 1]);
  });
  load().catch((e) => status(`Cannot load the study: ${e.message}`, "error"));
})();
