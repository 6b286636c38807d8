/**
 * Matrix multiplication on GPU tensors (kernels/matmul.wgsl).
 *
 * Three kernel families: "cpu" for CPU rasterizers (llvmpipe/lavapipe), register-blocked straight
 * from storage with vec4 loads and no workgroup memory; "tiled" for real GPUs, with 64×64 tiles
 * staged in workgroup memory; "subgroup" for real GPUs with the subgroups feature, the same tiles
 * with operands shared between lanes by subgroupShuffle instead of workgroup-memory tiles.
 * "auto" picks by {@linkcode Gpu.isCpuAdapter} and {@linkcode Gpu.hasSubgroups}
 * (see {@linkcode resolveMatmulVariant}).
 *
 * Operands may be f16 (frozen weights stored in half precision when the device has shader-f16):
 * every family widens every load to f32 and accumulates in f32; the output is always f32.
 * @module
 */
import type { BufferWindow, Gpu, Tensor } from "../engine/gpu.ts";
import type { KernelFile } from "../engine/gpu.ts";
import { cdiv, DTYPE_BYTES, grid, kernelFile, uniformStruct } from "../engine/gpu.ts";

/**
 * Kernel family: "cpu" for CPU rasterizers, "tiled" (workgroup memory) for real GPUs, "subgroup"
 * (subgroup shuffles; needs the device's subgroups feature) for real GPUs that have subgroups.
 */
export type MatmulVariant = "auto" | "cpu" | "tiled" | "subgroup";

/** Options for {@linkcode matmul}. */
export interface MatmulOptions {
  /** a is stored [K, M] (or [batch, K, M]) and used as aᵀ. */
  transA?: boolean;
  /** b is stored [N, K] (or [batch, N, K]) and used as bᵀ. */
  transB?: boolean;
  /** Destination; allocated from the pool when absent. Must not share memory with a or b. */
  out?: Tensor;
  /** out += alpha·op(a)·op(b) instead of out = alpha·op(a)·op(b). */
  accumulate?: boolean;
  /** Scale of the product; default 1. */
  alpha?: number;
  /** Elements between rows of out (default N): write a column block. */
  outStride?: number;
  /** Element offset of out[0,0] inside out's binding (default 0). */
  outOffset?: number;
  /** "auto": chosen from gpu.isCpuAdapter and gpu.hasSubgroups ({@linkcode resolveMatmulVariant}). */
  variant?: MatmulVariant;
}

const BINDINGS: readonly ("uniform" | "read" | "rw")[] = ["uniform", "read", "read", "rw"];
/**
 * The product's sizes, its flat tile grid (tilesN along N, tilesPerBatch per batch, totalTiles
 * in all), the operands' batch strides, out's row stride and offset, and the scale alpha.
 */
const PARAMS = uniformStruct("Params", [
  ...["M", "N", "K", "tilesN", "tilesPerBatch", "totalTiles"] as const,
  ...["aBatch", "bBatch", "outBatch", "outStride", "outOffset"] as const,
  ["alpha", "f32"],
]);
/** kernels/matmul.wgsl and its uniform struct (docs/kernels.md). */
export const MATMUL_KERNELS: KernelFile = kernelFile("matmul.wgsl", [PARAMS]);

/** Output tile edge of the "tiled" and "subgroup" kernels. */
const TILE = 64;

/**
 * C[M,N] = alpha·op(A)·op(B) (+ C). Rank-3 inputs are batched over dim 0; a rank-2 b with a
 * rank-3 a broadcasts b over the batch. Returns out (shape [M,N] or [batch,M,N]).
 *
 * A rank-2 a with a rank-3 b broadcasts a likewise. With a batch, the rows of batch i start at
 * outOffset + i·M·outStride. out must not share a buffer with a or b (WebGPU forbids binding a
 * buffer writable and read-only at once). Records one dispatch; nothing is submitted.
 */
export async function matmul(
  gpu: Gpu,
  a: Tensor,
  b: Tensor,
  opts: MatmulOptions = {},
): Promise<Tensor> {
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  if (a.shape.length < 2 || a.shape.length > 3 || b.shape.length < 2 || b.shape.length > 3) {
    throw new Error(`matmul: a ${fmt(a.shape)} and b ${fmt(b.shape)} must be rank 2 or 3`);
  }
  for (const [name, t] of [["a", a], ["b", b]] as const) {
    if (t.dtype !== "f32" && t.dtype !== "f16") {
      throw new Error(`matmul: ${name} is ${t.dtype}; operands must be f32 or f16`);
    }
    if (t.dtype === "f16" && !gpu.hasF16) {
      throw new Error(`matmul: ${name} is f16 but the device has no shader-f16`);
    }
  }
  const ab = a.shape.length === 3 ? a.shape[0] : 1;
  const bb = b.shape.length === 3 ? b.shape[0] : 1;
  const [a0, a1] = a.shape.slice(-2);
  const [b0, b1] = b.shape.slice(-2);
  const [M, K] = transA ? [a1, a0] : [a0, a1];
  const [Kb, N] = transB ? [b1, b0] : [b0, b1];
  if (K !== Kb) {
    throw new Error(
      `matmul: inner dimensions differ: op(a) is ${M}×${K} (a ${fmt(a.shape)}` +
        `${transA ? ", transA" : ""}), op(b) is ${Kb}×${N} (b ${fmt(b.shape)}` +
        `${transB ? ", transB" : ""})`,
    );
  }
  if (a.shape.length === 3 && b.shape.length === 3 && ab !== bb) {
    throw new Error(`matmul: batch sizes differ: a ${fmt(a.shape)}, b ${fmt(b.shape)}`);
  }
  const batch = Math.max(ab, bb);
  const batched = a.shape.length === 3 || b.shape.length === 3;
  const alpha = opts.alpha ?? 1;
  const outStride = opts.outStride ?? N;
  const outOffset = opts.outOffset ?? 0;
  if (!Number.isInteger(outStride) || outStride < N) {
    throw new Error(`matmul: outStride ${outStride} must be an integer >= N = ${N}`);
  }
  if (!Number.isInteger(outOffset) || outOffset < 0) {
    throw new Error(`matmul: outOffset ${outOffset} must be a non-negative integer`);
  }
  let out = opts.out;
  if (!out) {
    if (outStride !== N || outOffset !== 0) {
      throw new Error("matmul: outStride/outOffset need an explicit out tensor");
    }
    if (opts.accumulate) throw new Error("matmul: accumulate needs an explicit out tensor");
    out = gpu.empty(batched ? [batch, M, N] : [M, N]);
  } else {
    if (out.dtype !== "f32") throw new Error(`matmul: out must be f32, not ${out.dtype}`);
    if (out.released) throw new Error("matmul: out was released");
    const need = M === 0 || N === 0 ? 0 : outOffset + (batch * M - 1) * outStride + N;
    if (need > out.size) {
      throw new Error(
        `matmul: out ${fmt(out.shape)} has ${out.size} elements; ${batch}×${M}×${N} with ` +
          `outStride ${outStride} and outOffset ${outOffset} needs ${need}`,
      );
    }
    if (out.buffer === a.buffer || out.buffer === b.buffer) {
      throw new Error("matmul: out must not share a buffer with a or b");
    }
  }
  const limit = gpu.limits.maxStorageBufferBindingSize;
  for (const [name, t] of [["a", a], ["b", b], ["out", out]] as const) {
    // All three are bound as whole vec4s.
    const size = Math.ceil(t.byteLength / 16) * 16;
    if (size > limit) {
      throw new Error(
        `matmul: ${name} ${fmt(t.shape)} is ${size} bytes, over the adapter's ` +
          `${limit}-byte storage binding limit; split it into row blocks (Tensor.rows) and ` +
          `call matmul per block (outStride/outOffset write column blocks of out, ` +
          `accumulate sums blocks of K)`,
      );
    }
  }
  if (M === 0 || N === 0 || batch === 0) return out;

  // A rank-3 a against a shared b is one tall matmul: its [batch·M, K] rows are contiguous.
  let rowsM = M, nBatch = batch, aBatch = ab > 1 ? M * K : 0;
  const bBatch = bb > 1 ? K * N : 0;
  if (ab > 1 && bb === 1 && !transA) {
    rowsM = batch * M;
    nBatch = 1;
    aBatch = 0;
  }
  const variant = resolveMatmulVariant(gpu, opts.variant ?? "auto");
  // The CPU kernel runs 8 invocations along N, 4·cb columns each. An output narrower than one
  // workgroup's columns (HiRA's and LoRA's rank r) would leave lanes idle, so it computes
  // Cᵀ = op(B)ᵀ·op(A)ᵀ instead and stores it transposed: at N = 32, 2–2.5× faster on lavapipe
  // (e.g. [1024, 512]·[512, 32] 4.9 → 2.5 ms), at N = 96 1.3×, and no longer at N = 128.
  const alignedAsIs = (transA ? rowsM : K) % 4 === 0 && (transB ? K : N) % 4 === 0 &&
    N % 4 === 0 && outStride % 4 === 0 && outOffset % 4 === 0;
  const asIs = cpuShape(rowsM, N, alignedAsIs ? 4 : 2);
  const swap = variant === "cpu" && N < rowsM && N < asIs.lx * asIs.cb * 4;
  const p = swap
    ? {
      a: b,
      b: a,
      aType: b.dtype,
      bType: a.dtype,
      transA: !transB,
      transB: !transA,
      M: N,
      N: rowsM,
      aBatch: bBatch,
      bBatch: aBatch,
    }
    : { a, b, aType: a.dtype, bType: b.dtype, transA, transB, M: rowsM, N, aBatch, bBatch };
  const vecA = (p.transA ? p.M : K) % 4 === 0;
  const vecB = (p.transB ? K : p.N) % 4 === 0;
  const vecC = !swap && N % 4 === 0 && outStride % 4 === 0 && outOffset % 4 === 0;
  // The tiled kernel stages single elements; the others load whole vec4s where aligned.
  const vecLoads = variant !== "tiled";
  const subgroup = variant === "subgroup";
  // Ragged layouts load element by element; a smaller register block keeps their compile time
  // (about a second on llvmpipe for a 16×16 block) in check.
  const shape = variant === "cpu"
    ? cpuShape(p.M, p.N, vecA && vecB && (vecC || swap) ? 4 : 2)
    : { rb: 1, cb: 1, lx: 1, ly: 1 };
  const tileM = variant === "cpu" ? shape.ly * shape.rb * 4 : TILE;
  const tileN = variant === "cpu" ? shape.lx * shape.cb * 4 : TILE;
  // The GPU kernels ignore RB/CB/LX/LY/KTAIL (tiled also VEC_A/VEC_B): fixed values share one
  // pipeline.
  const kernel = await gpu.kernel(MATMUL_KERNELS.spec(variant, BINDINGS, {
    TRANS_A: String(p.transA),
    TRANS_B: String(p.transB),
    TRANS_C: String(swap),
    VEC_A: String(vecLoads && vecA),
    VEC_B: String(vecLoads && vecB),
    VEC_C: String(vecC),
    KTAIL: String(variant === "cpu" && K % 4 !== 0),
    ACC: String(opts.accumulate ?? false),
    RB: shape.rb,
    CB: shape.cb,
    LX: shape.lx,
    LY: shape.ly,
    ATYPE: p.aType,
    BTYPE: p.bType,
    // The subgroup section only compiles with the subgroups feature: a comment elsewhere.
    SG_OPEN: subgroup ? "" : "/*",
    SG_CLOSE: subgroup ? "" : "*/",
  }));
  const tilesN = cdiv(p.N, tileN);
  const tilesPerBatch = tilesN * cdiv(p.M, tileM);
  const totalTiles = tilesPerBatch * nBatch;
  gpu.dispatch(kernel, [
    PARAMS.pack({
      M: p.M,
      N: p.N,
      K,
      tilesN,
      tilesPerBatch,
      totalTiles,
      aBatch: p.aBatch,
      bBatch: p.bBatch,
      outBatch: M * outStride,
      outStride,
      outOffset,
      alpha,
    }),
    vec4Window(p.a),
    vec4Window(p.b),
    vec4Window(out),
  ], grid(totalTiles, gpu.limits.maxComputeWorkgroupsPerDimension));
  return out;
}

/** Shape of the "cpu" kernel for an M×N output. */
export interface CpuKernelShape {
  /** 4-row blocks per invocation (1..4). */
  rb: number;
  /** 4-column blocks per invocation (1..4). */
  cb: number;
  /** Invocations per workgroup along N. */
  lx: number;
  /** Invocations per workgroup along M (lx·ly = 8: one SIMD row on llvmpipe). */
  ly: number;
}

/**
 * The "cpu" kernel shape for an M×N output: the largest register block (up to 4·maxBlock square)
 * that the output fills, with the 8 invocations of a workgroup along N.
 */
export function cpuShape(M: number, N: number, maxBlock = 4): CpuKernelShape {
  // Blocks of 1, 2 or 4: few distinct kernels to compile. Lanes run along N, which measured
  // 4× faster on lavapipe than along M (matmul() transposes narrow products to keep it so).
  const block = (n: number) => Math.min(maxBlock, n <= 4 ? 1 : n <= 8 ? 2 : 4);
  return { rb: block(M), cb: block(N), lx: 8, ly: 1 };
}

/**
 * The kernel family {@linkcode matmul} runs for a requested variant on a device. "auto": "cpu" on
 * CPU rasterizers, even those with subgroups (SwiftShader: the register-blocked kernel is the one
 * made for them), "subgroup" on other adapters with the subgroups feature, else "tiled". A forced
 * "subgroup" without the feature is an error.
 */
export function resolveMatmulVariant(
  gpu: Pick<Gpu, "isCpuAdapter" | "hasSubgroups">,
  v: MatmulVariant,
): "cpu" | "tiled" | "subgroup" {
  if (v === "subgroup" && !gpu.hasSubgroups) {
    throw new Error(
      'matmul: variant "subgroup" needs the device\'s subgroups feature, which this adapter ' +
        'does not offer; use "auto", "tiled" or "cpu"',
    );
  }
  if (v === "cpu" || v === "tiled" || v === "subgroup") return v;
  if (v !== "auto") throw new Error(`matmul: unknown variant ${v}`);
  if (gpu.isCpuAdapter) return "cpu";
  return gpu.hasSubgroups ? "subgroup" : "tiled";
}

/** The tensor's binding widened to whole vec4s (the kernels see all operands as vec4 arrays). */
function vec4Window(t: Tensor): BufferWindow {
  if (t.released) throw new Error(`matmul: input ${fmt(t.shape)} was released`);
  const vec = 4 * DTYPE_BYTES[t.dtype];
  const size = Math.max(vec, Math.ceil(t.byteLength / vec) * vec);
  if (t.byteOffset + size > t.buffer.size) {
    throw new Error(
      `matmul: tensor ${fmt(t.shape)} at byte ${t.byteOffset} cannot be read as vec4s ` +
        `(its buffer of ${t.buffer.size} bytes ends inside the last vec4)`,
    );
  }
  return { buffer: t.buffer, offset: t.byteOffset, size };
}

function fmt(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}
