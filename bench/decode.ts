/**
 * Decoding benchmark: greedy generation with the KV cache (lib/eval/decode.ts KvCacheDecoder) on the
 * embedded tiny model and on a larger random Llama-shaped config, through a HiRA adapter on every
 * projection (unmerged: W0 ⊙ (1 + B·A) applied per call) and with the adapter merged into the
 * weights (lib/model/merge.ts), plus the base model alone for reference.
 *
 * Method: P prompts of L random tokens; one warm-up generation compiles every kernel; then the
 * timed run: `start` (the prefill, one readback) and T greedy `step`s (each one readback of
 * [P, V] logits, argmax on the host). tokens/s = P·T / (time of the T steps). Every step pays
 * one await (>= 11 ms on Deno), as real decoding does. The merged and unmerged runs must pick the
 * same tokens (`sameTokens`): merging is exact up to f32 rounding.
 * @module
 */
import type { Gpu } from "../lib/engine/gpu.ts";
import { type LlamaConfig, parseConfig } from "../lib/model/config.ts";
import type { LlamaModel } from "../lib/model/model.ts";
import { randomModel, type WeightDtype } from "../lib/model/load.ts";
import { loadModelDir } from "../lib/io/model_deno.ts";
import { attachAdapters } from "../lib/model/attach.ts";
import { KvCacheDecoder } from "../lib/eval/decode.ts";
import { mergeAdaptersInPlace } from "../lib/model/merge.ts";
import { Rng } from "../lib/engine/rand.ts";

/** One timed decoding run. */
export interface DecodeTiming {
  /** "base" (no adapter), "unmerged" (HiRA applied per call) or "merged". */
  mode: "base" | "unmerged" | "merged";
  /** Prefill of all prompts, milliseconds (includes its readback). */
  prefillMs: number;
  /** Median milliseconds of one decoding step (P new tokens). */
  msPerStep: number;
  /** New tokens per second over the timed steps (P·T / total step time). */
  tokensPerSec: number;
  /** The greedy tokens, prompt by prompt. */
  tokens: number[][];
}

/** Results of one model config. */
export interface DecodeConfigResult {
  /** Config name ("tiny", "llama-512"). */
  name: string;
  /** Shape summary. */
  shape: string;
  /** Storage of the frozen matrices. */
  weightDtype: WeightDtype;
  /** HiRA rank and adapted projections. */
  adapter: string;
  prompts: number;
  promptLen: number;
  newTokens: number;
  runs: DecodeTiming[];
  /** merged tokens/s ÷ unmerged tokens/s. */
  mergedSpeedup: number;
  /** Whether merged and unmerged decoding chose the same tokens. */
  sameTokens: boolean;
}

/** Result of {@linkcode benchDecode}. */
export interface DecodeBenchResult {
  adapter: string;
  method: string;
  configs: DecodeConfigResult[];
}

/** Options of {@linkcode benchDecode}. */
export interface DecodeBenchOptions {
  /** Config names to run (default both). */
  configs?: string[];
  /** Prompts decoded together (default 4). */
  prompts?: number;
  /** Tokens per prompt (default 24). */
  promptLen?: number;
  /** New tokens per prompt (default 24). */
  newTokens?: number;
  /** HiRA rank (default 16). */
  r?: number;
  /** Frozen-weight storage (default f32; f16 needs shader-f16). */
  weightDtype?: WeightDtype;
  log?: (line: string) => void;
}

const TINY_DIR = new URL("../data_file/tiny/model/", import.meta.url).pathname;

/** The larger random config: Llama-shaped, GQA, 4 layers of hidden 512. */
export const LARGER_CONFIG: Record<string, unknown> = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_size: 512,
  intermediate_size: 1408,
  num_hidden_layers: 4,
  num_attention_heads: 8,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  vocab_size: 4096,
  tie_word_embeddings: true,
  max_position_embeddings: 2048,
  hidden_act: "silu",
};

async function buildModel(gpu: Gpu, name: string, wdt: WeightDtype): Promise<LlamaModel> {
  if (name === "tiny") return await loadModelDir(gpu, TINY_DIR, { weightDtype: wdt });
  if (name === "llama-512") {
    return randomModel(gpu, parseConfig(LARGER_CONFIG), 1, { weightDtype: wdt });
  }
  throw new Error(`unknown decode config "${name}" (tiny, llama-512)`);
}

function argmaxRows(logp: Float32Array, v: number): number[] {
  const out: number[] = [];
  for (let o = 0; o < logp.length; o += v) {
    let best = 0;
    for (let j = 1; j < v; j++) if (logp[o + j] > logp[o + best]) best = j;
    out.push(best);
  }
  return out;
}

async function timedGreedy(
  model: LlamaModel,
  prompts: number[][],
  newTokens: number,
): Promise<Omit<DecodeTiming, "mode">> {
  const V = model.config.vocabSize;
  const dec = new KvCacheDecoder(model);
  const ident = prompts.map((_, i) => i);
  const tokens = prompts.map(() => [] as number[]);
  try {
    const t0 = performance.now();
    let next = argmaxRows(await dec.start(prompts, newTokens), V);
    const prefillMs = performance.now() - t0;
    const steps: number[] = [];
    for (let t = 0; t < newTokens; t++) {
      next.forEach((x, i) => tokens[i].push(x));
      if (t === newTokens - 1) break;
      const s0 = performance.now();
      next = argmaxRows(await dec.step(ident, next), V);
      steps.push(performance.now() - s0);
    }
    const total = steps.reduce((a, b) => a + b, 0);
    const sorted = [...steps].sort((a, b) => a - b);
    return {
      prefillMs,
      msPerStep: sorted[Math.floor(sorted.length / 2)] ?? 0,
      tokensPerSec: total > 0 ? (prompts.length * steps.length) / (total / 1000) : 0,
      tokens,
    };
  } finally {
    dec.end();
  }
}

function describe(cfg: LlamaConfig): string {
  return `${cfg.numLayers} layers, hidden ${cfg.hiddenSize}, ffn ${cfg.intermediateSize}, ` +
    `heads ${cfg.numHeads}/${cfg.numKvHeads} kv, vocab ${cfg.vocabSize}`;
}

/** Runs the decoding benchmark (see the module notes). */
export async function benchDecode(
  gpu: Gpu,
  opts: DecodeBenchOptions = {},
): Promise<DecodeBenchResult> {
  const names = opts.configs ?? ["tiny", "llama-512"];
  const P = opts.prompts ?? 4, L = opts.promptLen ?? 24, T = opts.newTokens ?? 24;
  const r = opts.r ?? 16;
  const wdt = opts.weightDtype ?? "f32";
  const log = opts.log ?? (() => {});
  const configs: DecodeConfigResult[] = [];
  for (const name of names) {
    const model = await buildModel(gpu, name, wdt);
    const cfg = model.config;
    const rng = new Rng(7);
    const prompts = Array.from(
      { length: P },
      () => Array.from({ length: L }, () => 3 + (rng.nextU32() % (cfg.vocabSize - 3))),
    );
    const runs: DecodeTiming[] = [];
    const run = async (mode: DecodeTiming["mode"]) => {
      await timedGreedy(model, prompts, Math.min(T, 3)); // warm-up: compile every kernel
      const t = await timedGreedy(model, prompts, T);
      runs.push({ mode, ...t });
      log(
        `decode ${name} ${mode}: ${t.tokensPerSec.toFixed(1)} tok/s, ${
          t.msPerStep.toFixed(1)
        } ms/step`,
      );
    };
    await run("base");
    // B ≠ 0 so the adapter changes the model (a fresh HiRA's B = 0 would merge to W0 itself).
    attachAdapters(model, {
      peftType: "HIRA",
      r,
      targetModules: ["all-linear"],
      loraAlpha: 16,
      loraDropout: 0,
      baseModel: "",
      keyStyle: "peft",
    }, { seed: 3, initB: "gaussian" });
    await run("unmerged");
    const handle = await mergeAdaptersInPlace(model);
    try {
      await run("merged");
    } finally {
      handle.restore();
    }
    const un = runs.find((x) => x.mode === "unmerged")!;
    const me = runs.find((x) => x.mode === "merged")!;
    configs.push({
      name,
      shape: describe(cfg),
      weightDtype: wdt,
      adapter: `HiRA r=${r} on all 7 projections`,
      prompts: P,
      promptLen: L,
      newTokens: T,
      runs,
      mergedSpeedup: me.tokensPerSec / un.tokensPerSec,
      sameTokens: JSON.stringify(me.tokens) === JSON.stringify(un.tokens),
    });
    for (const a of model.adapters.values()) a.release();
    model.adapters.clear();
  }
  return {
    adapter: gpu.description,
    method: `greedy decoding with the KV cache: ${P} prompts of ${L} random tokens, ${T} new ` +
      "tokens each; one warm-up generation, then prefill and per-step times (each step reads " +
      "back [P, V] logits once); tokens/s = P·(T-1) timed steps / their total time",
    configs,
  };
}

/** The decode section as a table (one row per config and mode). */
export function formatDecode(r: DecodeBenchResult): string {
  const lines = [
    `decode (${r.adapter}): ${r.method}`,
    "",
    "| config | weights | mode | prefill ms | ms/step | tokens/s | merged/unmerged |",
    "| ------ | ------- | ---- | ---------- | ------- | -------- | --------------- |",
  ];
  for (const c of r.configs) {
    for (const run of c.runs) {
      lines.push(
        `| ${c.name} | ${c.weightDtype} | ${run.mode} | ${run.prefillMs.toFixed(1)} | ${
          run.msPerStep.toFixed(1)
        } | ${run.tokensPerSec.toFixed(1)} | ${
          run.mode === "merged"
            ? `${c.mergedSpeedup.toFixed(2)}×${c.sameTokens ? "" : " (tokens differ!)"}`
            : ""
        } |`,
      );
    }
  }
  for (const c of r.configs) lines.push(`${c.name}: ${c.shape}; ${c.adapter}`);
  return lines.join("\n");
}
