/**
 * Plain-loop CPU reference for causal grouped-KV attention over a packed batch (forward,
 * backward and single-token decode), in f64. It materialises each row's scores, which the GPU
 * kernels never do, and its backward uses Σ_j p·dp rather than rowsum(dO ⊙ O), so it checks the
 * kernels' algebra as well as their arithmetic.
 * @module
 */

/** Sizes of a packed attention problem: q [n, h, d], k and v [n, hkv, d]. */
export interface AttentionRefShape {
  /** Tokens in the packed batch. */
  n: number;
  /** Query heads. */
  h: number;
  /** KV heads (h % hkv == 0; query head i uses KV head i / (h / hkv)). */
  hkv: number;
  /** Head dimension. */
  d: number;
  /** Sequence offsets [B+1]: sequence b is tokens cuSeqlens[b] .. cuSeqlens[b+1]-1. */
  cuSeqlens: ArrayLike<number>;
  /** Multiplier of q·k; default 1/sqrt(d). */
  scale?: number;
}

/** Visits every (sequence start, token, head, kv head) the attention computes. */
function forEachRow(
  s: AttentionRefShape,
  fn: (start: number, t: number, h: number, kvh: number) => void,
): void {
  const group = s.h / s.hkv;
  for (let b = 0; b + 1 < s.cuSeqlens.length; b++) {
    const start = s.cuSeqlens[b];
    for (let t = start; t < s.cuSeqlens[b + 1]; t++) {
      for (let h = 0; h < s.h; h++) fn(start, t, h, Math.floor(h / group));
    }
  }
}

/** Scaled scores of query (t, h) against keys start..=t of KV head kvh, and their softmax. */
function rowProbs(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  s: AttentionRefShape,
  start: number,
  t: number,
  h: number,
  kvh: number,
): { p: Float64Array; lse: number } {
  const scale = s.scale ?? 1 / Math.sqrt(s.d);
  const len = t - start + 1;
  const scores = new Float64Array(len);
  let m = -Infinity;
  for (let j = 0; j < len; j++) {
    let dot = 0;
    for (let d = 0; d < s.d; d++) {
      dot += q[(t * s.h + h) * s.d + d] * k[((start + j) * s.hkv + kvh) * s.d + d];
    }
    scores[j] = dot * scale;
    m = Math.max(m, scores[j]);
  }
  let sum = 0;
  for (let j = 0; j < len; j++) sum += Math.exp(scores[j] - m);
  const p = scores.map((x) => Math.exp(x - m) / sum);
  return { p, lse: m + Math.log(sum) };
}

/** out [n, h, d] and lse [n, h] (log-sum-exp of the scaled scores); padding rows stay 0. */
export function attentionRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  s: AttentionRefShape,
): { out: Float64Array; lse: Float64Array } {
  const out = new Float64Array(s.n * s.h * s.d);
  const lse = new Float64Array(s.n * s.h);
  forEachRow(s, (start, t, h, kvh) => {
    const r = rowProbs(q, k, s, start, t, h, kvh);
    lse[t * s.h + h] = r.lse;
    for (let j = 0; j < r.p.length; j++) {
      for (let d = 0; d < s.d; d++) {
        out[(t * s.h + h) * s.d + d] += r.p[j] * v[((start + j) * s.hkv + kvh) * s.d + d];
      }
    }
  });
  return { out, lse };
}

/** dq, dk, dv of {@linkcode attentionRef} given dOut [n, h, d]. */
export function attentionBackwardRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  dOut: ArrayLike<number>,
  s: AttentionRefShape,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const scale = s.scale ?? 1 / Math.sqrt(s.d);
  const dq = new Float64Array(s.n * s.h * s.d);
  const dk = new Float64Array(s.n * s.hkv * s.d);
  const dv = new Float64Array(s.n * s.hkv * s.d);
  forEachRow(s, (start, t, h, kvh) => {
    const { p } = rowProbs(q, k, s, start, t, h, kvh);
    const qo = (t * s.h + h) * s.d;
    // dp_j = dO·v_j; softmax backward ds_j = p_j (dp_j − Σ p·dp).
    const dp = new Float64Array(p.length);
    let pdp = 0;
    for (let j = 0; j < p.length; j++) {
      const ko = ((start + j) * s.hkv + kvh) * s.d;
      for (let d = 0; d < s.d; d++) dp[j] += dOut[qo + d] * v[ko + d];
      pdp += p[j] * dp[j];
    }
    for (let j = 0; j < p.length; j++) {
      const ko = ((start + j) * s.hkv + kvh) * s.d;
      const ds = p[j] * (dp[j] - pdp) * scale;
      for (let d = 0; d < s.d; d++) {
        dv[ko + d] += p[j] * dOut[qo + d];
        dq[qo + d] += ds * k[ko + d];
        dk[ko + d] += ds * q[qo + d];
      }
    }
  });
  return { dq, dk, dv };
}

/**
 * One query token per sequence against its KV cache: q [nb, h, d], kCache/vCache
 * [nb, tmax, hkv, d], lens [nb] valid positions. Returns [nb, h, d].
 */
export function attentionDecodeRef(
  q: ArrayLike<number>,
  kCache: ArrayLike<number>,
  vCache: ArrayLike<number>,
  lens: ArrayLike<number>,
  s: { nb: number; h: number; hkv: number; d: number; tmax: number; scale?: number },
): Float64Array {
  const out = new Float64Array(s.nb * s.h * s.d);
  for (let b = 0; b < s.nb; b++) {
    // The cache of sequence b is a packed sequence of lens[b] tokens whose last token asks.
    const len = Math.min(lens[b], s.tmax);
    if (len === 0) continue;
    const shape = { n: len, h: s.h, hkv: s.hkv, d: s.d, cuSeqlens: [0, len], scale: s.scale };
    const kb = b * s.tmax * s.hkv * s.d;
    const qs = new Float64Array(len * s.h * s.d);
    qs.set(Array.from(q).slice(b * s.h * s.d, (b + 1) * s.h * s.d), (len - 1) * s.h * s.d);
    const kc = Array.from(kCache).slice(kb, kb + len * s.hkv * s.d);
    const vc = Array.from(vCache).slice(kb, kb + len * s.hkv * s.d);
    const r = attentionRef(qs, kc, vc, shape);
    out.set(r.out.subarray((len - 1) * s.h * s.d), b * s.h * s.d);
  }
  return out;
}
