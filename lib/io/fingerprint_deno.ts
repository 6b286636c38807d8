/**
 * Fingerprints of what a data-parallel run's ranks must share, for the start-up check of
 * lib/train/ranks.ts: each file of a model folder by size and a SHA-256 of its head (a safetensors
 * file's header, which names every tensor, its dtype, shape and offsets; the whole of a small file).
 * @module
 */
import { join } from "@std/path";

/** A digest as short hex (the first 16 hex digits of SHA-256: enough to tell files apart). */
export async function shortDigest(bytes: Uint8Array): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return [...h.subarray(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Files above this are fingerprinted by their head only. */
const WHOLE_FILE_BYTES = 1 << 20;

/** The head of `file` that its fingerprint hashes: a safetensors header, or the first MiB. */
async function head(file: string, size: number): Promise<Uint8Array> {
  const f = await Deno.open(file, { read: true });
  try {
    let want = Math.min(size, WHOLE_FILE_BYTES);
    if (file.endsWith(".safetensors") && size >= 8) {
      const len = new Uint8Array(8);
      await f.read(len);
      const n = Number(new DataView(len.buffer).getBigUint64(0, true));
      want = Math.min(size, 8 + n);
      await f.seek(0, Deno.SeekMode.Start);
    }
    const buf = new Uint8Array(want);
    let got = 0;
    while (got < want) {
      const r = await f.read(buf.subarray(got));
      if (r === null) break;
      got += r;
    }
    return buf.subarray(0, got);
  } finally {
    f.close();
  }
}

/**
 * `[what, "SIZE bytes, sha256 DIGEST"]` for each plain file of a model folder (its name sorted),
 * `what` being "model file NAME".
 */
export async function folderFingerprint(dir: string): Promise<[string, string][]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && !e.name.startsWith(".")) names.push(e.name);
  }
  names.sort();
  const out: [string, string][] = [];
  for (const n of names) {
    const p = join(dir, n);
    const { size } = await Deno.stat(p);
    out.push([
      `model file ${n}`,
      `${size} bytes, sha256 ${await shortDigest(await head(p, size))}`,
    ]);
  }
  return out;
}
