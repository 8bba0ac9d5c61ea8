// JWT issue and verify (HS256).

import jwt from "jsonwebtoken";

export interface TokenClaims {
  sub: string;
  iss: string;
  iat: number;
  exp: number;
}

export interface Tokens {
  issue(subject: string): { token: string; expiresIn: number };
  verify(token: string): TokenClaims;
}

export function createTokens(secret: string, issuer: string, ttlSeconds: number): Tokens {
  return {
    issue(subject) {
      const token = jwt.sign({}, secret, { algorithm: "HS256", subject, issuer, expiresIn: ttlSeconds });
      return { token, expiresIn: ttlSeconds };
    },
    verify(token) {
      const claims = jwt.verify(token, secret, { algorithms: ["HS256"], issuer });
      if (typeof claims === "string" || typeof claims.sub !== "string") {
        throw new jwt.JsonWebTokenError("token has no subject");
      }
      return { sub: claims.sub, iss: String(claims.iss), iat: Number(claims.iat), exp: Number(claims.exp) };
    },
  };
}
