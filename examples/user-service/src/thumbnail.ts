// Thumbnails with ImageMagick, run as a child process (no shell). The input's real type comes
// from `file`, not from the client, and ImageMagick is told that type explicitly, so an upload
// cannot select one of its script-like coders (MVG, MSL, SVG, PS...).

import { execFile } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Image types accepted as avatars, by MIME type, with ImageMagick's coder for each. */
const CODERS: Readonly<Record<string, string>> = {
  "image/png": "png",
  "image/jpeg": "jpeg",
  "image/gif": "gif",
  "image/webp": "webp",
};

export class UnsupportedImage extends Error {
  constructor(readonly mimeType: string) {
    super(`unsupported image type ${mimeType}; send PNG, JPEG, GIF or WebP`);
  }
}

/** The MIME type `file` finds in the file's content. */
export async function sniffMimeType(file: string): Promise<string> {
  const { stdout } = await run("file", ["--brief", "--mime-type", "--", file], { timeout: 5000 });
  return stdout.trim();
}

/**
 * Writes a `size`x`size` PNG thumbnail of `input` (first frame, EXIF orientation applied,
 * centre-cropped, metadata stripped) to `output`. Returns the input's MIME type.
 */
export async function makeThumbnail(imagemagick: string, input: string, output: string, size: number): Promise<string> {
  const mimeType = await sniffMimeType(input);
  const coder = CODERS[mimeType];
  if (coder === undefined) throw new UnsupportedImage(mimeType);
  const geometry = `${size}x${size}`;
  await run(
    imagemagick,
    [
      "-limit", "memory", "64MiB",
      "-limit", "disk", "256MiB",
      "-limit", "time", "20",
      `${coder}:${input}[0]`,
      "-auto-orient",
      "-thumbnail", `${geometry}^`,
      "-gravity", "center",
      "-extent", geometry,
      "-strip",
      `png:${output}`,
    ],
    { timeout: 30000 },
  );
  return mimeType;
}
