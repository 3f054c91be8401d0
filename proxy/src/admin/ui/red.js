// Rate, errors and duration per inbound route, from /debug/red (the
// /metrics histogram), with a latency histogram whose buckets list the
// stored traces in their range.
import { $, el, fill, fmtMs, fmtBound, fmtPercent, fmtRate, getJson, CATEGORIES } from "./util.js";

/** How far back the rate looks, at most. */
const WINDOW_S = 60;
const ALL = "\u0000all";

export function createRed(app) {
  const body = $("red-rows");
  /** Samples of the request counters: {t (s, monotonic), counts: Map}. */
  let samples = [];
  let chosen = ALL;
  let last = null;
  let seq = 0;

  body.addEventListener("click", (e) => {
    const b = e.target.closest("button[data-route]");
    if (!b) return;
    chosen = b.dataset.route;
    app.replace(chosen === ALL ? "#/red" : `#/red?route=${encodeURIComponent(chosen)}`);
    if (last) render(last);
  });

  function keyOf(r) {
    return r.overflow ? "\u0000overflow" : r.route;
  }

  function labelOf(r) {
    if (r === ALL) return "All routes";
    if (r.overflow) return "(series over the limit)";
    return r.route === "" ? "(no route)" : r.route;
  }

  function rate(key, requests, red) {
    const now = samples[samples.length - 1];
    const old = samples.find((s) => now.t - s.t <= WINDOW_S && s.counts.has(key));
    if (old && now.t - old.t >= 1) {
      return { value: (requests - old.counts.get(key)) / (now.t - old.t), over: `over the last ${Math.round(now.t - old.t)} s` };
    }
    if (red.process_start_time_seconds) {
      const up = Date.now() / 1000 - red.process_start_time_seconds;
      if (up > 0) return { value: requests / up, over: "since the proxy started" };
    }
    return { value: null, over: "" };
  }

  function render(red) {
    last = red;
    const all = { ...red.all, route: ALL };
    const rows = [all, ...red.routes];
    rows.forEach((r, i) => paintRow(slot(i), r, red));
    while (body.children.length > rows.length) body.lastElementChild.remove();
    fill($("red-empty"), red.routes.length ? "" : "No inbound requests yet: send some through the proxy.");
    const pick = rows.find((r) => (r === all ? ALL : keyOf(r)) === chosen) || all;
    histogram(pick === all ? ALL : pick, pick, red);
  }

  function slot(i) {
    let tr = body.children[i];
    if (!tr) {
      tr = el("tr", {});
      for (let c = 0; c < 10; c++) tr.append(el(c === 0 ? "th" : "td", c === 0 ? { scope: "row" } : { class: "num" }));
      body.append(tr);
    }
    return tr;
  }

  function paintRow(tr, r, red) {
    const key = r.route === ALL ? ALL : keyOf(r);
    const { value, over } = rate(key, r.requests, red);
    const cells = tr.children;
    const pressed = String(key === chosen);
    let button = cells[0].firstElementChild;
    if (!button || button.dataset.route !== key) {
      button = el("button", { type: "button", class: "linkish", dataset: { route: key } }, labelOf(r.route === ALL ? ALL : r));
      fill(cells[0], button);
    }
    button.setAttribute("aria-pressed", pressed);
    button.setAttribute("aria-label", `${labelOf(r.route === ALL ? ALL : r)}: show its latency histogram`);
    tr.className = `${key === ALL ? "total" : ""}${key === chosen ? " selected" : ""}`;
    fill(cells[1], String(r.requests));
    fill(cells[2], fmtRate(value));
    cells[2].title = over ? `requests per second ${over}` : "";
    fill(cells[3], fmtPercent(r.error_ratio));
    CATEGORIES.forEach((c, i) => {
      const n = r.failures[c] || 0;
      fill(cells[4 + i], n ? `${fmtPercent(n / r.requests)} (${n})` : "–");
      cells[4 + i].className = `num${n ? ` cat-text-${c.toLowerCase()}` : ""}`;
    });
    const q = r.quantiles || {};
    fill(cells[7], q.p50 !== undefined ? fmtMs(q.p50 * 1000) : "–");
    fill(cells[8], q.p90 !== undefined ? fmtMs(q.p90 * 1000) : "–");
    fill(cells[9], q.p99 !== undefined ? fmtMs(q.p99 * 1000) : "–");
  }

  function histogram(key, r, red) {
    const bounds = red.bounds_seconds;
    const max = Math.max(1, ...r.buckets);
    const name = key === ALL ? "all routes" : labelOf(r);
    fill($("hist-title"), `Latency histogram: ${name}`);
    fill($("hist-note"), r.requests
      ? `${r.requests} requests counted by /metrics. Select a bucket to list the stored traces in its range.`
      : "No requests yet.");
    const hist = $("histogram");
    const n = bounds.length + 1;
    while (hist.children.length > n) hist.lastElementChild.remove();
    for (let i = 0; i < n; i++) {
      let b = hist.children[i];
      if (!b) {
        b = el("button", { type: "button", class: "bucket" },
          el("span", { class: "b-count" }), el("span", { class: "b-track", "aria-hidden": "true" }, el("span", { class: "b-fill" })), el("span", { class: "b-x" }));
        b.addEventListener("click", () => openBucket(b));
        hist.append(b);
      }
      const lo = i === 0 ? null : bounds[i - 1];
      const hi = i < bounds.length ? bounds[i] : null;
      const count = r.buckets[i] || 0;
      b.dataset.gt = lo === null ? "" : String(toMs(lo));
      b.dataset.le = hi === null ? "" : String(toMs(hi));
      b.dataset.route = key === ALL ? "" : r.overflow ? "" : `=${r.route}`;
      b.dataset.count = String(count);
      const range = hi === null ? `over ${fmtBound(lo)}` : lo === null ? `up to ${fmtBound(hi)}` : `${fmtBound(lo)} to ${fmtBound(hi)}`;
      b.setAttribute("aria-label", `${range}: ${count} request${count === 1 ? "" : "s"}. List the stored traces in this range`);
      b.title = `${range}: ${count}`;
      fill(b.children[0], count ? String(count) : "");
      b.children[1].firstChild.style.transform = `scaleY(${count / max})`;
      fill(b.children[2], hi === null ? `>${fmtBound(lo)}` : `≤${fmtBound(hi)}`);
      b.disabled = r.overflow;
    }
  }

  function toMs(seconds) {
    // Bounds like 0.075 s are not exact in binary; microsecond precision is plenty.
    return Math.round(seconds * 1e6) / 1e3;
  }

  function openBucket(b) {
    const q = new URLSearchParams();
    if (b.dataset.route) q.set("route", b.dataset.route.slice(1));
    else q.set("kind", "server");
    if (b.dataset.gt) q.set("duration_gt_ms", b.dataset.gt);
    if (b.dataset.le) q.set("duration_le_ms", b.dataset.le);
    q.set("n", b.dataset.count);
    app.navigate(`#/?${q}`);
  }

  async function refresh() {
    const mine = ++seq;
    let red;
    try {
      red = await getJson("/debug/red");
    } catch (e) {
      if (mine === seq) app.problem(`Routes: ${e.message}`);
      throw e;
    }
    if (mine !== seq) return;
    app.problem(null);
    const t = performance.now() / 1000;
    const counts = new Map(red.routes.map((r) => [keyOf(r), r.requests]));
    counts.set(ALL, red.routes.reduce((s, r) => s + r.requests, 0));
    samples.push({ t, counts });
    samples = samples.filter((s) => t - s.t <= WINDOW_S + 5);
    render(red);
  }

  return {
    show(r) {
      chosen = r.params.has("route") ? r.params.get("route") : ALL;
      document.title = "Routes · sidetrace";
      refresh().catch(() => {});
    },
    hide() {},
    refresh,
  };
}
