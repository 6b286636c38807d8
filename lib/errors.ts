/**
 * The project's error type for bad user input (files, configs, datasets, adapters).
 *
 * Engine bugs and GPU failures stay plain `Error`s; a `HiraError` means "the user gave us
 * something wrong", so entrypoints can print its one-line message without a stack trace.
 * @module
 */

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
   *   stays one line
   * @param options standard `ErrorOptions` (e.g. `{ cause }` for the underlying error)
   */
  constructor(file: string, reason: string, options?: ErrorOptions) {
    const oneLine = reason.replace(/\s*\n\s*/g, " ");
    super(`${file}: ${oneLine}`, options);
    this.name = "HiraError";
    this.file = file;
    this.reason = oneLine;
  }
}

/** Whether a value is a {@linkcode HiraError} (also across module copies, by name). */
export function isHiraError(e: unknown): e is HiraError {
  return e instanceof HiraError ||
    (e instanceof Error && e.name === "HiraError" && typeof (e as HiraError).file === "string");
}
