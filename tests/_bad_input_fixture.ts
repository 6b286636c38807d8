/**
 * A small valid world for bad-input, fuzz and guard tests: a tiny random Llama folder (the
 * embedded model's tokenizer), a data root with a few commonsense records, and a PEFT adapter
 * that fits the model. Everything is written with plain file I/O (no GPU), so each test case can
 * get a fresh copy and break exactly one thing in it.
 * @module
 */
import { join } from "@std/path";
import { type LlamaConfig, modulePath, parseConfig, projectionShape } from "../lib/model/config.ts";
import { expectedTensors } from "../lib/model/model.ts";
import { adapterConfigJson, adapterKey } from "../lib/model/peft.ts";
import { Rng } from "../lib/engine/rand.ts";
import { concatBytes, encodeSafetensors, type TensorToWrite } from "../lib/model/safetensors.ts";
import { withTempDir } from "./_util.ts";

const TOKENIZER_DIR = new URL("../data_file/tiny/model/", import.meta.url).pathname;
const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];

/** The fixture model's config.json (hidden 16, one layer, GQA 2/1, tied embeddings). */
export const TINY_CONFIG: Readonly<Record<string, unknown>> = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  head_dim: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: true,
  vocab_size: 640,
  max_position_embeddings: 512,
  hidden_act: "silu",
  bos_token_id: 1,
  eos_token_id: 2,
  torch_dtype: "float32",
};

/** Adapter rank of the fixture adapter. */
export const ADAPTER_RANK = 2;
/** Modules the fixture adapter adapts. */
export const ADAPTER_TARGETS = ["q_proj", "v_proj"];

/** Paths of one fixture copy. */
export interface Fixture {
  /** The temporary folder holding everything below. */
  root: string;
  /** Model folder: config.json, model.safetensors, tokenizer files. */
  model: string;
  /** Data root: llm_adapt/commonsense_170k/{train,validation}.json, llm_adapt/boolq/test.json. */
  data: string;
  /** A HiRA adapter folder for the model. */
  adapter: string;
  /** An output folder path that does not exist yet. */
  out: string;
  /** llm_adapt/commonsense_170k/train.json under `data`. */
  trainJson: string;
  /** model.safetensors under `model`. */
  weights: string;
  /** A token file for `eval.ts perplexity --tokens` (two short sequences). */
  tokens: string;
}

/** `n` seeded values in [-scale, scale). */
function uniform(n: number, rng: Rng, scale: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.uniform(-scale, scale);
  return out;
}

/** The base tensors of a config, with small seeded random values (norms are 1). */
export function modelTensors(cfg: LlamaConfig, seed = 1): TensorToWrite[] {
  const rng = new Rng(seed);
  return [...expectedTensors(cfg)].map(([name, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = name.endsWith("norm.weight") ? new Float32Array(n).fill(1) : uniform(n, rng, 0.1);
    return { name, dtype: "F32" as const, shape, data };
  });
}

/** The tensors of a HiRA adapter for `cfg` on {@linkcode ADAPTER_TARGETS}. */
export function adapterTensorsFor(cfg: LlamaConfig, r = ADAPTER_RANK, seed = 2): TensorToWrite[] {
  const rng = new Rng(seed);
  const out: TensorToWrite[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const p of ADAPTER_TARGETS) {
      const proj = p as "q_proj" | "v_proj";
      const [o, i] = projectionShape(cfg, proj);
      const path = modulePath(l, proj);
      out.push({
        name: adapterKey(path, "HIRA", "A"),
        dtype: "F32",
        shape: [r, i],
        data: uniform(r * i, rng, 0.1),
      });
      out.push({
        name: adapterKey(path, "HIRA", "B"),
        dtype: "F32",
        shape: [o, r],
        data: uniform(o * r, rng, 0.1),
      });
    }
  }
  return out;
}

/** A safetensors file's bytes. */
export function safetensorsBytes(
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): Uint8Array {
  return concatBytes(encodeSafetensors(tensors, metadata));
}

/** A few valid commonsense-style records. */
export function sampleRecords(n: number): Record<string, string>[] {
  const animals = ["cat", "dog", "fox", "owl", "bee", "elk"];
  return Array.from({ length: n }, (_, i) => ({
    instruction: `Please answer the following question with true or false, question: does the ${
      animals[i % animals.length]
    } live in the lake?\n\nAnswer format: true/false`,
    input: "",
    output: `the correct answer is ${i % 2 ? "true" : "false"}`,
    answer: i % 2 ? "true" : "false",
  }));
}

/** JSON text as the data files store it. */
export function jsonText(v: unknown): string {
  return JSON.stringify(v, null, 1) + "\n";
}

/**
 * Runs `fn` on a fresh fixture in a new temporary folder and removes the folder afterwards,
 * whether `fn` returns or throws ({@linkcode withTempDir}).
 */
export function withFixture<T>(prefix: string, fn: (f: Fixture) => Promise<T>): Promise<T> {
  return withTempDir(prefix, async (root) => fn(await writeFixture(root)));
}

/** Writes a fixture into the existing empty folder `root`. */
async function writeFixture(root: string): Promise<Fixture> {
  const model = join(root, "model");
  const data = join(root, "data");
  const adapter = join(root, "adapter");
  await Deno.mkdir(model);
  await Deno.mkdir(adapter);
  const cfg = parseConfig(TINY_CONFIG);
  await Deno.writeTextFile(join(model, "config.json"), JSON.stringify(TINY_CONFIG, null, 2));
  for (const f of TOKENIZER_FILES) await Deno.copyFile(join(TOKENIZER_DIR, f), join(model, f));
  const weights = join(model, "model.safetensors");
  await Deno.writeFile(weights, safetensorsBytes(modelTensors(cfg), { format: "pt" }));
  const cs = join(data, "llm_adapt", "commonsense_170k");
  await Deno.mkdir(cs, { recursive: true });
  const trainJson = join(cs, "train.json");
  await Deno.writeTextFile(trainJson, jsonText(sampleRecords(8)));
  await Deno.writeTextFile(join(cs, "validation.json"), jsonText(sampleRecords(3)));
  await Deno.writeTextFile(join(cs, "test.json"), jsonText(sampleRecords(3)));
  await Deno.mkdir(join(data, "llm_adapt", "boolq"), { recursive: true });
  await Deno.writeTextFile(
    join(data, "llm_adapt", "boolq", "test.json"),
    jsonText(sampleRecords(2)),
  );
  await Deno.writeTextFile(
    join(adapter, "adapter_config.json"),
    adapterConfigJson({
      peftType: "HIRA",
      r: ADAPTER_RANK,
      targetModules: ADAPTER_TARGETS,
      loraAlpha: 8,
      loraDropout: 0,
      baseModel: model,
      keyStyle: "peft",
    }),
  );
  await Deno.writeFile(
    join(adapter, "adapter_model.safetensors"),
    safetensorsBytes(adapterTensorsFor(cfg), { format: "pt" }),
  );
  const tokens = join(root, "ids.json");
  await Deno.writeTextFile(tokens, JSON.stringify([[1, 5, 6, 7], [1, 8, 9]]));
  return { root, model, data, adapter, out: join(root, "out"), trainJson, weights, tokens };
}

/** Training flags that make a quick, valid run on a fixture (extra flags override them). */
export function trainFlags(f: Fixture, extra: readonly string[] = []): string[] {
  return [
    `--model=${f.model}`,
    `--data_root=${f.data}`,
    `--output_folder=${f.out}`,
    "--dataset=common_170k",
    "--peft_type=hira",
    "--batch=4",
    "--max_steps=2",
    "--warmup=0",
    "--lr=1e-3",
    `--r_ab=${ADAPTER_RANK}`,
    "--target_modules=q_proj,v_proj",
    "--eval_strategy=no",
    "--no-eval_accuracy",
    ...extra,
  ];
}

/**
 * Every file under `dir` with its size and a cheap content digest, so a test can assert that a
 * failed command left the tree exactly as it was.
 */
export async function snapshot(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string, rel: string) => {
    const entries = [];
    for await (const e of Deno.readDir(d)) entries.push(e);
    for (const e of entries) {
      const p = join(d, e.name), r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) {
        out.set(r + "/", "dir");
        await walk(p, r);
      } else if (e.isFile) {
        const bytes = await Deno.readFile(p);
        let h = 2166136261;
        for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 16777619);
        out.set(r, `${bytes.length}:${(h >>> 0).toString(16)}`);
      } else out.set(r, "other");
    }
  };
  await walk(dir, "");
  return out;
}
