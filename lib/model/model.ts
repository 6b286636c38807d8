/**
 * The Llama decoder on the GPU: forward and backward of the whole model over a packed batch,
 * llm.c style (each block's forward and backward written out, activations kept explicitly),
 * with adapters (HiRA, LoRA) on chosen projections or every weight trainable (full
 * fine-tuning), and optional gradient checkpointing (only each layer's input is kept; the layer
 * is recomputed in backward).
 * @module
 */
import { type Gpu, splitRows, type Tensor } from "../engine/gpu.ts";
import type { LlamaConfig, Projection } from "./config.ts";
import { modulePath, PROJECTIONS, projectionShape } from "./config.ts";
import { matmul } from "../ops/matmul.ts";
import { rmsnorm, rmsnormBackward } from "../ops/norm.ts";
import { positionsFor, rope, ropeBackward, ropeFrequencies } from "../ops/rope.ts";
import { swiglu, swigluBackward } from "../ops/activation.ts";
import { embedding, embeddingBackward, embeddingBackwardPlan } from "../ops/embedding.ts";
import { crossEntropy, lossSum } from "../ops/loss.ts";
import { attentionBackward, attentionForward, type AttentionSaved } from "../ops/attention.ts";
import { add } from "../ops/elementwise.ts";
import { addBias, biasGrad, copyColumns } from "../ops/linear.ts";
import type { LinearAdapter } from "./adapters.ts";

/** Weights of one decoder layer. */
export interface LayerWeights {
  inputNorm: Tensor;
  postNorm: Tensor;
  proj: Record<Projection, Tensor>;
  /** q/k/v biases (Qwen2). */
  bias: Partial<Record<Projection, Tensor>>;
}

/** All weights of the model on the GPU. */
export interface ModelWeights {
  /** Embedding table as row shards (one shard unless above the binding limit). */
  embed: Tensor[];
  layers: LayerWeights[];
  norm: Tensor;
  /** Untied output head as row shards; null when tied to the embedding. */
  lmHead: Tensor[] | null;
}

/** A packed batch: sequences concatenated without padding. */
export interface Batch {
  /** Token ids [N]. */
  tokens: Int32Array;
  /** Next-token targets [N]; negative = not counted. */
  targets: Int32Array;
  /** Prefix sums of sequence lengths [B+1]. */
  cuSeqlens: Uint32Array;
  /** Number of counted targets. */
  numCounted: number;
}

/** Saved activations of one layer for backward. */
interface LayerActs {
  x: Tensor;
  h1?: Tensor;
  rstd1?: Tensor;
  q?: Tensor;
  k?: Tensor;
  v?: Tensor;
  attn?: AttentionSaved;
  x2?: Tensor;
  h2?: Tensor;
  rstd2?: Tensor;
  g?: Tensor;
  u?: Tensor;
  m?: Tensor;
}

/** Tokens in the longest sequence of a packed batch's boundaries. */
export function maxSeqLen(cuSeqlens: ArrayLike<number>): number {
  let m = 0;
  for (let i = 1; i < cuSeqlens.length; i++) m = Math.max(m, cuSeqlens[i] - cuSeqlens[i - 1]);
  return m;
}

/** Per-batch tensors shared by every layer. */
interface BatchCtx {
  n: number;
  ids: Tensor;
  positions: Tensor;
  cu: Tensor;
  /** Tokens in the longest sequence (for the attention kernels' loop-budget check). */
  maxSeqLen: number;
}

/** Gradients of the base weights, present only for full fine-tuning. */
export interface BaseGrads {
  embed: Tensor[];
  layers: LayerWeights[];
  norm: Tensor;
  lmHead: Tensor[] | null;
}

/** The model plus what training attaches to it. */
export class LlamaModel {
  /** Adapters by module path ("model.layers.0.self_attn.q_proj"). */
  adapters: Map<string, LinearAdapter> = new Map();
  /** Which adapter halves train (the reference's --train_ab); frozen halves get no update. */
  adapterTrain: { A: boolean; B: boolean } = { A: true, B: true };
  /** Base-weight gradients (full fine-tuning), or null when the base is frozen. */
  baseGrads: BaseGrads | null = null;
  /** Keep only layer inputs in forward and recompute in backward. */
  gradCheckpointing = false;

  /** Bytes of activations held at the peak of the last training step. */
  peakActivationBytes = 0;
  readonly invFreq: Tensor;
  readonly headDim: number;
  #liveActBytes = 0;
  #keepLossRows = false;
  #lossRows: Tensor | null = null;

  constructor(readonly gpu: Gpu, readonly config: LlamaConfig, readonly weights: ModelWeights) {
    this.headDim = config.headDim;
    this.invFreq = gpu.upload(ropeFrequencies(config), [config.headDim / 2]);
  }

  /** Row counts of the embedding / head shards for this GPU's binding limit. */
  static shardRows(gpu: Gpu, cfg: LlamaConfig, dtype: "f32" | "f16" = "f32"): number[] {
    return splitRows(
      cfg.vocabSize,
      cfg.hiddenSize,
      dtype === "f16" ? 2 : 4,
      gpu.limits.maxStorageBufferBindingSize,
    );
  }

  /** Bytes of every base weight tensor on the GPU (unpadded; f16 matrices count 2 per value). */
  get weightBytes(): number {
    const w = this.weights;
    let n = w.norm.byteLength;
    for (const t of [...w.embed, ...(w.lmHead ?? [])]) n += t.byteLength;
    for (const l of w.layers) {
      n += l.inputNorm.byteLength + l.postNorm.byteLength;
      for (const p of PROJECTIONS) n += l.proj[p].byteLength + (l.bias[p]?.byteLength ?? 0);
    }
    return n;
  }

  /** Output-head shards (the embedding when tied). */
  get head(): Tensor[] {
    return this.weights.lmHead ?? this.weights.embed;
  }

  /** Makes every base weight trainable: allocates zeroed gradients. */
  enableBaseGrads(): void {
    if (this.weights.layers.some((l) => PROJECTIONS.some((p) => l.proj[p].dtype !== "f32"))) {
      throw new Error("full fine-tuning needs f32 base weights (load with weightDtype f32)");
    }
    if ([...this.weights.embed, ...(this.weights.lmHead ?? [])].some((t) => t.dtype !== "f32")) {
      throw new Error("full fine-tuning needs an f32 embedding (load with weightDtype f32)");
    }
    const g = this.gpu;
    const z = (t: Tensor) => g.zeros(t.shape);
    const w = this.weights;
    this.baseGrads = {
      embed: w.embed.map(z),
      norm: z(w.norm),
      lmHead: w.lmHead ? w.lmHead.map(z) : null,
      layers: w.layers.map((l) => ({
        inputNorm: z(l.inputNorm),
        postNorm: z(l.postNorm),
        proj: Object.fromEntries(PROJECTIONS.map((p) => [p, z(l.proj[p])])) as Record<
          Projection,
          Tensor
        >,
        bias: Object.fromEntries(
          Object.entries(l.bias).map(([p, t]) => [p, z(t as Tensor)]),
        ) as Partial<Record<Projection, Tensor>>,
      })),
    };
  }

  /**
   * Returns every buffer the model holds (weights, biases, norms, adapters, base gradients) to
   * the pool; the model is unusable afterwards. For a long-lived page that switches models.
   */
  release(): void {
    const all = (w: {
      embed: Tensor[];
      norm: Tensor;
      lmHead: Tensor[] | null;
      layers: LayerWeights[];
    }) => [
      ...w.embed,
      ...(w.lmHead ?? []),
      w.norm,
      ...w.layers.flatMap((l) => [
        l.inputNorm,
        l.postNorm,
        ...Object.values(l.proj),
        ...Object.values(l.bias),
      ]),
    ];
    const tensors = [...all(this.weights), ...(this.baseGrads ? all(this.baseGrads) : [])];
    for (const t of tensors) if (t && !t.released) t.release();
    this.releaseAdapters();
    this.baseGrads = null;
  }

  /** Removes every adapter and returns its buffers to the pool (before attaching others). */
  releaseAdapters(): void {
    for (const a of this.adapters.values()) a.release();
    this.adapters.clear();
  }

  #track(t: Tensor): Tensor {
    this.#liveActBytes += t.byteLength;
    this.peakActivationBytes = Math.max(this.peakActivationBytes, this.#liveActBytes);
    return t;
  }

  #free(...ts: (Tensor | undefined | null)[]): void {
    for (const t of ts) {
      if (t && !t.released) {
        this.#liveActBytes -= t.byteLength;
        t.release();
      }
    }
  }

  /** The LoRA dropout mask ids the adapters of layer `l` will use next. */
  #dropoutCounters(l: number): Map<LinearAdapter, number> {
    const m = new Map<LinearAdapter, number>();
    for (const p of PROJECTIONS) {
      const ad = this.adapters.get(modulePath(l, p));
      if (ad?.dropoutCounter !== undefined) {
        m.set(ad, ad.dropoutCounter);
      }
    }
    return m;
  }

  #ctx(tokens: Int32Array, cuSeqlens: Uint32Array): BatchCtx {
    const n = tokens.length;
    if (cuSeqlens[cuSeqlens.length - 1] !== n) {
      throw new Error(`batch: cuSeqlens ends at ${cuSeqlens.at(-1)}, but there are ${n} tokens`);
    }
    for (const t of tokens) {
      if (t < 0 || t >= this.config.vocabSize) {
        throw new Error(
          `batch: token id ${t} is outside the vocabulary (${this.config.vocabSize})`,
        );
      }
    }
    const g = this.gpu;
    return {
      n,
      ids: g.upload(tokens, [n], "i32"),
      positions: g.upload(positionsFor(cuSeqlens), [n], "u32"),
      cu: g.upload(cuSeqlens, [cuSeqlens.length], "u32"),
      maxSeqLen: maxSeqLen(cuSeqlens),
    };
  }

  #freeCtx(c: BatchCtx): void {
    c.ids.release();
    c.positions.release();
    c.cu.release();
  }

  /**
   * Train or inference mode for the adapters (only LoRA dropout depends on it, as nn.Dropout
   * does on model.train()/eval()). The trainer sets it on each step; decoders turn it off.
   */
  setTraining(on: boolean): void {
    for (const a of this.adapters.values()) a.training = on;
  }

  /** y = x·Wᵀ (+ bias) of projection `p` in layer `l`, through its adapter when it has one. */
  async linear(l: number, p: Projection, x: Tensor): Promise<Tensor> {
    const lw = this.weights.layers[l];
    const ad = this.adapters.get(modulePath(l, p));
    const bias = lw.bias[p];
    if (ad) return await ad.forward(x, lw.proj[p], bias);
    const y = await matmul(this.gpu, x, lw.proj[p], { transB: true });
    if (bias) await addBias(this.gpu, y, bias);
    return y;
  }

  /**
   * Backward of one projection: accumulates dX into `dx` (or returns a new dX when `dx` is
   * null), and the adapter's or the base weight's gradients.
   */
  async #linearBack(
    l: number,
    p: Projection,
    x: Tensor,
    dy: Tensor,
    dx: Tensor | null,
    needDx: boolean,
  ): Promise<Tensor | null> {
    const g = this.gpu;
    const lw = this.weights.layers[l];
    const ad = this.adapters.get(modulePath(l, p));
    let out: Tensor | null = dx;
    if (ad) {
      const r = await ad.backward(x, lw.proj[p], dy, {
        dx: dx ?? undefined,
        accumulateDx: dx !== null,
        needDx,
      });
      if (!dx) out = r;
    } else if (needDx) {
      out = await matmul(g, dy, lw.proj[p], dx ? { out: dx, accumulate: true } : {});
    }
    const bg = this.baseGrads?.layers[l];
    if (bg) {
      await matmul(g, dy, x, { transA: true, out: bg.proj[p], accumulate: true });
      const b = bg.bias[p];
      if (b) await biasGrad(g, dy, b);
    }
    return out;
  }

  async #layerForward(l: number, x: Tensor, c: BatchCtx, save: boolean): Promise<{
    out: Tensor;
    acts: LayerActs;
  }> {
    const g = this.gpu, cfg = this.config, lw = this.weights.layers[l];
    const { n } = c;
    const H = cfg.numHeads, Hkv = cfg.numKvHeads, D = cfg.headDim;
    const t = (x: Tensor) => this.#track(x);
    const n1 = await rmsnorm(g, x, lw.inputNorm, cfg.rmsNormEps);
    const h1 = t(n1.y), rstd1 = t(n1.rstd);
    const q0 = await this.linear(l, "q_proj", h1);
    const k0 = await this.linear(l, "k_proj", h1);
    const v = t(await this.linear(l, "v_proj", h1));
    const q = t(await rope(g, q0.reshape([n, H, D]), c.positions, this.invFreq));
    const k = t(await rope(g, k0.reshape([n, Hkv, D]), c.positions, this.invFreq));
    q0.release();
    k0.release();
    const attn = await attentionForward(g, q, k, v.reshape([n, Hkv, D]), c.cu, {
      scale: 1 / Math.sqrt(D),
      maxSeqLen: c.maxSeqLen,
    });
    t(attn.out);
    t(attn.lse);
    const a = await this.linear(l, "o_proj", attn.out.reshape([n, H * D]));
    const x2 = t(await add(g, x, a));
    a.release();
    const n2 = await rmsnorm(g, x2, lw.postNorm, cfg.rmsNormEps);
    const h2 = t(n2.y), rstd2 = t(n2.rstd);
    const gg = t(await this.linear(l, "gate_proj", h2));
    const u = t(await this.linear(l, "up_proj", h2));
    const m = t(await swiglu(g, gg, u));
    const d = await this.linear(l, "down_proj", m);
    const out = this.#track(await add(g, x2, d));
    d.release();
    const acts: LayerActs = { x, h1, rstd1, q, k, v, attn, x2, h2, rstd2, g: gg, u, m };
    if (!save) {
      this.#free(h1, rstd1, q, k, v, attn.out, attn.lse, x2, h2, rstd2, gg, u, m);
      return { out, acts: { x } };
    }
    return { out, acts };
  }

  /** Backward of one layer; consumes `dOut` and the saved activations; returns dX. */
  async #layerBackward(
    l: number,
    a: LayerActs,
    dOut: Tensor,
    c: BatchCtx,
    needDx: boolean,
  ): Promise<Tensor | null> {
    const g = this.gpu, cfg = this.config, lw = this.weights.layers[l];
    const bg = this.baseGrads?.layers[l];
    const { n } = c;
    const H = cfg.numHeads, Hkv = cfg.numKvHeads, D = cfg.headDim;
    // MLP block: out = x2 + down(swiglu(gate(h2), up(h2))).
    const dm = (await this.#linearBack(l, "down_proj", a.m!, dOut, null, true))!;
    const sw = await swigluBackward(g, a.g!, a.u!, dm);
    dm.release();
    this.#free(a.m);
    const dh2 = (await this.#linearBack(l, "gate_proj", a.h2!, sw.dGate, null, true))!;
    await this.#linearBack(l, "up_proj", a.h2!, sw.dUp, dh2, true);
    sw.dGate.release();
    sw.dUp.release();
    this.#free(a.g, a.u);
    // The residual's gradient flows straight through: accumulate the norm's dX into dOut.
    await rmsnormBackward(g, a.x2!, lw.postNorm, a.rstd2!, dh2, {
      dw: bg?.postNorm,
      dx: dOut,
      accumulate: true,
    });
    dh2.release();
    this.#free(a.h2, a.rstd2);
    const dx2 = dOut;
    // Attention block: x2 = x + o(attn(rope(q(h1)), rope(k(h1)), v(h1))).
    const dAttn = (await this.#linearBack(
      l,
      "o_proj",
      a.attn!.out.reshape([n, H * D]),
      dx2,
      null,
      true,
    ))!;
    const ag = await attentionBackward(
      g,
      a.q!,
      a.k!,
      a.v!.reshape([n, Hkv, D]),
      a.attn!,
      dAttn.reshape([n, H, D]),
      c.cu,
      { scale: 1 / Math.sqrt(D), maxSeqLen: c.maxSeqLen },
    );
    dAttn.release();
    this.#free(a.attn!.out, a.attn!.lse, a.q, a.k);
    const dq = await ropeBackward(g, ag.dq, c.positions, this.invFreq);
    const dk = await ropeBackward(g, ag.dk, c.positions, this.invFreq);
    ag.dq.release();
    ag.dk.release();
    const needDh1 = needDx || this.baseGrads !== null;
    const dh1 = await this.#linearBack(l, "q_proj", a.h1!, dq.reshape([n, H * D]), null, needDh1);
    await this.#linearBack(l, "k_proj", a.h1!, dk.reshape([n, Hkv * D]), dh1, needDh1);
    await this.#linearBack(l, "v_proj", a.h1!, ag.dv.reshape([n, Hkv * D]), dh1, needDh1);
    dq.release();
    dk.release();
    ag.dv.release();
    this.#free(a.v, a.h1);
    let dx: Tensor | null = null;
    if (dh1) {
      await rmsnormBackward(g, a.x, lw.inputNorm, a.rstd1!, dh1, {
        dw: bg?.inputNorm,
        dx: dx2,
        accumulate: true,
      });
      dh1.release();
      dx = dx2;
    } else dx2.release();
    this.#free(a.rstd1, a.x2);
    return needDx ? dx : (dx?.release(), null);
  }

  /** Logits [rows, vocab] of final hidden rows `hf` [rows, C] into `out` (column blocks per shard). */
  async #headLogits(hf: Tensor, out: Tensor): Promise<void> {
    const V = this.config.vocabSize;
    let v0 = 0;
    for (const shard of this.head) {
      await matmul(this.gpu, hf, shard, { transB: true, out, outStride: V, outOffset: v0 });
      v0 += shard.shape[0];
    }
  }

  /**
   * Rows per logits chunk so one [rows, vocab] block fits one binding; a multiple of 64 so each
   * chunk's row views start at a storage-aligned offset (64 rows × 4 bytes = 256).
   */
  #logitRows(): number {
    const V = this.config.vocabSize;
    const fit = Math.floor(this.gpu.limits.maxStorageBufferBindingSize / (V * 4));
    if (fit < 64) throw new Error(`vocabulary of ${V} is too large for one binding`);
    return Math.min(4096, Math.floor(fit / 64) * 64);
  }

  /**
   * Forward only: logits [rows.length, vocab] at the given token rows (default: all rows),
   * read back to the host.
   */
  async logits(
    tokens: Int32Array,
    cuSeqlens: Uint32Array,
    rows?: Int32Array,
  ): Promise<Float32Array> {
    const g = this.gpu, cfg = this.config;
    const c = this.#ctx(tokens, cuSeqlens);
    let x = await embedding(g, this.weights.embed, c.ids);
    for (let l = 0; l < cfg.numLayers; l++) {
      const { out } = await this.#layerForward(l, x, c, false);
      this.#free(x);
      x = out;
    }
    const sel = rows ?? Int32Array.from({ length: c.n }, (_, i) => i);
    const selT = g.upload(sel, [sel.length], "i32");
    const xs = await embedding(g, [x], selT);
    this.#free(x);
    selT.release();
    const nf = await rmsnorm(g, xs, this.weights.norm, cfg.rmsNormEps);
    xs.release();
    nf.rstd.release();
    const V = cfg.vocabSize, chunk = this.#logitRows();
    const result = new Float32Array(sel.length * V);
    for (let r0 = 0; r0 < sel.length; r0 += chunk) {
      const rows = Math.min(chunk, sel.length - r0);
      const lg = g.empty([rows, V]);
      await this.#headLogits(nf.y.rows(r0, rows), lg);
      result.set(await g.read(lg), r0 * V);
      lg.release();
    }
    nf.y.release();
    this.#freeCtx(c);
    return result;
  }

  /**
   * Forward and backward of the mean next-token cross-entropy over the counted targets.
   * Gradients accumulate into the adapters (and base grads when enabled). Returns the summed
   * loss as a 1-element GPU tensor (not read back: the trainer reads it with the grad norm).
   */
  async trainStep(
    batch: Batch,
    lossScale: number = 1 / Math.max(1, batch.numCounted),
    backward = true,
  ): Promise<Tensor> {
    const g = this.gpu, cfg = this.config;
    const c = this.#ctx(batch.tokens, batch.cuSeqlens);
    const { n } = c;
    const trainEmbed = this.baseGrads !== null;
    this.#liveActBytes = 0;
    this.peakActivationBytes = 0;
    // Forward.
    let x = this.#track(await embedding(g, this.weights.embed, c.ids));
    const acts: LayerActs[] = [];
    // LoRA dropout draws a new mask per forward; a recomputed layer must reuse its mask ids.
    const maskIds: Map<LinearAdapter, number>[] = [];
    for (let l = 0; l < cfg.numLayers; l++) {
      maskIds.push(this.#dropoutCounters(l));
      const { out, acts: a } = await this.#layerForward(
        l,
        x,
        c,
        backward && !this.gradCheckpointing,
      );
      acts.push(a);
      if (!backward) this.#free(x);
      x = out;
    }
    // Loss only at counted rows: gather them first (RMSNorm is per row, so this is exact).
    const countedPos: number[] = [], countedTgt: number[] = [];
    batch.targets.forEach((t, i) => {
      if (t >= 0) {
        countedPos.push(i);
        countedTgt.push(t);
      }
    });
    const nc = countedPos.length;
    let lossTotal: Tensor | null = null;
    const dxLast = this.#track(g.zeros([n, cfg.hiddenSize]));
    if (nc > 0) {
      const posT = g.upload(countedPos, [nc], "i32");
      const tgtT = g.upload(countedTgt, [nc], "i32");
      const xs = await embedding(g, [x], posT);
      const nf = await rmsnorm(g, xs, this.weights.norm, cfg.rmsNormEps);
      const dhf = g.zeros([nc, cfg.hiddenSize]);
      // Per-row losses of every chunk land in one tensor, summed once at the end.
      const lossRows = g.zeros([nc]);
      const V = cfg.vocabSize, chunk = this.#logitRows();
      for (let r0 = 0; r0 < nc; r0 += chunk) {
        const rows = Math.min(chunk, nc - r0);
        const lg = g.empty([rows, V]);
        const hf = nf.y.rows(r0, rows);
        await this.#headLogits(hf, lg);
        await crossEntropy(g, lg, tgtT.rows(r0, rows), {
          scale: lossScale,
          backward,
          dlogits: lg,
          loss: lossRows.rows(r0, rows),
        });
        if (!backward) {
          lg.release();
          continue;
        }
        // dhf = dlogits · W_head; head grads = dlogitsᵀ · hf.
        let v0 = 0;
        const headGrads = this.baseGrads ? (this.baseGrads.lmHead ?? this.baseGrads.embed) : null;
        for (const [i, shard] of this.head.entries()) {
          const vi = shard.shape[0];
          const block = this.head.length === 1 ? lg : await copyColumns(g, lg, v0, vi);
          await matmul(g, block, shard, { out: dhf.rows(r0, rows), accumulate: true });
          if (headGrads) {
            await matmul(g, block, hf, { transA: true, out: headGrads[i], accumulate: true });
          }
          if (block !== lg) block.release();
          v0 += vi;
        }
        lg.release();
      }
      lossTotal = await lossSum(g, lossRows);
      if (this.#keepLossRows) this.#lossRows = lossRows;
      else lossRows.release();
      if (!backward) {
        for (const t of [posT, tgtT, xs, nf.y, nf.rstd, dhf]) t.release();
        this.#free(x, dxLast);
        this.#freeCtx(c);
        return lossTotal;
      }
      const dxs = await rmsnormBackward(g, xs, this.weights.norm, nf.rstd, dhf, {
        dw: this.baseGrads?.norm,
      });
      // Scatter the counted rows' gradient back into [n, C].
      await embeddingBackward(g, dxs, posT, embeddingBackwardPlan(Int32Array.from(countedPos)), [
        dxLast,
      ]);
      for (const t of [posT, tgtT, xs, nf.y, nf.rstd, dhf, dxs]) t.release();
    }
    this.#free(x);
    lossTotal ??= g.zeros([1]);
    if (!backward) {
      this.#free(dxLast);
      this.#freeCtx(c);
      return lossTotal;
    }
    // Backward through the layers.
    let dx: Tensor | null = dxLast;
    for (let l = cfg.numLayers - 1; l >= 0; l--) {
      let a = acts[l];
      if (this.gradCheckpointing) {
        for (const [ad, id] of maskIds[l]) ad.dropoutCounter = id;
        const r = await this.#layerForward(l, a.x, c, true);
        this.#free(r.out);
        a = r.acts;
      }
      const need = l > 0 || trainEmbed;
      const next = await this.#layerBackward(l, a, dx!, c, need);
      this.#liveActBytes -= dx!.byteLength;
      if (l > 0) this.#free(a.x);
      dx = next;
      if (dx) this.#track(dx);
    }
    if (trainEmbed && dx) {
      await embeddingBackward(
        g,
        dx,
        c.ids,
        embeddingBackwardPlan(batch.tokens),
        this.baseGrads!.embed,
      );
    }
    this.#free(dx, acts[0]?.x);
    this.#freeCtx(c);
    return lossTotal;
  }

  /**
   * Forward only: the next-token NLL of every counted target, in token order (one readback).
   * The sum over a sequence's rows is its total NLL (perplexity = exp(mean)).
   */
  async tokenNll(batch: Batch): Promise<Float32Array> {
    this.#keepLossRows = true;
    try {
      const total = await this.trainStep(batch, 1, false);
      const rows = this.#lossRows;
      this.#lossRows = null;
      if (!rows) {
        total.release();
        return new Float32Array(0);
      }
      const out = await this.gpu.read(rows);
      rows.release();
      total.release();
      return out;
    } finally {
      this.#keepLossRows = false;
    }
  }

  /** Every trainable tensor with its gradient and whether weight decay applies. */
  trainable(): { name: string; param: Tensor; grad: Tensor; decay: boolean }[] {
    const out: { name: string; param: Tensor; grad: Tensor; decay: boolean }[] = [];
    for (const [path, ad] of this.adapters) {
      for (const p of ad.params()) {
        const half = /_A(\.weight)?$/.test(p.suffix) ? "A" : "B";
        if (!this.adapterTrain[half]) continue;
        out.push({
          name: `base_model.model.${path}.${p.suffix}`,
          param: p.param,
          grad: p.grad,
          decay: true,
        });
      }
    }
    const bg = this.baseGrads;
    if (bg) {
      const w = this.weights;
      // HF Trainer excludes biases and norm weights from weight decay.
      w.embed.forEach((t, i) =>
        out.push({
          name: `model.embed_tokens.weight#${i}`,
          param: t,
          grad: bg.embed[i],
          decay: true,
        })
      );
      w.lmHead?.forEach((t, i) =>
        out.push({ name: `lm_head.weight#${i}`, param: t, grad: bg.lmHead![i], decay: true })
      );
      out.push({ name: "model.norm.weight", param: w.norm, grad: bg.norm, decay: false });
      w.layers.forEach((lw, l) => {
        const gl = bg.layers[l];
        out.push({
          name: `model.layers.${l}.input_layernorm.weight`,
          param: lw.inputNorm,
          grad: gl.inputNorm,
          decay: false,
        });
        out.push({
          name: `model.layers.${l}.post_attention_layernorm.weight`,
          param: lw.postNorm,
          grad: gl.postNorm,
          decay: false,
        });
        for (const p of PROJECTIONS) {
          out.push({
            name: `${modulePath(l, p)}.weight`,
            param: lw.proj[p],
            grad: gl.proj[p],
            decay: true,
          });
          const b = lw.bias[p];
          if (b) {
            out.push({
              name: `${modulePath(l, p)}.bias`,
              param: b,
              grad: gl.bias[p]!,
              decay: false,
            });
          }
        }
      });
    }
    return out;
  }
}

/** Checks a weight's shape and returns it, naming the tensor and file on mismatch. */
export function expectShape(
  name: string,
  file: string,
  got: readonly number[],
  want: readonly number[],
): void {
  if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
    throw new Error(`${file}: tensor ${name} has shape [${got}], expected [${want}]`);
  }
}

/** Shapes of every base tensor by its Hugging Face name. */
export function expectedTensors(cfg: LlamaConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  m.set("model.embed_tokens.weight", [cfg.vocabSize, cfg.hiddenSize]);
  m.set("model.norm.weight", [cfg.hiddenSize]);
  if (!cfg.tieWordEmbeddings) m.set("lm_head.weight", [cfg.vocabSize, cfg.hiddenSize]);
  for (let l = 0; l < cfg.numLayers; l++) {
    m.set(`model.layers.${l}.input_layernorm.weight`, [cfg.hiddenSize]);
    m.set(`model.layers.${l}.post_attention_layernorm.weight`, [cfg.hiddenSize]);
    for (const p of PROJECTIONS) {
      m.set(`${modulePath(l, p)}.weight`, projectionShape(cfg, p));
      if (cfg.biasProjections.includes(p)) {
        m.set(`${modulePath(l, p)}.bias`, [projectionShape(cfg, p)[0]]);
      }
    }
  }
  return m;
}
