// Process, HTTP and browser helpers for the viewer tests: free loopback
// ports, bounded waits, and stopping exactly the processes a test started.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import fs from "node:fs";

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../..");
export const BIN = process.env.SIDETRACE_BIN || path.join(ROOT, "target/debug/sidetrace");
/** Any single wait in these tests. */
export const PATIENCE_MS = 30_000;

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns a truthy value; throws after `timeoutMs` with the last error. */
export async function waitUntil(what, check, { timeoutMs = PATIENCE_MS, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ""}`);
}

/** One HTTP request with a deadline: {status, headers, text}. */
export function request(url, { method = "GET", headers = {}, timeoutMs = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${url}: no answer in ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end();
  });
}

export async function getJson(url) {
  const r = await request(url);
  if (r.status !== 200) throw new Error(`GET ${url}: ${r.status} ${r.text}`);
  return JSON.parse(r.text);
}

/** A child process whose output is kept, stopped by `stop()` (SIGTERM, then SIGKILL). */
export function start(cmd, args, { env = {} } = {}) {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const proc = { child, out: "", err: "", exited: null };
  child.stdout.on("data", (d) => (proc.out += d));
  child.stderr.on("data", (d) => (proc.err += d));
  child.on("exit", (code, signal) => (proc.exited = { code, signal }));
  proc.stop = async () => {
    if (proc.exited) return;
    child.kill("SIGTERM");
    const deadline = Date.now() + 10_000;
    while (!proc.exited && Date.now() < deadline) await sleep(50);
    if (!proc.exited) child.kill("SIGKILL");
  };
  proc.alive = () => {
    if (proc.exited) throw new Error(`${cmd} ${args.join(" ")} exited ${JSON.stringify(proc.exited)}:\n${proc.out}\n${proc.err}`);
    return true;
  };
  return proc;
}

/** Debian's Chromium driven by playwright-core from the cache the test script installs. */
export async function launchBrowser() {
  const modules = process.env.SIDETRACE_BROWSER_NODE_MODULES;
  if (!modules) throw new Error("SIDETRACE_BROWSER_NODE_MODULES is not set: run scripts/test-browser.sh");
  const require = createRequire(path.join(modules, "noop.js"));
  const { chromium } = require("playwright-core");
  // Playwright gives each launch a fresh, empty profile of its own.
  const args = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ];
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args,
    timeout: PATIENCE_MS,
  });
  return browser;
}

/** A page that sums layout shifts (those not caused by input) into window.__cls. */
export async function newPage(browser, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, reducedMotion: "reduce", colorScheme: "light" });
  await context.grantPermissions(["clipboard-read", "clipboard-write"]);
  const page = await context.newPage();
  page.setDefaultTimeout(PATIENCE_MS);
  await page.addInitScript(() => {
    window.__cls = 0;
    window.__shifts = [];
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        if (e.hadRecentInput) continue;
        window.__cls += e.value;
        window.__shifts.push({ value: e.value, nodes: e.sources.map((s) => s.node?.outerHTML?.slice(0, 120)) });
      }
    }).observe({ type: "layout-shift", buffered: true });
  });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  page.errors = errors;
  return page;
}

/** Trace ids of the list's rows, top to bottom. */
export function rowIds(page) {
  return page.$$eval("#trace-rows tr[data-id]", (rows) => rows.map((r) => r.dataset.id));
}

/** Parses `name{labels} value` lines of a Prometheus exposition. */
export function samples(text, name) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    const close = line.lastIndexOf("}");
    const labels = {};
    for (const m of line.slice(name.length + 1, close).matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]] = m[2];
    out.push({ labels, value: Number(line.slice(close + 1).trim()) });
  }
  return out;
}

export function screenshotPath(name) {
  const dir = path.join(ROOT, "docs/img");
  fs.mkdirSync(dir, { recursive: true });
  return path.join(dir, name);
}
