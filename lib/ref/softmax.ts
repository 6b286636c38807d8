/**
 * Plain-loop CPU reference for row-wise softmax (forward and backward), in f64.
 * @module
 */

/** y[r, :] = softmax(x[r, :]) for a row-major [rows, cols] matrix (max-subtracted). */
export function softmaxRef(x: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const y = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let m = -Infinity;
    for (let c = 0; c < cols; c++) m = Math.max(m, x[base + c]);
    let s = 0;
    for (let c = 0; c < cols; c++) {
      y[base + c] = Math.exp(x[base + c] - m);
      s += y[base + c];
    }
    for (let c = 0; c < cols; c++) y[base + c] /= s;
  }
  return y;
}

/** dx = y ⊙ (dy − rowsum(dy ⊙ y)) given the forward output y and the upstream gradient dy. */
export function softmaxBackwardRef(
  y: ArrayLike<number>,
  dy: ArrayLike<number>,
  rows: number,
  cols: number,
): Float64Array {
  const dx = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let dot = 0;
    for (let c = 0; c < cols; c++) dot += dy[base + c] * y[base + c];
    for (let c = 0; c < cols; c++) dx[base + c] = y[base + c] * (dy[base + c] - dot);
  }
  return dx;
}
