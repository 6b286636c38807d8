/**
 * Evaluation without file I/O: the `deno task eval` flags, running a dataset's test prompts
 * through a decoder (docs/reference.md, Decoding), scoring the predictions (Scoring), summary
 * tables and charts, and perplexity.
 *
 * Decoding follows the reference: BOS + the Alpaca template with an empty target
 * (lib/data.ts `testPrompts`), 4-beam search with 16 new tokens for the commonsense sets (200
 * for gsm8k), the new tokens decoded WITH special tokens and cut at the pad/EOS strings, "Q:"
 * and "R:" (`cleanPrediction`); ConvAI2 uses `BOS + "CONTEXT: {in} TARGET: "`, 4 beams,
 * length_penalty 0.9, no_repeat_ngram_size 4 and 32 new tokens.
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { checkBooleanFlag, decimalFlag } from "./args.ts";
import { HiraError } from "./errors.ts";
import { DATASET_FORMATS, type DatasetFormat, isDatasetPath } from "./dataset_format.ts";
import {
  type DataRecord,
  type DatasetName,
  maxNewTokens,
  maxTokenLength,
  testPrompts,
} from "./data.ts";
import {
  ANSWER_PATTERNS,
  cleanPrediction,
  COMMONSENSE_TASKS,
  extractAnswer,
  extractGsm8kNumber,
  gsm8kCorrect,
  isCommonsenseTask,
  isCorrect,
} from "./extract.ts";
import { generate, type GenerateOptions, type StepFn, type Stepper } from "./generate.ts";
import { KvCacheDecoder, recomputeStep } from "./decode.ts";
import type { LlamaModel } from "./model.ts";
import type { Tokenizer } from "./tokenizer.ts";
import type { TemplateType } from "./prompt.ts";
import type { WeightDtypeFlag } from "./load.ts";
import type { ConvAI2Scores, DialogueRecord } from "./metrics.ts";
import { barChart } from "./svg.ts";

// ---------------------------------------------------------------------------------------------
// Flags

/** Datasets `deno task eval` decodes and scores: the eight commonsense sets, gsm8k, convai2. */
export const EVAL_DATASETS: readonly string[] = [...COMMONSENSE_TASKS, "gsm8k", "convai2"];

/** Sub-commands of eval.ts besides a dataset name. */
export const EVAL_COMMANDS: readonly string[] = ["all", "perplexity", "merge", "rank"];

/** Parsed `deno task eval|merge|rank` flags. */
export interface EvalArgs {
  /** A dataset name, "all", "perplexity", "merge" or "rank". */
  command: string;
  /** Run folder, checkpoint-N folder, adapter folder or model folder; null = base model. */
  ckpt: string | null;
  /** Second adapter for `rank` (compared side by side). */
  ckpt2: string | null;
  /** Base model folder; null = the adapter config's base_model_name_or_path, then the tiny model. */
  model: string | null;
  /** Tokenizer folder; null = the model folder. */
  tokenizer: string | null;
  data_root: string;
  /** Output folder; null = `{ckpt}/eval/` (or results_hira/eval-<model>/ without --ckpt). */
  out: string | null;
  beam_size: number;
  decoding: "default" | "greedy";
  /** null = the dataset's own (16 commonsense, 200 gsm8k, 32 convai2). */
  max_new_tokens: number | null;
  /** Prompts per decoding batch. */
  batch: number;
  /** Evaluate only the first N examples of each set (0 = all). */
  limit: number;
  /** Saved predictions files to re-score without a model. */
  predictions: string[];
  /** perplexity: a JSON array of token id arrays. */
  tokens: string | null;
  /** perplexity: raw text, one document per line, or a JSON array of strings. */
  text: string | null;
  /** merge: storage dtype of model.safetensors; null = the base config's dtype. */
  dtype: "f32" | "f16" | "bf16" | null;
  /** merge: overwrite a non-empty output folder. */
  force: boolean;
  /** rank: count singular values above this. */
  threshold: number;
  /** rank: only these layers (null = all). */
  layers: number[] | null;
  /** Merge adapters into the weights before decoding (same math, faster); --no-merge keeps them. */
  merge: boolean;
  /** Which checkpoint of a run folder supplies best_model_checkpoint (-1 = latest). */
  load_order: number;
  /** Storage of the frozen weight matrices ("auto": f16 where the adapter has shader-f16). */
  weight_dtype: WeightDtypeFlag;
  /** `--dataset=PATH`: your own file or folder (docs/data.md); null for the named sets. */
  dataset: string | null;
  /** With --dataset=PATH: force a record format ("" = detect). */
  dataset_format: string;
  /** With chat records: a Jinja chat template file instead of the model's. */
  chat_template: string | null;
  /** With --model=org/name: branch, tag or commit hash in the Hugging Face cache. */
  revision: string;
  /** With --dataset=PATH: tokens per example (0: 1024, or the model's limit when smaller). */
  seq_len: number;
  help: boolean;
}

interface EvalFlag {
  name: keyof EvalArgs;
  type: "string" | "number" | "boolean" | "list";
  def: string | number | boolean | null;
  help: string;
}

const EVAL_FLAGS: readonly EvalFlag[] = [
  {
    name: "ckpt",
    type: "string",
    def: null,
    help: "run folder (its adapter/ or best checkpoint), checkpoint-N, adapter or model folder",
  },
  {
    name: "model",
    type: "string",
    def: null,
    help: "base model folder (default: the adapter's base_model_name_or_path, else the tiny model)",
  },
  { name: "tokenizer", type: "string", def: null, help: "tokenizer folder (default: the model's)" },
  { name: "data_root", type: "string", def: "data_file", help: "where {folder}/test.json live" },
  { name: "out", type: "string", def: null, help: "output folder (default {ckpt}/eval/)" },
  { name: "beam_size", type: "number", def: 4, help: "beams (the reference's default 4)" },
  { name: "decoding", type: "string", def: "default", help: "default | greedy (= 1 beam)" },
  {
    name: "max_new_tokens",
    type: "number",
    def: null,
    help: "new tokens (default 16 commonsense, 200 gsm8k, 32 convai2)",
  },
  { name: "batch", type: "number", def: 8, help: "prompts per decoding batch" },
  {
    name: "limit",
    type: "number",
    def: 0,
    help: "evaluate only the first N examples of each set (0 = all)",
  },
  {
    name: "predictions",
    type: "list",
    def: null,
    help: "re-score a saved predictions JSONL without a model (repeatable)",
  },
  {
    name: "tokens",
    type: "string",
    def: null,
    help: "perplexity: JSON array of token id arrays",
  },
  {
    name: "text",
    type: "string",
    def: null,
    help: "perplexity: text file, one document per line, or a JSON array of strings",
  },
  {
    name: "dtype",
    type: "string",
    def: null,
    help: "merge: f32 | f16 | bf16 (default: the base model's dtype or torch_dtype)",
  },
  { name: "force", type: "boolean", def: false, help: "merge: overwrite a non-empty --out" },
  { name: "ckpt2", type: "string", def: null, help: "rank: a second adapter to compare" },
  {
    name: "threshold",
    type: "number",
    def: 0.005,
    help: "rank: count singular values above this (paper Fig. 4)",
  },
  { name: "layers", type: "string", def: null, help: "rank: only these layers, e.g. 0,15,31" },
  {
    name: "merge",
    type: "boolean",
    def: true,
    help: "merge the adapter into the weights before decoding (--no-merge: keep it separate)",
  },
  {
    name: "load_order",
    type: "number",
    def: -1,
    help: "which checkpoint of a run folder names the best one (-1 = latest)",
  },
  {
    name: "weight_dtype",
    type: "string",
    def: "f32",
    help: "auto | f32 | f16: storage of the frozen weight matrices (auto: f16 with shader-f16)",
  },
  {
    name: "dataset_format",
    type: "string",
    def: "",
    help: "with --dataset=PATH: alpaca | chat | text | prompt_completion (default: detected)",
  },
  {
    name: "chat_template",
    type: "string",
    def: null,
    help: "with chat records: a Jinja chat template file (default: the model's)",
  },
  {
    name: "revision",
    type: "string",
    def: "main",
    help: "with --model=org/name: branch, tag or commit hash in the local Hugging Face cache",
  },
  {
    name: "seq_len",
    type: "number",
    def: 0,
    help: "with --dataset=PATH: tokens per example (0: 1024 or the model's limit)",
  },
];

/** `deno task eval --help`. */
export function evalHelp(): string {
  const lines = [
    "Usage:",
    "  deno task eval <dataset|all> [--ckpt=RUN_OR_ADAPTER] [--model=DIR] [flags]",
    "  deno task eval <dataset|all> --predictions=FILE.jsonl     (re-score, no model)",
    "  deno task eval perplexity --model=DIR [--ckpt=ADAPTER] --tokens=FILE.json | --text=FILE",
    "  deno task eval --dataset=PATH [--ckpt=...] [--model=DIR|org/name]   (your own data:",
    "      decodes the test split, writes predictions, exact match / contains-answer)",
    "  deno task eval perplexity --dataset=PATH [--ckpt=...]   (mean NLL, training's formatting)",
    "  deno task merge --model=DIR --ckpt=ADAPTER --out=DIR [--dtype=f32|f16|bf16] [--force]",
    "  deno task rank --ckpt=ADAPTER [--ckpt2=ADAPTER2] [--model=DIR] [--out=DIR]",
    "",
    `Datasets: ${EVAL_DATASETS.join(", ")}; all = the eight commonsense sets in one process,`,
    "each decoded, written and scored with its own data (the reference's common_all wrote",
    "obqa's contexts and gold answers into every set's file; fixed here).",
    "Test data is read from {data_root}/{folder}/test.json (folders as the reference's",
    "dataset_map). --limit=N evaluates the first N examples of each set (quick checks; the",
    "numbers are then not comparable with full runs, and output names carry _limit=N).",
    "",
  ];
  for (const f of EVAL_FLAGS) {
    const d = f.def === null ? "" : ` (default ${f.def})`;
    lines.push(`  --${String(f.name).padEnd(16)} ${f.help}${d}`);
  }
  return lines.join("\n");
}

function flagError(name: string, msg: string): HiraError {
  return new HiraError(`--${name}`, msg);
}

/**
 * Parses eval.ts's argv: the first positional is the command (a dataset, "all", "perplexity",
 * "merge" or "rank"; `--dataset=NAME` also works, as in the reference). Bad values are a
 * HiraError naming the flag.
 */
export function parseEvalArgs(argv: readonly string[]): EvalArgs {
  const strings = EVAL_FLAGS.filter((f) => f.type === "string" || f.type === "number")
    .map((f) => f.name as string);
  const booleans = EVAL_FLAGS.filter((f) => f.type === "boolean").map((f) => f.name as string);
  const lists = EVAL_FLAGS.filter((f) => f.type === "list").map((f) => f.name as string);
  const known = new Set([...strings, ...booleans, ...lists, "dataset", "help", "h"]);
  const raw = parseArgs([...argv], {
    string: [...strings, ...lists, "dataset"],
    boolean: [...booleans, "help"],
    collect: lists,
    negatable: booleans,
    alias: { h: "help" },
    unknown: (arg: string) => {
      const name = arg.replace(/^--?(no-)?/, "").split("=")[0];
      if (arg.startsWith("-") && !known.has(name)) {
        throw flagError(name, "unknown flag (see --help)");
      }
      return true;
    },
  }) as Record<string, unknown>;
  const positional = (raw._ as unknown[]).map(String);
  const out: Record<string, unknown> = {};
  for (const f of EVAL_FLAGS) {
    const v = raw[f.name];
    if (f.type === "number") {
      if (v === undefined) out[f.name] = f.def;
      else if (v === "") throw flagError(f.name, "needs a number");
      else out[f.name] = decimalFlag(f.name, v);
    } else if (f.type === "boolean") {
      checkBooleanFlag(f.name, argv);
      // parseArgs fills absent booleans with false, so presence decides whether the default holds.
      const present = argv.some((x) => new RegExp(`^--(no-)?${f.name}(=|$)`).test(x));
      out[f.name] = present ? Boolean(v) : f.def;
    } else if (f.type === "list") {
      const list = ((v as string[] | undefined) ?? []).map(String);
      if (list.includes("")) throw flagError(f.name, "needs a value");
      out[f.name] = list;
    } else if (v === "") {
      // `--model` alone would silently mean the default model, `--out` alone the current folder.
      throw flagError(f.name, `needs a value (--${f.name}=VALUE)`);
    } else out[f.name] = v === undefined ? f.def : String(v);
  }
  if (raw.dataset === "") throw flagError("dataset", "needs a value");
  let dataset = raw.dataset === undefined ? null : String(raw.dataset);
  // Your own data: --dataset=PATH (or the path as the command) runs the decode-and-score
  // command "file", or perplexity over the file.
  if (dataset === null && positional.length === 1 && isDatasetPath(positional[0])) {
    dataset = positional.pop()!;
  }
  out.dataset = null;
  if (dataset !== null && isDatasetPath(dataset)) {
    out.dataset = dataset;
    if (positional.length === 0) positional.push("file");
    else if (positional[0] !== "perplexity") {
      throw flagError(
        "dataset",
        `a file dataset goes with perplexity or no command, not '${positional[0]}'`,
      );
    }
    dataset = null;
  }
  if (positional.length > 1) {
    throw new HiraError(positional[1], "unexpected argument (one command or dataset at a time)");
  }
  if (dataset !== null && positional.length === 1 && positional[0] !== dataset) {
    throw flagError("dataset", `'${dataset}' contradicts the command '${positional[0]}'`);
  }
  out.command = positional[0] ?? dataset ?? "";
  out.help = raw.help === true;
  const layers = out.layers as string | null;
  if (layers !== null) {
    const list = layers.split(",").map((s) => s.trim()).filter((s) => s !== "").map(Number);
    if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n < 0)) {
      throw flagError("layers", `'${layers}' is not a comma list of layer numbers`);
    }
    out.layers = list;
  }
  const a = out as unknown as EvalArgs;
  if (a.help) return a;
  const posInt = (k: keyof EvalArgs, min: number) => {
    const v = a[k] as number | null;
    if (v !== null && !(Number.isInteger(v) && v >= min)) {
      throw flagError(k, `must be an integer >= ${min}, got ${v}`);
    }
  };
  posInt("beam_size", 1);
  posInt("max_new_tokens", 1);
  posInt("batch", 1);
  posInt("limit", 0);
  if (!Number.isInteger(a.load_order)) throw flagError("load_order", "must be an integer");
  if (!(a.threshold >= 0)) throw flagError("threshold", "must be a non-negative number");
  if (a.decoding !== "default" && a.decoding !== "greedy") {
    throw flagError("decoding", `'${a.decoding}' is not one of default, greedy`);
  }
  if (!["auto", "f32", "f16"].includes(a.weight_dtype)) {
    throw flagError("weight_dtype", `'${a.weight_dtype}' is not auto, f32 or f16`);
  }
  if (a.dtype !== null && !["f32", "f16", "bf16"].includes(a.dtype)) {
    throw flagError("dtype", `'${a.dtype}' is not one of f32, f16, bf16`);
  }
  if (a.command === "") {
    throw new HiraError(
      "eval.ts",
      `no dataset or command given (one of ${[...EVAL_DATASETS, ...EVAL_COMMANDS].join(", ")})`,
    );
  }
  if (a.dataset_format !== "" && !DATASET_FORMATS.includes(a.dataset_format as DatasetFormat)) {
    throw flagError(
      "dataset_format",
      `'${a.dataset_format}' is not one of ${DATASET_FORMATS.join(", ")}`,
    );
  }
  posInt("seq_len", 0);
  if (a.command === "file" && a.dataset !== null) return a;
  if (!EVAL_DATASETS.includes(a.command) && !EVAL_COMMANDS.includes(a.command)) {
    throw new HiraError(
      a.command,
      `unknown dataset or command (one of ${[...EVAL_DATASETS, ...EVAL_COMMANDS].join(", ")})`,
    );
  }
  return a;
}

// ---------------------------------------------------------------------------------------------
// Decoding

/** How one dataset is decoded (docs/reference.md, Decoding; Data layouts and templates). */
export interface DecodeSettings {
  /** Prompt template (4: Alpaca; 0: CONTEXT/TARGET). */
  template: TemplateType;
  /** Prompt tokens kept (right truncation, as the reference). */
  maxPromptTokens: number;
  maxNewTokens: number;
  /** 1 = greedy. */
  numBeams: number;
  lengthPenalty: number;
  noRepeatNgramSize: number;
}

/** Decoding choices from the flags (all optional). */
export interface DecodeChoice {
  /** Beams (default 4). */
  beamSize?: number | null;
  /** Greedy decoding (overrides beamSize). */
  greedy?: boolean;
  /** New-token override. */
  maxNewTokens?: number | null;
}

/**
 * The reference's decoding settings for a dataset: commonsense sets, common_170k and gsm8k use
 * the Alpaca prompt, `--beam_size` beams (default 4), length_penalty 1 and 16 (gsm8k 200) new
 * tokens; convai2 uses the CONTEXT/TARGET prompt, length_penalty 0.9, no_repeat_ngram_size 4 and
 * 32 new tokens. Greedy means one beam.
 */
export function decodeSettings(dataset: string, choice: DecodeChoice = {}): DecodeSettings {
  const beams = choice.greedy ? 1 : (choice.beamSize ?? 4);
  const name = dataset as DatasetName;
  if (dataset === "convai2") {
    return {
      template: 0,
      maxPromptTokens: maxTokenLength(name),
      maxNewTokens: choice.maxNewTokens ?? maxNewTokens(name),
      numBeams: beams,
      lengthPenalty: 0.9,
      noRepeatNgramSize: 4,
    };
  }
  if (!isCommonsenseTask(dataset) && dataset !== "gsm8k" && dataset !== "common_170k") {
    throw new HiraError(dataset, "no decoding settings for this dataset");
  }
  return {
    template: 4,
    maxPromptTokens: maxTokenLength(name),
    maxNewTokens: choice.maxNewTokens ?? maxNewTokens(name),
    numBeams: beams,
    lengthPenalty: 1,
    noRepeatNgramSize: 0,
  };
}

/**
 * The decoding part of output names: "beam=4" or "greedy", then "_maxT=N" for a new-token
 * override and "_limit=N" for a subset (so partial runs never overwrite full ones).
 */
export function decodingTag(
  settings: DecodeSettings,
  opts: { maxNewTokensOverride?: number | null; limit?: number } = {},
): string {
  let tag = settings.numBeams === 1 ? "greedy" : `beam=${settings.numBeams}`;
  if (opts.maxNewTokensOverride) tag += `_maxT=${opts.maxNewTokensOverride}`;
  if (opts.limit) tag += `_limit=${opts.limit}`;
  return tag;
}

/** The predictions file name, reference-like: `output_{dataset}_{tag}_eval.jsonl`. */
export function predictionsFileName(dataset: string, tag: string): string {
  return `output_${dataset}_${tag}_eval.jsonl`;
}

/** Which next-token provider decodes: the KV-cache decoder or full recomputation (oracle). */
export type DecoderKind = "kv" | "recompute";

/** Options of {@linkcode decodeTokens} / {@linkcode predictTexts}. */
export interface PredictOptions {
  /** Prompts per decoding batch (default 8). */
  batch?: number;
  /** Default "kv". */
  decoder?: DecoderKind;
  /** Called after each batch with the number of prompts done. */
  onProgress?: (done: number, total: number) => void;
}

/** The EOS ids decoding stops at: the model config's (as HF's generation_config), else the tokenizer's. */
export function stopIds(model: LlamaModel, tok: Tokenizer): number[] {
  return model.config.eosTokenIds.length ? [...model.config.eosTokenIds] : [tok.eosId];
}

/**
 * Runs `fn` with every LoRA adapter in eval mode (dropout off, as the reference's model.eval()),
 * restoring each adapter's mode afterwards.
 */
export async function inEvalMode<T>(model: LlamaModel, fn: () => Promise<T>): Promise<T> {
  const saved = [...model.adapters.values()].map((ad) => [ad, ad.training] as const);
  for (const [ad] of saved) ad.training = false;
  try {
    return await fn();
  } finally {
    for (const [ad, mode] of saved) ad.training = mode;
  }
}

/**
 * Generates the new tokens of every prompt, `batch` prompts at a time (all beams of a batch in
 * one provider call per step). Adapters run in eval mode.
 */
export async function decodeTokens(
  model: LlamaModel,
  prompts: readonly (readonly number[])[],
  gen: GenerateOptions,
  opts: PredictOptions = {},
): Promise<number[][]> {
  const batch = opts.batch ?? 8;
  const out: number[][] = [];
  await inEvalMode(model, async () => {
    for (let i = 0; i < prompts.length; i += batch) {
      const chunk = prompts.slice(i, i + batch);
      const source: StepFn | Stepper = (opts.decoder ?? "kv") === "kv"
        ? new KvCacheDecoder(model)
        : recomputeStep(model);
      out.push(...await generate(source, chunk, gen));
      opts.onProgress?.(Math.min(i + batch, prompts.length), prompts.length);
    }
  });
  return out;
}

/**
 * Decodes the records' test prompts and returns the cleaned predictions (decoded with special
 * tokens, then pad strings deleted and cut at EOS, "Q:", "R:"), in record order.
 */
export async function predictTexts(
  model: LlamaModel,
  tok: Tokenizer,
  records: readonly DataRecord[],
  settings: DecodeSettings,
  opts: PredictOptions = {},
): Promise<string[]> {
  const prompts = testPrompts(records, tok, {
    template: settings.template,
    maxLength: settings.maxPromptTokens,
  }).map((p) => p.ids);
  const news = await decodeTokens(model, prompts, {
    maxNewTokens: settings.maxNewTokens,
    eosIds: stopIds(model, tok),
    numBeams: settings.numBeams,
    lengthPenalty: settings.lengthPenalty,
    noRepeatNgramSize: settings.noRepeatNgramSize,
  }, opts);
  return news.map((ids) =>
    cleanPrediction(tok.decode(ids, { skipSpecial: false }), {
      padToken: tok.padToken,
      eosToken: tok.eosToken,
    })
  );
}

// ---------------------------------------------------------------------------------------------
// Scoring

/** One scored example, as written to the predictions JSONL. */
export interface PredictionRecord {
  /** The instruction (the reference's "context"). */
  context: string;
  /** The cleaned prediction. */
  pred: string;
  /** The gold output text (the reference's "gt"). */
  gold: string;
  /** What the scorer read from pred: the keyword, or gsm8k's number ("" when none). */
  extracted: string;
  correct: boolean;
  /** gsm8k: the record's `answer` the number is compared with. */
  answer?: unknown;
}

const KEYWORD_FAMILIES: readonly RegExp[] = [
  ANSWER_PATTERNS.boolq,
  ANSWER_PATTERNS.piqa,
  ANSWER_PATTERNS.siqa,
  ANSWER_PATTERNS.hellas,
  ANSWER_PATTERNS.winog,
];

/**
 * Scores one prediction (docs/reference.md, Scoring): the commonsense first-keyword rule, gsm8k's
 * "new acc", and for common_170k (whose test set mixes the eight styles) the keyword family of the
 * gold output.
 */
export function scorePrediction(
  dataset: string,
  pred: string,
  gold: string,
  answer?: unknown,
): { extracted: string; correct: boolean } {
  if (dataset === "gsm8k") {
    const n = extractGsm8kNumber(pred);
    return { extracted: n === null ? "" : String(n), correct: gsm8kCorrect(pred, answer) };
  }
  if (isCommonsenseTask(dataset)) {
    return { extracted: extractAnswer(dataset, pred), correct: isCorrect(dataset, pred, gold) };
  }
  const family = KEYWORD_FAMILIES.find((re) => re.test(gold));
  return {
    extracted: family?.exec(pred)?.[0] ?? "",
    correct: isCorrect(dataset, pred, gold),
  };
}

/** Builds the scored records of a dataset from its test records and predictions. */
export function scoreRecords(
  dataset: string,
  records: readonly DataRecord[],
  preds: readonly string[],
): PredictionRecord[] {
  if (records.length !== preds.length) {
    throw new Error(`scoreRecords: ${records.length} records but ${preds.length} predictions`);
  }
  return records.map((r, i) => {
    const s = scorePrediction(dataset, preds[i], r.output, r.answer);
    const rec: PredictionRecord = {
      context: r.instruction,
      pred: preds[i],
      gold: r.output,
      extracted: s.extracted,
      correct: s.correct,
    };
    if (dataset === "gsm8k") rec.answer = r.answer;
    return rec;
  });
}

/** Accuracy of one dataset. */
export interface DatasetScore {
  dataset: string;
  /** Examples scored. */
  n: number;
  correct: number;
  /** correct / n × 100 (0 for an empty set). */
  accuracy: number;
}

/** Counts the correct records. */
export function datasetScore(dataset: string, records: readonly PredictionRecord[]): DatasetScore {
  const correct = records.filter((r) => r.correct).length;
  return {
    dataset,
    n: records.length,
    correct,
    accuracy: records.length ? (100 * correct) / records.length : 0,
  };
}

/**
 * Reads a predictions JSONL (ours, or the reference's `*_eval.jsonl` / `output.jsonl` with its
 * leading args/config lines and `gt` for the gold) and re-scores every example from `pred` and
 * the gold text (stored `extracted`/`correct` are recomputed, not trusted). Lines without a
 * string `pred` are skipped (the reference's header lines); a line that is not JSON is an error.
 *
 * gsm8k is scored against each record's `answer`. The reference's files lack it (its scorer
 * re-reads test.json), so `testRecords` (the gsm8k test set) supplies it by position, checked
 * against the line's context.
 */
export function rescorePredictions(
  text: string,
  file: string,
  dataset: string,
  testRecords?: readonly DataRecord[],
): PredictionRecord[] {
  const out: PredictionRecord[] = [];
  for (const { i, r } of predictionLines(text, file)) {
    const gold = typeof r.gold === "string" ? r.gold : typeof r.gt === "string" ? r.gt : null;
    if (gold === null) throw new HiraError(file, `line ${i + 1}: no 'gold' (or 'gt') string`);
    const context = typeof r.context === "string" ? r.context : "";
    let answer = r.answer;
    if (dataset === "gsm8k" && !("answer" in r)) {
      const t = testRecords?.[out.length];
      if (!t) throw new HiraError(file, `line ${i + 1}: gsm8k needs the record's 'answer'`);
      if (t.instruction !== context) {
        throw new HiraError(
          file,
          `line ${i + 1}: no 'answer', and its context differs from test record ${out.length}`,
        );
      }
      answer = t.answer;
    }
    const s = scorePrediction(dataset, r.pred, gold, answer);
    const rec: PredictionRecord = {
      context,
      pred: r.pred,
      gold,
      extracted: s.extracted,
      correct: s.correct,
    };
    if (dataset === "gsm8k") rec.answer = answer;
    out.push(rec);
  }
  if (out.length === 0) throw new HiraError(file, "no prediction lines (objects with 'pred')");
  return out;
}

/**
 * The lines of a predictions JSONL that are objects with a string `pred` (others, like the
 * reference's header lines, are skipped), lazily and in order, with their 0-based index `i`; a
 * line that is not JSON is an error naming `file` and its line number.
 */
export function* predictionLines(
  text: string,
  file: string,
): Generator<{ i: number; r: Record<string, unknown> & { pred: string } }> {
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() === "") continue;
    let v: unknown;
    try {
      v = JSON.parse(lines[i]);
    } catch (e) {
      throw new HiraError(file, `line ${i + 1}: not valid JSON (${(e as Error).message})`);
    }
    if (typeof v !== "object" || v === null || Array.isArray(v)) continue;
    const r = v as Record<string, unknown>;
    if (typeof r.pred === "string") yield { i, r: r as Record<string, unknown> & { pred: string } };
  }
}

/**
 * The dataset a predictions file belongs to, from its name: ours `output_{dataset}_..._eval.jsonl`
 * or the reference's `output_{load_order}_{dataset}_..._eval.jsonl`. Null when none matches.
 */
export function datasetFromFileName(name: string): string | null {
  const base = name.split(/[\\/]/).pop() ?? name;
  const m = /^output_(?:-?\d+_)?([a-z0-9_]+?)_(?:beam=|greedy|prob|maxT=|limit=|eval)/.exec(base);
  if (m && EVAL_DATASETS.includes(m[1])) return m[1];
  return null;
}

/** An accuracy table: one row per dataset and their unweighted mean. */
export interface AccuracySummary {
  /** The decoding tag ("beam=4", "greedy", ...). */
  decoding: string;
  rows: DatasetScore[];
  /** Unweighted mean of the rows' accuracies (the reference's Average), null without rows. */
  average: number | null;
}

/** Rows in the reference's reporting order (commonsense order first, then the rest by name). */
export function summarize(decoding: string, rows: readonly DatasetScore[]): AccuracySummary {
  const order = (d: string) => {
    const i = EVAL_DATASETS.indexOf(d);
    return i < 0 ? EVAL_DATASETS.length : i;
  };
  const sorted = [...rows].sort((a, b) =>
    order(a.dataset) - order(b.dataset) || a.dataset.localeCompare(b.dataset)
  );
  const average = sorted.length ? sorted.reduce((s, r) => s + r.accuracy, 0) / sorted.length : null;
  return { decoding, rows: sorted, average };
}

/** Merges new rows into a summary, replacing rows of the same dataset. */
export function mergeSummary(
  old: AccuracySummary | null,
  decoding: string,
  rows: readonly DatasetScore[],
): AccuracySummary {
  const keep = (old?.rows ?? []).filter((r) => !rows.some((n) => n.dataset === r.dataset));
  return summarize(decoding, [...keep, ...rows]);
}

const pct = (x: number | null) => (x === null ? "–" : x.toFixed(2));

/** The accuracy table as Markdown. */
export function summaryMarkdown(s: AccuracySummary, title = "Accuracy"): string {
  const lines = [
    `## ${title} (${s.decoding})`,
    "",
    "| dataset | examples | correct | accuracy (%) |",
    "|---|---:|---:|---:|",
    ...s.rows.map((r) => `| ${r.dataset} | ${r.n} | ${r.correct} | ${pct(r.accuracy)} |`),
  ];
  if (s.rows.length > 1) {
    lines.push(`| **average** (unweighted, ${s.rows.length} sets) | | | ${pct(s.average)} |`);
  }
  return lines.join("\n") + "\n";
}

/** A before/after accuracy table as Markdown (rows matched by dataset). */
export function beforeAfterMarkdown(
  before: AccuracySummary,
  after: AccuracySummary,
  title = "Held-out accuracy",
): string {
  const names = after.rows.map((r) => r.dataset);
  for (const r of before.rows) if (!names.includes(r.dataset)) names.push(r.dataset);
  const acc = (s: AccuracySummary, d: string) => s.rows.find((r) => r.dataset === d) ?? null;
  const delta = (a: number | null, b: number | null) =>
    a === null || b === null ? "–" : `${b - a >= 0 ? "+" : ""}${(b - a).toFixed(2)}`;
  const lines = [
    `## ${title} (${after.decoding})`,
    "",
    "| dataset | examples | before (%) | after (%) | change |",
    "|---|---:|---:|---:|---:|",
  ];
  for (const d of names) {
    const b = acc(before, d), a = acc(after, d);
    lines.push(
      `| ${d} | ${(a ?? b)!.n} | ${pct(b?.accuracy ?? null)} | ${pct(a?.accuracy ?? null)} | ${
        delta(b?.accuracy ?? null, a?.accuracy ?? null)
      } |`,
    );
  }
  if (names.length > 1) {
    lines.push(
      `| **average** | | ${pct(before.average)} | ${pct(after.average)} | ${
        delta(before.average, after.average)
      } |`,
    );
  }
  return lines.join("\n") + "\n";
}

/**
 * A bar chart of accuracy per dataset (plus the average when there are several), one series
 * per summary (e.g. before/after, or HiRA/LoRA).
 */
export function accuracyChart(
  series: readonly { name: string; summary: AccuracySummary }[],
  title = "Accuracy per dataset",
): string {
  const names: string[] = [];
  for (const s of series) {
    for (const r of s.summary.rows) if (!names.includes(r.dataset)) names.push(r.dataset);
  }
  const withAvg = names.length > 1;
  const categories = withAvg ? [...names, "average"] : names;
  return barChart({
    title,
    categories,
    yLabel: "accuracy (%)",
    series: series.map((s) => ({
      name: s.name,
      values: [
        ...names.map((d) => s.summary.rows.find((r) => r.dataset === d)?.accuracy ?? NaN),
        ...(withAvg ? [s.summary.average ?? NaN] : []),
      ],
    })),
  });
}

/** ConvAI2 dialogue records from the test records and predictions ({context, pred, gt}). */
export function dialogueRecords(
  records: readonly DataRecord[],
  preds: readonly string[],
): DialogueRecord[] {
  return records.map((r, i) => ({ context: r.instruction, pred: preds[i], gt: r.output }));
}

/** ConvAI2 scores and the BERTScore note as Markdown. */
export function convai2Markdown(s: ConvAI2Scores, decoding: string): string {
  const f = (x: number) => x.toFixed(2);
  return [
    `## ConvAI2 (${decoding}, ${s.items} items, ×100)`,
    "",
    "| BLEU | METEOR | ROUGE-L | F1 | dist-1 | dist-2 | BERTScore |",
    "|---:|---:|---:|---:|---:|---:|---|",
    `| ${f(s.bleu)} | ${f(s.meteor)} | ${f(s.rougeL)} | ${f(s.f1)} | ${f(s.dist1)} | ${
      f(s.dist2)
    } | skipped |`,
    "",
    "BERTScore (roberta-large) is skipped: no local scorer is bundled, so the paper's Average " +
    "(which includes its three BERTScore numbers) cannot be formed here.",
    "",
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------
// Perplexity

/** Result of {@linkcode perplexity}. */
export interface PerplexityResult {
  /** Mean NLL over every predicted token of every sequence (nats). */
  mean_nll: number;
  /** exp(mean_nll). */
  perplexity: number;
  /** Number of predicted tokens (Σ (length − 1)). */
  tokens: number;
  /** Mean NLL of each sequence. */
  per_sequence: number[];
}

/**
 * Next-token NLL of token sequences (each predicts its tokens 1..T−1 from the ones before),
 * packed into batches of at most `maxBatchTokens` tokens (a longer sequence runs alone).
 * `source` names the input in errors (a sequence shorter than 2 tokens, an id outside the
 * vocabulary).
 */
export async function perplexity(
  model: LlamaModel,
  seqs: readonly (readonly number[])[],
  opts: { maxBatchTokens?: number; source?: string } = {},
): Promise<PerplexityResult> {
  const source = opts.source ?? "tokens";
  const V = model.config.vocabSize;
  if (seqs.length === 0) throw new HiraError(source, "no sequences");
  seqs.forEach((s, i) => {
    if (s.length < 2) {
      throw new HiraError(source, `sequence ${i} has ${s.length} token(s); at least 2 are needed`);
    }
    for (const t of s) {
      if (!Number.isInteger(t) || t < 0 || t >= V) {
        throw new HiraError(
          source,
          `sequence ${i}: token id ${t} is outside the vocabulary (${V})`,
        );
      }
    }
  });
  const maxTokens = opts.maxBatchTokens ?? 2048;
  const perSeq: number[] = [];
  let total = 0, count = 0;
  await inEvalMode(model, async () => {
    for (let i = 0; i < seqs.length;) {
      const group: (readonly number[])[] = [];
      let n = 0;
      while (i < seqs.length && (group.length === 0 || n + seqs[i].length <= maxTokens)) {
        group.push(seqs[i]);
        n += seqs[i].length;
        i++;
      }
      const tokens = new Int32Array(n), targets = new Int32Array(n).fill(-100);
      const cu = new Uint32Array(group.length + 1);
      let off = 0, counted = 0;
      group.forEach((s, b) => {
        tokens.set(s, off);
        for (let t = 0; t + 1 < s.length; t++) targets[off + t] = s[t + 1];
        counted += s.length - 1;
        off += s.length;
        cu[b + 1] = off;
      });
      const nll = await model.tokenNll({ tokens, targets, cuSeqlens: cu, numCounted: counted });
      let k = 0;
      for (const s of group) {
        let sum = 0;
        for (let t = 0; t + 1 < s.length; t++) sum += nll[k++];
        perSeq.push(sum / (s.length - 1));
        total += sum;
        count += s.length - 1;
      }
    }
  });
  const mean = total / count;
  // A NaN or infinite perplexity printed as null with exit 0 looked like a result.
  if (!Number.isFinite(Math.exp(mean))) {
    throw new HiraError(
      source,
      `the mean NLL is ${mean}, so the perplexity is not finite: the model (or adapter) gives ` +
        "NaN or infinite logits; no perplexity is reported",
    );
  }
  return { mean_nll: mean, perplexity: Math.exp(mean), tokens: count, per_sequence: perSeq };
}

/**
 * Token sequences from a `--tokens` file's JSON: an array of token id arrays, or an object with
 * such an array under "tokens" (the fixtures' layout).
 */
export function parseTokenFile(json: unknown, file: string): number[][] {
  const arr = typeof json === "object" && json !== null && !Array.isArray(json)
    ? (json as Record<string, unknown>).tokens
    : json;
  if (!Array.isArray(arr)) throw new HiraError(file, "expected a JSON array of token id arrays");
  return arr.map((s, i) => {
    if (
      !Array.isArray(s) || s.some((t) => typeof t !== "number" || !Number.isInteger(t) || t < 0)
    ) {
      throw new HiraError(file, `item ${i} is not an array of non-negative integer token ids`);
    }
    return s as number[];
  });
}

/**
 * Documents of a `--text` file: a JSON array of strings, or else one document per non-empty
 * line.
 */
export function parseTextFile(text: string, file: string): string[] {
  const t = text.trimStart();
  if (t.startsWith("[")) {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new HiraError(file, `looks like JSON but does not parse (${(e as Error).message})`);
    }
    if (!Array.isArray(json) || json.some((s) => typeof s !== "string")) {
      throw new HiraError(file, "expected a JSON array of strings");
    }
    return json as string[];
  }
  return text.split(/\r?\n/).filter((l) => l.trim() !== "");
}

/** Token ids of a document for perplexity: BOS (when the tokenizer has one) + the text. */
export function documentTokens(tok: Tokenizer, text: string): number[] {
  return [...(tok.bosId !== null ? [tok.bosId] : []), ...tok.encode(text)];
}
