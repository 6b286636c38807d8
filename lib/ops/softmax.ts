/**
 * Row-wise softmax and its backward on GPU tensors (kernels/softmax.wgsl).
 * @module
 */
import type { Gpu, Tensor } from "../engine/gpu.ts";
import { cdiv, grid, type KernelFile, kernelFile, uniformStruct } from "../engine/gpu.ts";
import { loopBudgetError, withinLoopBudget } from "../engine/gpu.ts";

/**
 * Kernel family: "cpu" runs one invocation per row (no barriers, for CPU rasterizers),
 * "workgroup" one 256-lane workgroup per row with a workgroup-memory reduction (real GPUs).
 */
export type SoftmaxVariant = "auto" | "cpu" | "workgroup";

/** Options for {@linkcode softmax} and {@linkcode softmaxBackward}. */
export interface SoftmaxOptions {
  /** Destination with the input's size; allocated from the pool when absent. */
  out?: Tensor;
  /** "auto": "cpu" on CPU adapters and for short rows, "workgroup" otherwise. */
  variant?: SoftmaxVariant;
}

const ROWS_WG = 64;
/** A [rows, cols] matrix. */
const PARAMS = uniformStruct("Params", ["rows", "cols"]);
/** kernels/softmax.wgsl and its uniform struct (docs/kernels.md). */
export const SOFTMAX_KERNELS: KernelFile = kernelFile("softmax.wgsl", [PARAMS]);

function spec(entry: string) {
  // The forward entries leave binding 2 unused, so that both directions share one layout.
  return SOFTMAX_KERNELS.spec(entry, ["uniform", "read", "read", "rw"]);
}

function rowsCols(op: string, x: Tensor): [number, number] {
  if (x.shape.length < 1 || x.dtype !== "f32") {
    throw new Error(`${op}: need an f32 tensor of rank >= 1, got ${x.shape}/${x.dtype}`);
  }
  const cols = x.shape[x.shape.length - 1];
  return [cols === 0 ? 0 : x.size / cols, cols];
}

function pickVariant(gpu: Gpu, cols: number, v: SoftmaxVariant = "auto"): "cpu" | "workgroup" {
  if (v !== "auto") return v;
  // The per-row kernel loops over the row three times in one invocation: past the adapter's loop
  // budget (Gpu.loopBudget: llvmpipe ends longer loops early) the workgroup kernel splits it.
  if (!withinLoopBudget(3 * cols, gpu.loopBudget)) return "workgroup";
  // A workgroup per row only pays off when the row has enough columns to fill its lanes.
  return gpu.isCpuAdapter || cols < 128 ? "cpu" : "workgroup";
}

async function run(
  gpu: Gpu,
  entry: string,
  a: Tensor,
  b: Tensor,
  rows: number,
  cols: number,
  opts: SoftmaxOptions,
): Promise<Tensor> {
  const o = opts.out ?? gpu.empty(a.shape);
  if (o.size !== a.size) throw new Error(`${entry}: out has ${o.size} elements, need ${a.size}`);
  if (rows === 0 || cols === 0) return o;
  const variant = pickVariant(gpu, cols, opts.variant);
  if (variant === "cpu" && !withinLoopBudget(3 * cols, gpu.loopBudget)) {
    throw loopBudgetError(
      `${entry} over rows of ${cols}`,
      3 * cols,
      gpu.loopBudget,
      'use variant "auto"',
    );
  }
  const k = await gpu.kernel(spec(`${entry}_${variant === "cpu" ? "rows" : "wg"}`));
  const groups = variant === "cpu" ? grid(cdiv(rows, ROWS_WG)) : grid(rows);
  gpu.dispatch(k, [PARAMS.pack({ rows, cols }), a, b, o], groups);
  return o;
}

/**
 * Numerically stable softmax over the last dimension of `x` (rows = all leading dimensions).
 * Returns a tensor of x's shape. `opts.out` must not alias `x`.
 */
export async function softmax(gpu: Gpu, x: Tensor, opts: SoftmaxOptions = {}): Promise<Tensor> {
  const [rows, cols] = rowsCols("softmax", x);
  // The forward kernel leaves binding 2 unused; x fills it so the layout stays shared.
  return await run(gpu, "softmax", x, x, rows, cols, opts);
}

/**
 * Backward of {@linkcode softmax}: dx = y ⊙ (dy − rowsum(dy ⊙ y)) from the forward's output
 * `y` and the upstream gradient `dy` (same shape). `opts.out` may alias neither input.
 */
export async function softmaxBackward(
  gpu: Gpu,
  y: Tensor,
  dy: Tensor,
  opts: SoftmaxOptions = {},
): Promise<Tensor> {
  const [rows, cols] = rowsCols("softmaxBackward", y);
  if (dy.size !== y.size || dy.dtype !== "f32") {
    throw new Error(`softmaxBackward: dy ${dy.shape}/${dy.dtype} does not match y ${y.shape}`);
  }
  return await run(gpu, "softmax_backward", y, dy, rows, cols, opts);
}
