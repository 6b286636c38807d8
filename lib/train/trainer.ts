/**
 * The reference's training recipe on a {@linkcode LlamaModel}: AdamW (0.9, 0.999, 1e-8, decoupled
 * weight decay), linear warmup then linear decay to 0, gradient clipping at 1.0, gradient
 * accumulation with HF's loss semantics (each micro-batch's token-mean loss divided by the
 * accumulation count), and teacher-forced validation loss. One readback per optimizer step.
 * @module
 */
import { DeviceLostError, type Tensor } from "../engine/gpu.ts";
import type { Batch, LlamaModel } from "../model/model.ts";
import { AdamW, zeroGrads } from "../ops/optim.ts";
import { globalIndex, type Ranks, rankShare } from "./ranks.ts";
import { linearWarmupDecay } from "./schedule.ts";

/** Hyper-parameters of a run. */
export interface TrainerOptions {
  lr: number;
  warmup: number;
  weightDecay: number;
  gradAcc: number;
  /** Clip the global gradient norm to this (HF default 1.0); 0 disables clipping. */
  maxGradNorm: number;
  totalSteps: number;
  /**
   * Data-parallel ranks (lib/train/ranks.ts): each step's micro-batches are shared out, the
   * gradients summed with one all-reduce before clipping, the loss and validation reduced.
   */
  ranks?: Ranks;
}

/** What one optimizer step reports. */
export interface StepReport {
  step: number;
  loss: number;
  gradNorm: number;
  lr: number;
  tokens: number;
  targets: number;
}

/** Where a stopped run stands, for the messages of {@linkcode NonFiniteError}. */
export interface StopContext {
  /** The last checkpoint written before the failure; null when none was. */
  lastCheckpoint?: string | null;
  /** The run's peak learning rate (named in the advice). */
  lr?: number;
}

function stopTail(ctx: StopContext): string {
  const kept = ctx.lastCheckpoint === undefined
    ? "the last good checkpoint is kept"
    : ctx.lastCheckpoint === null
    ? "no checkpoint had been saved yet"
    : `the last good checkpoint is ${ctx.lastCheckpoint}`;
  return `the run stopped and ${kept}`;
}

/**
 * A NaN or Inf loss, gradient norm or validation loss, with the step it appeared at: the run
 * stops before anything of that step is saved.
 */
export class NonFiniteError extends Error {
  /**
   * @param step the optimizer step (1-based) whose loss or gradient was not finite
   * @param what what was not finite ("the training loss", "the gradient norm", ...)
   * @param ctx the last checkpoint and learning rate, when the caller knows them
   */
  constructor(readonly step: number, readonly what: string, readonly ctx: StopContext = {}) {
    super(
      `${what} is not finite at step ${step}; ${stopTail(ctx)}. Try a lower learning rate ` +
        `(--lr${ctx.lr !== undefined ? `, now ${ctx.lr}` : ""}) or stronger clipping.`,
    );
    this.name = "NonFiniteError";
  }
}

/** The GPU device was lost during a step: reported like {@linkcode NonFiniteError}, by step. */
export class DeviceLostAtStepError extends Error {
  /**
   * @param step the optimizer step (1-based) that was running
   * @param reason the loss as the GPU reported it ({@linkcode DeviceLostError}'s message)
   * @param ctx the last checkpoint, when the caller knows it
   */
  constructor(
    readonly step: number,
    readonly reason: string,
    readonly ctx: StopContext = {},
    options?: ErrorOptions,
  ) {
    super(
      `${reason} at step ${step}; ${stopTail(ctx)}. Resume with --resume=RUN_DIR once the GPU ` +
        `is back (a lost device is often out of GPU memory: try a smaller --batch or ` +
        `--enable_grad_ckpt).`,
      options,
    );
    this.name = "DeviceLostError";
  }
}

/** Drives optimizer steps over micro-batches. */
export class Trainer {
  readonly opt: AdamW;
  /** Optimizer steps taken. */
  step = 0;

  constructor(readonly model: LlamaModel, readonly opts: TrainerOptions) {
    this.opt = new AdamW(model.gpu, model.trainable(), {
      lr: opts.lr,
      weightDecay: opts.weightDecay,
    });
  }

  /** The learning rate the next step will use. */
  get currentLr(): number {
    return linearWarmupDecay(this.step, this.opts.lr, this.opts.warmup, this.opts.totalSteps);
  }

  /**
   * One optimizer step over `micro` (gradAcc micro-batches). The reported loss is the mean of
   * the micro-batches' token-mean losses, as HF logs it.
   */
  async trainStep(micro: readonly Batch[]): Promise<StepReport> {
    try {
      return await this.#trainStep(micro);
    } catch (e) {
      throw await this.#asDeviceLoss(e, this.step + 1);
    }
  }

  /**
   * A failure of a GPU call as a {@linkcode DeviceLostAtStepError} when the device is gone
   * (a lost device surfaces as a rejected map or a validation error first), else unchanged.
   */
  async #asDeviceLoss(e: unknown, step: number): Promise<unknown> {
    if (e instanceof NonFiniteError) return e;
    const info = e instanceof DeviceLostError ? null : await this.model.gpu.lostInfo(200);
    if (!(e instanceof DeviceLostError) && !info) return e;
    const reason = e instanceof DeviceLostError ? e.message : new DeviceLostError(info!).message;
    return new DeviceLostAtStepError(step, reason, {}, { cause: e });
  }

  async #trainStep(micro: readonly Batch[]): Promise<StepReport> {
    const ranks = this.opts.ranks;
    if (ranks && ranks.size > 1) return await this.#trainStepRanks(micro, ranks);
    const gpu = this.model.gpu;
    const grads = this.opt.params.map((p) => p.grad);
    zeroGrads(gpu, grads);
    this.model.setTraining(true);
    const losses: Tensor[] = [];
    let tokens = 0, targets = 0;
    for (const b of micro) {
      losses.push(await this.model.trainStep(b, 1 / (Math.max(1, b.numCounted) * micro.length)));
      tokens += b.tokens.length;
      targets += b.numCounted;
    }
    const lr = this.currentLr;
    const res = await this.opt.step(lr, this.#clip());
    const vals = await gpu.readMany([res.gradNorm, ...losses]);
    for (const l of losses) l.release();
    let loss = 0;
    micro.forEach((b, i) => (loss += vals[i + 1][0] / Math.max(1, b.numCounted)));
    return this.#finish(loss / micro.length, vals[0][0], lr, tokens, targets);
  }

  #clip(): { maxNorm: number } | undefined {
    return this.opts.maxGradNorm > 0 ? { maxNorm: this.opts.maxGradNorm } : undefined;
  }

  #finish(loss: number, gradNorm: number, lr: number, tokens: number, targets: number) {
    this.step++;
    if (!Number.isFinite(loss)) throw new NonFiniteError(this.step, "the training loss");
    if (!Number.isFinite(gradNorm)) throw new NonFiniteError(this.step, "the gradient norm");
    return { step: this.step, loss, gradNorm, lr, tokens, targets };
  }

  /**
   * A data-parallel step: `micro` is the whole step's list (every rank's); this rank computes its
   * share with the scale of the whole step, with the LoRA dropout mask ids one process would use
   * for those micro-batches. Then, after a sync point, one all-reduce sums the gradients (packed
   * into one buffer with the loss sum and the token counts); clipping sees the global norm.
   */
  async #trainStepRanks(micro: readonly Batch[], ranks: Ranks): Promise<StepReport> {
    const gpu = this.model.gpu;
    const grads = this.opt.params.map((p) => p.grad);
    const n = grads.reduce((a, g) => a + g.size, 0);
    const packed = new Float32Array(n + 3);
    let error: unknown;
    try {
      zeroGrads(gpu, grads);
      this.model.setTraining(true);
      const counters = [...this.model.adapters.values()]
        .filter((ad) => ad.dropoutCounter !== undefined)
        .map((ad) => [ad, ad.dropoutCounter!] as const);
      const mine = rankShare(micro, ranks.rank, ranks.size);
      const losses: Tensor[] = [];
      let tokens = 0, targets = 0;
      for (const [j, b] of mine.entries()) {
        const at = globalIndex(j, ranks.rank, ranks.size);
        for (const [ad, base] of counters) ad.dropoutCounter = (base + at) >>> 0;
        losses.push(await this.model.trainStep(b, 1 / (Math.max(1, b.numCounted) * micro.length)));
        tokens += b.tokens.length;
        targets += b.numCounted;
      }
      for (const [ad, base] of counters) ad.dropoutCounter = (base + micro.length) >>> 0;
      const vals = await gpu.readMany([...grads, ...losses]);
      for (const l of losses) l.release();
      let off = 0;
      for (let i = 0; i < grads.length; i++) {
        packed.set(vals[i] as Float32Array, off);
        off += grads[i].size;
      }
      let lossSum = 0;
      mine.forEach((b, i) => (lossSum += vals[grads.length + i][0] / Math.max(1, b.numCounted)));
      packed[n] = lossSum;
      packed[n + 1] = tokens;
      packed[n + 2] = targets;
    } catch (e) {
      error = await this.#asDeviceLoss(e, this.step + 1);
    }
    ranks.sum(packed, { error });
    let off = 0;
    for (const g of grads) {
      gpu.write(g, packed.subarray(off, off + g.size));
      off += g.size;
    }
    const lr = this.currentLr;
    const res = await this.opt.step(lr, this.#clip());
    const [norm] = await gpu.readMany([res.gradNorm]);
    return this.#finish(packed[n] / micro.length, norm[0], lr, packed[n + 1], packed[n + 2]);
  }

  /**
   * Teacher-forced validation loss: the mean over batches of each batch's token-mean loss,
   * weighted by its number of sequences (HF repeats each batch mean batch-size times).
   */
  async evalLoss(batches: readonly Batch[]): Promise<number> {
    try {
      return await this.#evalLoss(batches);
    } catch (e) {
      throw await this.#asDeviceLoss(e, this.step);
    }
  }

  async #evalLoss(batches: readonly Batch[]): Promise<number> {
    const ranks = this.opts.ranks;
    if (!ranks || ranks.size === 1) {
      const [sum, weight] = await this.#evalSums(batches);
      return weight ? sum / weight : NaN;
    }
    // Each rank validates its share; one sum gives every rank the same loss.
    const sums = new Float32Array(2);
    let error: unknown;
    try {
      sums.set(await this.#evalSums(rankShare(batches, ranks.rank, ranks.size)));
    } catch (e) {
      error = await this.#asDeviceLoss(e, this.step);
    }
    ranks.sum(sums, { error });
    return sums[1] ? sums[0] / sums[1] : NaN;
  }

  /** The weighted loss sum and the weight (sequences) of `batches`. */
  async #evalSums(batches: readonly Batch[]): Promise<[number, number]> {
    const gpu = this.model.gpu;
    const ts: Tensor[] = [];
    // Evaluation runs without dropout (nn.Dropout in eval mode); trainStep turns it back on.
    this.model.setTraining(false);
    for (const b of batches) ts.push(await this.model.trainStep(b, 1, false));
    const vals = await gpu.readMany(ts);
    for (const t of ts) t.release();
    let sum = 0, weight = 0;
    batches.forEach((b, i) => {
      const seqs = b.cuSeqlens.length - 1;
      if (b.numCounted > 0) {
        sum += (vals[i][0] / b.numCounted) * seqs;
        weight += seqs;
      }
    });
    return [sum, weight];
  }
}
