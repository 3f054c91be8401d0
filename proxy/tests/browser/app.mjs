// The test upstream behind the proxy: an app whose requests take known
// times, fail on request, and make one outbound call through the proxy's
// outbound listener, forwarding the trace context as an instrumented app does.
import http from "node:http";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function startApp() {
  const app = { outbound: null, port: null };
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://app");
    const ms = (k) => Number(url.searchParams.get(k) || 0);
    try {
      if (url.pathname.startsWith("/checkout")) {
        await sleep(ms("before_ms"));
        // forward=0 plays an app that drops the trace context: an orphan call.
        const context = url.searchParams.get("forward") === "0" ? undefined : req.headers.traceparent;
        const status = await callOut(app, `/leaf?delay_ms=${ms("leaf_ms")}`, context);
        await sleep(ms("after_ms"));
        res.writeHead(status === 200 ? 200 : 502, { "content-type": "application/json" });
        res.end(JSON.stringify({ leaf: status }));
      } else if (url.pathname.startsWith("/fail")) {
        res.writeHead(Number(url.searchParams.get("status") || 500));
        res.end("failed on purpose\n");
      } else {
        await sleep(ms("delay_ms"));
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("ok\n");
      }
    } catch (e) {
      res.writeHead(500);
      res.end(String(e));
    }
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      app.port = server.address().port;
      app.close = () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); });
      resolve(app);
    });
  });
}

/** GET through the outbound listener, addressed to this app by its Host header. */
function callOut(app, path, traceparent) {
  return new Promise((resolve, reject) => {
    const headers = { host: `127.0.0.1:${app.port}` };
    if (traceparent) headers.traceparent = traceparent;
    const req = http.request({ host: "127.0.0.1", port: app.outbound, path, headers, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode));
    });
    req.setTimeout(10_000, () => req.destroy(new Error("outbound call timed out")));
    req.on("error", reject);
    req.end();
  });
}
