/**
 * The `deno task eval` flags: the table, --help text and parsing with one-line errors.
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { EVAL_COMMANDS, EVAL_DATASETS } from "../eval/evaluate.ts";
import { checkBooleanFlag, decimalFlag } from "./args.ts";
import { HiraError } from "../engine/errors.ts";
import { DATASET_FORMATS, type DatasetFormat, isDatasetPath } from "../train/dataset_format.ts";
import type { WeightDtypeFlag } from "../model/load.ts";

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
