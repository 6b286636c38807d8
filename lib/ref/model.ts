/**
 * A plain-loop f64 CPU forward of the Llama decoder, independent of the GPU path and its op
 * references: the oracle for whole-model tests (logits, loss, finite-difference gradients).
 * Adapters enter as effective weights (lib/ref/adapters.ts hiraWeightRef / loraWeightRef), the
 * definition the GPU layers must agree with.
 * @module
 */
import type { LlamaConfig } from "../model/config.ts";

/** Base weights by Hugging Face tensor name, as f64 (or f32) arrays. */
export type RefWeights = Map<string, ArrayLike<number>>;

/** llama3 / default RoPE inverse frequencies, as transformers computes them. */
export function refInvFreq(cfg: LlamaConfig): Float64Array {
  const D = cfg.headDim;
  const inv = new Float64Array(D / 2);
  for (let i = 0; i < D / 2; i++) inv[i] = 1 / Math.pow(cfg.ropeTheta, (2 * i) / D);
  const s = cfg.ropeScaling;
  if (!s) return inv;
  const lowWavelen = s.original_max_position_embeddings / s.low_freq_factor;
  const highWavelen = s.original_max_position_embeddings / s.high_freq_factor;
  for (let i = 0; i < inv.length; i++) {
    const wavelen = (2 * Math.PI) / inv[i];
    if (wavelen > lowWavelen) inv[i] = inv[i] / s.factor;
    else if (wavelen >= highWavelen) {
      const smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
        (s.high_freq_factor - s.low_freq_factor);
      inv[i] = (1 - smooth) * inv[i] / s.factor + smooth * inv[i];
    }
  }
  return inv;
}

function linear(
  x: Float64Array,
  n: number,
  w: ArrayLike<number>,
  out: number,
  inp: number,
  bias?: ArrayLike<number>,
): Float64Array {
  const y = new Float64Array(n * out);
  for (let t = 0; t < n; t++) {
    for (let o = 0; o < out; o++) {
      let s = bias ? bias[o] : 0;
      for (let i = 0; i < inp; i++) s += x[t * inp + i] * w[o * inp + i];
      y[t * out + o] = s;
    }
  }
  return y;
}

function rmsnorm(
  x: Float64Array,
  n: number,
  c: number,
  w: ArrayLike<number>,
  eps: number,
): Float64Array {
  const y = new Float64Array(n * c);
  for (let t = 0; t < n; t++) {
    let ss = 0;
    for (let i = 0; i < c; i++) ss += x[t * c + i] ** 2;
    const r = 1 / Math.sqrt(ss / c + eps);
    for (let i = 0; i < c; i++) y[t * c + i] = x[t * c + i] * r * w[i];
  }
  return y;
}

function rope(
  x: Float64Array,
  n: number,
  heads: number,
  d: number,
  pos: number[],
  inv: Float64Array,
): void {
  const half = d / 2;
  for (let t = 0; t < n; t++) {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * d;
      for (let i = 0; i < half; i++) {
        const a = pos[t] * inv[i];
        const c = Math.cos(a), s = Math.sin(a);
        const x1 = x[base + i], x2 = x[base + i + half];
        x[base + i] = x1 * c - x2 * s;
        x[base + i + half] = x2 * c + x1 * s;
      }
    }
  }
}

/**
 * Logits [T, vocab] of one sequence (no padding), in f64. `weights` holds effective weights
 * (merge adapters before calling).
 */
export function refForward(
  cfg: LlamaConfig,
  weights: RefWeights,
  tokens: readonly number[],
): Float64Array {
  const T = tokens.length, C = cfg.hiddenSize, F = cfg.intermediateSize;
  const H = cfg.numHeads, Hkv = cfg.numKvHeads, D = cfg.headDim, V = cfg.vocabSize;
  const get = (name: string) => {
    const w = weights.get(name);
    if (!w) throw new Error(`refForward: missing ${name}`);
    return w;
  };
  const inv = refInvFreq(cfg);
  const pos = tokens.map((_, i) => i);
  const emb = get("model.embed_tokens.weight");
  let x = new Float64Array(T * C);
  for (let t = 0; t < T; t++) for (let i = 0; i < C; i++) x[t * C + i] = emb[tokens[t] * C + i];
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const h = rmsnorm(x, T, C, get(p + "input_layernorm.weight"), cfg.rmsNormEps);
    const q = linear(
      h,
      T,
      get(p + "self_attn.q_proj.weight"),
      H * D,
      C,
      weights.get(p + "self_attn.q_proj.bias"),
    );
    const k = linear(
      h,
      T,
      get(p + "self_attn.k_proj.weight"),
      Hkv * D,
      C,
      weights.get(p + "self_attn.k_proj.bias"),
    );
    const v = linear(
      h,
      T,
      get(p + "self_attn.v_proj.weight"),
      Hkv * D,
      C,
      weights.get(p + "self_attn.v_proj.bias"),
    );
    rope(q, T, H, D, pos, inv);
    rope(k, T, Hkv, D, pos, inv);
    const att = new Float64Array(T * H * D);
    const scale = 1 / Math.sqrt(D);
    for (let hh = 0; hh < H; hh++) {
      const kvh = Math.floor(hh / (H / Hkv));
      for (let t = 0; t < T; t++) {
        const s = new Float64Array(t + 1);
        let mx = -Infinity;
        for (let u = 0; u <= t; u++) {
          let d = 0;
          for (let i = 0; i < D; i++) d += q[(t * H + hh) * D + i] * k[(u * Hkv + kvh) * D + i];
          s[u] = d * scale;
          mx = Math.max(mx, s[u]);
        }
        let z = 0;
        for (let u = 0; u <= t; u++) z += s[u] = Math.exp(s[u] - mx);
        for (let u = 0; u <= t; u++) {
          for (let i = 0; i < D; i++) {
            att[(t * H + hh) * D + i] += (s[u] / z) * v[(u * Hkv + kvh) * D + i];
          }
        }
      }
    }
    const o = linear(
      att,
      T,
      get(p + "self_attn.o_proj.weight"),
      C,
      H * D,
      weights.get(p + "self_attn.o_proj.bias"),
    );
    for (let i = 0; i < x.length; i++) x[i] += o[i];
    const h2 = rmsnorm(x, T, C, get(p + "post_attention_layernorm.weight"), cfg.rmsNormEps);
    const g = linear(h2, T, get(p + "mlp.gate_proj.weight"), F, C);
    const u = linear(h2, T, get(p + "mlp.up_proj.weight"), F, C);
    for (let i = 0; i < g.length; i++) g[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
    const d = linear(g, T, get(p + "mlp.down_proj.weight"), C, F);
    const nx = new Float64Array(x.length);
    for (let i = 0; i < x.length; i++) nx[i] = x[i] + d[i];
    x = nx;
  }
  const hf = rmsnorm(x, T, C, get("model.norm.weight"), cfg.rmsNormEps);
  const head = weights.get("lm_head.weight") ?? emb;
  return linear(hf, T, head, V, C);
}

/** Next-token NLL at every position t (predicting tokens[t+1]) from logits [T, V]. */
export function refNll(
  logits: ArrayLike<number>,
  tokens: readonly number[],
  vocab: number,
): Float64Array {
  const out = new Float64Array(tokens.length - 1);
  for (let t = 0; t + 1 < tokens.length; t++) {
    let mx = -Infinity;
    for (let v = 0; v < vocab; v++) mx = Math.max(mx, logits[t * vocab + v]);
    let z = 0;
    for (let v = 0; v < vocab; v++) z += Math.exp(logits[t * vocab + v] - mx);
    out[t] = Math.log(z) + mx - logits[t * vocab + tokens[t + 1]];
  }
  return out;
}
