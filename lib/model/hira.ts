/**
 * HiRA's layer, as the reference and PEFT's HiraConfig compute it (docs/reference.md, The HiRA
 * layer): y = x·(W0 ⊙ (1 + B·A))ᵀ (+ bias), A [r, in] ~ U(−1/√in, 1/√in), B [out, r] = 0, no
 * scaling and no dropout. {@linkcode HiraAdapter.kernel} selects how: "fused" kernels that never
 * write an out × in matrix (lib/ops/hira.ts), "materialized" (the reference's order: W_eff =
 * W0 ⊙ (1 + B·A) and G = dYᵀ·X written out; the path the fused kernels are tested against), or
 * "peft" (PEFT's y = x·W0ᵀ + x·(W0 ⊙ B·A)ᵀ with its autograd backward; a benchmark baseline).
 * @module
 */
import type { AdapterParam, BackwardPass, LinearAdapter } from "./adapter.ts";
import { AdapterBase, checkShape } from "./adapter.ts";
import type { Gpu, Tensor } from "../engine/gpu.ts";
import { matmul } from "../ops/matmul.ts";
import {
  cpuFusedMaxTokens,
  hiraDeltaWeight,
  hiraEffectiveWeight,
  hiraForwardFused,
  hiraFusedFits,
  hiraInputGradFused,
  type HiraVariant,
  hiraWeightGradsFused,
  mulByWeight,
  unmergeHira,
} from "../ops/hira.ts";
import type { Rng } from "../engine/rand.ts";

export { hiraEffectiveWeight, unmergeHira };

/**
 * How {@linkcode HiraAdapter} computes its layer:
 * - "fused": lib/ops/hira.ts kernels; no out × in matrix is written (forward, dX, dA/dB);
 * - "materialized": W_eff = W0 ⊙ (1 + B·A) and M = W0 ⊙ (dYᵀ·X) written out, then matmuls (the
 *   reference's order of operations);
 * - "peft": PEFT's formulation, y = x·W0ᵀ + x·Dᵀ with D = W0 ⊙ (B·A) materialised, backward as
 *   its autograd does it (dX = dY·W0 + dY·D, dD = dYᵀ·X); a benchmark baseline;
 * - "auto": "fused" on GPUs; on CPU rasterizers a "fused" forward for short batches (decoding,
 *   short prompts) and "materialized" otherwise, and a "materialized" backward, which measured
 *   faster there (see {@linkcode HiraAdapter.kernelFor}).
 */
export type HiraKernel = "auto" | "fused" | "materialized" | "peft";

/** A {@linkcode HiraKernel} other than "auto". */
export type HiraKernelResolved = Exclude<HiraKernel, "auto">;

/**
 * What "auto" runs for a training step's backward, which sizes its memory: the fused kernels on
 * GPUs, the materialising path on CPU rasterizers (measured faster there at every length). The
 * one statement of the choice: {@linkcode HiraAdapter.kernelFor} and the memory estimates (train
 * and --dry_run) use it.
 */
export function hiraTrainingKernel(isCpuAdapter: boolean): "fused" | "materialized" {
  return isCpuAdapter ? "materialized" : "fused";
}

/**
 * HiRA: y = x·(W0 ⊙ (1 + B·A))ᵀ (+ bias). Backward with G = dYᵀ·X and M = W0 ⊙ G:
 * dB += M·Aᵀ, dA += Bᵀ·M, dX = dY·(W0 ⊙ (1 + B·A)). {@linkcode kernel} picks the kernels.
 */
export class HiraAdapter extends AdapterBase implements LinearAdapter {
  readonly peftType = "HIRA" as const;
  /** How the layer is computed; may be changed between calls. */
  kernel: HiraKernel;
  /** Fused kernel family ("auto": by adapter); may be changed between calls. */
  variant: HiraVariant;

  /** Creates A ~ U(−1/√in, 1/√in) from `rng` and B = 0. */
  constructor(
    gpu: Gpu,
    inFeatures: number,
    outFeatures: number,
    r: number,
    rng: Rng,
    opts: { kernel?: HiraKernel; variant?: HiraVariant } = {},
  ) {
    super(gpu, inFeatures, outFeatures, r, rng);
    this.kernel = opts.kernel ?? "auto";
    this.variant = opts.variant ?? "auto";
  }

  /**
   * The kernel {@linkcode kernel} resolves to on this GPU for a forward or backward call on
   * `tokens` tokens. "auto" is "fused" on GPUs. On a CPU rasterizer the forward is fused up to
   * 128 tokens on llvmpipe (16 on other CPU adapters: {@linkcode cpuFusedMaxTokens}: decoding,
   * prompts, short batches), where it measured on par with materialising on lavapipe (r = 32,
   * in 512, out 1376, 64 tokens: 8.2 vs 8.4 ms) and writes no out × in matrix, and materialised
   * above that, where materialising is ~10–15% faster (the fused product forms its factor once
   * per 512-row segment and round-trips the output once per 64 k; materialising forms W_eff once
   * per call). The backward materialises at every length on a CPU rasterizer: since narrow
   * matmuls run transposed, dA/dB through dYᵀ·X and two rank-r products beat the fused gradient
   * kernel at 8 to 1,024 tokens (64 tokens: dA/dB 10.3 vs 13.1 ms, dX 9.6 vs 10.1). A fused
   * call whose loops would run past llvmpipe's loop budget ({@linkcode hiraFusedFits}: e.g. a
   * 14336-wide input) materialises instead.
   */
  kernelFor(tokens: number, pass: "forward" | "backward" = "forward"): HiraKernelResolved {
    if (this.kernel === "auto") {
      if (!this.gpu.isCpuAdapter || pass === "backward") {
        return hiraTrainingKernel(this.gpu.isCpuAdapter);
      }
      const short = tokens <= cpuFusedMaxTokens(this.gpu.description);
      return short &&
          hiraFusedFits(
            this.gpu,
            tokens,
            this.outFeatures,
            this.inFeatures,
            this.r,
            this.variant,
          )
        ? "fused"
        : "materialized";
    }
    if (!["fused", "materialized", "peft"].includes(this.kernel)) {
      throw new Error(`HiRA: unknown kernel ${this.kernel}`);
    }
    return this.kernel;
  }

  /** hira_A [r, in] and hira_B [out, r] with their gradients. */
  params(): AdapterParam[] {
    return [
      { suffix: "hira_A", param: this.a, grad: this.gradA },
      { suffix: "hira_B", param: this.b, grad: this.gradB },
    ];
  }

  protected readonly label = "HiRA";

  /** y = x·W_effᵀ. */
  protected async product(x: Tensor, w0: Tensor): Promise<Tensor> {
    const gpu = this.gpu;
    let y: Tensor;
    const kernel = this.kernelFor(x.shape[0]);
    if (kernel === "fused") {
      y = await hiraForwardFused(gpu, x, w0, this.a, this.b, { variant: this.variant });
    } else if (kernel === "materialized") {
      const w = await hiraEffectiveWeight(gpu, w0, this.a, this.b);
      y = await matmul(gpu, x, w, { transB: true });
      w.release();
    } else {
      y = await matmul(gpu, x, w0, { transB: true });
      const d = await hiraDeltaWeight(gpu, w0, this.a, this.b);
      await matmul(gpu, x, d, { transB: true, out: y, accumulate: true });
      d.release();
    }
    return y;
  }

  /** Accumulates dA, dB into the gradients; returns dX unless needDx is false. */
  protected async gradients({ n, x, w0, dy, opts }: BackwardPass): Promise<Tensor | null> {
    const gpu = this.gpu;
    const kernel = this.kernelFor(n, "backward");
    const accumulate = opts.accumulateDx ?? false;
    if (kernel === "fused") {
      await hiraWeightGradsFused(gpu, x, dy, w0, this.a, this.b, this.gradA, this.gradB, {
        variant: this.variant,
      });
      if (opts.needDx === false) return null;
      const dx = this.dxTarget(n, opts);
      await hiraInputGradFused(gpu, dy, w0, this.a, this.b, {
        out: dx,
        accumulate,
        variant: this.variant,
      });
      return dx;
    }
    // G = dYᵀ·X [out, in] (PEFT: the delta weight's gradient), then M = W0 ⊙ G in place.
    const m = await matmul(gpu, dy, x, { transA: true });
    await mulByWeight(gpu, m, w0);
    await matmul(gpu, m, this.a, { transB: true, out: this.gradB, accumulate: true });
    await matmul(gpu, this.b, m, { transA: true, out: this.gradA, accumulate: true });
    m.release();
    if (opts.needDx === false) return null;
    const dx = this.dxTarget(n, opts);
    if (kernel === "materialized") {
      const w = await hiraEffectiveWeight(gpu, w0, this.a, this.b);
      await matmul(gpu, dy, w, { out: dx, accumulate });
      w.release();
    } else {
      // PEFT: the base layer's dY·W0 plus the delta branch's dY·D.
      await matmul(gpu, dy, w0, { out: dx, accumulate });
      const d = await hiraDeltaWeight(gpu, w0, this.a, this.b);
      await matmul(gpu, dy, d, { out: dx, accumulate: true });
      d.release();
    }
    return dx;
  }

  /** W0 ⊙ (1 + B·A) as a new tensor. */
  merged(w0: Tensor): Promise<Tensor> {
    checkShape("HiRA merged w0", w0, [this.outFeatures, this.inFeatures]);
    return hiraEffectiveWeight(this.gpu, w0, this.a, this.b);
  }
}
