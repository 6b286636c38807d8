/**
 * HiRA and LoRA adapter layers behind one interface ({@linkcode LinearAdapter}), so the trainer
 * switches between them with `--peft_type`.
 *
 * HiRA follows the reference implementation exactly (docs/reference.md, The HiRA layer):
 * y = x·(W0 ⊙ (1 + B·A))ᵀ (+ bias), A [r, in] ~ U(−1/√in, 1/√in), B [out, r] = 0, no scaling
 * and no dropout. {@linkcode HiraAdapter.kernel} selects how: "fused" kernels that never write an
 * out × in matrix (lib/ops/hira.ts), "materialized" (the reference's order: W_eff = W0 ⊙ (1 + B·A)
 * and G = dYᵀ·X written out; the path the fused kernels are tested against), or "peft" (PEFT's
 * y = x·W0ᵀ + x·(W0 ⊙ B·A)ᵀ with its autograd backward; a benchmark baseline).
 *
 * LoRA follows PEFT: y = x·W0ᵀ + (α/r)·dropout(x)·Aᵀ·Bᵀ (+ bias), A kaiming-uniform(a=√5), i.e.
 * U(−1/√in, 1/√in), B = 0. Dropout uses a stateless hash mask (kernels/lora.wgsl), so the
 * backward pass regenerates the forward's mask instead of storing it.
 * @module
 */
import type { PeftType } from "./peft.ts";
import { addBias } from "../ops/linear.ts";
import { cdiv, type Gpu, grid, type KernelSpec, type Tensor } from "../engine/gpu.ts";
import { toF32 } from "../ops/embedding.ts";
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

/** Options of {@linkcode createAdapter}. */
export interface AdapterOptions {
  inFeatures: number;
  outFeatures: number;
  /** Rank. */
  r: number;
  /** Draws A's init (r·in uniforms, row-major), and the dropout seed when `seed` is absent. */
  rng: Rng;
  /** LoRA α (scale α/r); PEFT's default 8. Ignored by HiRA, whose reference never scales. */
  loraAlpha?: number;
  /** LoRA's scale when it is not α/r (rsLoRA: α/√r); from {@linkcode loraScale}. */
  loraScale?: number;
  /** LoRA dropout probability in [0, 1); default 0. Ignored by HiRA (dead in the reference). */
  loraDropout?: number;
  /** LoRA dropout mask seed (u32); drawn from `rng` after A's init when absent and p > 0. */
  seed?: number;
  /** HiRA only: how the layer is computed (see {@linkcode HiraKernel}); "auto" by default. */
  hiraKernel?: HiraKernel;
  /** HiRA only: the fused kernel family ("auto": by adapter). */
  hiraVariant?: HiraVariant;
}

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

const LORA_DROPOUT = (entry: string): KernelSpec => ({
  file: "lora.wgsl",
  entry,
  bindings: ["uniform", "read", "rw"],
});

/**
 * The u32 keep threshold of LoRA dropout with probability p: an element is kept iff its hash
 * is >= p·2^32 (so it is kept with probability 1 − p).
 */
export function dropoutThreshold(p: number): number {
  if (!(p >= 0 && p < 1)) throw new Error(`dropout probability ${p} must be in [0, 1)`);
  return Math.min(0xffffffff, Math.round(p * 4294967296));
}

function checkShape(what: string, t: Tensor, shape: readonly number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
    throw new Error(`${what}: expected [${shape}], got [${t.shape}]`);
  }
}

function tokens(what: string, x: Tensor, features: number): number {
  if (x.shape.length !== 2 || x.shape[1] !== features) {
    throw new Error(`${what}: expected [N, ${features}], got [${x.shape}]`);
  }
  return x.shape[0];
}

function initA(rng: Rng, r: number, inFeatures: number): Float32Array {
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

/** Parameter storage and checks shared by both adapter types. */
abstract class AdapterBase {
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

  /** y = x·W_effᵀ (+ bias). */
  async forward(x: Tensor, w0: Tensor, bias?: Tensor): Promise<Tensor> {
    this.check(x, w0, "HiRA forward");
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
    if (bias) await addBias(gpu, y, bias);
    return y;
  }

  /** Accumulates dA, dB into the gradients; returns dX unless needDx is false. */
  async backward(
    x: Tensor,
    w0: Tensor,
    dy: Tensor,
    opts: AdapterBackwardOptions = {},
  ): Promise<Tensor | null> {
    const n = this.check(x, w0, "HiRA backward");
    checkShape("HiRA backward dy", dy, [n, this.outFeatures]);
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

/**
 * LoRA: y = x·W0ᵀ + s·dropout(x)·Aᵀ·Bᵀ (+ bias) with s = α/r. Dropout masks are keyed by
 * (seed, mask id): each training-mode forward takes the id {@linkcode dropoutCounter} and
 * increments it, and backward regenerates the mask of the latest forward. To recompute a
 * forward (activation checkpointing), set `dropoutCounter` back to the id it used.
 */
export class LoraAdapter extends AdapterBase implements LinearAdapter {
  readonly peftType = "LORA" as const;
  /** α/r (α/√r under use_rslora): the factor on B·A. */
  readonly scale: number;
  /** Next dropout mask id; save it with the checkpoint to resume the same mask stream. */
  dropoutCounter = 0;
  #lastMask: number | null = null;

  /** α (PEFT's lora_alpha). */
  readonly alpha: number;
  /** Dropout probability on the adapter branch's input. */
  readonly dropout: number;
  /** Dropout mask seed (u32). */
  readonly seed: number;

  /**
   * Creates A ~ U(−1/√in, 1/√in) from `rng` and B = 0; α defaults to 8 (PEFT), the scale to
   * α/r (pass `scale` for rsLoRA's α/√r), dropout to 0, and the mask seed to a u32 drawn from
   * `rng` after A (only when dropout > 0).
   */
  constructor(
    gpu: Gpu,
    inFeatures: number,
    outFeatures: number,
    r: number,
    rng: Rng,
    opts: { alpha?: number; dropout?: number; seed?: number; scale?: number } = {},
  ) {
    super(gpu, inFeatures, outFeatures, r, rng);
    this.alpha = opts.alpha ?? 8;
    this.dropout = opts.dropout ?? 0;
    dropoutThreshold(this.dropout); // validates 0 <= p < 1
    this.scale = opts.scale ?? this.alpha / r;
    this.seed = (opts.seed ?? (this.dropout > 0 ? rng.nextU32() : 0)) >>> 0;
  }

  /** lora_A.weight [r, in] and lora_B.weight [out, r] with their gradients. */
  params(): AdapterParam[] {
    return [
      { suffix: "lora_A.weight", param: this.a, grad: this.gradA },
      { suffix: "lora_B.weight", param: this.b, grad: this.gradB },
    ];
  }

  /** The mask id the latest training-mode forward used (null: none yet, or no dropout). */
  get lastMaskId(): number | null {
    return this.#lastMask;
  }

  #dropoutOn(): boolean {
    return this.dropout > 0 && this.training;
  }

  async #dropout(
    entry: "dropout" | "dropout_accumulate",
    src: Tensor,
    dst: Tensor,
    maskId: number,
  ): Promise<void> {
    const k = await this.gpu.kernel(LORA_DROPOUT(entry));
    this.gpu.dispatch(k, [
      [src.size, this.seed, maskId >>> 0, dropoutThreshold(this.dropout), {
        f32: 1 / (1 - this.dropout),
      }],
      src,
      dst,
    ], grid(cdiv(src.size, 256)));
  }

  /** dropout(x) as a new tensor, or x itself when dropout is off. */
  async #dropped(x: Tensor, maskId: number | null): Promise<Tensor> {
    if (maskId === null) return x;
    const xd = this.gpu.empty(x.shape);
    await this.#dropout("dropout", x, xd, maskId);
    return xd;
  }

  /** y = x·W0ᵀ + s·(dropout(x)·Aᵀ)·Bᵀ (+ bias). */
  async forward(x: Tensor, w0: Tensor, bias?: Tensor): Promise<Tensor> {
    this.check(x, w0, "LoRA forward");
    const gpu = this.gpu;
    let maskId: number | null = null;
    if (this.#dropoutOn()) {
      maskId = this.dropoutCounter;
      this.dropoutCounter = (this.dropoutCounter + 1) >>> 0;
      this.#lastMask = maskId;
    }
    const y = await matmul(gpu, x, w0, { transB: true });
    const xd = await this.#dropped(x, maskId);
    const h = await matmul(gpu, xd, this.a, { transB: true });
    if (xd !== x) xd.release();
    await matmul(gpu, h, this.b, { transB: true, out: y, accumulate: true, alpha: this.scale });
    h.release();
    if (bias) await addBias(gpu, y, bias);
    return y;
  }

  /**
   * Accumulates dA, dB (with the latest forward's dropout mask) and returns dX unless needDx
   * is false: dB += s·dYᵀ·h, dA += dhᵀ·xd, dX = dY·W0 + mask ⊙ (dh·A), where xd = mask ⊙ x,
   * h = xd·Aᵀ and dh = s·dY·B.
   */
  async backward(
    x: Tensor,
    w0: Tensor,
    dy: Tensor,
    opts: AdapterBackwardOptions = {},
  ): Promise<Tensor | null> {
    const n = this.check(x, w0, "LoRA backward");
    checkShape("LoRA backward dy", dy, [n, this.outFeatures]);
    const gpu = this.gpu;
    let maskId: number | null = null;
    if (this.#dropoutOn()) {
      if (this.#lastMask === null) throw new Error("LoRA backward: no forward recorded a mask");
      maskId = this.#lastMask;
    }
    const xd = await this.#dropped(x, maskId);
    const h = await matmul(gpu, xd, this.a, { transB: true });
    await matmul(gpu, dy, h, {
      transA: true,
      out: this.gradB,
      accumulate: true,
      alpha: this.scale,
    });
    h.release();
    const dh = await matmul(gpu, dy, this.b, { alpha: this.scale });
    await matmul(gpu, dh, xd, { transA: true, out: this.gradA, accumulate: true });
    if (xd !== x) xd.release();
    if (opts.needDx === false) {
      dh.release();
      return null;
    }
    const dx = this.dxTarget(n, opts);
    await matmul(gpu, dy, w0, { out: dx, accumulate: opts.accumulateDx ?? false });
    if (maskId === null) {
      await matmul(gpu, dh, this.a, { out: dx, accumulate: true });
    } else {
      const dxd = await matmul(gpu, dh, this.a);
      await this.#dropout("dropout_accumulate", dxd, dx, maskId);
      dxd.release();
    }
    dh.release();
    return dx;
  }

  /** W0 + s·B·A as a new tensor. */
  async merged(w0: Tensor): Promise<Tensor> {
    checkShape("LoRA merged w0", w0, [this.outFeatures, this.inFeatures]);
    // A frozen f16 weight is widened first: the merged weight is f32 like every trained one.
    const w = await toF32(this.gpu, w0);
    await matmul(this.gpu, this.b, this.a, { out: w, accumulate: true, alpha: this.scale });
    return w;
  }

  /**
   * Test hook: the dropout multipliers (0 or 1/(1-p)) for an activation of `rows` tokens under
   * mask `maskId` (default: the latest forward's), computed by the GPU kernel itself.
   */
  async dropoutMask(rows: number, maskId: number = this.#lastMask ?? 0): Promise<Float32Array> {
    const ones = this.gpu.upload(new Float32Array(rows * this.inFeatures).fill(1), [
      rows,
      this.inFeatures,
    ]);
    const out = this.gpu.empty(ones.shape);
    await this.#dropout("dropout", ones, out, maskId);
    const r = await this.gpu.read(out);
    ones.release();
    out.release();
    return r;
  }
}

/** Creates a HiRA or LoRA adapter for a linear layer [out, in] (A random from opts.rng, B = 0). */
export function createAdapter(gpu: Gpu, type: PeftType, opts: AdapterOptions): LinearAdapter {
  const { inFeatures, outFeatures, r, rng } = opts;
  if (type === "HIRA") {
    return new HiraAdapter(gpu, inFeatures, outFeatures, r, rng, {
      kernel: opts.hiraKernel,
      variant: opts.hiraVariant,
    });
  }
  if (type === "LORA") {
    return new LoraAdapter(gpu, inFeatures, outFeatures, r, rng, {
      alpha: opts.loraAlpha,
      dropout: opts.loraDropout,
      seed: opts.seed,
      scale: opts.loraScale,
    });
  }
  throw new Error(`unknown peft type ${type}`);
}
