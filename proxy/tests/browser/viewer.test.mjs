// The trace viewer (/debug/traces/ui) in a real browser: Debian's Chromium
// driven by playwright-core, against the real binary. Run by
// scripts/test-browser.sh, which installs both.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { BIN, freePort, getJson, launchBrowser, newPage, request, rowIds, samples, screenshotPath, sleep, start, waitUntil } from "./harness.mjs";
import { startApp } from "./app.mjs";

const TEST_MS = 180_000;

describe("a proxy in front of a test upstream", { timeout: TEST_MS * 4 }, () => {
  let app, proxy, browser, admin, inbound, dir;
  /** Trace ids of the traffic sent, by what it was. */
  const sent = { slow: {}, fail: {}, all: [] };

  /** Sends one request through the proxy and answers its x-trace-id. */
  async function send(pathAndQuery, headers = {}) {
    const r = await request(`${inbound}${pathAndQuery}`, { headers });
    const id = r.headers["x-trace-id"];
    assert.match(id || "", /^[0-9a-f]{32}$/, `${pathAndQuery}: no x-trace-id (${r.status})`);
    sent.all.push(id);
    return { id, status: r.status };
  }

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "sidetrace-viewer-"));
    app = await startApp();
    const [inPort, outPort, adminPort] = [await freePort(), await freePort(), await freePort()];
    app.outbound = outPort;
    const config = path.join(dir, "sidetrace.yaml");
    fs.writeFileSync(config, [
      "routes:",
      "  - { prefix: /checkout, name: checkout }",
      "  - { prefix: /slow, name: slow }",
      "  - { prefix: /fail, name: fail }",
      "tracing:",
      "  debug_panic_header: x-debug-panic",
      "",
    ].join("\n"));
    proxy = start(BIN, [
      "run", "--config", config, "--inbound", `127.0.0.1:${inPort}`, "--outbound", `127.0.0.1:${outPort}`,
      "--admin", `127.0.0.1:${adminPort}`, "--upstream", `http://127.0.0.1:${app.port}`, "--service-name", "checkout-api",
      "--log-level", "warn",
    ]);
    admin = `http://127.0.0.1:${adminPort}`;
    inbound = `http://127.0.0.1:${inPort}`;
    await waitUntil("the proxy to be ready", async () => proxy.alive() && (await request(`${admin}/ready`)).status === 200);

    // Traffic of known shape, oldest first.
    sent.checkout = (await send("/checkout?before_ms=40&leaf_ms=120&after_ms=40")).id;
    sent.orphanServer = (await send("/checkout/noforward?leaf_ms=10&forward=0")).id;
    for (const ms of [15, 15, 15, 60, 60, 150, 150, 150, 350]) {
      (sent.slow[ms] ||= []).push((await send(`/slow?delay_ms=${ms}`)).id);
    }
    for (const status of [500, 404, 503]) {
      const r = await send(`/fail?status=${status}`);
      assert.equal(r.status, status);
      sent.fail[status] = r.id;
    }
    const panic = await send("/fail/panic", { "x-debug-panic": "1" });
    assert.equal(panic.status, 500);
    sent.panic = panic.id;
    // Every trace stored, the checkout one with both spans, and the orphan call's own trace.
    await waitUntil("the traces in the store", async () => {
      const list = await getJson(`${admin}/debug/traces?spans=false&limit=1000`);
      const ids = new Set(list.traces.map((t) => t.trace_id));
      const checkout = list.traces.find((t) => t.trace_id === sent.checkout);
      const orphan = list.traces.find((t) => t.orphan);
      if (orphan) sent.orphan = orphan.trace_id;
      return sent.all.every((id) => ids.has(id)) && checkout?.span_count === 2 && orphan;
    });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await proxy?.stop();
    await app?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function openViewer(hash = "", viewport) {
    const page = await newPage(browser, viewport);
    await page.goto(`${admin}/debug/traces/ui${hash}`);
    return page;
  }

  it("lists every trace /debug/traces reports, newest first, with its root, status and failure", { timeout: TEST_MS }, async () => {
    const page = await openViewer();
    const api = await getJson(`${admin}/debug/traces`);
    const want = api.traces.map((t) => t.trace_id);
    assert.equal(want.length, sent.all.length + 1, "every request's trace and the orphan call's");
    await waitUntil("the rows to match /debug/traces", async () => JSON.stringify(await rowIds(page)) === JSON.stringify(want));
    const row = (id) => page.locator(`#trace-rows tr[data-id="${id}"]`);
    assert.match(await row(sent.slow[150][0]).innerText(), /GET slow[\s\S]*checkout-api[\s\S]*1\d\d(\.\d)? ms[\s\S]*200/);
    assert.match(await row(sent.fail[503]).innerText(), /GET fail[\s\S]*503[\s\S]*NETWORK/);
    assert.match(await row(sent.panic).innerText(), /500[\s\S]*INTERNAL panic/);
    assert.match(await row(sent.orphan).innerText(), /CLIENT[\s\S]*orphan/);
    assert.match(await row(sent.checkout).innerText(), /GET checkout[\s\S]*2 spans/);
    await page.locator("#trace-rows").hover({ position: { x: 5, y: 5 } }).catch(() => {});
    await page.mouse.move(0, 0);
    await page.screenshot({ path: screenshotPath("viewer-list.png") });
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  it("filters: failed requests only, a failure category, a route, a trace id", { timeout: TEST_MS }, async () => {
    const page = await openViewer();
    await waitUntil("rows", async () => (await rowIds(page)).length === sent.all.length + 1);
    await page.getByLabel("Failed requests only", { exact: true }).check();
    const failed = [sent.fail[500], sent.fail[404], sent.fail[503], sent.panic];
    await waitRows(page, failed, "only the failed requests");
    const api = await getJson(`${admin}/debug/traces?failed=true`);
    assert.deepEqual(await rowIds(page), api.traces.map((t) => t.trace_id), "the same order as the API");
    assert.match(page.url(), /failed=true/, "the filter is in the address");

    await page.getByLabel("Failure category", { exact: true }).selectOption("INTERNAL");
    await waitRows(page, [sent.fail[500], sent.panic], "INTERNAL failures");
    await page.getByRole("button", { name: "Clear filters" }).click();
    await waitUntil("all rows back", async () => (await rowIds(page)).length === sent.all.length + 1);

    await page.getByLabel("Route", { exact: true }).selectOption({ label: "slow" });
    await waitRows(page, Object.values(sent.slow).flat(), "the slow route");
    await page.getByLabel("Route", { exact: true }).selectOption({ label: "all routes" });

    await page.getByLabel("Min duration, ms", { exact: true }).fill("300");
    // The panic's duration varies run to run (it unwinds): ask the API, and check what is known.
    await waitUntil("only slower traces", async () => {
      const api = await getJson(`${admin}/debug/traces?min_duration_ms=300`);
      const got = await rowIds(page);
      return sameSet(got, api.traces.map((t) => t.trace_id)) && got.includes(sent.slow[350][0]) &&
        [...sent.slow[15], ...sent.slow[60], ...sent.slow[150]].every((id) => !got.includes(id));
    });
    await page.getByLabel("Min duration, ms", { exact: true }).fill("");

    const id = sent.fail[404];
    await page.getByLabel("Trace id", { exact: true }).fill(id.slice(8, 20).toUpperCase());
    await waitRows(page, [id], "the searched trace");
    await page.getByLabel("Trace id", { exact: true }).fill("not-hex");
    await waitUntil("the field's error", async () => (await page.locator("#f-trace").getAttribute("aria-invalid")) === "true");
    assert.match(await page.locator("#f-trace-error").innerText(), /hex digits/);
    await page.getByLabel("Trace id", { exact: true }).fill(id);
    await page.getByLabel("Trace id", { exact: true }).press("Enter");
    await page.waitForURL(new RegExp(`#/trace/${id}`));
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  it("shows a trace as a waterfall: parent above child, bars to scale, kinds told apart", { timeout: TEST_MS }, async () => {
    const page = await openViewer();
    await page.locator(`#trace-rows tr[data-id="${sent.checkout}"]`).click();
    const items = page.locator("#waterfall [role=treeitem]");
    await waitUntil("two spans", async () => (await items.count()) === 2);
    const trace = await getJson(`${admin}/debug/traces/${sent.checkout}`);
    const server = trace.spans.find((s) => s.kind === "SERVER");
    const client = trace.spans.find((s) => s.kind === "CLIENT");
    assert.equal(client.parent_span_id, server.span_id);
    assert.ok(server.duration_ms >= 200 && client.duration_ms >= 120, "the shape the app was asked for");

    const [parent, child] = [items.nth(0), items.nth(1)];
    assert.equal(await parent.getAttribute("aria-level"), "1");
    assert.equal(await child.getAttribute("aria-level"), "2");
    assert.match(await parent.innerText(), /SERVER[\s\S]*GET checkout/);
    assert.match(await child.innerText(), /CLIENT[\s\S]*GET/);
    const px = (await parent.locator(".wf-name > .badge").first().boundingBox()).x;
    const cx = (await child.locator(".wf-name > .badge").first().boundingBox()).x;
    assert.ok(cx - px >= 12, `the child is indented under its parent (${px} -> ${cx})`);

    const track = await parent.locator(".wf-track").boundingBox();
    const pb = await parent.locator(".wf-bar").boundingBox();
    const cb = await child.locator(".wf-bar").boundingBox();
    const t0 = Math.min(server.start_unix_nanos, client.start_unix_nanos);
    const total = Math.max(server.end_unix_nanos, client.end_unix_nanos) - t0;
    const near = (got, want, what) => assert.ok(Math.abs(got - want) <= 0.01, `${what}: ${got.toFixed(4)} vs ${want.toFixed(4)}`);
    near(cb.width / pb.width, client.duration_ms / server.duration_ms, "bar widths in the ratio of the durations");
    near(pb.width / track.width, (server.end_unix_nanos - server.start_unix_nanos) / total, "the parent's bar on the shared axis");
    near((cb.x - track.x) / track.width, (client.start_unix_nanos - t0) / total, "the child's bar starts when the call did");
    const colour = (l) => l.locator(".wf-bar").evaluate((b) => getComputedStyle(b).backgroundImage + getComputedStyle(b).backgroundColor);
    assert.notEqual(await colour(parent), await colour(child), "SERVER and CLIENT bars look different");

    // The root is selected; the CLIENT span's details on click.
    assert.match(await page.locator("#span-detail h2").innerText(), /GET checkout/);
    await child.click();
    assert.equal(await child.getAttribute("aria-selected"), "true");
    const detail = page.locator("#span-detail");
    assert.match(await detail.innerText(), /server\.address[\s\S]*127\.0\.0\.1/);
    assert.match(await detail.innerText(), /Parent: SERVER GET checkout/);
    await page.screenshot({ path: screenshotPath("viewer-trace.png") });
    await detail.getByRole("button", { name: "SERVER GET checkout" }).click();
    assert.equal(await parent.getAttribute("aria-selected"), "true");

    await page.getByRole("button", { name: "Copy the trace id" }).click();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), sent.checkout);
    const raw = await page.getByRole("link", { name: "Raw JSON", exact: true }).getAttribute("href");
    assert.equal(raw, `/debug/traces/${sent.checkout}`);
    assert.equal((await request(`${admin}${raw}`)).status, 200);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  it("marks orphan outbound calls and shows a panic's exception event", { timeout: TEST_MS }, async () => {
    const page = await openViewer(`#/trace/${sent.orphan}`);
    const item = page.locator("#waterfall [role=treeitem]");
    await waitUntil("the orphan span", async () => (await item.count()) === 1);
    assert.match(await item.innerText(), /CLIENT[\s\S]*orphan/);
    assert.match(await item.locator(".wf-bar").getAttribute("class"), /orphan/);
    assert.match(await page.locator("#span-detail").innerText(), /none: an orphan outbound call/);

    await page.goto(`${page.url().split("#")[0]}#/trace/${sent.panic}`);
    const exception = page.locator("#span-detail .event.exception");
    await exception.waitFor();
    const trace = await getJson(`${admin}/debug/traces/${sent.panic}`);
    const event = trace.spans[0].events.find((e) => e.name === "exception");
    assert.match(await exception.innerText(), /exception/);
    assert.ok((await exception.innerText()).includes(event.attributes["exception.message"]), "the panic message");
    assert.match(await page.locator("#waterfall").innerText(), /exception/);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  it("summarises routes as /metrics does, and a histogram bucket lists exactly its traces", { timeout: TEST_MS }, async () => {
    const page = await openViewer("#/red?route=slow");
    const metrics = (await request(`${admin}/metrics`)).text;
    // The slow route's buckets, summed over its series, straight from /metrics.
    const cumulative = new Map();
    for (const s of samples(metrics, "http_server_request_duration_seconds_bucket")) {
      if (s.labels.http_route !== "slow") continue;
      cumulative.set(s.labels.le, (cumulative.get(s.labels.le) || 0) + s.value);
    }
    const inBucket = (lo, hi) => cumulative.get(hi) - (lo ? cumulative.get(lo) : 0);
    const count = samples(metrics, "http_server_request_duration_seconds_count")
      .filter((s) => s.labels.http_route === "slow").reduce((n, s) => n + s.value, 0);
    assert.equal(count, 9);
    const slowRow = page.locator("#red-rows tr", { has: page.getByRole("button", { name: /^slow:/ }) });
    await waitUntil("the slow route's row", async () => /^slow\s+9\b/.test((await slowRow.innerText()).trim()));

    // The bucket each kind of request landed in, from the durations the
    // store recorded (a loaded machine may push a 15 ms request past 25 ms:
    // the test is about the viewer agreeing with /metrics, not about timing).
    const bounds = ["0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75"];
    const stored = (await getJson(`${admin}/debug/traces?route=slow&spans=false`)).traces;
    const durationOf = new Map(stored.map((t) => [t.trace_id, t.duration_ms]));
    const bucketOf = (id) => {
      const ms = durationOf.get(id);
      const i = bounds.findIndex((b) => ms <= Number(b) * 1000);
      return i < 0 ? null : [i === 0 ? null : bounds[i - 1], bounds[i]];
    };
    const cases = [];
    for (const id of [sent.slow[150][0], sent.slow[350][0], sent.slow[15][0]]) {
      const bucket = bucketOf(id);
      if (!bucket || cases.some(([lo, hi]) => hi === bucket[1])) continue;
      const [lo, hi] = bucket;
      const ids = stored.map((t) => t.trace_id).filter((t) => bucketOf(t)?.[1] === hi);
      cases.push([lo, hi, lo === null ? `up to ${Math.round(hi * 1000)} ms` : `${Math.round(lo * 1000)} ms to ${Math.round(hi * 1000)} ms`, ids]);
    }
    assert.ok(cases.length >= 2, "the slow requests fall in at least two buckets");
    for (const [lo, hi, label, ids] of cases) {
      assert.equal(inBucket(lo, hi), ids.length, `/metrics puts ${ids.length} requests in (${lo}, ${hi}]`);
      await page.goto(`${admin}/debug/traces/ui#/red?route=slow`);
      const bucket = page.getByRole("button", { name: new RegExp(`^${label}: ${ids.length} request`) });
      await bucket.waitFor();
      if (lo === "0.1") await page.screenshot({ path: screenshotPath("viewer-routes.png") });
      await bucket.click();
      await page.waitForURL(/duration_le_ms/);
      await waitRows(page, ids, `the traces of (${lo}, ${hi}]`);
      const api = await getJson(`${admin}/debug/traces?route=slow&duration_gt_ms=${lo * 1000}&duration_le_ms=${hi * 1000}`);
      assert.ok(sameSet(api.traces.map((t) => t.trace_id), ids));
      assert.match(await page.locator("#bucket-text").innerText(), new RegExp(`route slow \\(/metrics counted ${ids.length} requests\\)`));
    }
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  it("works from the keyboard, with every control labelled", { timeout: TEST_MS }, async () => {
    const page = await openViewer();
    await waitUntil("rows", async () => (await rowIds(page)).length === sent.all.length + 1);
    const unlabelled = await page.$$eval("input, select, button, [role=treeitem], tr[tabindex]", (els) =>
      els.filter((e) => e.offsetParent !== null)
        .filter((e) => !((e.labels && e.labels.length) || e.getAttribute("aria-label") || e.textContent.trim()))
        .map((e) => e.outerHTML.slice(0, 80)));
    assert.deepEqual(unlabelled, []);
    const ids = await rowIds(page);
    await page.locator("#trace-rows tr[data-id]").first().focus();
    await page.keyboard.press("ArrowDown");
    assert.equal(await page.evaluate(() => document.activeElement.dataset.id), ids[1]);
    await page.keyboard.press("Enter");
    await page.waitForURL(new RegExp(`#/trace/${ids[1]}`));
    await page.locator("#waterfall [role=treeitem]").first().waitFor();
    await page.keyboard.press("Escape");
    await page.waitForURL(/#\/$/);
    await waitUntil("focus back on the row", async () => (await page.evaluate(() => document.activeElement.dataset.id)) === ids[1]);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  it("refreshes live without layout shift, holds rows under the pointer, and pauses", { timeout: TEST_MS }, async () => {
    const page = await openViewer();
    await waitUntil("rows", async () => (await rowIds(page)).length >= sent.all.length + 1);
    await page.mouse.move(640, 20);
    const fresh = [(await send("/slow?delay_ms=1")).id, (await send("/fail?status=500")).id];
    await waitUntil("new traces on top", async () => sameSet((await rowIds(page)).slice(0, 2), fresh));

    // The pointer over the list: a refresh waits behind a button.
    const before = await rowIds(page);
    await page.locator("#trace-rows tr[data-id]").nth(3).hover();
    const held = (await send("/slow?delay_ms=1")).id;
    await page.getByRole("button", { name: /1 new trace/ }).waitFor();
    assert.deepEqual(await rowIds(page), before, "rows did not move under the pointer");
    await page.getByRole("button", { name: /1 new trace/ }).click();
    await waitUntil("the held trace shown", async () => (await rowIds(page))[0] === held);

    // Paused: nothing changes; resumed: the list catches up.
    await page.mouse.move(640, 20);
    await page.getByRole("button", { name: "Live refresh" }).click();
    assert.equal(await page.getByRole("button", { name: "Live refresh" }).getAttribute("aria-pressed"), "false");
    const late = (await send("/slow?delay_ms=1")).id;
    await sleep(3000);
    assert.ok(!(await rowIds(page)).includes(late), "no refresh while paused");
    await page.getByRole("button", { name: "Live refresh" }).click();
    await waitUntil("the list catching up", async () => (await rowIds(page))[0] === late);

    // The routes view refreshes in place too.
    await page.goto(`${admin}/debug/traces/ui#/red`);
    await page.locator("#red-rows tr").first().waitFor();
    await send("/slow?delay_ms=1");
    await sleep(2500);
    const shifts = await page.evaluate(() => window.__shifts);
    assert.deepEqual(shifts, [], "no layout shift on refresh");
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  it("reads at 1280 px and in a narrow window without sideways scrolling", { timeout: TEST_MS }, async () => {
    for (const viewport of [{ width: 1280, height: 800 }, { width: 390, height: 844 }]) {
      const page = await openViewer("", viewport);
      await waitUntil("rows", async () => (await rowIds(page)).length > 0);
      for (const hash of ["#/", `#/trace/${sent.checkout}`, "#/red"]) {
        await page.goto(`${admin}/debug/traces/ui${hash}`);
        await page.waitForLoadState("networkidle");
        await sleep(300);
        const { scroll, width } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: window.innerWidth }));
        assert.ok(scroll <= width, `${viewport.width} px, ${hash}: the page is ${scroll} px wide`);
      }
      if (viewport.width < 500) {
        await page.goto(`${admin}/debug/traces/ui#/trace/${sent.checkout}`);
        const bar = await page.locator("#waterfall .wf-bar").first().boundingBox();
        assert.ok(bar.width > 50, "the waterfall keeps room for its bars");
        await page.screenshot({ path: screenshotPath("viewer-narrow.png") });
      }
      await page.context().close();
    }
  });
});

describe("sidetrace demo", { timeout: TEST_MS }, () => {
  let demo, browser;
  after(async () => {
    await browser?.close();
    await demo?.stop();
  });

  it("names the viewer, which lists the demo's traces and its failures", { timeout: TEST_MS }, async () => {
    demo = start(BIN, ["demo", "--port", "0", "--admin-port", "0", "--app-port", "0", "--log-level", "warn"]);
    await waitUntil("the demo's summary", () => demo.alive() && demo.out.includes("serving until Ctrl-C"));
    const viewer = demo.out.match(/viewer\s+(http:\/\/\S+\/debug\/traces\/ui)/)?.[1];
    assert.ok(viewer, `the demo prints the viewer's URL:\n${demo.out}`);
    const admin = viewer.replace("/debug/traces/ui", "");
    const notFound = await request(`${admin}/nope`);
    assert.equal(notFound.status, 404);
    assert.match(notFound.text, /\/debug\/traces\/ui/, "the admin's 404 names the viewer");

    const idOf = (what) => demo.out.split("\n").find((l) => l.includes(what))?.match(/trace ([0-9a-f]{32})/)?.[1];
    const failed = [idOf("status=500"), idOf("NOT_FOUND")];
    assert.ok(failed.every(Boolean), demo.out);
    // The demo prints its summary before the export task's batch reaches the store.
    const api = await waitUntil("the demo's six traces in the store", async () => {
      const list = await getJson(`${admin}/debug/traces`);
      return list.traces.length === 6 && list;
    });
    browser = await launchBrowser();
    const page = await newPage(browser);
    await page.goto(viewer);
    await waitUntil("the demo's traces", async () => JSON.stringify(await rowIds(page)) === JSON.stringify(api.traces.map((t) => t.trace_id)));
    await page.getByLabel("Failed requests only", { exact: true }).check();
    await waitRows(page, failed, "the demo's failures");
    assert.deepEqual(page.errors, []);
  });
});

/** Waits until the list shows exactly `want` (in any order), saying what it showed if not. */
async function waitRows(page, want, what) {
  let got = [];
  try {
    await waitUntil(what, async () => sameSet((got = await rowIds(page)), want));
  } catch (e) {
    const text = await page.locator("#trace-rows").innerText();
    throw new Error(`${e.message}\n  at ${page.url()}\n  shown: ${got.join(" ")}\n  wanted: ${want.join(" ")}\n${text}`);
  }
}

function sameSet(a, b) {
  return a.length === b.length && [...a].sort().join() === [...b].sort().join();
}
