/**
 * ConvAI2 metrics against hand-computed values. Expected tokenisations and stems come from
 * nltk 3.8 / sacrebleu's 13a rules (cross-checked offline, bit-exact, against nltk 3.8 and
 * transcriptions of evaluate's bleu/rouge code on ~6,500 strings and ~8,700 words).
 */
import { assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import {
  corpusBleu,
  cutPrediction,
  distinctN,
  groupMultiReference,
  meteor,
  porterStem,
  rougeL,
  rougeLScore,
  rougeTokenize,
  scoreConvAI2,
  sentTokenize,
  singleMeteor,
  tokenF1,
  tokenize13a,
  treebankTokenize,
  wordTokenize,
} from "../../lib/eval/metrics.ts";

const close = (a: number, b: number, label = "") => assertAlmostEquals(a, b, 1e-12, label);

Deno.test("cutPrediction cuts at TARGET:, then Q:, then R:, and strips", () => {
  assertEquals(cutPrediction("  hello there Q: what R: x"), "hello there");
  assertEquals(cutPrediction("TARGET: foo"), "");
  // "TARGET:" is cut first, leaving "a R: b ", which is then cut at "R:".
  assertEquals(cutPrediction("a R: b TARGET: c"), "a");
  assertEquals(cutPrediction("\n plain reply \t"), "plain reply");
});

Deno.test("groupMultiReference merges only consecutive equal contexts, keeps the first pred", () => {
  const g = groupMultiReference([
    { context: "c1", pred: "p1", gt: "g1" },
    { context: "c1", pred: "p2", gt: "g2" },
    { context: "c2", pred: "p3", gt: "g3" },
    { context: "c1", pred: "p4", gt: "g4" },
  ]);
  assertEquals(g, [
    { context: "c1", pred: "p1", gt: ["g1", "g2"] },
    { context: "c2", pred: "p3", gt: ["g3"] },
    { context: "c1", pred: "p4", gt: ["g4"] },
  ]);
  assertEquals(groupMultiReference([]), []);
});

Deno.test("tokenize13a splits punctuation like sacrebleu 13a", () => {
  assertEquals(tokenize13a("Hello, world!"), ["Hello", ",", "world", "!"]);
  // Period/comma stay inside numbers; "$" is split; a final period is split.
  assertEquals(tokenize13a("It costs $3.50, ok."), ["It", "costs", "$", "3.50", ",", "ok", "."]);
  // Hyphens split only after a digit; apostrophes never.
  assertEquals(tokenize13a("well-known 1-2 don't"), ["well-known", "1", "-", "2", "don't"]);
  // HTML entities are unescaped, then split as symbols.
  assertEquals(tokenize13a("&amp; &lt;x&gt; &quot;q&quot;"), ["&", "<", "x", ">", '"', "q", '"']);
  // "-\n" joins, "\n" is a space, "<skipped>" vanishes.
  assertEquals(tokenize13a("a\nb-\nc <skipped>"), ["a", "bc"]);
  assertEquals(tokenize13a("   "), []);
});

Deno.test("corpusBleu: identical is 1, disjoint 0", () => {
  const same = corpusBleu(["the cat sat on the mat"], [["the cat sat on the mat"]]);
  close(same.bleu, 1);
  assertEquals(same.precisions, [1, 1, 1, 1]);
  close(same.brevityPenalty, 1);
  const none = corpusBleu(["a b c d"], [["e f g h"]]);
  assertEquals(none.bleu, 0);
  assertEquals(none.precisions, [0, 0, 0, 0]);
});

Deno.test("corpusBleu: clipping, smoothing and lengths (hand-computed)", () => {
  // 7 × "the" against a reference with 2 "the": p1 = 2/7, no bigram matches → BLEU 0.
  const r = corpusBleu(["the the the the the the the"], [["the cat is on the mat"]]);
  assertEquals(r.precisions, [2 / 7, 0, 0, 0]);
  assertEquals(r.bleu, 0);
  assertEquals([r.translationLength, r.referenceLength], [7, 6]);
  close(r.lengthRatio, 7 / 6);
  assertEquals(r.brevityPenalty, 1);
  // Smoothed: p = (m+1)/(n+1) = 3/8, 1/7, 1/6, 1/5 → BLEU = (3/1680)^(1/4).
  const s = corpusBleu(["the the the the the the the"], [["the cat is on the mat"]], {
    smooth: true,
  });
  assertEquals(s.precisions, [3 / 8, 1 / 7, 1 / 6, 1 / 5]);
  close(s.bleu, (3 / 1680) ** 0.25);
});

Deno.test("corpusBleu: brevity penalty exp(1 - r/c)", () => {
  // c = 6, r = 8, all n-grams match: BLEU = BP = exp(1 - 8/6).
  const r = corpusBleu(["the cat sat on the mat"], [["the cat sat on the mat today ok"]]);
  assertEquals(r.precisions, [1, 1, 1, 1]);
  close(r.lengthRatio, 0.75);
  close(r.brevityPenalty, Math.exp(-1 / 3));
  close(r.bleu, Math.exp(-1 / 3));
  // No prediction tokens at all: Python divides by zero; we report 0.
  const empty = corpusBleu([""], [["a b"]]);
  assertEquals([empty.bleu, empty.brevityPenalty], [0, 0]);
});

Deno.test("corpusBleu: multi-reference uses max counts and the SHORTEST reference", () => {
  // The 9-token prediction is a prefix of the 10-token reference, so every n-gram matches.
  // nmt/HF take r = min(3, 10) = 3 → ratio 3 → BP 1 → BLEU 1 (sacrebleu's closest length, 10,
  // would give exp(1 - 10/9)).
  const r = corpusBleu(["a b c d e f g h i"], [["a b c", "a b c d e f g h i j"]]);
  assertEquals(r.referenceLength, 3);
  assertEquals(r.brevityPenalty, 1);
  close(r.bleu, 1);
  // Clipping by the max over references: "the" ×3 vs max(1, 2) → 2/3; "the the" ×2 vs 1 → 1/2;
  // BLEU-2 = sqrt(2/3 · 1/2), c = 3 > r = 2.
  const c = corpusBleu(["the the the"], [["the cat", "the the dog"]], { maxOrder: 2 });
  assertEquals(c.precisions, [2 / 3, 1 / 2]);
  close(c.bleu, Math.sqrt(1 / 3));
});

Deno.test("corpusBleu pools counts over the corpus", () => {
  // Sentence 1 matches 2/2 unigrams and 1/1 bigram, sentence 2 0/3 and 0/2:
  // p1 = 2/5, p2 = 1/3, c = 5 > r = 4, BLEU-2 = sqrt(2/15).
  const r = corpusBleu(["a b", "c d e"], [["a b"], ["x y"]], { maxOrder: 2 });
  assertEquals(r.precisions, [2 / 5, 1 / 3]);
  close(r.bleu, Math.sqrt(2 / 15));
  assertThrows(() => corpusBleu(["a"], []), RangeError);
  assertThrows(() => corpusBleu(["a"], [[]]), RangeError);
});

Deno.test("rougeL: tokenizer, LCS F-measure, multi-reference max, mean", () => {
  assertEquals(rougeTokenize("Hello, WORLD!! it's 3.5"), ["hello", "world", "it", "s", "3", "5"]);
  assertEquals(rougeTokenize("running dogs", true), ["run", "dog"]);
  close(rougeL(["Hello, WORLD!!"], [["hello world"]]), 1);
  assertEquals(rougeL(["a b"], [["c d"]]), 0);
  // LCS("the cat was under the bed", pred) = 6: P = 6/7, R = 1, F = 12/13.
  const s = rougeLScore("the cat was found under the bed", "the cat was under the bed");
  close(s.precision, 6 / 7);
  close(s.recall, 1);
  close(s.fmeasure, 12 / 13);
  // ref 1: LCS 1 → P 1/4, R 1/2, F 1/3; ref 2: LCS 3 → F 3/4; max 3/4; mean with 0 → 3/8.
  close(rougeL(["a b c d", "z"], [["a x", "a b c e"], ["y"]]), 3 / 8);
  assertEquals(rougeL([""], [["a"]]), 0);
});

Deno.test("porterStem matches nltk's PorterStemmer", () => {
  const nltk: Record<string, string> = {
    caresses: "caress",
    ponies: "poni",
    ties: "tie",
    cats: "cat",
    feed: "feed",
    agreed: "agre",
    plastered: "plaster",
    motoring: "motor",
    hopping: "hop",
    falling: "fall",
    happy: "happi",
    relational: "relat",
    conditional: "condit",
    generalization: "gener",
    hopefulness: "hope",
    electrical: "electr",
    dying: "die",
    skies: "sky",
    news: "news",
    proceed: "proceed",
    analogousli: "analog",
    sensibiliti: "sensibl",
    adjustable: "adjust",
    replacement: "replac",
    controll: "control",
    Running: "run",
    at: "at",
  };
  for (const [w, s] of Object.entries(nltk)) assertEquals(porterStem(w), s, w);
  // The original algorithm lacks nltk's irregular forms and short-word rules.
  const original: Record<string, string> = {
    ties: "ti",
    dying: "dy",
    skies: "ski",
    news: "new",
    proceed: "proce",
  };
  for (const [w, s] of Object.entries(original)) {
    assertEquals(porterStem(w, "ORIGINAL_ALGORITHM"), s, w);
  }
});

Deno.test("word tokenisation follows nltk word_tokenize", () => {
  assertEquals(treebankTokenize(`I can't believe it's "true"!`), [
    "I",
    "ca",
    "n't",
    "believe",
    "it",
    "'s",
    "``",
    "true",
    "''",
    "!",
  ]);
  assertEquals(
    treebankTokenize("She said: (maybe) 3,000 people... gonna come -- right?"),
    ["She", "said", ":", "(", "maybe", ")", "3,000", "people", "...", "gon", "na", "come", "--"]
      .concat(["right", "?"]),
  );
  // Treebank alone splits only the final period; Punkt splits the sentences first.
  assertEquals(treebankTokenize("i love dogs. do you?"), ["i", "love", "dogs.", "do", "you", "?"]);
  assertEquals(sentTokenize("i love dogs. do you? yes!"), ["i love dogs.", "do you?", "yes!"]);
  assertEquals(sentTokenize("Mr. Smith went home. He slept."), [
    "Mr. Smith went home.",
    "He slept.",
  ]);
  assertEquals(sentTokenize("(Sent1.) Sent2."), ["(Sent1.)", "Sent2."]);
  assertEquals(sentTokenize("I saw J. Bach play. Then 3. items."), [
    "I saw J. Bach play.",
    "Then 3. items.",
  ]);
  assertEquals(wordTokenize("i love dogs. do you?"), ["i", "love", "dogs", ".", "do", "you", "?"]);
  assertEquals(wordTokenize(""), []);
});

Deno.test("METEOR: hand-computed alignments, chunks and penalty", () => {
  // Identical 6 tokens: P = R = 1, Fmean = 1, 1 chunk: penalty 0.5·(1/6)³ → 1 - 1/432.
  // (METEOR never reaches exactly 1: the fragmentation penalty is > 0 for any match.)
  const id = "the cat sat on the mat".split(" ");
  close(singleMeteor(id, id), 1 - 1 / 432);
  assertEquals(singleMeteor(["a", "b"], ["c", "d"]), 0);
  assertEquals(singleMeteor([], ["a"]), 0);
  // "the", "sat" match exactly, "cats"→"cat" by stem: m = 3, P = 1, R = 3/4,
  // Fmean = 0.75 / (0.9 + 0.075) = 10/13, 1 chunk → (1 - 0.5/27)·10/13 = 530/702.
  close(singleMeteor(["the", "cat", "sat", "down"], ["the", "cats", "sat"]), 530 / 702);
  // Swapped words: 2 chunks of 1 → frag 1 → penalty 0.5 → 0.5.
  close(singleMeteor(["a", "b"], ["b", "a"]), 0.5);
  // Corpus: lowercased, max over references, mean over predictions: (0.9375 + 0) / 2.
  close(meteor(["The CAT", "x"], [["dog", "the cat"], ["y"]]), (1 - 0.5 / 8) / 2);
});

Deno.test("tokenF1 and distinctN follow convai2_eval.py", () => {
  close(tokenF1("a b c", ["a b d"]), 2 / 3);
  // ref 2: 3 shared, P = 1, R = 3/4, F = 6/7.
  close(tokenF1("a b c", ["x", "a b c d"]), 6 / 7);
  // Multiset overlap: "a a a" vs "a" shares 1 → P 1/3, R 1 → F 1/2.
  close(tokenF1("a a a", ["a"]), 0.5);
  close(tokenF1("same words", ["same words"]), 1);
  assertEquals(tokenF1("a", ["b"]), 0);
  assertEquals(tokenF1("", ["b"]), 0);
  // Unigrams a b a b c: 3 distinct / 5; bigrams (a b)(b a)(b c): 3 / 3.
  close(distinctN(["a b a", "b c"], 1), 0.6);
  close(distinctN(["a b a", "b c"], 2), 1);
  // split(' ') keeps the empty token between two spaces: ["a", "", "b"].
  close(distinctN(["a  b", "a"], 1), 3 / 4);
  assertEquals(distinctN(["a"], 2), 0);
  assertThrows(() => distinctN(["a"], 0), RangeError);
});

Deno.test("scoreConvAI2 runs the whole pipeline ×100", () => {
  const records = [
    { context: "c1", pred: "i like dogs . Q: more", gt: "i like dogs ." },
    { context: "c1", pred: "ignored", gt: "i love cats ." },
    { context: "c2", pred: "hello there R: x", gt: "hi there" },
  ];
  const s = scoreConvAI2(records);
  assertEquals(s.items, 2);
  const preds = ["i like dogs .", "hello there"];
  const refs = [["i like dogs .", "i love cats ."], ["hi there"]];
  close(s.bleu, corpusBleu(preds, refs).bleu * 100);
  close(s.rougeL, rougeL(preds, refs) * 100);
  close(s.meteor, meteor(preds, refs) * 100);
  close(s.f1, ((1 + 0.5) / 2) * 100);
  close(s.dist1, 100);
  close(s.dist2, 100);
});
