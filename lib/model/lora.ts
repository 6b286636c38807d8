/**
 * LoRA's layer, as PEFT computes it: y = x·W0ᵀ + s·dropout(x)·Aᵀ·Bᵀ (+ bias) with s = α/r (α/√r
 * with use_rslora), A kaiming-uniform(a=√5), i.e. U(−1/√in, 1/√in), B = 0. Dropout uses a
 * stateless hash mask (kernels/lora.wgsl), so the backward pass regenerates the forward's mask
 * instead of storing it.
 * @module
 */
import type { AdapterParam, BackwardPass, LinearAdapter } from "./adapter.ts";
import { AdapterBase, checkShape } from "./adapter.ts";
import type { Gpu, Tensor } from "../engine/gpu.ts";
import { toF32 } from "../ops/embedding.ts";
import { dropoutThreshold, hashDropout } from "../ops/lora.ts";
import { matmul } from "../ops/matmul.ts";
import type { Rng } from "../engine/rand.ts";

export { dropoutThreshold };

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

  #dropout(
    entry: "dropout" | "dropout_accumulate",
    src: Tensor,
    dst: Tensor,
    maskId: number,
  ): Promise<void> {
    const mask = { p: this.dropout, seed: this.seed, maskId };
    return hashDropout(this.gpu, src, dst, mask, entry === "dropout_accumulate");
  }

  /** dropout(x) as a new tensor, or x itself when dropout is off. */
  async #dropped(x: Tensor, maskId: number | null): Promise<Tensor> {
    if (maskId === null) return x;
    const xd = this.gpu.empty(x.shape);
    await this.#dropout("dropout", x, xd, maskId);
    return xd;
  }

  protected readonly label = "LoRA";

  /** y = x·W0ᵀ + s·(dropout(x)·Aᵀ)·Bᵀ. */
  protected async product(x: Tensor, w0: Tensor): Promise<Tensor> {
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
    return y;
  }

  /**
   * Accumulates dA, dB (with the latest forward's dropout mask) and returns dX unless needDx
   * is false: dB += s·dYᵀ·h, dA += dhᵀ·xd, dX = dY·W0 + mask ⊙ (dh·A), where xd = mask ⊙ x,
   * h = xd·Aᵀ and dh = s·dY·B.
   */
  protected async gradients({ n, x, w0, dy, opts }: BackwardPass): Promise<Tensor | null> {
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
