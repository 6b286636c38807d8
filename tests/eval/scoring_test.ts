import { assertEquals, assertThrows } from "@std/assert";
import {
  cleanPrediction,
  COMMONSENSE_TASKS,
  extractAnswer,
  extractGsm8kNumber,
  gsm8kCorrect,
  gsm8kGold,
  isCorrect,
  pyFloat,
  pyRound,
} from "../../lib/eval/scoring.ts";

Deno.test("commonsense: first keyword wins, case-sensitive, '' when none", () => {
  assertEquals(extractAnswer("boolq", "the correct answer is true"), "true");
  assertEquals(extractAnswer("boolq", "false, not true"), "false");
  assertEquals(extractAnswer("boolq", "The correct answer is True"), "");
  assertEquals(extractAnswer("boolq", ""), "");
  assertEquals(extractAnswer("piqa", "solution2 then solution1"), "solution2");
  assertEquals(extractAnswer("piqa", "solution3"), "");
  for (const t of ["siqa", "arcc", "arce", "obqa"]) {
    assertEquals(extractAnswer(t, "the correct answer is answer5"), "answer5");
    assertEquals(extractAnswer(t, "answer 2"), "");
  }
  assertEquals(extractAnswer("hellas", "ending4 ending1"), "ending4");
  assertEquals(extractAnswer("hellas", "ending5"), "");
  assertEquals(extractAnswer("winog", "the correct answer is option2"), "option2");
  assertEquals(extractAnswer("winog", "Option1"), "");
  assertThrows(() => extractAnswer("gsm8k", "x"), Error, "no answer pattern");
  assertEquals(COMMONSENSE_TASKS.length, 8);
});

Deno.test("commonsense: keywords match inside words (the reference's behaviour)", () => {
  assertEquals(extractAnswer("boolq", "that is untrue"), "true");
  assertEquals(extractAnswer("boolq", "falsely"), "false");
  assertEquals(extractAnswer("siqa", "answer12"), "answer1");
  assertEquals(extractAnswer("winog", "xoption2x"), "option2");
});

Deno.test("isCorrect compares extracted keywords; no keyword is wrong", () => {
  assertEquals(
    isCorrect("boolq", "the correct answer is true", "the correct answer is true"),
    true,
  );
  assertEquals(isCorrect("boolq", "untrue", "the correct answer is true"), true);
  assertEquals(isCorrect("boolq", "false", "the correct answer is true"), false);
  assertEquals(isCorrect("boolq", "no idea", "nothing"), false);
  assertEquals(isCorrect("arce", "answer3 or answer2", "the correct answer is answer3"), true);
  assertEquals(isCorrect("piqa", "", { output: "the correct answer is solution1" }), false);
  // Mixed sets (common_170k): the keyword family comes from the gold output.
  assertEquals(isCorrect("common_170k", "ending2", "the correct answer is ending2"), true);
  assertEquals(isCorrect("common_170k", "answer2", "the correct answer is ending2"), false);
  assertEquals(isCorrect("common_170k", "option1", "the correct answer is option1"), true);
  assertEquals(isCorrect("common_170k", "anything", "no keyword"), false);
});

Deno.test("cleanPrediction: pads removed, then cut at EOS, 'Q:' and 'R:'", () => {
  const llama3 = { padToken: "<|begin_of_text|>", eosToken: "<|end_of_text|>" };
  assertEquals(
    cleanPrediction("<|begin_of_text|>the answer is true<|end_of_text|>junk", llama3),
    "the answer is true",
  );
  const llama2 = { padToken: "<unk>", eosToken: "</s>" };
  assertEquals(cleanPrediction("a<unk>b</s>c</s>", llama2), "ab");
  assertEquals(cleanPrediction(" hi Q: more R: x", llama2), " hi ");
  assertEquals(cleanPrediction("one R: two Q: three", llama2), "one ");
  assertEquals(cleanPrediction("", llama2), "");
  // The pad string is removed before EOS is searched, so a pad inside EOS text cannot hide it.
  assertEquals(cleanPrediction("x</<unk>s>y", llama2), "x");
});

Deno.test("gsm8k: number after the LAST 'The answer is: '", () => {
  assertEquals(extractGsm8kNumber("The answer is: 3. The answer is: 42"), 42);
  assertEquals(extractGsm8kNumber("so 7 apples. The answer is: 18 apples"), 18);
  assertEquals(extractGsm8kNumber("The answer is 18"), null); // no colon
  assertEquals(extractGsm8kNumber("The answer is: none"), null);
  assertEquals(extractGsm8kNumber(""), null);
});

Deno.test("gsm8k: commas, negatives, decimals, rounding half to even", () => {
  assertEquals(extractGsm8kNumber("The answer is: 1,234"), 1234);
  // Only one separator fits the pattern, so "1,234,567" reads as "1,234" (reference behaviour).
  assertEquals(extractGsm8kNumber("The answer is: 1,234,567"), 1234);
  assertEquals(extractGsm8kNumber("The answer is: -5"), -5);
  assertEquals(extractGsm8kNumber("The answer is: +7"), 7);
  assertEquals(extractGsm8kNumber("The answer is: 2.5"), 2);
  assertEquals(extractGsm8kNumber("The answer is: 3.5"), 4);
  assertEquals(extractGsm8kNumber("The answer is: -2.5"), -2);
  assertEquals(extractGsm8kNumber("The answer is: .5"), 0);
  assertEquals(extractGsm8kNumber("The answer is: $12.75 per hour"), 13);
});

Deno.test("gsm8k: fractions; a zero denominator yields the numerator", () => {
  assertEquals(extractGsm8kNumber("The answer is: 3/4"), 1);
  assertEquals(extractGsm8kNumber("The answer is: 7/2"), 4);
  assertEquals(extractGsm8kNumber("The answer is: -9/2"), -4);
  assertEquals(extractGsm8kNumber("The answer is: 5/0"), 5);
  assertEquals(extractGsm8kNumber("The answer is: /4"), null); // empty numerator
  assertEquals(extractGsm8kNumber("The answer is: " + "9".repeat(400)), null); // overflows
});

Deno.test("gsm8k: gold answer as string, number or one-element list", () => {
  assertEquals(gsm8kGold("18"), 18);
  assertEquals(gsm8kGold(" 18.0 "), 18);
  assertEquals(gsm8kGold(18), 18);
  assertEquals(gsm8kGold(["18"]), 18);
  assertEquals(gsm8kGold([18, 19]), null);
  assertEquals(gsm8kGold("1,000"), null); // float() rejects commas
  assertEquals(gsm8kGold(null), null);
  assertEquals(gsm8kCorrect("The answer is: 18", ["18"]), true);
  assertEquals(gsm8kCorrect("The answer is: 18", "18.5"), false);
  assertEquals(gsm8kCorrect("The answer is: 1,000", 1000), true);
  assertEquals(gsm8kCorrect("18", "18"), false);
  assertEquals(isCorrect("gsm8k", "The answer is: 18", { output: "...", answer: "18" }), true);
  assertThrows(() => isCorrect("gsm8k", "The answer is: 18", "18"), Error, "answer");
});

Deno.test("pyFloat and pyRound follow Python", () => {
  assertEquals(pyFloat("1_000"), 1000);
  assertEquals(pyFloat("1e3"), 1000);
  assertEquals(pyFloat("5."), 5);
  assertEquals(pyFloat("-inf"), -Infinity);
  assertEquals(pyFloat("0x10"), null);
  assertEquals(pyFloat(""), null);
  assertEquals(pyFloat("1__0"), null);
  assertEquals([0.5, 1.5, 2.5, -0.5, -1.5, 2.4, 2.6].map(pyRound), [0, 2, 2, 0, -2, 2, 3]);
});

interface Gsm8kUnicode {
  digits: string;
  values: number[];
  predictions: { pred: string; number: number | null }[];
  answers: { answer: string; value: number }[];
}

const UNICODE: Gsm8kUnicode = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/gsm8k_unicode.json", import.meta.url)),
);

Deno.test("gsm8k: every Unicode decimal digit reads as Python reads it", () => {
  const digits = [...UNICODE.digits];
  assertEquals(digits.length, UNICODE.values.length);
  digits.forEach((d, i) => assertEquals([d, pyFloat(d)], [d, UNICODE.values[i]]));
  // Digits outside 0-9 were what the old rule missed.
  assertEquals(extractGsm8kNumber("The answer is: ５７６"), 576);
  assertEquals(gsm8kCorrect("The answer is: ５７６", "576"), true);
  assertEquals(gsm8kGold("٥٧٦"), 576);
});

Deno.test("gsm8k: predictions and answers with non-ASCII digits match Python's re and float()", () => {
  for (const p of UNICODE.predictions) {
    assertEquals([p.pred, extractGsm8kNumber(p.pred)], [p.pred, p.number]);
  }
  for (const a of UNICODE.answers) {
    assertEquals([a.answer, gsm8kGold(a.answer)], [a.answer, a.value]);
  }
});
