/**
 * The flags of both programs, in one module. train.ts: every flag of the reference
 * train_hira.py (same names, meanings and defaults, except where the reference's default is a
 * bug), plus what a real run needs. eval.ts: its table, --help and parsing (below). Pure (no Deno
 * APIs): parse an argv array, validate, and render --help; one-line errors for bad values.
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { HiraError } from "../engine/errors.ts";
import { DATASET_FORMATS, type DatasetFormat, isDatasetPath } from "../train/dataset_format.ts";
import { EVAL_COMMANDS, EVAL_DATASETS } from "../eval/scoring.ts";
import type { WeightDtypeFlag } from "../model/load.ts";

/** Parsed and validated training flags. */
export interface TrainArgs {
  peft_type: "hira" | "lora" | "full";
  enable_grad_ckpt: boolean;
  batch: number;
  grad_acc: number;
  num_workers: number;
  warmup: number;
  weight_decay: number;
  epoch: number;
  lr: number;
  model: string;
  ckpt: string | null;
  dataset: string;
  dataset_analysis: boolean;
  dataset_ratio: number;
  local_rank: number;
  ds_config: string | null;
  output_folder: string;
  load_bit: number;
  r_ab: number;
  target_modules: string;
  eval_strategy: "no" | "steps" | "epoch";
  eval_steps: number;
  max_new_tokens: number | null;
  beam_size: number | null;
  virtual_tokens: number;
  compute_rank: boolean;
  compute_norm: boolean;
  load_order: number;
  init_ab: string;
  train_ab: string;
  seed: number;
  do_sample: string;
  rand_R: boolean;
  exp_name: string;
  decoding: "default" | "greedy";
  save_total_limit: number;
  early_stop_patience: number;
  // Beyond the reference.
  max_steps: number;
  resume: string | null;
  init_adapter: string | null;
  data_root: string;
  lora_alpha: number;
  use_rslora: boolean;
  lora_dropout: number;
  eval_accuracy: boolean;
  eval_limit: number;
  dtype: "f32" | "f16";
  weight_dtype: "auto" | "f32" | "f16";
  dry_run: boolean;
  memory_limit: number;
  seq_len: number;
  log_every: number;
  /** --dataset=PATH: force a record format ("" = detect per file). */
  dataset_format: string;
  /** --dataset=PATH with chat records: a Jinja template file instead of the model's. */
  chat_template: string | null;
  /** --dataset=PATH without a validation file: the share of train records held out. */
  validation_split: number;
  /** --model=org/name: the branch, tag or commit hash in the Hugging Face cache. */
  revision: string;
  /** Flags the user set explicitly (so presets only fill the others). */
  given: Set<string>;
}

/** One flag's documentation and default. */
/** One flag of a table: its name, value type, default (null: none) and help line. */
interface FlagDoc<Name extends string, Type extends string = "string" | "number" | "boolean"> {
  name: Name;
  type: Type;
  def: string | number | boolean | null;
  help: string;
}

/** The --help lines of a flag table (no default shown when it is null or empty). */
function flagLines(flags: readonly FlagDoc<string, string>[], width: number): string[] {
  return flags.map((f) => {
    const d = f.def === null || f.def === "" ? "" : ` (default ${f.def})`;
    return `  --${f.name.padEnd(width)} ${f.help}${d}`;
  });
}

function flagError(name: string, msg: string): HiraError {
  return new HiraError(`--${name}`, msg);
}

/** Every flag, in --help order. */
export const TRAIN_FLAGS: readonly FlagDoc<keyof TrainArgs>[] = [
  {
    name: "peft_type",
    type: "string",
    def: "hira",
    help: "hira | lora | full (reference: hira, fft, prefix; fft is accepted as full)",
  },
  {
    name: "model",
    type: "string",
    def: "",
    help:
      "local Hugging Face model folder (config.json, *.safetensors, tokenizer.json) or a hub id org/name found in the local Hugging Face cache (never downloaded); default: the embedded tiny model (--model_name is an alias)",
  },
  {
    name: "dataset",
    type: "string",
    def: "common_170k",
    help:
      "common_170k, boolq, piqa, siqa, hellas, winog, arce, arcc, obqa, gsm8k, convai2, meta_math (reference default boolq; ours trains on the commonsense mix), or PATH: your .jsonl/.json file or a folder with train.*/validation.*/test.* (docs/data.md)",
  },
  {
    name: "dataset_format",
    type: "string",
    def: "",
    help:
      "with --dataset=PATH: alpaca | chat | text | prompt_completion (default: detected per file)",
  },
  {
    name: "chat_template",
    type: "string",
    def: null,
    help: "with chat records: a Jinja chat template file (default: the model's)",
  },
  {
    name: "validation_split",
    type: "number",
    def: 0.05,
    help: "with --dataset=PATH and no validation file: share of train records held out (seeded)",
  },
  {
    name: "revision",
    type: "string",
    def: "main",
    help: "with --model=org/name: branch, tag or commit hash in the local Hugging Face cache",
  },
  {
    name: "data_root",
    type: "string",
    def: "data_file",
    help: "folder holding llm_adapt/, convai2/, meta_math/ (reference layout)",
  },
  { name: "r_ab", type: "number", def: 16, help: "adapter rank r" },
  {
    name: "target_modules",
    type: "string",
    def: "q_proj,v_proj",
    help:
      "comma list of module suffixes (spaces trimmed; a name matching nothing is an error: the reference's 'q_proj, v_proj' adapted only q_proj)",
  },
  { name: "lr", type: "number", def: 1e-5, help: "peak learning rate" },
  { name: "epoch", type: "number", def: 1, help: "epochs (fractional allowed)" },
  {
    name: "max_steps",
    type: "number",
    def: 0,
    help: "stop after this many optimizer steps (0: from --epoch)",
  },
  { name: "batch", type: "number", def: 32, help: "sequences per micro-batch" },
  { name: "grad_acc", type: "number", def: 1, help: "gradient accumulation steps" },
  { name: "warmup", type: "number", def: 10, help: "linear warmup steps (then linear decay to 0)" },
  { name: "weight_decay", type: "number", def: 0.01, help: "AdamW decoupled weight decay" },
  {
    name: "seed",
    type: "number",
    def: 42,
    help: "fixes adapter init AND data order (the reference's --seed fixed only the init)",
  },
  {
    name: "enable_grad_ckpt",
    type: "boolean",
    def: false,
    help: "recompute each layer's activations in backward (less memory)",
  },
  {
    name: "eval_strategy",
    type: "string",
    def: "epoch",
    help: "no | steps | epoch: when to compute validation loss and save a checkpoint",
  },
  {
    name: "eval_steps",
    type: "number",
    def: 1,
    help:
      "with --eval_strategy=steps: every N steps (a value < 1 is a fraction of the run, as in HF)",
  },
  {
    name: "save_total_limit",
    type: "number",
    def: 1,
    help: "checkpoints kept besides the best one",
  },
  {
    name: "early_stop_patience",
    type: "number",
    def: 0,
    help: "stop after N evaluations without improvement (0: never)",
  },
  {
    name: "output_folder",
    type: "string",
    def: "results_hira",
    help: "parent folder of run folders",
  },
  { name: "exp_name", type: "string", def: "", help: "suffix of the run folder name" },
  {
    name: "resume",
    type: "string",
    def: null,
    help: "run folder (or checkpoint folder) to continue exactly where it stopped",
  },
  {
    name: "init_adapter",
    type: "string",
    def: null,
    help: "PEFT adapter folder (HiRA or LoRA, as --peft_type) to start from, with a fresh " +
      "optimizer; its r, target_modules, alpha and patterns are the run's",
  },
  {
    name: "use_rslora",
    type: "boolean",
    def: false,
    help: "LoRA scale alpha / sqrt(r) (rank-stabilised LoRA, PEFT's use_rslora)",
  },
  {
    name: "lora_alpha",
    type: "number",
    def: 32,
    help: "LoRA scale numerator (scale = alpha / r); unused by HiRA",
  },
  { name: "lora_dropout", type: "number", def: 0.05, help: "LoRA dropout; unused by HiRA" },
  {
    name: "init_ab",
    type: "string",
    def: "kaiming,zero",
    help: "init of A,B: kaiming|zero|gaussian each (honoured; the reference ignored it)",
  },
  { name: "train_ab", type: "string", def: "yy", help: "train A / train B ('y' = yes)" },
  {
    name: "eval_accuracy",
    type: "boolean",
    def: true,
    help:
      "after training, decode the held-out set and print accuracy before and after (commonsense)",
  },
  {
    name: "eval_limit",
    type: "number",
    def: 0,
    help: "decode at most N held-out examples per set for the accuracy report (0: all)",
  },
  {
    name: "max_new_tokens",
    type: "number",
    def: null,
    help: "generation length override (16 commonsense, 200 gsm8k)",
  },
  {
    name: "beam_size",
    type: "number",
    def: null,
    help:
      "beams for the accuracy report (default 4 as in eval; training's own report is greedy like the reference)",
  },
  { name: "decoding", type: "string", def: "default", help: "default | greedy" },
  {
    name: "do_sample",
    type: "string",
    def: "false",
    help: "accepted for compatibility; sampling is not used (as in the reference's runs)",
  },
  { name: "dtype", type: "string", def: "f32", help: "alias of --weight_dtype (f32 | f16)" },
  {
    name: "weight_dtype",
    type: "string",
    def: "auto",
    help:
      "auto | f32 | f16: storage of the frozen weight matrices (auto: f16 when the GPU has shader-f16 and the base does not train)",
  },
  {
    name: "dry_run",
    type: "boolean",
    def: false,
    help:
      "print the memory the run would allocate (from config.json only) and the limit check, then exit",
  },
  {
    name: "memory_limit",
    type: "number",
    def: 0,
    help: "GiB budget: refuse a run estimated above it before allocating (0: no budget)",
  },
  {
    name: "seq_len",
    type: "number",
    def: 0,
    help: "tokens per sequence for the memory estimate (0: the dataset's longest possible)",
  },
  { name: "log_every", type: "number", def: 1, help: "print a progress line every N steps" },
  {
    name: "ckpt",
    type: "string",
    def: null,
    help: "reference inference-only mode: use `deno task eval` instead",
  },
  {
    name: "load_bit",
    type: "number",
    def: 16,
    help: "16 (default); 8-bit loading is not supported",
  },
  {
    name: "num_workers",
    type: "number",
    def: 0,
    help: "accepted for compatibility (data loading is in-process)",
  },
  {
    name: "local_rank",
    type: "number",
    def: -1,
    help: "accepted for compatibility (ranks come from mpirun/srun: docs/data-parallel.md)",
  },
  {
    name: "ds_config",
    type: "string",
    def: null,
    help: "accepted for compatibility (no DeepSpeed; many GPUs: mpirun -np N deno task train)",
  },
  {
    name: "dataset_analysis",
    type: "boolean",
    def: false,
    help: "print token-length statistics of the dataset and exit",
  },
  { name: "dataset_ratio", type: "number", def: 1, help: "keep the first fraction of every split" },
  { name: "virtual_tokens", type: "number", def: 8, help: "prefix tuning only (not supported)" },
  { name: "compute_rank", type: "boolean", def: false, help: "use `deno task rank` instead" },
  { name: "compute_norm", type: "boolean", def: false, help: "use `deno task rank` instead" },
  {
    name: "load_order",
    type: "number",
    def: -1,
    help: "which checkpoint supplies the state in --ckpt mode",
  },
  { name: "rand_R", type: "boolean", def: false, help: "HiRA_rand variant (not supported yet)" },
];

/**
 * Learning rates of the embedded model's demo run, per method: HiRA's update W0 ⊙ (B·A) is
 * scaled by W0's small entries, so it takes a learning rate about 10x LoRA's (measured on the
 * demo: LoRA at HiRA's 2e-2 diverges to below chance, at 2e-3 it matches HiRA).
 */
export const DEMO_LR: Readonly<Record<"hira" | "lora" | "full", number>> = {
  hira: 2e-2,
  lora: 2e-3,
  full: 2e-4,
};

/** Settings used when no --model is given: the embedded tiny model's demo run (plus DEMO_LR). */
export const DEMO_PRESET: Partial<Record<keyof TrainArgs, number | string>> = {
  epoch: 2,
  batch: 16,
  warmup: 5,
  r_ab: 8,
  target_modules: "q_proj,k_proj,v_proj,up_proj,down_proj",
  eval_limit: 0,
};

/** --help text. */
export function trainHelp(): string {
  const lines = [
    "Usage: deno run -A train.ts [--flag=value ...]",
    "",
    "Fine-tunes a Llama-family model with HiRA, LoRA or full fine-tuning. Flags follow the",
    "reference train_hira.py. With no --model, the embedded tiny model and synthetic data run",
    `with these defaults unless set: ${
      Object.entries(DEMO_PRESET).map(([k, v]) => `--${k}=${v}`).join(" ")
    } --lr=${DEMO_LR.hira} (hira), ${DEMO_LR.lora} (lora), ${DEMO_LR.full} (full)`,
    "",
  ];
  return [...lines, ...flagLines(TRAIN_FLAGS, 20)].join("\n");
}

/** Parses and validates argv; bad values are a HiraError naming the flag. */
export function parseTrainArgs(argv: string[]): TrainArgs {
  const strings = TRAIN_FLAGS.filter((f) => f.type !== "boolean").map((f) => f.name as string);
  const booleans = TRAIN_FLAGS.filter((f) => f.type === "boolean").map((f) => f.name as string);
  const known = new Set([...strings, ...booleans, "model_name", "help", "h"]);
  const raw = parseArgs(argv, {
    string: [...strings, "model_name"],
    boolean: [...booleans, "help"],
    negatable: booleans,
    alias: { h: "help" },
    unknown: (arg: string) => {
      const name = arg.replace(/^--?(no-)?/, "").split("=")[0];
      if (arg.startsWith("-") && !known.has(name)) {
        throw new HiraError(`--${name}`, "unknown flag (see --help)");
      }
      if (!arg.startsWith("-")) {
        throw new HiraError(arg, "unexpected argument (flags are --name=value)");
      }
      return true;
    },
  }) as Record<string, unknown>;
  if (raw.model_name === "") throw new HiraError("--model_name", "needs a value (--model=VALUE)");
  if (raw.model_name !== undefined && raw.model === undefined) raw.model = raw.model_name;
  const given = new Set<string>();
  const out: Record<string, unknown> = {};
  for (const f of TRAIN_FLAGS) {
    const v = raw[f.name];
    const present = f.type === "boolean"
      ? argv.some((a) => new RegExp(`^--(no-)?${f.name}(=|$)`).test(a))
      : v !== undefined;
    if (present) given.add(f.name);
    if (f.type === "number") {
      if (v === undefined) out[f.name] = f.def;
      else if (v === "") throw new HiraError(`--${f.name}`, "needs a number");
      else out[f.name] = decimalFlag(f.name, v);
    } else if (f.type === "boolean") {
      checkBooleanFlag(f.name, argv);
      out[f.name] = present ? Boolean(v) : f.def;
    } else if (v === "") {
      // `--output_folder` alone would be the current folder, `--model` alone the embedded model.
      throw new HiraError(`--${f.name}`, "needs a value (--" + f.name + "=VALUE)");
    } else out[f.name] = v === undefined ? f.def : String(v);
  }
  out.given = given;
  if (out.peft_type === "fft") out.peft_type = "full";
  const a = out as unknown as TrainArgs;
  if (raw.help) (a as unknown as { help: boolean }).help = true;
  if (!a.model) {
    for (const [k, v] of Object.entries(DEMO_PRESET)) {
      if (!given.has(k)) (out as Record<string, unknown>)[k] = v;
    }
    const method = a.peft_type as keyof typeof DEMO_LR;
    if (!given.has("lr") && method in DEMO_LR) a.lr = DEMO_LR[method];
  }
  if (given.has("dtype") && !given.has("weight_dtype")) a.weight_dtype = a.dtype;
  validateTrainArgs(a);
  return a;
}

/** A decimal number: digits, an optional fraction and exponent (no 0x10, 0b1, 1_000, spaces). */
const DECIMAL = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/**
 * A number flag's value, which must be written in decimal: `Number()` alone reads `0x10` as 16,
 * `0b11` as 3 and ` 5 ` as 5, none of which a user means as a learning rate.
 */
export function decimalFlag(name: string, v: unknown): number {
  const s = String(v);
  const n = Number(s);
  if (!Number.isFinite(n)) throw new HiraError(`--${name}`, `'${s.slice(0, 40)}' is not a number`);
  if (!DECIMAL.test(s)) {
    throw new HiraError(`--${name}`, `'${s.slice(0, 40)}' is not a decimal number`);
  }
  return n;
}

/**
 * Refuses `--name=VALUE` for a boolean flag unless VALUE is true or false (parseArgs reads any
 * other value, `maybe` included, as true), and any value on the `--no-name` form.
 */
export function checkBooleanFlag(name: string, argv: readonly string[]): void {
  for (const a of argv) {
    if (a === "--") break;
    const m = new RegExp(`^--(no-)?${name}=(.*)$`, "s").exec(a);
    if (!m) continue;
    if (m[1] || !["true", "false"].includes(m[2])) {
      throw new HiraError(
        `--${m[1] ?? ""}${name}`,
        `'${m[2].slice(0, 40)}' is not true or false (--${name}, --${name}=false, --no-${name})`,
      );
    }
  }
}

function check(cond: boolean, flag: string, msg: string): void {
  if (!cond) throw flagError(flag, msg);
}

/** Rejects nonsensical values with a message naming the flag. */
export function validateTrainArgs(a: TrainArgs): void {
  const int = (k: keyof TrainArgs) => Number.isInteger(a[k] as number);
  check(
    ["hira", "lora", "full"].includes(a.peft_type),
    "peft_type",
    `'${a.peft_type}' is not one of hira, lora, full (prefix tuning is not supported)`,
  );
  check(a.lr > 0, "lr", `must be > 0, got ${a.lr}`);
  check(int("batch") && a.batch >= 1, "batch", `must be a positive integer, got ${a.batch}`);
  check(
    int("grad_acc") && a.grad_acc >= 1,
    "grad_acc",
    `must be a positive integer, got ${a.grad_acc}`,
  );
  check(
    int("warmup") && a.warmup >= 0,
    "warmup",
    `must be a non-negative integer, got ${a.warmup}`,
  );
  check(a.weight_decay >= 0, "weight_decay", `must be >= 0, got ${a.weight_decay}`);
  check(a.epoch > 0, "epoch", `must be > 0, got ${a.epoch}`);
  check(
    int("max_steps") && a.max_steps >= 0,
    "max_steps",
    `must be a non-negative integer, got ${a.max_steps}`,
  );
  check(int("r_ab") && a.r_ab >= 1, "r_ab", `must be a positive integer, got ${a.r_ab}`);
  check(
    a.dataset_ratio > 0 && a.dataset_ratio <= 1,
    "dataset_ratio",
    `must be in (0, 1], got ${a.dataset_ratio}`,
  );
  check(
    ["no", "steps", "epoch"].includes(a.eval_strategy),
    "eval_strategy",
    `'${a.eval_strategy}' is not one of no, steps, epoch`,
  );
  check(a.eval_steps > 0, "eval_steps", `must be > 0, got ${a.eval_steps}`);
  check(a.load_bit === 16, "load_bit", "only 16 is supported (weights load as f32 or f16)");
  check(
    /^[yn]{2}$/.test(a.train_ab),
    "train_ab",
    `must be two of y/n like 'yy', got '${a.train_ab}'`,
  );
  const inits = a.init_ab.split(",").map((s) => s.trim());
  check(
    inits.length === 2 && inits.every((s) => ["kaiming", "zero", "gaussian"].includes(s)),
    "init_ab",
    `must be two of kaiming|zero|gaussian, got '${a.init_ab}'`,
  );
  check(
    ["default", "greedy"].includes(a.decoding),
    "decoding",
    `'${a.decoding}' is not default or greedy`,
  );
  check(a.lora_alpha > 0, "lora_alpha", `must be > 0, got ${a.lora_alpha}`);
  check(
    a.lora_dropout >= 0 && a.lora_dropout < 1,
    "lora_dropout",
    `must be in [0, 1), got ${a.lora_dropout}`,
  );
  check(["f32", "f16"].includes(a.dtype), "dtype", `'${a.dtype}' is not f32 or f16`);
  check(
    ["auto", "f32", "f16"].includes(a.weight_dtype),
    "weight_dtype",
    `'${a.weight_dtype}' is not auto, f32 or f16`,
  );
  check(a.memory_limit >= 0, "memory_limit", `must be >= 0 GiB, got ${a.memory_limit}`);
  check(int("seq_len") && a.seq_len >= 0, "seq_len", "must be a non-negative integer");
  check(!a.rand_R, "rand_R", "the HiRA_rand variant is not supported yet");
  check(
    a.ckpt === null,
    "ckpt",
    "inference-only mode lives in eval.ts: deno task eval <dataset> --ckpt RUN",
  );
  check(!a.compute_rank && !a.compute_norm, "compute_rank", "use `deno task rank --ckpt ADAPTER`");
  check(a.seed >= 0 && int("seed"), "seed", `must be a non-negative integer, got ${a.seed}`);
  check(
    a.beam_size === null || (int("beam_size") && a.beam_size >= 1),
    "beam_size",
    `must be a positive integer`,
  );
  check(
    a.max_new_tokens === null || (int("max_new_tokens") && a.max_new_tokens >= 1),
    "max_new_tokens",
    `must be a positive integer`,
  );
  check(int("log_every") && a.log_every >= 1, "log_every", "must be a positive integer");
  check(
    int("save_total_limit") && a.save_total_limit >= 0,
    "save_total_limit",
    `must be a non-negative integer, got ${a.save_total_limit}`,
  );
  check(
    int("early_stop_patience") && a.early_stop_patience >= 0,
    "early_stop_patience",
    `must be a non-negative integer, got ${a.early_stop_patience}`,
  );
  check(int("eval_limit") && a.eval_limit >= 0, "eval_limit", "must be a non-negative integer");
  validateDatasetFileArgs(a);
}

/** The --dataset=PATH flags' checks (shared with eval's). */
export function validateDatasetFileArgs(
  a: Pick<TrainArgs, "dataset_format" | "validation_split" | "revision">,
): void {
  check(
    a.dataset_format === "" || DATASET_FORMATS.includes(a.dataset_format as DatasetFormat),
    "dataset_format",
    `'${a.dataset_format}' is not one of ${DATASET_FORMATS.join(", ")}`,
  );
  check(
    a.validation_split >= 0 && a.validation_split < 1,
    "validation_split",
    `must be in [0, 1), got ${a.validation_split}`,
  );
  check(a.revision !== "", "revision", "needs a branch, tag or commit hash");
}

// ---------------------------------------------------------------------------------------------
// eval.ts flags

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

type EvalFlag = FlagDoc<keyof EvalArgs & string, "string" | "number" | "boolean" | "list">;

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
  return [...lines, ...flagLines(EVAL_FLAGS, 16)].join("\n");
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
