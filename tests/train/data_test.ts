import { assert, assertEquals, assertNotEquals, assertThrows } from "@std/assert";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import {
  alpacaTrainExample,
  BatchLoader,
  contextTargetTrainExample,
  DATASET_FOLDERS,
  fieldsFor,
  IGNORE_INDEX,
  isBoolqType,
  makeBatches,
  maxNewTokens,
  maxTokenLength,
  packBatch,
  parseRecords,
  splitPath,
  testPrompts,
  type TrainExample,
  trainExamples,
} from "../../lib/train/data.ts";
import { HiraError } from "../../lib/engine/errors.ts";
import { extractAnswer } from "../../lib/eval/scoring.ts";
import { testPrompt, trainingContext } from "../../lib/train/prompt.ts";
import { Rng } from "../../lib/engine/rand.ts";
import {
  factKey,
  generateSynthetic,
  STYLE_CHOICES,
  STYLE_FOLDERS,
  type StyleName,
  SYNTHETIC_SIZES,
} from "../../scripts/synthetic.ts";
import type { Tokenizer } from "../../lib/model/tokenizer.ts";
import { loadTokenizer } from "../../lib/io/tokenizer_deno.ts";

const DATA_DIR = new URL("../../data_file/", import.meta.url).pathname;

let tinyPromise: Promise<Tokenizer> | null = null;
function tiny(): Promise<Tokenizer> {
  tinyPromise ??= loadTokenizer(DATA_DIR + "tiny");
  return tinyPromise;
}

// ---------------------------------------------------------------------------------------------
// Dataset map and splits

Deno.test("dataset map and split files follow the reference", () => {
  assertEquals(DATASET_FOLDERS, {
    common_170k: "llm_adapt/commonsense_170k",
    boolq: "llm_adapt/boolq",
    piqa: "llm_adapt/piqa",
    siqa: "llm_adapt/social_i_qa",
    hellas: "llm_adapt/hellaswag",
    winog: "llm_adapt/winogrande",
    arce: "llm_adapt/ARC-Easy",
    arcc: "llm_adapt/ARC-Challenge",
    obqa: "llm_adapt/openbookqa",
    gsm8k: "llm_adapt/gsm8k",
    convai2: "convai2",
    meta_math: "meta_math",
    common_all: "llm_adapt/boolq",
  });
  assertEquals(splitPath("boolq", "validation"), "data_file/llm_adapt/boolq/test.json");
  assertEquals(splitPath("boolq", "train", "d/"), "d/llm_adapt/boolq/train.json");
  assertEquals(
    splitPath("common_170k", "validation"),
    "data_file/llm_adapt/commonsense_170k/validation.json",
  );
  assertEquals(splitPath("convai2", "validation"), "data_file/convai2/validation.json");
  assertEquals(splitPath("meta_math", "validation"), "data_file/meta_math/test.json");
  assertEquals(splitPath("common_all", "test"), "data_file/llm_adapt/boolq/test.json");
  assertEquals(isBoolqType("gsm8k"), true);
  assertEquals(isBoolqType("common_170k"), false);
  assertEquals([maxTokenLength("common_170k"), maxNewTokens("common_170k")], [256, 16]);
  assertEquals([maxTokenLength("convai2"), maxNewTokens("convai2")], [512, 32]);
  assertEquals([maxTokenLength("meta_math"), maxNewTokens("gsm8k")], [155, 200]);
  assertEquals(fieldsFor("meta_math"), "metamath");
  assertEquals(fieldsFor("gsm8k"), "alpaca");
});

// ---------------------------------------------------------------------------------------------
// Records

Deno.test("parseRecords keeps instruction/output/answer and ignores other fields", () => {
  const text = JSON.stringify([
    { instruction: "q1", input: "", output: "o1", answer: "true" },
    { instruction: "q2", output: "o2", extra: 5 },
    { instruction: "q3", output: "o3", answer: ["18"] },
  ]);
  assertEquals(parseRecords(text, "f.json"), [
    { instruction: "q1", output: "o1", answer: "true" },
    { instruction: "q2", output: "o2" },
    { instruction: "q3", output: "o3", answer: ["18"] },
  ]);
  const math = JSON.stringify([{ sQuestion: "2+2?", lSolutions: "4", answer: 4 }]);
  assertEquals(parseRecords(math, "m.json", { fields: "metamath" }), [
    { instruction: "2+2?", output: "4", answer: 4 },
  ]);
});

Deno.test("parseRecords errors are one-line HiraErrors naming the file", () => {
  const bad: [string, string][] = [
    ["{oops", "f.json: not valid JSON"],
    ['{"a": 1}', "f.json: expected a JSON array of records, got an object"],
    ["[]", "f.json: the dataset is empty"],
    [
      '[{"instruction": "a", "output": "b"}, null]',
      "f.json: record 1: expected an object, got null",
    ],
    ["[[1]]", "f.json: record 0: expected an object, got an array"],
    ['["x"]', "f.json: record 0: expected an object, got a string"],
    ['[{"output": "b"}]', "f.json: record 0: missing field 'instruction'"],
    ['[{"instruction": "a"}]', "f.json: record 0: missing field 'output'"],
    [
      '[{"instruction": "a", "output": 3}]',
      "f.json: record 0: field 'output' must be a string, got a number",
    ],
  ];
  for (const [text, msg] of bad) {
    const e = assertThrows(() => parseRecords(text, "f.json"), HiraError);
    assert(e.message.startsWith(msg), `${e.message} !~ ${msg}`);
    assert(!e.message.includes("\n"));
  }
  assertThrows(
    () =>
      parseRecords('[{"sQuestion": "a", "lSolutions": ["x"]}]', "m.json", { fields: "metamath" }),
    HiraError,
    "field 'lSolutions' must be a string, got an array",
  );
});

// ---------------------------------------------------------------------------------------------
// Training layouts

Deno.test("template 4 layout: context (no BOS) ‖ stripped target (no EOS), mask on target", async () => {
  const tok = await tiny();
  const record = { instruction: "is the zorp blue?", output: "  the correct answer is true\n" };
  const ex = alpacaTrainExample(record, tok);
  const ctx = tok.encode(trainingContext(4, record.instruction));
  const tgt = tok.encode("the correct answer is true");
  assertEquals(ex.tokens, [...ctx, ...tgt]);
  assertEquals(ex.lossMask, [...ctx.map(() => 0), ...tgt.map(() => 1)]);
  assertNotEquals(ex.tokens[0], tok.bosId);
  assertNotEquals(ex.tokens.at(-1), tok.eosId);
  assertEquals(
    tok.decode(ex.tokens),
    trainingContext(4, record.instruction) + "the correct answer is true",
  );
});

Deno.test("template 4 layout: right truncation keeps the first 256 / 16 tokens", async () => {
  const tok = await tiny();
  const long = Array.from({ length: 300 }, (_, i) => `w${i}`).join(" ");
  const ex = alpacaTrainExample({ instruction: long, output: long }, tok);
  assertEquals(ex.tokens.length, 256 + 16);
  const ctx = tok.encode(trainingContext(4, long));
  assertEquals(ex.tokens.slice(0, 256), ctx.slice(0, 256));
  assertEquals(ex.tokens.slice(256), tok.encode(long).slice(0, 16));
  assertEquals(ex.lossMask.indexOf(1), 256);
  const small = alpacaTrainExample({ instruction: "a", output: "b c d" }, tok, {
    maxLength: 5,
    maxTarget: 2,
  });
  assertEquals(small.tokens.length, 7);
  assertEquals(small.lossMask, [0, 0, 0, 0, 0, 1, 1]);
});

Deno.test("template 0 layout: BOS … EOS, loss on target and EOS only", async () => {
  const tok = await tiny();
  const ex = contextTargetTrainExample(
    { instruction: "what do you eat?", output: " i eat fish \n" },
    tok,
    { maxLength: 155 },
  );
  assertEquals(ex.tokens[0], tok.bosId);
  assertEquals(ex.tokens.at(-1), tok.eosId);
  assertEquals(tok.decode(ex.tokens), "<s>CONTEXT: what do you eat? TARGET: i eat fish</s>");
  const counted = ex.tokens.filter((_, t) => ex.lossMask[t] === 1);
  assertEquals(tok.decode(counted), " i eat fish</s>");
  // The masked part ends exactly with "TARGET:" (the reference's bug would count all of it).
  const masked = ex.tokens.filter((_, t) => ex.lossMask[t] === 0);
  assertEquals(tok.decode(masked), "<s>CONTEXT: what do you eat? TARGET:");
  // Right truncation drops the tail, EOS included.
  const cut = contextTargetTrainExample({ instruction: "a b", output: "c d e" }, tok, {
    maxLength: 8,
  });
  const full = tok.encode("<s>CONTEXT: a b TARGET: c d e</s>");
  assert(full.length > 8);
  assertEquals(cut.tokens, full.slice(0, 8));
  assertEquals(cut.tokens.includes(tok.eosId), false);
});

Deno.test("a target token equal to the pad id is not counted (the reference's -100)", async () => {
  const tok = await tiny();
  const ex = alpacaTrainExample({ instruction: "q", output: "a<pad>b" }, tok);
  const tail = ex.tokens.slice(-3);
  assertEquals(tail[1], tok.padId);
  assertEquals(ex.lossMask.slice(-3), [1, 0, 1]);
  const t0 = contextTargetTrainExample({ instruction: "q", output: "a<pad>b" }, tok, {
    maxLength: 64,
  });
  assertEquals(t0.lossMask.slice(-4), [1, 0, 1, 1]);
});

Deno.test("trainExamples picks the layout by dataset and drops target-less records", async () => {
  const tok = await tiny();
  const records = [
    { instruction: "q", output: "the correct answer is true" },
    { instruction: "q", output: "   " },
  ];
  const common = trainExamples(records, tok, "common_170k");
  assertEquals(common.length, 1);
  assertEquals(common[0], alpacaTrainExample(records[0], tok));
  const math = trainExamples(records, tok, "meta_math");
  // An empty target still has its EOS to learn, so template 0 keeps both.
  assertEquals(math.length, 2);
  assertEquals(math[0], contextTargetTrainExample(records[0], tok, { maxLength: 155 }));
});

// ---------------------------------------------------------------------------------------------
// Packing and batching

function randomExamples(n: number, seed: number): TrainExample[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const len = 1 + rng.int(9);
    return {
      tokens: Array.from({ length: len }, () => rng.int(50)),
      lossMask: Array.from({ length: len }, () => rng.int(2)),
    };
  });
}

Deno.test("packBatch: next-token targets within each sequence, -100 elsewhere", () => {
  const examples = randomExamples(7, 1);
  examples.push({ tokens: [5], lossMask: [1] }); // a 1-token sequence predicts nothing
  const b = packBatch(examples);
  let off = 0;
  let counted = 0;
  assertEquals(b.cuSeqlens[0], 0);
  examples.forEach((ex, i) => {
    for (let t = 0; t < ex.tokens.length; t++) {
      assertEquals(b.tokens[off + t], ex.tokens[t]);
      const want = t + 1 < ex.tokens.length && ex.lossMask[t + 1] === 1
        ? ex.tokens[t + 1]
        : IGNORE_INDEX;
      assertEquals(b.targets[off + t], want);
      if (want !== IGNORE_INDEX) counted++;
    }
    off += ex.tokens.length;
    assertEquals(b.cuSeqlens[i + 1], off);
  });
  assertEquals(b.tokens.length, off);
  assertEquals(b.numCounted, counted);
  assertThrows(() => packBatch([{ tokens: [1, 2], lossMask: [1] }]), Error, "differ in length");
});

Deno.test("packBatch counts the golden fixture's 23 targets", async () => {
  const path = new URL("../fixtures/golden/tokens.json", import.meta.url);
  const fixture: { tokens: number[][]; loss_mask: number[][] } = JSON.parse(
    await Deno.readTextFile(path),
  );
  const b = packBatch(
    fixture.tokens.map((tokens, i) => ({ tokens, lossMask: fixture.loss_mask[i] })),
  );
  assertEquals(b.numCounted, 23);
  assertEquals([...b.cuSeqlens], [0, 12, 37, 44]);
});

Deno.test("makeBatches: one shuffled epoch, every example once, last batch smaller", () => {
  const examples = randomExamples(23, 2).map((ex, i) => ({
    ...ex,
    tokens: [1000 + i, ...ex.tokens],
    lossMask: [0, ...ex.lossMask],
  }));
  const batches = makeBatches(examples, 5, new Rng(7));
  assertEquals(batches.map((b) => b.cuSeqlens.length - 1), [5, 5, 5, 5, 3]);
  const firsts = batches.flatMap((b) => [...b.cuSeqlens.slice(0, -1)].map((s) => b.tokens[s]));
  assertEquals([...firsts].sort((a, b) => a - b), examples.map((_, i) => 1000 + i));
  assertNotEquals(firsts, examples.map((_, i) => 1000 + i));
  const again = makeBatches(examples, 5, new Rng(7));
  assertEquals(again, batches);
  assertNotEquals(makeBatches(examples, 5, new Rng(8)), batches);
});

Deno.test("BatchLoader: resumes the exact stream from a saved state", () => {
  const examples = randomExamples(10, 3);
  const loader = new BatchLoader(examples, 4, 42);
  assertEquals(loader.batchesPerEpoch, 3);
  const stream = Array.from({ length: 10 }, () => loader.next());
  // Epoch 0 covers every example once, in a different order than epoch 1.
  const sizes = stream.map((b) => b.cuSeqlens.length - 1);
  assertEquals(sizes, [4, 4, 2, 4, 4, 2, 4, 4, 2, 4]);
  assertNotEquals(stream.slice(0, 3), stream.slice(3, 6));
  for (const stop of [0, 1, 3, 5, 7]) {
    const first = new BatchLoader(examples, 4, 42);
    for (let i = 0; i < stop; i++) first.next();
    const state = JSON.parse(JSON.stringify(first.state));
    assertEquals(state.epoch, stop === 0 ? 0 : Math.floor((stop - 1) / 3));
    const resumed = new BatchLoader(examples, 4, state);
    for (let i = stop; i < 10; i++) {
      assertEquals(resumed.next(), stream[i], `batch ${i} after ${stop}`);
    }
  }
  assertThrows(() => new BatchLoader([], 4, 1), Error, "no examples");
  assertThrows(() => new BatchLoader(examples, 0, 1), Error, "bad batch size");
});

Deno.test("testPrompts: BOS + template, truncated on the right", async () => {
  const tok = await tiny();
  const [p] = testPrompts([{ instruction: "is the zorp blue?", output: "x" }], tok);
  assertEquals(p.text, "<s>" + trainingContext(4, "is the zorp blue?"));
  assertEquals(p.ids[0], tok.bosId);
  assertEquals(p.ids, tok.encode(p.text));
  const [cut] = testPrompts([{ instruction: "q", output: "x" }], tok, { maxLength: 3 });
  assertEquals(cut.ids, p.ids.slice(0, 3));
  const [t0] = testPrompts([{ instruction: "hi", output: "x" }], tok, { template: 0 });
  assertEquals(t0.text, "<s>CONTEXT: hi TARGET: ");
});

// ---------------------------------------------------------------------------------------------
// The synthetic world

const synthetic = generateSynthetic();

Deno.test("synthetic: the shipped data_file/ is exactly what the generator produces", async () => {
  let total = 0;
  for (const [rel, text] of synthetic.files) {
    const onDisk = await Deno.readTextFile(DATA_DIR + rel);
    assert(onDisk === text, `${rel} differs: run deno run -A scripts/make_synthetic.ts`);
    total += new TextEncoder().encode(text).length;
  }
  assert(total < 2 * 1024 * 1024, `synthetic data is ${total} bytes`);
  const again = generateSynthetic();
  assertEquals([...again.files.keys()], [...synthetic.files.keys()]);
});

/** Styles whose choices are canonical blocks of values (the answer follows from the fact). */
const CANONICAL = new Set(["piqa", "siqa", "hellas", "arce", "obqa"]);

Deno.test("synthetic: sizes, formats and balanced answers", () => {
  const styles = Object.keys(STYLE_FOLDERS) as StyleName[];
  const prefix: Record<StyleName, string> = {
    boolq: "Please answer the following question with true or false, question: ",
    piqa: "Please choose the correct solution to the question: ",
    siqa: "Please choose the correct answer to the question: ",
    hellas: "Please choose the correct ending to complete the given sentence: ",
    winog: "Please choose the correct answer to fill in the blank to complete the given sentence: ",
    arce: "Please choose the correct answer to the question: ",
    arcc: "Please choose the correct answer to the question: ",
    obqa: "Please choose the correct answer to the question: ",
  };
  const format: Record<StyleName, string> = {
    boolq: "true/false",
    piqa: "solution1/solution2",
    siqa: "answer1/answer2/answer3",
    hellas: "ending1/ending2/ending3/ending4",
    winog: "option1/option2",
    arce: "answer1/answer2/answer3/answer4",
    arcc: "answer1/answer2/answer3/answer4",
    obqa: "answer1/answer2/answer3/answer4",
  };
  const { train, validation, tests } = synthetic.splits;
  assertEquals(train.length, 8 * SYNTHETIC_SIZES.trainPerStyle);
  assertEquals(validation.length, 120);
  assert(synthetic.pretrain.length >= 2000 && synthetic.pretrain.length <= 12000);
  for (const style of styles) {
    const sets = [
      tests[style],
      train.filter((r) => r.style === style),
      validation.filter((r) => r.style === style),
    ];
    assertEquals(sets[0].length, SYNTHETIC_SIZES.test[style]);
    assertEquals(sets[2].length, SYNTHETIC_SIZES.validationPerStyle);
    for (const set of sets) {
      const counts = new Map<string, number>();
      for (const { record } of set) {
        assert(record.instruction.startsWith(prefix[style]), record.instruction);
        assert(record.instruction.endsWith(`\n\nAnswer format: ${format[style]}`));
        assertEquals(record.output, `the correct answer is ${record.answer}`);
        assertEquals(record.input, "");
        assertEquals(extractAnswer(style, record.output), record.answer);
        assert(format[style].split("/").includes(record.answer));
        counts.set(record.answer, (counts.get(record.answer) ?? 0) + 1);
      }
      // Every choice is sometimes the answer. Styles with shuffled choices are balanced exactly
      // (±1); canonical-choice styles follow the facts' values, so only roughly (no position
      // above 60% of a set, which keeps always-the-same-answer far from a pass).
      assertEquals(counts.size, STYLE_CHOICES[style]);
      const c = [...counts.values()];
      if (CANONICAL.has(style)) assert(Math.max(...c) <= 0.6 * set.length, `${style}: ${c}`);
      else assert(Math.max(...c) - Math.min(...c) <= 1, `${style}: ${c}`);
    }
  }
});

Deno.test("synthetic: held-out facts never asked in train, but stated in pre-training", () => {
  const { world, splits, pretrain } = synthetic;
  const trainKeys = new Set(splits.train.map((r) => r.key));
  const held = [...splits.validation, ...Object.values(splits.tests).flat()];
  for (const r of held) {
    assert(world.heldOut.has(r.key), r.key);
    assert(!trainKeys.has(r.key), r.key);
  }
  for (const k of trainKeys) assert(!world.heldOut.has(k));
  // Every instruction is unique across all splits.
  const all = [...splits.train, ...held].map((r) => r.record.instruction);
  assertEquals(new Set(all).size, all.length);
  // Every fact (held out or not) is stated in the corpus.
  const corpus = new Set(pretrain);
  for (const e of world.entities) {
    assert(corpus.has(`the ${e.name} is ${e.color}.`));
    assert(corpus.has(`the ${e.name} is ${e.size}.`));
    assert(corpus.has(`the ${e.name} lives in the ${e.home}.`));
    assert(corpus.has(`the ${e.name} eats ${e.food}.`));
    assert(corpus.has(`the friend of the ${e.name} is the ${e.friend}.`));
  }
  assertEquals(world.heldOut.size, 5 * 16);
  for (const attr of ["color", "size", "home", "food", "friend"] as const) {
    const n = world.entities.filter((e) => world.heldOut.has(factKey(e.name, attr))).length;
    assertEquals(n, 16, attr);
  }
});

Deno.test("synthetic: the shipped files parse and the commonsense test equals validation", async () => {
  const root = DATA_DIR + "llm_adapt/";
  const val = await Deno.readTextFile(root + "commonsense_170k/validation.json");
  assertEquals(await Deno.readTextFile(root + "commonsense_170k/test.json"), val);
  assertEquals(parseRecords(val, "validation.json").length, 120);
  for (const folder of Object.values(STYLE_FOLDERS)) {
    const recs = parseRecords(await Deno.readTextFile(`${root}${folder}/test.json`), folder);
    assert(recs.length >= 40 && recs.length <= 60);
  }
  const train = parseRecords(await Deno.readTextFile(root + "commonsense_170k/train.json"), "t");
  const tok = await tiny();
  const examples = trainExamples(train.slice(0, 200), tok, "common_170k");
  assertEquals(examples.length, 200);
  for (const ex of examples) {
    assert(ex.tokens.length < 200);
    assert(!ex.tokens.includes(tok.unkId!));
  }
});

Deno.test("synthetic: the word-level vocabulary covers every text without byte fallback", () => {
  const files = synthetic.files;
  const hf = new HfTokenizer(
    JSON.parse(files.get("tiny/tokenizer.json")!),
    JSON.parse(files.get("tiny/tokenizer_config.json")!),
  );
  const { train, validation, tests } = synthetic.splits;
  const records = [...train, ...validation, ...Object.values(tests).flat()].map((r) => r.record);
  const texts = [
    ...synthetic.pretrain,
    ...records.map((r) => trainingContext(4, r.instruction)),
    ...records.map((r) => r.output),
    ...records.map((r) => testPrompt(4, r.instruction, null)),
  ];
  for (const text of texts) {
    // One token per pre-token means no piece fell back to bytes.
    const tokens = hf.encode(text, { add_special_tokens: false }).tokens;
    assertEquals(tokens.length, hf.pre_tokenizer!(text).length, text);
  }
});
