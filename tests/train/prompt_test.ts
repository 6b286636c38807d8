import { assertEquals } from "@std/assert";
import {
  ALPACA_TEMPLATE,
  CONTEXT_TARGET_TEMPLATE,
  contextTargetTrainingText,
  formatTemplate,
  pyStrip,
  templateTypeFor,
  testPrompt,
  trainingContext,
  trainingTarget,
} from "../../lib/train/prompt.ts";

const bytes = (s: string) => [...new TextEncoder().encode(s)];

Deno.test("template 4 is byte-exact, with two spaces after 'request.'", () => {
  const expected = "Below is an instruction that describes a task. Write a response that " +
    "appropriately completes the request.\x20\x20\n\n### Instruction:\n{cinput}\n\n" +
    "### Response:\n{target}";
  assertEquals(bytes(ALPACA_TEMPLATE), bytes(expected));
  assertEquals(ALPACA_TEMPLATE.indexOf("request.  \n\n"), 97);
  assertEquals(ALPACA_TEMPLATE.length, 158);
  assertEquals(CONTEXT_TARGET_TEMPLATE, "CONTEXT: {cinput} TARGET: {target}");
});

Deno.test("training context ends in '### Response:\\n' and has no BOS", () => {
  const ctx = trainingContext(4, "Q?");
  assertEquals(
    ctx,
    "Below is an instruction that describes a task. Write a response that appropriately " +
      "completes the request.  \n\n### Instruction:\nQ?\n\n### Response:\n",
  );
  assertEquals(trainingContext(0, "hi"), "CONTEXT: hi TARGET: ");
});

Deno.test("training target is output.strip() without EOS", () => {
  assertEquals(trainingTarget("  the correct answer is true \n"), "the correct answer is true");
  assertEquals(trainingTarget("\x1c x \x1f"), "x"); // Python's isspace set, not JS trim's
  assertEquals(pyStrip("\ufeffx"), "\ufeffx");
  assertEquals(pyStrip(" \t\n "), "");
  assertEquals(pyStrip(""), "");
});

Deno.test("test prompt = BOS string + template with empty target", () => {
  assertEquals(testPrompt(4, "Q?", "<s>"), "<s>" + trainingContext(4, "Q?"));
  assertEquals(
    testPrompt(0, "hello", "<|begin_of_text|>"),
    "<|begin_of_text|>CONTEXT: hello TARGET: ",
  );
  assertEquals(testPrompt(4, "Q?", null), trainingContext(4, "Q?"));
});

Deno.test("template 0 training text: BOS + CONTEXT/TARGET + EOS, target stripped", () => {
  assertEquals(
    contextTargetTrainingText("what is 2+2?", " 4 \n", "<s>", "</s>"),
    "<s>CONTEXT: what is 2+2? TARGET: 4</s>",
  );
  assertEquals(contextTargetTrainingText("a", "b", null, "</s>"), "CONTEXT: a TARGET: b</s>");
});

Deno.test("formatting is literal like str.format (no $-patterns, no recursion)", () => {
  assertEquals(formatTemplate(0, "$& {target} $1", "t$$"), "CONTEXT: $& {target} $1 TARGET: t$$");
  assertEquals(formatTemplate(7, "a", "b"), "ab");
});

Deno.test("template type per dataset", () => {
  for (const d of ["boolq", "piqa", "siqa", "hellas", "winog", "arce", "arcc", "obqa"]) {
    assertEquals(templateTypeFor(d), 4);
  }
  assertEquals(templateTypeFor("common_170k"), 4);
  assertEquals(templateTypeFor("common_all"), 4);
  assertEquals(templateTypeFor("gsm8k"), 4);
  assertEquals(templateTypeFor("meta_math"), 0);
  assertEquals(templateTypeFor("convai2"), 0);
  assertEquals(templateTypeFor("mmlu"), 7);
});
