// The HTTP API: POST /avatar (multipart field `avatar`), GET /avatar/:id, GET /health.

import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import express, { type NextFunction, type Request, type Response } from "express";
import multer from "multer";
import type { Config } from "./config";
import type { Logger } from "./logger";
import { makeThumbnail, UnsupportedImage } from "./thumbnail";

export interface AppDeps {
  config: Config;
  logger: Logger;
}

const started = Date.now();
const ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Creates the upload directories (owner-only access) and checks that they are writable. */
export async function prepareUploadDirs(uploadDir: string): Promise<{ avatars: string; tmp: string }> {
  const avatars = path.join(uploadDir, "avatars");
  const tmp = path.join(uploadDir, "tmp");
  for (const dir of [avatars, tmp]) {
    await fs.mkdir(dir, { recursive: true, mode: 0o750 });
    await fs.access(dir, fs.constants.W_OK);
  }
  return { avatars, tmp };
}

export async function createApp({ config, logger }: AppDeps): Promise<express.Express> {
  const dirs = await prepareUploadDirs(config.uploadDir);
  const upload = multer({
    storage: multer.diskStorage({
      destination: dirs.tmp,
      filename: (_req, _file, cb) => cb(null, `${randomUUID()}.upload`),
    }),
    limits: { fileSize: config.maxUploadBytes, files: 1, fields: 0, parts: 1 },
  });

  const app = express();
  app.disable("x-powered-by");

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
    res.json({ status: "ok", service: "user-service", uptimeSeconds: Math.round((Date.now() - started) / 1000) });
  });

  app.post("/avatar", upload.single("avatar"), async (req: Request, res: Response) => {
    if (req.file === undefined) {
      res.status(400).json({ error: "send the image as multipart/form-data in the field `avatar`" });
      return;
    }
    const id = randomUUID();
    const staging = path.join(dirs.tmp, `${id}.png`);
    let result: { sourceType: string } | UnsupportedImage;
    try {
      result = { sourceType: await makeThumbnail(config.imagemagick, req.file.path, staging, config.thumbnailSize) };
      await fs.chmod(staging, 0o640);
      await fs.rename(staging, path.join(dirs.avatars, `${id}.png`));
    } catch (err) {
      await fs.rm(staging, { force: true });
      if (!(err instanceof UnsupportedImage)) throw err;
      result = err;
    } finally {
      // The original is never kept, only the re-encoded thumbnail; remove it before answering.
      await fs.rm(req.file.path, { force: true });
    }
    if (result instanceof UnsupportedImage) {
      res.status(415).json({ error: result.message });
      return;
    }
    logger.info("avatar stored", { id, sourceType: result.sourceType, bytes: req.file.size });
    const { thumbnailSize: size } = config;
    res
      .status(201)
      .location(`/avatar/${id}`)
      .json({ id, url: `/avatar/${id}`, sourceType: result.sourceType, width: size, height: size });
  });

  app.get("/avatar/:id", async (req: Request<{ id: string }>, res: Response) => {
    const id = req.params.id.replace(/\.png$/, "");
    if (!ID.test(id)) {
      res.status(404).json({ error: "no such avatar" });
      return;
    }
    const file = path.join(dirs.avatars, `${id}.png`);
    try {
      await fs.access(file);
    } catch {
      res.status(404).json({ error: "no such avatar" });
      return;
    }
    res.type("png").set("Cache-Control", "public, max-age=86400, immutable").sendFile(file);
  });

  app.use((_req, res) => {
    res.status(404).json({ error: "not found" });
  });

  // Express recognises an error handler by its four parameters.
  app.use((err: Error & { status?: number; code?: string }, _req: Request, res: Response, _next: NextFunction) => {
    if (err instanceof multer.MulterError) {
      const status = err.code === "LIMIT_FILE_SIZE" ? 413 : 400;
      res.status(status).json({ error: err.message });
      return;
    }
    const status = err.status !== undefined && err.status >= 400 && err.status < 500 ? err.status : 500;
    if (status === 500) logger.error("unhandled error", { error: err.message, stack: err.stack });
    res.status(status).json({ error: status === 500 ? "internal error" : err.message });
  });

  return app;
}
