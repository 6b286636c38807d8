/**
 * The safetensors format (https://github.com/huggingface/safetensors): header parsing with
 * validation, tensor-by-tensor reads with dtype conversion, and encoding.
 *
 * Layout: an 8-byte little-endian u64 header length `n`, then `n` bytes of UTF-8 JSON
 * `{"__metadata__"?: {str: str}, "<name>": {"dtype", "shape", "data_offsets": [begin, end]}}`
 * with offsets relative to the first byte after the header, then the data.
 *
 * Reads go through a {@linkcode ByteSource} and fetch only the header and then one tensor at a
 * time, so a 16 GB checkpoint never has to fit in one ArrayBuffer. This module uses no `Deno.*`
 * API (file sources live in safetensors_deno.ts), so it also runs in a browser.
 * @module
 */
import { HiraError, jsonReason, parseJson, preview } from "../engine/errors.ts";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "../engine/gpu.ts";

/** Random access to the bytes of one file (or blob, or in-memory buffer). */
export interface ByteSource {
  /** Total size in bytes. */
  readonly size: number;
  /**
   * Exactly `length` bytes starting at `offset` (a fresh array the caller may keep).
   * Implementations reject a range past the end rather than returning fewer bytes.
   */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** The name used in error messages (usually the file path). */
  readonly name: string;
}

/** Element types of the safetensors format that have a whole number of bytes per element. */
export type StDType =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "F8_E4M3"
  | "F8_E5M2"
  | "F8_E8M0"
  | "C64"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U64"
  | "U32"
  | "U16"
  | "U8"
  | "BOOL";

/** Bytes per element of each {@linkcode StDType}. */
export const ST_DTYPE_BYTES: Readonly<Record<StDType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  F8_E8M0: 1,
  C64: 8,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

/** Whether a string names a dtype this module knows. */
export function isStDType(s: string): s is StDType {
  return Object.hasOwn(ST_DTYPE_BYTES, s);
}

/** Where one tensor lives in a safetensors file. */
export interface TensorInfo {
  /** The tensor's key in the header. */
  name: string;
  /** Stored element type. */
  dtype: StDType;
  /** Dimensions, outermost first (`[]` for a scalar). */
  shape: number[];
  /** Absolute file offset of the first byte. */
  begin: number;
  /** Absolute file offset one past the last byte. */
  end: number;
}

/** A parsed and validated safetensors header. */
export interface SafetensorsHeader {
  /** Tensors by name, in the header's key order. */
  tensors: Map<string, TensorInfo>;
  /** The `__metadata__` map (empty when absent). */
  metadata: Record<string, string>;
  /** Absolute file offset of the data area (8 + header length). */
  dataStart: number;
}

/** The format's own cap on the header size (same as the reference implementation). */
export const MAX_HEADER_BYTES = 100_000_000;

/** Number of elements of a shape (1 for a scalar `[]`). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** A {@linkcode ByteSource} over bytes already in memory (tests, browser uploads, fetches). */
export function bytesSource(bytes: Uint8Array, name = "<memory>"): ByteSource {
  return {
    name,
    size: bytes.byteLength,
    read(offset: number, length: number): Promise<Uint8Array> {
      if (offset < 0 || length < 0 || offset + length > bytes.byteLength) {
        return Promise.reject(
          new HiraError(
            name,
            `read of ${length} bytes at offset ${offset} is past the end (${bytes.byteLength} bytes)`,
          ),
        );
      }
      return Promise.resolve(bytes.slice(offset, offset + length));
    },
  };
}

/** The bytes of several chunks concatenated (e.g. the output of {@linkcode encodeSafetensors}). */
export function concatBytes(chunks: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(chunks.reduce((s, c) => s + c.byteLength, 0));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "string") return `the string ${JSON.stringify(v.slice(0, 40))}`;
  if (typeof v === "object") return "an object";
  return `${typeof v} ${String(v)}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Reads and validates the header. Every problem is a {@linkcode HiraError} naming the source
 * and the specific reason (truncated file, oversized or unparsable header, bad tensor entries,
 * offsets out of range or overlapping, wrong byte lengths, bad `__metadata__`).
 * Gaps between tensors and trailing padding after the last one are accepted.
 */
export async function readHeader(src: ByteSource): Promise<SafetensorsHeader> {
  const file = src.name;
  const fail = (reason: string): never => {
    throw new HiraError(file, reason);
  };
  if (src.size < 8) {
    fail(
      `file is shorter than 8 bytes (${src.size} bytes), so it has no safetensors header length`,
    );
  }
  const lenBytes = await src.read(0, 8);
  const n = new DataView(lenBytes.buffer, lenBytes.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    fail(
      `header length ${n} bytes is over the 100 MB limit ` +
        `(corrupt, or not a safetensors file)`,
    );
  }
  const headerLen = Number(n);
  if (8 + headerLen > src.size) {
    fail(
      `header length ${headerLen} runs past the end of the file (${src.size} bytes): ` +
        `truncated, or not a safetensors file`,
    );
  }
  const headerBytes = await src.read(8, headerLen);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    return fail("header is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON (${jsonReason((e as Error).message)})`);
  }
  if (!isPlainObject(json)) return fail(`header is not a JSON object but ${describe(json)}`);

  const dataStart = 8 + headerLen;
  const dataSize = src.size - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  for (const [name, entry] of Object.entries(json)) {
    if (name === "__metadata__") {
      if (!isPlainObject(entry)) {
        fail(`__metadata__ is not a string-to-string map but ${describe(entry)}`);
      }
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== "string") {
          fail(
            `__metadata__ is not a string-to-string map: key ${JSON.stringify(k)} has ` +
              `${describe(v)}`,
          );
        }
        // defineProperty, so a "__proto__" key is kept as data rather than hitting the setter.
        Object.defineProperty(metadata, k, {
          value: v,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
      continue;
    }
    tensors.set(name, parseEntry(name, entry, dataStart, dataSize, fail));
  }

  // Overlap check: sort a copy by start; zero-length tensors occupy nothing.
  const spans = [...tensors.values()].filter((t) => t.end > t.begin)
    .sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < spans.length; i++) {
    const a = spans[i - 1], b = spans[i];
    if (b.begin < a.end) {
      const rel = (t: TensorInfo) => `[${t.begin - dataStart}, ${t.end - dataStart})`;
      fail(`tensors '${a.name}' ${rel(a)} and '${b.name}' ${rel(b)} overlap`);
    }
  }
  return { tensors, metadata, dataStart };
}

function parseEntry(
  name: string,
  entry: unknown,
  dataStart: number,
  dataSize: number,
  fail: (reason: string) => never,
): TensorInfo {
  const what = `tensor '${name}'`;
  if (!isPlainObject(entry)) return fail(`${what}: entry is not an object but ${describe(entry)}`);
  for (const key of ["dtype", "shape", "data_offsets"]) {
    if (!(key in entry)) fail(`${what}: missing "${key}"`);
  }
  const { dtype, shape, data_offsets: offsets } = entry;
  if (typeof dtype !== "string") {
    return fail(`${what}: dtype is not a string but ${describe(dtype)}`);
  }
  if (!isStDType(dtype)) {
    return fail(
      `${what}: unknown dtype '${dtype.length > 40 ? dtype.slice(0, 39) + "…" : dtype}' ` +
        `(known: ${Object.keys(ST_DTYPE_BYTES).join(", ")})`,
    );
  }
  if (!Array.isArray(shape)) return fail(`${what}: shape is not an array but ${describe(shape)}`);
  for (const d of shape) {
    if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
      fail(
        `${what}: shape ${preview(shape)} has a negative or non-integer dimension ` +
          `(${describe(d)})`,
      );
    }
  }
  if (
    !Array.isArray(offsets) || offsets.length !== 2 ||
    !offsets.every((o) => typeof o === "number" && Number.isSafeInteger(o) && o >= 0)
  ) {
    return fail(
      `${what}: data_offsets ${preview(offsets)} is not a pair [begin, end] of ` +
        `non-negative integers`,
    );
  }
  const [begin, end] = offsets as number[];
  if (begin > end) fail(`${what}: data_offsets [${begin}, ${end}] has begin > end`);
  if (end > dataSize) {
    fail(
      `${what}: data_offsets [${begin}, ${end}] end is past the end of the data area ` +
        `(${dataSize} bytes): truncated file?`,
    );
  }
  const elems = numel(shape as number[]);
  const want = elems * ST_DTYPE_BYTES[dtype];
  if (end - begin !== want) {
    fail(
      `${what}: byte length ${end - begin} does not match shape ${preview(shape)} × ` +
        `${dtype} (${want} bytes)`,
    );
  }
  return {
    name,
    dtype,
    shape: [...(shape as number[])],
    begin: dataStart + begin,
    end: dataStart + end,
  };
}

/** Element type a tensor is converted to by {@linkcode readTensor}. */
export type ReadAs = "f32" | "f16" | "raw";

/**
 * Reads one tensor.
 * - `"f32"` (default): F32 / F16 / BF16 / F64 as a Float32Array (F64 rounded to nearest even).
 * - `"f16"`: IEEE-half bits as a Uint16Array; F32, BF16 and F64 are rounded to nearest even
 *   (overflow to ±inf, NaN kept NaN, subnormals kept).
 * - `"raw"`: the stored little-endian bytes, any dtype.
 * Other dtypes with "f32"/"f16" are a {@linkcode HiraError}.
 */
export async function readTensor(src: ByteSource, info: TensorInfo, as: "raw"): Promise<Uint8Array>;
/** Reads one tensor as IEEE-half bits. */
export async function readTensor(
  src: ByteSource,
  info: TensorInfo,
  as: "f16",
): Promise<Uint16Array>;
/** Reads one tensor as f32 values. */
export async function readTensor(
  src: ByteSource,
  info: TensorInfo,
  as?: "f32",
): Promise<Float32Array>;
/** Reads one tensor as chosen at run time. */
export async function readTensor(
  src: ByteSource,
  info: TensorInfo,
  as?: ReadAs,
): Promise<Float32Array | Uint16Array | Uint8Array>;
export async function readTensor(
  src: ByteSource,
  info: TensorInfo,
  as: ReadAs = "f32",
): Promise<Float32Array | Uint16Array | Uint8Array> {
  checkConvertible(src, info, as);
  const bytes = await readExact(src, info.begin, info.end - info.begin);
  return convert(bytes, info.dtype, as);
}

/**
 * Reads rows [start, start + count) of a tensor along dimension 0 (see {@linkcode readTensor}
 * for `as`). Lets a loader stream a huge embedding in row shards without holding it whole.
 */
export async function readTensorRows(
  src: ByteSource,
  info: TensorInfo,
  start: number,
  count: number,
  as: "raw",
): Promise<Uint8Array>;
/** Reads rows [start, start + count) as IEEE-half bits. */
export async function readTensorRows(
  src: ByteSource,
  info: TensorInfo,
  start: number,
  count: number,
  as: "f16",
): Promise<Uint16Array>;
/** Reads rows [start, start + count) as f32 values. */
export async function readTensorRows(
  src: ByteSource,
  info: TensorInfo,
  start: number,
  count: number,
  as?: "f32",
): Promise<Float32Array>;
/** Reads rows [start, start + count) as chosen at run time. */
export async function readTensorRows(
  src: ByteSource,
  info: TensorInfo,
  start: number,
  count: number,
  as?: ReadAs,
): Promise<Float32Array | Uint16Array | Uint8Array>;
export async function readTensorRows(
  src: ByteSource,
  info: TensorInfo,
  start: number,
  count: number,
  as: ReadAs = "f32",
): Promise<Float32Array | Uint16Array | Uint8Array> {
  const rows = info.shape.length ? info.shape[0] : 1;
  if (
    !Number.isSafeInteger(start) || !Number.isSafeInteger(count) || start < 0 || count < 0 ||
    start + count > rows
  ) {
    throw new RangeError(`${info.name}: rows [${start}, ${start + count}) outside [0, ${rows})`);
  }
  checkConvertible(src, info, as);
  const rowBytes = rows === 0 ? 0 : (info.end - info.begin) / rows;
  const bytes = await readExact(src, info.begin + start * rowBytes, count * rowBytes);
  return convert(bytes, info.dtype, as);
}

function checkConvertible(src: ByteSource, info: TensorInfo, as: ReadAs): void {
  if (as === "raw") return;
  if (!["F32", "F16", "BF16", "F64"].includes(info.dtype)) {
    throw new HiraError(
      src.name,
      `tensor '${info.name}' has dtype ${info.dtype}, which cannot be read as ${as} ` +
        `(only F32, F16, BF16 and F64 convert; read it as "raw")`,
    );
  }
}

async function readExact(src: ByteSource, offset: number, length: number): Promise<Uint8Array> {
  const bytes = await src.read(offset, length);
  if (bytes.byteLength !== length) {
    throw new HiraError(
      src.name,
      `read ${bytes.byteLength} bytes at offset ${offset} where ${length} were expected ` +
        `(file changed or truncated while reading?)`,
    );
  }
  return bytes;
}

const HOST_LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/**
 * The bytes as an ArrayBuffer region aligned for `elemSize`-byte elements in host byte order
 * (copies only when misaligned or on a big-endian host).
 */
function hostOrder(bytes: Uint8Array, elemSize: number): { buffer: ArrayBuffer; offset: number } {
  let b = bytes;
  if (b.byteOffset % elemSize !== 0 || !(b.buffer instanceof ArrayBuffer)) b = b.slice();
  if (!HOST_LITTLE_ENDIAN && elemSize > 1) {
    b = b === bytes ? b.slice() : b;
    for (let i = 0; i < b.length; i += elemSize) b.subarray(i, i + elemSize).reverse();
  }
  return { buffer: b.buffer as ArrayBuffer, offset: b.byteOffset };
}

function convert(
  bytes: Uint8Array,
  dtype: StDType,
  as: ReadAs,
): Float32Array | Uint16Array | Uint8Array {
  if (as === "raw") return bytes;
  const size = ST_DTYPE_BYTES[dtype];
  const n = bytes.byteLength / size;
  const { buffer, offset } = hostOrder(bytes, size);
  if (as === "f32") {
    switch (dtype) {
      case "F32":
        return new Float32Array(buffer, offset, n);
      case "F16":
        return f16BitsToF32(new Uint16Array(buffer, offset, n));
      case "BF16":
        return bf16ToF32(new Uint16Array(buffer, offset, n));
      default:
        return Float32Array.from(new Float64Array(buffer, offset, n));
    }
  }
  switch (dtype) {
    case "F16":
      return new Uint16Array(buffer, offset, n);
    case "F32":
      return f32ToF16(new Float32Array(buffer, offset, n));
    case "BF16":
      return bf16BitsToF16(new Uint16Array(buffer, offset, n));
    default:
      return f64ToF16(new Float64Array(buffer, offset, n));
  }
}

let f16Table: Float32Array | null = null;

/** f16 bits to f32 through a 64K table (exactly f16ToF32, much faster on big tensors). */
function f16BitsToF32(h: Uint16Array): Float32Array {
  if (!f16Table) {
    const all = new Uint16Array(65536);
    for (let i = 0; i < 65536; i++) all[i] = i;
    f16Table = f16ToF32(all);
  }
  const t = f16Table;
  const out = new Float32Array(h.length);
  for (let i = 0; i < h.length; i++) out[i] = t[h[i]];
  return out;
}

/** BF16 bits to f16 bits in chunks, so no full-size f32 temporary is needed. */
function bf16BitsToF16(b: Uint16Array): Uint16Array {
  const out = new Uint16Array(b.length);
  const chunk = 1 << 20;
  for (let i = 0; i < b.length; i += chunk) {
    out.set(f32ToF16(bf16ToF32(b.subarray(i, i + chunk))), i);
  }
  return out;
}

/**
 * f64 values to f16 bits with one rounding (to nearest even), so results do not suffer the
 * double rounding of going through f32 first.
 */
export function f64ToF16(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = f64ToF16Bits(values[i]);
  return out;
}

function f64ToF16Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  // 65520 is halfway between the largest half (65504) and 65536; ties go to even, i.e. to inf.
  if (a >= 65520) return sign | 0x7c00;
  if (a === 0) return sign;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  const ee = Math.max(e, -14);
  // a / quantum is exact (a power-of-two scale that cannot underflow here).
  const r = a / 2 ** (ee - 10);
  let m = Math.floor(r);
  const frac = r - m;
  if (frac > 0.5 || (frac === 0.5 && (m & 1) === 1)) m++;
  if (e < -14) return sign | m; // subnormal; m === 1024 is the smallest normal's bit pattern
  let biased = ee + 15;
  if (m === 2048) {
    m = 1024;
    biased++;
  }
  if (biased >= 31) return sign | 0x7c00;
  return sign | (biased << 10) | (m - 1024);
}

/** A tensor for {@linkcode encodeSafetensors}. */
export interface TensorToWrite {
  /** Key in the header; unique, not "__metadata__". */
  name: string;
  /** Element type stored in the file. */
  dtype: "F32" | "F16" | "BF16" | "I32";
  /** Dimensions; their product must equal the element count of `data`. */
  shape: number[];
  /**
   * F32: Float32Array. I32: Int32Array. F16 / BF16: the 16-bit patterns as a Uint16Array, or a
   * Float32Array that is rounded to nearest even on encoding.
   */
  data: Float32Array | Uint16Array | Int32Array;
}

/**
 * Encodes tensors as a safetensors file, returned as chunks (header first, then one chunk per
 * tensor) so a big file can be written piecewise without one contiguous buffer.
 *
 * Like the reference writer, tensors are laid out by element size (largest first) then name,
 * contiguously, and the header is padded with spaces to a multiple of 8 bytes, so every tensor
 * is aligned to its element size and files load in the Python library too.
 * Data chunks may be views of the caller's arrays: do not change them until written.
 * Invalid input (duplicate or reserved names, a length not matching the shape, a wrong array
 * type, non-string metadata) throws an `Error`.
 */
export function encodeSafetensors(
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): Uint8Array[] {
  const names = new Set<string>();
  const prepared = tensors.map((t) => {
    if (t.name === "__metadata__") {
      throw new Error(`encodeSafetensors: reserved name "__metadata__"`);
    }
    if (names.has(t.name)) throw new Error(`encodeSafetensors: duplicate tensor '${t.name}'`);
    names.add(t.name);
    for (const d of t.shape) {
      if (!Number.isSafeInteger(d) || d < 0) {
        throw new Error(`encodeSafetensors: '${t.name}' has a bad shape [${t.shape}]`);
      }
    }
    const bytes = tensorBytes(t);
    const want = numel(t.shape) * ST_DTYPE_BYTES[t.dtype];
    if (bytes.byteLength !== want) {
      throw new Error(
        `encodeSafetensors: '${t.name}' has ${bytes.byteLength / ST_DTYPE_BYTES[t.dtype]} ` +
          `elements, shape [${t.shape}] needs ${numel(t.shape)}`,
      );
    }
    return { t, bytes };
  });
  prepared.sort((a, b) =>
    ST_DTYPE_BYTES[b.t.dtype] - ST_DTYPE_BYTES[a.t.dtype] ||
    (a.t.name < b.t.name ? -1 : a.t.name > b.t.name ? 1 : 0)
  );

  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") {
        throw new Error(`encodeSafetensors: metadata ${JSON.stringify(k)} is not a string`);
      }
    }
    header.__metadata__ = metadata;
  }
  let off = 0;
  for (const { t, bytes } of prepared) {
    header[t.name] = {
      dtype: t.dtype,
      shape: t.shape,
      data_offsets: [off, off + bytes.byteLength],
    };
    off += bytes.byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const head = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(json, 8);
  return [head, ...prepared.map((p) => p.bytes)];
}

function tensorBytes(t: TensorToWrite): Uint8Array {
  let arr: Float32Array | Uint16Array | Int32Array;
  const bad = () =>
    new Error(
      `encodeSafetensors: '${t.name}' (${t.dtype}) got a ${t.data.constructor.name}`,
    );
  switch (t.dtype) {
    case "F32":
      if (!(t.data instanceof Float32Array)) throw bad();
      arr = t.data;
      break;
    case "I32":
      if (!(t.data instanceof Int32Array)) throw bad();
      arr = t.data;
      break;
    case "F16":
    case "BF16":
      if (t.data instanceof Uint16Array) arr = t.data;
      else if (t.data instanceof Float32Array) {
        arr = t.dtype === "F16" ? f32ToF16(t.data) : f32ToBf16(t.data);
      } else throw bad();
      break;
    default:
      throw new Error(`encodeSafetensors: '${t.name}' has unsupported dtype ${t.dtype}`);
  }
  const bytes = new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
  if (HOST_LITTLE_ENDIAN) return bytes;
  const swapped = bytes.slice();
  const size = arr.BYTES_PER_ELEMENT;
  for (let i = 0; i < swapped.length; i += size) swapped.subarray(i, i + size).reverse();
  return swapped;
}

/** Where one tensor of a (possibly sharded) checkpoint lives. */
export interface WeightEntry {
  /** The shard holding it. */
  source: ByteSource;
  /** Where the tensor lies in that shard. */
  info: TensorInfo;
}

/**
 * The tensors of a checkpoint that may be split over several safetensors shards, looked up by
 * name. Built by {@linkcode loadShardedWeights} (or `openModelWeights` in safetensors_deno.ts).
 */
export class WeightSet {
  /** Tensors by name, each with its shard. */
  readonly entries: Map<string, WeightEntry>;

  /** Wraps a name → entry map (see the fields for each argument). */
  constructor(
    /** Name for error messages (the checkpoint directory or index file). */
    readonly name: string,
    entries: Map<string, WeightEntry>,
    /** `__metadata__` of the first shard (HF puts {"format": "pt"} there). */
    readonly metadata: Record<string, string> = {},
  ) {
    this.entries = entries;
  }

  /** Tensor names, in index order. */
  get names(): string[] {
    return [...this.entries.keys()];
  }

  /** Whether a tensor exists. */
  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** The entry for a tensor; a {@linkcode HiraError} naming the checkpoint when missing. */
  get(name: string): WeightEntry {
    const e = this.entries.get(name);
    if (!e) throw new HiraError(this.name, `checkpoint has no tensor '${name}'`);
    return e;
  }

  /** Shape and dtype of a tensor (throws like {@linkcode get}). */
  info(name: string): TensorInfo {
    return this.get(name).info;
  }

  /** Reads a tensor's stored bytes (see {@linkcode readTensor} for `as`). */
  read(name: string, as: "raw"): Promise<Uint8Array>;
  /** Reads a tensor as IEEE-half bits. */
  read(name: string, as: "f16"): Promise<Uint16Array>;
  /** Reads a tensor as f32 values (the default). */
  read(name: string, as?: "f32"): Promise<Float32Array>;
  /** Reads a tensor as chosen at run time. */
  read(name: string, as?: ReadAs): Promise<Float32Array | Uint16Array | Uint8Array>;
  read(name: string, as: ReadAs = "f32"): Promise<Float32Array | Uint16Array | Uint8Array> {
    const e = this.get(name);
    return readTensor(e.source, e.info, as);
  }
}

/**
 * Parses a `model.safetensors.index.json` text into tensor name → shard file name.
 * Shard names must be relative paths without `..` (they are resolved next to the index).
 */
export function parseShardIndex(text: string, file: string): Map<string, string> {
  const json = parseJson(text, file);
  if (!isPlainObject(json)) throw new HiraError(file, `not a JSON object but ${describe(json)}`);
  const map = json.weight_map;
  if (!isPlainObject(map)) {
    throw new HiraError(
      file,
      map === undefined
        ? `missing "weight_map"`
        : `"weight_map" is not an object but ${describe(map)}`,
    );
  }
  const out = new Map<string, string>();
  for (const [name, shard] of Object.entries(map)) {
    if (typeof shard !== "string" || shard === "") {
      throw new HiraError(file, `weight_map['${name}'] is not a file name but ${describe(shard)}`);
    }
    if (/^([/\\]|[A-Za-z]:)/.test(shard) || shard.split(/[/\\]/).includes("..")) {
      throw new HiraError(
        file,
        `weight_map['${name}'] = '${shard}' must be a file next to the index`,
      );
    }
    out.set(name, shard);
  }
  if (out.size === 0) throw new HiraError(file, `"weight_map" is empty`);
  return out;
}

/**
 * Opens every shard named by an index (through `openShard`, which maps a shard file name to a
 * source) and checks that each listed tensor is really in its shard. Tensors in a shard but not
 * in the index are ignored, as in the Python loader. On failure, sources already opened are
 * passed to `onError` so a file-based caller can close them.
 */
export async function loadShardedWeights(
  indexName: string,
  index: Map<string, string>,
  openShard: (shard: string) => Promise<ByteSource>,
  onError?: (opened: ByteSource[]) => void,
): Promise<WeightSet> {
  const opened: ByteSource[] = [];
  const shards = new Map<string, { source: ByteSource; header: SafetensorsHeader }>();
  try {
    for (const shard of new Set(index.values())) {
      const source = await openShard(shard);
      opened.push(source);
      shards.set(shard, { source, header: await readHeader(source) });
    }
    const entries = new Map<string, WeightEntry>();
    for (const [name, shard] of index) {
      const { source, header } = shards.get(shard)!;
      const info = header.tensors.get(name);
      if (!info) {
        throw new HiraError(
          source.name,
          `tensor '${name}' is listed in ${indexName} but absent from this shard`,
        );
      }
      entries.set(name, { source, info });
    }
    const first = shards.values().next().value;
    return new WeightSet(indexName, entries, first?.header.metadata ?? {});
  } catch (e) {
    onError?.(opened);
    throw e;
  }
}
