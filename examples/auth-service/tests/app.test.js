// Tests of the compiled service (npm test builds first): the real app on an ephemeral port,
// driven over HTTP with Node's fetch.
"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const jwt = require("jsonwebtoken");
const { createApp } = require("../dist/app.js");
const { createLogger } = require("../dist/logger.js");
const { createTokens } = require("../dist/tokens.js");
const { createDemoStore } = require("../dist/users.js");

const SECRET = "test-secret";
let server;
let base;

before(async () => {
  const users = await createDemoStore("alice", "correct horse", 4);
  const tokens = createTokens(SECRET, "auth-service", 60);
  const app = createApp({ users, tokens, logger: createLogger("auth-service", "error") });
  await new Promise((resolve) => {
    server = app.listen(0, "127.0.0.1", resolve);
  });
  base = `http://127.0.0.1:${server.address().port}`;
});

after(() => server.close());

function login(body) {
  return fetch(`${base}/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

test("health answers ok", async () => {
  const res = await fetch(`${base}/health`);
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.status, "ok");
  assert.equal(body.service, "auth-service");
});

test("login with the right password issues a token that verify accepts", async () => {
  const res = await login({ username: "alice", password: "correct horse" });
  assert.equal(res.status, 200);
  const { token, tokenType, expiresIn } = await res.json();
  assert.equal(tokenType, "Bearer");
  assert.equal(expiresIn, 60);
  assert.equal(jwt.verify(token, SECRET).sub, "alice");

  const verified = await fetch(`${base}/verify`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(verified.status, 200);
  const claims = await verified.json();
  assert.equal(claims.valid, true);
  assert.equal(claims.sub, "alice");
  assert.equal(claims.iss, "auth-service");
});

test("/token is an alias of /login", async () => {
  const res = await fetch(`${base}/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: "alice", password: "correct horse" }),
  });
  assert.equal(res.status, 200);
});

test("wrong password and unknown user are refused alike", async () => {
  assert.equal((await login({ username: "alice", password: "wrong" })).status, 401);
  assert.equal((await login({ username: "mallory", password: "correct horse" })).status, 401);
});

test("malformed login bodies are 400", async () => {
  assert.equal((await login({ username: "alice" })).status, 400);
  const res = await fetch(`${base}/login`, { method: "POST", headers: { "content-type": "application/json" }, body: "{" });
  assert.equal(res.status, 400);
});

test("verify refuses missing, forged, expired and foreign-issuer tokens", async () => {
  assert.equal((await fetch(`${base}/verify`)).status, 401);
  const forged = jwt.sign({}, "other-secret", { subject: "alice", issuer: "auth-service" });
  const expired = jwt.sign({ exp: Math.floor(Date.now() / 1000) - 10 }, SECRET, { subject: "alice", issuer: "auth-service" });
  const foreign = jwt.sign({}, SECRET, { subject: "alice", issuer: "someone-else" });
  const none = jwt.sign({}, "", { subject: "alice", issuer: "auth-service", algorithm: "none" });
  for (const token of [forged, expired, foreign, none]) {
    const res = await fetch(`${base}/verify`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 401, token);
    assert.equal((await res.json()).valid, false);
  }
});
