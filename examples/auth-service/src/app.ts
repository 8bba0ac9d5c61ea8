// The HTTP API: POST /login (alias /token), GET /verify, GET /health.

import express, { type NextFunction, type Request, type Response } from "express";
import jwt from "jsonwebtoken";
import type { Logger } from "./logger";
import type { Tokens } from "./tokens";
import type { UserStore } from "./users";

export interface AppDeps {
  users: UserStore;
  tokens: Tokens;
  logger: Logger;
}

const started = Date.now();

function bearer(req: Request): string | null {
  const header = req.get("authorization") ?? "";
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  return match ? match[1] : null;
}

export function createApp({ users, tokens, logger }: AppDeps): express.Express {
  const app = express();
  app.disable("x-powered-by");
  app.use(express.json({ limit: "16kb" }));

  app.use((req, res, next) => {
    const t0 = process.hrtime.bigint();
    res.on("finish", () => {
      const durationMs = Number(process.hrtime.bigint() - t0) / 1e6;
      const level = req.path === "/health" ? "debug" : "info";
      logger[level]("request", { method: req.method, path: req.path, status: res.statusCode, durationMs });
    });
    next();
  });

  app.get("/health", (_req, res) => {
    res.json({ status: "ok", service: "auth-service", uptimeSeconds: Math.round((Date.now() - started) / 1000) });
  });

  const login = async (req: Request, res: Response): Promise<void> => {
    const { username, password } = (req.body ?? {}) as { username?: unknown; password?: unknown };
    if (typeof username !== "string" || typeof password !== "string" || username === "" || password === "") {
      res.status(400).json({ error: "body must be JSON with string fields username and password" });
      return;
    }
    const subject = await users.authenticate(username, password);
    if (subject === null) {
      logger.warn("login refused", { username });
      res.status(401).json({ error: "invalid credentials" });
      return;
    }
    const { token, expiresIn } = tokens.issue(subject);
    res.json({ token, tokenType: "Bearer", expiresIn });
  };
  app.post("/login", login);
  app.post("/token", login);

  app.get("/verify", (req, res) => {
    const token = bearer(req);
    if (token === null) {
      res.set("WWW-Authenticate", "Bearer").status(401).json({ valid: false, error: "missing bearer token" });
      return;
    }
    try {
      const claims = tokens.verify(token);
      res.json({ valid: true, ...claims });
    } catch (err) {
      const reason = err instanceof jwt.TokenExpiredError ? "token expired" : "invalid token";
      res.set("WWW-Authenticate", 'Bearer error="invalid_token"').status(401).json({ valid: false, error: reason });
    }
  });

  app.use((_req, res) => {
    res.status(404).json({ error: "not found" });
  });

  // Express recognises an error handler by its four parameters.
  app.use((err: Error & { status?: number; type?: string }, _req: Request, res: Response, _next: NextFunction) => {
    const status = err.status !== undefined && err.status >= 400 && err.status < 500 ? err.status : 500;
    if (status === 500) logger.error("unhandled error", { error: err.message, stack: err.stack });
    res.status(status).json({ error: status === 500 ? "internal error" : err.message });
  });

  return app;
}
