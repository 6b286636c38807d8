/**
 * What the web page does with the engine, without any DOM: load a model from a folder, attach
 * or load adapters, train them, measure held-out accuracy, answer a prompt, compute logits and
 * encode the adapter as a PEFT folder. Every step is the lib/ code `deno task train` and
 * `deno task eval` run (lib/model/load.ts, lib/model/attach.ts, lib/train/trainer.ts, lib/train/data.ts,
 * lib/eval/evaluate.ts, lib/model/merge.ts); this module only wires them together as lib/cli/train.ts
 * does for the CLI, minus the run folder. It runs under Deno too (the browser test uses that).
 * @module
 */
import type { Gpu, Tensor } from "../lib/engine/gpu.ts";
import { matmul, type MatmulVariant, resolveMatmulVariant } from "../lib/ops/matmul.ts";
import { matmulRef } from "../lib/ref/matmul.ts";
import { Rng } from "../lib/engine/rand.ts";
import { loadModel } from "../lib/model/load.ts";
import type { LlamaModel } from "../lib/model/model.ts";
import { Tokenizer } from "../lib/model/tokenizer.ts";
import { HiraError } from "../lib/engine/errors.ts";
import {
  adapterParameterCount,
  adapterTensors,
  attachAdapters,
  loadAdapters,
} from "../lib/model/attach.ts";
import type { AdapterConfig } from "../lib/model/peft.ts";
import {
  BatchLoader,
  type DataRecord,
  fieldsFor,
  packBatch,
  parseRecords,
  splitPath,
  type TrainExample,
  trainExamples,
} from "../lib/train/data.ts";
import { type StepReport, Trainer } from "../lib/train/trainer.ts";
import { MAX_GRAD_NORM, trainLoop, validationBatches } from "../lib/train/loop.ts";
import {
  type AccuracySummary,
  type DatasetScore,
  datasetScore,
  scoreRecords,
  summarize,
} from "../lib/eval/scoring.ts";
import { decodeSettings, decodingTag, inEvalMode, predictTexts } from "../lib/eval/evaluate.ts";
import { mergeAdaptersInPlace } from "../lib/model/merge.ts";
import { COMMONSENSE_TASKS } from "../lib/eval/scoring.ts";
import { DEMO_LR, DEMO_PRESET } from "../lib/cli/flags.ts";
import { parseTargetList, runAdapterConfig } from "../lib/model/peft.ts";
import {
  type AdapterFileBytes,
  adapterFileBytes,
  type AdapterFolderContents,
  type FolderSource,
  readModelFolder,
} from "../lib/io/browser_io.ts";

/** A model on the GPU with its tokenizer. */
export interface LoadedModel {
  model: LlamaModel;
  tok: Tokenizer;
  /** adapter_config.json's base_model_name_or_path for adapters trained on it. */
  baseModel: string;
  /** The folder it came from, for messages. */
  source: string;
}

/**
 * Loads a Hugging Face model folder onto the GPU with its tokenizer (as lib/cli/train.ts does
 * with model_deno.ts and tokenizer_deno.ts). `baseModel` is what adapters trained on it will
 * name as their base: "" for the embedded tiny model (which `deno task eval` then picks).
 */
export async function loadModelFolder(
  gpu: Gpu,
  folder: FolderSource,
  baseModel: string,
): Promise<LoadedModel> {
  const files = await readModelFolder(folder);
  const tok = new Tokenizer(files.tokenizer);
  if (tok.vocabSize > files.config.vocabSize) {
    throw new HiraError(
      `${folder.name}/tokenizer.json`,
      `has ${tok.vocabSize} ids but config.json's vocab_size is ${files.config.vocabSize}`,
    );
  }
  const model = await loadModel(gpu, files.config, files.weights);
  return { model, tok, baseModel, source: folder.name };
}

/** The page's training settings (a subset of train.ts's flags, same meanings). */
export interface TrainSettings {
  peftType: "hira" | "lora";
  /** --r_ab. */
  r: number;
  /** --target_modules. */
  targetModules: string[];
  lr: number;
  /** --max_steps. */
  steps: number;
  batch: number;
  warmup: number;
  seed: number;
  weightDecay: number;
  loraAlpha: number;
  loraDropout: number;
}

/** The CLI's per-method demo learning rates (lib/cli/flags.ts DEMO_LR). */
export { DEMO_LR };

/** Defaults: the CLI's demo preset for the embedded model (lib/cli/flags.ts), 30 steps of 8. */
export const DEFAULT_SETTINGS: Readonly<TrainSettings> = {
  peftType: "hira",
  r: Number(DEMO_PRESET.r_ab),
  targetModules: parseTargetList(String(DEMO_PRESET.target_modules)),
  lr: DEMO_LR.hira,
  steps: 30,
  batch: 8,
  warmup: Number(DEMO_PRESET.warmup),
  seed: 42,
  weightDecay: 0.01,
  loraAlpha: 32,
  loraDropout: 0.05,
};

/** The adapter config a run with these settings writes (as the CLI's, lib/model/peft.ts). */
export function adapterConfigFor(s: TrainSettings, baseModel: string): AdapterConfig {
  return runAdapterConfig(s.peftType, s.r, s.targetModules, {
    alpha: s.loraAlpha,
    dropout: s.loraDropout,
  }, baseModel);
}

/** Replaces the model's adapters with fresh ones (kaiming A, zero B, as train.ts's default). */
export function attachFresh(model: LlamaModel, s: TrainSettings, baseModel: string): AdapterConfig {
  model.releaseAdapters();
  const ac = adapterConfigFor(s, baseModel);
  attachAdapters(model, ac, { seed: s.seed, initA: "kaiming", initB: "zero" });
  return ac;
}

/** Replaces the model's adapters with a loaded PEFT folder's (strict key check). */
export async function attachLoaded(
  model: LlamaModel,
  adapter: AdapterFolderContents,
  seed: number,
): Promise<AdapterConfig> {
  model.releaseAdapters();
  await loadAdapters(model, adapter.config, adapter.weights, { seed });
  return { ...adapter.config, keyStyle: "peft" };
}

/** Trainable adapter parameters on the model. */
export function trainableCount(model: LlamaModel): number {
  return adapterParameterCount(model);
}

/** Parses an LLM-Adapters training file and builds its (commonsense-layout) examples. */
export function trainingExamples(text: string, file: string, tok: Tokenizer): TrainExample[] {
  const records = parseRecords(text, file, { fields: fieldsFor("common_170k") });
  const ex = trainExamples(records, tok, "common_170k");
  if (ex.length === 0) throw new HiraError(file, "no example has a non-empty target");
  return ex;
}

/** One optimizer step as the page shows it. */
export interface TrainProgress extends StepReport {
  totalSteps: number;
  /** Tokens per second since training started. */
  tokensPerSecond: number;
}

/** Hooks and options of {@linkcode trainAdapters}. */
export interface TrainHooks {
  onStep?: (p: TrainProgress) => void;
  /** Checked before each step; true ends training early (the Stop button). */
  shouldStop?: () => boolean;
  /** Called as a validation pass starts, after `step` optimizer steps. */
  onValidationStart?: (step: number) => void;
  /** Called with each validation loss, after `step` optimizer steps. */
  onValidation?: (step: number, loss: number) => void;
  /**
   * Also measure the validation loss every this many steps (as the CLI's --eval_steps); 0 or
   * absent: only before the first and after the last step.
   */
  validateEvery?: number;
}

/** How a training run ended. */
export interface TrainResult {
  steps: number;
  losses: number[];
  stopped: boolean;
  /** Teacher-forced validation loss before the first and after the last step (NaN: none). */
  validationBefore: number;
  validationAfter: number;
  /** Every validation loss measured, as [step, loss] (step 0: before training). */
  validation: [number, number][];
}

/**
 * Compiles the training kernels ahead of the first step: one forward and backward pass over the
 * first `batch` examples in eval mode (no dropout mask drawn), its loss discarded. Each WGSL
 * kernel compiles on its first use, which makes a cold first step take seconds (tens of seconds
 * on a CPU rasterizer); doing it here lets the page say so. The gradients it accumulates are
 * zeroed by the first optimizer step, and the batch loader is not touched, so training is
 * unchanged (tests/browser/browser_test.ts compares the losses).
 */
export async function compileKernels(
  model: LlamaModel,
  examples: readonly TrainExample[],
  batch: number,
): Promise<void> {
  model.setTraining(false);
  const loss = await model.trainStep(packBatch(examples.slice(0, Math.max(1, batch))));
  await model.gpu.readMany([loss]);
  loss.release();
}

/**
 * Trains the attached adapters for `s.steps` optimizer steps with the CLI's recipe (lib/train/trainer.ts:
 * AdamW, linear warmup then decay, clipping at 1.0; lib/train/data.ts's seeded BatchLoader over
 * packed batches). With `validation` examples, their teacher-forced loss (Trainer.evalLoss, in
 * batches of `s.batch` as the CLI) is measured before and after. The optimizer state is freed
 * at the end.
 */
export async function trainAdapters(
  model: LlamaModel,
  examples: readonly TrainExample[],
  s: TrainSettings,
  hooks: TrainHooks = {},
  validation: readonly TrainExample[] = [],
): Promise<TrainResult> {
  const trainer = new Trainer(model, {
    lr: s.lr,
    warmup: s.warmup,
    weightDecay: s.weightDecay,
    gradAcc: 1,
    maxGradNorm: MAX_GRAD_NORM,
    totalSteps: s.steps,
  });
  const loader = new BatchLoader(examples, s.batch, s.seed);
  const valBatches = validationBatches(validation, s.batch);
  const measured: [number, number][] = [];
  const record = (v: number) => {
    measured.push([trainer.step, v]);
    hooks.onValidation?.(trainer.step, v);
    return v;
  };
  // Before and after training, outside the loop (the page compares the two).
  const valLoss = async () => {
    if (!valBatches.length) return NaN;
    hooks.onValidationStart?.(trainer.step);
    return record(await trainer.evalLoss(valBatches));
  };
  const every = Math.max(0, Math.floor(hooks.validateEvery ?? 0));
  const losses: number[] = [];
  let validationBefore = NaN, validationAfter = NaN;
  let tokens = 0;
  const t0 = performance.now();
  let stopped = false;
  try {
    validationBefore = await valLoss();
    const end = await trainLoop(trainer, s.steps, () => [loader.next()], valBatches, {
      shouldStop: hooks.shouldStop,
      onStep: (r) => {
        losses.push(r.loss);
        tokens += r.tokens;
        const secs = Math.max(1e-6, (performance.now() - t0) / 1000);
        hooks.onStep?.({ ...r, totalSteps: s.steps, tokensPerSecond: tokens / secs });
      },
      evalAt: (step) => every > 0 && step % every === 0 && step < s.steps,
      beforeEval: (step) => {
        if (valBatches.length) hooks.onValidationStart?.(step);
      },
      onEval: (_step, v) => {
        if (v !== null) record(v);
      },
    });
    stopped = end === "shouldStop";
    // A run stopped before its first step has nothing new to measure.
    validationAfter = trainer.step > 0 ? await valLoss() : validationBefore;
  } finally {
    trainer.opt.release();
    model.setTraining(false);
  }
  return {
    steps: trainer.step,
    losses,
    stopped,
    validationBefore,
    validationAfter,
    validation: measured,
  };
}

/** A held-out test set: its name (boolq, piqa, ...) and the records used. */
export interface HeldOutSet {
  dataset: string;
  records: DataRecord[];
}

/**
 * Fetches the eight commonsense test sets under `dataRoot` (a URL of the data_file/ folder,
 * ending in "/"), keeping the first `perSet` records of each. Missing sets are skipped.
 */
export async function fetchHeldOutSets(dataRoot: URL, perSet: number): Promise<HeldOutSet[]> {
  const out: HeldOutSet[] = [];
  for (const d of COMMONSENSE_TASKS) {
    const url = splitPath(d, "test", dataRoot.href);
    const r = await fetch(url);
    if (r.status === 404) {
      await r.body?.cancel();
      continue;
    }
    if (!r.ok) throw new HiraError(url, `HTTP ${r.status}`);
    const records = parseRecords(await r.text(), url, { fields: fieldsFor(d) });
    out.push({ dataset: d, records: perSet > 0 ? records.slice(0, perSet) : records });
  }
  return out;
}

/** Options of {@linkcode heldOutAccuracy}. */
export interface AccuracyOptions {
  /** 1 = greedy (the default, as train.ts's report). */
  beams?: number;
  /** Prompts per decoding batch (default 8). */
  batch?: number;
  onSet?: (dataset: string, index: number, total: number) => void;
  shouldStop?: () => boolean;
}

/**
 * Accuracy on held-out sets as train.ts reports it before and after training
 * (lib/cli/eval.ts accuracyHooks): adapters merged for decoding and restored exactly,
 * each set decoded with the reference's settings (greedy unless `beams` > 1) and scored with
 * the reference's keyword rules.
 */
export async function heldOutAccuracy(
  model: LlamaModel,
  tok: Tokenizer,
  sets: readonly HeldOutSet[],
  opts: AccuracyOptions = {},
): Promise<AccuracySummary> {
  const beams = opts.beams ?? 1;
  const rows: DatasetScore[] = [];
  let tag = beams === 1 ? "greedy" : `beam=${beams}`;
  const h = await mergeAdaptersInPlace(model);
  try {
    for (const [i, s] of sets.entries()) {
      if (opts.shouldStop?.()) break;
      opts.onSet?.(s.dataset, i, sets.length);
      const settings = decodeSettings(s.dataset, { greedy: beams === 1, beamSize: beams });
      tag = decodingTag(settings, { limit: s.records.length });
      const preds = await predictTexts(model, tok, s.records, settings, { batch: opts.batch });
      rows.push(datasetScore(s.dataset, scoreRecords(s.dataset, s.records, preds)));
    }
  } finally {
    h.restore();
  }
  return summarize(tag, rows);
}

/**
 * The model's answer to an instruction, decoded as the held-out sets are (BOS + the Alpaca
 * template, 16 new tokens unless `maxNewTokens`, cut at EOS/"Q:"/"R:").
 */
export async function answer(
  model: LlamaModel,
  tok: Tokenizer,
  instruction: string,
  opts: { beams?: number; maxNewTokens?: number } = {},
): Promise<string> {
  const beams = opts.beams ?? 1;
  const settings = decodeSettings("common_170k", {
    greedy: beams === 1,
    beamSize: beams,
    maxNewTokens: opts.maxNewTokens,
  });
  const [pred] = await predictTexts(model, tok, [{ instruction, output: "" }], settings, {
    batch: 1,
  });
  return pred;
}

/**
 * The words of `text` that are not whole tokens of the tokenizer's vocabulary (each word is
 * encoded as the pre-tokenizer splits it, with its leading space if it has one; a word that
 * needs several tokens is one the model never saw as a word). On the embedded model's 585-token
 * word-level vocabulary that flags "frog" in "is the frog green?"; on a real model's BPE
 * vocabulary rare words split too, so the page only shows this for the embedded model.
 * Distinct words, in order of appearance.
 */
export function wordsOutsideVocabulary(tok: Tokenizer, text: string): string[] {
  const out = new Set<string>();
  for (const m of text.matchAll(/ ?[\p{L}\p{N}]+/gu)) {
    const piece = m[0];
    if (!/\p{L}/u.test(piece)) continue;
    const word = piece.trim();
    // A word at the start of a line has no space before it: either spelling counts.
    if (tok.encode(piece).length > 1 && tok.encode(" " + word).length > 1) out.add(word);
  }
  return [...out];
}

/** Token ids of a prompt as {@linkcode promptLogits} feeds them: BOS, then the text. */
export function promptIds(tok: Tokenizer, prompt: string): number[] {
  return tok.encode((tok.bosToken ?? "") + prompt);
}

/** Next-token logits after a prompt (BOS + text), adapters in eval mode and not merged. */
export async function promptLogits(
  model: LlamaModel,
  tok: Tokenizer,
  prompt: string,
): Promise<{ ids: number[]; logits: Float32Array }> {
  const ids = promptIds(tok, prompt);
  if (ids.length === 0) throw new Error("promptLogits: empty prompt");
  const logits = await inEvalMode(
    model,
    () =>
      model.logits(
        Int32Array.from(ids),
        Uint32Array.of(0, ids.length),
        Int32Array.of(ids.length - 1),
      ),
  );
  return { ids, logits };
}

/** The attached adapters as a PEFT folder's two files (what `deno task train` saves). */
export async function adapterFiles(
  model: LlamaModel,
  config: AdapterConfig,
): Promise<AdapterFileBytes> {
  return adapterFileBytes(config, await adapterTensors(model, config.peftType));
}

// ---------------------------------------------------------------------------------------------
// Kernel check (tests/browser/browser_test.ts): the matmul kernels on the page's own GPU

/** One product of {@linkcode matmulCheck}: its largest error and the tolerance it was held to. */
export interface MatmulCheckCase {
  /** Layout and shape, e.g. "NT 37x29x13" or "accumulate TN 3x40x8x12". */
  label: string;
  /** max |GPU - f64 reference| over the output. */
  maxError: number;
  /** max over the output of |GPU - reference| / (atol + rtol·|reference|); ≤ 1 passes. */
  worstRatio: number;
}

/** What {@linkcode matmulCheck} found. */
export interface MatmulCheckReport {
  /** The kernel family that ran (a forced "subgroup" throws rather than fall back). */
  variant: "cpu" | "tiled" | "subgroup";
  /** What matmul's "auto" picks on this device. */
  autoVariant: "cpu" | "tiled" | "subgroup";
  hasSubgroups: boolean;
  isCpuAdapter: boolean;
  /** The adapter's [subgroupMinSize, subgroupMaxSize] where the browser reports them. */
  subgroupSizes: [number, number] | null;
  cases: MatmulCheckCase[];
  /** Largest worstRatio over the cases. */
  worstRatio: number;
}

/**
 * Runs one matmul kernel family on `gpu` for every layout on ragged, thin and aligned f32 shapes,
 * batched (broadcast b, alpha) and accumulating into a column block, and compares each product
 * with the f64 CPU reference (tolerance rtol 1e-5, atol 2e-6·√K, as tests/ops/matmul_test.ts). The
 * browser test runs it with "subgroup" on SwiftShader, whose device has the subgroups feature,
 * because Deno's adapter here has none.
 */
export async function matmulCheck(
  gpu: Gpu,
  variant: MatmulVariant = "subgroup",
): Promise<MatmulCheckReport> {
  const ran = resolveMatmulVariant(gpu, variant);
  const rng = new Rng(7);
  const rand = (n: number) => rng.uniformArray(n, -1, 1);
  const pending: { label: string; K: number; out: Tensor; want: ArrayLike<number> }[] = [];
  const inputs: Tensor[] = [];
  const up = (data: Float32Array, shape: number[]) => {
    const t = gpu.upload(data, shape);
    inputs.push(t);
    return t;
  };
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      const layout = { transA, transB };
      const tag = `${transA ? "T" : "N"}${transB ? "T" : "N"}`;
      const shapes: [number, number, number][] = [
        [1, 1, 1],
        [1, 37, 13],
        [29, 1, 13],
        [37, 29, 13],
        [65, 67, 71],
        [70, 36, 8],
        [40, 136, 40],
      ];
      for (const [M, N, K] of shapes) {
        const av = rand(M * K), bv = rand(K * N);
        const a = up(av, transA ? [K, M] : [M, K]);
        const b = up(bv, transB ? [N, K] : [K, N]);
        const out = await matmul(gpu, a, b, { ...layout, variant });
        pending.push({
          label: `${tag} ${M}x${N}x${K}`,
          K,
          out,
          want: matmulRef(av, bv, M, N, K, layout),
        });
      }
      // A batch of 3 against a shared b, scaled by alpha.
      {
        const B = 3, M = 21, N = 19, K = 10;
        const av = rand(B * M * K), bv = rand(K * N);
        const a = up(av, transA ? [B, K, M] : [B, M, K]);
        const b = up(bv, transB ? [N, K] : [K, N]);
        const out = await matmul(gpu, a, b, { ...layout, variant, alpha: -0.5 });
        const want = new Float64Array(B * M * N);
        for (let i = 0; i < B; i++) {
          const r = matmulRef(av.subarray(i * M * K, (i + 1) * M * K), bv, M, N, K, layout);
          for (let j = 0; j < M * N; j++) want[i * M * N + j] = -0.5 * r[j];
        }
        pending.push({ label: `batched ${tag} ${B}x${M}x${N}x${K}`, K, out, want });
      }
      // Accumulate into rows [2, 2+M), columns [3, 3+N) of a wider output.
      {
        const M = 40, N = 8, K = 12, W = N + 5, rows = M + 3;
        const av = rand(M * K), bv = rand(K * N), cv = rand(rows * W);
        const a = up(av, transA ? [K, M] : [M, K]);
        const b = up(bv, transB ? [N, K] : [K, N]);
        const out = gpu.upload(cv, [rows, W]);
        await matmul(gpu, a, b, {
          ...layout,
          variant,
          out,
          accumulate: true,
          outStride: W,
          outOffset: 2 * W + 3,
        });
        const r = matmulRef(av, bv, M, N, K, layout);
        const want = Float64Array.from(cv);
        for (let m = 0; m < M; m++) {
          for (let n = 0; n < N; n++) want[(2 + m) * W + 3 + n] += r[m * N + n];
        }
        pending.push({ label: `accumulate ${tag} ${M}x${N}x${K}`, K, out, want });
      }
    }
  }
  const got = await gpu.readMany(pending.map((p) => p.out));
  for (const t of [...inputs, ...pending.map((p) => p.out)]) t.release();
  const cases = pending.map((p, i) => {
    const atol = 2e-6 * Math.sqrt(p.K), rtol = 1e-5;
    let maxError = 0, worstRatio = 0;
    for (let j = 0; j < p.want.length; j++) {
      const d = Math.abs(got[i][j] - p.want[j]);
      // NaN compares false: count it as a failure.
      const ratio = d / (atol + rtol * Math.abs(p.want[j]));
      maxError = Number.isNaN(d) ? Infinity : Math.max(maxError, d);
      worstRatio = Number.isNaN(ratio) ? Infinity : Math.max(worstRatio, ratio);
    }
    return { label: p.label, maxError, worstRatio };
  });
  const info = gpu.adapter.info as { subgroupMinSize?: number; subgroupMaxSize?: number };
  return {
    variant: ran,
    autoVariant: resolveMatmulVariant(gpu, "auto"),
    hasSubgroups: gpu.hasSubgroups,
    isCpuAdapter: gpu.isCpuAdapter,
    subgroupSizes: info?.subgroupMinSize && info.subgroupMaxSize
      ? [info.subgroupMinSize, info.subgroupMaxSize]
      : null,
    cases,
    worstRatio: Math.max(...cases.map((c) => c.worstRatio)),
  };
}
