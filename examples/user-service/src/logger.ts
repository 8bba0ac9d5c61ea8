// Structured logs: one JSON object per line on stdout (errors on stderr), as log collectors expect.

type Level = "debug" | "info" | "warn" | "error";

export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
}

const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

function parseLevel(value: string | undefined): Level {
  return value !== undefined && value in ORDER ? (value as Level) : "info";
}

export function createLogger(service: string, level = parseLevel(process.env.LOG_LEVEL)): Logger {
  const write = (lvl: Level, msg: string, fields?: Fields): void => {
    if (ORDER[lvl] < ORDER[level]) return;
    const line = JSON.stringify({ time: new Date().toISOString(), level: lvl, service, msg, ...fields });
    (lvl === "error" ? process.stderr : process.stdout).write(line + "\n");
  };
  return {
    debug: (msg, fields) => write("debug", msg, fields),
    info: (msg, fields) => write("info", msg, fields),
    warn: (msg, fields) => write("warn", msg, fields),
    error: (msg, fields) => write("error", msg, fields),
  };
}
