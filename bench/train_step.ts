/**
 * Train-step benchmark: one optimizer step (forward + backward + AdamW, one readback) of a Llama
 * model with HiRA (as the engine runs it, and with each kernel forced), LoRA, full fine-tuning
 * and PEFT-style HiRA (y = x·W0ᵀ + x·(W0 ⊙ B·A)ᵀ with the delta weight materialised), at the
 * same rank, all seven projections adapted.
 *
 * Method: each (config, method) gets its own device, a random-weight model (lib/model/load.ts
 * randomModel, f32 weights) and one fixed batch of packed random sequences, and runs two warm-up
 * steps (compiling every kernel). Then the methods are timed round-robin, one step of each per
 * round, and each reports the median of its `reps` steps; a step is one `Trainer.trainStep`
 * (everything recorded, submitted and read back once). Peak bytes are the device's buffer-pool
 * total after the warm-up (weights, adapters, optimizer state, activations, scratch: the pool
 * never frees, so this is the step's high-water mark).
 *
 * FLOPs (multiply-add = 2), with N tokens, P = Σ out·in over the adapted projections,
 * R = Σ r·(in + out) over them, and rP = Σ r·out·in:
 *   common   = lm head 4·N·V·C + attention 6·Σ_b L_b²·H·d (causal; forward 2, backward 4)
 *   lora     = common + 4·N·P + 6·N·R
 *   hira     = common + 6·N·P + 8·rP   (forward 2NP + W_eff 2rP; backward dYᵀX 2NP, dB 2rP,
 *                                        dA 2rP, dX 2NP + W_eff 2rP)
 *   peft     = common + 10·N·P + 8·rP  (two products forward, three backward)
 *   full     = common + 6·N·P + 2·N·V·C (weight gradients of every projection and the head)
 * AdamW and elementwise work are left out (under 1% here). hira_over_lora_flops is hira / lora.
 * @module
 */
import { attachAdapters } from "../lib/model/attach.ts";
import type { HiraAdapter, HiraKernel } from "../lib/model/adapters.ts";
import {
  type LlamaConfig,
  parseConfig,
  PROJECTIONS,
  projectionShape,
} from "../lib/model/config.ts";
import { createGpu } from "../lib/engine/gpu.ts";
import { randomModel } from "../lib/model/load.ts";
import type { Batch } from "../lib/model/model.ts";
import type { HiraVariant } from "../lib/ops/hira.ts";
import { Rng } from "../lib/engine/rand.ts";
import { Trainer, type TrainerOptions } from "../lib/train/trainer.ts";
import type { LlamaModel } from "../lib/model/model.ts";
import { type DispatchProfile, formatProfile, profileDispatches } from "./profile.ts";

/** The methods the benchmark knows. */
export const TRAIN_METHODS = [
  "hira",
  "hira-fused",
  "hira-materialized",
  "lora",
  "full",
  "hira-peft",
] as const;

/** A method name. */
export type TrainMethod = typeof TRAIN_METHODS[number];

/** One timed method on one config. */
export interface TrainStepTiming {
  /** Median milliseconds per step. */
  ms?: number;
  /** Every timed step, in milliseconds. */
  reps?: number[];
  /** Tokens per second at the median. */
  tokensPerS?: number;
  /** The method's FLOPs per step (formula in the module doc). */
  flops?: number;
  /** flops / median time. */
  gflops?: number;
  /** Buffer-pool bytes after the steps (the step's high-water mark, weights included). */
  peakBytes?: number;
  /** Activation bytes at the step's peak (LlamaModel.peakActivationBytes). */
  peakActivationBytes?: number;
  /** The HiRA kernel the adapters resolved to (HiRA methods only). */
  kernel?: string;
  /** 1-minute load average after the method ran (other processes share the CPU). */
  loadavg?: number;
  /** Per-kernel times of one more step (bench/profile.ts), with `profile`. */
  profile?: DispatchProfile;
  /** Set instead of the numbers when the method failed. */
  error?: string;
}

/** Results for one config. */
export interface TrainStepConfigResult {
  /** Shape summary. */
  shape: string;
  tokens: number;
  rank: number;
  methods: Partial<Record<TrainMethod, TrainStepTiming>>;
  /** Measured hira / lora step time. */
  hira_over_lora?: number;
  /** hira / lora FLOPs per step (formula in the module doc). */
  hira_over_lora_flops?: number;
  /** Measured PEFT-style hira / fused hira step time. */
  peft_over_fused_hira?: number;
  /** Measured PEFT-style hira / hira (the engine's kernel choice) step time. */
  peft_over_hira?: number;
}

/** Result of {@linkcode benchTrainStep}. */
export interface TrainStepBenchResult {
  adapter: string;
  cpus: number;
  method: string;
  configs: Record<string, TrainStepConfigResult>;
}

/** Options of {@linkcode benchTrainStep}. */
export interface TrainStepBenchOptions {
  /**
   * Config names (default "tiny" and "llama-4x512"): "tiny" (data_file/tiny/model),
   * "llama-4x512", and "llama-8x2048" (a real-GPU size: 8 layers, hidden 2048, MLP 5504, 16 / 4
   * heads, vocab 32000, 8 × 512 tokens; minutes per step on a CPU rasterizer).
   */
  configs?: readonly string[];
  /** Methods (default all). */
  methods?: readonly TrainMethod[];
  /** Timed steps per method (default 3). */
  reps?: number;
  /** Adapter rank (default 32). */
  rank?: number;
  /**
   * After the timed rounds, profile one more step of each method per kernel (bench/profile.ts:
   * every dispatch replayed alone).
   */
  profile?: boolean;
  /** Progress lines. */
  log?: (line: string) => void;
}

/** A benchmark model: its config and the sequence lengths of its batch. */
export interface BenchConfig {
  cfg: LlamaConfig;
  /** Sequence lengths of the batch. */
  seqs: number[];
}

/** The model shapes the train-step (and data-parallel) benchmarks run, by name. */
export function configs(): Record<string, () => Promise<BenchConfig>> {
  return {
    tiny: async () => ({
      cfg: parseConfig(
        JSON.parse(
          await Deno.readTextFile(new URL("../data_file/tiny/model/config.json", import.meta.url)),
        ),
      ),
      seqs: Array(16).fill(64),
    }),
    "llama-4x512": () =>
      Promise.resolve({
        cfg: parseConfig({
          architectures: ["LlamaForCausalLM"],
          hidden_size: 512,
          intermediate_size: 1376,
          num_hidden_layers: 4,
          num_attention_heads: 8,
          num_key_value_heads: 2,
          vocab_size: 4096,
          tie_word_embeddings: false,
        }),
        seqs: Array(16).fill(64),
      }),
    "llama-8x2048": () =>
      Promise.resolve({
        cfg: parseConfig({
          architectures: ["LlamaForCausalLM"],
          hidden_size: 2048,
          intermediate_size: 5504,
          num_hidden_layers: 8,
          num_attention_heads: 16,
          num_key_value_heads: 4,
          vocab_size: 32000,
          tie_word_embeddings: false,
        }),
        seqs: Array(8).fill(512),
      }),
  };
}

/** Configs run when none are named. */
const DEFAULT_CONFIGS = ["tiny", "llama-4x512"];

/** FLOPs per step of each method (see the module doc). */
export function trainStepFlops(
  cfg: LlamaConfig,
  seqs: readonly number[],
  r: number,
): Record<TrainMethod, number> {
  const n = seqs.reduce((a, b) => a + b, 0);
  let p = 0, big = 0;
  for (const proj of PROJECTIONS) {
    const [o, i] = projectionShape(cfg, proj);
    p += o * i;
    big += r * (o + i);
  }
  p *= cfg.numLayers;
  big *= cfg.numLayers;
  const head = 4 * n * cfg.vocabSize * cfg.hiddenSize;
  const attn = 6 * cfg.numLayers * seqs.reduce((s, l) => s + l * l, 0) * cfg.numHeads *
    cfg.headDim;
  const common = head + attn;
  const hira = common + 6 * n * p + 8 * r * p;
  return {
    hira,
    "hira-fused": hira,
    "hira-materialized": hira,
    lora: common + 4 * n * p + 6 * n * big,
    full: common + 6 * n * p + 2 * n * cfg.vocabSize * cfg.hiddenSize,
    "hira-peft": common + 10 * n * p + 8 * r * p,
  };
}

/** A packed batch of random tokens and targets with these sequence lengths. */
export function randomBatch(seqs: readonly number[], vocab: number, seed: number): Batch {
  const rng = new Rng(seed);
  const n = seqs.reduce((a, b) => a + b, 0);
  const tokens = new Int32Array(n);
  const targets = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    tokens[i] = Math.floor(rng.uniform(0, vocab));
    targets[i] = Math.floor(rng.uniform(0, vocab));
  }
  const cu = new Uint32Array(seqs.length + 1);
  seqs.forEach((l, i) => (cu[i + 1] = cu[i] + l));
  return { tokens, targets, cuSeqlens: cu, numCounted: n };
}

const HIRA_KERNELS: Partial<Record<TrainMethod, HiraKernel>> = {
  hira: "auto",
  "hira-fused": "fused",
  "hira-materialized": "materialized",
  "hira-peft": "peft",
};

/** The benchmarks' optimizer settings (a step's cost does not depend on them). */
export const BENCH_TRAINER: TrainerOptions = {
  lr: 1e-4,
  warmup: 0,
  weightDecay: 0.01,
  gradAcc: 1,
  maxGradNorm: 1,
  totalSteps: 1000,
};

/** Adapters of `peftType` at rank `rank` on every projection, alpha 2r, no dropout, seed 2. */
export function attachBenchAdapters(model: LlamaModel, peftType: "HIRA" | "LORA", rank: number) {
  attachAdapters(model, {
    peftType,
    r: rank,
    targetModules: [...PROJECTIONS],
    loraAlpha: 2 * rank,
    loraDropout: 0,
    baseModel: "bench",
    keyStyle: "peft",
  }, { seed: 2 });
}

/** One method set up on its own device, warmed up, ready to time. */
interface Prepared {
  step(): Promise<void>;
  tokens: number;
  peakBytes: number;
  peakActivationBytes: number;
  kernel?: string;
  profile(): Promise<DispatchProfile>;
  close(): void;
}

async function prepare(
  bc: BenchConfig,
  method: TrainMethod,
  rank: number,
  variant: HiraVariant = "auto",
): Promise<Prepared> {
  const gpu = await createGpu();
  try {
    const model = randomModel(gpu, bc.cfg, 1);
    const batch = randomBatch(bc.seqs, bc.cfg.vocabSize, 3);
    let kernel: string | undefined;
    if (method === "full") model.enableBaseGrads();
    else {
      attachBenchAdapters(model, method === "lora" ? "LORA" : "HIRA", rank);
      const hk = HIRA_KERNELS[method];
      if (hk) {
        for (const ad of model.adapters.values()) {
          const h = ad as HiraAdapter;
          h.kernel = hk;
          h.variant = variant;
          const fwd = h.kernelFor(batch.tokens.length);
          const bwd = h.kernelFor(batch.tokens.length, "backward");
          kernel = fwd === bwd ? fwd : `${fwd} forward, ${bwd} backward`;
        }
      }
    }
    const trainer = new Trainer(model, BENCH_TRAINER);
    const step = async () => {
      await trainer.trainStep([batch]);
    };
    // Two warm-up steps: the first compiles, the second fills the pool's steady state.
    await step();
    await step();
    return {
      step,
      tokens: batch.tokens.length,
      peakBytes: gpu.pool.bytesCreated,
      peakActivationBytes: model.peakActivationBytes,
      kernel,
      profile: () => profileDispatches(gpu, step),
      close: () => gpu.destroy(),
    };
  } catch (e) {
    gpu.destroy();
    throw e;
  }
}

/** Runs the train-step benchmark. Methods that fail get an `error`; the run continues. */
export async function benchTrainStep(
  opts: TrainStepBenchOptions = {},
): Promise<TrainStepBenchResult> {
  const log = opts.log ?? (() => {});
  const rank = opts.rank ?? 32;
  const reps = opts.reps ?? 3;
  const all = configs();
  const names = opts.configs?.length ? opts.configs : DEFAULT_CONFIGS;
  const methods = opts.methods?.length ? opts.methods : TRAIN_METHODS;
  const probe = await createGpu();
  const adapter = probe.description;
  probe.destroy();
  const out: TrainStepBenchResult = {
    adapter,
    cpus: navigator.hardwareConcurrency,
    method: "A device per method; random-weight model, f32 weights, all seven projections " +
      "adapted, one fixed packed batch; two warm-up steps, then " + reps + " rounds timing " +
      "one Trainer.trainStep (forward + backward + AdamW + one readback) of each method in " +
      "turn; the median per method. GFLOP/s from each method's FLOP formula (README).",
    configs: {},
  };
  for (const name of names) {
    const make = all[name];
    if (!make) throw new Error(`unknown train_step config "${name}"; known: ${Object.keys(all)}`);
    const bc = await make();
    const flops = trainStepFlops(bc.cfg, bc.seqs, rank);
    const c = bc.cfg;
    const res: TrainStepConfigResult = {
      shape: `${c.numLayers} layers, hidden ${c.hiddenSize}, mlp ${c.intermediateSize}, ` +
        `${c.numHeads}/${c.numKvHeads} heads, vocab ${c.vocabSize}`,
      tokens: bc.seqs.reduce((a, b) => a + b, 0),
      rank,
      methods: {},
    };
    // Every method is set up and warmed up first, then timed round-robin (one step of each in
    // turn, `reps` rounds), so that load from other processes hits all methods alike.
    const ready = new Map<TrainMethod, Prepared>();
    const times = new Map<TrainMethod, number[]>();
    const profiles = new Map<TrainMethod, DispatchProfile>();
    try {
      for (const m of methods) {
        log(`train_step ${name} ${m}: warm-up`);
        try {
          ready.set(m, await prepare(bc, m, rank));
          times.set(m, []);
        } catch (e) {
          res.methods[m] = { error: e instanceof Error ? e.message : String(e) };
          log(`  failed: ${res.methods[m]!.error}`);
        }
      }
      for (let i = 0; i < reps; i++) {
        for (const [m, p] of ready) {
          const t0 = performance.now();
          await p.step();
          times.get(m)!.push(performance.now() - t0);
        }
        log(`train_step ${name}: round ${i + 1}/${reps} done`);
      }
      if (opts.profile) {
        for (const [m, p] of ready) {
          log(`train_step ${name} ${m}: profile`);
          profiles.set(m, await p.profile());
        }
      }
    } finally {
      for (const p of ready.values()) p.close();
    }
    for (const [m, p] of ready) {
      const ts = times.get(m)!;
      const ms = [...ts].sort((a, b) => a - b)[Math.floor(ts.length / 2)];
      res.methods[m] = {
        ms,
        reps: ts,
        tokensPerS: p.tokens / (ms / 1000),
        flops: flops[m],
        gflops: flops[m] / (ms * 1e6),
        peakBytes: p.peakBytes,
        peakActivationBytes: p.peakActivationBytes,
        kernel: p.kernel,
        loadavg: loadavg(),
        profile: profiles.get(m),
      };
    }
    const t = (m: TrainMethod) => res.methods[m]?.ms;
    if (t("hira") && t("lora")) res.hira_over_lora = t("hira")! / t("lora")!;
    res.hira_over_lora_flops = flops.hira / flops.lora;
    if (t("hira-peft") && t("hira-fused")) {
      res.peft_over_fused_hira = t("hira-peft")! / t("hira-fused")!;
    }
    if (t("hira-peft") && t("hira")) res.peft_over_hira = t("hira-peft")! / t("hira")!;
    out.configs[name] = res;
  }
  return out;
}

/** The result as a Markdown table per config. */
export function formatTrainStep(r: TrainStepBenchResult): string {
  const lines = [`train_step on ${r.adapter} (${r.cpus} CPUs)`];
  for (const [name, c] of Object.entries(r.configs)) {
    lines.push(
      "",
      `${name}: ${c.shape}; ${c.tokens} tokens, r = ${c.rank}`,
      "",
      "| method | ms/step | tokens/s | GFLOP/s | peak MiB | load |",
      "| --- | --- | --- | --- | --- | --- |",
    );
    for (const [m, t] of Object.entries(c.methods)) {
      const label = t.kernel ? `${m} (${t.kernel})` : m;
      if (t.error) {
        lines.push(`| ${label} | error: ${t.error} | | | | |`);
        continue;
      }
      lines.push(
        `| ${label} | ${t.ms!.toFixed(0)} | ${t.tokensPerS!.toFixed(0)} | ` +
          `${t.gflops!.toFixed(2)} | ${(t.peakBytes! / 2 ** 20).toFixed(1)} | ` +
          `${t.loadavg?.toFixed(1) ?? "?"} |`,
      );
    }
    const f = (x?: number) => x === undefined ? "n/a" : x.toFixed(2);
    lines.push(
      "",
      `hira_over_lora ${f(c.hira_over_lora)} (FLOP ratio ${f(c.hira_over_lora_flops)}); ` +
        `PEFT-style / hira ${f(c.peft_over_hira)}, / fused hira ${f(c.peft_over_fused_hira)}`,
    );
    for (const [m, t] of Object.entries(c.methods)) {
      if (t.profile) lines.push("", `${name} ${m} per kernel:`, "", formatProfile(t.profile));
    }
  }
  return lines.join("\n");
}

function loadavg(): number | undefined {
  try {
    return Deno.loadavg()[0];
  } catch {
    return undefined;
  }
}
