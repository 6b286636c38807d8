/**
 * Learning-rate schedule of the reference (HF `get_linear_schedule_with_warmup`): linear warmup
 * from 0 to the peak over `warmup` optimizer steps, then linear decay to 0 at `total`.
 * Step k (0-based) uses lr(k), so the very first update has lr 0 when warmup > 0, as in HF.
 * @module
 */

/** The learning rate of 0-based optimizer step `step`. */
export function linearWarmupDecay(
  step: number,
  peak: number,
  warmup: number,
  total: number,
): number {
  if (step < warmup) return (peak * step) / Math.max(1, warmup);
  return peak * Math.max(0, (total - step) / Math.max(1, total - warmup));
}

/**
 * Optimizer steps of a run, as HF Trainer counts them:
 * updates per epoch = max(1, floor(ceil(N / batch) / gradAcc)), total = ceil(epochs × that).
 */
export function totalSteps(
  examples: number,
  batch: number,
  gradAcc: number,
  epochs: number,
): number {
  const perEpoch = Math.max(1, Math.floor(Math.ceil(examples / batch) / gradAcc));
  return Math.ceil(epochs * perEpoch);
}
