/**
 * Evaluation without file I/O: running a dataset's test prompts through a decoder
 * (docs/reference.md, Decoding), scoring the predictions (Scoring) and the accuracy summary. The
 * flags are lib/cli/eval_flags.ts, the Markdown and charts lib/report/accuracy.ts, perplexity
 * lib/eval/perplexity.ts.
 *
 * Decoding follows the reference: BOS + the Alpaca template with an empty target
 * (lib/train/data.ts `testPrompts`), 4-beam search with 16 new tokens for the commonsense sets (200
 * for gsm8k), the new tokens decoded WITH special tokens and cut at the pad/EOS strings, "Q:"
 * and "R:" (`cleanPrediction`); ConvAI2 uses `BOS + "CONTEXT: {in} TARGET: "`, 4 beams,
 * length_penalty 0.9, no_repeat_ngram_size 4 and 32 new tokens.
 * @module
 */
import { HiraError } from "../engine/errors.ts";
import {
  type DataRecord,
  type DatasetName,
  maxNewTokens,
  maxTokenLength,
  testPrompts,
} from "../train/data.ts";
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
import type { LlamaModel } from "../model/model.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import type { TemplateType } from "../train/prompt.ts";
import type { DialogueRecord } from "./metrics.ts";

/** Datasets `deno task eval` decodes and scores: the eight commonsense sets, gsm8k, convai2. */
export const EVAL_DATASETS: readonly string[] = [...COMMONSENSE_TASKS, "gsm8k", "convai2"];

/** Sub-commands of eval.ts besides a dataset name. */
export const EVAL_COMMANDS: readonly string[] = ["all", "perplexity", "merge", "rank"];

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

/** ConvAI2 dialogue records from the test records and predictions ({context, pred, gt}). */
export function dialogueRecords(
  records: readonly DataRecord[],
  preds: readonly string[],
): DialogueRecord[] {
  return records.map((r, i) => ({ context: r.instruction, pred: preds[i], gt: r.output }));
}
