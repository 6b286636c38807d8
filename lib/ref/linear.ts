/**
 * CPU references for kernels/linear.wgsl.
 * @module
 */

/** y[r, c] + bias[c]. */
export function addBiasRef(y: ArrayLike<number>, bias: ArrayLike<number>): Float64Array {
  const out = Float64Array.from(y);
  for (let i = 0; i < out.length; i++) out[i] += bias[i % bias.length];
  return out;
}

/** Column sums of dy [rows, cols]. */
export function biasGradRef(dy: ArrayLike<number>, cols: number): Float64Array {
  const out = new Float64Array(cols);
  for (let i = 0; i < dy.length; i++) out[i % cols] += dy[i];
  return out;
}

/** Columns [offset, offset+count) of src [rows, cols]. */
export function copyColumnsRef(
  src: ArrayLike<number>,
  rows: number,
  cols: number,
  offset: number,
  count: number,
): Float64Array {
  const out = new Float64Array(rows * count);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < count; c++) out[r * count + c] = src[r * cols + offset + c];
  }
  return out;
}
