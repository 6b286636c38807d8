/**
 * The project's error type for bad user input (files, configs, datasets, adapters).
 *
 * Engine bugs and GPU failures stay plain `Error`s; a `HiraError` means "the user gave us
 * something wrong", so entrypoints can print its one-line message without a stack trace.
 * @module
 */

/** Longest reason kept in a message; a corrupt file must not produce a megabyte-long line. */
const MAX_REASON = 1000;

/**
 * Bad user input, reported as one line `${file}: ${reason}`.
 *
 * @example
 * ```ts
 * throw new HiraError("data/train.json", "record 3: missing string field 'output'");
 * ```
 */
export class HiraError extends Error {
  /** The file (or other named input such as a CLI flag) that is wrong. */
  readonly file: string;
  /** What is wrong, without the file prefix. */
  readonly reason: string;

  /**
   * Makes the error; the message is `${file}: ${reason}`.
   * @param file the offending file or input name
   * @param reason what is wrong with it; newlines are folded into spaces so the message
   *   stays one line, and a reason over 1000 characters is cut
   * @param options standard `ErrorOptions` (e.g. `{ cause }` for the underlying error)
   */
  constructor(file: string, reason: string, options?: ErrorOptions) {
    let oneLine = reason.replace(/\s*\n\s*/g, " ");
    if (oneLine.length > MAX_REASON) oneLine = oneLine.slice(0, MAX_REASON - 1) + "…";
    super(`${file}: ${oneLine}`, options);
    this.name = "HiraError";
    this.file = file;
    this.reason = oneLine;
  }
}

/**
 * A short JSON rendering of a value from a user's file, for error messages: at most `max`
 * characters, and safe on values that JSON.stringify cannot render (a 20,000-deep array
 * overflows the stack).
 */
export function preview(v: unknown, max = 60): string {
  let s: string | undefined;
  try {
    s = JSON.stringify(v);
  } catch {
    return Array.isArray(v) ? "a deeply nested array" : "a deeply nested value";
  }
  s ??= typeof v;
  return s.length > max ? s.slice(0, max - 1) + "…" : s;
}

/** Whether a value is a {@linkcode HiraError} (also across module copies, by name). */
export function isHiraError(e: unknown): e is HiraError {
  return e instanceof HiraError ||
    (e instanceof Error && e.name === "HiraError" && typeof (e as HiraError).file === "string");
}

/**
 * V8's JSON.parse message without the excerpt of the text it quotes (`Unexpected token 'r',
 * "root:x:0:0:"... is not valid JSON`): a file that is not JSON may be anything (a symlink to
 * /etc/passwd, a key), and the message should not print it. The position and the one
 * offending character are kept.
 */
export function jsonReason(message: string): string {
  const m = message.replace(/,?\s*(\.\.\.)?".*"(\.\.\.)?\s+is not valid JSON\s*$/s, "")
    // deno-lint-ignore no-control-regex
    .replace(/[\x00-\x1f\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  return m.length > 100 ? m.slice(0, 99) + "…" : m;
}

/** `JSON.parse(text)`; text that is not JSON is a HiraError naming `file` and the parser's reason. */
export function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HiraError(file, `not valid JSON (${jsonReason((e as Error).message)})`);
  }
}
