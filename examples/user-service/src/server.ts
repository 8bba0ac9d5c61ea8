// Entry point: load the configuration, prepare the upload area, start listening, stop cleanly
// on SIGTERM/SIGINT (dumb-init, PID 1 in the image, forwards them here).

import { createApp } from "./app";
import { loadConfig } from "./config";
import { createLogger } from "./logger";

async function main(): Promise<void> {
  const logger = createLogger("user-service");
  const config = loadConfig();
  const app = await createApp({ config, logger });

  const server = app.listen(config.port, () => {
    logger.info("listening", { port: config.port, uploadDir: config.uploadDir, node: process.version, pid: process.pid });
  });
  server.on("error", (err) => {
    logger.error("server error", { error: err.message });
    process.exit(1);
  });

  const stop = (signal: NodeJS.Signals): void => {
    logger.info("shutting down", { signal });
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

main().catch((err: unknown) => {
  const error = err instanceof Error ? err.message : String(err);
  process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level: "error", service: "user-service", msg: "start-up failed", error }) + "\n");
  process.exit(1);
});
