/**
 * The file-I/O edge of evaluation: resolving `--ckpt` (run, checkpoint, adapter or model
 * folders), loading the model, reading test sets, writing predictions and summaries, the
 * `deno task eval|merge|rank` commands ({@linkcode evalMain}), and the accuracy report that
 * train.ts runs before and after training ({@linkcode accuracyHooks}).
 * @module
 */
import { basename, dirname, join } from "@std/path";
import type { Gpu } from "../engine/gpu.ts";
import { createDenoGpu } from "../io/gpu_deno.ts";
import { HiraError, isHiraError, parseJson } from "../engine/errors.ts";
import { JSON_CAPS, readRegularText } from "../io/fs_deno.ts";
import { mkdirNoLink } from "../io/paths_deno.ts";
import type { TrainArgs } from "./flags.ts";
import type { LlamaModel } from "../model/model.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { loadTokenizer } from "../io/tokenizer_deno.ts";
import { EMBEDDED_MODEL_DIR, loadModelDir, readConfig } from "../io/model_deno.ts";
import { resolveWeightDtype } from "../model/load.ts";
import { type AdapterConfig, loraScale } from "../model/peft.ts";
import { openAdapterDir } from "../io/peft_deno.ts";
import { loadAdapters } from "../model/attach.ts";
import { listCheckpoints } from "./run_folder.ts";
import type { RunOptions } from "./train.ts";
import { writeFileAtomic } from "../io/safetensors_deno.ts";
import {
  type DataRecord,
  DATASET_FOLDERS,
  type DatasetName,
  fieldsFor,
  parseRecords,
  splitPath,
} from "../train/data.ts";
import { COMMONSENSE_TASKS } from "../eval/scoring.ts";
import { scoreConvAI2 } from "../eval/metrics.ts";
import type { DialogueRecord } from "../eval/metrics.ts";
import {
  accuracyChart,
  beforeAfterMarkdown,
  convai2Markdown,
  summaryMarkdown,
} from "../report/accuracy.ts";
import {
  type AccuracySummary,
  datasetFromFileName,
  type DatasetScore,
  datasetScore,
  mergeSummary,
  predictionLines,
  type PredictionRecord,
  rescorePredictions,
  scoreRecords,
  summarize,
} from "../eval/scoring.ts";
import {
  type DecodeSettings,
  decodeSettings,
  decodingTag,
  dialogueRecords,
  predictionsFileName,
  predictTexts,
} from "../eval/evaluate.ts";
import { documentTokens, parseTextFile, parseTokenFile, perplexity } from "../eval/perplexity.ts";
import { type EvalArgs, evalHelp, parseEvalArgs } from "./flags.ts";
import { mergeAdaptersInPlace, type MergeHandle } from "../model/merge.ts";
import { adapterRanks, rankChart, rankMarkdown } from "../report/rank.ts";
import { readAdapterModules, writeMergedModelDir } from "../io/merge_deno.ts";
import { isRunDir, writeRunReport } from "../io/report_deno.ts";
import { bestCheckpointName } from "./permissions.ts";
import { isHubRepoId } from "../model/hub.ts";
import { resolveModelDir } from "../io/hub_deno.ts";
import { fileEvalCommand } from "./eval_file.ts";

async function isDir(path: string): Promise<boolean> {
  return await Deno.stat(path).then((s) => s.isDirectory, () => false);
}

async function isFile(path: string): Promise<boolean> {
  return await Deno.stat(path).then((s) => s.isFile, () => false);
}

async function readTextFile(file: string, what: string, cap?: number): Promise<string> {
  try {
    return await readRegularText(file, cap);
  } catch (e) {
    if (isHiraError(e)) throw e;
    if (e instanceof Deno.errors.NotFound) throw new HiraError(file, `missing: ${what}`);
    if (e instanceof Deno.errors.IsADirectory) throw new HiraError(file, "is a folder, not a file");
    throw new HiraError(file, `cannot be read (${(e as Error).message})`);
  }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints and models

/** What `--ckpt` points at, once resolved. */
export interface ResolvedCheckpoint {
  /** A PEFT adapter folder or a complete model folder (full fine-tuning, merged export). */
  kind: "adapter" | "model";
  dir: string;
}

async function classify(dir: string): Promise<ResolvedCheckpoint | null> {
  if (await isFile(join(dir, "adapter_config.json"))) return { kind: "adapter", dir };
  if (await isFile(join(dir, "config.json"))) return { kind: "model", dir };
  return null;
}

/**
 * Resolves `--ckpt`: an adapter folder (adapter_config.json), a model folder (config.json), a
 * run folder (its `adapter/` or `model/`, else the best checkpoint named by `--load_order`'s
 * checkpoint's trainer_state.json `best_model_checkpoint`, else that checkpoint), or a
 * checkpoint-N folder. Of the best-checkpoint path only its `checkpoint-N` name is used, as a
 * folder of the run (the reference recorded a path relative to the training cwd; a path from a
 * file never leads outside the run).
 */
export async function resolveCheckpoint(path: string, loadOrder = -1): Promise<ResolvedCheckpoint> {
  const st = await Deno.stat(path).catch(() => null);
  if (!st) {
    throw new HiraError(
      path,
      "not found (--ckpt takes a run folder, a checkpoint-N folder, an adapter folder or a model folder)",
    );
  }
  if (!st.isDirectory) throw new HiraError(path, "is a file; --ckpt takes a folder");
  const direct = await classify(path);
  if (direct) return direct;
  for (const sub of ["adapter", "model"]) {
    const c = await classify(join(path, sub));
    if (c) return c;
  }
  const cks = await listCheckpoints(path);
  if (cks.length === 0) {
    throw new HiraError(
      path,
      "holds no adapter_config.json, config.json, adapter/, model/ or checkpoint-N folder",
    );
  }
  const pick = cks.at(loadOrder);
  if (!pick) {
    throw new HiraError("--load_order", `${loadOrder} is outside the ${cks.length} checkpoints`);
  }
  let chosen = pick.dir;
  const stateFile = join(pick.dir, "trainer_state.json");
  if (await isFile(stateFile)) {
    const state = parseJson(
      await readTextFile(stateFile, "trainer state", JSON_CAPS.trainerState),
      stateFile,
    ) as {
      best_model_checkpoint?: unknown;
    };
    const best = state?.best_model_checkpoint;
    // Only the checkpoint-N name counts, looked up in this run folder (never a path from the file).
    const name = bestCheckpointName(best, stateFile);
    if (name !== null) {
      chosen = join(path, name);
      if (!(await isDir(chosen))) {
        throw new HiraError(stateFile, `best_model_checkpoint '${best}' does not exist`);
      }
    }
  }
  const c = await classify(chosen);
  if (!c) throw new HiraError(chosen, "is neither an adapter folder nor a model folder");
  return c;
}

/** A model ready for evaluation, with what it was built from. */
export interface EvalModel {
  model: LlamaModel;
  /** Null when no tokenizer was asked for. */
  tok: Tokenizer | null;
  modelDir: string;
  /** The adapter folder and its config, when one is attached. */
  adapterDir: string | null;
  adapterConfig: AdapterConfig | null;
  /** Set when the adapter was merged into the weights for decoding. */
  merge: MergeHandle | null;
}

/** Flags {@linkcode openEvalModel} uses. */
export type ModelFlags =
  & Pick<EvalArgs, "ckpt" | "model" | "tokenizer" | "load_order" | "merge">
  & Partial<Pick<EvalArgs, "weight_dtype" | "revision">>;

/**
 * The base model folder for an adapter: `--model`, else the adapter config's
 * base_model_name_or_path when that is a local folder or a hub id in the local Hugging Face
 * cache (lib/io/hub_deno.ts), else (empty) the embedded tiny model.
 */
export async function baseModelDir(
  flag: string | null,
  adapterDir: string | null,
  ac: AdapterConfig | null,
  revision = "main",
): Promise<string> {
  if (flag) return await resolveModelDir(flag, revision);
  const base = ac?.baseModel ?? "";
  if (base === "") return EMBEDDED_MODEL_DIR;
  if (await isDir(base)) return base;
  if (isHubRepoId(base)) return await resolveModelDir(base, revision);
  throw new HiraError(
    join(adapterDir ?? "", "adapter_config.json"),
    `base_model_name_or_path '${base}' is not a local folder; pass --model=DIR`,
  );
}

/**
 * Loads the model `--ckpt`/`--model` name (the adapter loaded strictly and, unless --no-merge,
 * merged into the weights) and, when `withTokenizer`, its tokenizer (`--tokenizer`, else the
 * model folder, else `--model`).
 */
export async function openEvalModel(
  gpu: Gpu,
  f: ModelFlags,
  withTokenizer = true,
): Promise<EvalModel> {
  const ck = f.ckpt ? await resolveCheckpoint(f.ckpt, f.load_order) : null;
  // The adapter folder is opened (and validated) once, before the slow model load, and read
  // after it.
  const ad = ck?.kind === "adapter" ? await openAdapterDir(ck.dir) : null;
  try {
    const modelDir = ad
      ? await baseModelDir(f.model, ck!.dir, ad.config, f.revision)
      : ck?.dir ?? (f.model ? await resolveModelDir(f.model, f.revision) : EMBEDDED_MODEL_DIR);
    let tok: Tokenizer | null = null;
    if (withTokenizer) {
      const candidates = [f.tokenizer, modelDir, f.model].filter((d): d is string => !!d);
      let tokDir = candidates[0];
      if (!f.tokenizer) {
        for (const d of candidates) {
          if (await isFile(join(d, "tokenizer.json"))) {
            tokDir = d;
            break;
          }
        }
      }
      tok = await loadTokenizer(tokDir);
      const cfg = await readConfig(modelDir);
      if (tok.vocabSize > cfg.vocabSize) {
        throw new HiraError(
          join(tokDir, "tokenizer.json"),
          `has ${tok.vocabSize} ids but the model's vocab_size is ${cfg.vocabSize}`,
        );
      }
    }
    const model = await loadModelDir(gpu, modelDir, {
      weightDtype: resolveWeightDtype(f.weight_dtype ?? "f32", gpu.hasF16, false),
      f16Overflow: f.weight_dtype === "auto" ? "f32" : "refuse",
    });
    let merge: MergeHandle | null = null;
    if (ad) {
      await loadAdapters(model, ad.config, ad.weights);
      if (f.merge) merge = await mergeAdaptersInPlace(model);
    }
    return {
      model,
      tok,
      modelDir,
      adapterDir: ad ? ck!.dir : null,
      adapterConfig: ad?.config ?? null,
      merge,
    };
  } finally {
    ad?.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Data and outputs

/**
 * A dataset's test records (`{dataRoot}/{folder}/test.json`), the first `limit` when > 0. A
 * missing file says which file goes there.
 */
export async function readTestRecords(
  dataRoot: string,
  dataset: string,
  limit = 0,
): Promise<{ file: string; records: DataRecord[] }> {
  const name = dataset as DatasetName;
  const file = splitPath(name, "test", dataRoot);
  const what = dataset === "convai2"
    ? "put the ConvAI2 test set there (a JSON array of {instruction, output} records)"
    : `put the ${dataset} test set there (LLM-Adapters dataset/${
      basename(DATASET_FOLDERS[name])
    }/test.json: a JSON array of {instruction, input, output, answer}; see the README's "Datasets")`;
  const text = await readTextFile(file, what);
  const records = parseRecords(text, file, {
    fields: fieldsFor(name),
    requireAnswer: dataset === "gsm8k",
  });
  return { file, records: limit > 0 ? records.slice(0, limit) : records };
}

/** Writes predictions as JSONL atomically. */
export async function writePredictions(file: string, lines: readonly unknown[]): Promise<void> {
  await mkdirNoLink(dirname(file));
  await writeFileAtomic(
    file,
    lines.map((r) => JSON.stringify(r)).join("\n") + (lines.length ? "\n" : ""),
  );
}

async function readSummary(file: string): Promise<AccuracySummary | null> {
  try {
    const v = JSON.parse(await readRegularText(file, JSON_CAPS.args));
    return Array.isArray(v?.rows) ? v as AccuracySummary : null;
  } catch {
    return null;
  }
}

/**
 * Adds rows to `{dir}/summary_{tag}.json` (rows of the same dataset are replaced, so sets
 * evaluated one by one build up one table) and rewrites `summary_{tag}.md` and
 * `accuracy_{tag}.svg`. Returns the merged summary.
 */
export async function writeSummaryFiles(
  dir: string,
  tag: string,
  rows: readonly DatasetScore[],
  label = "accuracy",
): Promise<AccuracySummary> {
  await mkdirNoLink(dir);
  const jsonFile = join(dir, `summary_${tag}.json`);
  const s = mergeSummary(await readSummary(jsonFile), tag, rows);
  await writeFileAtomic(jsonFile, JSON.stringify(s, null, 2) + "\n");
  await writeFileAtomic(join(dir, `summary_${tag}.md`), summaryMarkdown(s));
  await writeFileAtomic(
    join(dir, `accuracy_${tag}.svg`),
    accuracyChart([{ name: label, summary: s }], `Accuracy per dataset (${tag})`),
  );
  return s;
}

function progressPrinter(label: string): (done: number, total: number) => void {
  const tty = Deno.stdout.isTerminal();
  const enc = new TextEncoder();
  return (done, total) => {
    if (!tty) return;
    Deno.stdout.writeSync(enc.encode(`\r${label}: ${done}/${total} prompts\x1b[K`));
    if (done === total) Deno.stdout.writeSync(enc.encode("\r\x1b[K"));
  };
}

/** Options of {@linkcode evaluateDataset}. */
export interface DatasetEvalOptions {
  dataRoot: string;
  settings: DecodeSettings;
  /** Output folder of the predictions file. */
  outDir: string;
  tag: string;
  limit?: number;
  batch?: number;
  quiet?: boolean;
}

/**
 * Decodes and scores one commonsense or gsm8k test set and writes its predictions JSONL
 * (`output_{dataset}_{tag}_eval.jsonl`). Returns the score and the file.
 */
export async function evaluateDataset(
  model: LlamaModel,
  tok: Tokenizer,
  dataset: string,
  opts: DatasetEvalOptions,
): Promise<{ score: DatasetScore; file: string; records: PredictionRecord[] }> {
  const { records } = await readTestRecords(opts.dataRoot, dataset, opts.limit ?? 0);
  const t0 = performance.now();
  const preds = await predictTexts(model, tok, records, opts.settings, {
    batch: opts.batch,
    onProgress: opts.quiet ? undefined : progressPrinter(dataset),
  });
  const scored = scoreRecords(dataset, records, preds);
  const file = join(opts.outDir, predictionsFileName(dataset, opts.tag));
  await writePredictions(file, scored);
  const score = datasetScore(dataset, scored);
  if (!opts.quiet) {
    console.log(
      `${dataset}: accuracy ${score.accuracy.toFixed(2)}% (${score.correct}/${score.n}) in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s -> ${file}`,
    );
  }
  return { score, file, records: scored };
}

// ---------------------------------------------------------------------------------------------
// Commands

function defaultOutDir(a: EvalArgs, modelDir: string, sub = "eval"): string {
  if (a.out) return a.out;
  if (a.ckpt) return join(a.ckpt, sub);
  return join("results_hira", `${sub}-${basename(modelDir.replace(/\/+$/, "")) || "model"}`);
}

async function rescoreCommand(a: EvalArgs): Promise<void> {
  const rows: DatasetScore[] = [];
  for (const file of a.predictions) {
    const dataset = a.command === "all" ? datasetFromFileName(file) : a.command;
    if (dataset === null) {
      throw new HiraError(
        file,
        "cannot tell the dataset from the file name; give it as the command (deno task eval boolq --predictions=...)",
      );
    }
    const text = await readTextFile(file, "the predictions file to re-score");
    if (dataset === "convai2") {
      const recs = dialogueLines(text, file);
      const s = scoreConvAI2(recs);
      console.log(convai2Markdown(s, "rescored"));
      continue;
    }
    // The reference's gsm8k files carry no answers: take them from the test set.
    const needsAnswers = dataset === "gsm8k" && !/"answer"\s*:/.test(text);
    const test = needsAnswers ? (await readTestRecords(a.data_root, "gsm8k")).records : undefined;
    const recs = rescorePredictions(text, file, dataset, test);
    rows.push(datasetScore(dataset, recs));
  }
  if (rows.length === 0) return;
  const s = summarize("rescored", rows);
  console.log(summaryMarkdown(s));
  const outDir = a.out ?? dirname(a.predictions[0]);
  await mkdirNoLink(outDir);
  await writeFileAtomic(join(outDir, "summary_rescored.json"), JSON.stringify(s, null, 2) + "\n");
  await writeFileAtomic(
    join(outDir, "summary_rescored.md"),
    summaryMarkdown(s),
  );
  await writeFileAtomic(
    join(outDir, "accuracy_rescored.svg"),
    accuracyChart([{ name: "re-scored", summary: s }]),
  );
}

function dialogueLines(text: string, file: string): DialogueRecord[] {
  const out: DialogueRecord[] = [];
  for (const { i, r } of predictionLines(text, file)) {
    const gt = typeof r.gt === "string" ? r.gt : typeof r.gold === "string" ? r.gold : null;
    if (gt === null) throw new HiraError(file, `line ${i + 1}: no 'gt' (or 'gold') string`);
    out.push({ context: String(r.context ?? ""), pred: r.pred, gt });
  }
  if (out.length === 0) throw new HiraError(file, "no prediction lines (objects with 'pred')");
  return out;
}

function describeModel(em: EvalModel): string {
  const ad = em.adapterDir
    ? ` + ${em.adapterConfig!.peftType} adapter ${em.adapterDir}${em.merge ? " (merged)" : ""}`
    : "";
  return `model: ${em.modelDir}${ad}`;
}

async function datasetCommand(a: EvalArgs): Promise<void> {
  const datasets = a.command === "all" ? [...COMMONSENSE_TASKS] : [a.command];
  // Check every test file before the (slow) model load.
  for (const d of datasets) await readTestRecords(a.data_root, d, a.limit);
  const gpu = await createDenoGpu();
  const em = await openEvalModel(gpu, a);
  const tok = em.tok!;
  console.log(`${describeModel(em)} on ${gpu.description}`);
  const outDir = defaultOutDir(a, em.modelDir);
  const choice = {
    beamSize: a.beam_size,
    greedy: a.decoding === "greedy",
    maxNewTokens: a.max_new_tokens,
  };
  if (a.command === "convai2") {
    const settings = decodeSettings("convai2", choice);
    const tag = decodingTag(settings, { maxNewTokensOverride: a.max_new_tokens, limit: a.limit });
    const { records } = await readTestRecords(a.data_root, "convai2", a.limit);
    const preds = await predictTexts(em.model, tok, records, settings, {
      batch: a.batch,
      onProgress: progressPrinter("convai2"),
    });
    const recs = dialogueRecords(records, preds);
    const file = join(outDir, predictionsFileName("convai2", tag));
    await writePredictions(file, recs);
    const s = scoreConvAI2(recs);
    const md = convai2Markdown(s, tag);
    console.log(md);
    console.log("BERTScore: skipped (no local scorer given)");
    await writeFileAtomic(
      join(outDir, `convai2_scores_${tag}.json`),
      JSON.stringify({ ...s, bertscore: "skipped" }, null, 2) + "\n",
    );
    await writeFileAtomic(join(outDir, `convai2_scores_${tag}.md`), md);
    console.log(`predictions: ${file}`);
    return;
  }
  const rows: DatasetScore[] = [];
  let tag = "";
  for (const d of datasets) {
    const settings = decodeSettings(d, choice);
    tag = decodingTag(settings, { maxNewTokensOverride: a.max_new_tokens, limit: a.limit });
    const r = await evaluateDataset(em.model, tok, d, {
      dataRoot: a.data_root,
      settings,
      outDir,
      tag,
      limit: a.limit,
      batch: a.batch,
    });
    rows.push(r.score);
    await writeSummaryFiles(outDir, tag, [r.score]);
  }
  const s = summarize(tag, rows);
  console.log("\n" + summaryMarkdown(s));
  console.log(`summary: ${join(outDir, `summary_${tag}.md`)}`);
  // Evaluating a training run folder adds the accuracy to its report.
  if (a.ckpt && !a.out && await isRunDir(a.ckpt)) {
    const files = await writeRunReport(a.ckpt);
    console.log(`report: ${files.at(-1)}`);
  }
}

async function perplexityCommand(a: EvalArgs): Promise<void> {
  if ((a.tokens === null) === (a.text === null)) {
    throw new HiraError("perplexity", "give exactly one of --tokens=FILE.json or --text=FILE");
  }
  let seqs: number[][] | null = null;
  let texts: string[] = [];
  const source = (a.tokens ?? a.text)!;
  if (a.tokens) {
    seqs = parseTokenFile(
      parseJson(await readTextFile(a.tokens, "the token file"), a.tokens),
      a.tokens,
    );
  } else {
    texts = parseTextFile(await readTextFile(a.text!, "the text file"), a.text!);
  }
  const gpu = await createDenoGpu();
  const em = await openEvalModel(gpu, a, seqs === null);
  seqs ??= texts.map((t) => documentTokens(em.tok!, t));
  const r = await perplexity(em.model, seqs, { source });
  console.log(JSON.stringify(r));
}

async function mergeCommand(a: EvalArgs): Promise<void> {
  if (!a.ckpt) throw new HiraError("--ckpt", "merge needs the adapter to merge (--ckpt=ADAPTER)");
  if (!a.out) throw new HiraError("--out", "merge needs the output folder (--out=DIR)");
  const gpu = await createDenoGpu();
  const em = await openEvalModel(gpu, { ...a, merge: false }, false);
  if (!em.adapterDir) {
    throw new HiraError(a.ckpt, "is a model folder, not an adapter: there is nothing to merge");
  }
  const dtype = await writeMergedModelDir(em.model, a.out, {
    dtype: a.dtype,
    sideFilesDir: a.tokenizer ?? em.modelDir,
    force: a.force,
  });
  console.log(
    `merged ${em.model.adapters.size} ${em.adapterConfig!.peftType} modules of ${em.adapterDir} ` +
      `into ${em.modelDir} -> ${a.out} (${dtype})`,
  );
}

async function rankCommand(a: EvalArgs): Promise<void> {
  if (!a.ckpt) throw new HiraError("--ckpt", "rank needs an adapter (--ckpt=ADAPTER)");
  const reports = [];
  for (const path of [a.ckpt, a.ckpt2].filter((p): p is string => !!p)) {
    const ck = await resolveCheckpoint(path, a.load_order);
    if (ck.kind !== "adapter") {
      throw new HiraError(path, "is a model folder; rank needs an adapter");
    }
    const ad = await openAdapterDir(ck.dir);
    const ac = ad.config;
    ad.close();
    const modelDir = await baseModelDir(a.model, ck.dir, ac, a.revision);
    const cfg = await readConfig(modelDir);
    const { modules } = await readAdapterModules(ck.dir, cfg, modelDir, { layers: a.layers });
    const label = ac.peftType === "HIRA" ? "HiRA" : "LoRA";
    reports.push(
      // Each module has its own LoRA scale (rank_pattern, alpha_pattern, use_rslora).
      adapterRanks(label, ac.peftType, modules, {
        threshold: a.threshold,
        loraScale: (path) => loraScale(ac, path),
      }),
    );
  }
  if (reports.length === 2 && reports[0].label === reports[1].label) {
    reports[0].label += " (1)";
    reports[1].label += " (2)";
  }
  const md = rankMarkdown(reports);
  console.log(md);
  const outDir = a.out ?? join(a.ckpt, "rank");
  await mkdirNoLink(outDir);
  await writeFileAtomic(join(outDir, "rank.md"), md);
  await writeFileAtomic(join(outDir, "rank.json"), JSON.stringify(reports, null, 2) + "\n");
  await writeFileAtomic(join(outDir, "rank.svg"), rankChart(reports));
  console.log(`rank table and chart: ${outDir}`);
}

/**
 * eval.ts: `deno task eval <dataset|all|perplexity|merge|rank> ...` (see {@linkcode evalHelp}).
 * Bad input throws a HiraError, which the entrypoint prints as one line.
 */
export async function evalMain(argv: readonly string[]): Promise<void> {
  const a = parseEvalArgs(argv);
  if (a.help) {
    console.log(evalHelp());
    return;
  }
  if (a.dataset !== null) return await fileEvalCommand(a);
  if (a.command === "perplexity") return await perplexityCommand(a);
  if (a.command === "merge") return await mergeCommand(a);
  if (a.command === "rank") return await rankCommand(a);
  if (a.predictions.length) return await rescoreCommand(a);
  await datasetCommand(a);
}

// ---------------------------------------------------------------------------------------------
// train.ts accuracy report

/**
 * The hooks {@linkcode accuracyHooks} adds to train.ts's RunOptions (a signal's `stopped()` ends
 * the pass between sets).
 */
export type AccuracyHooks = Pick<RunOptions, "beforeTraining" | "afterTraining">;

/** The held-out sets of a training dataset for the accuracy report (empty: no report). */
export async function heldOutSets(dataset: string, dataRoot: string): Promise<string[]> {
  if (dataset === "common_170k") {
    const out: string[] = [];
    for (const d of COMMONSENSE_TASKS) {
      if (await isFile(splitPath(d, "test", dataRoot))) out.push(d);
    }
    return out;
  }
  return (COMMONSENSE_TASKS as readonly string[]).includes(dataset) ? [dataset] : [];
}

/**
 * train.ts's accuracy report for commonsense runs (common_170k and the eight sets): before and
 * after training, decode the held-out sets (common_170k: the eight test sets under
 * data_root/llm_adapt, skipping missing ones; otherwise the dataset's own test set) greedily as
 * the reference's post-training predict does (or with --beam_size beams), at most
 * --eval_limit examples each, print accuracy per set and the average (after: before and after
 * side by side), and write predictions and summaries to `{runDir}/accuracy_before/`,
 * `{runDir}/accuracy_after/` and `{runDir}/accuracy.{md,json,svg}`. The adapters are merged
 * for decoding and restored exactly afterwards. Other datasets get no hooks.
 */
export function accuracyHooks(args: TrainArgs): AccuracyHooks {
  const isCommonsense = args.dataset === "common_170k" ||
    (COMMONSENSE_TASKS as readonly string[]).includes(args.dataset);
  if (!isCommonsense) return {};
  let before: AccuracySummary | null = null;
  const run = async (
    model: LlamaModel,
    tok: Tokenizer,
    runDir: string,
    phase: "before" | "after",
    stopped: () => boolean = () => false,
  ): Promise<AccuracySummary | null> => {
    const sets = await heldOutSets(args.dataset, args.data_root);
    if (sets.length === 0) {
      console.log(`accuracy ${phase} training: no held-out test sets under ${args.data_root}`);
      return null;
    }
    const outDir = join(runDir, `accuracy_${phase}`);
    const rows: DatasetScore[] = [];
    let tag = "";
    const h = await mergeAdaptersInPlace(model);
    try {
      for (const d of sets) {
        // A signal stops the pass between sets; a partial table is not written as a result.
        if (stopped()) return null;
        const settings = decodeSettings(d, {
          beamSize: args.beam_size,
          greedy: args.beam_size === null || args.decoding === "greedy",
          maxNewTokens: args.max_new_tokens,
        });
        tag = decodingTag(settings, {
          maxNewTokensOverride: args.max_new_tokens,
          limit: args.eval_limit,
        });
        const r = await evaluateDataset(model, tok, d, {
          dataRoot: args.data_root,
          settings,
          outDir,
          tag,
          limit: args.eval_limit,
          batch: Math.max(1, args.batch),
          quiet: true,
        });
        rows.push(r.score);
      }
    } finally {
      h.restore();
    }
    if (stopped()) return null;
    return await writeSummaryFiles(outDir, tag, rows, phase);
  };
  return {
    beforeTraining: async (model, tok, runDir, stopped) => {
      before = await run(model, tok, runDir, "before", stopped);
      if (before) console.log("\n" + summaryMarkdown(before, "Held-out accuracy before training"));
    },
    afterTraining: async (model, tok, runDir, stopped) => {
      const after = await run(model, tok, runDir, "after", stopped);
      if (!after) return;
      // A resumed run measured "before" in its first process: read it back.
      before ??= await readSummary(
        join(runDir, "accuracy_before", `summary_${after.decoding}.json`),
      );
      const b = before ?? summarize(after.decoding, []);
      const md = beforeAfterMarkdown(b, after);
      console.log("\n" + md);
      await writeFileAtomic(join(runDir, "accuracy.md"), md);
      await writeFileAtomic(
        join(runDir, "accuracy.json"),
        JSON.stringify({ before, after }, null, 2) + "\n",
      );
      await writeFileAtomic(
        join(runDir, "accuracy.svg"),
        accuracyChart(
          [
            ...(before ? [{ name: "before", summary: before }] : []),
            { name: "after", summary: after },
          ],
          "Held-out accuracy before and after training",
        ),
      );
    },
  };
}
