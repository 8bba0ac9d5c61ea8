// Configuration from the environment, read once at start-up.

import path from "node:path";

export interface Config {
  port: number;
  /** Root of the writable upload area; avatars live in `<uploadDir>/avatars`. */
  uploadDir: string;
  /** Largest accepted upload in bytes. */
  maxUploadBytes: number;
  /** Width and height of the square thumbnail. */
  thumbnailSize: number;
  /** ImageMagick's command: `convert` (ImageMagick 6, Debian) or `magick` (7). */
  imagemagick: string;
}

function intFromEnv(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(raw)}`);
  }
  return value;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  return {
    port: intFromEnv(env, "PORT", 3002, 0, 65535),
    uploadDir: path.resolve(env.UPLOAD_DIR ?? "uploads"),
    maxUploadBytes: intFromEnv(env, "MAX_UPLOAD_BYTES", 5 * 1024 * 1024, 1024, 100 * 1024 * 1024),
    thumbnailSize: intFromEnv(env, "THUMBNAIL_SIZE", 128, 16, 1024),
    imagemagick: env.IMAGEMAGICK_BIN ?? "convert",
  };
}
