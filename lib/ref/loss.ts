/**
 * Plain-loop f64 reference of token cross-entropy with an ignore mask, forward and backward
 * side by side.
 * @module
 */

/** Per-row NLL of logits [n, v] against targets; targets < 0 (or ≥ v) are ignored (loss 0). */
/** Row i's max m and Σ exp(x − m), the stable log-sum-exp's parts. */
function rowMaxSum(logits: ArrayLike<number>, i: number, v: number): { m: number; s: number } {
  let m = -Infinity;
  for (let j = 0; j < v; j++) m = Math.max(m, logits[i * v + j]);
  let s = 0;
  for (let j = 0; j < v; j++) s += Math.exp(logits[i * v + j] - m);
  return { m, s };
}

export function crossEntropyForward(
  logits: ArrayLike<number>,
  n: number,
  v: number,
  targets: ArrayLike<number>,
): Float64Array {
  const loss = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const t = targets[i];
    if (t < 0 || t >= v) continue;
    const { m, s } = rowMaxSum(logits, i, v);
    loss[i] = Math.log(s) + m - logits[i * v + t];
  }
  return loss;
}

/** Gradient of scale · Σ loss with respect to the logits: scale·(softmax − onehot), 0 if ignored. */
export function crossEntropyBackward(
  logits: ArrayLike<number>,
  n: number,
  v: number,
  targets: ArrayLike<number>,
  scale = 1,
): Float64Array {
  const d = new Float64Array(n * v);
  for (let i = 0; i < n; i++) {
    const t = targets[i];
    if (t < 0 || t >= v) continue;
    const { m, s } = rowMaxSum(logits, i, v);
    for (let j = 0; j < v; j++) {
      d[i * v + j] = scale * (Math.exp(logits[i * v + j] - m) / s - (j === t ? 1 : 0));
    }
  }
  return d;
}
