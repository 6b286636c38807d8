/**
 * A training run on disk: the reference train_hira.py's job (data, model, adapters, AdamW with
 * warmup and linear decay, validation loss, best-checkpoint selection) plus what a real run
 * needs: a run folder with a JSONL log, PEFT-layout checkpoints written atomically, exact
 * resume, a progress line, and Ctrl-C saving a checkpoint before exiting.
 * @module
 */
import { basename, dirname, join } from "@std/path";
import type { Gpu } from "../engine/gpu.ts";
import { createDenoGpu } from "../io/gpu_deno.ts";
import { TRAIN_FLAGS, type TrainArgs, validateTrainArgs } from "./flags.ts";
import { HiraError, isHiraError, parseJson, preview } from "../engine/errors.ts";
import { JSON_CAPS, osError, osReason, readRegularText, TEXT_CAP } from "../io/fs_deno.ts";
import { baseParameterCount, type LlamaConfig } from "../model/config.ts";
import { EMBEDDED_MODEL_DIR, loadModelDir, readConfig } from "../io/model_deno.ts";
import { hiraTrainingKernel } from "../model/adapters.ts";
import {
  frozenWeightDtype,
  randomModel,
  readBaseWeights,
  resolveWeightDtype,
} from "../model/load.ts";
import {
  checkMemory,
  dataShape,
  estimateMemory,
  formatBytes,
  memoryOptionsOf,
  refusal,
} from "../train/memory.ts";
import {
  bestCheckpointIn,
  listCheckpoints,
  removeLeftovers,
  resolveResume,
  rotate,
} from "./run_folder.ts";
import { dryRunReport } from "./dry_run.ts";
import { MAX_GRAD_NORM, trainLoop, validationBatches } from "../train/loop.ts";
import type { LlamaModel } from "../model/model.ts";
import { loadTokenizer } from "../io/tokenizer_deno.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import {
  BatchLoader,
  type DataRecord,
  type DatasetName,
  fieldsFor,
  isDatasetName,
  type LoaderState,
  type PackedBatch,
  parseRecords,
  splitPath,
  type TrainExample,
  trainExamples,
} from "../train/data.ts";
import { adapterParameterCount, adapterTensors, attachAdapters } from "../model/attach.ts";
import {
  type AdapterConfig,
  checkRank,
  matchTargets,
  parseTargetFlag,
  runAdapterConfig,
  targetText,
  trainableShare,
} from "../model/peft.ts";
import { loadAdapterDir, openAdapterDir, writeAdapterDir } from "../io/peft_deno.ts";
import {
  DeviceLostAtStepError,
  NonFiniteError,
  type StepReport,
  Trainer,
} from "../train/trainer.ts";
import { totalSteps } from "../train/schedule.ts";
import {
  openSafetensors,
  syncDir,
  writeFileAtomic,
  writeSafetensorsFile,
} from "../io/safetensors_deno.ts";
import type { TensorToWrite } from "../model/safetensors.ts";
import { writeRunReport } from "../io/report_deno.ts";
import { exportConfigJson } from "../model/merge.ts";
import { createRunDir, lockRunDir, type RunLock } from "../io/runlock_deno.ts";
import { isDatasetPath } from "../train/dataset_file.ts";
import { loadFileDatasets } from "../io/dataset_file_deno.ts";
import { resolveModelDir } from "../io/hub_deno.ts";
import {
  type Collective,
  RankError,
  RankMismatchError,
  Ranks,
  SINGLE_PROCESS,
} from "../train/ranks.ts";
import { folderFingerprint, shortDigest } from "../io/fingerprint_deno.ts";

/** What a run folder's trainer_state.json holds. */
export interface TrainerStateFile {
  global_step: number;
  total_steps: number;
  epoch: number;
  loader: LoaderState;
  best_metric: number | null;
  best_model_checkpoint: string | null;
  evals_without_improvement: number;
  /** LoRA dropout counters per module, so resumed masks continue the same stream. */
  dropout_counters: Record<string, number>;
  /** The adapter folder the run started from (--init_adapter, real path); null for a new one. */
  init_adapter?: string | null;
  /** Data-parallel ranks the run trains on (absent: 1); a resume must use as many. */
  world_size?: number;
  log_history: Record<string, unknown>[];
}

/** The outcome of a run, for tests and callers. */
export interface RunResult {
  runDir: string;
  steps: number;
  finalLoss: number;
  bestCheckpoint: string | null;
  interrupted: boolean;
  /** The signal that stopped the run (SIGINT, SIGTERM, SIGHUP), if one did. */
  signal?: Deno.Signal | null;
}

/** The signals that stop a run cleanly (saved state, an `end` record) in every phase. */
export const STOP_SIGNALS: readonly Deno.Signal[] = Deno.build.os === "windows"
  ? ["SIGINT"]
  : ["SIGINT", "SIGTERM", "SIGHUP"];

/** The numbers of {@linkcode STOP_SIGNALS}, as ranks tell each other of a stop. */
const SIGNAL_NUMBERS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGTERM: 15,
};

/** The exit status of a run stopped by `signal`: 128 + its number (130 when none). */
export function interruptedExitCode(signal: Deno.Signal | null | undefined): number {
  return signal === "SIGTERM" ? 143 : signal === "SIGHUP" ? 129 : 130;
}

/**
 * The exit status of a failed run, the same on every rank: 2 for bad input (a flag, a file, ranks
 * that do not match), 3 for a run stopped at a step (NaN/Inf, a lost GPU), 1 otherwise.
 */
export function exitCodeOf(e: unknown): number {
  if (e instanceof RankError) return e.exitCode;
  if (isHiraError(e) || e instanceof RankMismatchError) return 2;
  if (e instanceof Error && (e.name === "NonFiniteError" || e.name === "DeviceLostError")) {
    return 3;
  }
  return 1;
}

/** Whether the run was asked to stop, and by which signal. */
interface StopState {
  interrupted: boolean;
  signal: Deno.Signal | null;
}

/** Dataset "pretrain": a JSON array of strings, each trained as BOS + text + EOS on every token. */
function pretrainExamples(
  texts: unknown,
  file: string,
  tok: Tokenizer,
  maxLength: number,
): TrainExample[] {
  if (!Array.isArray(texts)) throw new HiraError(file, "must be a JSON array of strings");
  if (texts.length === 0) throw new HiraError(file, "is empty");
  return texts.map((t, i) => {
    if (typeof t !== "string") throw new HiraError(file, `item ${i} is not a string`);
    const ids = [...(tok.bosId !== null ? [tok.bosId] : []), ...tok.encode(t), tok.eosId].slice(
      0,
      maxLength,
    );
    return { tokens: ids, lossMask: ids.map((_, j) => (j === 0 ? 0 : 1)) };
  });
}

async function readText(file: string, what: string, cap: number = TEXT_CAP): Promise<string> {
  try {
    return await readRegularText(file, cap);
  } catch (e) {
    if (isHiraError(e)) throw e;
    if (e instanceof Deno.errors.NotFound) {
      throw new HiraError(file, `missing: ${what}`);
    }
    throw new HiraError(file, `cannot be read (${(e as Error).message})`);
  }
}

async function readJson(file: string, what: string, cap: number): Promise<unknown> {
  return parseJson(await readText(file, what, cap), file);
}

/**
 * Refuses an --output_folder that is a file or lies under one, before anything slow runs, so
 * the mistake costs no model load and leaves nothing behind.
 */
async function checkOutputFolder(path: string): Promise<void> {
  for (let p = path;; p = dirname(p)) {
    const st = await Deno.stat(p).catch(() => null);
    if (st) {
      if (st.isDirectory) return await checkWritable(path, p);
      throw new HiraError(
        path,
        p === path
          ? "--output_folder is a file, not a folder"
          : `--output_folder cannot be created: ${p} is a file`,
      );
    }
    if (dirname(p) === p) return;
  }
}

/**
 * Proves --output_folder writable before the model loads (a read-only or foreign folder used to
 * be found only after minutes of loading): creates the missing folders down to it and a probe
 * file in it, then removes what it created, so a refused run leaves nothing behind.
 */
async function checkWritable(path: string, existing: string): Promise<void> {
  const created: string[] = [];
  for (let p = path; p !== existing && dirname(p) !== p; p = dirname(p)) created.push(p);
  const probe = join(path, `.hira-write-probe-${crypto.randomUUID().slice(0, 8)}`);
  try {
    await Deno.mkdir(path, { recursive: true });
    const f = await Deno.open(probe, { write: true, createNew: true });
    f.close();
  } catch (e) {
    throw new HiraError(path, `--output_folder is not writable (${osReason(e)})`);
  } finally {
    await Deno.remove(probe).catch(() => {});
    for (const d of created) await Deno.remove(d).catch(() => {});
  }
}

/** Training and validation examples of --dataset. */
export async function loadDatasets(
  args: TrainArgs,
  tok: Tokenizer,
  model: { dir: string; maxPositions: number } = { dir: EMBEDDED_MODEL_DIR, maxPositions: 2048 },
): Promise<
  {
    train: TrainExample[];
    validation: TrainExample[];
    validationRecords: DataRecord[];
    /** --dataset=PATH: each file's path, format and record count, for the log. */
    lines?: string[];
  }
> {
  if (isDatasetPath(args.dataset)) {
    // Your own files (lib/io/dataset_file_deno.ts); flags saved by older runs lack the new ones.
    const d = await loadFileDatasets(
      {
        ...args,
        dataset_format: args.dataset_format ?? "",
        chat_template: args.chat_template ?? null,
        validation_split: args.validation_split ?? 0.05,
      },
      tok,
      model.dir,
      model.maxPositions,
    );
    return { train: d.train, validation: d.validation, validationRecords: [], lines: d.lines };
  }
  if (args.dataset === "pretrain") {
    const file = join(args.data_root, "tiny", "pretrain.json");
    const text = await readText(file, "the pre-training corpus (a JSON array of strings)");
    const all = pretrainExamples(parseJson(text, file), file, tok, 256);
    return { train: cut(all, args.dataset_ratio), validation: [], validationRecords: [] };
  }
  if (!isDatasetName(args.dataset) || args.dataset === "common_all") {
    throw new HiraError(
      "--dataset",
      `'${args.dataset}' is not a training dataset (common_170k, boolq, piqa, siqa, hellas, winog, arce, arcc, obqa, gsm8k, convai2, meta_math, pretrain)`,
    );
  }
  const name = args.dataset as DatasetName;
  const read = async (split: "train" | "validation") => {
    const file = splitPath(name, split, args.data_root);
    const text = await readText(
      file,
      `put the ${split} split of ${name} there (see the README's "Datasets" section)`,
    );
    return parseRecords(text, file, { fields: fieldsFor(name) });
  };
  const trainRecords = cut(await read("train"), args.dataset_ratio);
  const valRecords = cut(await read("validation"), args.dataset_ratio);
  const train = trainExamples(trainRecords, tok, name);
  if (train.length === 0) {
    throw new HiraError(
      splitPath(name, "train", args.data_root),
      "no example has a non-empty target",
    );
  }
  return { train, validation: trainExamples(valRecords, tok, name), validationRecords: valRecords };
}

/** Token-length statistics of training examples (--dataset_analysis). */
export function datasetAnalysis(examples: readonly TrainExample[], split: string): string {
  const lens = examples.map((e) => e.tokens.length).sort((a, b) => a - b);
  const targets = examples.map((e) => e.lossMask.reduce((a, b) => a + b, 0)).sort((a, b) => a - b);
  const q = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))];
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  return `${split}: ${examples.length} examples; tokens per example min ${lens[0]} median ${
    q(lens, 0.5)
  } ` +
    `p95 ${q(lens, 0.95)} max ${lens.at(-1)} mean ${mean(lens).toFixed(1)}; counted targets per ` +
    `example median ${q(targets, 0.5)} max ${targets.at(-1)}; total ${
      lens.reduce((a, b) => a + b, 0)
    } tokens`;
}

function cut<T>(xs: T[], ratio: number): T[] {
  return ratio >= 1 ? xs : xs.slice(0, Math.max(1, Math.floor(xs.length * ratio)));
}

/** The run folder name, built like the reference's (train_hira.py:118-145). */
export function runName(args: TrainArgs, modelName: string, now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, "0");
  const stamp = `${now.getFullYear()}-${p(now.getMonth() + 1)}-${p(now.getDate())}-${
    p(now.getHours())
  }-${p(now.getMinutes())}-${p(now.getSeconds())}`;
  const dataset = isDatasetPath(args.dataset)
    ? basename(args.dataset.replace(/[/\\]+$/, "")).replace(/\.jsonl?$/i, "")
    : args.dataset;
  let name = `${modelName}-${dataset}-${args.peft_type}-lr=${args.lr.toExponential(2)}-`;
  if (args.peft_type !== "full") {
    const initials = args.init_ab.split(",").map((s) => s.trim()[0]).join("");
    name += `r_ab=${args.r_ab}-init=${initials}-train=${args.train_ab}-`;
  }
  name += `seed=${args.seed}-`;
  if (args.exp_name) name += `${args.exp_name}-`;
  return (name + stamp).replace(/[/\\]/g, "_");
}

function fmtDuration(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const m = Math.floor(s / 60), sec = Math.round(s % 60);
  return m > 0 ? `${m}m${String(sec).padStart(2, "0")}s` : `${sec}s`;
}

/** A one-line progress display: a bar on a terminal, plain lines otherwise. */
class Progress {
  readonly #tty = Deno.stdout.isTerminal();
  readonly #t0 = performance.now();
  #tokens = 0;
  readonly #enc = new TextEncoder();

  constructor(readonly total: number, readonly startStep: number) {}

  update(r: StepReport, every: number): void {
    this.#tokens += r.tokens;
    const elapsed = (performance.now() - this.#t0) / 1000;
    const done = r.step - this.startStep;
    const eta = (elapsed / Math.max(1, done)) * (this.total - r.step);
    const tps = this.#tokens / Math.max(1e-9, elapsed);
    const width = 24;
    const fill = Math.round((width * r.step) / this.total);
    const bar = "=".repeat(Math.max(0, fill - 1)) + (fill > 0 ? ">" : "") +
      " ".repeat(width - fill);
    const line = `step ${r.step}/${this.total} [${bar}] loss ${r.loss.toFixed(4)} lr ${
      r.lr.toExponential(2)
    } grad ${r.gradNorm.toFixed(3)} ${tps.toFixed(0)} tok/s ETA ${fmtDuration(eta)}`;
    if (this.#tty) Deno.stdout.writeSync(this.#enc.encode(`\r${line}\x1b[K`));
    else if (r.step % every === 0 || r.step === this.total) console.log(line);
  }

  /** Ends the progress line before other output. */
  break(): void {
    if (this.#tty) Deno.stdout.writeSync(this.#enc.encode("\n"));
  }
}

/** Appends JSON lines to the run's log. */
class JsonlLog {
  constructor(readonly file: string) {}
  async write(rec: Record<string, unknown>): Promise<void> {
    // An append follows a symlink: one planted at log.jsonl would be written through.
    const st = await Deno.lstat(this.file).catch(() => null);
    if (st !== null && !st.isFile) {
      throw new HiraError(
        this.file,
        "is not a regular file; a run's log is never written through a link",
      );
    }
    try {
      await Deno.writeTextFile(this.file, JSON.stringify(rec) + "\n", { append: true });
    } catch (e) {
      throw osError(this.file, e, "cannot append");
    }
  }

  /** Ends a line a kill cut short, so the next record starts on its own line. */
  async endPartialLine(): Promise<void> {
    let f: Deno.FsFile;
    try {
      f = await Deno.open(this.file, { read: true });
    } catch {
      return;
    }
    try {
      const size = (await f.stat()).size;
      if (size === 0) return;
      await f.seek(size - 1, Deno.SeekMode.Start);
      const last = new Uint8Array(1);
      await f.read(last);
      if (last[0] !== 0x0a) await Deno.writeTextFile(this.file, "\n", { append: true });
    } finally {
      f.close();
    }
  }
}

function adapterConfigOf(args: TrainArgs, modelDir: string): AdapterConfig {
  return runAdapterConfig(
    args.peft_type === "hira" ? "hira" : "lora",
    args.r_ab,
    parseTargetFlag(args.target_modules),
    { alpha: args.lora_alpha, dropout: args.lora_dropout, useRslora: args.use_rslora },
    // A hub id resolved to a cache snapshot is recorded as the id, as PEFT records it.
    args.model && args.model !== modelDir ? args.model : modelDir,
  );
}

/**
 * The adapter config of `--init_adapter=DIR`, checked against the run's flags: the method must
 * be --peft_type's, and r, target_modules, lora_alpha and use_rslora, when given as flags, must
 * agree with the folder's (the folder's are used: its tensors have those shapes and scales).
 * Returns the config and the flags rewritten to the folder's values, so args.json and the run
 * name say what runs.
 */
async function initAdapterConfig(
  args: TrainArgs,
): Promise<{ ac: AdapterConfig; args: TrainArgs }> {
  const dir = args.init_adapter!;
  if (args.peft_type === "full") {
    throw new HiraError("--init_adapter", "needs --peft_type=hira or lora (full fine-tuning)");
  }
  const ad = await openAdapterDir(dir);
  const ac = ad.config;
  ad.close();
  const file = join(dir, "adapter_config.json");
  const want = args.peft_type === "hira" ? "HIRA" : "LORA";
  if (ac.peftType !== want) {
    throw new HiraError(file, `holds a ${ac.peftType} adapter, but --peft_type=${args.peft_type}`);
  }
  const fromDir: Partial<TrainArgs> = {
    r_ab: ac.r,
    target_modules: targetText(ac.targetModules),
    ...(ac.peftType === "LORA" ? { lora_alpha: ac.loraAlpha, use_rslora: ac.useRslora } : {}),
  };
  for (const [k, v] of Object.entries(fromDir)) {
    const given = (args as unknown as Record<string, unknown>)[k];
    const same = k === "target_modules"
      ? targetText(parseTargetFlag(String(given))) === v
      : given === v;
    if (args.given.has(k) && !same) {
      throw new HiraError(`--${k}`, `${given} contradicts ${file}, which says ${v}`);
    }
  }
  return { ac, args: { ...args, ...fromDir, init_adapter: await Deno.realPath(dir) } };
}

/** Throws NonFiniteError naming `name` when `data` holds a NaN or an infinity. */
function refuseNonFinite(name: string, data: ArrayLike<number>, step: number): void {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) throw new NonFiniteError(step, `the saved tensor ${name}`);
  }
}

/**
 * Writes a complete Hugging Face model folder (full fine-tuning output); with `step`, weights
 * that are not finite are refused (NonFiniteError) before anything is written.
 */
export async function writeModelDir(
  model: LlamaModel,
  dir: string,
  tokenizerDir: string | null,
  step?: number,
): Promise<void> {
  const w = await readBaseWeights(model);
  if (step !== undefined) { for (const [name, t] of w) refuseNonFinite(name, t.data, step); }
  await Deno.mkdir(dir, { recursive: true });
  const tensors: TensorToWrite[] = [...w].map(([name, t]) => ({
    name,
    dtype: "F32",
    shape: t.shape,
    data: t.data,
  }));
  await writeSafetensorsFile(join(dir, "model.safetensors"), tensors, { format: "pt" });
  // F32 master weights, said with the dtype key of the layout the base config was read in.
  await writeFileAtomic(
    join(dir, "config.json"),
    exportConfigJson(model.config.raw, "f32", model.config.layout),
  );
  if (tokenizerDir) {
    for (const f of ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]) {
      const src = join(tokenizerDir, f);
      if (await Deno.stat(src).then((s) => s.isFile, () => false)) {
        await writeFileAtomic(join(dir, f), await Deno.readFile(src));
      }
    }
  }
}

/**
 * Saves a checkpoint folder atomically: every file is written (and fsynced) under a temporary
 * folder name, which is renamed to `checkpoint-N` at the end, so a kill at any moment leaves
 * either no `checkpoint-N` or a complete one. `pauseMs` waits halfway (tests kill there).
 */
async function saveCheckpoint(
  runDir: string,
  model: LlamaModel,
  trainer: Trainer,
  ac: AdapterConfig | null,
  modelDir: string,
  state: TrainerStateFile,
  pauseMs = 0,
): Promise<string> {
  const name = `checkpoint-${state.global_step}`;
  const final = join(runDir, name);
  const tmp = join(runDir, `.${name}.tmp-${crypto.randomUUID().slice(0, 8)}`);
  // An update can overflow the weights while the step's loss and gradient were still finite
  // (a huge --lr): such a checkpoint is refused, so the last good one stays the newest.
  const adapter = ac === null ? null : await adapterTensors(model, ac.peftType);
  const opt = await trainer.opt.readState();
  for (const t of adapter ?? []) refuseNonFinite(t.name, t.data, state.global_step);
  for (const m of opt.moments) {
    refuseNonFinite(`${m.name} (optimizer state)`, m.expAvg, state.global_step);
    refuseNonFinite(`${m.name} (optimizer state)`, m.expAvgSq, state.global_step);
  }
  await Deno.mkdir(tmp, { recursive: true });
  if (adapter === null) {
    await writeModelDir(model, tmp, modelDir, state.global_step);
  } else {
    await writeAdapterDir(tmp, ac!, adapter);
  }
  if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
  const moments: TensorToWrite[] = opt.moments.flatMap((m) => [
    { name: `${m.name}.exp_avg`, dtype: "F32" as const, shape: [m.expAvg.length], data: m.expAvg },
    {
      name: `${m.name}.exp_avg_sq`,
      dtype: "F32" as const,
      shape: [m.expAvgSq.length],
      data: m.expAvgSq,
    },
  ]);
  await writeSafetensorsFile(join(tmp, "optimizer.safetensors"), moments, {
    step: String(opt.step),
  });
  await writeFileAtomic(join(tmp, "trainer_state.json"), JSON.stringify(state, null, 2) + "\n");
  // Only a re-save of the same step finds the folder there (rename cannot replace a folder).
  await Deno.remove(final, { recursive: true }).catch(() => {});
  await Deno.rename(tmp, final);
  await syncDir(runDir);
  return final;
}

async function loadOptimizerState(trainer: Trainer, file: string): Promise<void> {
  const f = await openSafetensors(file);
  try {
    const step = Number(f.header.metadata.step ?? "0");
    const moments = [];
    for (const p of trainer.opt.params) {
      moments.push({
        name: p.name,
        expAvg: await f.read(`${p.name}.exp_avg`, "f32"),
        expAvgSq: await f.read(`${p.name}.exp_avg_sq`, "f32"),
      });
    }
    trainer.opt.load({ step, moments });
  } finally {
    f.close();
  }
}

/**
 * A resumed run continues with the flags it started with (its args.json), --resume kept. The
 * file is checked as the command line is: every field of the type its flag has, then
 * {@linkcode validateTrainArgs}; an edited file (batch 0, lr "fast", peft_type "prefix") is one
 * line naming args.json and the flag, before anything loads.
 */
async function savedArgs(runDir: string, resumeFlag: string): Promise<TrainArgs> {
  const file = join(runDir, "args.json");
  const saved = await readJson(file, "the run's saved flags", JSON_CAPS.args);
  if (typeof saved !== "object" || saved === null || Array.isArray(saved)) {
    throw new HiraError(file, "is not a JSON object of flags");
  }
  const o = saved as Record<string, unknown>;
  for (const f of TRAIN_FLAGS) {
    const v = o[f.name];
    if (v === undefined) continue; // a run saved before the flag existed: its default
    const ok = f.type === "number"
      ? typeof v === "number" && Number.isFinite(v) || v === null && f.def === null
      : f.type === "boolean"
      ? typeof v === "boolean"
      : typeof v === "string" || v === null && f.def === null;
    if (!ok) {
      throw new HiraError(file, `--${f.name}: ${preview(v, 30)} is not a ${f.type}`);
    }
  }
  const given = o.given;
  if (given !== undefined && !(Array.isArray(given) && given.every((g) => typeof g === "string"))) {
    throw new HiraError(file, "given is not a list of flag names");
  }
  const a = {
    ...o,
    resume: resumeFlag,
    given: new Set((given as string[] | undefined) ?? []),
  } as unknown as TrainArgs;
  // Checked with the defaults of flags the file predates; returned without them, so such a
  // run keeps what it ran with (a run saved before --weight_dtype ran on f32 weights).
  const defaults = Object.fromEntries(TRAIN_FLAGS.map((f) => [f.name, f.def]));
  try {
    validateTrainArgs({ ...defaults, ...a } as TrainArgs);
  } catch (e) {
    if (isHiraError(e)) throw new HiraError(file, `${e.file}: ${e.reason}`);
    throw e;
  }
  return a;
}

/**
 * A checkpoint's trainer_state.json, checked before anything loads: the counters are
 * non-negative integers, the loader state has its shape, and a best checkpoint it names is a
 * `checkpoint-N` folder of the run that exists.
 */
async function readTrainerState(ckpt: string, runDir: string): Promise<TrainerStateFile> {
  const file = join(ckpt, "trainer_state.json");
  const v = await readJson(file, "trainer state", JSON_CAPS.trainerState);
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new HiraError(file, "is not a JSON object");
  }
  const s = v as Record<string, unknown>;
  const count = (k: string) => {
    const x = s[k];
    if (!(typeof x === "number" && Number.isSafeInteger(x) && x >= 0)) {
      throw new HiraError(file, `${k} must be a non-negative integer, got ${preview(x, 30)}`);
    }
  };
  count("global_step");
  count("total_steps");
  if (s.evals_without_improvement !== undefined) count("evals_without_improvement");
  const l = s.loader as Record<string, unknown> | null;
  if (
    typeof l !== "object" || l === null || !Number.isSafeInteger(l.epoch) ||
    (l.epoch as number) < 0 || !Number.isSafeInteger(l.position) || (l.position as number) < 0 ||
    !Array.isArray(l.epochRngState) ||
    !l.epochRngState.every((x) => typeof x === "number" && Number.isInteger(x))
  ) {
    throw new HiraError(
      file,
      "loader is not a saved data-loader state {epoch, position, epochRngState}",
    );
  }
  if (s.best_metric != null && typeof s.best_metric !== "number") {
    throw new HiraError(
      file,
      `best_metric must be a number or null, got ${preview(s.best_metric, 30)}`,
    );
  }
  if (s.log_history !== undefined && !Array.isArray(s.log_history)) {
    throw new HiraError(file, "log_history must be an array");
  }
  const dc = s.dropout_counters;
  if (dc !== undefined && (typeof dc !== "object" || dc === null || Array.isArray(dc))) {
    throw new HiraError(file, "dropout_counters must be an object");
  }
  const best = bestCheckpointIn(runDir, s.best_model_checkpoint, file);
  if (best !== null && !(await Deno.stat(best).then((x) => x.isDirectory, () => false))) {
    throw new HiraError(
      file,
      `best_model_checkpoint ${basename(best)} does not exist in ${runDir}`,
    );
  }
  return {
    ...(s as unknown as TrainerStateFile),
    best_model_checkpoint: best,
    evals_without_improvement: (s.evals_without_improvement as number | undefined) ?? 0,
    dropout_counters: (dc as Record<string, number> | undefined) ?? {},
    log_history: (s.log_history as Record<string, unknown>[] | undefined) ?? [],
  };
}

/**
 * The flags a run goes by: the command line's, or for `--resume` the run's saved ones (so
 * callers building hooks from flags, like the accuracy report, see what the run will use).
 */
export async function effectiveTrainArgs(args: TrainArgs): Promise<TrainArgs> {
  if (!args.resume) return args;
  return await savedArgs((await resolveResume(args.resume)).runDir, args.resume);
}

/** Flags that name a place on this machine: their folders are compared by content instead. */
const PATH_FLAGS = new Set(["model", "output_folder", "resume", "given", "init_adapter"]);

/**
 * What every rank of a data-parallel run must agree on, as `[what, value]` pairs for
 * {@linkcode Ranks.checkSame}: each flag (paths aside: ranks on other machines may keep the
 * model elsewhere), each model file by size and header hash, the tokenized training and
 * validation data by hash, and the checkpoint a resume starts from.
 */
async function rankFacts(
  args: TrainArgs,
  modelDir: string,
  data: { train: readonly TrainExample[]; validation: readonly TrainExample[] },
  resumeCkpt: string | null,
): Promise<[string, string][]> {
  const facts: [string, string][] = Object.entries(args)
    .filter(([k]) => !PATH_FLAGS.has(k))
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => [`--${k}`, JSON.stringify(v) ?? "unset"]);
  facts.push(...await folderFingerprint(modelDir));
  for (const [what, xs] of [["training data", data.train], ["validation data", data.validation]]) {
    const ex = xs as readonly TrainExample[];
    const n = ex.reduce((a, e) => a + 1 + 2 * e.tokens.length, 0);
    const flat = new Int32Array(n);
    let at = 0;
    for (const e of ex) {
      flat[at++] = e.tokens.length;
      flat.set(e.tokens, at);
      flat.set(e.lossMask, at + e.tokens.length);
      at += 2 * e.tokens.length;
    }
    const digest = await shortDigest(new Uint8Array(flat.buffer));
    facts.push([what as string, `${ex.length} examples, sha256 ${digest}`]);
  }
  if (resumeCkpt) facts.push(["the checkpoint resumed", basename(resumeCkpt)]);
  return facts;
}

/** Options for {@linkcode runTraining} beyond the flags (tests and the CLI). */
export interface RunOptions {
  gpu?: Gpu;
  /** Stop (as if interrupted) after this many optimizer steps, saving a checkpoint. */
  stopAfter?: number;
  /** Print nothing. */
  quiet?: boolean;
  /**
   * Called after training with the model (before it is released), e.g. for accuracy;
   * `stopped()` turns true when a signal asks the run to stop (the hook should return soon).
   */
  afterTraining?: (
    model: LlamaModel,
    tok: Tokenizer,
    runDir: string,
    stopped?: () => boolean,
  ) => Promise<void>;
  /** Called before training with the model (e.g. accuracy before); `stopped` as above. */
  beforeTraining?: (
    model: LlamaModel,
    tok: Tokenizer,
    runDir: string,
    stopped?: () => boolean,
  ) => Promise<void>;
  /** Wait this long halfway through each checkpoint write (crash tests kill there). */
  checkpointPauseMs?: number;
  /** Skip report.md and the charts (default: written when the run ends or stops). */
  noReport?: boolean;
  /** Called after each optimizer step and its checkpoint, if any (tests inject faults here). */
  afterStep?: (report: StepReport, model: LlamaModel) => void | Promise<void>;
  /**
   * The ranks of a data-parallel run (lib/io/mpi_deno.ts's MPI world); one process when absent.
   * Rank 0 alone writes; every rank must be given the same flags, model and data.
   */
  world?: Collective;
}

/**
 * Runs (or resumes) training as the flags say. The run folder is locked for the run's life
 * (lib/io/runlock_deno.ts): a resume of a folder a live process holds is refused before anything
 * is read or removed there.
 */
export async function runTraining(argsIn: TrainArgs, opts: RunOptions = {}): Promise<RunResult> {
  const ranks = new Ranks(opts.world ?? SINGLE_PROCESS, exitCodeOf);
  // A signal on any rank is told to all at the next sync point, by its number.
  ranks.localStop = () =>
    held.stop.interrupted ? (SIGNAL_NUMBERS[held.stop.signal ?? "SIGINT"] ?? 2) : 0;
  const held: Held = {
    lock: null,
    stop: { interrupted: false, signal: null },
    runDir: null,
    ranks,
  };
  // Listened to from the first moment, so no phase (loading, accuracy passes, training, the
  // final copy) dies to a signal's default action with no state saved and no `end` record.
  const listeners = STOP_SIGNALS.map((sig) => {
    const f = () => {
      held.stop.interrupted = true;
      held.stop.signal ??= sig;
    };
    try {
      Deno.addSignalListener(sig, f);
    } catch { /* not supported on this platform */ }
    return () => {
      try {
        Deno.removeSignalListener(sig, f);
      } catch { /* ignore */ }
    };
  });
  // Under the launcher, a run whose launcher died (even by SIGKILL) stops as on SIGHUP: the
  // child never outlives it.
  const launcher = Number(Deno.env.get("HIRA_LAUNCHER_PID") ?? "0");
  const watchdog = launcher > 0
    ? setInterval(() => {
      if (Deno.ppid !== launcher) {
        held.stop.interrupted = true;
        held.stop.signal ??= "SIGHUP";
      }
    }, 500)
    : null;
  try {
    const r = await runTrainingLocked(argsIn, opts, held);
    // The last sync point: rank 0's final copy, report and accuracy pass may still fail, and
    // every rank must hear of it (the other ranks wait here).
    ranks.agree();
    // Every rank exits as the rank a signal reached would (128 + its number).
    const agreed = (Object.keys(SIGNAL_NUMBERS) as Deno.Signal[])
      .find((k) => SIGNAL_NUMBERS[k] === ranks.stopCode) ?? null;
    return { ...r, signal: r.interrupted ? held.stop.signal ?? agreed : null };
  } catch (e) {
    const err = ranks.writes ? await recordOsError(held.runDir, e) : e;
    // A failure on one rank meets the others at their next sync point and becomes the same
    // error everywhere (an agreed one has been through that already).
    if (ranks.size > 1 && !(err instanceof RankError)) ranks.agree({ error: err });
    throw err;
  } finally {
    if (watchdog !== null) clearInterval(watchdog);
    listeners.forEach((off) => off());
    await held.lock?.release();
  }
}

/** What {@linkcode runTraining} holds for its inner run: the lock and the stop request. */
interface Held {
  lock: RunLock | null;
  stop: StopState;
  /** The run folder once it exists (fresh or resumed). */
  runDir: string | null;
  /** The data-parallel ranks (one process: size 1). */
  ranks: Ranks;
}

/** Whether an error comes from the OS (ENOSPC, EROFS, EACCES, EIO, NotCapable), maybe wrapped. */
function isOsError(e: unknown): boolean {
  const m = (e as Error)?.message ?? "";
  return e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable ||
    /\(os error \d+\)/.test(m) || (isHiraError(e) && e.cause !== undefined && isOsError(e.cause));
}

/**
 * An OS error during a run (a full disk, a read-only or revoked folder) becomes one line naming
 * the file, an `error` record in log.jsonl (when the log can still be written) and a run folder
 * without half-written leftovers; the checkpoints already there are kept. Other errors pass.
 */
async function recordOsError(runDir: string | null, e: unknown): Promise<unknown> {
  if (!isOsError(e)) return e;
  const err = isHiraError(e) ? e : osError(runDir ?? "train.ts", e, "cannot write");
  if (runDir !== null) {
    const rec = { type: "error", message: (err as Error).message, time: Date.now() };
    await Deno.writeTextFile(join(runDir, "log.jsonl"), JSON.stringify(rec) + "\n", {
      append: true,
    }).catch(() => {});
    await removeLeftovers(runDir).catch(() => {});
  }
  return err;
}

async function runTrainingLocked(
  argsIn: TrainArgs,
  opts: RunOptions,
  held: Held,
): Promise<RunResult> {
  const ranks = held.ranks;
  const dp = ranks.size > 1;
  // With several ranks only agreed values steer the run (a signal reaches one rank; the others
  // hear of it at the next sync point), so every rank stops after the same step.
  const stopped = () => dp ? ranks.stopAgreed : held.stop.interrupted;
  const stoppedEarly = (): RunResult => ({
    runDir: "",
    steps: 0,
    finalLoss: NaN,
    bestCheckpoint: null,
    interrupted: true,
  });
  let args = argsIn;
  const log = opts.quiet || !ranks.writes ? () => {} : (...a: unknown[]) => console.log(...a);
  let resume: { runDir: string; ckpt: string } | null = null;
  let resumeState: TrainerStateFile | null = null;
  if (args.resume) {
    // Locked before anything there is read: a live run (even one still writing its first
    // checkpoint) is refused, and nothing of it is removed.
    const dir = /^checkpoint-\d+$/.test(basename(args.resume))
      ? join(args.resume, "..")
      : args.resume;
    const isDir = await Deno.stat(dir).then((s) => s.isDirectory, () => false);
    if (isDir && !args.dry_run && ranks.writes) {
      held.lock = await lockRunDir(dir).catch((e) => {
        if (isHiraError(e)) throw e;
        throw new HiraError(dir, `cannot be locked for --resume (${osReason(e)})`);
      });
    }
    resume = await resolveResume(args.resume);
    held.runDir = resume.runDir;
    args = await savedArgs(resume.runDir, args.resume);
    resumeState = await readTrainerState(resume.ckpt, resume.runDir);
    const savedRanks = resumeState.world_size ?? 1;
    if (savedRanks !== ranks.size && !args.dry_run) {
      throw new HiraError(
        "--resume",
        `${resume.runDir} was trained on ${savedRanks} rank${savedRanks === 1 ? "" : "s"}; ` +
          `resume it on as many (${savedRanks === 1 ? "one process" : `mpirun -np ${savedRanks}`}` +
          `), not ${ranks.size}: the data order and the steps follow the rank count`,
      );
    }
  }
  const modelDir = args.model
    ? await resolveModelDir(args.model, args.revision ?? "main")
    : EMBEDDED_MODEL_DIR;
  const fromScratch = args.dataset === "pretrain" && args.peft_type === "full" && !resume &&
    !(await Deno.stat(join(modelDir, "model.safetensors")).then(() => true, () => false));
  const cfg: LlamaConfig = await readConfig(modelDir);
  if (args.dry_run) {
    // Reads config.json only; a GPU, when there is one, only lends its limits.
    const dev = opts.gpu ?? await createDenoGpu().catch(() => null);
    const r = dryRunReport(args, cfg, modelDir, dev);
    log(r.text);
    if (dev && !opts.gpu) dev.destroy();
    return { runDir: "", steps: 0, finalLoss: NaN, bestCheckpoint: null, interrupted: false };
  }
  const tok = await loadTokenizer(modelDir);
  if (tok.vocabSize > cfg.vocabSize) {
    throw new HiraError(
      join(modelDir, "tokenizer.json"),
      `has ${tok.vocabSize} ids but config.json's vocab_size is ${cfg.vocabSize}`,
    );
  }
  let initAc: AdapterConfig | null = null;
  if (args.init_adapter && !resume) ({ ac: initAc, args } = await initAdapterConfig(args));
  const data = await loadDatasets(args, tok, {
    dir: modelDir,
    maxPositions: cfg.maxPositionEmbeddings,
  });
  for (const line of data.lines ?? []) log(line);
  if (args.peft_type !== "full" && !resume && !initAc) {
    checkRank(cfg, matchTargets(cfg, parseTargetFlag(args.target_modules)), args.r_ab);
  }
  if (!resume && !args.dataset_analysis && ranks.writes) {
    await checkOutputFolder(args.output_folder);
  }
  if (args.dataset_analysis) {
    log(datasetAnalysis(data.train, "train"));
    if (data.validation.length) log(datasetAnalysis(data.validation, "validation"));
    return { runDir: "", steps: 0, finalLoss: NaN, bestCheckpoint: null, interrupted: false };
  }
  // An optimizer step takes --grad_acc micro-batches on each rank: N·G in all.
  const accum = args.grad_acc * ranks.size;
  const batchesPerEpoch = Math.ceil(data.train.length / args.batch);
  if (accum > batchesPerEpoch) {
    // Each optimizer step would cycle through the data more than once (and a huge value would
    // never finish a step).
    throw new HiraError(
      "--grad_acc",
      `${args.grad_acc}${dp ? ` × ${ranks.size} ranks` : ""} is more than the ` +
        `${batchesPerEpoch} batches of one epoch (${data.train.length} examples / ` +
        `--batch=${args.batch})`,
    );
  }
  const steps = args.max_steps > 0
    ? args.max_steps
    : totalSteps(data.train.length, args.batch, accum, args.epoch);
  const gpu = opts.gpu ?? await createDenoGpu();
  // A run saved before --weight_dtype existed ran on f32 weights; a resume keeps that.
  const full = args.peft_type === "full";
  const weightFlag = args.weight_dtype ?? "f32";
  const weightDtype = resolveWeightDtype(weightFlag, gpu.hasF16, full);
  args = { ...args, weight_dtype: weightDtype };
  // Refuse before allocating anything: the estimate and check --dry_run prints.
  const est = estimateMemory(cfg, {
    ...memoryOptionsOf(args, weightDtype, gpu.limits, dataShape(data.train, args.batch)),
    hiraKernel: hiraTrainingKernel(gpu.isCpuAdapter),
  });
  const tooBig = refusal(
    checkMemory(est, gpu.limits, args.memory_limit > 0 ? args.memory_limit * 2 ** 30 : undefined),
  );
  if (tooBig) throw new HiraError("memory", tooBig);
  const peftType = args.peft_type === "hira" ? "HIRA" : args.peft_type === "lora" ? "LORA" : null;
  const adapted = new Set(
    peftType ? matchTargets(cfg, parseTargetFlag(args.target_modules)).map((m) => m.path) : [],
  );
  const loadOpts = {
    weightDtype,
    f16Overflow: weightFlag === "auto" ? "f32" as const : "refuse" as const,
    keepF32: (path: string) =>
      frozenWeightDtype(weightDtype, full, peftType, adapted.has(path)) === "f32",
  };
  let model: LlamaModel;
  if (resume && args.peft_type === "full") model = await loadModelDir(gpu, resume.ckpt);
  else if (fromScratch) model = randomModel(gpu, cfg, args.seed);
  else model = await loadModelDir(gpu, modelDir, loadOpts);
  model.gradCheckpointing = args.enable_grad_ckpt;
  // A signal while loading: nothing was written yet (a fresh run has no folder), so stop here.
  if (stopped() && !resume) {
    model.release();
    return stoppedEarly();
  }
  const base = baseParameterCount(cfg);
  // The adapter config every checkpoint writes: the flags', or the folder's a run started from
  // or resumes (those may carry rank and alpha patterns no flag expresses).
  let runAc: AdapterConfig | null = null;
  if (args.peft_type === "full") model.enableBaseGrads();
  else {
    const ac = adapterConfigOf(args, modelDir);
    const [ia, ib] = args.init_ab.split(",").map((s) => s.trim()) as (
      | "kaiming"
      | "zero"
      | "gaussian"
    )[];
    const attach = {
      seed: args.seed,
      initA: ia,
      initB: ib,
      trainA: args.train_ab[0] === "y",
      trainB: args.train_ab[1] === "y",
    };
    const own = (c: AdapterConfig): AdapterConfig => ({
      ...c,
      baseModel: modelDir,
      keyStyle: "peft",
      loraDropout: args.lora_dropout,
    });
    if (resume) runAc = own(await loadAdapterDir(model, resume.ckpt, attach));
    else if (initAc) {
      await loadAdapterDir(model, args.init_adapter!, attach);
      runAc = own(initAc);
      log(`starting from adapter ${args.init_adapter} (${initAc.peftType} r=${initAc.r})`);
    } else {
      attachAdapters(model, ac, attach);
      runAc = ac;
    }
    model.adapterTrain = { A: args.train_ab[0] === "y", B: args.train_ab[1] === "y" };
  }
  const trainable = args.peft_type === "full" ? base : adapterParameterCount(model);
  const trainer = new Trainer(model, {
    lr: args.lr,
    warmup: args.warmup,
    weightDecay: args.weight_decay,
    gradAcc: args.grad_acc,
    maxGradNorm: MAX_GRAD_NORM,
    totalSteps: steps,
    ranks,
  });
  if (dp) {
    // Before anything is written: every rank must train on the same flags, model and data.
    if (!opts.quiet) console.log(`rank ${ranks.rank}/${ranks.size}: ${gpu.description}`);
    ranks.checkSame(await rankFacts(args, modelDir, data, resume?.ckpt ?? null));
  }
  // Run folder and state.
  let runDir = resume?.runDir ?? "";
  let state: TrainerStateFile;
  let loader: BatchLoader;
  if (resume) {
    state = resumeState!;
    if (ranks.writes) await removeLeftovers(runDir);
    await loadOptimizerState(trainer, join(resume.ckpt, "optimizer.safetensors"));
    trainer.step = state.global_step;
    loader = new BatchLoader(data.train, args.batch, state.loader);
    for (const [path, ad] of model.adapters) {
      const c = state.dropout_counters?.[path];
      if (c !== undefined && ad.dropoutCounter !== undefined) {
        ad.dropoutCounter = c;
      }
    }
    if (held.lock?.recoveredFrom != null) {
      log(`took over the lock of ${runDir} from pid ${held.lock.recoveredFrom}, which is gone`);
    }
    log(`resuming ${runDir} at step ${state.global_step}/${steps}`);
  } else {
    if (ranks.writes) {
      await checkOutputFolder(args.output_folder);
      // A unique name (the reference's readable one plus the pid), created exclusively, locked.
      held.lock = await createRunDir(
        args.output_folder,
        runName(args, basename((args.model || modelDir).replace(/\/+$/, "")) || "model"),
      );
      runDir = held.lock.runDir;
      held.runDir = runDir;
      await writeFileAtomic(
        join(runDir, "args.json"),
        JSON.stringify({ ...args, given: [...args.given] }, null, 2) + "\n",
      );
    }
    loader = new BatchLoader(data.train, args.batch, args.seed);
    state = {
      global_step: 0,
      total_steps: steps,
      epoch: 0,
      loader: loader.state,
      best_metric: null,
      best_model_checkpoint: null,
      evals_without_improvement: 0,
      dropout_counters: {},
      init_adapter: args.init_adapter ?? null,
      ...(dp ? { world_size: ranks.size } : {}),
      log_history: [],
    };
  }
  // Rank 0 alone keeps the log; the others' records go nowhere.
  const jlog: Pick<JsonlLog, "write" | "endPartialLine"> = ranks.writes
    ? new JsonlLog(join(runDir, "log.jsonl"))
    : { write: () => Promise.resolve(), endPartialLine: () => Promise.resolve() };
  if (resume) {
    await jlog.endPartialLine();
    await jlog.write({
      type: "resume",
      step: state.global_step,
      checkpoint: basename(resume.ckpt),
      time: Date.now(),
    });
  }
  log(
    `model: ${modelDir}${
      fromScratch ? " (random init from config.json)" : ""
    } on ${gpu.description}`,
  );
  log(`${trainableShare(trainable, args.peft_type === "full" ? 0 : base)}`);
  log(
    `weights: ${weightDtype} matrices, ${formatBytes(model.weightBytes)}; memory estimate ${
      formatBytes(est.total)
    } (--dry_run itemises it)`,
  );
  log(
    `data: ${data.train.length} training examples, ${data.validation.length} validation; ${steps} steps of ${args.batch}×${args.grad_acc}${
      dp ? ` on each of ${ranks.size} ranks` : ""
    }`,
  );
  if (!resume) {
    await jlog.write({
      type: "start",
      args: { ...args, given: undefined },
      trainable,
      base,
      steps,
      run_dir: runDir,
      ...(data.lines ? { data: data.lines } : {}),
    });
    if (opts.beforeTraining && !stopped() && ranks.writes) {
      await opts.beforeTraining(model, tok, runDir, stopped);
    }
  }
  // Evaluation schedule (HF: "epoch" evaluates at each epoch end; "steps" every eval_steps,
  // where a value below 1 is a fraction of the run).
  const perEpoch = Math.max(1, Math.floor(loader.batchesPerEpoch / accum));
  const evalEvery = args.eval_strategy === "steps"
    ? Math.max(
      1,
      args.eval_steps < 1 ? Math.ceil(args.eval_steps * steps) : Math.round(args.eval_steps),
    )
    : args.eval_strategy === "epoch"
    ? perEpoch
    : 0;
  const valBatches = validationBatches(data.validation, args.batch);
  let interrupted = false;
  const progress = new Progress(steps, trainer.step);
  let lastLoss = NaN;
  let lastSaved = resume ? state.global_step : -1;
  // A NaN/Inf or a lost GPU stops the run: the error names the step, the checkpoint left behind
  // and what to try, and goes to the log and report too. Other errors pass through unchanged.
  const halted = new WeakSet<object>();
  const halt = async (e: unknown): Promise<unknown> => {
    if (e instanceof RankError) {
      // Another rank's failure (or this one's, agreed): logged once, by rank 0.
      progress.break();
      await jlog.write({ type: "error", step: trainer.step, message: e.message }).catch(() => {});
      if (!opts.noReport && ranks.writes) await writeRunReport(runDir).catch(() => {});
      halted.add(e);
      return e;
    }
    if (!(e instanceof NonFiniteError) && !(e instanceof DeviceLostAtStepError)) return e;
    const ctx = {
      lastCheckpoint: lastSaved >= 0 ? join(runDir, `checkpoint-${lastSaved}`) : null,
      lr: args.lr,
    };
    const err = e instanceof NonFiniteError
      ? new NonFiniteError(e.step, e.what, ctx)
      : new DeviceLostAtStepError(e.step, e.reason, ctx, { cause: e.cause });
    progress.break();
    await jlog.write({ type: "error", step: err.step, message: err.message }).catch(() => {});
    if (!opts.noReport && ranks.writes) await writeRunReport(runDir).catch(() => {});
    halted.add(err);
    return err;
  };
  const checkpoint = async (metric: number | null) => {
    state.global_step = trainer.step;
    state.loader = loader.state;
    state.epoch = loader.epoch + loader.position / loader.batchesPerEpoch;
    for (const [path, ad] of model.adapters) {
      if (ad.dropoutCounter !== undefined) {
        state.dropout_counters[path] = ad.dropoutCounter;
      }
    }
    if (metric !== null) {
      const improved = state.best_metric === null || metric < state.best_metric;
      state.evals_without_improvement = improved ? 0 : state.evals_without_improvement + 1;
      // Recorded before the save, so the checkpoint's own state already names it the best:
      // a kill right after the rename must not resume with a stale best.
      if (improved) {
        state.best_metric = metric;
        state.best_model_checkpoint = join(runDir, `checkpoint-${trainer.step}`);
      }
    }
    // Rank 0 writes; the others keep the same state (the best, the patience) without files.
    if (!ranks.writes) {
      lastSaved = trainer.step;
      return "";
    }
    const dir = await saveCheckpoint(
      runDir,
      model,
      trainer,
      runAc,
      modelDir,
      state,
      opts.checkpointPauseMs,
    ).catch(async (e) => {
      throw await halt(e);
    });
    lastSaved = trainer.step;
    await rotate(runDir, args.save_total_limit, state.best_model_checkpoint);
    return dir;
  };
  try {
    // A signal during the accuracy pass before training stops before the first step (the
    // loop checks before every step).
    const nextMicro = () => {
      const micro: PackedBatch[] = [];
      for (let i = 0; i < accum; i++) micro.push(loader.next());
      return micro;
    };
    await trainLoop(trainer, steps, nextMicro, valBatches, {
      shouldStop: stopped,
      onStep: async (r) => {
        lastLoss = r.loss;
        if (r.step === trainer.opts.totalSteps || r.step === 1 || !Number.isFinite(lastLoss)) {
          const mb = (model.peakActivationBytes / 2 ** 20).toFixed(1);
          await jlog.write({
            type: "memory",
            step: r.step,
            activation_peak_bytes: model.peakActivationBytes,
            grad_ckpt: args.enable_grad_ckpt,
          });
          if (r.step === 1 || (resume && r.step === trainer.step)) {
            progress.break();
            log(
              `activation memory at peak: ${mb} MiB (gradient checkpointing ${
                args.enable_grad_ckpt ? "on" : "off"
              })`,
            );
          }
        }
        if (ranks.writes) progress.update(r, args.log_every);
        const rec = {
          type: "train",
          step: r.step,
          loss: r.loss,
          lr: r.lr,
          grad_norm: r.gradNorm,
          tokens: r.tokens,
          epoch: loader.epoch + loader.position / loader.batchesPerEpoch,
          time: Date.now(),
        };
        state.log_history.push(rec);
        await jlog.write(rec);
      },
      evalAt: (step) => evalEvery > 0 && (step % evalEvery === 0 || step === steps),
      onEval: async (step, metric) => {
        if (metric !== null) {
          // Checked before the checkpoint, so a NaN model is never saved.
          if (!Number.isFinite(metric)) throw new NonFiniteError(step, "the validation loss");
          progress.break();
          log(`step ${step}: eval_loss ${metric.toFixed(4)}`);
          const erec = { type: "eval", step, eval_loss: metric, time: Date.now() };
          state.log_history.push(erec);
          await jlog.write(erec);
        }
        await checkpoint(metric);
        if (
          args.early_stop_patience > 0 &&
          state.evals_without_improvement >= args.early_stop_patience
        ) {
          log(`early stop: ${args.early_stop_patience} evaluations without improvement`);
          return "stop";
        }
      },
      afterStep: async (r, evaluated) => {
        if (opts.afterStep) await opts.afterStep(r, model);
        if (stopped() || (opts.stopAfter !== undefined && r.step >= opts.stopAfter)) {
          if (!evaluated) await checkpoint(null);
          progress.break();
          log(`stopped at step ${r.step}; resume with --resume=${runDir}`);
          interrupted = true;
          return "stop";
        }
      },
    }).catch(async (e) => {
      // A step's or a validation's NaN or lost device, named with the checkpoint left behind;
      // a checkpoint's own failure was reported by checkpoint() already.
      throw halted.has(e) ? e : await halt(e);
    });
    if (!interrupted && evalEvery === 0 && lastSaved !== trainer.step) await checkpoint(null);
  } finally {
    // The signal listeners stay until runTraining returns: the final copy and the accuracy
    // pass after training stop cleanly too.
  }
  if (stopped()) interrupted = true;
  progress.break();
  // The final product: the best checkpoint (or the last) as a plain folder beside the checkpoints.
  const cks = ranks.writes ? await listCheckpoints(runDir) : [];
  const chosen = state.best_model_checkpoint ?? cks.at(-1)?.dir ?? null;
  if (!interrupted && chosen && ranks.writes) {
    const outDir = join(runDir, args.peft_type === "full" ? "model" : "adapter");
    const tmp = `${outDir}.tmp-${crypto.randomUUID().slice(0, 8)}`;
    await Deno.mkdir(tmp, { recursive: true });
    for await (const e of Deno.readDir(chosen)) {
      if (e.isFile && !["optimizer.safetensors", "trainer_state.json"].includes(e.name)) {
        await Deno.copyFile(join(chosen, e.name), join(tmp, e.name));
      }
    }
    await Deno.remove(outDir, { recursive: true }).catch(() => {});
    await Deno.rename(tmp, outDir);
    await syncDir(runDir);
    log(`saved ${outDir} (from ${basename(chosen)})`);
    if (opts.afterTraining && !stopped()) {
      if (args.peft_type !== "full" && chosen !== cks.at(-1)?.dir) {
        // Evaluate the best adapter, not the last one.
        model.releaseAdapters();
        await loadAdapterDir(model, outDir);
      }
      await opts.afterTraining(model, tok, runDir, stopped);
    }
  }
  // Stopped during the final copy or the accuracy pass after it: the adapter is saved; the
  // `end` record and the exit status still say the run was stopped.
  if (stopped()) interrupted = true;
  await jlog.write({
    type: "end",
    step: trainer.step,
    loss: lastLoss,
    interrupted,
    best: chosen,
    time: Date.now(),
  });
  if (!opts.noReport && ranks.writes) {
    try {
      const files = await writeRunReport(runDir);
      log(`report: ${files.at(-1)}`);
    } catch (e) {
      // A report is a convenience: never fail (or lose) a finished run over it.
      log(`warning: report not written (${(e as Error).message})`);
    }
  }
  return { runDir, steps: trainer.step, finalLoss: lastLoss, bestCheckpoint: chosen, interrupted };
}
