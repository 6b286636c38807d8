/**
 * Building a {@linkcode LlamaModel} on the GPU: from a checkpoint's {@linkcode WeightSet}
 * (validated against config.json, tensor by tensor, embeddings streamed in row shards) or from a
 * seeded random init (how the project's own tiny model was pre-trained from scratch).
 * @module
 */
import type { Gpu, Tensor } from "./gpu.ts";
import { HiraError } from "./errors.ts";
import {
  type LlamaConfig,
  modulePath,
  type Projection,
  PROJECTIONS,
  projectionShape,
} from "./config.ts";
import { expectedTensors, type LayerWeights, LlamaModel, type ModelWeights } from "./model.ts";
import { readTensorRows, type WeightSet } from "./safetensors.ts";
import { Rng } from "./rand.ts";

async function uploadRowShards(
  gpu: Gpu,
  ws: WeightSet,
  name: string,
  cfg: LlamaConfig,
): Promise<Tensor[]> {
  const e = ws.get(name);
  const out: Tensor[] = [];
  let r0 = 0;
  for (const rows of LlamaModel.shardRows(gpu, cfg)) {
    const data = await readTensorRows(e.source, e.info, r0, rows, "f32") as Float32Array;
    out.push(gpu.upload(data, [rows, cfg.hiddenSize]));
    r0 += rows;
  }
  return out;
}

/**
 * Loads every base tensor of `cfg` from `ws` onto the GPU (as f32). Missing or misshapen tensors
 * are a {@linkcode HiraError} naming the tensor and its file. Tensors the model does not use
 * (e.g. rotary caches) are ignored.
 */
export async function loadModel(gpu: Gpu, cfg: LlamaConfig, ws: WeightSet): Promise<LlamaModel> {
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
  const layers: LayerWeights[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const proj = {} as Record<Projection, Tensor>;
    const bias: Partial<Record<Projection, Tensor>> = {};
    for (const pr of PROJECTIONS) {
      proj[pr] = await read(`${modulePath(l, pr)}.weight`);
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
    embed: await uploadRowShards(gpu, ws, "model.embed_tokens.weight", cfg),
    layers,
    norm: await read("model.norm.weight"),
    lmHead: cfg.tieWordEmbeddings ? null : await uploadRowShards(gpu, ws, "lm_head.weight", cfg),
  };
  return new LlamaModel(gpu, cfg, weights);
}

/**
 * A randomly initialised model as transformers' `_init_weights` does for Llama: linear and
 * embedding weights ~ N(0, initializer_range²) (0.02 by default), norms 1, biases 0.
 */
export function randomModel(gpu: Gpu, cfg: LlamaConfig, seed: number): LlamaModel {
  const rng = new Rng(seed);
  const std = typeof cfg.raw.initializer_range === "number" ? cfg.raw.initializer_range : 0.02;
  const C = cfg.hiddenSize;
  const normal = (shape: number[]) =>
    gpu.upload(rng.normalArray(shape[0] * (shape[1] ?? 1), std), shape);
  const ones = (n: number) => gpu.upload(new Float32Array(n).fill(1), [n]);
  const shards = (): Tensor[] => LlamaModel.shardRows(gpu, cfg).map((rows) => normal([rows, C]));
  const layers: LayerWeights[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const proj = {} as Record<Projection, Tensor>;
    const bias: Partial<Record<Projection, Tensor>> = {};
    for (const p of PROJECTIONS) {
      proj[p] = normal(projectionShape(cfg, p));
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
