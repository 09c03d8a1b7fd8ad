// IlgpuSae feature dashboards: renders a feature record (features/ID.js calls dashboardFeatureLoaded) and the
// index (index-data.js sets DASHBOARD_INDEX). Plain script, no modules, so the pages open from file:// too.
"use strict";
(function () {
  const fmt = (v, digits) => (v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits));
  const pct = (v) => (v * 100 < 0.01 && v > 0 ? (v * 100).toExponential(2) : (v * 100).toFixed(3)) + "%";
  const el = (tag, attrs, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  };
  const shownToken = (t) => t.replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");

  // Inline SVG histogram: bars at bin centres, heights scaled to the tallest bar, min and max labelled.
  function histogram(h, title, color) {
    const ns = "http://www.w3.org/2000/svg";
    const W = 360, H = 140, left = 34, bottom = 22, top = 18;
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("class", "hist");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", title);
    const add = (tag, attrs, text) => {
      const e = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text !== undefined) e.textContent = text;
      svg.append(e);
      return e;
    };
    add("text", { x: left, y: 12 }, title);
    const n = h.bar_heights.length, peak = Math.max(1, ...h.bar_heights);
    const bw = (W - left - 6) / Math.max(1, n);
    h.bar_heights.forEach((c, j) => {
      const bh = (H - top - bottom) * c / peak;
      const r = add("rect", { x: left + j * bw + 0.5, y: H - bottom - bh, width: Math.max(1, bw - 1), height: bh, fill: color });
      const t = document.createElementNS(ns, "title");
      t.textContent = `${fmt(h.bar_values[j], 3)}: ${c}`;
      r.append(t);
    });
    add("line", { x1: left, y1: H - bottom, x2: W - 6, y2: H - bottom, stroke: "#9aa3b2" });
    add("text", { x: left - 4, y: top + 8, "text-anchor": "end" }, String(peak));
    add("text", { x: left - 4, y: H - bottom, "text-anchor": "end" }, "0");
    if (n > 0) {
      add("text", { x: left, y: H - 6 }, fmt(h.bar_values[0], 2));
      add("text", { x: W - 6, y: H - 6, "text-anchor": "end" }, fmt(h.bar_values[n - 1], 2));
    }
    return svg;
  }

  // One example: tokens shaded by activation (alpha = value / the feature's max), the example's token outlined.
  function example(ex, maxAct) {
    const toks = el("span", { class: "tokens" });
    ex.tokens.forEach((t, j) => {
      const v = ex.values[j];
      const special = /^<(bos|eos|pad)>$/.test(t);
      const span = el("span", { class: "tok" + (special ? " special" : "") + (j === ex.max_index ? " max" : ""), text: shownToken(t) });
      const a = maxAct > 0 ? Math.max(0, Math.min(1, v / maxAct)) : 0;
      if (a > 0) span.style.background = `rgba(232, 89, 12, ${(0.08 + 0.82 * a).toFixed(3)})`;
      span.title = `${JSON.stringify(t)}: ${fmt(v, 4)}`;
      toks.append(span);
    });
    return el("div", { class: "example" }, el("span", { class: "val", text: fmt(ex.value, 3) }), toks);
  }

  function ranked(title, r, names, link) {
    if (!r || r.indices.length === 0) return el("div", { class: "note", text: `${title}: none` });
    const t = el("table", { class: "small" }, el("tr", {}, ...names.map((n) => el("th", { text: n }))));
    r.indices.forEach((i, j) => {
      const idCell = link ? el("td", {}, el("a", { href: link(i), text: String(i) })) : el("td", { text: String(i) });
      t.append(el("tr", {}, idCell, el("td", { text: fmt(r.values[j], 3) }), el("td", { text: fmt(r.second[j], 3) })));
    });
    return el("div", {}, el("h3", { text: title }), t);
  }

  function logitTable(l) {
    const t = el("table", { class: "logits" });
    for (let j = 0; j < Math.max(l.pos_str.length, l.neg_str.length); j++) {
      t.append(el("tr", {},
        el("td", { class: "neg", text: l.neg_str[j] !== undefined ? shownToken(l.neg_str[j]) : "" }),
        el("td", { class: "v neg", text: fmt(l.neg_values[j], 3) }),
        el("td", { class: "pos", text: l.pos_str[j] !== undefined ? shownToken(l.pos_str[j]) : "" }),
        el("td", { class: "v pos", text: fmt(l.pos_values[j], 3) })));
    }
    return t;
  }

  // Renders record f into container; options.link(i) gives feature links (none in a blinded study).
  function renderFeature(container, f, options) {
    options = options || {};
    container.replaceChildren();
    const title = f.index === undefined || f.index === null ? `Feature ${f.id}` : `Feature ${f.index}`;
    container.append(el("h2", { id: "feature-title", text: title }));
    container.append(el("div", { class: "stats" },
      el("div", { class: "stat" }, el("b", { text: pct(f.density) }), el("span", { text: "density (fraction of tokens where it fires)" })),
      el("div", { class: "stat" }, el("b", { text: fmt(f.max_act, 3) }), el("span", { text: "max activation" })),
      el("div", { class: "stat" }, el("b", { text: fmt(f.mean_non_zero, 3) }), el("span", { text: "mean when firing" })),
      el("div", { class: "stat" }, el("b", { text: String(f.tokens) }), el("span", { text: "tokens read" }))));
    const side = el("div", {});
    side.append(el("div", { class: "panel" }, histogram(f.activation_histogram, `Activations when firing (density ${pct(f.density)})`, "#e8590c")));
    if (f.logits) {
      side.append(el("div", { class: "panel" }, el("h3", { text: "Direct logit effect: bottom | top tokens" }), logitTable(f.logits)));
      side.append(el("div", { class: "panel" }, histogram(f.logits.histogram, "Logit effect over the vocabulary", "#6b7fa8")));
    }
    const info = el("div", { class: "panel" });
    info.append(ranked("Decoder row: top neurons", f.neuron_alignment, ["neuron", "value", "|v|/L1"]));
    info.append(ranked("Correlated neurons", f.correlated_neurons, ["neuron", "Pearson", "cosine"]));
    if (f.correlated_features) info.append(ranked("Correlated features", f.correlated_features, ["feature", "Pearson", "cosine"], options.link));
    side.append(info);
    const body = el("div", {});
    const top = el("div", { class: "panel", id: "top-examples" }, el("h3", { text: `Top activations (${f.top.length})` }));
    f.top.forEach((ex) => top.append(example(ex, f.max_act)));
    body.append(top);
    const iv = el("div", { class: "panel", id: "intervals" }, el("h3", { text: "Random examples per activation interval" }));
    for (const g of f.intervals) {
      iv.append(el("div", { class: "interval-head", text: `Interval (${fmt(g.bin_min, 3)}, ${fmt(g.bin_max, 3)}]: ${pct(g.bin_contains)} of tokens` }));
      if (g.examples.length === 0) iv.append(el("div", { class: "note", text: "no tokens in this interval" }));
      g.examples.forEach((ex) => iv.append(example(ex, f.max_act)));
    }
    body.append(iv);
    container.append(el("div", { class: "grid" }, side, body));
  }

  function loadFeatureScript(id, onLoaded, onError) {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) { onError(`'${id}' is not a feature id`); return; }
    window.dashboardFeatureLoaded = onLoaded;
    const s = document.createElement("script");
    s.src = `features/${id}.js`;
    s.onerror = () => onError(`feature ${id} is not in these dashboards`);
    document.head.append(s);
  }

  function renderIndex(container, rows, meta) {
    const search = el("input", { id: "search", type: "search", placeholder: "Search id or tokens…", autocomplete: "off" });
    const count = el("span", { class: "note", id: "count" });
    const table = el("table", { class: "index", id: "index-table" });
    const cols = [
      ["id", "feature", (r) => r.index !== undefined && r.index !== null ? r.index : r.id],
      ["density", "density", (r) => r.density],
      ["max_act", "max activation", (r) => r.max_act],
      ["top_tokens", "top tokens", (r) => r.top_tokens],
      ["top_logits", "top logit tokens", (r) => r.top_logits],
    ];
    let sortKey = "density", sortDir = -1;
    const head = el("tr", {});
    cols.forEach(([key, label]) => {
      const th = el("th", { "data-key": key, text: label });
      th.addEventListener("click", () => { sortDir = sortKey === key ? -sortDir : -1; sortKey = key; draw(); });
      head.append(th);
    });
    table.append(el("thead", {}, head));
    const tbody = el("tbody", {});
    table.append(tbody);
    function draw() {
      const q = search.value.trim().toLowerCase();
      const get = cols.find((c) => c[0] === sortKey)[2];
      const shown = rows.filter((r) => !q || String(r.id).toLowerCase() === q || r.top_tokens.toLowerCase().includes(q) || r.top_logits.toLowerCase().includes(q));
      shown.sort((a, b) => { const x = get(a), y = get(b); return (x < y ? -1 : x > y ? 1 : 0) * sortDir; });
      tbody.replaceChildren(...shown.map((r) => el("tr", { "data-id": r.id },
        el("td", {}, el("a", { href: `feature.html?id=${encodeURIComponent(r.id)}`, text: String(r.index ?? r.id) })),
        el("td", { class: "num", text: pct(r.density) }),
        el("td", { class: "num", text: fmt(r.max_act, 3) }),
        el("td", { class: "toks", text: shownToken(r.top_tokens) }),
        el("td", { class: "toks", text: shownToken(r.top_logits) }))));
      head.querySelectorAll("th").forEach((th) => {
        th.className = th.dataset.key === sortKey ? (sortDir > 0 ? "sorted-asc" : "sorted-desc") : "";
      });
      count.textContent = `${shown.length} of ${rows.length} features`;
    }
    search.addEventListener("input", draw);
    container.append(el("div", {}, search, " ", count), table);
    draw();
  }

  window.IlgpuSaeDashboard = { renderFeature, renderIndex, loadFeatureScript, el, pct };
})();
