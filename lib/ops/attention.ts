/**
 * Causal attention with grouped KV heads over a packed batch (kernels/attention.wgsl),
 * flash-attention style: the forward keeps an online softmax over the keys and saves the
 * log-sum-exp of each query row; the backward recomputes the probabilities from it, so no
 * T×T score matrix is ever stored.
 *
 * The sequence of each token is found in the kernels by a binary search over `cuSeqlens`
 * (log2(B) loads per row), so no per-token sequence index is needed; the dk/dv kernel already
 * uses all 8 storage bindings a browser allows.
 * @module
 */
import type { Gpu, Tensor } from "../engine/gpu.ts";
import { cdiv, grid, type KernelFile, kernelFile, uniformStruct } from "../engine/gpu.ts";
import { loopBudgetError, withinLoopBudget } from "../engine/gpu.ts";

/**
 * Kernel family: "cpu" (CPU rasterizers) runs the blocked rows kernels where the head size is a
 * multiple of 16 up to 128 (each invocation owns 4 consecutive rows, so every K/V or Q/dO row
 * it loads serves 4; ~2.7× faster on lavapipe) and "rows" otherwise; "rows" runs one invocation
 * per row with no workgroup memory; "tiled" streams K/V (or Q/dO) tiles through workgroup memory
 * shared by 64 lanes (real GPUs).
 */
export type AttentionVariant = "auto" | "cpu" | "rows" | "tiled";

/** Options for {@linkcode attentionForward} and {@linkcode attentionBackward}. */
export interface AttentionOptions {
  /** Multiplier of q·k; default 1/sqrt(D). */
  scale?: number;
  /**
   * "auto": "cpu" on CPU adapters, "tiled" otherwise. "tiled" needs H/Hkv <= 64 and falls
   * back to "cpu" beyond that; "cpu" is "rows" where D is not a multiple of 16 up to 128.
   */
  variant?: AttentionVariant;
  /**
   * Tokens in the longest sequence of `cuSeqlens` (default: all N), for the check against the
   * adapter's loop budget ({@linkcode Gpu.loopBudget}: llvmpipe ends an invocation's loops after
   * 65,535 iterations in all, and the kernels loop over a sequence per row).
   */
  maxSeqLen?: number;
}

/** What the forward returns and the backward needs. */
export interface AttentionSaved {
  /** Attention output [N, H, D]. */
  out: Tensor;
  /** Log-sum-exp of each row's scaled scores [N, H] (0 for padding tokens). */
  lse: Tensor;
}

/** Gradients of the loss with respect to q, k and v (shapes of the inputs). */
export interface AttentionGrads {
  /** [N, H, D]. */
  dq: Tensor;
  /** [N, Hkv, D], summed over the query heads of each group. */
  dk: Tensor;
  /** [N, Hkv, D], summed over the query heads of each group. */
  dv: Tensor;
}

/** Largest head dimension the kernels accept (their private arrays are sized by it). */
export const MAX_HEAD_DIM = 256;

/** The prefill kernels: n tokens of h query and hkv KV heads in nseq sequences. */
const PARAMS = uniformStruct("Params", ["n", "h", "hkv", "nseq", ["scale", "f32"]]);
/** attn_decode: nb sequences of h query and hkv KV heads, caches of tmax rows. */
const DECODE_PARAMS = uniformStruct("DecodeParams", ["nb", "h", "hkv", "tmax", ["scale", "f32"]]);
/** kernels/attention.wgsl and its uniform structs (docs/kernels.md). */
export const ATTENTION_KERNELS: KernelFile = kernelFile("attention.wgsl", [PARAMS, DECODE_PARAMS]);

const LANES = 64;
const U = "uniform" as const, R = "read" as const, W = "rw" as const;
const FWD = [U, R, R, R, R, W, W] as const;
const PREP = [U, R, R, R, W] as const;
const DQ = [U, R, R, R, R, R, R, W] as const;
const DKDV = [U, R, R, R, R, R, R, W, W] as const;
const DECODE = [U, R, R, R, R, W] as const;

interface Dims {
  n: number;
  h: number;
  hkv: number;
  d: number;
}

function checkHeads(op: string, h: number, hkv: number, d: number): void {
  if (!(hkv >= 1 && h % hkv === 0)) {
    throw new Error(`${op}: ${h} query heads are not a multiple of ${hkv} KV heads`);
  }
  if (!(d >= 1 && d <= MAX_HEAD_DIM)) {
    throw new Error(`${op}: head dimension ${d} outside 1..${MAX_HEAD_DIM}`);
  }
}

function expectShape(op: string, name: string, t: Tensor, shape: readonly number[], dtype = "f32") {
  if (t.dtype !== dtype || t.shape.join() !== shape.join()) {
    throw new Error(`${op}: ${name} is ${t.shape}/${t.dtype}, expected ${shape}/${dtype}`);
  }
}

function dims(op: string, q: Tensor, k: Tensor, v: Tensor, cuSeqlens: Tensor): Dims {
  if (q.shape.length !== 3 || k.shape.length !== 3) {
    throw new Error(`${op}: q ${q.shape} and k ${k.shape} must be [N, heads, D]`);
  }
  const [n, h, d] = q.shape;
  const hkv = k.shape[1];
  expectShape(op, "q", q, [n, h, d]);
  expectShape(op, "k", k, [n, hkv, d]);
  expectShape(op, "v", v, [n, hkv, d]);
  checkHeads(op, h, hkv, d);
  if (cuSeqlens.dtype !== "u32" || cuSeqlens.shape.length !== 1 || cuSeqlens.size < 1) {
    throw new Error(
      `${op}: cuSeqlens must be u32 [B+1], got ${cuSeqlens.shape}/${cuSeqlens.dtype}`,
    );
  }
  return { n, h, hkv, d };
}

/** Rows per workgroup-memory tile: two tiles of D floats per row plus (lse, delta) in 16 KiB. */
function tileRows(d: number): number {
  return Math.max(1, Math.min(32, Math.floor(16384 / (8 * d + 8))));
}

function spec(entry: string, d: number, bindings: readonly ("uniform" | "read" | "rw")[]) {
  const vec = d % 4 === 0;
  return ATTENTION_KERNELS.spec(entry, bindings, {
    ELEM: vec ? "vec4<f32>" : "f32",
    DW: vec ? d / 4 : d,
    HSUM: vec ? "x.x + x.y + x.z + x.w" : "x",
    VEC4_TO_ELEM: vec ? "x" : "x.x",
    // The blocked CPU kernels' 16-float chunks per row (they run only where d % 16 == 0).
    CH: Math.max(1, Math.min(8, Math.floor(d / 16))),
    BT: tileRows(d),
  });
}

type Kernels = "rows4" | "rows" | "tiled";

/** The kernel family (entry suffix) that runs for variant `v` at group size g, head size d. */
function pickKernels(gpu: Gpu, g: number, d: number, v: AttentionVariant = "auto"): Kernels {
  if (!["auto", "cpu", "rows", "tiled"].includes(v)) {
    throw new Error(`attention: unknown variant ${v}`);
  }
  // The tiled kernels put a whole KV group in one 64-lane workgroup.
  const family = g > LANES
    ? (v === "rows" ? "rows" : "cpu")
    : v === "auto"
    ? (gpu.isCpuAdapter ? "cpu" : "tiled")
    : v;
  if (family === "cpu") return d % 16 === 0 && d <= 128 ? "rows4" : "rows";
  return family;
}

/**
 * Loop iterations one invocation of `kind`'s `pass` kernel runs on sequences of up to L tokens
 * (for {@linkcode Gpu.loopBudget}). Mesa unrolls the *_rows loops over D up to D/4 = 16 (D = 64
 * ran right on 2,000 tokens at 4 query heads per KV head) but not from 25 (D = 100 and 128 went
 * wrong past ~250 queries per key); from 17 they are counted. The *_rows4 kernels loop over the
 * sequence only.
 */
function attnIterations(
  kind: Kernels | "decode" | "decode_rows4",
  pass: "fwd" | "dq" | "dkdv",
  x: Dims,
  L: number,
): number {
  const dw = x.d % 4 === 0 ? x.d / 4 : x.d;
  const perD = dw <= 16 ? 0 : dw;
  const g = x.h / x.hkv;
  if (kind === "rows4" || kind === "decode_rows4") return pass === "dkdv" ? L * (g + 1) + 8 : L + 8;
  const rows = pass === "dkdv"
    ? L * (1 + g * (2 + 2 * perD)) + 4 * perD
    : L * (1 + (pass === "dq" ? 2 : 3) * perD) + 3 * perD;
  // The tiled kernels add their tile loads (a few passes per tile of BT rows).
  return kind === "tiled" ? 1.1 * rows + L * g : rows;
}

/** Throws where `kind`'s `pass` would outrun the adapter's loop budget. */
function checkLoops(
  gpu: Gpu,
  op: string,
  kind: Kernels | "decode" | "decode_rows4",
  pass: "fwd" | "dq" | "dkdv",
  x: Dims,
  L: number,
): void {
  const iterations = attnIterations(kind, pass, x, L);
  if (withinLoopBudget(iterations, gpu.loopBudget)) return;
  throw loopBudgetError(
    `${op} (${kind} kernels, ${pass}) on sequences of up to ${L} tokens, D = ${x.d}, ` +
      `${x.h}/${x.hkv} heads`,
    iterations,
    gpu.loopBudget,
    x.d % 16 === 0 && x.d <= 128
      ? 'use variant "cpu" (its loops run once per token) or shorter sequences'
      : "use shorter sequences (cutoff_len) or a GPU",
  );
}

/** Workgroups of the query-row (forward, dq) and key-row (dk/dv) dispatches. */
function groups(kind: Kernels, x: Dims): { rows: [number, number]; keys: [number, number] } {
  const g = x.h / x.hkv;
  if (kind === "rows4") {
    return {
      rows: grid(cdiv(cdiv(x.n, 4) * x.h, LANES)),
      keys: grid(cdiv(cdiv(x.n, 4) * x.hkv, LANES)),
    };
  }
  if (kind === "rows") {
    return { rows: grid(cdiv(x.n * x.h, LANES)), keys: grid(cdiv(x.n * x.hkv, LANES)) };
  }
  return {
    rows: grid(cdiv(x.n, Math.floor(LANES / g)) * x.hkv),
    keys: grid(cdiv(x.n, LANES) * x.hkv),
  };
}

function params(x: Dims, nseq: number, scale: number) {
  return PARAMS.pack({ n: x.n, h: x.h, hkv: x.hkv, nseq, scale });
}

/**
 * Causal self-attention over a packed batch. q [N, H, D], k and v [N, Hkv, D] (already RoPE'd),
 * `cuSeqlens` u32 [B+1] with cuSeqlens[0] = 0 and cuSeqlens[B] = N: token t of sequence b
 * attends to tokens cuSeqlens[b] ..= t. Query head h uses KV head h / (H / Hkv). Tokens outside
 * [cuSeqlens[0], cuSeqlens[B]) are treated as padding (zero output, lse 0).
 */
export async function attentionForward(
  gpu: Gpu,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  cuSeqlens: Tensor,
  opts: AttentionOptions = {},
): Promise<AttentionSaved> {
  const x = dims("attentionForward", q, k, v, cuSeqlens);
  const scale = opts.scale ?? 1 / Math.sqrt(x.d);
  const kind = pickKernels(gpu, x.h / x.hkv, x.d, opts.variant);
  checkLoops(gpu, "attentionForward", kind, "fwd", x, opts.maxSeqLen ?? x.n);
  const out = gpu.empty([x.n, x.h, x.d]);
  const lse = gpu.empty([x.n, x.h]);
  if (x.n === 0) return { out, lse };
  const kern = await gpu.kernel(spec(`attn_fwd_${kind}`, x.d, FWD));
  gpu.dispatch(
    kern,
    [params(x, cuSeqlens.size - 1, scale), q, k, v, cuSeqlens, out, lse],
    groups(kind, x).rows,
  );
  return { out, lse };
}

/**
 * Gradients of {@linkcode attentionForward} given dOut [N, H, D] and what the forward saved.
 * Records three dispatches: the per-row constants (lse, rowsum(dOut ⊙ out)), dq by looping over
 * each query's keys, and dk/dv by looping over the queries that see each key, summed over the
 * query heads of its group (deterministic, no atomics). `opts` must match the forward's scale.
 */
export async function attentionBackward(
  gpu: Gpu,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  saved: AttentionSaved,
  dOut: Tensor,
  cuSeqlens: Tensor,
  opts: AttentionOptions = {},
): Promise<AttentionGrads> {
  const op = "attentionBackward";
  const x = dims(op, q, k, v, cuSeqlens);
  expectShape(op, "saved.out", saved.out, q.shape);
  expectShape(op, "saved.lse", saved.lse, [x.n, x.h]);
  expectShape(op, "dOut", dOut, q.shape);
  const scale = opts.scale ?? 1 / Math.sqrt(x.d);
  const kind = pickKernels(gpu, x.h / x.hkv, x.d, opts.variant);
  checkLoops(gpu, op, kind, "dq", x, opts.maxSeqLen ?? x.n);
  checkLoops(gpu, op, kind, "dkdv", x, opts.maxSeqLen ?? x.n);
  const dq = gpu.empty(q.shape);
  const dk = gpu.empty(k.shape);
  const dv = gpu.empty(v.shape);
  if (x.n === 0) return { dq, dk, dv };
  const [prep, kdq, kdkdv] = await Promise.all([
    gpu.kernel(spec("attn_bwd_prep", x.d, PREP)),
    gpu.kernel(spec(`attn_bwd_dq_${kind}`, x.d, DQ)),
    gpu.kernel(spec(`attn_bwd_dkdv_${kind}`, x.d, DKDV)),
  ]);
  const p = params(x, cuSeqlens.size - 1, scale);
  const ld = gpu.empty([x.n, x.h, 2]);
  gpu.dispatch(prep, [p, saved.out, dOut, saved.lse, ld], grid(cdiv(x.n * x.h, LANES)));
  const { rows, keys } = groups(kind, x);
  gpu.dispatch(kdq, [p, q, k, v, cuSeqlens, dOut, ld, dq], rows);
  gpu.dispatch(kdkdv, [p, q, k, v, cuSeqlens, dOut, ld, dk, dv], keys);
  // Safe to recycle now: later work that reuses the buffer is recorded after these dispatches.
  ld.release();
  return { dq, dk, dv };
}

/**
 * One new token per sequence attending to its cached keys: q [B, H, D], kCache/vCache
 * [B, Tmax, Hkv, D], lens u32 [B] (number of valid cached positions including the new token,
 * clamped to Tmax; 0 gives a zero row). Returns [B, H, D].
 */
export async function attentionDecode(
  gpu: Gpu,
  q: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  lens: Tensor,
  opts: { scale?: number } = {},
): Promise<Tensor> {
  const op = "attentionDecode";
  if (q.shape.length !== 3 || kCache.shape.length !== 4) {
    throw new Error(`${op}: q ${q.shape} must be [B, H, D] and kCache ${kCache.shape} 4-D`);
  }
  const [nb, h, d] = q.shape;
  const [, tmax, hkv] = kCache.shape;
  expectShape(op, "q", q, [nb, h, d]);
  expectShape(op, "kCache", kCache, [nb, tmax, hkv, d]);
  expectShape(op, "vCache", vCache, [nb, tmax, hkv, d]);
  expectShape(op, "lens", lens, [nb], "u32");
  checkHeads(op, h, hkv, d);
  const scale = opts.scale ?? 1 / Math.sqrt(d);
  // CPU rasterizers: the Row-chunk kernel, whose loops run once per cached token.
  const entry = gpu.isCpuAdapter && d % 16 === 0 && d <= 128 ? "attn_decode_rows4" : "attn_decode";
  checkLoops(
    gpu,
    op,
    entry === "attn_decode" ? "decode" : "decode_rows4",
    "fwd",
    { n: nb, h, hkv, d },
    tmax,
  );
  const out = gpu.empty([nb, h, d]);
  if (nb === 0) return out;
  const kern = await gpu.kernel(spec(entry, d, DECODE));
  gpu.dispatch(
    kern,
    [DECODE_PARAMS.pack({ nb, h, hkv, tmax, scale }), q, kCache, vCache, lens, out],
    grid(cdiv(nb * h, LANES)),
  );
  return out;
}
