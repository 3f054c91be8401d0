// Helpers shared by the views: DOM building, formatting, fetching.
// Every value that came from a request (paths, headers, route names) is set
// with textContent, never parsed as HTML.

/** Builds an element: el("td", {class: "num", title: "x"}, "text", child). */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export const $ = (id) => document.getElementById(id);

/** 0.42 ms, 12.3 ms, 1.25 s, 2 min 5 s. */
export function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  if (ms === 0) return "0";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 100) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  const min = Math.floor(ms / 60000);
  return `${min} min ${Math.round((ms - min * 60000) / 1000)} s`;
}

/** A bucket bound in seconds as the histogram axis shows it: 5 ms, 2.5 s. */
export function fmtBound(seconds) {
  if (!Number.isFinite(seconds)) return "+Inf";
  const ms = seconds * 1000;
  return ms < 1000 ? `${+ms.toPrecision(3)} ms` : `${+seconds.toPrecision(3)} s`;
}

/** Local wall-clock time of a Unix-nanosecond timestamp, to the millisecond. */
export function fmtClock(unixNanos) {
  const d = new Date(unixNanos / 1e6);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function fmtIso(unixNanos) {
  return new Date(unixNanos / 1e6).toISOString();
}

export function fmtPercent(ratio) {
  if (!ratio) return "0 %";
  const p = ratio * 100;
  return `${p < 1 ? p.toFixed(2) : p < 10 ? p.toFixed(1) : Math.round(p)} %`;
}

export function fmtRate(perSecond) {
  if (perSecond === null || perSecond === undefined) return "–";
  if (perSecond === 0) return "0";
  if (perSecond < 0.1) return perSecond.toFixed(3);
  if (perSecond < 10) return perSecond.toFixed(2);
  return perSecond.toFixed(1);
}

/** A failed fetch, with the server's own message when it sent one. */
export class FetchError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/**
 * GETs JSON from the admin server with a deadline. A 4xx/5xx answer becomes
 * a FetchError carrying the server's `error` text (or its plain-text body,
 * such as the admin access rule's 403).
 */
export async function getJson(url, { timeoutMs = 5000, signal } = {}) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(new FetchError(`no answer from the admin server in ${timeoutMs / 1000} s`)), timeoutMs);
  const onAbort = () => ctrl.abort(signal.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    let resp;
    try {
      resp = await fetch(url, { signal: ctrl.signal, headers: { accept: "application/json" }, cache: "no-store" });
    } catch (e) {
      if (ctrl.signal.reason instanceof FetchError) throw ctrl.signal.reason;
      if (e.name === "AbortError") throw e;
      throw new FetchError("the admin server is unreachable (is sidetrace running?)");
    }
    const text = await resp.text();
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      // Plain text: the access rule's 403, or a proxy in between.
    }
    if (!resp.ok) {
      const why = body && typeof body.error === "string" ? body.error : text.trim() || resp.statusText;
      throw new FetchError(`${resp.status}: ${why}`, resp.status);
    }
    if (body === null) throw new FetchError(`${url} did not answer JSON`);
    return body;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

/** Copies text, falling back to a selected hidden field where the Clipboard API is refused. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = el("textarea", { class: "vh", "aria-hidden": "true" }, text);
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}

export const CATEGORIES = ["VALIDATION", "NETWORK", "INTERNAL"];

/** The badge of a failure category, its severity in words for screen readers. */
export function categoryBadge(category, extra) {
  const severity = { VALIDATION: "medium", NETWORK: "high", INTERNAL: "critical" }[category] || "";
  return el("span", { class: `badge cat-${category.toLowerCase()}`, title: `${category}: severity ${severity}` }, category, extra ? ` ${extra}` : "");
}
