/**
 * Plain-loop CPU references for the optimizer (AdamW as torch.optim.AdamW, global gradient
 * norm and clipping as torch.nn.utils.clip_grad_norm_), computed in f64 for tests.
 * @module
 */

/** Hyper-parameters of one AdamW step. */
export interface AdamWRefOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Decoupled weight decay (0 for parameters that do not decay). */
  weightDecay: number;
}

/**
 * One AdamW step in place, in torch's order: p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g;
 * v ← β2·v + (1−β2)·g²; p ← p − lr/(1−β1^t) · m / (√v/√(1−β2^t) + eps).
 * `t` is the 1-based step number; `g` is scaled by `gradScale` first (clipping).
 */
export function adamwStepRef(
  p: Float64Array,
  g: ArrayLike<number>,
  m: Float64Array,
  v: Float64Array,
  t: number,
  o: AdamWRefOptions,
  gradScale = 1,
): void {
  const bc1 = 1 - o.beta1 ** t;
  const bc2Sqrt = Math.sqrt(1 - o.beta2 ** t);
  const stepSize = o.lr / bc1;
  const decay = 1 - o.lr * o.weightDecay;
  for (let i = 0; i < p.length; i++) {
    const gi = g[i] * gradScale;
    m[i] = o.beta1 * m[i] + (1 - o.beta1) * gi;
    v[i] = o.beta2 * v[i] + (1 - o.beta2) * gi * gi;
    p[i] = p[i] * decay - stepSize * m[i] / (Math.sqrt(v[i]) / bc2Sqrt + o.eps);
  }
}

/** L2 norm of all gradient tensors taken together. */
export function gradNormRef(grads: readonly ArrayLike<number>[]): number {
  let s = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) s += g[i] * g[i];
  return Math.sqrt(s);
}

/** clip_grad_norm_'s factor: min(1, maxNorm / (norm + 1e-6)). */
export function clipScaleRef(norm: number, maxNorm: number): number {
  return Math.min(1, maxNorm / (norm + 1e-6));
}
