/**
 * RMSNorm as Llama uses it: y = x / sqrt(mean(x²) + eps) · w over the rows of x [N, C]
 * (kernels/norm.wgsl), with its backward.
 * @module
 */
import type { BindingKind, Gpu, Tensor } from "../engine/gpu.ts";
import { cdiv, grid, type KernelFile, kernelFile, uniformStruct } from "../engine/gpu.ts";

/** The row kernels: n rows of c; accumulate = 1 adds dx into the destination. */
const ROW_PARAMS = uniformStruct("RowParams", ["n", "c", ["eps", "f32"], "accumulate"]);
/**
 * The weight-gradient column reduction: n rows of c in `chunks` chunks of rows_per_chunk;
 * accumulate = 1 adds pass 1's sums into its destination.
 */
const COL_PARAMS = uniformStruct("ColParams", ["n", "c", "rows_per_chunk", "chunks", "accumulate"]);
/** kernels/norm.wgsl and its uniform structs (docs/kernels.md). */
export const NORM_KERNELS: KernelFile = kernelFile("norm.wgsl", [ROW_PARAMS, COL_PARAMS]);

/** Options shared by the row kernels. */
export interface RowKernelOptions {
  /**
   * Workgroup size of the row kernels (a power of two, 1..256). By default 256 on GPUs and 8 on
   * CPU rasterizers, where one SIMD batch per row avoids the cost of workgroup barriers. Tests
   * force both.
   */
  workgroupSize?: number;
}

/** Picks the row-kernel workgroup size for an adapter (see {@linkcode RowKernelOptions}). */
export function rowWorkgroupSize(gpu: Gpu, forced?: number): number {
  const wg = forced ?? (gpu.isCpuAdapter ? 8 : 256);
  if (!Number.isInteger(wg) || wg < 1 || wg > 256 || (wg & (wg - 1)) !== 0) {
    throw new Error(`workgroup size ${wg} is not a power of two in 1..256`);
  }
  return wg;
}

function spec(entry: string, bindings: readonly BindingKind[], wg?: number) {
  return NORM_KERNELS.spec(entry, bindings, { WG: wg ?? 1 });
}

function rowsAndCols(op: string, x: Tensor, w: Tensor): [number, number] {
  const c = w.size;
  if (x.shape.length < 1 || x.shape[x.shape.length - 1] !== c) {
    throw new Error(`${op}: x ${x.shape} does not end in the weight's length ${c}`);
  }
  return [x.size / c, c];
}

/** Result of {@linkcode rmsnorm}. */
export interface RmsnormResult {
  /** Normalized and scaled rows, same shape as x. */
  y: Tensor;
  /** 1 / sqrt(mean(x²) + eps) per row, [N]; the backward needs it. */
  rstd: Tensor;
}

/**
 * y = x · rstd · w with rstd = 1 / sqrt(mean(x²) + eps) per row of x [N, C]; w is [C].
 * `opts.out` receives y if given (it must not alias x).
 */
export async function rmsnorm(
  gpu: Gpu,
  x: Tensor,
  w: Tensor,
  eps: number,
  opts: RowKernelOptions & { out?: Tensor } = {},
): Promise<RmsnormResult> {
  const [n, c] = rowsAndCols("rmsnorm", x, w);
  const wg = rowWorkgroupSize(gpu, opts.workgroupSize);
  const k = await gpu.kernel(spec("rmsnorm_forward", ["uniform", "read", "read", "rw", "rw"], wg));
  const y = opts.out ?? gpu.empty(x.shape);
  const rstd = gpu.empty([n]);
  gpu.dispatch(k, [ROW_PARAMS.pack({ n, c, eps, accumulate: 0 }), x, w, y, rstd], grid(n));
  return { y, rstd };
}

/** Options for {@linkcode rmsnormBackward}. */
export interface RmsnormBackwardOptions extends RowKernelOptions {
  /** Weight gradient [C] to accumulate into (full fine-tuning only); skipped when absent. */
  dw?: Tensor;
  /** Where dx goes; a new tensor by default. */
  dx?: Tensor;
  /** Add into `dx` instead of overwriting it (e.g. the residual stream's gradient). */
  accumulate?: boolean;
  /** Rows per chunk of the weight-gradient column reduction (tests use small values). */
  dwRowsPerChunk?: number;
}

/**
 * Backward of {@linkcode rmsnorm}: returns dx [N, C] for the upstream gradient dy, given the
 * forward's input x, weight w and per-row rstd. With `opts.dw` the weight gradient
 * Σ_n dy·x·rstd is added into it by a deterministic two-pass column reduction (no atomics).
 */
export async function rmsnormBackward(
  gpu: Gpu,
  x: Tensor,
  w: Tensor,
  rstd: Tensor,
  dy: Tensor,
  opts: RmsnormBackwardOptions = {},
): Promise<Tensor> {
  const [n, c] = rowsAndCols("rmsnormBackward", x, w);
  if (dy.size !== x.size) throw new Error(`rmsnormBackward: dy ${dy.shape} vs x ${x.shape}`);
  if (rstd.size !== n) throw new Error(`rmsnormBackward: rstd ${rstd.shape} for ${n} rows`);
  if (opts.accumulate && !opts.dx) throw new Error("rmsnormBackward: accumulate needs opts.dx");
  const wg = rowWorkgroupSize(gpu, opts.workgroupSize);
  const kdx = await gpu.kernel(
    spec("rmsnorm_backward_dx", ["uniform", "read", "read", "read", "read", "rw"], wg),
  );
  const dx = opts.dx ?? gpu.empty(x.shape);
  if (dx.size !== x.size) throw new Error(`rmsnormBackward: dx ${dx.shape} vs x ${x.shape}`);
  const params = ROW_PARAMS.pack({ n, c, eps: 0, accumulate: opts.accumulate ? 1 : 0 });
  gpu.dispatch(kdx, [params, x, w, rstd, dy, dx], grid(n));
  if (opts.dw) await rmsnormWeightGrad(gpu, x, rstd, dy, opts.dw, n, c, opts.dwRowsPerChunk);
  return dx;
}

async function rmsnormWeightGrad(
  gpu: Gpu,
  x: Tensor,
  rstd: Tensor,
  dy: Tensor,
  dw: Tensor,
  n: number,
  c: number,
  rowsPerChunk = 128,
): Promise<void> {
  if (dw.size !== c) throw new Error(`rmsnormBackward: dw ${dw.shape} for ${c} columns`);
  const chunks = Math.max(1, cdiv(n, rowsPerChunk));
  if (chunks > gpu.limits.maxComputeWorkgroupsPerDimension) {
    rowsPerChunk = cdiv(n, gpu.limits.maxComputeWorkgroupsPerDimension);
    return rmsnormWeightGrad(gpu, x, rstd, dy, dw, n, c, rowsPerChunk);
  }
  const partial = await gpu.kernel(
    spec("rmsnorm_dw_partial", ["uniform", "read", "read", "read", "rw"]),
  );
  const params = (accumulate: number) =>
    COL_PARAMS.pack({ n, c, rows_per_chunk: rowsPerChunk, chunks, accumulate });
  if (chunks === 1) {
    gpu.dispatch(partial, [params(1), x, rstd, dy, dw], [cdiv(c, 64), 1]);
    return;
  }
  const reduce = await gpu.kernel(spec("rmsnorm_dw_reduce", ["uniform", "read", "rw"]));
  const sums = gpu.empty([chunks, c]);
  gpu.dispatch(partial, [params(0), x, rstd, dy, sums], [cdiv(c, 64), chunks]);
  gpu.dispatch(reduce, [params(0), sums, dw], [cdiv(c, 64)]);
  // Safe to recycle now: later users of this buffer are recorded after the reduce.
  sums.release();
}
