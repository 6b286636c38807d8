/**
 * Token cross-entropy with an ignore mask, fused with its backward, and a sum reduction
 * (kernels/loss.wgsl).
 *
 * Large vocabularies: logits [N, V] must fit one storage binding (128 MiB by default, e.g.
 * 220 rows of a 152k vocabulary), so the caller chunks N: run the lm_head and this op on row
 * blocks, passing each block's targets (a `rows()` view or a fresh tensor), and sum the losses.
 * @module
 */
import type { BindingKind, Gpu, Tensor } from "../engine/gpu.ts";
import { grid, type KernelFile, kernelFile, uniformStruct } from "../engine/gpu.ts";
import { loopBudgetError, withinLoopBudget } from "../engine/gpu.ts";
import { rowWorkgroupSize } from "./norm.ts";

/** n rows (loss_sum: values) of v logits; scale multiplies dlogits. */
const PARAMS = uniformStruct("Params", ["n", "v", ["scale", "f32"]]);
/** kernels/loss.wgsl and its uniform struct (docs/kernels.md). */
export const LOSS_KERNELS: KernelFile = kernelFile("loss.wgsl", [PARAMS]);

/** Options for {@linkcode crossEntropy}. */
export interface CrossEntropyOptions {
  /** Also compute dlogits = scale·(softmax − onehot(target)) for counted rows, 0 for ignored. */
  backward?: boolean;
  /** Gradient scale, usually 1 / (number of counted targets) for a token-mean loss; default 1. */
  scale?: number;
  /** Where dlogits goes (backward only). Pass the logits tensor to overwrite it in place. */
  dlogits?: Tensor;
  /** Where the per-token losses go; a new [N] tensor by default. */
  loss?: Tensor;
  /**
   * Workgroup size (a power of two, 1..256). By default 256 on GPUs and 8 on CPU rasterizers;
   * tests force both.
   */
  workgroupSize?: number;
}

/** Result of {@linkcode crossEntropy}. */
export interface CrossEntropyResult {
  /** Per-token negative log-likelihood [N], 0 where the target is ignored. */
  loss: Tensor;
  /** The logits' gradient [N, V] when `backward` was asked for. */
  dlogits?: Tensor;
}

/**
 * Per-token cross-entropy of logits [N, V] against targets i32 [N]; a negative target (e.g.
 * −100) marks an ignored token, whose loss and gradient are 0. Targets ≥ V are treated as
 * ignored too, so validate them on the host. With `backward` the gradient of
 * scale·Σ loss is written in the same pass (logits are read twice at most).
 */
export async function crossEntropy(
  gpu: Gpu,
  logits: Tensor,
  targets: Tensor,
  opts: CrossEntropyOptions = {},
): Promise<CrossEntropyResult> {
  const n = targets.size;
  if (n === 0 || logits.size % n !== 0) {
    throw new Error(`crossEntropy: logits ${logits.shape} for ${n} targets`);
  }
  const v = logits.size / n;
  // Each invocation loops over V/WG logits twice: on llvmpipe, whose loop budget (Gpu.loopBudget)
  // a 256k vocabulary would outrun at the CPU's 8 lanes, the workgroup grows instead.
  let wg = rowWorkgroupSize(gpu, opts.workgroupSize);
  const fits = () => withinLoopBudget(2 * v / wg, gpu.loopBudget);
  while (opts.workgroupSize === undefined && wg < 256 && !fits()) wg *= 2;
  if (!fits()) {
    throw loopBudgetError(
      `crossEntropy over ${v} logits per row`,
      2 * v / wg,
      gpu.loopBudget,
      "leave workgroupSize to the default",
    );
  }
  const loss = opts.loss ?? gpu.empty([n]);
  if (loss.size !== n) throw new Error(`crossEntropy: loss ${loss.shape} for ${n} targets`);
  const params = PARAMS.pack({ n, v, scale: opts.scale ?? 1 });
  const kernel = (entry: string, bindings: readonly BindingKind[]) =>
    gpu.kernel(LOSS_KERNELS.spec(entry, bindings, { WG: wg }));
  if (!opts.backward) {
    const k = await kernel("ce_forward", ["uniform", "read", "read", "rw"]);
    gpu.dispatch(k, [params, logits, targets, loss], grid(n));
    return { loss };
  }
  const dlogits = opts.dlogits ?? gpu.empty(logits.shape);
  if (dlogits.size !== logits.size) {
    throw new Error(`crossEntropy: dlogits ${dlogits.shape} vs logits ${logits.shape}`);
  }
  if (dlogits.buffer === logits.buffer && dlogits.byteOffset === logits.byteOffset) {
    const k = await kernel("ce_fused_inplace", ["uniform", "rw", "read", "rw"]);
    gpu.dispatch(k, [params, logits, targets, loss], grid(n));
  } else {
    const k = await kernel("ce_fused", ["uniform", "read", "read", "rw", "rw"]);
    gpu.dispatch(k, [params, logits, targets, loss, dlogits], grid(n));
  }
  return { loss, dlogits };
}

/**
 * Σ loss over a vector [N] into a [1] tensor (one workgroup, fixed order, so deterministic), so
 * the host reads back one number. `out` receives the sum if given.
 */
export async function lossSum(
  gpu: Gpu,
  loss: Tensor,
  opts: { out?: Tensor; workgroupSize?: number } = {},
): Promise<Tensor> {
  const wg = rowWorkgroupSize(gpu, opts.workgroupSize);
  const k = await gpu.kernel(LOSS_KERNELS.spec("loss_sum", ["uniform", "read", "rw"], { WG: wg }));
  const out = opts.out ?? gpu.empty([1]);
  gpu.dispatch(k, [PARAMS.pack({ n: loss.size, v: 0, scale: 0 }), loss, out], [1]);
  return out;
}
