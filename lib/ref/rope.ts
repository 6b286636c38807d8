/**
 * Plain-loop f64 reference of RoPE (HF rotate_half convention), forward and backward side by
 * side. The angle is the f32 product pos · inv_freq, as HF and the GPU kernel compute it; the
 * rotation itself runs in f64.
 * @module
 */

/**
 * Rotates each head of x [n, h, d] by θ = fround(pos · invFreq[i]) on the pairs (i, i + d/2);
 * `inverse` rotates by −θ.
 */
export function ropeForward(
  x: ArrayLike<number>,
  n: number,
  h: number,
  positions: ArrayLike<number>,
  invFreq: ArrayLike<number>,
  inverse = false,
): Float64Array {
  const half = invFreq.length;
  const d = 2 * half;
  const out = new Float64Array(n * h * d);
  for (let t = 0; t < n; t++) {
    for (let i = 0; i < half; i++) {
      const theta = Math.fround(positions[t] * invFreq[i]);
      const c = Math.cos(theta);
      const s = inverse ? -Math.sin(theta) : Math.sin(theta);
      for (let head = 0; head < h; head++) {
        const base = (t * h + head) * d;
        const x1 = x[base + i], x2 = x[base + i + half];
        out[base + i] = x1 * c - x2 * s;
        out[base + i + half] = x2 * c + x1 * s;
      }
    }
  }
  return out;
}

/**
 * Backward, with {@linkcode ropeForward}'s parameters (dy in x's place): the gradient of
 * Σ dy·rope(x) with respect to x is dy rotated by −θ.
 */
export function ropeBackward(...args: Parameters<typeof ropeForward>): Float64Array {
  const [dy, n, h, positions, invFreq, inverse = false] = args;
  return ropeForward(dy, n, h, positions, invFreq, !inverse);
}
