/**
 * The training loop, once, for the command line (lib/cli/train.ts) and the page (web/session.ts):
 * optimizer steps over micro-batches until the step count, a stop request or a hook ends it, with
 * validation loss at the steps the caller chooses. What happens around a step (logs, checkpoints,
 * progress, charts) is the caller's, through hooks; the order of a step is fixed here:
 * stop check, step, `onStep`, validation and `onEval` when `evalAt` says so, `afterStep`.
 * @module
 */
import type { PackedBatch, TrainExample } from "./data.ts";
import { packBatch } from "./data.ts";
import type { StepReport, Trainer } from "./trainer.ts";

/** The recipe's gradient clipping: HF Trainer's max_grad_norm default, as the reference uses. */
export const MAX_GRAD_NORM = 1.0;

/**
 * Validation micro-batches: the examples in file order, `batch` at a time, packed (the mean of
 * their token-mean losses is {@linkcode Trainer.evalLoss}).
 */
export function validationBatches(
  examples: readonly TrainExample[],
  batch: number,
): PackedBatch[] {
  const out: PackedBatch[] = [];
  const b = Math.max(1, Math.floor(batch));
  for (let i = 0; i < examples.length; i += b) out.push(packBatch(examples.slice(i, i + b)));
  return out;
}

/** What a hook may return to end the loop after the current step. */
export type LoopControl = void | "stop";

/** The caller's part of {@linkcode trainLoop}. */
export interface LoopHooks {
  /** Checked before every step; true ends the loop before stepping. */
  shouldStop?(): boolean;
  /** After each optimizer step. */
  onStep?(r: StepReport): void | Promise<void>;
  /** Whether validation runs after step `step` (none when absent). */
  evalAt?(step: number): boolean;
  /** Just before a validation pass (the page shows it). */
  beforeEval?(step: number): void;
  /**
   * The validation loss after step `step` (null when there are no validation batches); "stop"
   * ends the loop (early stopping) before {@linkcode afterStep}.
   */
  onEval?(step: number, loss: number | null): LoopControl | Promise<LoopControl>;
  /** Last in a step, with whether it validated; "stop" ends the loop. */
  afterStep?(r: StepReport, evaluated: boolean): LoopControl | Promise<LoopControl>;
}

/** How {@linkcode trainLoop} ended. */
export type LoopEnd = "done" | "shouldStop" | "onEval" | "afterStep";

/**
 * Runs optimizer steps of `trainer` until it has taken `steps` (counting steps taken before, as
 * a resumed run has), each over the micro-batches `nextMicro` returns. Errors (a non-finite
 * loss, a lost device, a hook's) propagate unchanged.
 */
export async function trainLoop(
  trainer: Trainer,
  steps: number,
  nextMicro: () => PackedBatch[],
  valBatches: readonly PackedBatch[],
  hooks: LoopHooks = {},
): Promise<LoopEnd> {
  while (trainer.step < steps) {
    if (hooks.shouldStop?.()) return "shouldStop";
    const r = await trainer.trainStep(nextMicro());
    await hooks.onStep?.(r);
    const evaluated = hooks.evalAt?.(r.step) ?? false;
    if (evaluated) {
      hooks.beforeEval?.(r.step);
      const loss = valBatches.length ? await trainer.evalLoss(valBatches) : null;
      if ((await hooks.onEval?.(r.step, loss)) === "stop") return "onEval";
    }
    if ((await hooks.afterStep?.(r, evaluated)) === "stop") return "afterStep";
  }
  return "done";
}
