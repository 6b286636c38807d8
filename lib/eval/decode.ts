/**
 * The model side of generation (lib/eval/generate.ts): next-token log-probs from a
 * {@linkcode LlamaModel}, either by recomputing every sequence from scratch (the oracle) or
 * incrementally with a KV cache on the GPU.
 *
 * Adapters apply through `model.linear`, so decoding uses whatever the model carries (merged
 * decoding is a model whose weights were merged). Both decoders put the adapters in inference
 * mode (`model.setTraining(false)`: no LoRA dropout), as the reference's model.eval() does.
 * @module
 */
import type { Gpu, Tensor } from "../engine/gpu.ts";
import { checkStep, type StepFn, type Stepper } from "./generate.ts";
import type { LlamaModel } from "../model/model.ts";
import { matmul } from "../ops/matmul.ts";
import { rmsnorm } from "../ops/norm.ts";
import { rope } from "../ops/rope.ts";
import { swiglu } from "../ops/activation.ts";
import { embedding } from "../ops/embedding.ts";
import { attentionDecode, attentionForward } from "../ops/attention.ts";
import { add } from "../ops/elementwise.ts";
import { kvGather, kvScatter } from "../ops/kvcache.ts";

/** Log-softmax of every row of `logits` [rows, v], computed in f64 and rounded to f32 once. */
export function logSoftmaxRows(logits: Float32Array, v: number): Float32Array {
  const out = new Float32Array(logits.length);
  for (let r = 0; r * v < logits.length; r++) {
    const o = r * v;
    let max = -Infinity;
    for (let j = 0; j < v; j++) max = Math.max(max, logits[o + j]);
    let sum = 0;
    for (let j = 0; j < v; j++) sum += Math.exp(logits[o + j] - max);
    const lse = max + Math.log(sum);
    for (let j = 0; j < v; j++) out[o + j] = logits[o + j] - lse;
  }
  return out;
}

/** Packed tokens, prefix sums of the lengths, and the flat row of each sequence's last token. */
function pack(seqs: readonly (readonly number[])[]): {
  tokens: Int32Array;
  cuSeqlens: Uint32Array;
  lastRows: Int32Array;
} {
  const cu = new Uint32Array(seqs.length + 1);
  seqs.forEach((s, i) => {
    if (s.length === 0) throw new Error(`decode: sequence ${i} is empty`);
    cu[i + 1] = cu[i] + s.length;
  });
  const tokens = new Int32Array(cu[seqs.length]);
  seqs.forEach((s, i) => tokens.set(s, cu[i]));
  const lastRows = Int32Array.from(seqs, (_, i) => cu[i + 1] - 1);
  return { tokens, cuSeqlens: cu, lastRows };
}

/**
 * A {@linkcode StepFn} that runs every sequence through the whole model each call (one packed
 * batch, one readback of the last row of each) and takes the log-softmax on the host in f64.
 * Quadratic in the length, but it shares no state between steps, so it is the oracle for
 * {@linkcode KvCacheDecoder}.
 */
export function recomputeStep(model: LlamaModel): StepFn {
  return async (seqs) => {
    model.setTraining(false);
    const { tokens, cuSeqlens, lastRows } = pack(seqs);
    const logits = await model.logits(tokens, cuSeqlens, lastRows);
    return logSoftmaxRows(logits, model.config.vocabSize);
  };
}

/**
 * Incremental decoding with a KV cache on the GPU, as a {@linkcode Stepper}.
 *
 * `start` runs the prompts as one packed batch (causal attention within each prompt) and keeps
 * every layer's roped keys and values in caches [S, Tmax, Hkv, D], Tmax = longest prompt +
 * maxNewTokens. Each `step` then feeds one token per sequence: if the new list is not the old
 * one's prefix (beams reordered, duplicated or dropped), one gather per layer first builds the
 * caches of the new list; then every layer writes the new token's K and V at its position and
 * attends over the cache with `attentionDecode`. One readback per call: logits [S, V], kept in
 * {@linkcode lastLogits}, of which the log-softmax is taken on the host in f64.
 */
export class KvCacheDecoder implements Stepper {
  /** Raw logits [S, V] of the latest start/step, for scoring and tests. */
  lastLogits: Float32Array | null = null;
  /** Caches per layer [capacity ≥ S, Tmax, Hkv, D]; sequence s is row block s. */
  #k: Tensor[] = [];
  #v: Tensor[] = [];
  /** Tokens held so far by each live sequence (its next position). */
  #lens: number[] = [];
  #tmax = 0;

  /** A decoder for `model`; nothing is allocated before {@linkcode start}. */
  constructor(readonly model: LlamaModel) {}

  /** Number of live sequences. */
  get sequences(): number {
    return this.#lens.length;
  }

  /** Rows per sequence in the caches (longest prompt + maxNewTokens). */
  get maxLength(): number {
    return this.#tmax;
  }

  /** Prefills the caches with the prompts; returns the next-token log-probs [prompts, V]. */
  async start(
    prompts: readonly (readonly number[])[],
    maxNewTokens: number,
  ): Promise<Float32Array> {
    this.end();
    const m = this.model, g = m.gpu, cfg = m.config;
    m.setTraining(false);
    if (prompts.length === 0) throw new Error("KvCacheDecoder.start: no prompts");
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) {
      throw new Error(`KvCacheDecoder.start: maxNewTokens ${maxNewTokens} is not a count`);
    }
    const { tokens, cuSeqlens, lastRows } = pack(prompts);
    this.#checkTokens(tokens);
    const lens = prompts.map((p) => p.length);
    const longest = Math.max(...lens);
    const tmax = longest + maxNewTokens;
    const n = tokens.length, nseq = prompts.length;
    const positions = new Uint32Array(n), cacheRows = new Uint32Array(n);
    prompts.forEach((p, s) => {
      for (let t = 0; t < p.length; t++) {
        positions[cuSeqlens[s] + t] = t;
        cacheRows[cuSeqlens[s] + t] = s * tmax + t;
      }
    });
    const cacheShape = [nseq, tmax, cfg.numKvHeads, cfg.headDim];
    this.#checkCacheSize(cacheShape);
    const ids = g.upload(tokens, [n], "i32");
    const pos = g.upload(positions, [n], "u32");
    const cu = g.upload(cuSeqlens, [nseq + 1], "u32");
    const rows = g.upload(cacheRows, [n], "u32");
    const last = g.upload(lastRows, [nseq], "i32");
    this.#tmax = tmax;
    let x = await embedding(g, m.weights.embed, ids);
    for (let l = 0; l < cfg.numLayers; l++) {
      this.#k.push(g.empty(cacheShape));
      this.#v.push(g.empty(cacheShape));
      const out = await this.#layer(l, x, pos, rows, { cu, maxSeqLen: longest });
      x.release();
      x = out;
    }
    const xs = await embedding(g, [x], last);
    x.release();
    for (const t of [ids, pos, cu, rows, last]) t.release();
    this.#lens = lens;
    return await this.#logProbs(xs);
  }

  /**
   * Feeds `tokens[i]` to a new sequence continuing live sequence `parents[i]`; returns the
   * next-token log-probs [parents.length, V] of the new list.
   */
  async step(parents: readonly number[], tokens: readonly number[]): Promise<Float32Array> {
    const m = this.model, g = m.gpu, cfg = m.config;
    if (this.#lens.length === 0) throw new Error("KvCacheDecoder.step: call start() first");
    checkStep(parents, tokens, this.#lens.length);
    const ids32 = Int32Array.from(tokens);
    this.#checkTokens(ids32);
    const s = parents.length, tmax = this.#tmax;
    const positions = Uint32Array.from(parents, (p) => this.#lens[p]);
    for (const p of positions) {
      if (p >= tmax) {
        throw new Error(`KvCacheDecoder.step: position ${p} is past the cache length ${tmax}`);
      }
    }
    const reorder = !parents.every((p, i) => p === i);
    if (reorder) this.#checkCacheSize([s, tmax, cfg.numKvHeads, cfg.headDim]);
    // Uploads first: a write submits pending work, so keep them ahead of the recorded step.
    const ids = g.upload(ids32, [s], "i32");
    const pos = g.upload(positions, [s], "u32");
    const lens = g.upload(positions.map((p) => p + 1), [s], "u32");
    const rows = g.upload(positions.map((p, i) => i * tmax + p), [s], "u32");
    const par = reorder ? g.upload(parents, [s], "u32") : null;
    if (par) {
      const copyRows = Math.max(...positions);
      for (let l = 0; l < cfg.numLayers; l++) {
        const moved = await kvGather(g, this.#k[l], this.#v[l], par, copyRows);
        // Safe to recycle now: whatever reuses the buffers is recorded after the gather.
        this.#k[l].release();
        this.#v[l].release();
        this.#k[l] = moved.k;
        this.#v[l] = moved.v;
      }
      par.release();
    }
    let x = await embedding(g, m.weights.embed, ids);
    for (let l = 0; l < cfg.numLayers; l++) {
      const out = await this.#layer(l, x, pos, rows, { lens, seqs: s });
      x.release();
      x = out;
    }
    for (const t of [ids, pos, lens, rows]) t.release();
    this.#lens = Array.from(positions, (p) => p + 1);
    return await this.#logProbs(x);
  }

  /** Releases the caches. */
  end(): void {
    for (const t of [...this.#k, ...this.#v]) t.release();
    this.#k = [];
    this.#v = [];
    this.#lens = [];
    this.#tmax = 0;
  }

  #checkTokens(tokens: Int32Array): void {
    const v = this.model.config.vocabSize;
    for (const t of tokens) {
      if (t < 0 || t >= v) {
        throw new Error(`decode: token id ${t} is outside the vocabulary (${v})`);
      }
    }
  }

  #checkCacheSize(shape: number[]): void {
    const bytes = shape.reduce((a, b) => a * b, 4);
    const limit = this.model.gpu.limits.maxStorageBufferBindingSize;
    if (bytes > limit) {
      throw new Error(
        `KvCacheDecoder: a layer's cache [${shape}] is ${bytes} bytes, over the ${limit}-byte ` +
          "binding limit; decode fewer sequences at once or shorten the generation",
      );
    }
  }

  /**
   * One decoder layer over x [N, C]. It is LlamaModel's layer forward (lib/model/model.ts,
   * #layerForward: norm → q/k/v via model.linear → RoPE → attention → o_proj → residual →
   * norm → SwiGLU MLP → residual), keeping nothing for backward and with the attention split
   * in two: the new keys and values go to cache rows `rows` (sequence·Tmax + position), then
   * - prefill (`cu` given): causal attention within each packed prompt, as the model does;
   * - decode (`lens` given): each of the `seqs` tokens attends over its sequence's cache.
   */
  async #layer(
    l: number,
    x: Tensor,
    pos: Tensor,
    rows: Tensor,
    mode: { cu: Tensor; maxSeqLen: number } | { lens: Tensor; seqs: number },
  ): Promise<Tensor> {
    const m = this.model, g = m.gpu, cfg = m.config, lw = m.weights.layers[l];
    const n = x.shape[0];
    const H = cfg.numHeads, Hkv = cfg.numKvHeads, D = cfg.headDim;
    const scale = 1 / Math.sqrt(D);
    const n1 = await rmsnorm(g, x, lw.inputNorm, cfg.rmsNormEps);
    n1.rstd.release();
    const q0 = await m.linear(l, "q_proj", n1.y);
    const k0 = await m.linear(l, "k_proj", n1.y);
    const v = await m.linear(l, "v_proj", n1.y);
    n1.y.release();
    const q = await rope(g, q0.reshape([n, H, D]), pos, m.invFreq);
    const k = await rope(g, k0.reshape([n, Hkv, D]), pos, m.invFreq);
    q0.release();
    k0.release();
    await kvScatter(g, k, v, rows, this.#k[l], this.#v[l]);
    let attn: Tensor;
    if ("cu" in mode) {
      const r = await attentionForward(g, q, k, v.reshape([n, Hkv, D]), mode.cu, {
        scale,
        maxSeqLen: mode.maxSeqLen,
      });
      r.lse.release();
      attn = r.out;
    } else {
      const kc = cacheView(this.#k[l], mode.seqs), vc = cacheView(this.#v[l], mode.seqs);
      attn = await attentionDecode(g, q, kc, vc, mode.lens, { scale });
    }
    q.release();
    k.release();
    v.release();
    const a = await m.linear(l, "o_proj", attn.reshape([n, H * D]));
    attn.release();
    const x2 = await add(g, x, a);
    a.release();
    const n2 = await rmsnorm(g, x2, lw.postNorm, cfg.rmsNormEps);
    n2.rstd.release();
    const gate = await m.linear(l, "gate_proj", n2.y);
    const up = await m.linear(l, "up_proj", n2.y);
    n2.y.release();
    const act = await swiglu(g, gate, up);
    gate.release();
    up.release();
    const d = await m.linear(l, "down_proj", act);
    act.release();
    const out = await add(g, x2, d);
    x2.release();
    d.release();
    return out;
  }

  /** Final norm and output head of hidden rows xs [S, C] (consumed); one readback. */
  async #logProbs(xs: Tensor): Promise<Float32Array> {
    const m = this.model, g = m.gpu, cfg = m.config;
    const nf = await rmsnorm(g, xs, m.weights.norm, cfg.rmsNormEps);
    xs.release();
    nf.rstd.release();
    const logits = await headLogits(g, m, nf.y);
    nf.y.release();
    this.lastLogits = logits;
    return logSoftmaxRows(logits, cfg.vocabSize);
  }
}

/** The first `seqs` sequences of a cache as a [seqs, Tmax, Hkv, D] tensor (no copy). */
function cacheView(cache: Tensor, seqs: number): Tensor {
  return cache.shape[0] === seqs ? cache : cache.rows(0, seqs);
}

/**
 * Logits [rows, V] of final-normed rows `hf` [rows, C], read back in one round trip. Mirrors
 * LlamaModel's head: one column block per head shard, in row chunks of at most one binding, each
 * chunk starting at a storage-aligned row (a multiple of 64).
 */
async function headLogits(g: Gpu, m: LlamaModel, hf: Tensor): Promise<Float32Array> {
  const V = m.config.vocabSize, rows = hf.shape[0];
  const fit = Math.floor(g.limits.maxStorageBufferBindingSize / (V * 4));
  if (fit < 64) throw new Error(`decode: vocabulary of ${V} is too large for one binding`);
  const chunk = Math.min(4096, Math.floor(fit / 64) * 64);
  const blocks: Tensor[] = [];
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    const n = Math.min(chunk, rows - r0);
    const lg = g.empty([n, V]);
    const part = n === rows ? hf : hf.rows(r0, n);
    let v0 = 0;
    for (const shard of m.head) {
      await matmul(g, part, shard, { transB: true, out: lg, outStride: V, outOffset: v0 });
      v0 += shard.shape[0];
    }
    blocks.push(lg);
  }
  const parts = await g.readMany(blocks);
  for (const b of blocks) b.release();
  if (parts.length === 1) return parts[0] as Float32Array;
  const out = new Float32Array(rows * V);
  let off = 0;
  for (const p of parts) {
    out.set(p as Float32Array, off);
    off += p.length;
  }
  return out;
}
