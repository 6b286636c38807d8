/**
 * Plain-loop f64 reference of RMSNorm (forward and backward side by side), for tests and
 * finite differences.
 * @module
 */

/** Forward: y = x · rstd · w per row of x [n, c], rstd = 1 / sqrt(mean(x²) + eps). */
export function rmsnormForward(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  n: number,
  c: number,
  eps: number,
): { y: Float64Array; rstd: Float64Array } {
  const y = new Float64Array(n * c);
  const rstd = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let ss = 0;
    for (let j = 0; j < c; j++) ss += x[i * c + j] * x[i * c + j];
    const r = 1 / Math.sqrt(ss / c + eps);
    rstd[i] = r;
    for (let j = 0; j < c; j++) y[i * c + j] = x[i * c + j] * r * w[j];
  }
  return { y, rstd };
}

/** Backward: gradients of Σ dy·y with respect to x [n, c] and w [c]. */
export function rmsnormBackward(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  dy: ArrayLike<number>,
  n: number,
  c: number,
  eps: number,
): { dx: Float64Array; dw: Float64Array } {
  const { rstd } = rmsnormForward(x, w, n, c, eps);
  const dx = new Float64Array(n * c);
  const dw = new Float64Array(c);
  for (let i = 0; i < n; i++) {
    const r = rstd[i];
    let dot = 0;
    for (let j = 0; j < c; j++) dot += w[j] * dy[i * c + j] * x[i * c + j];
    for (let j = 0; j < c; j++) {
      const k = i * c + j;
      dx[k] = r * w[j] * dy[k] - x[k] * r * r * r * dot / c;
      dw[j] += dy[k] * x[k] * r;
    }
  }
  return { dx, dw };
}
