/**
 * Plain-loop f64 references for the HiRA and LoRA layers (forward, backward, merge), following
 * the reference implementation (docs/reference.md, The HiRA layer):
 * - HiRA: y = x·(W0 ⊙ (1 + B·A))ᵀ + bias; with G = dYᵀ·X and M = W0 ⊙ G:
 *   dB = M·Aᵀ, dA = Bᵀ·M, dX = dY·(W0 ⊙ (1 + B·A)).
 * - LoRA: y = x·W0ᵀ + s·dropout(x)·Aᵀ·Bᵀ + bias with s = α/r.
 * Shapes: x [n, in], W0 [out, in], A [r, in], B [out, r], y [n, out], all row-major.
 * @module
 */

/** Sizes of one adapted linear layer applied to `n` tokens. */
export interface AdapterDims {
  n: number;
  inFeatures: number;
  outFeatures: number;
  r: number;
}

/** Gradients of an adapter layer: dA [r, in], dB [out, r], dX [n, in]. */
export interface AdapterGradsRef {
  dA: Float64Array;
  dB: Float64Array;
  dX: Float64Array;
}

/** W[o, i] = f(W0[o, i], (B·A)[o, i]) [out, in]: the merge rules below, in f64. */
function withBA(
  w0: ArrayLike<number>,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  d: Omit<AdapterDims, "n">,
  f: (w: number, ba: number) => number,
): Float64Array {
  const { inFeatures: K, outFeatures: O, r } = d;
  const w = new Float64Array(O * K);
  for (let o = 0; o < O; o++) {
    for (let i = 0; i < K; i++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += b[o * r + k] * a[k * K + i];
      w[o * K + i] = f(w0[o * K + i], s);
    }
  }
  return w;
}

/** HiRA's effective weight W0 ⊙ (1 + B·A) [out, in]. */
export function hiraWeightRef(
  w0: ArrayLike<number>,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  d: Omit<AdapterDims, "n">,
): Float64Array {
  return withBA(w0, a, b, d, (w, ba) => w * (1 + ba));
}

/** LoRA's merged weight W0 + scale·B·A [out, in]. */
export function loraWeightRef(
  w0: ArrayLike<number>,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  d: Omit<AdapterDims, "n">,
  scale: number,
): Float64Array {
  return withBA(w0, a, b, d, (w, ba) => w + scale * ba);
}

/** The merged weight of either adapter type (`scale` = α/r, LoRA only). */
export function mergeRef(
  type: "HIRA" | "LORA",
  w0: ArrayLike<number>,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  d: Omit<AdapterDims, "n">,
  scale = 1,
): Float64Array {
  return type === "HIRA" ? hiraWeightRef(w0, a, b, d) : loraWeightRef(w0, a, b, d, scale);
}

/** W0 = W' ⊘ (1 + B·A): HiRA unmerge (ill-conditioned where 1 + B·A ≈ 0). */
export function unmergeHiraRef(
  merged: ArrayLike<number>,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  d: Omit<AdapterDims, "n">,
): Float64Array {
  return withBA(merged, a, b, d, (w, ba) => w / (1 + ba));
}

/** y [n, out] = x·wᵀ + bias for a plain linear layer with w [out, in]. */
export function linearRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  n: number,
  inFeatures: number,
  outFeatures: number,
  bias?: ArrayLike<number>,
): Float64Array {
  const y = new Float64Array(n * outFeatures);
  for (let t = 0; t < n; t++) {
    for (let o = 0; o < outFeatures; o++) {
      let s = bias ? bias[o] : 0;
      for (let i = 0; i < inFeatures; i++) s += x[t * inFeatures + i] * w[o * inFeatures + i];
      y[t * outFeatures + o] = s;
    }
  }
  return y;
}

/** HiRA forward: y = x·(W0 ⊙ (1 + B·A))ᵀ + bias. */
export function hiraForwardRef(
  x: ArrayLike<number>,
  w0: ArrayLike<number>,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  d: AdapterDims,
  bias?: ArrayLike<number>,
): Float64Array {
  return linearRef(x, hiraWeightRef(w0, a, b, d), d.n, d.inFeatures, d.outFeatures, bias);
}

/** HiRA backward: G = dYᵀ·X, M = W0 ⊙ G, dB = M·Aᵀ, dA = Bᵀ·M, dX = dY·W_eff. */
export function hiraBackwardRef(
  x: ArrayLike<number>,
  w0: ArrayLike<number>,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  dy: ArrayLike<number>,
  d: AdapterDims,
): AdapterGradsRef {
  const { n, inFeatures: K, outFeatures: O, r } = d;
  const m = new Float64Array(O * K);
  for (let o = 0; o < O; o++) {
    for (let i = 0; i < K; i++) {
      let g = 0;
      for (let t = 0; t < n; t++) g += dy[t * O + o] * x[t * K + i];
      m[o * K + i] = w0[o * K + i] * g;
    }
  }
  const dB = new Float64Array(O * r);
  for (let o = 0; o < O; o++) {
    for (let k = 0; k < r; k++) {
      let s = 0;
      for (let i = 0; i < K; i++) s += m[o * K + i] * a[k * K + i];
      dB[o * r + k] = s;
    }
  }
  const dA = new Float64Array(r * K);
  for (let k = 0; k < r; k++) {
    for (let i = 0; i < K; i++) {
      let s = 0;
      for (let o = 0; o < O; o++) s += b[o * r + k] * m[o * K + i];
      dA[k * K + i] = s;
    }
  }
  const w = hiraWeightRef(w0, a, b, d);
  const dX = new Float64Array(n * K);
  for (let t = 0; t < n; t++) {
    for (let i = 0; i < K; i++) {
      let s = 0;
      for (let o = 0; o < O; o++) s += dy[t * O + o] * w[o * K + i];
      dX[t * K + i] = s;
    }
  }
  return { dA, dB, dX };
}

/**
 * LoRA forward: y = x·W0ᵀ + scale·(mask ⊙ x)·Aᵀ·Bᵀ + bias. `mask` holds the dropout
 * multipliers per element of x (0 or 1/(1-p)); omit it for no dropout.
 */
export function loraForwardRef(
  x: ArrayLike<number>,
  w0: ArrayLike<number>,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  d: AdapterDims,
  scale: number,
  mask?: ArrayLike<number>,
  bias?: ArrayLike<number>,
): Float64Array {
  const { n, inFeatures: K, outFeatures: O, r } = d;
  const y = linearRef(x, w0, n, K, O, bias);
  for (let t = 0; t < n; t++) {
    const h = new Float64Array(r);
    for (let k = 0; k < r; k++) {
      let s = 0;
      for (let i = 0; i < K; i++) {
        s += (mask ? mask[t * K + i] : 1) * x[t * K + i] * a[k * K + i];
      }
      h[k] = s;
    }
    for (let o = 0; o < O; o++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += h[k] * b[o * r + k];
      y[t * O + o] += scale * s;
    }
  }
  return y;
}

/**
 * LoRA backward with the forward's dropout mask: with xd = mask ⊙ x, h = xd·Aᵀ and
 * dh = scale·dY·B: dB = scale·dYᵀ·h, dA = dhᵀ·xd, dX = dY·W0 + mask ⊙ (dh·A).
 */
export function loraBackwardRef(
  x: ArrayLike<number>,
  w0: ArrayLike<number>,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  dy: ArrayLike<number>,
  d: AdapterDims,
  scale: number,
  mask?: ArrayLike<number>,
): AdapterGradsRef {
  const { n, inFeatures: K, outFeatures: O, r } = d;
  const dA = new Float64Array(r * K);
  const dB = new Float64Array(O * r);
  const dX = new Float64Array(n * K);
  for (let t = 0; t < n; t++) {
    const xd = new Float64Array(K);
    for (let i = 0; i < K; i++) xd[i] = (mask ? mask[t * K + i] : 1) * x[t * K + i];
    const h = new Float64Array(r);
    for (let k = 0; k < r; k++) {
      for (let i = 0; i < K; i++) h[k] += xd[i] * a[k * K + i];
    }
    const dh = new Float64Array(r);
    for (let k = 0; k < r; k++) {
      for (let o = 0; o < O; o++) dh[k] += scale * dy[t * O + o] * b[o * r + k];
    }
    for (let o = 0; o < O; o++) {
      for (let k = 0; k < r; k++) dB[o * r + k] += scale * dy[t * O + o] * h[k];
    }
    for (let k = 0; k < r; k++) {
      for (let i = 0; i < K; i++) dA[k * K + i] += dh[k] * xd[i];
    }
    for (let i = 0; i < K; i++) {
      let s = 0;
      for (let o = 0; o < O; o++) s += dy[t * O + o] * w0[o * K + i];
      let sd = 0;
      for (let k = 0; k < r; k++) sd += dh[k] * a[k * K + i];
      dX[t * K + i] = s + (mask ? mask[t * K + i] : 1) * sd;
    }
  }
  return { dA, dB, dX };
}

/** The "lowbias32" u32 mixer used by kernels/lora.wgsl. */
export function mix32(v: number): number {
  let x = v >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  return x;
}

/**
 * The LoRA dropout multipliers (0 or 1/(1-p)) of kernels/lora.wgsl for an activation of
 * `count` elements, bit-identical in its keep decisions.
 */
export function loraDropoutMaskRef(
  seed: number,
  maskId: number,
  count: number,
  p: number,
): Float64Array {
  // Keep iff hash >= p·2^32, so an element survives with probability 1 − p.
  const thr = Math.min(0xffffffff, Math.round(p * 4294967296));
  const base = mix32((maskId + mix32(seed)) >>> 0);
  const out = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    out[i] = mix32((i + base) >>> 0) >= thr ? 1 / (1 - p) : 0;
  }
  return out;
}
