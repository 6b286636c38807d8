/**
 * Scoring, in one place: answer extraction and correctness as the reference scores (the
 * commonsense first-keyword regexes of `eval_commonsense.py`, the GSM8K "new acc" number rule of
 * `metamath_eval.py`, the post-processing of a decoded prediction of `train_hira.py:433-443`;
 * docs/reference.md, Scoring and Decoding), then prediction records, per-dataset scores, re-scoring
 * saved prediction files and the accuracy summary. ConvAI2's metrics are lib/eval/metrics.ts.
 * @module
 */

export { COMMONSENSE_TASKS, COMMONSENSE_TITLES, type CommonsenseTask } from "../train/datasets.ts";
import { HiraError } from "../engine/errors.ts";
import type { DataRecord } from "../train/data.ts";
import { COMMONSENSE_TASKS, type CommonsenseTask } from "../train/datasets.ts";

/** Datasets `deno task eval` decodes and scores: the eight commonsense sets, gsm8k, convai2. */
export const EVAL_DATASETS: readonly string[] = [...COMMONSENSE_TASKS, "gsm8k", "convai2"];

/** Sub-commands of eval.ts besides a dataset name. */
export const EVAL_COMMANDS: readonly string[] = ["all", "perplexity", "merge", "rank"];

const ANSWER_N = /answer1|answer2|answer3|answer4|answer5/;

/**
 * The reference's per-task patterns: case-sensitive, first match wins, and they match inside
 * words ("untrue" yields "true"): that is the reference's behaviour and is kept.
 */
export const ANSWER_PATTERNS: Readonly<Record<CommonsenseTask, RegExp>> = {
  boolq: /true|false/,
  piqa: /solution1|solution2/,
  siqa: ANSWER_N,
  arcc: ANSWER_N,
  arce: ANSWER_N,
  obqa: ANSWER_N,
  hellas: /ending1|ending2|ending3|ending4/,
  winog: /option1|option2/,
};

/** Whether a dataset name is one of the eight commonsense tasks. */
export function isCommonsenseTask(dataset: string): dataset is CommonsenseTask {
  return Object.hasOwn(ANSWER_PATTERNS, dataset);
}

// For mixed sets (common_170k's validation/test), which keyword family a gold output uses.
const FAMILIES: readonly RegExp[] = [
  ANSWER_PATTERNS.boolq,
  ANSWER_PATTERNS.piqa,
  ANSWER_N,
  ANSWER_PATTERNS.hellas,
  ANSWER_PATTERNS.winog,
];

function patternFor(dataset: string, goldOutput?: string): RegExp | null {
  if (isCommonsenseTask(dataset)) return ANSWER_PATTERNS[dataset];
  if (goldOutput === undefined) return null;
  // Our extension for mixed sets: the family is the one the gold output uses.
  return FAMILIES.find((re) => re.test(goldOutput)) ?? null;
}

/**
 * The first keyword of `dataset`'s pattern in `text`, or "" if there is none. Throws for a
 * dataset that is not one of the eight commonsense tasks (use {@linkcode isCorrect} for mixed
 * sets).
 */
export function extractAnswer(dataset: string, text: string): string {
  if (!isCommonsenseTask(dataset)) {
    throw new Error(`extractAnswer: no answer pattern for dataset '${dataset}'`);
  }
  return ANSWER_PATTERNS[dataset].exec(text)?.[0] ?? "";
}

/**
 * Whether a cleaned prediction is correct against the gold record.
 *
 * - The eight commonsense tasks: extract(pred) == extract(goldOutput) with the task's pattern,
 *   and a prediction without a keyword is wrong (docs/reference.md, Scoring).
 * - gsm8k: the "new acc" rule against the record's `answer` ({@linkcode gsm8kCorrect});
 *   `gold` must then carry `answer`.
 * - Any other name (common_170k, whose validation mixes the eight styles): our extension;
 *   the pattern is the keyword family found in the gold output.
 */
export function isCorrect(
  dataset: string,
  pred: string,
  gold: string | { output: string; answer?: unknown },
): boolean {
  const goldOutput = typeof gold === "string" ? gold : gold.output;
  if (dataset === "gsm8k") {
    if (typeof gold === "string") {
      throw new Error("isCorrect: gsm8k needs the gold record's 'answer' field");
    }
    return gsm8kCorrect(pred, gold.answer);
  }
  const re = patternFor(dataset, goldOutput);
  if (re === null) return false;
  const p = re.exec(pred)?.[0] ?? "";
  const g = re.exec(goldOutput)?.[0] ?? "";
  return p !== "" && p === g;
}

/** The special strings a decoded prediction is cleaned of. */
export interface PredictionSpecials {
  /** The pad string (for Llama-3 that is the BOS string, see tokenizer.ts). */
  padToken: string;
  /** The EOS string. */
  eosToken: string;
}

/**
 * Post-processing of a decoded prediction (decoded WITH special tokens, new tokens only):
 * delete every pad string, then cut at the first EOS string, then at the first "Q:", then at
 * the first "R:". Nothing is stripped.
 */
export function cleanPrediction(text: string, specials: PredictionSpecials): string {
  let s = specials.padToken === "" ? text : text.split(specials.padToken).join("");
  if (specials.eosToken !== "") s = s.split(specials.eosToken)[0];
  s = s.split("Q:")[0];
  s = s.split("R:")[0];
  return s;
}

const GSM8K_MARKER = "The answer is: ";
// Python's `\d` on str patterns is any Unicode decimal digit (category Nd), not just 0-9:
// "５７６" (fullwidth) or "٥٧٦" (Arabic-Indic) is a number to the reference.
const GSM8K_NUMBER = /[\-+]?\p{Nd}*[\.,/]?\p{Nd}+/u;

// Python's float() literal syntax (decimal only; underscores between digits allowed), with
// float()'s digits: every Unicode decimal digit.
const PY_FLOAT =
  /^[+-]?(?:(?:\p{Nd}(?:_?\p{Nd})*)?\.?\p{Nd}(?:_?\p{Nd})*(?:[eE][+-]?\p{Nd}(?:_?\p{Nd})*)?|\p{Nd}(?:_?\p{Nd})*\.|inf(?:inity)?|nan)$/iu;

const ND = /\p{Nd}/u;

/**
 * The value 0-9 of a Unicode decimal digit. Unicode encodes every Nd digit in contiguous runs of
 * ten, 0 to 9 in order (a stability guarantee), and adjacent runs each start at 0, so the offset
 * from the start of its run of Nd characters, mod 10, is its value.
 */
function digitValue(ch: string): number {
  let cp = ch.codePointAt(0)!;
  let n = 0;
  while (ND.test(String.fromCodePoint(cp - 1))) {
    cp--;
    n++;
  }
  return n % 10;
}

/** ASCII digits for every Unicode decimal digit (what Python's float() reads them as). */
export function asciiDigits(s: string): string {
  return s.replace(/\p{Nd}/gu, (d) => (d >= "0" && d <= "9" ? d : String(digitValue(d))));
}

/** Python's `float(s)`, or null where Python would raise ValueError. */
export function pyFloat(s: string): number | null {
  const t = s.trim();
  if (!PY_FLOAT.test(t)) return null;
  const lower = t.toLowerCase();
  const sign = lower.startsWith("-") ? -1 : 1;
  if (lower.includes("inf")) return sign * Infinity;
  if (lower.includes("nan")) return NaN;
  return Number(asciiDigits(t).replace(/_/g, ""));
}

/** Python 3's `round(x)` to an integer: ties go to the even integer. */
export function pyRound(x: number): number {
  const f = Math.floor(x);
  const diff = x - f;
  if (diff > 0.5) return f + 1;
  if (diff < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * The GSM8K "new acc" number of a prediction (MetaMath's `extract_answer_number`): the text
 * after the LAST "The answer is: ", its first match of `[\-+]?\d*[\.,/]?\d+`, commas removed,
 * a fraction evaluated (a denominator of "0" yields the numerator), rounded to an integer with
 * Python's round-half-even. Null where the reference returns None (no marker, no number, a
 * fraction with an empty side, an infinite value).
 */
export function extractGsm8kNumber(pred: string): number | null {
  const parts = pred.split(GSM8K_MARKER);
  if (parts.length < 2) return null;
  const tail = parts[parts.length - 1].trim();
  const m = GSM8K_NUMBER.exec(tail);
  if (m === null) return null;
  const match = m[0];
  let value: number;
  if (match.includes("/")) {
    const [numerator, denominator] = match.split("/");
    const num = pyFloat(numerator);
    const den = pyFloat(denominator);
    if (num === null || den === null) return null;
    if (denominator === "0") value = num;
    else value = num / den;
  } else {
    const v = pyFloat(match.replace(/,/g, ""));
    if (v === null) return null;
    value = v;
  }
  if (!Number.isFinite(value)) return null;
  return pyRound(value);
}

/**
 * The gold number of a GSM8K record's `answer`: `float(answer)` as the reference does, also
 * accepting a one-element list (some LLM-Adapters revisions store one; the reference would
 * crash on it). Null for anything `float()` rejects.
 */
export function gsm8kGold(answer: unknown): number | null {
  let a = answer;
  if (Array.isArray(a)) {
    if (a.length !== 1) return null;
    a = a[0];
  }
  if (typeof a === "number") return a;
  if (typeof a === "string") return pyFloat(a);
  return null;
}

/** GSM8K "new acc": the extracted, rounded number equals `float(answer)`. */
export function gsm8kCorrect(pred: string, answer: unknown): boolean {
  const p = extractGsm8kNumber(pred);
  const g = gsm8kGold(answer);
  return p !== null && g !== null && p === g;
}

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
