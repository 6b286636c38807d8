/**
 * The WordNet 3.0 lookups nltk 3.8.1's METEOR synonym stage makes: `morphy` (exception lists, then
 * the detachment rules) and `synsets(word)` over all four parts of speech, reduced to the lemma
 * names METEOR can use. The tables are data_file/wordnet/wordnet.json, which
 * tests/fixtures/make_wordnet.py writes from Debian's wordnet-base (WordNet 3.0) through nltk's own
 * WordNetCorpusReader; docs/metrics.md gives their provenance. Imported as JSON, so this module
 * runs in the browser too.
 * @module
 */

import WORDNET from "../../data_file/wordnet/wordnet.json" with { type: "json" };

/** A WordNet part of speech as nltk names it: noun, verb, adjective, adverb. */
export type WordNetPos = "n" | "v" | "a" | "r";

/** nltk's `POS_LIST`: the order `synsets(word)` goes through the parts of speech. */
export const POS_LIST: readonly WordNetPos[] = ["n", "v", "a", "r"];

/** nltk `WordNetCorpusReader.MORPHOLOGICAL_SUBSTITUTIONS`, in its order. */
const SUBSTITUTIONS: Record<WordNetPos, readonly [string, string][]> = {
  n: [
    ["s", ""],
    ["ses", "s"],
    ["ves", "f"],
    ["xes", "x"],
    ["zes", "z"],
    ["ches", "ch"],
    ["shes", "sh"],
    ["men", "man"],
    ["ies", "y"],
  ],
  v: [
    ["s", ""],
    ["ies", "y"],
    ["es", "e"],
    ["es", ""],
    ["ed", "e"],
    ["ed", ""],
    ["ing", "e"],
    ["ing", ""],
  ],
  a: [["er", ""], ["est", ""], ["er", "e"], ["est", "e"]],
  r: [],
};

interface Tables {
  /** Per POS: lemma → its synset numbers (base 36, comma-separated; "" for none kept). */
  index: Record<WordNetPos, Map<string, string>>;
  /** Per POS: exception form → its base forms found in the index. */
  exc: Record<WordNetPos, Map<string, string[]>>;
  /** Synset number → its lemma names without "_" or capitals. */
  names: string[][];
}

let tables: Tables | undefined;

/** Splits "key rest" lines into a Map (Maps, not objects, so "constructor" is a plain word). */
function lines(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split("\n")) {
    const sp = line.indexOf(" ");
    if (sp < 0) out.set(line, "");
    else out.set(line.slice(0, sp), line.slice(sp + 1));
  }
  return out;
}

/**
 * Reads an index table: sorted lines, each one base-36 digit (the number of leading characters
 * shared with the previous lemma), the rest of the lemma, then " ids" where it has synsets.
 */
function frontCoded(text: string): Map<string, string> {
  const out = new Map<string, string>();
  let prev = "";
  for (const line of text.split("\n")) {
    const sp = line.indexOf(" ");
    const head = sp < 0 ? line : line.slice(0, sp);
    const lemma = prev.slice(0, parseInt(head[0], 36)) + head.slice(1);
    out.set(lemma, sp < 0 ? "" : line.slice(sp + 1));
    prev = lemma;
  }
  return out;
}

function load(): Tables {
  if (tables) return tables;
  const index = {} as Record<WordNetPos, Map<string, string>>;
  const exc = {} as Record<WordNetPos, Map<string, string[]>>;
  for (const pos of POS_LIST) {
    index[pos] = frontCoded(WORDNET.index[pos]);
    exc[pos] = new Map(
      [...lines(WORDNET.exc[pos])].map(([k, v]) => [k, v === "" ? [] : v.split(" ")]),
    );
  }
  const names = WORDNET.synsets.split("\n").map((l) => l.split(" "));
  tables = { index, exc, names };
  return tables;
}

/**
 * nltk 3.8.1 `WordNetCorpusReader._morphy(form, pos)`: the base forms of `form` that WordNet has
 * for `pos`, in nltk's order. If `form` is in the exception list, only it and its listed forms are
 * tried; otherwise the form and one round of detachment rules, then further rounds until some
 * form exists. `form` is used as given (nltk's `synsets` lowercases it first).
 */
export function morphy(form: string, pos: WordNetPos): string[] {
  const { index, exc } = load();
  const known = index[pos];
  const substitutions = SUBSTITUTIONS[pos];
  const applyRules = (forms: readonly string[]) => {
    const out: string[] = [];
    for (const f of forms) {
      for (const [old, repl] of substitutions) {
        // The suffixes are ASCII, so UTF-16 slicing cuts where Python's code-point slicing does.
        if (f.endsWith(old)) out.push(f.slice(0, f.length - old.length) + repl);
      }
    }
    return out;
  };
  const filterForms = (forms: readonly string[]) => {
    const result = new Set<string>();
    for (const f of forms) if (known.has(f)) result.add(f);
    return [...result];
  };
  const exceptions = exc[pos].get(form);
  if (exceptions) return filterForms([form, ...exceptions]);
  let forms = applyRules([form]);
  const results = filterForms([form, ...forms]);
  if (results.length) return results;
  while (forms.length) {
    forms = applyRules(forms);
    const r = filterForms(forms);
    if (r.length) return r;
  }
  return [];
}

/**
 * The lemma names METEOR's synonym stage takes from nltk 3.8.1's `wordnet.synsets(word)` (all
 * parts of speech, through {@link morphy}): the union of the names without "_" of every synset
 * found, less the names with a capital letter, which can never equal the lowercased reference
 * stems they are compared with. Sorted. `word` is lowercased first, as nltk does (JavaScript's
 * `toLowerCase`; METEOR passes words that are lowercase already).
 */
export function synonyms(word: string): string[] {
  const { index, names } = load();
  const lemma = word.toLowerCase();
  const out = new Set<string>();
  for (const pos of POS_LIST) {
    for (const form of morphy(lemma, pos)) {
      const ids = index[pos].get(form);
      if (!ids) continue;
      for (const id of ids.split(",")) for (const n of names[parseInt(id, 36)]) out.add(n);
    }
  }
  return [...out].sort();
}
