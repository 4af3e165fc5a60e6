// strata console: five views over the public APIs and /_strata/api/.
// No framework: each view renders into #view and its timers stop when
// another view takes over.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const view = $("#view");
let stopView = () => {};
let info = { write_token_required: false, actions: false };

// --- helpers ---------------------------------------------------------------

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

// A key's path: each segment escaped, the slashes kept.
const keyPath = (key) => key.split("/").map(encodeURIComponent).join("/");
const blobUrl = (key) => "/v1/blobs/" + keyPath(key);

function bytes(n) {
  if (n === undefined || n === null) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function num(n, digits = 1) {
  if (n === undefined || n === null) return "–";
  if (n >= 1e6) return (n / 1e6).toFixed(digits) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(digits) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(digits);
}
const pct = (r) => (r === undefined || r === null ? "–" : (r * 100).toFixed(1) + "%");
const ms = (v) => (v === undefined || v === null ? "–" : v.toFixed(2) + " ms");
const when = (msEpoch) => new Date(msEpoch).toLocaleString();

async function getJSON(url, opts = {}) {
  const r = await fetch(url, opts);
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = { error: "bad_json", detail: text }; }
  if (!r.ok) {
    const err = new Error((body && (body.detail || body.error)) || r.statusText);
    err.status = r.status;
    throw err;
  }
  return body;
}

function token(name) { return sessionStorage.getItem("strata." + name) || ""; }
function tokenInput(name, label) {
  const i = el("input", { type: "password", id: name + "-token", placeholder: label, autocomplete: "off" });
  i.value = token(name);
  i.addEventListener("input", () => sessionStorage.setItem("strata." + name, i.value));
  return el("label", { class: "token" }, label + " ", i);
}
function authHeaders(name) {
  const t = token(name);
  return t ? { Authorization: "Bearer " + t } : {};
}

// A line chart of one or more series over time, as inline SVG.
function chart(title, t, series, fmt = num) {
  const W = 320, H = 90, P = 4;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart");
  const all = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  const max = Math.max(1e-9, ...all);
  const t0 = t.length ? t[0] : 0, t1 = t.length ? t[t.length - 1] : 1;
  const x = (tv) => P + ((tv - t0) / Math.max(1, t1 - t0)) * (W - 2 * P);
  const y = (v) => H - P - (v / max) * (H - 2 * P);
  series.forEach((s, i) => {
    let d = "", pen = false;
    s.values.forEach((v, j) => {
      if (v === null || v === undefined) { pen = false; return; }
      d += (pen ? "L" : "M") + x(t[j]).toFixed(1) + "," + y(v).toFixed(1);
      pen = true;
    });
    const p = document.createElementNS("http://www.w3.org/2000/svg", "path");
    p.setAttribute("d", d);
    p.setAttribute("class", "line c" + (i % 6));
    svg.append(p);
  });
  const last = series.map((s) => {
    const v = [...s.values].reverse().find((v) => v !== null && v !== undefined);
    return el("span", { class: "legend" }, el("i", { class: "c" + (series.indexOf(s) % 6) }), s.name + " " + fmt(v));
  });
  return el("figure", { class: "panel" }, el("figcaption", {}, title), svg, el("div", {}, last));
}

// --- cluster ---------------------------------------------------------------

const ROLE_ORDER = ["gateway", "node", "cache", "store", "index", "queue", "search"];
const FIGURES = {
  gateway: (f) => [["req/s", num(f.rps)], ["errors/s", num(f.errors_ps)], ["in flight", num(f.in_flight)]],
  node: (f) => [["req/s", num(f.rps)], ["errors/s", num(f.errors_ps)], ["p50", ms(f.p50_ms)], ["p99", ms(f.p99_ms)],
    ["cache hits", pct(f.cache_hit_ratio)], ["cache", bytes(f.cache_bytes)]],
  cache: (f) => [["ops/s", num(f.ops_ps)], ["hit ratio", pct(f.hit_ratio)], ["bytes", bytes(f.bytes) + " of " + bytes(f.limit_bytes)], ["items", num(f.items)]],
  store: (f) => [["blobs", num(f.blobs)], ["disk used", bytes(f.disk_used_bytes)], ["disk free", bytes(f.disk_free_bytes)],
    ["reads/s", num(f.reads_ps)], ["writes/s", num(f.writes_ps)]],
  index: (f) => [["lookups/s", num(f.lookups_ps)], ["writes/s", num(f.writes_ps)]],
  queue: (f) => [["ready", num(f.ready)], ["reserved", num(f.reserved)], ["delayed", num(f.delayed)], ["dead", num(f.dead)]],
  search: (f) => [["pages", num(f.pages)], ["queries/s", num(f.queries_ps)]],
};
const MAIN = { gateway: "rps", node: "rps", cache: "ops_ps", store: "reads_ps", index: "lookups_ps", queue: "ready", search: "queries_ps" };

function spark(h, key) {
  const vals = (h[key] || []).slice(-60);
  const W = 90, H = 22;
  const max = Math.max(1e-9, ...vals.filter((v) => v !== null));
  const pts = vals.map((v, i) => v === null ? null : `${(i / Math.max(1, vals.length - 1)) * W},${H - 1 - (v / max) * (H - 2)}`).filter(Boolean);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "spark");
  const p = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  p.setAttribute("points", pts.join(" "));
  svg.append(p);
  return svg;
}

function renderCluster(c) {
  const members = [...c.members].sort((a, b) => ROLE_ORDER.indexOf(a.role) - ROLE_ORDER.indexOf(b.role) || a.name.localeCompare(b.name));
  const count = (s) => members.filter((m) => m.state === s).length;
  const summary = el("p", { class: "summary" },
    `${members.length} members: `, el("b", { class: "up" }, count("up") + " up"),
    count("down") ? [", ", el("b", { class: "down" }, count("down") + " down")] : null,
    count("ejected") ? [", ", el("b", { class: "ejected" }, count("ejected") + " ejected")] : null,
    count("draining") ? [", ", el("b", { class: "draining" }, count("draining") + " draining")] : null,
    ` · sampled every ${c.sample_ms / 1000} s, last ${Math.round(c.window_ms / 60000)} min`);
  const panels = el("div", { class: "panels" });
  const gws = members.filter((m) => m.role === "gateway");
  const nodes = members.filter((m) => m.role === "node");
  const caches = members.filter((m) => m.role === "cache");
  const t0 = (m) => m.history.t || [];
  for (const g of gws) {
    panels.append(chart(`${g.name}: requests/s`, t0(g), [{ name: "req/s", values: g.history.rps || [] }, { name: "errors/s", values: g.history.errors_ps || [] }]));
  }
  if (nodes.length) {
    const t = t0(nodes[0]);
    panels.append(chart("nodes: requests/s", t, nodes.map((n) => ({ name: n.name, values: (n.history.rps || []).slice(-t.length) }))));
    panels.append(chart("nodes: cache hit ratio", t, nodes.map((n) => ({ name: n.name, values: (n.history.cache_hit_ratio || []).slice(-t.length) })), pct));
  }
  for (const cm of caches) {
    panels.append(chart(`${cm.name}: hit ratio`, t0(cm), [{ name: "hits", values: cm.history.hit_ratio || [] }], pct));
  }
  const qs = members.filter((m) => m.role === "queue");
  for (const q of qs) {
    panels.append(chart(`${q.name}: jobs`, t0(q), ["ready", "reserved", "delayed", "dead"].map((s) => ({ name: s, values: q.history[s] || [] }))));
  }
  const rows = members.map((m) => {
    const figs = (FIGURES[m.role] || (() => []))(m.figures || {});
    return el("tr", { class: "member " + m.state, "data-member": m.name, "data-role": m.role },
      el("td", {}, el("b", {}, m.name), el("div", { class: "addr" }, m.addr)),
      el("td", {}, m.role),
      el("td", {}, el("span", { class: "state " + m.state, "data-state": m.state, title: m.error || "" }, m.state)),
      el("td", { class: "figs" }, figs.map(([k, v]) => el("span", { class: "fig" }, el("small", {}, k), " ", v)),
        m.role === "queue" && m.queues ? el("div", { class: "queues" }, Object.entries(m.queues).map(([q, s]) =>
          el("span", { class: "fig" }, el("small", {}, q), ` ${num(s.ready || 0)} ready, ${num(s.dead || 0)} dead`))) : null),
      el("td", {}, spark(m.history, MAIN[m.role])));
  });
  const table = el("div", { class: "scroll" }, el("table", { id: "members" },
    el("thead", {}, el("tr", {}, ["member", "role", "state", "figures", "trend"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows)));
  view.replaceChildren(el("h2", {}, "Cluster"), summary, panels, table);
}

function showCluster() {
  let alive = true, timer = null;
  const load = async () => {
    try {
      const c = await getJSON("/_strata/api/cluster");
      info = c;
      if (alive) renderCluster(c);
    } catch (e) {
      if (alive) view.replaceChildren(el("h2", {}, "Cluster"), el("p", { class: "error" }, "cannot read the cluster: " + e.message));
    }
    if (alive) timer = setTimeout(load, 2000);
  };
  load();
  return () => { alive = false; clearTimeout(timer); };
}

// --- browse ----------------------------------------------------------------

function isImage(t) { return /^image\//.test(t || ""); }

function thumb(item, width = 128) {
  const label = () => el("div", { class: "noimg" }, (item.content_type || "blob").split(";")[0]);
  // Only PNG and JPEG uploads get thumbnails; other types show their name.
  if (!isImage(item.content_type)) return label();
  const img = el("img", { loading: "lazy", alt: item.key, src: blobUrl(item.key) + "?w=" + width });
  img.addEventListener("error", () => {
    // No thumbnail (not an image, or its job has not run): the original
    // when it is a small image, else the type.
    if (isImage(item.content_type) && item.size <= 512 * 1024 && !img.dataset.fallback) {
      img.dataset.fallback = "1";
      img.src = blobUrl(item.key);
    } else {
      img.replaceWith(label());
    }
  });
  return img;
}

function showBrowse(arg) {
  const params = new URLSearchParams(arg || "");
  const prefix = params.get("prefix") || "";
  const after = params.get("after") || "";
  const back = params.getAll("back");
  const input = el("input", { type: "search", id: "prefix", placeholder: "prefix, e.g. photos/2026/", value: prefix });
  const form = el("form", { class: "bar", onsubmit: (e) => { e.preventDefault(); location.hash = "browse?" + new URLSearchParams({ prefix: input.value }); } },
    input, el("button", {}, "List"));
  const grid = el("div", { class: "grid", id: "grid" }, el("p", {}, "loading…"));
  const pager = el("div", { class: "pager" });
  view.replaceChildren(el("h2", {}, "Browse"), form, grid, pager);
  let alive = true;
  (async () => {
    try {
      // Keys under `_` are the system's own (thumbnails, chunks, S3
      // records); skip past them unless asked for.
      let from = after, page;
      for (;;) {
        const q = new URLSearchParams({ prefix, limit: "48" });
        if (from) q.set("after", from);
        page = await getJSON("/v1/blobs?" + q);
        if (prefix.startsWith("_")) break;
        const visible = page.items.filter((i) => !i.key.startsWith("_"));
        if (visible.length || !page.next) { page.items = visible; break; }
        from = "_\u{10FFFF}";
      }
      if (!alive) return;
      grid.replaceChildren(...(page.items.length ? page.items.map((it) =>
        el("a", { class: "card", href: "#blob?" + new URLSearchParams({ key: it.key }), "data-key": it.key },
          thumb(it),
          el("div", { class: "name" }, it.key),
          el("div", { class: "meta" }, bytes(it.size), " · ", (it.content_type || "").split(";")[0]),
          el("div", { class: "meta" }, when(it.created_ms)),
          it.tags && it.tags.length ? el("div", { class: "tags" }, it.tags.map((t) => el("span", { class: "tag" }, t))) : null))
        : [el("p", {}, "No blobs under this prefix.")]));
      const prev = back.length ? el("a", { href: "#browse?" + new URLSearchParams([["prefix", prefix], ["after", back[back.length - 1]], ...back.slice(0, -1).map((b) => ["back", b])]) }, "← previous") : null;
      const next = page.next ? el("a", { id: "next", href: "#browse?" + new URLSearchParams([["prefix", prefix], ["after", page.next], ...back.map((b) => ["back", b]), ["back", after]]) }, "next →") : null;
      pager.replaceChildren(...[prev, next].filter(Boolean));
    } catch (e) {
      grid.replaceChildren(el("p", { class: "error" }, "cannot list: " + e.message));
    }
  })();
  return () => { alive = false; };
}

function showBlob(arg) {
  const key = new URLSearchParams(arg || "").get("key") || "";
  view.replaceChildren(el("h2", {}, key), el("p", {}, "loading…"));
  (async () => {
    try {
      const page = await getJSON("/v1/blobs?" + new URLSearchParams({ prefix: key, limit: "1" }));
      const it = page.items.find((i) => i.key === key);
      if (!it) throw new Error("no such blob");
      const rows = [["size", bytes(it.size) + ` (${it.size} bytes)`], ["type", it.content_type], ["created", when(it.created_ms)],
        ["etag", it.etag], ["id", it.id], ["replicas", (it.replicas || []).join(", ")], ["tags", (it.tags || []).join(", ") || "–"]];
      if (it.page) rows.push(["book page", `${it.page.book} p. ${it.page.page}`]);
      const body = isImage(it.content_type) ? el("img", { class: "full", src: blobUrl(key), alt: key })
        : el("p", {}, el("a", { href: blobUrl(key) }, "open the blob"));
      view.replaceChildren(el("h2", {}, key), el("div", { class: "blob" }, body,
        el("table", { class: "meta-table" }, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))))),
        el("p", {}, el("a", { href: blobUrl(key), download: key.split("/").pop() }, "download")));
    } catch (e) {
      view.replaceChildren(el("h2", {}, key), el("p", { class: "error" }, e.message));
    }
  })();
  return () => {};
}

// --- upload ----------------------------------------------------------------

async function waitJob(location, status) {
  for (let i = 0; i < 600; i++) {
    const j = await getJSON(location);
    status(j.state);
    if (j.state === "succeeded") return j;
    if (j.state === "dead") throw new Error(j.error || "the upload job failed");
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error("the upload job did not finish");
}

function uploadOne(file, prefix, list) {
  const key = prefix + file.name;
  const bar = el("progress", { max: "100", value: "0" });
  const state = el("span", { class: "ustate" }, "sending");
  const row = el("li", { class: "upload", "data-key": key }, el("span", { class: "name" }, key), bar, state);
  list.append(row);
  const async_ = /^image\/(png|jpeg)$/.test(file.type);
  return new Promise((resolve) => {
    const x = new XMLHttpRequest();
    x.open("PUT", blobUrl(key));
    if (file.type) x.setRequestHeader("Content-Type", file.type);
    // Images go through the upload queue, which also makes thumbnails.
    if (async_) x.setRequestHeader("Prefer", "respond-async");
    for (const [k, v] of Object.entries(authHeaders("write"))) x.setRequestHeader(k, v);
    x.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = (100 * e.loaded) / e.total; };
    const fail = (msg) => { row.classList.add("failed"); state.textContent = msg; resolve(false); };
    x.onerror = () => fail("network error");
    x.onload = async () => {
      let body = {};
      try { body = JSON.parse(x.responseText || "{}"); } catch (_) { /* keep {} */ }
      if (x.status === 201) {
        bar.value = 100; row.classList.add("done"); state.replaceChildren(el("a", { href: "#blob?" + new URLSearchParams({ key }) }, "stored"));
        return resolve(true);
      }
      if (x.status === 202) {
        bar.value = 100;
        state.textContent = "job " + body.job + ": " + body.state;
        try {
          await waitJob(body.location, (s) => { state.textContent = "job " + body.job + ": " + s; });
          row.classList.add("done");
          state.replaceChildren("job " + body.job + ": ", el("a", { href: "#blob?" + new URLSearchParams({ key }) }, "succeeded"));
          resolve(true);
        } catch (e) { fail(e.message); }
        return;
      }
      fail(`${x.status}: ${body.detail || body.error || x.statusText}`);
    };
    x.send(file);
  });
}

function showUpload() {
  const prefix = el("input", { type: "text", id: "upload-prefix", placeholder: "key prefix, e.g. photos/", value: sessionStorage.getItem("strata.prefix") || "" });
  prefix.addEventListener("input", () => sessionStorage.setItem("strata.prefix", prefix.value));
  const files = el("input", { type: "file", id: "files", multiple: "" });
  const list = el("ul", { class: "uploads", id: "uploads" });
  const send = (fl) => { for (const f of fl) uploadOne(f, prefix.value, list); };
  files.addEventListener("change", () => send(files.files));
  const zone = el("div", { class: "drop", id: "drop" }, "Drop files here, or ", el("label", { class: "pick" }, "choose them", files));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); send(e.dataTransfer.files); });
  view.replaceChildren(el("h2", {}, "Upload"), el("div", { class: "bar" }, prefix,
    info.write_token_required ? tokenInput("write", "write token") : null), zone, list);
  return () => {};
}

// --- search ----------------------------------------------------------------

function showSearch(arg) {
  const q0 = new URLSearchParams(arg || "").get("q") || "";
  const input = el("input", { type: "search", id: "q", placeholder: "words on a page", value: q0 });
  const out = el("div", { id: "results" });
  const form = el("form", { class: "bar", onsubmit: (e) => { e.preventDefault(); location.hash = "search?" + new URLSearchParams({ q: input.value }); } },
    input, el("button", {}, "Search"));
  view.replaceChildren(el("h2", {}, "Search"), form, out);
  if (!q0) return () => {};
  out.replaceChildren(el("p", {}, "searching…"));
  (async () => {
    try {
      const r = await getJSON("/v1/search?" + new URLSearchParams({ q: q0, limit: "10", pages: "4" }));
      const books = r.books.map((b) => el("section", { class: "book", "data-book": b.book },
        el("h3", {}, b.book, el("small", {}, ` score ${b.score.toFixed(2)}`)),
        el("div", { class: "pages" }, b.pages.map((p) => {
          // The snippet is HTML made by the search shard: its text is
          // escaped there and only <b> marks the matched words.
          const sn = el("p", { class: "snippet" });
          sn.innerHTML = p.snippet;
          return el("div", { class: "hit" },
            el("a", { href: "#blob?" + new URLSearchParams({ key: p.key }) }, thumb({ key: p.key, content_type: "image/", size: 0 })),
            el("div", {}, el("b", {}, "page " + p.page), sn));
        }))));
      const n = r.books.length;
      out.replaceChildren(el("p", { class: "summary" }, `${n} ${n === 1 ? "book" : "books"} in ${Number(r.took_ms).toFixed(1)} ms${r.partial ? " (some shards did not answer)" : ""}`), ...books);
    } catch (e) {
      out.replaceChildren(el("p", { class: "error" }, "search failed: " + e.message));
    }
  })();
  return () => {};
}

// --- jobs ------------------------------------------------------------------

function showJobs() {
  const out = el("div", { id: "queues" }, el("p", {}, "loading…"));
  const msg = el("p", { class: "msg", id: "job-msg" });
  view.replaceChildren(el("h2", {}, "Jobs"), el("div", { class: "bar" }, tokenInput("admin", "admin token")), msg, out);
  let alive = true;
  const act = async (method, url, what) => {
    try {
      await getJSON(url, { method, headers: authHeaders("admin") });
      msg.className = "msg ok"; msg.textContent = what;
      load();
    } catch (e) { msg.className = "msg error"; msg.textContent = e.message; }
  };
  const load = async () => {
    try {
      const r = await getJSON("/_strata/api/queues");
      if (!alive) return;
      if (!r.queues.length) { out.replaceChildren(el("p", {}, "No queue has had a job yet.")); return; }
      out.replaceChildren(el("div", { class: "scroll" }, el("table", {},
        el("thead", {}, el("tr", {}, ["queue", "ready", "reserved", "delayed", "dead"].map((h) => el("th", {}, h)))),
        el("tbody", {}, r.queues.map((q) => el("tr", {}, el("td", {}, q.name), el("td", {}, q.ready), el("td", {}, q.reserved), el("td", {}, q.delayed), el("td", {}, q.dead)))))),
      ...r.queues.filter((q) => q.dead_jobs && q.dead_jobs.length).map((q) => el("section", {},
        el("h3", {}, `${q.name}: dead letters`),
        el("div", { class: "scroll" }, el("table", { class: "dead" },
          el("thead", {}, el("tr", {}, ["job", "attempts", "put", "last error", ""].map((h) => el("th", {}, h)))),
          el("tbody", {}, q.dead_jobs.map((j) => el("tr", { "data-job": j.id },
            el("td", {}, j.id), el("td", {}, `${j.attempts}/${j.max_attempts || "∞"}`), el("td", {}, when(j.created_ms)),
            el("td", { class: "err" }, j.error || "–"),
            el("td", {}, el("button", { class: "kick", onclick: () => act("POST", `/_strata/api/jobs/${j.id}/kick`, `job ${j.id} kicked`) }, "retry"),
              " ", el("button", { class: "delete", onclick: () => act("DELETE", `/_strata/api/jobs/${j.id}`, `job ${j.id} deleted`) }, "delete"))))))))));
    } catch (e) {
      out.replaceChildren(el("p", { class: "error" }, "cannot read the queues: " + e.message));
    }
  };
  load();
  return () => { alive = false; };
}

// --- routing ---------------------------------------------------------------

const VIEWS = { cluster: showCluster, browse: showBrowse, blob: showBlob, upload: showUpload, search: showSearch, jobs: showJobs };

function route() {
  const h = location.hash.replace(/^#/, "") || "cluster";
  const [name, arg] = h.split(/\?(.*)/s);
  const show = VIEWS[name] || showCluster;
  stopView();
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("on", a.dataset.view === (name === "blob" ? "browse" : name));
  stopView = show(arg) || (() => {});
}

window.addEventListener("hashchange", route);
getJSON("/_strata/api/cluster").then((c) => { info = c; }).catch(() => {}).finally(route);
