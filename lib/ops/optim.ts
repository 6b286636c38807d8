/**
 * Optimizer on the GPU (kernels/optim.wgsl): AdamW with torch.optim.AdamW semantics, the global
 * gradient norm and clip_grad_norm_-style clipping, all without a readback. The norm lands in a
 * 1-element tensor that the host reads later together with the loss; the clip scale lands in
 * another that the AdamW kernel reads directly.
 * @module
 */
import type { Gpu, KernelFile, Tensor } from "../engine/gpu.ts";
import { cdiv, grid, kernelFile, uniformStruct } from "../engine/gpu.ts";

/** Elements reduced by one workgroup of the sum-of-squares kernel (256 threads × 16). */
export const NORM_CHUNK = 256 * 16;

/** adamw: n elements and the step's host-side scalars (kernels/optim.wgsl says which). */
const ADAM_PARAMS = uniformStruct("AdamParams", [
  "n",
  ["beta2", "f32"],
  ["one_minus_beta1", "f32"],
  ["one_minus_beta2", "f32"],
  ["eps", "f32"],
  ["decay", "f32"],
  ["step_size", "f32"],
  ["bc2_sqrt", "f32"],
]);
/** sumsq: n elements, their first partial sum at `base`. */
const SUMSQ_PARAMS = uniformStruct("SumSqParams", ["n", "base"]);
/** norm_finish: `count` partial sums; clip = 1 clips to max_norm. */
const FINISH_PARAMS = uniformStruct("FinishParams", ["count", "clip", ["max_norm", "f32"]]);
/** kernels/optim.wgsl and its uniform structs (docs/kernels.md). */
export const OPTIM_KERNELS: KernelFile = kernelFile("optim.wgsl", [
  ADAM_PARAMS,
  SUMSQ_PARAMS,
  FINISH_PARAMS,
]);

const ADAMW = OPTIM_KERNELS.spec("adamw", ["uniform", "rw", "read", "rw", "rw", "read"]);
const SUMSQ = OPTIM_KERNELS.spec("sumsq", ["uniform", "read", "rw"]);
const FINISH = OPTIM_KERNELS.spec("norm_finish", ["uniform", "read", "rw", "rw"]);

/** The outputs of {@linkcode gradNorm}: two 1-element f32 tensors. */
export interface GradNormResult {
  /** sqrt(Σ g²) over every gradient. */
  norm: Tensor;
  /** min(1, maxNorm / (norm + 1e-6)), or 1 when no maxNorm was given. */
  clipScale: Tensor;
}

/**
 * Records the global L2 norm of a list of gradient tensors and the clip scale of
 * torch.nn.utils.clip_grad_norm_ (coef = maxNorm / (norm + 1e-6), clamped to 1). Nothing is
 * read back and the gradients are not modified: pass `clipScale` to the consumer (AdamW
 * multiplies each gradient by it). Writes into `out` when given, else into new tensors.
 */
export async function gradNorm(
  gpu: Gpu,
  grads: readonly Tensor[],
  maxNorm?: number,
  out?: GradNormResult,
): Promise<GradNormResult> {
  if (maxNorm !== undefined && !(maxNorm > 0)) throw new Error(`gradNorm: maxNorm ${maxNorm}`);
  const [kSum, kFinish] = await Promise.all([gpu.kernel(SUMSQ), gpu.kernel(FINISH)]);
  const counts = grads.map((g) => cdiv(g.size, NORM_CHUNK));
  const total = counts.reduce((a, b) => a + b, 0);
  const partials = gpu.empty([Math.max(1, total)]);
  let base = 0;
  grads.forEach((g, i) => {
    if (g.dtype !== "f32") throw new Error(`gradNorm: gradient ${i} is ${g.dtype}, not f32`);
    gpu.dispatch(kSum, [SUMSQ_PARAMS.pack({ n: g.size, base }), g, partials], grid(counts[i]));
    base += counts[i];
  });
  const result = out ?? { norm: gpu.empty([1]), clipScale: gpu.empty([1]) };
  gpu.dispatch(kFinish, [
    FINISH_PARAMS.pack({
      count: total,
      clip: maxNorm === undefined ? 0 : 1,
      max_norm: maxNorm ?? 0,
    }),
    partials,
    result.norm,
    result.clipScale,
  ], [1]);
  // Safe to recycle now: any later user of this buffer is recorded after the finish kernel.
  partials.release();
  return result;
}

/** Records a zero fill of every gradient tensor (before accumulating the next step). */
export function zeroGrads(gpu: Gpu, grads: readonly Tensor[]): void {
  for (const g of grads) gpu.clear(g);
}

/** One trainable tensor handed to {@linkcode AdamW}. */
export interface AdamWParam {
  /** Key used in checkpoints. */
  name: string;
  param: Tensor;
  grad: Tensor;
  /** Whether decoupled weight decay applies (HF: every weight except biases and norms). */
  decay: boolean;
}

/** AdamW hyper-parameters (torch / HF Trainer defaults). */
export interface AdamWOptions {
  /** Default learning rate when {@linkcode AdamW.step} gets none. */
  lr: number;
  /** 0.9 by default. */
  beta1?: number;
  /** 0.999 by default. */
  beta2?: number;
  /** 1e-8 by default. */
  eps?: number;
  /** 0.01 by default. */
  weightDecay?: number;
}

/** The moments of one parameter, for checkpoints. */
export interface AdamWMoments<T = Tensor> {
  name: string;
  /** First moment (torch's exp_avg). */
  expAvg: T;
  /** Second moment (torch's exp_avg_sq). */
  expAvgSq: T;
}

/** Optimizer state: the number of steps taken and every parameter's moments. */
export interface AdamWState<T = Tensor> {
  step: number;
  moments: AdamWMoments<T>[];
}

/** What {@linkcode AdamW.step} records; both tensors are owned by the optimizer. */
export interface AdamWStepResult {
  /** Global gradient norm before clipping, [1]. Valid until the next step. */
  gradNorm: Tensor;
  /** The factor the gradients were multiplied by, [1]. */
  clipScale: Tensor;
}

/**
 * AdamW exactly as torch.optim.AdamW (amsgrad off, maximize off): decoupled weight decay
 * p ← p·(1 − lr·wd), then Adam with bias correction. One dispatch per parameter tensor plus the
 * gradient-norm kernels; moments are f32 on the GPU.
 */
export class AdamW {
  readonly lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  readonly params: readonly AdamWParam[];
  #moments: AdamWMoments[];
  #t = 0;
  #result: GradNormResult;

  constructor(readonly gpu: Gpu, params: readonly AdamWParam[], opts: AdamWOptions) {
    this.lr = opts.lr;
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
    const names = new Set<string>();
    for (const p of params) {
      if (p.param.size !== p.grad.size) {
        throw new Error(`AdamW: ${p.name}: param ${p.param.shape} and grad ${p.grad.shape} differ`);
      }
      if (p.param.dtype !== "f32" || p.grad.dtype !== "f32") {
        throw new Error(`AdamW: ${p.name}: parameters and gradients must be f32`);
      }
      if (names.has(p.name)) throw new Error(`AdamW: duplicate parameter name ${p.name}`);
      names.add(p.name);
    }
    this.params = [...params];
    this.#moments = params.map((p) => ({
      name: p.name,
      expAvg: gpu.zeros(p.param.shape),
      expAvgSq: gpu.zeros(p.param.shape),
    }));
    this.#result = { norm: gpu.empty([1]), clipScale: gpu.empty([1]) };
  }

  /** Steps taken so far (torch's `step` state). */
  get stepCount(): number {
    return this.#t;
  }

  /**
   * Records one update of every parameter: gradient norm (always, for logging), optional
   * clipping to `clip.maxNorm`, then AdamW with learning rate `lr`. Gradients are left as they
   * are (scaled only inside the kernel); zero them before the next accumulation.
   */
  async step(lr: number = this.lr, clip?: { maxNorm: number }): Promise<AdamWStepResult> {
    const [k] = await Promise.all([
      this.gpu.kernel(ADAMW),
      gradNorm(this.gpu, this.params.map((p) => p.grad), clip?.maxNorm, this.#result),
    ]);
    this.#t++;
    const t = this.#t;
    const stepSize = lr / (1 - this.beta1 ** t);
    const bc2Sqrt = Math.sqrt(1 - this.beta2 ** t);
    this.params.forEach((p, i) => {
      const m = this.#moments[i];
      const decay = p.decay ? 1 - lr * this.weightDecay : 1;
      this.gpu.dispatch(k, [
        ADAM_PARAMS.pack({
          n: p.param.size,
          beta2: this.beta2,
          one_minus_beta1: 1 - this.beta1,
          one_minus_beta2: 1 - this.beta2,
          eps: this.eps,
          decay,
          step_size: stepSize,
          bc2_sqrt: bc2Sqrt,
        }),
        p.param,
        p.grad,
        m.expAvg,
        m.expAvgSq,
        this.#result.clipScale,
      ], grid(cdiv(p.param.size, 256)));
    });
    return { gradNorm: this.#result.norm, clipScale: this.#result.clipScale };
  }

  /** The live state (GPU tensors owned by the optimizer; read them for a checkpoint). */
  state(): AdamWState {
    return { step: this.#t, moments: this.#moments.map((m) => ({ ...m })) };
  }

  /** Reads the state back to the host (one round trip). */
  async readState(): Promise<AdamWState<Float32Array>> {
    const flat = this.#moments.flatMap((m) => [m.expAvg, m.expAvgSq]);
    const data = await this.gpu.readMany(flat);
    return {
      step: this.#t,
      moments: this.#moments.map((m, i) => ({
        name: m.name,
        expAvg: data[2 * i] as Float32Array,
        expAvgSq: data[2 * i + 1] as Float32Array,
      })),
    };
  }

  /**
   * Restores a state saved by {@linkcode state} / {@linkcode readState}. Every parameter must
   * be present under its name with the right size.
   */
  load(state: AdamWState<Tensor | Float32Array>): void {
    const byName = new Map(state.moments.map((m) => [m.name, m]));
    for (const m of this.#moments) {
      const s = byName.get(m.name);
      if (!s) throw new Error(`AdamW.load: no state for ${m.name}`);
      for (const [src, dst] of [[s.expAvg, m.expAvg], [s.expAvgSq, m.expAvgSq]] as const) {
        if ((src instanceof Float32Array ? src.length : src.size) !== dst.size) {
          throw new Error(`AdamW.load: ${m.name}: size mismatch`);
        }
      }
    }
    for (const m of this.#moments) {
      const s = byName.get(m.name)!;
      for (const [src, dst] of [[s.expAvg, m.expAvg], [s.expAvgSq, m.expAvgSq]] as const) {
        if (src instanceof Float32Array) this.gpu.write(dst, src);
        else if (src !== dst) this.gpu.copy(src, dst);
      }
    }
    this.#t = state.step;
  }

  /** Gives the moment and result buffers back to the pool. */
  release(): void {
    for (const m of this.#moments) {
      m.expAvg.release();
      m.expAvgSq.release();
    }
    this.#result.norm.release();
    this.#result.clipScale.release();
  }
}
