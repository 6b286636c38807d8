/**
 * METEOR, word_tokenize (Punkt + Treebank), the Porter stemmer and WordNet's morphy/synsets against
 * real nltk 3.8.1 output: the fixtures in tests/fixtures/meteor/ were written by
 * tests/fixtures/make_meteor.py and make_wordnet.py with nltk 3.8.1, nltk_data's English Punkt
 * model and WordNet 3.0 (see docs/metrics.md). No Python runs here.
 */
import { assert, assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import { predictionLines } from "../../lib/eval/scoring.ts";
import {
  meteor,
  type PorterMode,
  porterStem,
  sentTokenize,
  wordTokenize,
} from "../../lib/eval/metrics.ts";
import { PUNKT_ENGLISH } from "../../lib/eval/punkt.ts";
import { morphy, POS_LIST, synonyms, type WordNetPos } from "../../lib/eval/wordnet.ts";
import TOKENIZE from "../fixtures/meteor/tokenize.json" with { type: "json" };
import PORTER from "../fixtures/meteor/porter.json" with { type: "json" };
import METEOR from "../fixtures/meteor/meteor.json" with { type: "json" };
import WORDNET from "../fixtures/meteor/wordnet.json" with { type: "json" };

interface MeteorRecord {
  pred: string;
  refs: string[];
  score: number;
  synonyms: boolean;
}

interface WordNetCase {
  word: string;
  morphy: Record<WordNetPos, string[]>;
  names: string[];
}

const RECORDS: MeteorRecord[] = METEOR.records;

Deno.test("the fixtures hold the hard cases they are meant to", () => {
  // A regenerated fixture that lost its variety would make the comparisons below weak.
  const texts = (TOKENIZE as [string, string][]).map(([t]) => t);
  assert(texts.length >= 2500);
  const count = (re: RegExp) => texts.filter((t) => re.test(t)).length;
  assert(count(/\p{Extended_Pictographic}/u) > 200, "emoji");
  assert(count(/[\u{10000}-\u{10ffff}]/u) > 200, "non-BMP");
  assert(count(/\.\.\./) > 200, "ellipses");
  assert(count(/(^|\s)[A-Za-z]\.\s/) > 200, "initials");
  assert(count(/\d\.(\s|$)/) > 200, "numbers before a period");
  const abbrev = (t: string) =>
    t.split(/\s+/).some((w) =>
      w.endsWith(".") && PUNKT_ENGLISH.abbrevTypes.has(w.slice(0, -1).toLowerCase())
    );
  assert(texts.filter(abbrev).length > 300, "the model's abbreviations");
  assert(count(/[.?!]["')\]}]/) > 200, "closing quotes after a break");
  assert(RECORDS.length >= 300);
  assert(RECORDS.filter((r) => r.refs.length >= 3).length > 50, "several references");
  assert(RECORDS.filter((r) => r.pred.trim() === "").length >= 5, "empty predictions");
  assert(RECORDS.filter((r) => /\p{Extended_Pictographic}/u.test(r.pred)).length > 20, "emoji");
  assert(RECORDS.filter((r) => r.synonyms).length >= 40, "items the synonym stage changes");
  const cases = WORDNET as WordNetCase[];
  assert(cases.length >= 3000);
  assert(cases.filter((c) => c.names.length > 0).length > 2000, "words with synonyms");
  for (const pos of POS_LIST) {
    const changed = cases.filter((c) => c.morphy[pos].some((f) => f !== c.word));
    // adv.exc has 7 entries, and adverbs have no detachment rules.
    assert(changed.length >= (pos === "r" ? 7 : 100), `${pos}: words morphy changes`);
  }
});

Deno.test("the English Punkt model is nltk_data's, table for table", () => {
  assertEquals(PUNKT_ENGLISH.abbrevTypes.size, 156);
  assertEquals(PUNKT_ENGLISH.collocations.size, 37);
  assertEquals(PUNKT_ENGLISH.sentStarters.size, 39);
  assertEquals(PUNKT_ENGLISH.orthoContext.size, 20366);
  // Entries the 36-word stand-in list lacked, and ones it had that the model does not.
  for (const a of ["ok", "u.s.a", "ill", "co", "wed", "fri", "c", "k"]) {
    assert(PUNKT_ENGLISH.abbrevTypes.has(a), a);
  }
  for (const a of ["e.g", "i.e", "apr", "jun", "jul", "mar", "gov", "capt", "mt"]) {
    assert(!PUNKT_ENGLISH.abbrevTypes.has(a), a);
  }
});

Deno.test("Punkt decisions the model makes (nltk 3.8.1's sent_tokenize)", () => {
  // "ok" is a trained abbreviation, so "ok." does not end a sentence; the orthographic heuristic
  // still breaks after an abbreviation when the next word is a capitalised frequent starter.
  assertEquals(sentTokenize("ok. i like it."), ["ok. i like it."]);
  assertEquals(sentTokenize("The U.S. economy grew. However, it slowed."), [
    "The U.S. economy grew.",
    "However, it slowed.",
  ]);
  // Collocation ("##number##", "international"): a number's period before "International"
  // is no break, while before "National" (no collocation) it is.
  assertEquals(sentTokenize("It was 5. International markets fell."), [
    "It was 5. International markets fell.",
  ]);
  assertEquals(sentTokenize("It was 5. National markets fell."), [
    "It was 5.",
    "National markets fell.",
  ]);
  assertEquals(wordTokenize("ok. i like it."), ["ok.", "i", "like", "it", "."]);
});

Deno.test("wordTokenize is token-identical to nltk 3.8.1's word_tokenize", () => {
  const bad: { text: string; nltk: string; ours: string }[] = [];
  for (const [text, tokens] of TOKENIZE as [string, string][]) {
    // The generator joined nltk's tokens with " ", which no token contains.
    const ours = wordTokenize(text).join(" ");
    if (ours !== tokens) bad.push({ text, nltk: tokens, ours });
  }
  assertEquals(bad.slice(0, 5), [], `${bad.length} of ${TOKENIZE.length} texts differ`);
});

Deno.test("porterStem equals nltk's PorterStemmer, non-BMP characters included", () => {
  assertEquals(porterStem("a😀ing"), "a😀e");
  for (const [mode, pairs] of Object.entries(PORTER) as [PorterMode, [string, string][]][]) {
    const bad = pairs.filter(([w, s]) => porterStem(w, mode) !== s)
      .map(([w, s]) => ({ word: w, nltk: s, ours: porterStem(w, mode) }));
    assertEquals(bad.slice(0, 5), [], `${mode}: ${bad.length} of ${pairs.length} words differ`);
  }
  assert(PORTER.NLTK_EXTENSIONS.filter(([w]) => /[\u{10000}-\u{10ffff}]/u.test(w)).length > 500);
});

Deno.test("morphy and synsets() equal nltk 3.8.1's WordNet reader on 5,000 words", () => {
  const bad: unknown[] = [];
  for (const c of WORDNET as WordNetCase[]) {
    for (const pos of POS_LIST) {
      const ours = morphy(c.word.toLowerCase(), pos);
      if (JSON.stringify(ours) !== JSON.stringify(c.morphy[pos])) {
        bad.push({ word: c.word, pos, nltk: c.morphy[pos], ours });
      }
    }
    const ours = synonyms(c.word);
    if (JSON.stringify(ours) !== JSON.stringify(c.names)) {
      bad.push({ word: c.word, nltk: c.names, ours });
    }
  }
  assertEquals(bad.slice(0, 5), [], `${bad.length} differences`);
  // Exceptions, detachment rules and words that are Object.prototype keys.
  assertEquals(morphy("geese", "n"), ["goose"]);
  assertEquals(morphy("ran", "v"), ["run"]);
  assert(synonyms("car").includes("automobile"));
  assert(synonyms("big").includes("large"));
  assertEquals(synonyms("constructor"), ["builder", "constructor"]);
  assertEquals(synonyms("toString"), []);
  assertEquals(synonyms("__proto__"), []);
});

Deno.test("METEOR per item and corpus equal nltk 3.8.1's meteor_score within 1e-9", () => {
  const bad: (MeteorRecord & { ours: number })[] = [];
  for (const r of RECORDS) {
    const ours = meteor([r.pred], [r.refs]);
    if (!(Math.abs(ours - r.score) <= 1e-9)) bad.push({ ...r, ours });
  }
  assertEquals(bad.slice(0, 5), [], `${bad.length} of ${RECORDS.length} items differ`);
  const corpus = meteor(RECORDS.map((r) => r.pred), RECORDS.map((r) => r.refs));
  assertAlmostEquals(corpus, METEOR.corpus, 1e-9);
  // The example: nltk keeps "ok." as one token, so it scores 71.82, not 89.29.
  assertEquals(RECORDS[0].pred, "ok. i like it.");
  assertAlmostEquals(RECORDS[0].score, 0.7182, 5e-5);
  // Synonyms nltk finds ("car" ~ "auto"; "ran" ~ "run" through morphy's exceptions) and one it
  // does not: it compares Porter stems, and "large" stems to "larg".
  const byPred = (p: string) => RECORDS.find((r) => r.pred === p)!;
  assert(byPred("my car is red").synonyms);
  assert(byPred("i ran home").synonyms);
  assert(!byPred("i have a big dog").synonyms);
});

Deno.test("the predictions reader keeps lines whose strings contain }{ or {{", () => {
  // The reference splits such a line in two at the first "}{" or "{{" before json.loads, so both
  // halves fail to parse and the record silently drops out of its scores; we parse whole lines.
  const lines = [
    '{"context": "c1", "pred": "a }{ b", "gt": "a b"}',
    '{"context": "c2", "pred": "{{x}}", "gt": "x"}',
    '{"context": "c3", "pred": "plain", "gt": "plain"}',
  ];
  const got = [...predictionLines(lines.join("\n"), "p.jsonl")].map(({ i, r }) => [i, r.pred]);
  assertEquals(got, [[0, "a }{ b"], [1, "{{x}}"], [2, "plain"]]);
  // Two objects run together on one line are not valid JSON: an error naming the line, not a
  // guess at where to cut.
  assertThrows(
    () => [...predictionLines('{"pred": "a", "gt": "b"}{"pred": "c", "gt": "d"}', "p.jsonl")],
    Error,
    "p.jsonl: line 1",
  );
});
