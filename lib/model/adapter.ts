/**
 * What every adapter layer is: the {@linkcode LinearAdapter} interface the model and trainer
 * use, and the parameter storage and checks HiRA and LoRA share (one layer base, as PEFT's).
 * @module
 */
import type { PeftType } from "./peft.ts";
import type { Gpu, Tensor } from "../engine/gpu.ts";
import { addBias } from "../ops/linear.ts";
import type { Rng } from "../engine/rand.ts";

/** One trainable tensor of an adapter, with its gradient accumulator. */
export interface AdapterParam {
  /** PEFT file key suffix: "hira_A", "hira_B", "lora_A.weight" or "lora_B.weight". */
  suffix: string;
  param: Tensor;
  grad: Tensor;
}

/** Options of {@linkcode LinearAdapter.backward}. */
export interface AdapterBackwardOptions {
  /** Destination of dX [N, in]; a new tensor when absent. */
  dx?: Tensor;
  /** Add into `dx` instead of overwriting it (several adapted layers share one input). */
  accumulateDx?: boolean;
  /** Compute dX at all (default true); false for the first layer of a frozen stack. */
  needDx?: boolean;
}

/** One checked {@linkcode LinearAdapter.backward} call: n tokens x [n, in], dy [n, out]. */
export interface BackwardPass {
  n: number;
  x: Tensor;
  w0: Tensor;
  dy: Tensor;
  opts: AdapterBackwardOptions;
}

/** A trainable adapter around a frozen linear layer W0 [out, in] (y = x·W0ᵀ + ...). */
export interface LinearAdapter {
  readonly peftType: PeftType;
  readonly r: number;
  /**
   * Where the adapter's dropout mask stream stands (the id the next training forward takes);
   * undefined for adapters without dropout. Checkpoints save it so a resumed run draws the same
   * masks, and activation checkpointing sets it back to recompute a forward.
   */
  dropoutCounter?: number;
  readonly inFeatures: number;
  readonly outFeatures: number;
  /**
   * Training mode (default true). Only LoRA dropout depends on it: off in eval mode, as
   * nn.Dropout.
   */
  training: boolean;
  /**
   * Trainable tensors under their PEFT file key suffixes: HiRA "hira_A", "hira_B";
   * LoRA "lora_A.weight", "lora_B.weight".
   */
  params(): AdapterParam[];
  /** y [N, out] for x [N, in] with the frozen weight w0 [out, in] and an optional bias [out]. */
  forward(x: Tensor, w0: Tensor, bias?: Tensor): Promise<Tensor>;
  /**
   * Accumulates dA/dB into the grads (zero them between steps) and returns dX [N, in] (or
   * writes/accumulates into opts.dx); null when opts.needDx is false.
   */
  backward(
    x: Tensor,
    w0: Tensor,
    dy: Tensor,
    opts?: AdapterBackwardOptions,
  ): Promise<Tensor | null>;
  /** W0 ⊙ (1 + B·A) (LoRA: W0 + (α/r)·B·A) as a new tensor [out, in]. */
  merged(w0: Tensor): Promise<Tensor>;
  /** Gives the parameter and gradient buffers back to the pool. */
  release(): void;
}

export function checkShape(what: string, t: Tensor, shape: readonly number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
    throw new Error(`${what}: expected [${shape}], got [${t.shape}]`);
  }
}

export function tokens(what: string, x: Tensor, features: number): number {
  if (x.shape.length !== 2 || x.shape[1] !== features) {
    throw new Error(`${what}: expected [N, ${features}], got [${x.shape}]`);
  }
  return x.shape[0];
}

export function initA(rng: Rng, r: number, inFeatures: number): Float32Array {
  // kaiming_uniform_(a=√5) on an [r, in] tensor: bound = √(2/(1+5))·√3/√in = 1/√in.
  const bound = 1 / Math.sqrt(inFeatures);
  const a = new Float32Array(r * inFeatures);
  for (let i = 0; i < a.length; i++) {
    // Redraw the (rare) values that f32 rounding would push past the bound.
    let v: number;
    do v = Math.fround(rng.uniform(-bound, bound)); while (Math.abs(v) > bound);
    a[i] = v;
  }
  return a;
}

/**
 * Parameter storage, checks and the bias shared by both adapter types: {@linkcode forward} and
 * {@linkcode backward} check the shapes and leave the adapter's own math to
 * {@linkcode product} and {@linkcode gradients}.
 */
export abstract class AdapterBase {
  /** The adapter's name in error messages ("HiRA", "LoRA"). */
  protected abstract readonly label: string;

  /** Training mode (LoRA dropout only). */
  training = true;
  /** A [r, in]. */
  readonly a: Tensor;
  /** B [out, r]. */
  readonly b: Tensor;
  /** dL/dA accumulator [r, in]. */
  readonly gradA: Tensor;
  /** dL/dB accumulator [out, r]. */
  readonly gradB: Tensor;

  constructor(
    readonly gpu: Gpu,
    readonly inFeatures: number,
    readonly outFeatures: number,
    readonly r: number,
    rng: Rng,
  ) {
    for (const [k, v] of [["inFeatures", inFeatures], ["outFeatures", outFeatures], ["r", r]]) {
      if (!Number.isInteger(v) || (v as number) < 1) {
        throw new Error(`adapter: ${k} must be a positive integer, got ${v}`);
      }
    }
    this.a = gpu.upload(initA(rng, r, inFeatures), [r, inFeatures]);
    this.b = gpu.zeros([outFeatures, r]);
    this.gradA = gpu.zeros([r, inFeatures]);
    this.gradB = gpu.zeros([outFeatures, r]);
  }

  /** y [N, out] for x [N, in] with the frozen weight w0 [out, in] (+ bias [out]). */
  async forward(x: Tensor, w0: Tensor, bias?: Tensor): Promise<Tensor> {
    this.check(x, w0, `${this.label} forward`);
    const y = await this.product(x, w0);
    if (bias) await addBias(this.gpu, y, bias);
    return y;
  }

  /** The adapted layer's y = x·W_adaptedᵀ (no bias) for checked shapes. */
  protected abstract product(x: Tensor, w0: Tensor): Promise<Tensor>;

  /** {@linkcode LinearAdapter.backward}: checks dY [N, out], then {@linkcode gradients}. */
  backward(
    x: Tensor,
    w0: Tensor,
    dy: Tensor,
    opts: AdapterBackwardOptions = {},
  ): Promise<Tensor | null> {
    const n = this.check(x, w0, `${this.label} backward`);
    checkShape(`${this.label} backward dy`, dy, [n, this.outFeatures]);
    return this.gradients({ n, x, w0, dy, opts });
  }

  /** Accumulates dA, dB and returns dX unless opts.needDx is false. */
  protected abstract gradients(pass: BackwardPass): Promise<Tensor | null>;

  protected check(x: Tensor, w0: Tensor, what: string): number {
    checkShape(`${what} w0`, w0, [this.outFeatures, this.inFeatures]);
    return tokens(`${what} x`, x, this.inFeatures);
  }

  protected dxTarget(n: number, opts: AdapterBackwardOptions): Tensor {
    if (opts.dx) checkShape("backward dx", opts.dx, [n, this.inFeatures]);
    return opts.dx ?? this.gpu.empty([n, this.inFeatures]);
  }

  /** Gives the parameter and gradient buffers back to the pool. */
  release(): void {
    for (const t of [this.a, this.b, this.gradA, this.gradB]) t.release();
  }
}
