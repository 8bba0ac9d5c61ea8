// Configuration from the environment, read once at start-up.

import { randomBytes } from "node:crypto";

export interface Config {
  port: number;
  /** HMAC secret for HS256 tokens. */
  jwtSecret: string;
  /** True when JWT_SECRET was not set and a per-process secret was generated. */
  jwtSecretGenerated: boolean;
  jwtIssuer: string;
  /** Token lifetime in seconds. */
  jwtTtlSeconds: number;
  demoUser: string;
  demoPassword: string;
  bcryptRounds: number;
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
  const secret = env.JWT_SECRET ?? "";
  return {
    port: intFromEnv(env, "PORT", 3001, 0, 65535),
    jwtSecret: secret !== "" ? secret : randomBytes(32).toString("hex"),
    jwtSecretGenerated: secret === "",
    jwtIssuer: env.JWT_ISSUER ?? "auth-service",
    jwtTtlSeconds: intFromEnv(env, "JWT_TTL_SECONDS", 900, 1, 86400),
    demoUser: env.DEMO_USER ?? "demo",
    demoPassword: env.DEMO_PASSWORD ?? "demo-password",
    bcryptRounds: intFromEnv(env, "BCRYPT_ROUNDS", 10, 4, 15),
  };
}
