// Entry point: load the configuration, start listening, stop cleanly on SIGTERM/SIGINT
// (dumb-init, PID 1 in the image, forwards them here).

import { loadConfig } from "./config";
import { createApp } from "./app";
import { createLogger } from "./logger";
import { createTokens } from "./tokens";
import { createDemoStore } from "./users";

async function main(): Promise<void> {
  const logger = createLogger("auth-service");
  const config = loadConfig();
  if (config.jwtSecretGenerated) {
    logger.warn("JWT_SECRET is not set: using a random per-process secret; tokens will not survive a restart");
  }
  const users = await createDemoStore(config.demoUser, config.demoPassword, config.bcryptRounds);
  const tokens = createTokens(config.jwtSecret, config.jwtIssuer, config.jwtTtlSeconds);
  const app = createApp({ users, tokens, logger });

  const server = app.listen(config.port, () => {
    logger.info("listening", { port: config.port, node: process.version, pid: process.pid });
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
  process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level: "error", service: "auth-service", msg: "start-up failed", error }) + "\n");
  process.exit(1);
});
