/**
 * ConvAI2 dialogue scoring as the reference's convai2_eval.py does it through HF `evaluate`
 * (evaluate 0.4.1, nltk 3.8.1, rouge-score 0.1.2; docs/metrics.md says what each step is and
 * where the reference goes wrong): record grouping, prediction cleaning, corpus BLEU
 * (evaluate "bleu" = tensorflow/nmt compute_bleu on tokenizer_13a tokens), ROUGE-L (rouge_score),
 * METEOR (nltk meteor_score on nltk word_tokenize tokens), token F1 and distinct-n.
 *
 * Every function returns fractions in [0, 1]; convai2_eval.py multiplies by 100 for its CSV.
 * BERTScore (roberta-large) is not computed here: it needs a 355M-parameter model.
 *
 * Python string semantics that matter for exactness are reproduced: `str.split()` / `\s` use
 * Python's whitespace set (which differs from JavaScript's `\s`), `\w`/`\b`/`\d` are Unicode-aware.
 * @module
 */

import { PY_S, PY_W, pyLen, pySplit, pyStrip } from "./pystr.ts";
import { sentTokenize } from "./punkt.ts";
import { synonyms } from "./wordnet.ts";

export { sentTokenize };

// Local short names for the Python-semantics regex pieces.
const S = PY_S;
const W = PY_W;

function checkCorpus(name: string, preds: readonly string[], refs: readonly unknown[]): void {
  if (preds.length !== refs.length) {
    throw new RangeError(`${name}: ${preds.length} predictions but ${refs.length} references`);
  }
}

function checkRefs(name: string, refs: readonly string[]): void {
  // Python's max() over an empty list raises; an empty reference list is a caller bug.
  if (refs.length === 0) throw new RangeError(`${name}: empty reference list`);
}

// ---------------------------------------------------------------------------------------------
// Grouping and cleaning (convai2_eval.py :88-105)

/** One generated line of a ConvAI2 results file. */
export interface DialogueRecord {
  context: string;
  pred: string;
  gt: string;
}

/** A group of consecutive records that share one context, scored as one multi-reference item. */
export interface GroupedDialogue {
  context: string;
  /** The first record's prediction. */
  pred: string;
  /** Every record's gt, in order: the multi-reference list. */
  gt: string[];
}

/**
 * Groups consecutive records with an identical context (convai2_eval.py :88-100). Only adjacent
 * records merge: the same context appearing again later starts a new group, as in the script.
 * The group's prediction is the first record's: the script keeps the pred of the record that
 * opened the group and ignores the rest (with beam search they are identical anyway, since the
 * prompt is the same), so any other choice would change the scores.
 */
export function groupMultiReference(records: readonly DialogueRecord[]): GroupedDialogue[] {
  const out: GroupedDialogue[] = [];
  for (const r of records) {
    const last = out[out.length - 1];
    if (last !== undefined && last.context === r.context) last.gt.push(r.gt);
    else out.push({ context: r.context, pred: r.pred, gt: [r.gt] });
  }
  return out;
}

/**
 * Cuts a generated reply before the first "TARGET:", then before the first "Q:", then before
 * the first "R:" (convai2_eval.py `clean_pred`), and strips surrounding whitespace.
 */
export function cutPrediction(pred: string): string {
  for (const marker of ["TARGET:", "Q:", "R:"]) {
    const at = pred.indexOf(marker);
    if (at >= 0) pred = pred.slice(0, at);
  }
  return pyStrip(pred);
}

// ---------------------------------------------------------------------------------------------
// BLEU (evaluate/metrics/bleu: tokenizer_13a.py + nmt_bleu.py)

const RE_13A: readonly [RegExp, string][] = [
  // Punctuation and symbols except ' , - . (ranges {-~ [-` space-& (-+ :-@ and /).
  [/([{-~[-`\x20-&(-+:-@/])/g, " $1 "],
  // Period and comma unless preceded by a digit.
  [/([^0-9])([.,])/g, "$1 $2 "],
  // Period and comma unless followed by a digit.
  [/([.,])([^0-9])/g, " $1 $2"],
  // Dash when preceded by a digit.
  [/([0-9])(-)/g, "$1 $2 "],
];

/**
 * sacrebleu's "13a" tokenizer (mteval-v13a), as vendored in HF evaluate's bleu metric: drops
 * "<skipped>", joins "-\n" hyphenation, unescapes &quot; &amp; &lt; &gt;, splits off punctuation
 * (periods and commas only when not between digits) and returns the tokens.
 */
export function tokenize13a(line: string): string[] {
  line = line.replaceAll("<skipped>", "").replaceAll("-\n", "").replaceAll("\n", " ");
  if (line.includes("&")) {
    line = line.replaceAll("&quot;", '"').replaceAll("&amp;", "&").replaceAll("&lt;", "<")
      .replaceAll("&gt;", ">");
  }
  line = ` ${line} `;
  for (const [re, sub] of RE_13A) line = line.replace(re, sub);
  return pySplit(line);
}

/** Counts of all n-grams of order 1..maxOrder, keyed by the space-joined tokens. */
function ngramCounts(tokens: readonly string[], maxOrder: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let order = 1; order <= maxOrder; order++) {
    for (let i = 0; i + order <= tokens.length; i++) {
      // Tokens never contain whitespace, so the joined key is unambiguous.
      const key = tokens.slice(i, i + order).join(" ");
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  return counts;
}

/** Result of {@link corpusBleu}, field for field HF evaluate's bleu output. */
export interface BleuResult {
  bleu: number;
  /** Modified n-gram precisions for n = 1..maxOrder. */
  precisions: number[];
  brevityPenalty: number;
  lengthRatio: number;
  translationLength: number;
  referenceLength: number;
}

/** Options of {@link corpusBleu}. */
export interface BleuOptions {
  maxOrder?: number;
  /** Lin & Och add-one smoothing of every order's precision. */
  smooth?: boolean;
  /** Defaults to {@link tokenize13a}. */
  tokenizer?: (s: string) => string[];
}

/**
 * Corpus BLEU exactly as HF evaluate's "bleu" metric (tensorflow/nmt `compute_bleu`):
 * - clipped n-gram matches are summed over the corpus, each prediction's n-gram counts clipped
 *   by the per-n-gram MAXIMUM count over its references;
 * - the reference length of a prediction is its SHORTEST reference (`min(len(r))`), not the
 *   closest one as in sacrebleu;
 * - BLEU = BP · exp(mean_n log p_n), 0 when any p_n is 0 (unless `smooth`);
 *   BP = 1 if c > r else exp(1 − r/c) with c, r the corpus translation/reference lengths.
 * Where the Python code divides by zero (no prediction tokens, or no reference tokens) this
 * returns BLEU 0 with BP 0 (c = 0), or ratio Infinity with BP 1 (r = 0).
 */
export function corpusBleu(
  preds: readonly string[],
  refs: readonly (readonly string[])[],
  opts: BleuOptions = {},
): BleuResult {
  const { maxOrder = 4, smooth = false, tokenizer = tokenize13a } = opts;
  checkCorpus("corpusBleu", preds, refs);
  const matches = new Array<number>(maxOrder).fill(0);
  const possible = new Array<number>(maxOrder).fill(0);
  let referenceLength = 0;
  let translationLength = 0;
  for (let s = 0; s < preds.length; s++) {
    checkRefs("corpusBleu", refs[s]);
    const refToks = refs[s].map(tokenizer);
    const hyp = tokenizer(preds[s]);
    referenceLength += Math.min(...refToks.map((r) => r.length));
    translationLength += hyp.length;
    const merged = new Map<string, number>();
    for (const r of refToks) {
      for (const [g, c] of ngramCounts(r, maxOrder)) merged.set(g, Math.max(merged.get(g) ?? 0, c));
    }
    for (const [g, c] of ngramCounts(hyp, maxOrder)) {
      const overlap = Math.min(c, merged.get(g) ?? 0);
      if (overlap > 0) matches[g.split(" ").length - 1] += overlap;
    }
    for (let order = 1; order <= maxOrder; order++) {
      const n = hyp.length - order + 1;
      if (n > 0) possible[order - 1] += n;
    }
  }
  const precisions = matches.map((m, i) => {
    if (smooth) return (m + 1) / (possible[i] + 1);
    return possible[i] > 0 ? m / possible[i] : 0;
  });
  let geoMean = 0;
  if (Math.min(...precisions) > 0) {
    geoMean = Math.exp(precisions.reduce((acc, p) => acc + Math.log(p) / maxOrder, 0));
  }
  const lengthRatio = translationLength / referenceLength;
  const brevityPenalty = lengthRatio > 1
    ? 1
    : translationLength === 0
    ? 0
    : Math.exp(1 - 1 / lengthRatio);
  return {
    bleu: geoMean * brevityPenalty,
    precisions,
    brevityPenalty,
    lengthRatio,
    translationLength,
    referenceLength,
  };
}

// ---------------------------------------------------------------------------------------------
// ROUGE-L (rouge_score, as HF evaluate "rouge" calls it)

/**
 * rouge_score's default tokenizer: lowercase, every run of characters outside [a-z0-9] becomes
 * a space, split; with `stem`, tokens longer than 3 characters go through the Porter stemmer
 * (nltk PorterStemmer, NLTK_EXTENSIONS mode, as rouge_score constructs it).
 */
export function rougeTokenize(text: string, stem = false): string[] {
  let tokens = text.toLowerCase().replace(/[^a-z0-9]+/g, " ").split(/\s+/);
  // Tokens are [a-z0-9]+ here, so code units are code points.
  if (stem) tokens = tokens.map((t) => (t.length > 3 ? porterStem(t) : t));
  return tokens.filter((t) => /^[a-z0-9]+$/.test(t));
}

/** Precision, recall and F-measure of one score. */
export interface PrfScore {
  precision: number;
  recall: number;
  fmeasure: number;
}

function lcsLength(a: readonly string[], b: readonly string[]): number {
  let prev = new Int32Array(b.length + 1);
  let cur = new Int32Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      cur[j] = a[i - 1] === b[j - 1] ? prev[j - 1] + 1 : Math.max(prev[j], cur[j - 1]);
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length];
}

/** rouge_score's rougeL of one prediction against one reference (LCS-based P, R, F1). */
export function rougeLScore(
  pred: string,
  ref: string,
  opts: { useStemmer?: boolean } = {},
): PrfScore {
  const target = rougeTokenize(ref, opts.useStemmer ?? false);
  const prediction = rougeTokenize(pred, opts.useStemmer ?? false);
  if (target.length === 0 || prediction.length === 0) {
    return { precision: 0, recall: 0, fmeasure: 0 };
  }
  const lcs = lcsLength(target, prediction);
  const precision = lcs / prediction.length;
  const recall = lcs / target.length;
  const fmeasure = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
  return { precision, recall, fmeasure };
}

/**
 * Corpus ROUGE-L F-measure as HF evaluate's "rouge" (rougeL key): each prediction takes the
 * reference with the highest F (rouge_score `score_multi`; the first on ties), and the corpus
 * value is the mean over predictions. HF reports the median of 1000 unseeded bootstrap resample
 * means (BootstrapAggregator "mid"), which scatters randomly around this mean by a small
 * fraction of its standard error; the plain mean is the deterministic value it estimates.
 * `useStemmer` defaults to false, as in HF evaluate. Returns 0 for an empty corpus.
 */
export function rougeL(
  preds: readonly string[],
  refs: readonly (readonly string[])[],
  opts: { useStemmer?: boolean } = {},
): number {
  checkCorpus("rougeL", preds, refs);
  if (preds.length === 0) return 0;
  let sum = 0;
  for (let i = 0; i < preds.length; i++) {
    checkRefs("rougeL", refs[i]);
    let best = -1;
    for (const r of refs[i]) best = Math.max(best, rougeLScore(preds[i], r, opts).fmeasure);
    sum += best;
  }
  return sum / preds.length;
}

// ---------------------------------------------------------------------------------------------
// Porter stemmer (nltk.stem.porter.PorterStemmer)

/** The three modes of nltk's PorterStemmer. */
export type PorterMode = "NLTK_EXTENSIONS" | "MARTIN_EXTENSIONS" | "ORIGINAL_ALGORITHM";

const PORTER_IRREGULAR: Record<string, string> = {
  sky: "sky",
  skies: "sky",
  dying: "die",
  lying: "lie",
  tying: "tie",
  news: "news",
  innings: "inning",
  inning: "inning",
  outings: "outing",
  outing: "outing",
  cannings: "canning",
  canning: "canning",
  howe: "howe",
  proceed: "proceed",
  exceed: "exceed",
  succeed: "succeed",
};

type PorterRule = [suffix: string, replacement: string, cond: ((stem: string) => boolean) | null];

/**
 * nltk's PorterStemmer. Python indexes and measures a word in code points, so every index and
 * length here does too: a word is split with `Array.from` before any position is used (an emoji
 * is one "consonant", as in Python, not two). Suffixes are ASCII, so cutting one off the end of
 * the string is the same in code units and code points.
 */
class Porter {
  constructor(readonly mode: PorterMode) {}

  isConsonant(w: readonly string[], i: number): boolean {
    const c = w[i];
    if (c === "a" || c === "e" || c === "i" || c === "o" || c === "u") return false;
    if (c === "y") return i === 0 ? true : !this.isConsonant(w, i - 1);
    return true;
  }

  /** m in [C](VC)^m[V]: the number of "vc" transitions. */
  measure(stem: string): number {
    const a = Array.from(stem);
    let m = 0;
    for (let i = 0; i + 1 < a.length; i++) {
      if (!this.isConsonant(a, i) && this.isConsonant(a, i + 1)) m++;
    }
    return m;
  }

  positive = (stem: string): boolean => this.measure(stem) > 0;

  containsVowel(stem: string): boolean {
    const a = Array.from(stem);
    for (let i = 0; i < a.length; i++) if (!this.isConsonant(a, i)) return true;
    return false;
  }

  endsDoubleConsonant(w: string): boolean {
    const a = Array.from(w);
    const n = a.length;
    return n >= 2 && a[n - 1] === a[n - 2] && this.isConsonant(a, n - 1);
  }

  endsCvc(w: string): boolean {
    const a = Array.from(w);
    const n = a.length;
    return (n >= 3 && this.isConsonant(a, n - 3) && !this.isConsonant(a, n - 2) &&
      this.isConsonant(a, n - 1) && !"wxy".includes(a[n - 1])) ||
      (this.mode === "NLTK_EXTENSIONS" && n === 2 && !this.isConsonant(a, 0) &&
        this.isConsonant(a, 1));
  }

  /** The first rule whose suffix matches decides, whether or not its condition holds. */
  applyRules(w: string, rules: readonly PorterRule[]): string {
    for (const [suffix, replacement, cond] of rules) {
      if (suffix === "*d" && this.endsDoubleConsonant(w)) {
        // The doubled consonant may be any character, an emoji too: drop two code points.
        const stem = Array.from(w).slice(0, -2).join("");
        return cond === null || cond(stem) ? stem + replacement : w;
      }
      if (w.endsWith(suffix)) {
        const stem = w.slice(0, w.length - suffix.length);
        return cond === null || cond(stem) ? stem + replacement : w;
      }
    }
    return w;
  }

  step1a(w: string): string {
    if (this.mode === "NLTK_EXTENSIONS" && w.endsWith("ies") && pyLen(w) === 4) {
      return w.slice(0, -3) + "ie";
    }
    return this.applyRules(w, [["sses", "ss", null], ["ies", "i", null], ["ss", "ss", null], [
      "s",
      "",
      null,
    ]]);
  }

  step1b(w: string): string {
    if (this.mode === "NLTK_EXTENSIONS" && w.endsWith("ied")) {
      return w.slice(0, -3) + (pyLen(w) === 4 ? "ie" : "i");
    }
    if (w.endsWith("eed")) {
      const stem = w.slice(0, -3);
      return this.measure(stem) > 0 ? stem + "ee" : w;
    }
    let inter: string | null = null;
    for (const suffix of ["ed", "ing"]) {
      if (w.endsWith(suffix)) {
        const s = w.slice(0, w.length - suffix.length);
        if (this.containsVowel(s)) {
          inter = s;
          break;
        }
      }
    }
    if (inter === null) return w;
    const last = Array.from(inter).pop()!;
    return this.applyRules(inter, [
      ["at", "ate", null],
      ["bl", "ble", null],
      ["iz", "ize", null],
      ["*d", last, () => !"lsz".includes(last)],
      ["", "e", (stem) => this.measure(stem) === 1 && this.endsCvc(stem)],
    ]);
  }

  step1c(w: string): string {
    const cond = this.mode === "NLTK_EXTENSIONS"
      ? (stem: string) => {
        const a = Array.from(stem);
        return a.length > 1 && this.isConsonant(a, a.length - 1);
      }
      : (stem: string) => this.containsVowel(stem);
    return this.applyRules(w, [["y", "i", cond]]);
  }

  step2(w: string): string {
    if (
      this.mode === "NLTK_EXTENSIONS" && w.endsWith("alli") && this.positive(w.slice(0, -4))
    ) {
      return this.step2(w.slice(0, -4) + "al");
    }
    const p = this.positive;
    const rules: PorterRule[] = [
      ["ational", "ate", p],
      ["tional", "tion", p],
      ["enci", "ence", p],
      ["anci", "ance", p],
      ["izer", "ize", p],
      this.mode === "ORIGINAL_ALGORITHM" ? ["abli", "able", p] : ["bli", "ble", p],
      ["alli", "al", p],
      ["entli", "ent", p],
      ["eli", "e", p],
      ["ousli", "ous", p],
      ["ization", "ize", p],
      ["ation", "ate", p],
      ["ator", "ate", p],
      ["alism", "al", p],
      ["iveness", "ive", p],
      ["fulness", "ful", p],
      ["ousness", "ous", p],
      ["aliti", "al", p],
      ["iviti", "ive", p],
      ["biliti", "ble", p],
    ];
    if (this.mode === "NLTK_EXTENSIONS") {
      rules.push(["fulli", "ful", p]);
      // nltk tests the measure of the word minus "ogi", not of the stem before "logi".
      rules.push(["logi", "log", () => this.positive(w.slice(0, -3))]);
    }
    if (this.mode === "MARTIN_EXTENSIONS") rules.push(["logi", "log", p]);
    return this.applyRules(w, rules);
  }

  step3(w: string): string {
    const p = this.positive;
    return this.applyRules(w, [
      ["icate", "ic", p],
      ["ative", "", p],
      ["alize", "al", p],
      ["iciti", "ic", p],
      ["ical", "ic", p],
      ["ful", "", p],
      ["ness", "", p],
    ]);
  }

  step4(w: string): string {
    const gt1 = (stem: string) => this.measure(stem) > 1;
    return this.applyRules(w, [
      ["al", "", gt1],
      ["ance", "", gt1],
      ["ence", "", gt1],
      ["er", "", gt1],
      ["ic", "", gt1],
      ["able", "", gt1],
      ["ible", "", gt1],
      ["ant", "", gt1],
      ["ement", "", gt1],
      ["ment", "", gt1],
      ["ent", "", gt1],
      // The stem's last character is ASCII "s" or "t" in code units exactly when in code points.
      ["ion", "", (stem) => this.measure(stem) > 1 && "st".includes(stem[stem.length - 1])],
      ["ou", "", gt1],
      ["ism", "", gt1],
      ["ate", "", gt1],
      ["iti", "", gt1],
      ["ous", "", gt1],
      ["ive", "", gt1],
      ["ize", "", gt1],
    ]);
  }

  step5a(w: string): string {
    if (w.endsWith("e")) {
      const stem = w.slice(0, -1);
      const m = this.measure(stem);
      if (m > 1) return stem;
      if (m === 1 && !this.endsCvc(stem)) return stem;
    }
    return w;
  }

  step5b(w: string): string {
    return this.applyRules(w, [["ll", "l", () => this.measure(w.slice(0, -1)) > 1]]);
  }

  stem(word: string): string {
    let stem = word.toLowerCase();
    // nltk looks the ORIGINAL word up in its irregular-forms pool but returns the lowercase one.
    if (this.mode === "NLTK_EXTENSIONS" && Object.hasOwn(PORTER_IRREGULAR, word)) {
      return PORTER_IRREGULAR[stem];
    }
    if (this.mode !== "ORIGINAL_ALGORITHM" && pyLen(word) <= 2) return stem;
    stem = this.step1a(stem);
    stem = this.step1b(stem);
    stem = this.step1c(stem);
    stem = this.step2(stem);
    stem = this.step3(stem);
    stem = this.step4(stem);
    stem = this.step5a(stem);
    return this.step5b(stem);
  }
}

const PORTERS = new Map<PorterMode, Porter>();

/**
 * nltk's `PorterStemmer(mode).stem(word)` (lowercases first). The default NLTK_EXTENSIONS mode is
 * what nltk's METEOR and rouge_score use; ORIGINAL_ALGORITHM is Porter (1980) as published and
 * MARTIN_EXTENSIONS Martin Porter's later reference implementation.
 */
export function porterStem(word: string, mode: PorterMode = "NLTK_EXTENSIONS"): string {
  let p = PORTERS.get(mode);
  if (p === undefined) {
    p = new Porter(mode);
    PORTERS.set(mode, p);
  }
  return p.stem(word);
}

// ---------------------------------------------------------------------------------------------
// nltk word_tokenize = Punkt sentence splitting + NLTKWordTokenizer (improved Treebank)

/** Unicode-aware `\b` before a word character / after one, as in Python's re. */
const B_BEFORE = `(?<!${W})`;
const B_AFTER = `(?!${W})`;

const STARTING_QUOTES: readonly [RegExp, string][] = [
  [/([«“‘„]|[`]+)/gu, " $1 "],
  [/^"/u, "``"],
  [/(``)/gu, " $1 "],
  [/([ ([{<])("|'{2})/gu, "$1 `` "],
  [new RegExp(`(')(?!re|ve|ll|m|t|s|d|n)(${W})${B_AFTER}`, "giu"), "$1 $2"],
];

const ENDING_QUOTES: readonly [RegExp, string][] = [
  [/([»”’])/gu, " $1 "],
  [/''/gu, " '' "],
  [/"/gu, " '' "],
  [/([^' ])('[sS]|'[mM]|'[dD]|') /gu, "$1 $2 "],
  [/([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) /gu, "$1 $2 "],
];

const TB_PUNCTUATION: readonly [RegExp, string][] = [
  [new RegExp(`([^.])(\\.)([\\])}>"'»”’ ]*)${S}*$`, "u"), "$1 $2 $3 "],
  [/([:,])([^\p{Nd}])/gu, " $1 $2"],
  // Python's `$` also matches just before a final newline.
  [/([:,])(?=\n?$)/u, " $1 "],
  [/\.{2,}/gu, " $& "],
  [/[;@#$%&]/gu, " $& "],
  [new RegExp(`([^.])(\\.)([\\])}>"']*)${S}*$`, "u"), "$1 $2$3 "],
  [/[?!]/gu, " $& "],
  [/([^'])' /gu, "$1 ' "],
  [/[*]/gu, " $& "],
];

const PARENS_BRACKETS: [RegExp, string] = [/[\][(){}<>]/gu, " $& "];
const DOUBLE_DASHES: [RegExp, string] = [/--/gu, " -- "];

const CONTRACTIONS: readonly RegExp[] = [
  ...[
    ["can", "not"],
    ["d", "'ye"],
    ["gim", "me"],
    ["gon", "na"],
    ["got", "ta"],
    ["lem", "me"],
    ["more", "'n"],
  ].map(([a, b]) => new RegExp(`${B_BEFORE}(${a})(${b})${B_AFTER}`, "giu")),
  new RegExp(`${B_BEFORE}(wan)(na)(?=${S})`, "giu"),
  new RegExp(` ('t)(is)${B_AFTER}`, "giu"),
  new RegExp(` ('t)(was)${B_AFTER}`, "giu"),
];

/**
 * nltk's `NLTKWordTokenizer().tokenize(sentence)` (the improved Treebank tokenizer behind
 * `word_tokenize`), for one sentence: splits punctuation, quotes ("..." becomes `` and ''),
 * clitics ('s, n't, ...) and the contractions can|not, gon|na, ...; only the sentence-final
 * period is split off.
 */
export function treebankTokenize(text: string): string[] {
  for (const [re, sub] of STARTING_QUOTES) text = text.replace(re, sub);
  for (const [re, sub] of TB_PUNCTUATION) text = text.replace(re, sub);
  text = text.replace(PARENS_BRACKETS[0], PARENS_BRACKETS[1]);
  text = text.replace(DOUBLE_DASHES[0], DOUBLE_DASHES[1]);
  text = ` ${text} `;
  for (const [re, sub] of ENDING_QUOTES) text = text.replace(re, sub);
  for (const re of CONTRACTIONS) text = text.replace(re, " $1 $2 ");
  return pySplit(text);
}

/**
 * nltk 3.8.1's `word_tokenize(text)`: {@link sentTokenize} (Punkt with the trained English
 * model) then {@link treebankTokenize} on each sentence, so a period is split off wherever Punkt
 * ends a sentence and stays on an abbreviation ("ok.", "u.s.a.") where it does not.
 */
export function wordTokenize(text: string): string[] {
  return sentTokenize(text).flatMap(treebankTokenize);
}

// ---------------------------------------------------------------------------------------------
// METEOR (nltk.translate.meteor_score, as HF evaluate's "meteor" calls it)

/** Options of {@link meteor} and {@link singleMeteor}. */
export interface MeteorOptions {
  alpha?: number;
  beta?: number;
  gamma?: number;
}

type Enum = [index: number, word: string][];

/**
 * nltk `_match_enums`: greedy exact matching scanning both lists from the END, removing each
 * matched pair (the scan order decides which duplicate matches, and so the chunk count).
 */
function matchEnums(hyp: Enum, ref: Enum): [number, number][] {
  const matches: [number, number][] = [];
  for (let i = hyp.length - 1; i >= 0; i--) {
    for (let j = ref.length - 1; j >= 0; j--) {
      if (hyp[i][1] === ref[j][1]) {
        matches.push([hyp[i][0], ref[j][0]]);
        hyp.splice(i, 1);
        ref.splice(j, 1);
        break;
      }
    }
  }
  return matches;
}

function countChunks(matches: readonly [number, number][]): number {
  let chunks = 1;
  for (let i = 0; i + 1 < matches.length; i++) {
    if (!(matches[i + 1][0] === matches[i][0] + 1 && matches[i + 1][1] === matches[i][1] + 1)) {
      chunks++;
    }
  }
  return chunks;
}

/**
 * nltk `_enum_wordnetsyn_match`: for each hypothesis word from the END, its WordNet synonyms
 * (the lemma names without "_" of `wordnet.synsets(word)`, plus the word itself), and the first
 * reference word from the end among them; matched pairs are removed. The words here are the
 * Porter stems the stem stage left unmatched, as in nltk.
 */
function matchSynonyms(hyp: Enum, ref: Enum): [number, number][] {
  const matches: [number, number][] = [];
  for (let i = hyp.length - 1; i >= 0; i--) {
    const syns = new Set(synonyms(hyp[i][1]));
    syns.add(hyp[i][1]);
    for (let j = ref.length - 1; j >= 0; j--) {
      if (syns.has(ref[j][1])) {
        matches.push([hyp[i][0], ref[j][0]]);
        hyp.splice(i, 1);
        ref.splice(j, 1);
        break;
      }
    }
  }
  return matches;
}

/**
 * nltk `single_meteor_score(reference, hypothesis)` on pre-tokenised input with nltk's default
 * WordNet (3.0): lowercase, align by exact match, then Porter-stem match (NLTK_EXTENSIONS), then
 * WordNet synonyms of the remaining stems ({@link synonyms}); P = m/|hyp|, R = m/|ref|,
 * Fmean = P·R / (α·P + (1−α)·R), penalty = γ·(chunks/m)^β, score = (1 − penalty)·Fmean;
 * 0 when nothing matches or either side is empty.
 */
export function singleMeteor(
  refTokens: readonly string[],
  hypTokens: readonly string[],
  opts: MeteorOptions = {},
): number {
  const { alpha = 0.9, beta = 3, gamma = 0.5 } = opts;
  const hyp: Enum = hypTokens.map((w, i) => [i, w.toLowerCase()]);
  const ref: Enum = refTokens.map((w, i) => [i, w.toLowerCase()]);
  const translationLength = hyp.length;
  const referenceLength = ref.length;
  const exact = matchEnums(hyp, ref);
  // The stem stage leaves the unmatched words as stems, and the synonym stage looks those up.
  const hypStems: Enum = hyp.map(([i, w]) => [i, porterStem(w)]);
  const refStems: Enum = ref.map(([i, w]) => [i, porterStem(w)]);
  const stemmed = matchEnums(hypStems, refStems);
  const synonym = matchSynonyms(hypStems, refStems);
  // Python's sort is stable; ties on the hypothesis index cannot happen.
  const matches = [...exact, ...stemmed, ...synonym].sort((a, b) => a[0] - b[0]);
  const m = matches.length;
  if (m === 0 || translationLength === 0 || referenceLength === 0) return 0;
  const precision = m / translationLength;
  const recall = m / referenceLength;
  const fmean = (precision * recall) / (alpha * precision + (1 - alpha) * recall);
  const fragFrac = countChunks(matches) / m;
  return (1 - gamma * fragFrac ** beta) * fmean;
}

/**
 * Corpus METEOR as HF evaluate's "meteor": every text goes through {@link wordTokenize}, each
 * prediction scores the max of {@link singleMeteor} over its references (nltk `meteor_score`),
 * and the result is the mean over predictions (0 for an empty corpus): nltk 3.8.1's value with
 * its WordNet 3.0 (tests/eval/meteor_test.ts checks it to 1e-9).
 */
export function meteor(
  preds: readonly string[],
  refs: readonly (readonly string[])[],
  opts: MeteorOptions = {},
): number {
  checkCorpus("meteor", preds, refs);
  if (preds.length === 0) return 0;
  let sum = 0;
  for (let i = 0; i < preds.length; i++) {
    checkRefs("meteor", refs[i]);
    const hyp = wordTokenize(preds[i]);
    let best = -Infinity;
    for (const r of refs[i]) best = Math.max(best, singleMeteor(wordTokenize(r), hyp, opts));
    sum += best;
  }
  return sum / preds.length;
}

// ---------------------------------------------------------------------------------------------
// Token F1 and distinct-n (convai2_eval.py :17-42)

/**
 * convai2_eval.py `f1_scorer`: whitespace tokens (no normalisation), common = multiset
 * intersection, F1 = 2PR/(P+R), 0 when nothing is shared; the max over references.
 */
export function tokenF1(pred: string, refs: readonly string[]): number {
  checkRefs("tokenF1", refs);
  const p = pySplit(pred);
  const predCounts = new Map<string, number>();
  for (const t of p) predCounts.set(t, (predCounts.get(t) ?? 0) + 1);
  let best = -Infinity;
  for (const ref of refs) {
    const g = pySplit(ref);
    const refCounts = new Map<string, number>();
    for (const t of g) refCounts.set(t, (refCounts.get(t) ?? 0) + 1);
    let same = 0;
    for (const [t, c] of predCounts) same += Math.min(c, refCounts.get(t) ?? 0);
    let f1 = 0;
    if (same > 0) {
      const precision = same / p.length;
      const recall = same / g.length;
      f1 = (2 * precision * recall) / (precision + recall);
    }
    best = Math.max(best, f1);
  }
  return best;
}

/**
 * convai2_eval.py `eval_distinct` generalised to order n: each prediction is stripped and split
 * on single spaces (so double spaces yield empty tokens, as in the script), n-grams are pooled
 * over the corpus, and the result is |distinct n-grams| / |n-grams| (0 when there are none,
 * where the script would divide by zero).
 */
export function distinctN(preds: readonly string[], n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`distinctN: n must be >= 1, got ${n}`);
  const seen = new Set<string>();
  let total = 0;
  for (const pred of preds) {
    const toks = pyStrip(pred).split(" ");
    for (let i = 0; i + n <= toks.length; i++) {
      seen.add(toks.slice(i, i + n).join(" "));
      total++;
    }
  }
  return total === 0 ? 0 : seen.size / total;
}

// ---------------------------------------------------------------------------------------------
// The whole ConvAI2 report

/** Scores of {@link scoreConvAI2}, each ×100 as convai2_eval.py writes them. */
export interface ConvAI2Scores {
  /** Number of multi-reference items after grouping. */
  items: number;
  bleu: number;
  /** BLEU's modified 1..4-gram precisions (the script's bleu1..bleu4 columns). */
  bleuPrecisions: number[];
  meteor: number;
  rougeL: number;
  f1: number;
  dist1: number;
  dist2: number;
}

/**
 * The convai2_eval.py pipeline on one results file's records: group, cut predictions, then
 * BLEU, METEOR, ROUGE-L, token F1 and distinct-1/2, all ×100. BERTScore is not included. The
 * paper's Table 2 Average also needs the three BERTScore numbers (docs/reference.md, Scoring).
 */
export function scoreConvAI2(records: readonly DialogueRecord[]): ConvAI2Scores {
  const groups = groupMultiReference(records);
  const preds = groups.map((g) => cutPrediction(g.pred));
  const refs = groups.map((g) => g.gt);
  const bleu = corpusBleu(preds, refs);
  const f1 = preds.length === 0
    ? 0
    : preds.reduce((acc, p, i) => acc + tokenF1(p, refs[i]), 0) / preds.length;
  return {
    items: groups.length,
    bleu: bleu.bleu * 100,
    bleuPrecisions: bleu.precisions.map((p) => p * 100),
    meteor: meteor(preds, refs) * 100,
    rougeL: rougeL(preds, refs) * 100,
    f1: f1 * 100,
    dist1: distinctN(preds, 1) * 100,
    dist2: distinctN(preds, 2) * 100,
  };
}
