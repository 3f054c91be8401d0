// One trace: a waterfall of its spans on a shared time axis, and the
// selected span's attributes, events and links.
import { $, el, fill, fmtMs, fmtClock, fmtIso, getJson, copyText, categoryBadge } from "./util.js";

const INDENT_PX = 16;

export function createTrace(app) {
  const tree = $("waterfall");
  let trace = null;
  let byId = new Map();
  let order = [];
  let selected = null;
  let seq = 0;

  $("copy-id").addEventListener("click", async () => {
    if (!trace) return;
    const ok = await copyText(trace.trace_id);
    fill($("copy-status"), ok ? "Copied" : "Copy refused: select the id by hand");
    setTimeout(() => fill($("copy-status"), ""), 2500);
  });
  $("trace-reload").addEventListener("click", () => load(trace?.trace_id, selected));

  tree.addEventListener("click", (e) => {
    const row = e.target.closest("[role=treeitem]");
    if (row) select(row.dataset.span, { focus: true });
  });
  tree.addEventListener("keydown", (e) => {
    const row = e.target.closest("[role=treeitem]");
    if (!row) return;
    const i = order.indexOf(row.dataset.span);
    const go = (j) => {
      e.preventDefault();
      const id = order[Math.max(0, Math.min(order.length - 1, j))];
      if (id) select(id, { focus: true });
    };
    if (e.key === "ArrowDown") go(i + 1);
    else if (e.key === "ArrowUp") go(i - 1);
    else if (e.key === "Home") go(0);
    else if (e.key === "End") go(order.length - 1);
    else if (e.key === "ArrowLeft") {
      const parent = byId.get(byId.get(row.dataset.span)?.parent_span_id);
      if (parent) go(order.indexOf(parent.span_id));
    } else if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      $("span-detail").focus();
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !$("view-trace").hidden && !e.target.closest("input, select, textarea")) {
      app.navigate("#/");
    }
  });

  async function load(id, spanId) {
    const mine = ++seq;
    fill($("trace-title"), "Trace");
    fill($("trace-id"), id);
    $("raw-json").href = `/debug/traces/${encodeURIComponent(id)}`;
    let t;
    try {
      t = await getJson(`/debug/traces/${encodeURIComponent(id)}`);
    } catch (e) {
      if (mine !== seq) return;
      trace = null;
      fill(tree);
      fill($("trace-meta"));
      fill($("span-detail"), el("p", { class: "muted" }, "No span to show."));
      const why = e.status === 404
        ? "This trace is not in the store: it was not sampled, or newer traces evicted it."
        : e.status === 400 ? "That is not a trace id: a trace id is 32 hex digits, as in the x-trace-id response header." : e.message;
      fill($("trace-error"), why);
      $("trace-error").hidden = false;
      return;
    }
    if (mine !== seq) return;
    $("trace-error").hidden = true;
    trace = t;
    render(spanId);
  }

  function render(spanId) {
    const spans = trace.spans;
    byId = new Map(spans.map((s) => [s.span_id, s]));
    const children = new Map();
    const roots = [];
    for (const s of spans) {
      if (s.parent_span_id && byId.has(s.parent_span_id)) {
        if (!children.has(s.parent_span_id)) children.set(s.parent_span_id, []);
        children.get(s.parent_span_id).push(s);
      } else roots.push(s);
    }
    const byStart = (a, b) => a.start_unix_nanos - b.start_unix_nanos;
    roots.sort(byStart);
    for (const list of children.values()) list.sort(byStart);
    const t0 = Math.min(...spans.map((s) => s.start_unix_nanos));
    const t1 = Math.max(...spans.map((s) => s.end_unix_nanos));
    const total = Math.max(1, t1 - t0);

    order = [];
    const rows = [];
    const walk = (s, depth, siblings, pos) => {
      order.push(s.span_id);
      rows.push(row(s, depth, siblings, pos, t0, total));
      const kids = children.get(s.span_id) || [];
      kids.forEach((k, i) => walk(k, depth + 1, kids.length, i + 1));
    };
    roots.forEach((r, i) => walk(r, 0, roots.length, i + 1));
    fill(tree, rows);
    axis(total);

    const root = roots[0];
    document.title = `${trace.root || "Trace"} · sidetrace`;
    fill($("trace-title"), trace.root || "(unnamed)");
    fill($("trace-meta"),
      meta("Started", el("time", { datetime: fmtIso(trace.start_unix_nanos), title: fmtIso(trace.start_unix_nanos) }, fmtClock(trace.start_unix_nanos))),
      meta("Duration", fmtMs(trace.duration_ms)),
      meta("Spans", String(trace.span_count)),
      meta("Service", [trace.service, ...trace.peers].join(" → ")),
      meta("Status", trace.grpc_status ? `gRPC ${trace.grpc_status} (HTTP ${trace.http_status ?? "–"})` : trace.http_status ? String(trace.http_status) : trace.cancelled ? "cancelled" : "no response"),
      trace.failure_category ? meta("Failure", categoryBadge(trace.failure_category, trace.error_type || "")) : null,
      trace.orphan ? meta("Orphan", el("span", { class: "badge orphan" }, "outbound call without trace context")) : null);
    const pick = spanId && byId.has(spanId) ? spanId : root?.span_id;
    if (pick) select(pick, { focus: false });
  }

  function meta(label, value) {
    return el("div", { class: "meta" }, el("dt", {}, label), el("dd", {}, value));
  }

  function axis(total) {
    const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) =>
      el("span", { class: `tick${f === 1 ? " last" : ""}`, dataset: { f: String(f) } }, fmtMs((total * f) / 1e6)));
    fill($("wf-axis"), ticks);
    for (const t of $("wf-axis").children) t.style.left = `${Number(t.dataset.f) * 100}%`;
  }

  function row(s, depth, setsize, pos, t0, total) {
    const left = ((s.start_unix_nanos - t0) / total) * 100;
    const width = ((s.end_unix_nanos - s.start_unix_nanos) / total) * 100;
    const kind = s.kind.toLowerCase();
    const failure = s.attributes["sidetrace.failure.category"];
    const exception = s.events.some((e) => e.name === "exception");
    const remoteParent = s.parent_span_id && !byId.has(s.parent_span_id);
    const bar = el("div", {
      class: `wf-bar kind-${kind}${s.status === "ERROR" ? " error" : ""}${s.orphan ? " orphan" : ""}`,
      dataset: { durationMs: String(s.duration_ms) },
    });
    bar.style.left = `${left}%`;
    bar.style.width = `${width}%`;
    const label = el("span", { class: "wf-dur" }, fmtMs(s.duration_ms));
    // After the bar; inside its end when the bar is wide; before it when a
    // narrow bar ends near the right edge.
    if (width >= 30) {
      label.classList.add("inside");
      label.style.right = `${100 - left - width}%`;
    } else if (left + width > 80) label.style.right = `${100 - left}%`;
    else label.style.left = `${left + width}%`;
    const name = el("div", { class: "wf-name" },
      el("span", { class: `badge kind-${kind}`, title: kind === "server" ? "SERVER: a request the proxy received" : "CLIENT: a call the app made through the proxy" }, s.kind),
      el("span", { class: "wf-label" }, s.name),
      statusOf(s),
      s.orphan ? el("span", { class: "badge orphan", title: "An outbound call that carried no trace context: the app did not forward its inbound request's headers" }, "orphan") : null,
      exception ? el("span", { class: "badge exception", title: "This span has an exception event" }, "exception") : null,
      remoteParent ? el("span", { class: "muted remote", title: `Parent span ${s.parent_span_id} belongs to the caller` }, "↰ caller") : null);
    name.style.paddingLeft = `${depth * INDENT_PX + 6}px`;
    const ms = fmtMs(s.duration_ms);
    const r = el("div", {
      role: "treeitem",
      class: `wf-row${failure ? " failed" : ""}`,
      "aria-level": String(depth + 1),
      "aria-setsize": String(setsize),
      "aria-posinset": String(pos),
      "aria-selected": "false",
      "aria-label": `${s.kind} ${s.name}, ${ms}, starts at +${fmtMs((s.start_unix_nanos - t0) / 1e6)}${failure ? `, failed ${failure}` : ""}${s.orphan ? ", orphan" : ""}`,
      tabindex: "-1",
      dataset: { span: s.span_id, depth: String(depth) },
    }, name, el("div", { class: "wf-track" }, bar, label));
    return r;
  }

  function statusOf(s) {
    const a = s.attributes;
    if (a["rpc.grpc.status_code"] !== undefined) {
      return el("span", { class: `st ${a["rpc.grpc.status_code"] === 0 ? "st-ok" : "st-5xx"}` }, `grpc ${a["rpc.grpc.status_code"]}`);
    }
    const code = a["http.response.status_code"];
    if (code === undefined) return null;
    const c = Math.floor(code / 100);
    return el("span", { class: `st st-${c === 2 || c === 3 ? "ok" : `${c}xx`}` }, String(code));
  }

  function select(spanId, { focus }) {
    selected = spanId;
    for (const r of tree.children) {
      const on = r.dataset.span === spanId;
      r.setAttribute("aria-selected", String(on));
      r.tabIndex = on ? 0 : -1;
      if (on && focus) r.focus();
    }
    app.replace(`#/trace/${trace.trace_id}/${spanId}`);
    detail(byId.get(spanId));
  }

  function detail(s) {
    const t0 = trace.start_unix_nanos;
    const parent = s.parent_span_id ? byId.get(s.parent_span_id) : null;
    const kids = trace.spans.filter((c) => c.parent_span_id === s.span_id);
    const attrs = Object.keys(s.attributes).sort();
    fill($("span-detail"),
      el("h2", { id: "detail-title" }, s.name),
      el("dl", { class: "facts" },
        meta("Kind", s.kind === "SERVER" ? "SERVER (received by the proxy)" : "CLIENT (called by the app)"),
        meta("Span status", s.status === "ERROR" ? el("span", { class: "st st-5xx" }, "ERROR") : "UNSET (not an error)"),
        meta("Duration", fmtMs(s.duration_ms)),
        meta("Starts at", `+${fmtMs((s.start_unix_nanos - t0) / 1e6)}`),
        meta("Span id", el("code", {}, s.span_id))),
      el("h3", {}, "Attributes"),
      attrs.length ? el("table", { class: "kv" },
        el("caption", { class: "vh" }, `Attributes of ${s.name}`),
        el("tbody", {}, attrs.map((k) => el("tr", {}, el("th", { scope: "row" }, breakable(k)), el("td", {}, String(s.attributes[k])))))) :
        el("p", { class: "muted" }, "None."),
      el("h3", {}, `Events (${s.events.length})`),
      s.events.length ? el("ol", { class: "events" }, s.events.map((e) => eventItem(e, s))) : el("p", { class: "muted" }, "None."),
      el("h3", {}, "Links"),
      el("ul", { class: "links" },
        el("li", {}, "Parent: ", parent ? spanButton(parent)
          : s.parent_span_id ? el("span", {}, el("code", {}, s.parent_span_id), " in the calling service (not in this store)")
          : el("span", { class: "muted" }, s.orphan ? "none: an orphan outbound call" : "none: this is the root")),
        el("li", {}, `Children (${kids.length}): `, kids.length ? kids.map((k, i) => [i ? ", " : "", spanButton(k)]) : el("span", { class: "muted" }, "none")),
        el("li", {}, el("a", { href: `/debug/traces/${trace.trace_id}` }, "Raw JSON of the trace"))));
  }

  function spanButton(s) {
    return el("button", { type: "button", class: "linkish", onclick: () => select(s.span_id, { focus: true }) }, `${s.kind} ${s.name}`);
  }

  function eventItem(e, s) {
    const at = `+${fmtMs((e.time_unix_nanos - s.start_unix_nanos) / 1e6)} into the span`;
    const keys = Object.keys(e.attributes).sort();
    if (e.name === "exception") {
      return el("li", { class: "event exception", role: "group", "aria-label": "exception event" },
        el("div", { class: "ev-head" }, el("strong", {}, "exception"), " ", el("span", { class: "muted" }, at)),
        el("div", { class: "ev-type" }, String(e.attributes["exception.type"] ?? "")),
        el("pre", { class: "ev-message" }, String(e.attributes["exception.message"] ?? "")),
        keys.filter((k) => k !== "exception.type" && k !== "exception.message").length
          ? kvTable(e.attributes, keys.filter((k) => k !== "exception.type" && k !== "exception.message")) : null);
    }
    return el("li", { class: "event" }, el("div", { class: "ev-head" }, el("strong", {}, e.name), " ", el("span", { class: "muted" }, at)), keys.length ? kvTable(e.attributes, keys) : null);
  }

  function kvTable(obj, keys) {
    return el("table", { class: "kv" }, el("tbody", {}, keys.map((k) => el("tr", {}, el("th", { scope: "row" }, breakable(k)), el("td", {}, String(obj[k]))))));
  }

  /** An attribute key that may wrap after its dots, not inside a word. */
  function breakable(key) {
    return key.split(".").flatMap((part, i) => (i ? [".", el("wbr"), part] : [part]));
  }

  return {
    show(r, { entering }) {
      const same = trace && trace.trace_id === r.id;
      if (same && r.span && byId.has(r.span)) {
        if (r.span !== selected) select(r.span, { focus: false });
        return;
      }
      load(r.id, r.span);
      if (entering) $("trace-title").focus({ preventScroll: true });
    },
    hide() {},
    // A trace is complete when it is listed; it is not refreshed under the reader.
    refresh: null,
  };
}
