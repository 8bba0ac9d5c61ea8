// Tests of the compiled service (npm test builds first): the real app with the real `file`
// and ImageMagick on an ephemeral port, driven over HTTP with Node's fetch.
"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { createApp } = require("../dist/app.js");
const { createLogger } = require("../dist/logger.js");

const imagemagick = process.env.IMAGEMAGICK_BIN ?? "convert";
let server;
let base;
let uploadDir;

before(async () => {
  uploadDir = fs.mkdtempSync(path.join(os.tmpdir(), "user-service-test-"));
  const config = { port: 0, uploadDir, maxUploadBytes: 64 * 1024, thumbnailSize: 128, imagemagick };
  const app = await createApp({ config, logger: createLogger("user-service", "error") });
  await new Promise((resolve) => {
    server = app.listen(0, "127.0.0.1", resolve);
  });
  base = `http://127.0.0.1:${server.address().port}`;
});

after(() => {
  server.close();
  fs.rmSync(uploadDir, { recursive: true, force: true });
});

/** An image made by ImageMagick itself, `width`x`height`, in the format `coder`. */
function image(coder, width, height) {
  return execFileSync(imagemagick, ["-size", `${width}x${height}`, "gradient:red-blue", `${coder}:-`]);
}

function pngSize(buf) {
  assert.equal(buf.subarray(1, 4).toString("latin1"), "PNG");
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
}

function uploadBody(bytes, name = "avatar", filename = "me.bin", type = "application/octet-stream") {
  const form = new FormData();
  form.append(name, new Blob([bytes], { type }), filename);
  return form;
}

async function upload(bytes, ...rest) {
  return fetch(`${base}/avatar`, { method: "POST", body: uploadBody(bytes, ...rest) });
}

test("health answers ok", async () => {
  const res = await fetch(`${base}/health`);
  assert.equal(res.status, 200);
  assert.equal((await res.json()).service, "user-service");
});

for (const [coder, mime] of [["png", "image/png"], ["jpeg", "image/jpeg"], ["gif", "image/gif"]]) {
  test(`a ${coder} avatar becomes a 128x128 PNG thumbnail readable at its URL`, async () => {
    // The client's declared type is ignored: the content decides.
    const res = await upload(image(coder, 300, 200));
    assert.equal(res.status, 201);
    const body = await res.json();
    assert.equal(body.sourceType, mime);
    assert.equal(res.headers.get("location"), body.url);

    const got = await fetch(`${base}${body.url}`);
    assert.equal(got.status, 200);
    assert.equal(got.headers.get("content-type"), "image/png");
    assert.deepEqual(pngSize(Buffer.from(await got.arrayBuffer())), { width: 128, height: 128 });

    const stored = fs.statSync(path.join(uploadDir, "avatars", `${body.id}.png`));
    assert.equal(stored.mode & 0o777, 0o640);
  });
}

test("uploads leave no temporary files behind", async () => {
  assert.equal((await upload(image("png", 10, 10))).status, 201);
  assert.equal((await upload(Buffer.from("not an image"))).status, 415);
  assert.deepEqual(fs.readdirSync(path.join(uploadDir, "tmp")), []);
});

test("non-images and script-like image formats are refused with 415", async () => {
  for (const bytes of [
    Buffer.from("hello"),
    Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'),
    Buffer.from("push graphic-context\nviewbox 0 0 1 1\npop graphic-context\n"),
  ]) {
    const res = await upload(bytes, "avatar", "x.png", "image/png");
    assert.equal(res.status, 415);
  }
});

test("an upload over the size limit is 413", async () => {
  const res = await upload(Buffer.alloc(65 * 1024, 1));
  assert.equal(res.status, 413);
});

test("a request without the avatar field is 400", async () => {
  assert.equal((await upload(image("png", 10, 10), "picture")).status, 400);
  assert.equal((await fetch(`${base}/avatar`, { method: "POST" })).status, 400);
});

test("unknown and malformed avatar ids are 404", async () => {
  assert.equal((await fetch(`${base}/avatar/00000000-0000-4000-8000-000000000000`)).status, 404);
  assert.equal((await fetch(`${base}/avatar/..%2F..%2Fetc%2Fpasswd`)).status, 404);
});
