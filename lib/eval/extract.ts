/**
 * Answer extraction and scoring of the reference: the commonsense first-keyword regexes
 * (`eval_commonsense.py`), the GSM8K "new acc" number rule (`metamath_eval.py`), and the
 * post-processing of a decoded prediction (`train_hira.py:433-443`); docs/reference.md, Scoring
 * and Decoding.
 * @module
 */

export { COMMONSENSE_TASKS, COMMONSENSE_TITLES, type CommonsenseTask } from "../train/datasets.ts";
import type { CommonsenseTask } from "../train/datasets.ts";

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
