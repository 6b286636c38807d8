/**
 * HiRA kernels on GPU tensors: kernels/hira_weight.wgsl (unfused), hira_fused.wgsl (the fused
 * product) and hira_grad.wgsl (the fused gradients).
 *
 * Unfused ops materialise an out × in matrix as the reference does: {@linkcode hiraEffectiveWeight}
 * (W0 ⊙ (1 + B·A), with B·A from the matmul kernels), {@linkcode hiraDeltaWeight} (PEFT's
 * W0 ⊙ (B·A)), their per-element forms, {@linkcode unmergeHira} and {@linkcode mulByWeight}.
 * Fused ops never write an out × in matrix:
 * - {@linkcode hiraForwardFused}: y = x·(W0 ⊙ (1 + B·A))ᵀ, forming the effective weight by tiles;
 * - {@linkcode hiraInputGradFused}: dX = dY·(W0 ⊙ (1 + B·A)), the same in the other orientation;
 * - {@linkcode hiraWeightGradsFused}: dA += Bᵀ·M and dB += M·Aᵀ with M = W0 ⊙ (dYᵀ·X) formed tile
 *   by tile, reduced through partial sums per block of columns / rows (r/64 to r/256 of W0's
 *   size each on the tiled kernels; on the CPU kernels up to r/16 for dB, one part per
 *   invocation's 16 columns, so that they need no barrier) and one reduction dispatch.
 *
 * Each fused op has a "cpu" variant (CPU rasterizers: register blocks, vec4 loads, no barriers:
 * on llvmpipe the product for more than 16 rows forms each invocation's W_eff strip once per
 * segment of up to 512 rows and streams the rows through it) and a "tiled" variant (real GPUs:
 * 64×64 tiles in workgroup memory); "auto" picks by {@linkcode Gpu.isCpuAdapter}. W0 may be an
 * f16 tensor (read as f32).
 * @module
 */
import {
  type BufferWindow,
  cdiv,
  type Gpu,
  grid,
  isLlvmpipe,
  type KernelFile,
  kernelFile,
  type KernelSpec,
  loopBudgetError,
  type Tensor,
  uniformStruct,
  withinLoopBudget,
} from "../engine/gpu.ts";
import { matmul } from "./matmul.ts";

/** Fused kernel family: "cpu" for CPU rasterizers, "tiled" (workgroup memory) for real GPUs. */
export type HiraVariant = "auto" | "cpu" | "tiled";

/** Options of {@linkcode hiraForwardFused} and {@linkcode hiraInputGradFused}. */
export interface HiraProductOptions {
  /** Destination; a new tensor when absent. */
  out?: Tensor;
  /** out += the product instead of out = the product (needs `out`). */
  accumulate?: boolean;
  /** Kernel family; "auto" by default. */
  variant?: HiraVariant;
  /**
   * "cpu" only: true streams the rows through per-invocation W_eff strips (mm_cpu_strip: the
   * factor is formed once per segment of rows), false forms the factor per register block of
   * 16 rows (mm_cpu: no output round trips). Default: true above 16 rows on adapters where
   * {@linkcode cpuStripSupported}.
   */
  cpuStrip?: boolean;
  /**
   * "cpu" strip kernel only: rows per segment (each segment forms its own strips; rounded up
   * to the register block). Default: segments of up to 512 rows, smaller while fewer than 4
   * workgroups would run.
   */
  cpuSegRows?: number;
}

/** Options of {@linkcode hiraWeightGradsFused}. */
export interface HiraGradOptions {
  /** Kernel family; "auto" by default. */
  variant?: HiraVariant;
  /**
   * "tiled" only: 64×64 tiles each workgroup walks along `in` and along `out` (default: up to
   * 4 each while at least 512 workgroups remain). Larger blocks shrink the partial sums.
   */
  tileBlock?: number;
}

/**
 * Whether the CPU strip kernel (mm_cpu_strip) runs on this adapter: it was measured on llvmpipe
 * (lavapipe), where it is the fast fused product above 16 rows. Chromium's SwiftShader (156)
 * loses its device compiling it: bisected to the 16 inlined block loads and stores inside its
 * loop nest; storing through an array in a loop runs there but made lavapipe ~20% slower. So other
 * CPU adapters keep mm_cpu, which suits any number of rows but forms the factor per 16 of them.
 */
export function cpuStripSupported(adapterDescription: string): boolean {
  return isLlvmpipe(adapterDescription);
}

/**
 * Tokens per call up to which HiRA's "auto" kernel choice runs the fused kernels on a CPU
 * rasterizer (lib/model/adapters.ts HiraAdapter.kernelFor; lib/train/memory.ts counts what that runs): 128
 * where the strip kernel runs (on par with materialising or faster up to there on lavapipe), else
 * 16 (mm_cpu's register block: decoding).
 */
export function cpuFusedMaxTokens(adapterDescription: string): number {
  return cpuStripSupported(adapterDescription) ? 128 : CPU_FEW_ROWS;
}

const TILE = 64;
/** Workgroups the CPU gradient kernel aims for (llvmpipe runs one workgroup per thread). */
const CPU_GRAD_WORKGROUPS = 16;
/**
 * Rows above which the CPU fused product streams rows through W_eff strips (mm_cpu_strip)
 * instead of forming the factor per 16-row register block (mm_cpu); measured on lavapipe at
 * r = 32 (in 512, out 1376): mm_cpu is ~15% faster at 1–8 rows, the strip kernel from 32 up.
 */
const CPU_FEW_ROWS = 16;
/** Rows per segment of the strip kernel: the factor costs r/512 of the product's FMAs. */
const CPU_SEGMENT_ROWS = 512;
/** Workgroups the strip kernel keeps at least (shorter segments), to spread over the threads. */
const CPU_MIN_WORKGROUPS = 4;
/** Workgroups the tiled gradient kernel keeps at least when it grows its tile blocks. */
const TILED_GRAD_WORKGROUPS = 512;

/**
 * Loop iterations per invocation of grad_cpu for n tokens (an upper estimate, as for the fused
 * product; calibrated on llvmpipe: in 2048, out 1024, r 4 ran right at 3,600 tokens, an estimate
 * of ~63,000, and wrong at 4,400, ~76,000).
 */
function gradIterations(n: number, outF: number, inF: number, r: number): number {
  const lay = gradLayout("cpu", outF, inF);
  const tokens = cdiv(n, 4) * (1 + (outF % 4 === 0 && inF % 4 === 0 ? 0 : 32));
  const dA = (r / 4) * (1 + 4 * lay.cb + (r % 4 === 0 ? 0 : 64));
  const dB = r * 17;
  return r * (lay.cb + 1) + lay.blocksPerSeg * (tokens + 2 + dA + dB) + r * lay.cb * 5;
}

/** Grid and block sizes of the gradient kernels for W0 [out, in]. */
function gradLayout(variant: "cpu" | "tiled", outF: number, inF: number, tileBlock?: number) {
  if (variant === "cpu") {
    const cb = inF > 64 ? 4 : inF > 32 ? 2 : 1;
    const colTiles = cdiv(inF, 32 * cb);
    const blocks = cdiv(outF, 16);
    const blocksPerSeg = cdiv(
      blocks,
      Math.min(blocks, Math.max(1, cdiv(CPU_GRAD_WORKGROUPS, colTiles))),
    );
    // Each of a workgroup's 8 invocations writes its own dB partial (see grad_cpu).
    const rows = cdiv(blocks, blocksPerSeg);
    return { cb, cols: colTiles, bParts: 8 * colTiles, rows, blocksPerSeg, tc: 1, tr: 1 };
  }
  const ct = cdiv(inF, TILE), rt = cdiv(outF, TILE);
  let tc = tileBlock ?? 1, tr = tileBlock ?? 1;
  if (tileBlock === undefined) {
    while (tc < 4 && cdiv(ct, 2 * tc) * cdiv(rt, tr) >= TILED_GRAD_WORKGROUPS) tc *= 2;
    while (tr < 4 && cdiv(ct, tc) * cdiv(rt, 2 * tr) >= TILED_GRAD_WORKGROUPS) tr *= 2;
  }
  const cols = cdiv(ct, tc);
  return { cb: 1, cols, bParts: cols, rows: cdiv(rt, tr), blocksPerSeg: 1, tc, tr };
}

/** The variant `v` resolves to on this GPU. */
export function resolveHiraVariant(
  gpu: Pick<Gpu, "isCpuAdapter">,
  v: HiraVariant = "auto",
): "cpu" | "tiled" {
  if (v === "cpu" || v === "tiled") return v;
  if (v !== "auto") throw new Error(`hira: unknown kernel variant ${v}`);
  return gpu.isCpuAdapter ? "cpu" : "tiled";
}

// The uniform blocks of the HiRA kernels (each spliced into its file by `//! struct NAME`).
/** effective_weight, delta_weight, unmerge. */
const WEIGHT_PARAMS = uniformStruct("WeightParams", ["out_features", "in_features", "rank"]);
/** mul_inplace (`cols` is unused). */
const ELEM_PARAMS = uniformStruct("ElemParams", ["n", "cols"]);
/** apply_factor: one = 1 for W_eff, 0 for PEFT's delta weight. */
const FACTOR_PARAMS = uniformStruct("FactorParams", ["n", ["one", "f32"]]);
/**
 * The fused product: out [M, N] = act [M, K] × op(W_eff); grid tiles tilesN along N and
 * totalTiles in all; segRows: mm_cpu_strip's rows per workgroup segment (a multiple of 4·RB).
 */
const MM_PARAMS = uniformStruct("MmParams", [
  ...["M", "N", "K", "out_f", "in_f", "rank"] as const,
  ...["tilesN", "totalTiles", "segRows"] as const,
]);
/**
 * The fused gradients on N tokens; blocks_per_seg: grad_cpu's 16-row blocks of `out` per
 * segment; tiles_c, tiles_r: grad_tiled's 64×64 tiles per workgroup along `in` and `out`.
 */
const GRAD_PARAMS = uniformStruct("GradParams", [
  ...["N", "out_f", "in_f", "rank"] as const,
  ...["blocks_per_seg", "tiles_c", "tiles_r"] as const,
]);
/** reduce_grads: lengths and part counts of the dA and dB partial sums. */
const REDUCE_PARAMS = uniformStruct("ReduceParams", ["len_a", "parts_a", "len_b", "parts_b"]);

/** kernels/hira_weight.wgsl: the unfused weight kernels, and their uniform structs. */
export const HIRA_WEIGHT_KERNELS: KernelFile = kernelFile("hira_weight.wgsl", [
  WEIGHT_PARAMS,
  ELEM_PARAMS,
  FACTOR_PARAMS,
]);
/** kernels/hira_fused.wgsl: the fused product, and its uniform struct. */
export const HIRA_FUSED_KERNELS: KernelFile = kernelFile("hira_fused.wgsl", [MM_PARAMS]);
/** kernels/hira_grad.wgsl: the fused gradients, and their uniform structs. */
export const HIRA_GRAD_KERNELS: KernelFile = kernelFile("hira_grad.wgsl", [
  GRAD_PARAMS,
  REDUCE_PARAMS,
]);

/** The define of kernels/hira_weight.wgsl: W0's element type. */
function weightSpec(
  entry: string,
  bindings: KernelSpec["bindings"],
  wt: "f32" | "f16",
): KernelSpec {
  return HIRA_WEIGHT_KERNELS.spec(entry, bindings, { WTYPE: wt });
}

/** Every define of kernels/hira_fused.wgsl (each entry is compiled with a full set). */
interface ProductDefines {
  WTYPE: "f32" | "f16";
  DX: boolean;
  ACC: boolean;
  RANK: number;
  RB: number;
  CB: number;
  KS: number;
  VEC_K: boolean;
  VEC_IN: boolean;
  VEC_R: boolean;
  VEC_N: boolean;
}

function productSpec(entry: string, d: ProductDefines): KernelSpec {
  return HIRA_FUSED_KERNELS.spec(entry, ["uniform", "read", "read", "read", "read", "rw"], {
    WTYPE: d.WTYPE,
    DX: String(d.DX),
    ACC: String(d.ACC),
    RANK: d.RANK,
    RB: d.RB,
    CB: d.CB,
    BL: d.RANK * d.CB,
    KS: d.KS,
    VEC_K: String(d.VEC_K),
    VEC_IN: String(d.VEC_IN),
    VEC_R: String(d.VEC_R),
    VEC_N: String(d.VEC_N),
  });
}

/** Every define of kernels/hira_grad.wgsl (reduce_grads takes the defaults). */
interface GradDefines {
  WTYPE: "f32" | "f16";
  /** Rank of the per-invocation arrays (grad_cpu; 1 elsewhere). */
  RANK: number;
  CB: number;
  VEC_K: boolean;
  VEC_IN: boolean;
  VEC_R: boolean;
}

function gradSpec(
  entry: string,
  bindings: KernelSpec["bindings"],
  g: Partial<GradDefines>,
): KernelSpec {
  const d: GradDefines = {
    WTYPE: "f32",
    RANK: 1,
    CB: 1,
    VEC_K: false,
    VEC_IN: false,
    VEC_R: false,
    ...g,
  };
  return HIRA_GRAD_KERNELS.spec(entry, bindings, {
    WTYPE: d.WTYPE,
    CB: d.CB,
    BL: d.RANK * d.CB,
    VEC_K: String(d.VEC_K),
    VEC_IN: String(d.VEC_IN),
    VEC_R: String(d.VEC_R),
  });
}

function wtype(w0: Tensor): "f32" | "f16" {
  if (w0.dtype === "f32" || w0.dtype === "f16") return w0.dtype;
  throw new Error(`hira: W0 must be f32 or f16, not ${w0.dtype}`);
}

function checkShape(what: string, t: Tensor, shape: readonly number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
    throw new Error(`${what}: expected [${shape}], got [${t.shape}]`);
  }
}

function checkF32(what: string, ...ts: Tensor[]): void {
  for (const t of ts) {
    if (t.dtype !== "f32") throw new Error(`${what}: expected f32 tensors, got ${t.dtype}`);
    if (t.released) throw new Error(`${what}: a tensor was released`);
  }
}

/** The sizes of W0 [out, in] and the rank of A [r, in] / B [out, r], checked. */
function adapterDims(what: string, w0: Tensor, a: Tensor, b: Tensor) {
  if (w0.shape.length !== 2) throw new Error(`${what}: W0 must be [out, in], got [${w0.shape}]`);
  const [out, inF] = w0.shape;
  const r = a.shape[0];
  checkShape(`${what} A`, a, [r, inF]);
  checkShape(`${what} B`, b, [out, r]);
  checkF32(what, a, b);
  wtype(w0);
  return { out, inF, r };
}

/**
 * The binding of a tensor read as vec4s: its window rounded up to whole vec4s of its element
 * type (the kernels read single elements of ragged shapes through vec4 arrays).
 */
function vec4Window(t: Tensor): BufferWindow {
  const vecBytes = t.dtype === "f16" ? 8 : 16;
  const size = Math.max(vecBytes, Math.ceil(t.byteLength / vecBytes) * vecBytes);
  if (t.byteOffset + size > t.buffer.size) {
    throw new Error(
      `hira: tensor [${t.shape}] at byte ${t.byteOffset} cannot be read as vec4s (its buffer ` +
        `of ${t.buffer.size} bytes ends inside the last vec4)`,
    );
  }
  return { buffer: t.buffer, offset: t.byteOffset, size };
}

async function weightOp(
  gpu: Gpu,
  entry: "effective_weight" | "delta_weight" | "unmerge",
  src: Tensor,
  a: Tensor,
  b: Tensor,
): Promise<Tensor> {
  const { out, inF, r } = adapterDims(entry, src, a, b);
  const k = await gpu.kernel(
    weightSpec(entry, ["uniform", "read", "read", "read", "rw"], wtype(src)),
  );
  const dst = gpu.empty([out, inF]);
  const params = WEIGHT_PARAMS.pack({ out_features: out, in_features: inF, rank: r });
  gpu.dispatch(k, [params, src, a, b, dst], grid(cdiv(out * inF, 256)));
  return dst;
}

/**
 * W0 ⊙ (one + B·A) as a new tensor: B·A by the matmul kernels (register-blocked on CPU
 * adapters; a per-element rank loop costs 2r scalar loads per element there), then one
 * elementwise pass.
 */
async function factorWeight(
  gpu: Gpu,
  w0: Tensor,
  a: Tensor,
  b: Tensor,
  one: number,
): Promise<Tensor> {
  const { out, inF } = adapterDims("hira weight", w0, a, b);
  const dst = await matmul(gpu, b, a);
  const k = await gpu.kernel(weightSpec("apply_factor", ["uniform", "read", "rw"], wtype(w0)));
  const params = FACTOR_PARAMS.pack({ n: out * inF, one });
  gpu.dispatch(k, [params, w0, dst], grid(cdiv(out * inF, 256)));
  return dst;
}

/** HiRA's effective weight W0 ⊙ (1 + B·A) [out, in] as a new f32 tensor (W0 f32 or f16). */
export function hiraEffectiveWeight(gpu: Gpu, w0: Tensor, a: Tensor, b: Tensor): Promise<Tensor> {
  return factorWeight(gpu, w0, a, b, 1);
}

/** PEFT's stored HiRA delta weight W0 ⊙ (B·A) [out, in] as a new f32 tensor. */
export function hiraDeltaWeight(gpu: Gpu, w0: Tensor, a: Tensor, b: Tensor): Promise<Tensor> {
  return factorWeight(gpu, w0, a, b, 0);
}

/**
 * W0 ⊙ (1 + B·A) [out, in] by one elementwise kernel that sums the rank in order per element
 * (the plainest form, for tests and checks; {@linkcode hiraEffectiveWeight} is faster).
 */
export function hiraEffectiveWeightDirect(
  gpu: Gpu,
  w0: Tensor,
  a: Tensor,
  b: Tensor,
): Promise<Tensor> {
  return weightOp(gpu, "effective_weight", w0, a, b);
}

/** PEFT's delta weight W0 ⊙ (B·A) by the per-element kernel (see hiraEffectiveWeightDirect). */
export function hiraDeltaWeightDirect(
  gpu: Gpu,
  w0: Tensor,
  a: Tensor,
  b: Tensor,
): Promise<Tensor> {
  return weightOp(gpu, "delta_weight", w0, a, b);
}

/**
 * Recovers W0 = W' ⊘ (1 + B·A) from a merged HiRA weight W' [out, in] (paper §4.4), as a new
 * tensor. Ill-conditioned wherever 1 + B·A ≈ 0 (division by ~0 amplifies W's rounding error,
 * and W0 is lost where 1 + B·A = 0 exactly), which is why the engine keeps W0 and never
 * unmerges on its own: it rebuilds W0 ⊙ (1 + B·A) from the exact W0 (the exact route).
 */
export function unmergeHira(gpu: Gpu, merged: Tensor, a: Tensor, b: Tensor): Promise<Tensor> {
  return weightOp(gpu, "unmerge", merged, a, b);
}

/** dst ⊙= w in place, for dst f32 and w (a weight, f32 or f16) of the same size. */
export async function mulByWeight(gpu: Gpu, dst: Tensor, w: Tensor): Promise<void> {
  if (dst.size !== w.size) throw new Error(`mulByWeight: sizes ${dst.size} and ${w.size} differ`);
  checkF32("mulByWeight", dst);
  const k = await gpu.kernel(weightSpec("mul_inplace", ["uniform", "read", "rw"], wtype(w)));
  gpu.dispatch(k, [ELEM_PARAMS.pack({ n: dst.size, cols: 0 }), w, dst], grid(cdiv(dst.size, 256)));
}

/** Register block edge (in 4s) for an output dimension of `n` on the CPU kernels. */
function block(n: number): number {
  return n <= 4 ? 1 : n <= 8 ? 2 : 4;
}

/**
 * Rows per segment of the strip kernel: segments of up to CPU_SEGMENT_ROWS, shorter (down to 64
 * rows) while fewer than CPU_MIN_WORKGROUPS workgroups would run; a multiple of the register
 * block's 4·rb rows.
 */
function stripSegRows(M: number, tilesN: number, rb: number, wanted?: number): number {
  let seg = wanted ?? Math.min(M, CPU_SEGMENT_ROWS);
  if (wanted === undefined) {
    while (seg > 64 && tilesN * cdiv(M, seg) < CPU_MIN_WORKGROUPS) seg = cdiv(seg, 2);
  }
  return cdiv(Math.max(seg, 1), 4 * rb) * 4 * rb;
}

/**
 * k per chunk of the strip kernel for CB column vec4s per invocation: the 8 invocations' strips
 * (KS/4·CB 4×4 blocks each) fill the adapter's workgroup memory (KS = 64 at CB = 4 with 32 KiB),
 * and no more than K needs.
 */
function stripChunk(gpu: Pick<Gpu, "limits">, cb: number, K: number): number {
  const blocks = Math.floor(gpu.limits.maxComputeWorkgroupStorageSize / (8 * 64 * cb));
  return Math.max(4, Math.min(4 * blocks, cdiv(K, 4) * 4));
}

/** How a fused product runs: kernel entry, register blocks, strip chunking and grid. */
interface ProductPlan {
  variant: "cpu" | "tiled";
  entry: string;
  rb: number;
  cb: number;
  strip: boolean;
  ks: number;
  segRows: number;
  tilesN: number;
  totalTiles: number;
  /** Loop iterations one invocation runs (an upper estimate; 0 for the tiled kernel). */
  iterations: number;
}

/**
 * Loop iterations per invocation of the CPU fused product kernels (kernels/hira_fused.wgsl's mm_cpu
 * and mm_cpu_strip), for {@linkcode Gpu.loopBudget}: an estimate fitted to where llvmpipe's
 * results went wrong ({@linkcode withinLoopBudget} leaves a margin).
 */
function productIterations(
  K: number,
  r: number,
  dx: boolean,
  p: Pick<ProductPlan, "rb" | "cb" | "strip" | "ks" | "segRows">,
  vec: { k: boolean; r: boolean; n: boolean },
): number {
  // Per 4 k: the factor's rank loop (dX: 4 ranks at a time through B's rows). Calibrated on
  // llvmpipe at r = 32: the forward per-block kernel ran right at K = 7,300 and wrong at 7,600;
  // the strip kernel on 64 rows right at 6,600 and wrong at 7,200, its dX on 130 rows right at
  // 12,000 and wrong at 14,336.
  const factor = dx ? (r / 4) * (1 + (vec.r ? 0 : 16)) + 1 : r + 2;
  const act = vec.k ? 0 : 16 * p.rb;
  const io = vec.n ? 0 : 32 * p.rb * p.cb;
  const pre = r * (p.cb + 1);
  if (!p.strip) return pre + (K / 4) * (factor + 1 + act) + io;
  const rowBlocks = cdiv(p.segRows, 4 * p.rb);
  return pre +
    cdiv(K, p.ks) * ((p.ks / 4) * factor + rowBlocks * ((p.ks / 4) * (1 + act) + 2 + io));
}

function productPlan(
  gpu: Pick<Gpu, "isCpuAdapter" | "description" | "limits">,
  dx: boolean,
  M: number,
  outF: number,
  inF: number,
  r: number,
  opts: Pick<HiraProductOptions, "variant" | "cpuStrip" | "cpuSegRows">,
): ProductPlan {
  const K = dx ? outF : inF;
  const N = dx ? inF : outF;
  const variant = resolveHiraVariant(gpu, opts.variant);
  const rb = variant === "cpu" ? block(M) : 1;
  // Columns per workgroup are 8 invocations × 4·CB: keep that within N's next multiple of 32.
  const cb = variant === "cpu" ? (N > 64 ? 4 : N > 32 ? 2 : 1) : 1;
  const strip = variant === "cpu" &&
    (opts.cpuStrip ?? (M > CPU_FEW_ROWS && cpuStripSupported(gpu.description)));
  const entry = variant === "tiled" ? "mm_tiled" : strip ? "mm_cpu_strip" : "mm_cpu";
  const ks = strip ? stripChunk(gpu, cb, K) : 4;
  const tileN = variant === "cpu" ? 32 * cb : TILE;
  const tilesN = cdiv(N, tileN);
  const segRows = strip ? stripSegRows(M, tilesN, rb, opts.cpuSegRows) : 0;
  const tileM = strip ? segRows : variant === "cpu" ? 4 * rb : TILE;
  const plan = {
    variant,
    entry,
    rb,
    cb,
    strip,
    ks,
    segRows,
    tilesN,
    totalTiles: tilesN * cdiv(M, tileM),
    iterations: 0,
  };
  if (variant === "cpu") {
    plan.iterations = productIterations(K, r, dx, plan, {
      k: K % 4 === 0,
      r: r % 4 === 0,
      n: N % 4 === 0,
    });
  }
  return plan;
}

/**
 * Whether HiRA's fused forward runs a layer [out, in] of rank r on `tokens` tokens within the
 * adapter's loop budget ({@linkcode Gpu.loopBudget}; llvmpipe ends longer loops early). Always
 * true on adapters without a budget and for the tiled kernels.
 */
export function hiraFusedFits(
  gpu: Pick<Gpu, "isCpuAdapter" | "description" | "limits" | "loopBudget">,
  tokens: number,
  outF: number,
  inF: number,
  r: number,
  variant: HiraVariant = "auto",
): boolean {
  if (tokens === 0) return true;
  const plan = productPlan(gpu, false, tokens, outF, inF, r, { variant });
  return withinLoopBudget(plan.iterations, gpu.loopBudget);
}

async function fusedProduct(
  gpu: Gpu,
  dx: boolean,
  act: Tensor,
  w0: Tensor,
  a: Tensor,
  b: Tensor,
  opts: HiraProductOptions,
): Promise<Tensor> {
  const what = dx ? "hiraInputGradFused" : "hiraForwardFused";
  const { out: outF, inF, r } = adapterDims(what, w0, a, b);
  const K = dx ? outF : inF;
  const N = dx ? inF : outF;
  if (act.shape.length !== 2 || act.shape[1] !== K) {
    throw new Error(`${what}: activations must be [N, ${K}], got [${act.shape}]`);
  }
  checkF32(what, act);
  const M = act.shape[0];
  let out = opts.out;
  if (out) {
    checkShape(`${what} out`, out, [M, N]);
    checkF32(what, out);
    if ([act, w0, a, b].some((t) => t.buffer === out!.buffer)) {
      throw new Error(`${what}: out must not share a buffer with an input`);
    }
  } else {
    if (opts.accumulate) throw new Error(`${what}: accumulate needs an explicit out tensor`);
    out = gpu.empty([M, N]);
  }
  if (M === 0) return out;
  if (
    opts.cpuSegRows !== undefined && !(Number.isInteger(opts.cpuSegRows) && opts.cpuSegRows > 0)
  ) {
    throw new Error(`${what}: cpuSegRows must be a positive integer, got ${opts.cpuSegRows}`);
  }
  const plan = productPlan(gpu, dx, M, outF, inF, r, opts);
  if (!withinLoopBudget(plan.iterations, gpu.loopBudget)) {
    if (!opts.out) out.release();
    throw loopBudgetError(
      `${what} [${M}, ${K}] × W0 [${outF}, ${inF}] r=${r}`,
      plan.iterations,
      gpu.loopBudget,
      'use HiRA\'s "materialized" kernel for this shape ("auto" does)',
    );
  }
  const { variant, entry, rb, cb, ks, segRows, tilesN, totalTiles } = plan;
  const kernel = await gpu.kernel(
    productSpec(entry, {
      WTYPE: wtype(w0),
      DX: dx,
      ACC: opts.accumulate ?? false,
      // The cpu entries preload per-rank values into an array sized by the rank.
      RANK: variant === "cpu" ? r : 1,
      KS: ks,
      RB: rb,
      CB: cb,
      VEC_K: K % 4 === 0,
      VEC_IN: inF % 4 === 0,
      VEC_R: r % 4 === 0,
      VEC_N: N % 4 === 0,
    }),
  );
  gpu.dispatch(kernel, [
    MM_PARAMS.pack({ M, N, K, out_f: outF, in_f: inF, rank: r, tilesN, totalTiles, segRows }),
    vec4Window(act),
    vec4Window(w0),
    vec4Window(a),
    vec4Window(b),
    vec4Window(out),
  ], grid(totalTiles, gpu.limits.maxComputeWorkgroupsPerDimension));
  return out;
}

/**
 * y [N, out] = x·(W0 ⊙ (1 + B·A))ᵀ for x [N, in], W0 [out, in], A [r, in], B [out, r], without
 * writing the effective weight. Records one dispatch.
 */
export function hiraForwardFused(
  gpu: Gpu,
  x: Tensor,
  w0: Tensor,
  a: Tensor,
  b: Tensor,
  opts: HiraProductOptions = {},
): Promise<Tensor> {
  return fusedProduct(gpu, false, x, w0, a, b, opts);
}

/**
 * dX [N, in] = dY·(W0 ⊙ (1 + B·A)) for dY [N, out], without writing the effective weight.
 * Records one dispatch.
 */
export function hiraInputGradFused(
  gpu: Gpu,
  dy: Tensor,
  w0: Tensor,
  a: Tensor,
  b: Tensor,
  opts: HiraProductOptions = {},
): Promise<Tensor> {
  return fusedProduct(gpu, true, dy, w0, a, b, opts);
}

/**
 * gradA [r, in] += Bᵀ·M and gradB [out, r] += M·Aᵀ with M = W0 ⊙ (dYᵀ·X), for x [N, in] and
 * dy [N, out]. M is formed tile by tile; each tile's contribution goes to a partial-sum buffer
 * (per `out` segment for dA, per `in` column block for dB), and one reduction dispatch adds the
 * partials, in a fixed order, into the gradients. Records two dispatches.
 */
export async function hiraWeightGradsFused(
  gpu: Gpu,
  x: Tensor,
  dy: Tensor,
  w0: Tensor,
  a: Tensor,
  b: Tensor,
  gradA: Tensor,
  gradB: Tensor,
  opts: HiraGradOptions = {},
): Promise<void> {
  const what = "hiraWeightGradsFused";
  const { out: outF, inF, r } = adapterDims(what, w0, a, b);
  if (x.shape.length !== 2 || x.shape[1] !== inF) {
    throw new Error(`${what}: x must be [N, ${inF}], got [${x.shape}]`);
  }
  const n = x.shape[0];
  checkShape(`${what} dy`, dy, [n, outF]);
  checkShape(`${what} gradA`, gradA, [r, inF]);
  checkShape(`${what} gradB`, gradB, [outF, r]);
  checkF32(what, x, dy, gradA, gradB);
  if (n === 0) return;
  const variant = resolveHiraVariant(gpu, opts.variant);
  if (opts.tileBlock !== undefined && !(Number.isInteger(opts.tileBlock) && opts.tileBlock >= 1)) {
    throw new Error(`${what}: tileBlock must be a positive integer, got ${opts.tileBlock}`);
  }
  if (variant === "cpu") {
    const iterations = gradIterations(n, outF, inF, r);
    if (!withinLoopBudget(iterations, gpu.loopBudget)) {
      throw loopBudgetError(
        `${what} on ${n} tokens, W0 [${outF}, ${inF}] r=${r}`,
        iterations,
        gpu.loopBudget,
        'use HiRA\'s "materialized" kernel for this shape ("auto" does on CPU adapters)',
      );
    }
  }
  const lay = gradLayout(variant, outF, inF, opts.tileBlock);
  const { cb, cols: colTiles, rows: segs } = lay;
  const kernel = await gpu.kernel(
    gradSpec(variant === "cpu" ? "grad_cpu" : "grad_tiled", [
      "uniform",
      "read",
      "read",
      "read",
      "read",
      "read",
      "rw",
      "rw",
    ], {
      WTYPE: wtype(w0),
      RANK: variant === "cpu" ? r : 1,
      CB: cb,
      // grad_cpu reads dY rows as vec4 when out % 4 == 0.
      VEC_K: outF % 4 === 0,
      VEC_IN: inF % 4 === 0,
      VEC_R: r % 4 === 0,
    }),
  );
  const partA = gpu.empty([segs, r, inF]);
  const partB = gpu.empty([lay.bParts, outF, r]);
  gpu.dispatch(kernel, [
    GRAD_PARAMS.pack({
      N: n,
      out_f: outF,
      in_f: inF,
      rank: r,
      blocks_per_seg: lay.blocksPerSeg,
      tiles_c: lay.tc,
      tiles_r: lay.tr,
    }),
    vec4Window(dy),
    vec4Window(x),
    vec4Window(w0),
    vec4Window(a),
    vec4Window(b),
    partA,
    partB,
  ], [colTiles, segs]);
  const reduce = await gpu.kernel(
    gradSpec("reduce_grads", ["uniform", "read", "read", "rw", "rw"], {}),
  );
  const lenA = r * inF, lenB = outF * r;
  const reduceParams = REDUCE_PARAMS.pack({
    len_a: lenA,
    parts_a: segs,
    len_b: lenB,
    parts_b: lay.bParts,
  });
  gpu.dispatch(reduce, [reduceParams, partA, partB, gradA, gradB], [
    ...grid(cdiv(lenA + lenB, 256)),
  ]);
  partA.release();
  partB.release();
}

/**
 * Bytes of the partial-sum buffers {@linkcode hiraWeightGradsFused} allocates for a layer
 * [out, in] of rank r (for memory accounting).
 */
export function hiraGradScratchBytes(
  variant: "cpu" | "tiled",
  outF: number,
  inF: number,
  r: number,
): number {
  const lay = gradLayout(variant, outF, inF);
  return 4 * r * (lay.rows * inF + lay.bParts * outF);
}
