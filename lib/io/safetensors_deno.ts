/**
 * Deno file I/O for safetensors: file-backed byte sources, opening single-file and sharded
 * checkpoints, and crash-safe (atomic) writes.
 *
 * This is the edge of the library: everything here uses `Deno.*`; the format logic lives in
 * safetensors.ts.
 * @module
 */
import { dirname, fromFileUrl, join } from "@std/path";
import { HiraError } from "../engine/errors.ts";
import { JSON_CAPS, osError, readRegularText } from "./fs_deno.ts";
import {
  type ByteSource,
  encodeSafetensors,
  loadShardedWeights,
  parseShardIndex,
  type ReadAs,
  readHeader,
  readTensor,
  type SafetensorsHeader,
  type TensorInfo,
  type TensorToWrite,
  WeightSet,
} from "../model/safetensors.ts";

/** A path as a string or a file: URL (as `new URL("x", import.meta.url)`). */
export type PathLike = string | URL;

function pathString(p: PathLike): string {
  return p instanceof URL ? fromFileUrl(p) : p;
}

/** Turns an OS error about a user-named file into a one-line {@linkcode HiraError}. */
function fsError(path: string, e: unknown, doing: string): unknown {
  if (e instanceof HiraError) return e;
  if (e instanceof Deno.errors.NotFound) return new HiraError(path, `${doing}: file not found`);
  if (e instanceof Deno.errors.PermissionDenied) {
    return new HiraError(path, `${doing}: permission denied`, { cause: e });
  }
  if (e instanceof Deno.errors.IsADirectory) {
    return new HiraError(path, `${doing}: is a directory`, { cause: e });
  }
  // ENOSPC, EROFS, EIO, NotCapable: one line naming the file, not a stack trace.
  return osError(path, e, doing);
}

/** A {@linkcode ByteSource} over an open file. */
export interface FileSource extends ByteSource {
  /** The file path (also the source name). */
  readonly path: string;
  /** Closes the file. Idempotent; reads afterwards fail. */
  close(): void;
}

/**
 * Opens a file for random-access reads. Each `read` seeks and reads exactly the requested
 * range (reads are serialised, since seek + read on one handle is not atomic), so nothing
 * beyond what is asked is ever loaded.
 */
export async function fileSource(path: PathLike): Promise<FileSource> {
  const name = pathString(path);
  let file: Deno.FsFile;
  try {
    // Checked before opening: opening a FIFO blocks until a writer comes, which may be never.
    const pre = await Deno.stat(path);
    if (!pre.isFile && !pre.isDirectory) {
      throw new HiraError(name, "cannot open: not a regular file");
    }
    file = await Deno.open(path, { read: true });
  } catch (e) {
    throw fsError(name, e, "cannot open");
  }
  let size: number;
  try {
    const st = await file.stat();
    if (!st.isFile) throw new HiraError(name, "cannot open: not a regular file");
    size = st.size;
  } catch (e) {
    file.close();
    throw fsError(name, e, "cannot open");
  }
  let closed = false;
  let queue: Promise<unknown> = Promise.resolve();

  const readNow = async (offset: number, length: number): Promise<Uint8Array> => {
    if (closed) throw new Error(`${name}: read after close`);
    const out = new Uint8Array(length);
    if (length === 0) return out;
    await file.seek(offset, Deno.SeekMode.Start);
    let got = 0;
    while (got < length) {
      const n = await file.read(out.subarray(got));
      if (n === null) {
        throw new HiraError(
          name,
          `unexpected end of file at offset ${offset + got} (file shrank while reading?)`,
        );
      }
      got += n;
    }
    return out;
  };

  return {
    path: name,
    name,
    size,
    read(offset: number, length: number): Promise<Uint8Array> {
      if (
        !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 ||
        length < 0 || offset + length > size
      ) {
        return Promise.reject(
          new HiraError(
            name,
            `read of ${length} bytes at offset ${offset} is past the end (${size} bytes)`,
          ),
        );
      }
      const run = () => readNow(offset, length);
      const p = queue.then(run, run);
      queue = p.catch(() => {});
      return p;
    },
    close(): void {
      if (closed) return;
      closed = true;
      file.close();
    },
  };
}

/** One open safetensors file. */
export interface SafetensorsFile {
  /** The file path. */
  readonly path: string;
  /** The open file, for `readTensor` / `readTensorRows`. */
  readonly source: FileSource;
  /** The validated header. */
  readonly header: SafetensorsHeader;
  /** Tensor names in header order. */
  readonly names: string[];
  /** Where a tensor lives; a {@linkcode HiraError} when there is no such tensor. */
  info(name: string): TensorInfo;
  /** Reads one tensor's stored bytes (see `readTensor` for `as`). */
  read(name: string, as: "raw"): Promise<Uint8Array>;
  /** Reads one tensor as IEEE-half bits. */
  read(name: string, as: "f16"): Promise<Uint16Array>;
  /** Reads one tensor as f32 values (the default). */
  read(name: string, as?: "f32"): Promise<Float32Array>;
  /** Reads one tensor as chosen at run time. */
  read(name: string, as?: ReadAs): Promise<Float32Array | Uint16Array | Uint8Array>;
  /** Closes the file. */
  close(): void;
}

/** Opens a safetensors file and validates its header (the data is read only on demand). */
export async function openSafetensors(path: PathLike): Promise<SafetensorsFile> {
  const source = await fileSource(path);
  let header: SafetensorsHeader;
  try {
    header = await readHeader(source);
  } catch (e) {
    source.close();
    throw e;
  }
  const info = (name: string): TensorInfo => {
    const t = header.tensors.get(name);
    if (!t) throw new HiraError(source.path, `no tensor named '${name}'`);
    return t;
  };
  return {
    path: source.path,
    source,
    header,
    names: [...header.tensors.keys()],
    info,
    read:
      ((name: string, as: ReadAs = "f32") => readTensor(source, info(name), as)) as SafetensorsFile[
        "read"
      ],
    close: () => source.close(),
  };
}

/** A checkpoint's weights, from one file or several shards, with the files held open. */
export class ModelWeights extends WeightSet {
  /** The safetensors files in use. */
  readonly files: string[];
  #sources: FileSource[];

  /** Takes over `sources`, which {@linkcode close} closes. */
  constructor(name: string, set: WeightSet, sources: FileSource[]) {
    super(name, set.entries, set.metadata);
    this.#sources = sources;
    this.files = sources.map((s) => s.path);
  }

  /** Closes every file. */
  close(): void {
    for (const s of this.#sources) s.close();
  }
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw fsError(path, e, "cannot read");
  }
}

/**
 * Opens the weights of a Hugging Face checkpoint directory: `model.safetensors`, or else the
 * shards listed by `model.safetensors.index.json` (`{"weight_map": {tensor: shard file}}`), as
 * one name → (source, info) lookup. Every header is validated up front, and a missing shard or
 * a tensor that the index lists but its shard lacks is a {@linkcode HiraError}.
 * Call `close()` when done.
 */
export async function openModelWeights(dir: PathLike): Promise<ModelWeights> {
  const d = pathString(dir);
  const st = await statOrNull(d);
  if (!st) throw new HiraError(d, "checkpoint directory not found");
  if (!st.isDirectory) throw new HiraError(d, "checkpoint path is not a directory");

  const single = join(d, "model.safetensors");
  if (await statOrNull(single)) {
    const f = await openSafetensors(single);
    const entries = new Map(
      [...f.header.tensors].map(([n, info]) => [n, { source: f.source, info }]),
    );
    // Named after the file, so that "missing tensor" errors point at it.
    return new ModelWeights(single, new WeightSet(single, entries, f.header.metadata), [f.source]);
  }

  const indexPath = join(d, "model.safetensors.index.json");
  if (!(await statOrNull(indexPath))) {
    const hasBin = (await statOrNull(join(d, "pytorch_model.bin"))) ||
      (await statOrNull(join(d, "pytorch_model.bin.index.json")));
    throw new HiraError(
      d,
      "no model.safetensors or model.safetensors.index.json" +
        (hasBin ? " (only PyTorch .bin weights: convert them to safetensors first)" : ""),
    );
  }
  let text: string;
  try {
    text = await readRegularText(indexPath, JSON_CAPS.shardIndex);
  } catch (e) {
    throw fsError(indexPath, e, "cannot read");
  }
  const index = parseShardIndex(text, indexPath);
  const sources: FileSource[] = [];
  const set = await loadShardedWeights(
    "model.safetensors.index.json",
    index,
    async (shard) => {
      const p = join(d, shard);
      if (!(await statOrNull(p))) {
        throw new HiraError(p, `shard listed in ${indexPath} is missing`);
      }
      const s = await fileSource(p);
      sources.push(s);
      return s;
    },
    () => sources.forEach((s) => s.close()),
  );
  return new ModelWeights(indexPath, new WeightSet(indexPath, set.entries, set.metadata), sources);
}

function randomHex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.byteLength) off += await file.write(data.subarray(off));
}

/**
 * Writes chunks to `${path}.tmp-<random>`, fsyncs, and renames over `path`, so a crash leaves
 * either the old file or the complete new one, never a half-written file under `path`.
 * An existing file's permission bits are kept.
 */
async function writeChunksAtomic(path: string, chunks: Iterable<Uint8Array>): Promise<void> {
  const tmp = `${path}.tmp-${randomHex(8)}`;
  const old = await statOrNull(path);
  if (old?.isDirectory) throw new HiraError(path, "cannot write: is a directory");
  let file: Deno.FsFile;
  try {
    file = await Deno.open(tmp, {
      write: true,
      createNew: true,
      mode: old?.mode != null ? old.mode & 0o777 : undefined,
    });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new HiraError(path, `cannot write: directory ${dirname(path)} does not exist`);
    }
    throw fsError(path, e, "cannot write");
  }
  try {
    try {
      for (const c of chunks) await writeAll(file, c);
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw fsError(path, e, "cannot write");
  }
  await syncDir(dirname(path));
}

/** Makes the rename durable where the OS lets a directory be opened and synced (not Windows). */
export async function syncDir(dir: string): Promise<void> {
  let d: Deno.FsFile | undefined;
  try {
    d = await Deno.open(dir, { read: true });
    await d.sync();
  } catch {
    // Best effort: durability of the directory entry is not available everywhere.
  } finally {
    d?.close();
  }
}

/**
 * Writes a file atomically (temp file, fsync, rename): bytes as they are, a string as UTF-8.
 * For JSON configs, states and reports across the project.
 */
export async function writeFileAtomic(path: PathLike, data: Uint8Array | string): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  await writeChunksAtomic(pathString(path), [bytes]);
}

/**
 * Writes tensors as a safetensors file atomically (see {@linkcode writeFileAtomic}), chunk by
 * chunk, so no file-sized buffer is built. Layout as `encodeSafetensors`.
 */
export async function writeSafetensorsFile(
  path: PathLike,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): Promise<void> {
  await writeChunksAtomic(pathString(path), encodeSafetensors(tensors, metadata));
}
