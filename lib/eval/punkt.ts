/**
 * Punkt sentence splitting exactly as nltk 3.8.1's `sent_tokenize(text)` does it with the trained
 * English model (the splitter inside `word_tokenize`, and so inside METEOR): Kiss & Strunk's
 * two-pass algorithm (`PunktSentenceTokenizer`), driven by the model's four tables in
 * data_file/punkt/english.json (abbreviation types, collocations, frequent sentence starters and
 * orthographic contexts), which tests/fixtures/make_punkt.py extracts from nltk_data's pickle.
 *
 * All of it is plain code and JSON, so it runs in the browser as well as in Deno.
 * @module
 */

import ENGLISH from "../../data_file/punkt/english.json" with { type: "json" };
import {
  PY_NS,
  PY_S,
  PY_W_NOT_DIGIT,
  pyFirst,
  pyIsLower,
  pyIsUpper,
  pyLen,
  pyRstrip,
  pyStrip,
} from "./pystr.ts";

// ---------------------------------------------------------------------------------------------
// The model

/** A Punkt model's tables (nltk `PunktParameters`). */
export interface PunktParameters {
  /** Abbreviation types: lowercase, without the final period ("mr", "u.s", "ok"). */
  abbrevTypes: ReadonlySet<string>;
  /** Collocations (type before the period, next type), keyed by {@link collocationKey}. */
  collocations: ReadonlySet<string>;
  /** Lowercase types that often start a sentence ("the", "however"). */
  sentStarters: ReadonlySet<string>;
  /** Orthographic-context bits per lowercase type (see {@link ORTHO}); absent means 0. */
  orthoContext: ReadonlyMap<string, number>;
}

/**
 * nltk's orthographic-context flags: where (beginning, middle, unknown position of a sentence)
 * and in which case a type was seen while training.
 */
export const ORTHO = {
  BEG_UC: 1 << 1,
  MID_UC: 1 << 2,
  UNK_UC: 1 << 3,
  BEG_LC: 1 << 4,
  MID_LC: 1 << 5,
  UNK_LC: 1 << 6,
  /** Seen uppercase anywhere. */
  UC: (1 << 1) + (1 << 2) + (1 << 3),
  /** Seen lowercase anywhere. */
  LC: (1 << 4) + (1 << 5) + (1 << 6),
} as const;

/** The set key of a collocation: types are whitespace-free except "." runs, never a NUL. */
export function collocationKey(type1: string, type2: string): string {
  return `${type1}\u0000${type2}`;
}

/** The JSON form of a Punkt model written by tests/fixtures/make_punkt.py. */
export interface PunktJson {
  abbrev_types: string[];
  collocations: string[][];
  sent_starters: string[];
  /** Flag value (decimal) → the space-joined types that have exactly those flags. */
  ortho_context: Record<string, string>;
}

/** Builds {@link PunktParameters} from the JSON form of a model. */
export function punktParameters(json: PunktJson): PunktParameters {
  const orthoContext = new Map<string, number>();
  for (const [flags, types] of Object.entries(json.ortho_context)) {
    for (const t of types.split(" ")) orthoContext.set(t, Number(flags));
  }
  return {
    abbrevTypes: new Set(json.abbrev_types),
    collocations: new Set(json.collocations.map(([a, b]) => collocationKey(a, b))),
    sentStarters: new Set(json.sent_starters),
    orthoContext,
  };
}

/**
 * nltk 3.8.1's English Punkt model (nltk_data punkt, PY3/english.pickle): 156 abbreviation types,
 * 37 collocations, 39 sentence starters and the orthographic contexts of 20,366 types.
 */
export const PUNKT_ENGLISH: PunktParameters = punktParameters(ENGLISH);

// ---------------------------------------------------------------------------------------------
// PunktLanguageVars' regular expressions (Python `\s`/`\S` are Python's whitespace set)

const WORD_START = `[^("\`{\\[:;&#*@)}\\]\\-,]`;
/** Characters that cannot appear within words: `)";}]*:@'({[` and the end marks other than ".". */
const NON_WORD = `[)";}\\]*:@'({\\[?!]`;
const MULTI_CHAR = `(?:-{2,}|\\.{2,}|(?:\\.${PY_S}){2,}\\.)`;
/**
 * `_word_tokenize_fmt`: a multi-character punctuation run, or a word up to whitespace, the end,
 * a non-word character, a multi-character run or a word-final comma, or else one character.
 * Python's `$` also matches before a final "\n"; Punkt tokenizes line by line, so there is none.
 */
const WORD_RE = new RegExp(
  `${MULTI_CHAR}|(?=${WORD_START})${PY_NS}+?(?=${PY_S}|$|${NON_WORD}|${MULTI_CHAR}|` +
    `,(?=$|${PY_S}|${NON_WORD}|${MULTI_CHAR}))|${PY_NS}`,
  "gu",
);
/** `_period_context_fmt`: an end mark followed by punctuation or by whitespace and a token. */
const PERIOD_CONTEXT_RE = new RegExp(
  `[.?!](?=(?<after>${NON_WORD}|${PY_S}+(?<next>${PY_NS}+)))`,
  "gu",
);
/**
 * `re_boundary_realignment` (MULTILINE): closing quotes/brackets right after a break. Its
 * MULTILINE `$` before a "\n" can never decide a match, since `\s+` is tried first and takes it.
 */
const REALIGN_RE = new RegExp(`^["')\\]}]+?(?:${PY_S}+|(?=--)|$)`, "u");

// PunktToken's regexes.
const NUMERIC_RE = new RegExp(`^-?[.,]?\\p{Nd}[\\p{Nd},.-]*\\.?$`, "u");
const INITIAL_RE = new RegExp(`^${PY_W_NOT_DIGIT}\\.$`, "u");
const ELLIPSIS_RE = /^\.\.+$/;

/** `string.whitespace`, which `_get_last_whitespace_index` uses (not Python's `\s`). */
const ASCII_WS = " \t\n\r\v\f";

// ---------------------------------------------------------------------------------------------
// Tokens and their annotation

interface PunktToken {
  tok: string;
  /** Lowercased, or "##number##" for a number. */
  type: string;
  periodFinal: boolean;
  sentbreak: boolean;
  abbr: boolean;
  ellipsis: boolean;
}

function makeToken(tok: string): PunktToken {
  const lower = tok.toLowerCase();
  return {
    tok,
    // `_RE_NUMERIC.sub("##number##", ...)` with ^...$ replaces the whole type or nothing.
    type: NUMERIC_RE.test(lower) ? "##number##" : lower,
    periodFinal: tok.endsWith("."),
    sentbreak: false,
    abbr: false,
    ellipsis: false,
  };
}

function typeNoPeriod(t: PunktToken): string {
  return pyLen(t.type) > 1 && t.type.endsWith(".") ? t.type.slice(0, -1) : t.type;
}

function typeNoSentperiod(t: PunktToken): string {
  return t.sentbreak ? typeNoPeriod(t) : t.type;
}

function firstUpper(t: PunktToken): boolean {
  return pyIsUpper(pyFirst(t.tok));
}

function firstLower(t: PunktToken): boolean {
  return pyIsLower(pyFirst(t.tok));
}

/** `_tokenize_words`: Punkt's word tokens, line by line, skipping blank lines. */
function tokenizeWords(text: string): PunktToken[] {
  const out: PunktToken[] = [];
  for (const line of text.split("\n")) {
    if (pyStrip(line) === "") continue;
    for (const m of line.matchAll(WORD_RE)) out.push(makeToken(m[0]));
  }
  return out;
}

/** `_first_pass_annotation`: decisions from the token's own type. */
function firstPass(t: PunktToken, p: PunktParameters): void {
  const tok = t.tok;
  if (tok === "." || tok === "?" || tok === "!") t.sentbreak = true;
  else if (ELLIPSIS_RE.test(tok)) t.ellipsis = true;
  else if (t.periodFinal && !tok.endsWith("..")) {
    const w = tok.slice(0, -1).toLowerCase();
    const parts = w.split("-");
    if (p.abbrevTypes.has(w) || p.abbrevTypes.has(parts[parts.length - 1])) t.abbr = true;
    else t.sentbreak = true;
  }
}

/** `_ortho_heuristic`: is `t` the first token of a sentence? true, false or "unknown". */
function orthoHeuristic(t: PunktToken, p: PunktParameters): boolean | "unknown" {
  if (t.tok.length === 1 && ";:,.!?".includes(t.tok)) return false;
  const ctx = p.orthoContext.get(typeNoSentperiod(t)) ?? 0;
  if (firstUpper(t) && (ctx & ORTHO.LC) && !(ctx & ORTHO.MID_UC)) return true;
  if (firstLower(t) && ((ctx & ORTHO.UC) || !(ctx & ORTHO.BEG_LC))) return false;
  return "unknown";
}

/**
 * `_second_pass_annotation`: revises a period-final token `t1` from the token after it (which
 * has had only its first pass, as in nltk's lazy pairwise iteration).
 */
function secondPass(t1: PunktToken, t2: PunktToken, p: PunktParameters): void {
  if (!t1.periodFinal) return;
  const typ = typeNoPeriod(t1);
  const nextTyp = typeNoSentperiod(t2);
  const initial = INITIAL_RE.test(t1.tok);
  if (p.collocations.has(collocationKey(typ, nextTyp))) {
    t1.sentbreak = false;
    t1.abbr = true;
    return;
  }
  if ((t1.abbr || t1.ellipsis) && !initial) {
    // An abbreviation or ellipsis ends the sentence when the next word looks like a starter.
    if (orthoHeuristic(t2, p) === true) {
      t1.sentbreak = true;
      return;
    }
    if (firstUpper(t2) && p.sentStarters.has(nextTyp)) {
      t1.sentbreak = true;
      return;
    }
  }
  if (initial || typ === "##number##") {
    const starter = orthoHeuristic(t2, p);
    if (starter === false) {
      t1.sentbreak = false;
      t1.abbr = true;
      return;
    }
    if (
      starter === "unknown" && initial && firstUpper(t2) &&
      !((p.orthoContext.get(nextTyp) ?? 0) & ORTHO.LC)
    ) {
      t1.sentbreak = false;
      t1.abbr = true;
    }
  }
}

/** `text_contains_sentbreak`: a break on any token of the context but its last. */
function containsSentbreak(text: string, p: PunktParameters): boolean {
  const toks = tokenizeWords(text);
  for (const t of toks) firstPass(t, p);
  for (let i = 0; i + 1 < toks.length; i++) {
    secondPass(toks[i], toks[i + 1], p);
    if (toks[i].sentbreak) return true;
  }
  return false;
}

/** `_get_last_whitespace_index`: the last `string.whitespace` character's index, 0 if none. */
function lastWhitespaceIndex(text: string): number {
  for (let i = text.length - 1; i >= 0; i--) if (ASCII_WS.includes(text[i])) return i;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Sentence splitting

/**
 * nltk 3.8.1's `sent_tokenize(text)` (`PunktSentenceTokenizer.tokenize` with boundary
 * realignment) with the given model, {@link PUNKT_ENGLISH} by default. Every ".", "?" or "!"
 * followed by punctuation or by whitespace and a token is a candidate; it ends a sentence unless
 * the model's rules say otherwise (known abbreviation, ellipsis, initial, number, collocation;
 * the orthographic heuristic and sentence starters can turn an abbreviation back into a break).
 * Positions are UTF-16 indices throughout, which is safe because every one of them comes from a
 * regex match or an ASCII character on the same string.
 */
export function sentTokenize(text: string, params: PunktParameters = PUNKT_ENGLISH): string[] {
  // _match_potential_end_contexts: candidate breaks with the word before and the token after;
  // a candidate whose word overlaps the previous one's is dropped ("acting!!!" keeps the last).
  const candidates: { end: number; nextStart: number | null; context: string }[] = [];
  let prevSlice: [number, number] = [0, 0];
  let prev: RegExpExecArray | null = null;
  const emit = (m: RegExpExecArray, slice: [number, number]) => {
    const after = m.groups!.after;
    const next = m.groups!.next;
    candidates.push({
      end: m.index + 1,
      nextStart: next !== undefined ? m.index + 1 + after.length - next.length : null,
      context: text.slice(slice[0], slice[1]) + m[0] + after,
    });
  };
  for (const m of text.matchAll(PERIOD_CONTEXT_RE) as IterableIterator<RegExpExecArray>) {
    const before = text.slice(prevSlice[1], m.index);
    let start = lastWhitespaceIndex(before);
    // nltk's quirk, kept: whitespace at index 0 of `before` counts as none.
    start = start ? start + prevSlice[1] + 1 : prevSlice[0];
    const wordSlice: [number, number] = [start, m.index];
    if (prev !== null && prevSlice[1] <= wordSlice[0]) emit(prev, prevSlice);
    prev = m;
    prevSlice = wordSlice;
  }
  if (prev !== null) emit(prev, prevSlice);

  // _slices_from_text
  const slices: [number, number][] = [];
  let lastBreak = 0;
  for (const c of candidates) {
    if (containsSentbreak(c.context, params)) {
      slices.push([lastBreak, c.end]);
      lastBreak = c.nextStart ?? c.end;
    }
  }
  slices.push([lastBreak, pyRstrip(text).length]);

  // _realign_boundaries: closing quotes/brackets after the break belong to the sentence before.
  const out: string[] = [];
  let realign = 0;
  for (let i = 0; i < slices.length; i++) {
    const s1: [number, number] = [slices[i][0] + realign, slices[i][1]];
    const piece = text.slice(s1[0], s1[1]);
    if (i + 1 === slices.length) {
      if (piece) out.push(piece);
      continue;
    }
    const s2 = slices[i + 1];
    const m = REALIGN_RE.exec(text.slice(s2[0], s2[1]));
    if (m !== null) {
      out.push(text.slice(s1[0], s2[0] + pyRstrip(m[0]).length));
      realign = m[0].length;
    } else {
      realign = 0;
      if (piece) out.push(piece);
    }
  }
  return out;
}
