// HEALTHCHECK probe: GET http://127.0.0.1:$PORT/health; exit 0 on HTTP 200, 1 otherwise.
// The runtime image has no curl or wget, so node does the request.

import http from "node:http";

const port = process.env.PORT ?? "3002";
const req = http.get({ host: "127.0.0.1", port, path: "/health", timeout: 3000 }, (res) => {
  res.resume();
  process.exit(res.statusCode === 200 ? 0 : 1);
});
req.on("timeout", () => req.destroy(new Error("timeout")));
req.on("error", () => process.exit(1));
