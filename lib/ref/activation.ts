/**
 * Plain-loop f64 reference of SiLU and SwiGLU (forward and backward side by side), for tests and
 * finite differences.
 * @module
 */

function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

/** y = x · sigmoid(x). */
export function siluForward(x: ArrayLike<number>): Float64Array {
  return Float64Array.from(x, (v) => v * sigmoid(v));
}

/** dx = dy · d silu / dx. */
export function siluBackward(x: ArrayLike<number>, dy: ArrayLike<number>): Float64Array {
  const dx = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const s = sigmoid(x[i]);
    dx[i] = dy[i] * s * (1 + x[i] * (1 - s));
  }
  return dx;
}

/** h = silu(gate) · up. */
export function swigluForward(gate: ArrayLike<number>, up: ArrayLike<number>): Float64Array {
  const h = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) h[i] = gate[i] * sigmoid(gate[i]) * up[i];
  return h;
}

/** Gradients of Σ dh·h with respect to gate and up. */
export function swigluBackward(
  gate: ArrayLike<number>,
  up: ArrayLike<number>,
  dh: ArrayLike<number>,
): { dGate: Float64Array; dUp: Float64Array } {
  const n = gate.length;
  const dGate = new Float64Array(n);
  const dUp = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    const s = sigmoid(g);
    dGate[i] = dh[i] * up[i] * s * (1 + g * (1 - s));
    dUp[i] = dh[i] * g * s;
  }
  return { dGate, dUp };
}
