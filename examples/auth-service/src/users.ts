// The credential store: one demo account whose password is kept only as a bcrypt hash.

import { randomBytes } from "node:crypto";
import bcrypt from "bcrypt";

export interface UserStore {
  /** Resolves to the user's id when the password matches, else null. */
  authenticate(username: string, password: string): Promise<string | null>;
}

export async function createDemoStore(username: string, password: string, rounds: number): Promise<UserStore> {
  const hashes = new Map<string, string>([[username, await bcrypt.hash(password, rounds)]]);
  // Unknown users are compared against a hash of a random string, so the response time does
  // not tell whether a user exists.
  const dummy = await bcrypt.hash(randomBytes(16).toString("hex"), rounds);
  return {
    async authenticate(user, pass) {
      const hash = hashes.get(user);
      const ok = await bcrypt.compare(pass, hash ?? dummy);
      return ok && hash !== undefined ? user : null;
    },
  };
}
