/**
 * Building a {@linkcode LlamaModel} on the GPU: from a checkpoint's {@linkcode WeightSet}
 * (validated against config.json, tensor by tensor, embeddings streamed in row shards) or from a
 * seeded random init (how the project's own tiny model was pre-trained from scratch).
 * @module
 */
import type { Gpu, Tensor } from "../engine/gpu.ts";
import { HiraError } from "../engine/errors.ts";
import type { PeftType } from "./peft.ts";
import type { LlamaConfig, Projection } from "./config.ts";
import { modulePath, PROJECTIONS, projectionShape } from "./config.ts";
import { expectedTensors, type LayerWeights, LlamaModel, type ModelWeights } from "./model.ts";
import { readTensorRows, type WeightSet } from "./safetensors.ts";
import { Rng } from "../engine/rand.ts";

/** Storage of the frozen weight matrices on the GPU. */
export type WeightDtype = "f32" | "f16";

/** The --weight_dtype flag: a {@linkcode WeightDtype} or "auto". */
export type WeightDtypeFlag = WeightDtype | "auto";

/**
 * Whether an adapter type reads an f16 W0 on every path (forward, backward and merge). Where it
 * does not, the W0 of adapted modules stays f32 under --weight_dtype=f16. HiRA's kernels take
 * W0 through the `{{WTYPE}}` define; LoRA's forward and backward read W0 through matmul (either
 * operand may be f16) and its merge widens W0 first (lib/ops/embedding.ts toF32).
 * tests/model/f16_test.ts checks a training step and the merge of both.
 */
export const ADAPTER_READS_F16_W0: Record<PeftType, boolean> = { HIRA: true, LORA: true };

/**
 * The dtype of one frozen matrix (a projection, or the embedding/head when `adapted` is false):
 * f32 for full fine-tuning (its f32 weights are the master copy) and for the W0 of adapters that
 * cannot read f16 yet, else `weightDtype`. Norms and biases are always f32.
 */
export function frozenWeightDtype(
  weightDtype: WeightDtype,
  fullFineTuning: boolean,
  peftType: PeftType | null,
  adapted: boolean,
): WeightDtype {
  if (weightDtype === "f32" || fullFineTuning) return "f32";
  if (adapted && peftType !== null && !ADAPTER_READS_F16_W0[peftType]) return "f32";
  return "f16";
}

/**
 * Resolves --weight_dtype: "auto" is f16 when the device has shader-f16 and the base weights do
 * not train, else f32. An explicit f16 that cannot be honoured is a {@linkcode HiraError}.
 */
export function resolveWeightDtype(
  flag: WeightDtypeFlag,
  hasF16: boolean,
  fullFineTuning: boolean,
): WeightDtype {
  if (flag === "auto") return hasF16 && !fullFineTuning ? "f16" : "f32";
  if (flag === "f16" && !hasF16) {
    throw new HiraError(
      "--weight_dtype",
      "f16 needs the WebGPU feature shader-f16, which this adapter lacks (use f32 or auto)",
    );
  }
  if (flag === "f16" && fullFineTuning) {
    throw new HiraError(
      "--weight_dtype",
      "full fine-tuning trains the base weights, which stay f32 (use f32 or auto)",
    );
  }
  return flag;
}

/** Options of {@linkcode loadModel}. */
export interface LoadOptions {
  /**
   * Storage of the frozen matrices (projections, embedding, untied head); default f32. f16 needs
   * `gpu.hasF16`. Norms and biases stay f32. BF16/F32 checkpoints are rounded to f16 on load.
   */
  weightDtype?: WeightDtype;
  /** Projection module paths ("model.layers.0.self_attn.q_proj") kept f32 regardless. */
  keepF32?: (modulePath: string) => boolean;
  /**
   * What to do with a finite weight f16 cannot hold (|x| >= 65520 rounds to Inf): "f32" keeps
   * that projection f32 (`--weight_dtype=auto`); "refuse" (default: an explicit f16) is a
   * HiraError naming the tensor. The embedding and head are always refused (they are read in
   * row shards of the one storage dtype).
   */
  f16Overflow?: "f32" | "refuse";
}

/**
 * Index of the first value that is finite in `f32` but infinite in its f16 rounding `f16`, or
 * -1. A weight already infinite (or NaN) in the file is not an overflow: the NaN guards report it.
 */
export function f16OverflowIndex(f16: Uint16Array, f32: ArrayLike<number>): number {
  for (let i = 0; i < f16.length; i++) {
    if ((f16[i] & 0x7fff) === 0x7c00 && Number.isFinite(f32[i])) return i;
  }
  return -1;
}

/** Whether half bits hold an infinity anywhere (a quick scan before any f32 re-read). */
function hasHalfInf(h: Uint16Array): boolean {
  for (let i = 0; i < h.length; i++) if ((h[i] & 0x7fff) === 0x7c00) return true;
  return false;
}

function f16OverflowError(name: string, v: number): HiraError {
  return new HiraError(
    name,
    `holds the finite weight ${v}, which f16 storage would turn into Infinity (its largest ` +
      "value is 65504): run with --weight_dtype=f32",
  );
}

async function uploadRowShards(
  gpu: Gpu,
  ws: WeightSet,
  name: string,
  cfg: LlamaConfig,
  dtype: WeightDtype,
): Promise<Tensor[]> {
  const e = ws.get(name);
  const out: Tensor[] = [];
  let r0 = 0;
  for (const rows of LlamaModel.shardRows(gpu, cfg, dtype)) {
    const data = await readTensorRows(e.source, e.info, r0, rows, dtype);
    if (dtype === "f16" && hasHalfInf(data as Uint16Array)) {
      const f = await readTensorRows(e.source, e.info, r0, rows, "f32");
      const i = f16OverflowIndex(data as Uint16Array, f);
      if (i >= 0) throw f16OverflowError(name, f[i]);
    }
    out.push(gpu.upload(data, [rows, cfg.hiddenSize], dtype));
    r0 += rows;
  }
  return out;
}

function checkF16(gpu: Gpu, dtype: WeightDtype): void {
  if (dtype === "f16" && !gpu.hasF16) {
    throw new HiraError(
      "--weight_dtype",
      "f16 weights need the WebGPU feature shader-f16, which this device lacks",
    );
  }
}

/**
 * Loads every base tensor of `cfg` from `ws` onto the GPU (f32, or f16 matrices with
 * `opts.weightDtype`). Missing or misshapen tensors are a {@linkcode HiraError} naming the
 * tensor and its file. Tensors the model does not use (e.g. rotary caches) are ignored.
 */
export async function loadModel(
  gpu: Gpu,
  cfg: LlamaConfig,
  ws: WeightSet,
  opts: LoadOptions = {},
): Promise<LlamaModel> {
  const wdt = opts.weightDtype ?? "f32";
  checkF16(gpu, wdt);
  const expected = expectedTensors(cfg);
  for (const [name, shape] of expected) {
    if (!ws.has(name)) {
      throw new HiraError(ws.name, `missing tensor ${name} (config.json expects shape [${shape}])`);
    }
    const info = ws.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new HiraError(
        ws.get(name).source.name,
        `tensor ${name} has shape [${info.shape}], config.json expects [${shape}]`,
      );
    }
  }
  const read = async (name: string) => gpu.upload(await ws.read(name, "f32"), expected.get(name)!);
  const readAs = async (name: string, dtype: WeightDtype) => {
    if (dtype === "f32") return gpu.upload(await ws.read(name, "f32"), expected.get(name)!);
    const h = await ws.read(name, "f16");
    if (hasHalfInf(h)) {
      const f = await ws.read(name, "f32");
      const i = f16OverflowIndex(h, f);
      if (i >= 0) {
        if (opts.f16Overflow !== "f32") throw f16OverflowError(name, f[i]);
        // --weight_dtype=auto: this matrix stays f32 rather than gain an Inf.
        return gpu.upload(f, expected.get(name)!);
      }
    }
    return gpu.upload(h, expected.get(name)!, "f16");
  };
  const layers: LayerWeights[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const proj = {} as Record<Projection, Tensor>;
    const bias: Partial<Record<Projection, Tensor>> = {};
    for (const pr of PROJECTIONS) {
      const path = modulePath(l, pr);
      proj[pr] = await readAs(`${path}.weight`, opts.keepF32?.(path) ? "f32" : wdt);
      const bn = `${modulePath(l, pr)}.bias`;
      if (expected.has(bn)) bias[pr] = await read(bn);
    }
    layers.push({
      inputNorm: await read(p + "input_layernorm.weight"),
      postNorm: await read(p + "post_attention_layernorm.weight"),
      proj,
      bias,
    });
  }
  const weights: ModelWeights = {
    embed: await uploadRowShards(gpu, ws, "model.embed_tokens.weight", cfg, wdt),
    layers,
    norm: await read("model.norm.weight"),
    lmHead: cfg.tieWordEmbeddings
      ? null
      : await uploadRowShards(gpu, ws, "lm_head.weight", cfg, wdt),
  };
  return new LlamaModel(gpu, cfg, weights);
}

/**
 * A randomly initialised model as transformers' `_init_weights` does for Llama: linear and
 * embedding weights ~ N(0, initializer_range²) (0.02 by default), norms 1, biases 0.
 */
export function randomModel(
  gpu: Gpu,
  cfg: LlamaConfig,
  seed: number,
  opts: LoadOptions = {},
): LlamaModel {
  const wdt = opts.weightDtype ?? "f32";
  checkF16(gpu, wdt);
  const rng = new Rng(seed);
  const std = typeof cfg.raw.initializer_range === "number" ? cfg.raw.initializer_range : 0.02;
  const C = cfg.hiddenSize;
  // The same draws whatever the dtype: an f16 model is the f32 one rounded.
  const normal = (shape: number[], dtype: WeightDtype = "f32") =>
    gpu.upload(rng.normalArray(shape[0] * (shape[1] ?? 1), std), shape, dtype);
  const ones = (n: number) => gpu.upload(new Float32Array(n).fill(1), [n]);
  const shards = (): Tensor[] =>
    LlamaModel.shardRows(gpu, cfg, wdt).map((rows) => normal([rows, C], wdt));
  const layers: LayerWeights[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const proj = {} as Record<Projection, Tensor>;
    const bias: Partial<Record<Projection, Tensor>> = {};
    for (const p of PROJECTIONS) {
      proj[p] = normal(projectionShape(cfg, p), opts.keepF32?.(modulePath(l, p)) ? "f32" : wdt);
      if (cfg.biasProjections.includes(p)) {
        bias[p] = gpu.zeros([projectionShape(cfg, p)[0]]);
      }
    }
    layers.push({ inputNorm: ones(C), postNorm: ones(C), proj, bias });
  }
  return new LlamaModel(gpu, cfg, {
    embed: shards(),
    layers,
    norm: ones(C),
    lmHead: cfg.tieWordEmbeddings ? null : shards(),
  });
}

/**
 * Every base tensor of a model read back from the GPU under its Hugging Face name (row shards
 * joined), for saving a full fine-tune or a merged export.
 */
export async function readBaseWeights(
  model: LlamaModel,
): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
  const gpu = model.gpu, cfg = model.config, w = model.weights;
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  const join = async (shards: Tensor[]) => {
    const parts = await gpu.readMany(shards);
    const all = new Float32Array(cfg.vocabSize * cfg.hiddenSize);
    let off = 0;
    for (const p of parts) {
      all.set(p as Float32Array, off);
      off += p.length;
    }
    return all;
  };
  out.set("model.embed_tokens.weight", {
    shape: [cfg.vocabSize, cfg.hiddenSize],
    data: await join(w.embed),
  });
  if (w.lmHead) {
    out.set("lm_head.weight", {
      shape: [cfg.vocabSize, cfg.hiddenSize],
      data: await join(w.lmHead),
    });
  }
  out.set("model.norm.weight", { shape: [cfg.hiddenSize], data: await gpu.read(w.norm) });
  for (let l = 0; l < cfg.numLayers; l++) {
    const lw = w.layers[l];
    const p = `model.layers.${l}.`;
    const named: [string, Tensor][] = [
      [p + "input_layernorm.weight", lw.inputNorm],
      [p + "post_attention_layernorm.weight", lw.postNorm],
    ];
    for (const pr of PROJECTIONS) {
      named.push([`${modulePath(l, pr)}.weight`, lw.proj[pr]]);
      const b = lw.bias[pr];
      if (b) named.push([`${modulePath(l, pr)}.bias`, b]);
    }
    const vals = await gpu.readMany(named.map(([, t]) => t));
    named.forEach(([n, t], i) =>
      out.set(n, { shape: [...t.shape], data: vals[i] as Float32Array })
    );
  }
  return out;
}
