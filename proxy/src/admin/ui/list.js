// The trace list: filters, live refresh without moving rows under the
// reader, newest first.
//
// Rows are slots: row i always shows the i-th trace of the latest answer,
// so a refresh rewrites text in place and never moves an element (no layout
// shift). While the reader is using the list (a row focused or hovered, the
// page scrolled), a refresh that would change which trace a row shows is
// held back behind a "new traces" button instead.
import { $, el, fill, fmtMs, fmtClock, fmtIso, getJson, categoryBadge } from "./util.js";

const PAGE = 100;
/** Filters the address and the API share; `n` and `limit` are the viewer's own. */
const API_KEYS = ["service", "route", "kind", "category", "failed", "min_duration_ms", "trace_id", "duration_gt_ms", "duration_le_ms"];
const HEX = /^[0-9a-f]{1,32}$/i;

export function createList(app) {
  const rows = $("trace-rows");
  const form = $("filters");
  let params = new URLSearchParams();
  let limit = PAGE;
  let shownIds = [];
  let pending = null;
  let hovering = false;
  let seq = 0;
  let facetsKey = "";
  let lastFocusedId = null;

  // --- filters ---------------------------------------------------------------------------

  function syncForm() {
    ensureOption($("f-route"), params.has("route") ? `=${params.get("route")}` : "", routeLabel(params.get("route")));
    ensureOption($("f-service"), params.has("service") ? `=${params.get("service")}` : "", params.get("service"));
    $("f-category").value = params.get("category") || "";
    $("f-failed").checked = params.get("failed") === "true";
    $("f-min").value = params.get("min_duration_ms") || "";
    $("f-trace").value = params.get("trace_id") || "";
    setTraceError(null);
    const gt = params.get("duration_gt_ms");
    const le = params.get("duration_le_ms");
    const chip = $("bucket-chip");
    if (gt !== null || le !== null) {
      const range = `${gt !== null ? fmtMs(+gt) : "0 ms"} < duration ≤ ${le !== null ? fmtMs(+le) : "∞"}`;
      const where = params.has("route") ? ` on route ${routeLabel(params.get("route"))}` : " on inbound requests";
      const counted = params.has("n") ? ` (/metrics counted ${params.get("n")} requests)` : "";
      fill($("bucket-text"), `Latency bucket ${range}${where}${counted}`);
      chip.hidden = false;
    } else {
      chip.hidden = true;
    }
  }

  function ensureOption(select, value, label) {
    if (value && ![...select.options].some((o) => o.value === value)) select.append(el("option", { value }, label));
    select.value = value;
  }

  function routeLabel(route) {
    return route === "" ? "(no route)" : route;
  }

  /** Reads the form into the address, then reloads the list. */
  function fromForm() {
    const next = new URLSearchParams();
    const service = $("f-service").value;
    const route = $("f-route").value;
    if (service) next.set("service", service.slice(1));
    if (route) next.set("route", route.slice(1));
    if ($("f-category").value) next.set("category", $("f-category").value);
    if ($("f-failed").checked) next.set("failed", "true");
    const min = $("f-min").value.trim();
    if (min !== "" && $("f-min").checkValidity()) next.set("min_duration_ms", min);
    const trace = $("f-trace").value.trim();
    if (trace !== "") {
      if (!HEX.test(trace)) {
        setTraceError("A trace id is hex digits (0-9, a-f), at most 32.");
        return;
      }
      next.set("trace_id", trace.toLowerCase());
    }
    setTraceError(null);
    // The bucket range stays until its chip is removed.
    for (const k of ["kind", "duration_gt_ms", "duration_le_ms", "n"]) if (params.has(k)) next.set(k, params.get(k));
    params = next;
    limit = PAGE;
    app.replace(hashOf(params));
    refresh({ live: false });
  }

  function setTraceError(message) {
    const input = $("f-trace");
    input.setAttribute("aria-invalid", message ? "true" : "false");
    fill($("f-trace-error"), message || "");
  }

  function hashOf(p) {
    const q = p.toString();
    return q ? `#/?${q}` : "#/";
  }

  let debounce = null;
  form.addEventListener("input", (e) => {
    clearTimeout(debounce);
    debounce = setTimeout(fromForm, e.target.type === "checkbox" || e.target.tagName === "SELECT" ? 0 : 300);
  });
  form.addEventListener("submit", (e) => e.preventDefault());
  $("f-trace").addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    e.preventDefault();
    clearTimeout(debounce);
    const trace = $("f-trace").value.trim().toLowerCase();
    // A whole trace id opens the trace, as pasting one from a log means.
    if (trace.length === 32 && HEX.test(trace)) app.navigate(`#/trace/${trace}`);
    else fromForm();
  });
  $("f-clear").addEventListener("click", () => {
    params = new URLSearchParams();
    syncForm();
    fromForm();
  });
  $("bucket-clear").addEventListener("click", () => {
    for (const k of ["kind", "duration_gt_ms", "duration_le_ms", "n"]) params.delete(k);
    syncForm();
    fromForm();
    $("f-service").focus();
  });
  $("more").addEventListener("click", () => {
    limit += PAGE;
    refresh({ live: false });
  });
  $("new-traces").addEventListener("click", () => {
    if (pending) render(pending);
    pending = null;
    window.scrollTo({ top: 0 });
    rows.querySelector("tr[data-id]")?.focus();
  });

  function updateFacets(list) {
    const key = JSON.stringify(list.facets);
    if (key === facetsKey) return;
    facetsKey = key;
    const service = $("f-service");
    const route = $("f-route");
    const keepService = service.value;
    const keepRoute = route.value;
    fill(service, el("option", { value: "" }, "all services"), list.facets.services.map((s) => el("option", { value: `=${s}` }, s === list.service ? `${s} (this service)` : `${s} (peer)`)));
    fill(route, el("option", { value: "" }, "all routes"), list.facets.routes.map((r) => el("option", { value: `=${r}` }, routeLabel(r))));
    ensureOption(service, keepService, keepService.slice(1));
    ensureOption(route, keepRoute, routeLabel(keepRoute.slice(1)));
  }

  // --- rows ------------------------------------------------------------------------------

  function engaged() {
    return hovering || rows.contains(document.activeElement) || window.scrollY > 0;
  }

  rows.addEventListener("pointerenter", () => (hovering = true));
  rows.addEventListener("pointerleave", () => (hovering = false));
  rows.addEventListener("focusin", (e) => {
    lastFocusedId = e.target.closest("tr")?.dataset.id || lastFocusedId;
  });
  rows.addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-id]");
    if (!tr || window.getSelection()?.toString()) return;
    e.preventDefault();
    open(tr.dataset.id);
  });
  rows.addEventListener("keydown", (e) => {
    const tr = e.target.closest("tr[data-id]");
    if (!tr) return;
    const all = [...rows.querySelectorAll("tr[data-id]")];
    const i = all.indexOf(tr);
    const go = (j) => {
      e.preventDefault();
      all[Math.max(0, Math.min(all.length - 1, j))]?.focus();
    };
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      open(tr.dataset.id);
    } else if (e.key === "ArrowDown" || e.key === "j") go(i + 1);
    else if (e.key === "ArrowUp" || e.key === "k") go(i - 1);
    else if (e.key === "Home") go(0);
    else if (e.key === "End") go(all.length - 1);
  });

  function open(id) {
    lastFocusedId = id;
    app.navigate(`#/trace/${id}`);
  }

  function slot(i) {
    let tr = rows.children[i];
    if (!tr) {
      tr = el("tr", {},
        el("td", { class: "c-time" }), el("td", { class: "c-root" }), el("td", { class: "c-service" }),
        el("td", { class: "c-dur num" }), el("td", { class: "c-status" }), el("td", { class: "c-fail" }));
      rows.append(tr);
    }
    return tr;
  }

  function render(list) {
    const traces = list.traces;
    const max = Math.max(1e-9, ...traces.map((t) => t.duration_ms));
    traces.forEach((t, i) => paint(slot(i), t, max));
    if (traces.length === 0) {
      const tr = slot(0);
      delete tr.dataset.id;
      tr.removeAttribute("tabindex");
      tr.removeAttribute("aria-label");
      tr.className = "empty";
      fill(tr, el("td", { colspan: "6" }, emptyText(list)));
    }
    while (rows.children.length > Math.max(1, traces.length)) rows.lastElementChild.remove();
    shownIds = traces.map((t) => t.trace_id);
    const more = list.matched > traces.length;
    $("more").hidden = !more;
    fill($("list-count"),
      `${traces.length} of ${list.matched} matching trace${list.matched === 1 ? "" : "s"}`,
      ` · store holds ${list.stored} of ${list.capacity}`);
    $("new-traces").hidden = true;
    app.service(list.service);
  }

  function emptyText(list) {
    if (list.stored > 0) return "No stored trace matches these filters.";
    return "No traces yet. Send a request through the proxy and it appears here within a second or two. " +
      "(With tracing.export set, spans go to the collector instead of this store.)";
  }

  function paint(tr, t, max) {
    const key = `${t.trace_id}/${t.span_count}/${t.duration_ms}/${max}`;
    if (tr.dataset.key === key) return;
    tr.dataset.key = key;
    tr.dataset.id = t.trace_id;
    tr.tabIndex = 0;
    tr.className = t.failure_category || t.failed_spans ? "failed" : "";
    if (tr.children.length !== 6) {
      fill(tr, el("td", { class: "c-time" }), el("td", { class: "c-root" }), el("td", { class: "c-service" }),
        el("td", { class: "c-dur num" }), el("td", { class: "c-status" }), el("td", { class: "c-fail" }));
    }
    const [time, root, service, dur, status, fail] = tr.children;
    fill(time, el("time", { datetime: fmtIso(t.start_unix_nanos), title: fmtIso(t.start_unix_nanos) }, fmtClock(t.start_unix_nanos)));
    fill(root,
      el("a", { href: `#/trace/${t.trace_id}`, tabindex: "-1", class: "root-name" }, t.root || "(unnamed)"),
      // A gRPC span's name is its path already.
      t.path && t.path !== `/${t.root}` ? el("span", { class: "muted root-path" }, t.path) : null,
      t.kind === "CLIENT" ? el("span", { class: "badge kind-client", title: "The trace starts with an outbound call" }, "CLIENT") : null,
      t.orphan ? el("span", { class: "badge orphan", title: "An outbound call that carried no trace context: the app did not forward its inbound request's trace headers" }, "orphan") : null,
      t.span_count > 1 ? el("span", { class: "muted spans-n" }, `${t.span_count} spans`) : null,
      // A narrow window has no room for the status and failure columns: a second line.
      el("div", { class: "sub", "aria-hidden": "true" }, statusText(t), " ", failureCell(t)));
    root.title = [t.root, t.path].filter(Boolean).join(" ");
    fill(service, t.service, t.peers.length ? el("span", { class: "muted" }, ` → ${t.peers.join(", ")}`) : null);
    service.title = [t.service, ...t.peers].join(" → ");
    fill(dur, fmtMs(t.duration_ms), el("span", { class: "dbar", "aria-hidden": "true" }, el("span", {})));
    dur.lastChild.firstChild.style.transform = `scaleX(${Math.max(0.01, t.duration_ms / max)})`;
    fill(status, statusText(t));
    fill(fail, failureCell(t));
    tr.setAttribute("aria-label", [
      fmtClock(t.start_unix_nanos), t.root, statusText(t).textContent, fmtMs(t.duration_ms),
      t.failure_category ? `failed: ${t.failure_category} ${t.error_type || ""}` : t.failed_spans ? `${t.failed_spans} failed span` : "",
      t.orphan ? "orphan outbound call" : "",
    ].filter(Boolean).join(", "));
  }

  function statusText(t) {
    if (t.grpc_status) {
      const cls = t.grpc_status === "OK" ? "st-ok" : t.failure_category === "VALIDATION" ? "st-4xx" : "st-5xx";
      return el("span", { class: `st ${cls}`, title: `HTTP ${t.http_status ?? "–"}, grpc-status ${t.grpc_status}` }, `gRPC ${t.grpc_status}`);
    }
    if (t.http_status) {
      const c = Math.floor(t.http_status / 100);
      return el("span", { class: `st st-${c === 2 || c === 3 ? "ok" : `${c}xx`}` }, String(t.http_status));
    }
    return el("span", { class: "st muted" }, t.cancelled ? "cancelled" : "no response");
  }

  function failureCell(t) {
    if (t.failure_category) {
      // error.type repeats the status for plain status failures; name it only when it adds something (panic, timeout).
      const extra = t.error_type && t.error_type !== String(t.http_status) && t.error_type !== t.grpc_status ? t.error_type : "";
      return categoryBadge(t.failure_category, extra);
    }
    if (t.failed_spans) return el("span", { class: "warn", title: "The request succeeded, but a call it made failed" }, `${t.failed_spans} failed span${t.failed_spans > 1 ? "s" : ""}`);
    if (t.cancelled) return el("span", { class: "muted" }, "client went away");
    return "";
  }

  // --- loading ---------------------------------------------------------------------------

  async function refresh({ live }) {
    const mine = ++seq;
    const q = new URLSearchParams();
    for (const k of API_KEYS) if (params.has(k)) q.set(k, params.get(k));
    q.set("limit", String(limit));
    q.set("spans", "false");
    let list;
    try {
      list = await getJson(`/debug/traces?${q}`);
    } catch (e) {
      if (mine === seq) app.problem(`Traces: ${e.message}`);
      throw e;
    }
    if (mine !== seq) return;
    app.problem(null);
    updateFacets(list);
    const ids = list.traces.map((t) => t.trace_id);
    const moved = ids.length !== shownIds.length || ids.some((id, i) => id !== shownIds[i]);
    if (live && moved && shownIds.length && engaged()) {
      pending = list;
      const fresh = ids.filter((id) => !shownIds.includes(id)).length;
      fill($("new-traces"), fresh ? `${fresh} new trace${fresh > 1 ? "s" : ""}: show` : "List changed: show");
      $("new-traces").hidden = false;
      return;
    }
    pending = null;
    render(list);
  }

  // --- view ------------------------------------------------------------------------------

  return {
    show(r, { entering }) {
      params = new URLSearchParams(r.params);
      limit = Math.max(PAGE, Number(params.get("limit")) || PAGE);
      params.delete("limit");
      syncForm();
      document.title = "Traces · sidetrace";
      if (entering) {
        // Back from a trace: focus the row it was opened from.
        const back = lastFocusedId && rows.querySelector(`tr[data-id="${lastFocusedId}"]`);
        if (back) back.focus();
        else $("list-title").focus({ preventScroll: true });
      }
      refresh({ live: false }).catch(() => {});
    },
    hide() {
      pending = null;
      hovering = false;
    },
    refresh,
  };
}
