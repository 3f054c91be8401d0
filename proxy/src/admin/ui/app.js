// The trace viewer: a hash router over three views (the trace list, one
// trace, the per-route RED summary) and one live-refresh loop.
import { $, fill, getJson } from "./util.js";
import { createList } from "./list.js";
import { createTrace } from "./trace.js";
import { createRed } from "./red.js";

const REFRESH_MS = 2000;

const app = {
  live: true,
  /** Shows a problem in the toast; `null` clears it. */
  problem(message) {
    const toast = $("toast");
    if (!message) {
      toast.hidden = true;
      return;
    }
    fill($("toast-text"), message);
    toast.hidden = false;
  },
  /** Names the proxy's service in the header once a view learns it. */
  service(name) {
    if (name) fill($("service"), name);
  },
  navigate(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  },
  /** Rewrites the address without a history entry (filters, selection). */
  replace(hash) {
    if (location.hash !== hash) history.replaceState(null, "", hash);
  },
};

const views = {
  list: createList(app),
  trace: createTrace(app),
  red: createRed(app),
};
let current = null;
let timer = null;

function parse(hash) {
  const h = hash.replace(/^#/, "") || "/";
  const [path, query = ""] = h.split("?");
  const params = new URLSearchParams(query);
  const trace = path.match(/^\/trace\/([^/]+)(?:\/([^/]+))?$/);
  if (trace) return { view: "trace", id: decodeURIComponent(trace[1]), span: trace[2] ? decodeURIComponent(trace[2]) : null, params };
  if (path === "/red") return { view: "red", params };
  return { view: "list", params };
}

function route() {
  const r = parse(location.hash);
  const next = views[r.view];
  if (current && current !== next) current.hide();
  for (const [name, view] of Object.entries(views)) {
    $(`view-${name}`).hidden = view !== next;
  }
  for (const link of document.querySelectorAll("nav.views a")) {
    const on = link.dataset.view === (r.view === "trace" ? "list" : r.view);
    if (on) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const entering = current !== next;
  current = next;
  // Each view loads on show, paused or not; the loop takes over from there.
  next.show(r, { entering });
  schedule(false);
}

/** Runs the current view's refresh now (`immediate`) or after the interval. */
function schedule(immediate) {
  clearTimeout(timer);
  timer = setTimeout(tick, immediate ? 0 : REFRESH_MS);
}

async function tick() {
  if (app.live && !document.hidden && current?.refresh) {
    try {
      await current.refresh({ live: true });
    } catch {
      // Each view reports its own failures in the toast.
    }
  }
  schedule(false);
}

function setLive(on) {
  app.live = on;
  const button = $("live");
  button.setAttribute("aria-pressed", String(on));
  fill($("live-label"), on ? "Live" : "Paused");
  button.title = on ? "Live refresh every 2 s: press to pause (p)" : "Paused: press to resume live refresh (p)";
  if (on) schedule(true);
}

$("live").addEventListener("click", () => setLive(!app.live));
$("toast-close").addEventListener("click", () => app.problem(null));
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) schedule(true);
});
document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const typing = e.target.closest("input, select, textarea");
  if (e.key === "p" && !typing) {
    e.preventDefault();
    setLive(!app.live);
  } else if (e.key === "/" && !typing && current === views.list) {
    e.preventDefault();
    $("f-trace").focus();
  }
});
window.addEventListener("hashchange", route);
setLive(true);
route();
// The header names the service from the start, whichever view opened first.
getJson("/debug/traces?limit=1&spans=false").then((l) => app.service(l.service), () => {});
