/**
 * Reading the files a user hands us, defensively: only regular files are opened (a FIFO would
 * block the open forever, `/dev/zero` would grow a string until V8 ran out of memory), and the
 * small JSON files have a size cap, so a wrong file costs one line, not a hang.
 * @module
 */
import { HiraError } from "../engine/errors.ts";

const MiB = 2 ** 20;

/**
 * Size caps of the small JSON files, in bytes: many times the largest real ones (Llama 3's
 * tokenizer.json is 9 MB, Gemma's 33 MB; a trainer_state.json grows by about 200 bytes a step).
 */
export const JSON_CAPS = {
  config: 4 * MiB,
  tokenizer: 128 * MiB,
  tokenizerConfig: 16 * MiB,
  adapterConfig: 4 * MiB,
  trainerState: 512 * MiB,
  args: 4 * MiB,
  shardIndex: 64 * MiB,
} as const;

/** The default cap of any text file: V8 cannot hold a longer string anyway. */
export const TEXT_CAP = 512 * MiB;

/**
 * `Deno.stat` of `path` (symlinks followed) refusing anything but a regular file, before it is
 * opened: a folder, FIFO, socket or device is a HiraError naming the path. A missing file throws
 * `Deno.errors.NotFound` as `Deno.stat` does, so callers keep their own "missing" messages.
 */
export async function statRegularFile(path: string): Promise<Deno.FileInfo> {
  const st = await Deno.stat(path);
  if (st.isDirectory) throw new HiraError(path, "is a folder, not a file");
  if (!st.isFile) {
    throw new HiraError(path, "is not a regular file (a FIFO, socket or device is never read)");
  }
  return st;
}

/**
 * The text of a regular file of at most `maxBytes` bytes (UTF-8, invalid bytes replaced, as
 * `Deno.readTextFile`). The size is checked on the opened file too, so a file swapped for a
 * FIFO or grown after the stat is not read past the cap.
 */
export async function readRegularText(path: string, maxBytes: number = TEXT_CAP): Promise<string> {
  await statRegularFile(path);
  const file = await Deno.open(path, { read: true });
  try {
    const st = await file.stat();
    if (!st.isFile) throw new HiraError(path, "is not a regular file");
    if (st.size > maxBytes) {
      throw new HiraError(
        path,
        `is ${st.size} bytes, more than the ${maxBytes / MiB} MiB such a file may have`,
      );
    }
    const buf = new Uint8Array(st.size);
    let n = 0;
    while (n < buf.length) {
      const r = await file.read(buf.subarray(n));
      if (r === null) break;
      n += r;
    }
    return new TextDecoder().decode(buf.subarray(0, n));
  } finally {
    file.close();
  }
}

/** A short reason for an OS error, for one-line messages (EACCES, EROFS, ENOSPC, NotCapable). */
export function osReason(e: unknown): string {
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (e instanceof Deno.errors.NotCapable) return "outside this task's permitted folders";
  const m = (e as Error)?.message ?? String(e);
  if (/os error 30\b|read-only file system/i.test(m)) return "read-only file system";
  if (/os error 28\b|no space left/i.test(m)) return "no space left on the device";
  return m.split("\n")[0].slice(0, 120);
}

/**
 * An OS error (ENOSPC, EROFS, EACCES, EIO, NotCapable: any with an `os error N`, or a Deno
 * permission error) as a one-line HiraError naming `path`; anything else unchanged.
 */
export function osError(path: string, e: unknown, doing: string): unknown {
  if (e instanceof HiraError) return e;
  const m = (e as Error)?.message ?? "";
  if (
    e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable ||
    /\(os error \d+\)/.test(m)
  ) {
    return new HiraError(path, `${doing}: ${osReason(e)}`, { cause: e });
  }
  return e;
}
