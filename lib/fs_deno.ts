/**
 * Reading the files a user hands us, defensively: only regular files are opened (a FIFO would
 * block the open forever, `/dev/zero` would grow a string until V8 ran out of memory), and the
 * small JSON files have a size cap, so a wrong file costs one line, not a hang.
 * @module
 */
import { HiraError } from "./errors.ts";

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
