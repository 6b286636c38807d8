/**
 * The reference's training recipe on a {@linkcode LlamaModel}: AdamW (0.9, 0.999, 1e-8, decoupled
 * weight decay), linear warmup then linear decay to 0, gradient clipping at 1.0, gradient
 * accumulation with HF's loss semantics (each micro-batch's token-mean loss divided by the
 * accumulation count), and teacher-forced validation loss. One readback per optimizer step.
 * @module
 */
import type { Tensor } from "./gpu.ts";
import type { Batch, LlamaModel } from "./model.ts";
import { AdamW, zeroGrads } from "./ops/optim.ts";
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

/** A NaN or Inf loss or gradient norm, with the step it appeared at. */
export class NonFiniteError extends Error {
  constructor(readonly step: number, what: string) {
    super(
      `${what} is not finite at step ${step}; the run stopped and the last good checkpoint is ` +
        `kept. Try a lower learning rate (--lr) or stronger clipping.`,
    );
    this.name = "NonFiniteError";
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
    const res = await this.opt.step(
      lr,
      this.opts.maxGradNorm > 0 ? { maxNorm: this.opts.maxGradNorm } : undefined,
    );
    const vals = await gpu.readMany([res.gradNorm, ...losses]);
    for (const l of losses) l.release();
    const gradNorm = vals[0][0];
    let loss = 0;
    micro.forEach((b, i) => (loss += vals[i + 1][0] / Math.max(1, b.numCounted)));
    loss /= micro.length;
    this.step++;
    if (!Number.isFinite(loss)) throw new NonFiniteError(this.step, "the training loss");
    if (!Number.isFinite(gradNorm)) throw new NonFiniteError(this.step, "the gradient norm");
    return { step: this.step, loss, gradNorm, lr, tokens, targets };
  }

  /**
   * Teacher-forced validation loss: the mean over batches of each batch's token-mean loss,
   * weighted by its number of sequences (HF repeats each batch mean batch-size times).
   */
  async evalLoss(batches: readonly Batch[]): Promise<number> {
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
    return weight ? sum / weight : NaN;
  }
}
