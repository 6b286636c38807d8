/**
 * Evaluation: flags, decoding settings and names, scoring and re-scoring, summary tables,
 * perplexity against PyTorch's NLLs, --ckpt resolution, merged-folder predictions equal to the
 * adapter's, and train.ts's before/after accuracy hooks.
 */
import {
  assert,
  assertEquals,
  assertNotEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { join } from "@std/path";
import { loadModelDir, readConfig } from "../../lib/io/model_deno.ts";
import { openSafetensors } from "../../lib/io/safetensors_deno.ts";
import { adapterTensors, attachAdapters } from "../../lib/model/attach.ts";
import { writeAdapterDir } from "../../lib/io/peft_deno.ts";
import { randomModel } from "../../lib/model/load.ts";
import { loadTokenizer } from "../../lib/io/tokenizer_deno.ts";
import { parseRecords } from "../../lib/train/data.ts";
import { parseTrainArgs } from "../../lib/cli/flags.ts";
import { Rng } from "../../lib/engine/rand.ts";
import type { AdapterConfig, PeftType } from "../../lib/model/peft.ts";
import { beforeAfterMarkdown, summaryMarkdown } from "../../lib/report/accuracy.ts";
import {
  datasetFromFileName,
  datasetScore,
  mergeSummary,
  rescorePredictions,
  scorePrediction,
  scoreRecords,
  summarize,
} from "../../lib/eval/scoring.ts";
import {
  decodeSettings,
  decodingTag,
  predictionsFileName,
  predictTexts,
} from "../../lib/eval/evaluate.ts";
import {
  documentTokens,
  parseTextFile,
  parseTokenFile,
  perplexity,
} from "../../lib/eval/perplexity.ts";
import { parseEvalArgs } from "../../lib/cli/flags.ts";
import {
  accuracyHooks,
  heldOutSets,
  openEvalModel,
  readTestRecords,
  resolveCheckpoint,
} from "../../lib/cli/eval.ts";
import { writeMergedModelDir } from "../../lib/io/merge_deno.ts";
import { isHiraError } from "../../lib/engine/errors.ts";
import { assertClose, testGpu, withTempDir } from "../_util.ts";

const FIX = new URL("../fixtures/golden/", import.meta.url).pathname;
const TINY = new URL("../../data_file/tiny/", import.meta.url).pathname;
const BOOLQ = new URL("../../data_file/llm_adapt/boolq/test.json", import.meta.url).pathname;

Deno.test("flags: defaults, the --dataset alias, and one-line errors naming the flag", () => {
  const a = parseEvalArgs(["boolq", "--ckpt=runs/x"]);
  assertEquals(a.command, "boolq");
  assertEquals(a.ckpt, "runs/x");
  assertEquals(a.beam_size, 4);
  assertEquals(a.decoding, "default");
  assertEquals(a.batch, 8);
  assertEquals(a.limit, 0);
  assertEquals(a.merge, true);
  assertEquals(a.predictions, []);
  assertEquals(a.data_root, "data_file");
  assertEquals(a.weight_dtype, "f32");
  assertEquals(parseEvalArgs(["boolq", "--weight_dtype", "auto"]).weight_dtype, "auto");
  assertEquals(parseEvalArgs(["--dataset=piqa"]).command, "piqa");
  assertEquals(parseEvalArgs(["all", "--no-merge"]).merge, false);
  assertEquals(
    parseEvalArgs(["boolq", "--predictions=a.jsonl", "--predictions=b.jsonl"]).predictions,
    ["a.jsonl", "b.jsonl"],
  );
  assertEquals(parseEvalArgs(["rank", "--layers=0, 3"]).layers, [0, 3]);
  assertEquals(parseEvalArgs(["--help"]).help, true);
  const bad: [string[], string][] = [
    [["boolqq"], "boolqq: unknown dataset or command"],
    [[], "eval.ts: no dataset or command given"],
    [["boolq", "--beam=4"], "--beam: unknown flag"],
    [["boolq", "--beam_size=0"], "--beam_size: must be an integer >= 1"],
    [["boolq", "--limit=x"], "--limit: 'x' is not a number"],
    [["boolq", "--decoding=sample"], "--decoding: 'sample' is not one of"],
    [["merge", "--dtype=f64"], "--dtype: 'f64' is not one of"],
    [["boolq", "--weight_dtype=bf16"], "--weight_dtype: 'bf16' is not auto, f32 or f16"],
    [["piqa", "--dataset=boolq"], "--dataset: 'boolq' contradicts"],
    [["boolq", "piqa"], "piqa: unexpected argument"],
  ];
  for (const [argv, msg] of bad) {
    const e = assertThrows(() => parseEvalArgs(argv));
    assert(isHiraError(e), `${argv}: not a HiraError`);
    assertStringIncludes((e as Error).message, msg);
  }
});

Deno.test("--weight_dtype sets how the evaluated model's frozen matrices are stored", async () => {
  const gpu = await testGpu();
  const flags = { ckpt: null, model: FIX + "model", tokenizer: null, load_order: -1, merge: true };
  for (const wdt of ["f32", "f16"] as const) {
    const em = await openEvalModel(gpu, { ...flags, weight_dtype: wdt }, false);
    assertEquals(em.model.weights.layers[0].proj.q_proj.dtype, wdt);
    em.model.release();
  }
  // The default (no flag) stays f32.
  const em = await openEvalModel(gpu, flags, false);
  assertEquals(em.model.weights.layers[0].proj.q_proj.dtype, "f32");
  em.model.release();
});

Deno.test("decoding settings, tags and file names follow the reference", () => {
  const b = decodeSettings("boolq");
  assertEquals(b, {
    template: 4,
    maxPromptTokens: 256,
    maxNewTokens: 16,
    numBeams: 4,
    lengthPenalty: 1,
    noRepeatNgramSize: 0,
  });
  assertEquals(decodeSettings("gsm8k").maxNewTokens, 200);
  assertEquals(decodeSettings("gsm8k").maxPromptTokens, 155);
  assertEquals(decodeSettings("piqa", { greedy: true, beamSize: 4 }).numBeams, 1);
  assertEquals(decodeSettings("convai2"), {
    template: 0,
    maxPromptTokens: 512,
    maxNewTokens: 32,
    numBeams: 4,
    lengthPenalty: 0.9,
    noRepeatNgramSize: 4,
  });
  assertEquals(decodingTag(b), "beam=4");
  assertEquals(decodingTag(decodeSettings("obqa", { greedy: true })), "greedy");
  assertEquals(decodingTag(b, { maxNewTokensOverride: 32, limit: 10 }), "beam=4_maxT=32_limit=10");
  assertEquals(predictionsFileName("boolq", "beam=4"), "output_boolq_beam=4_eval.jsonl");
  assertEquals(datasetFromFileName("x/output_boolq_beam=4_eval.jsonl"), "boolq");
  assertEquals(datasetFromFileName("output_-1_hellas_beam=4_eval.jsonl"), "hellas");
  assertEquals(datasetFromFileName("output_gsm8k_greedy_limit=3_eval.jsonl"), "gsm8k");
  assertEquals(datasetFromFileName("output.jsonl"), null);
  assertThrows(() => decodeSettings("meta_math"), Error, "no decoding settings");
});

Deno.test("scoring: first keyword (case-sensitive), gsm8k's new acc, mixed sets by family", () => {
  assertEquals(scorePrediction("boolq", "untrue", "the correct answer is true"), {
    extracted: "true",
    correct: true,
  });
  assertEquals(scorePrediction("piqa", "Solution1", "the correct answer is solution1"), {
    extracted: "",
    correct: false,
  });
  assertEquals(scorePrediction("hellas", "ending2 or ending1", "the correct answer is ending2"), {
    extracted: "ending2",
    correct: true,
  });
  assertEquals(scorePrediction("gsm8k", "The answer is: 1,234.4", "...", "1234"), {
    extracted: "1234",
    correct: true,
  });
  assertEquals(scorePrediction("gsm8k", "1234", "...", 1234), { extracted: "", correct: false });
  assertEquals(
    scorePrediction("common_170k", "answer3 then", "the correct answer is answer3"),
    { extracted: "answer3", correct: true },
  );
  assertEquals(
    scorePrediction("common_170k", "true", "the correct answer is option1"),
    { extracted: "", correct: false },
  );
  const recs = scoreRecords("gsm8k", [
    { instruction: "q", output: "The answer is: 5", answer: "5" },
  ], ["so The answer is: 5"]);
  assertEquals(recs, [{
    context: "q",
    pred: "so The answer is: 5",
    gold: "The answer is: 5",
    extracted: "5",
    correct: true,
    answer: "5",
  }]);
});

/** A hand-written boolq file in the reference's layout (header lines, `gt`). */
const BOOLQ_JSONL = [
  JSON.stringify({ dataset: "boolq", lr: 0.001 }),
  JSON.stringify("\n"),
  JSON.stringify({ mem_used: 1, train_seconds: -1 }),
  JSON.stringify({
    context: "q1",
    pred: "the correct answer is true",
    gt: "the correct answer is true",
  }),
  JSON.stringify({
    context: "q2",
    pred: "the correct answer is false",
    gt: "the correct answer is true",
  }),
  JSON.stringify({ context: "q3", pred: "untrue", gt: "the correct answer is true" }),
  JSON.stringify({ context: "q4", pred: "I do not know", gt: "the correct answer is false" }),
  "",
].join("\n");

/** A hand-written piqa file in our layout (stored extracted/correct are recomputed). */
const PIQA_JSONL = [
  { pred: "solution2 is right", gold: "the correct answer is solution2", correct: false },
  { pred: "Solution1", gold: "the correct answer is solution1", correct: true },
  { pred: "solution1 solution2", gold: "the correct answer is solution1", extracted: "x" },
].map((r) => JSON.stringify(r)).join("\n") + "\n";

/** The hand-computed table: boolq 2/4, piqa 2/3, average (50 + 66.667) / 2. */
const RESCORED_TABLE = [
  "| dataset | examples | correct | accuracy (%) |",
  "|---|---:|---:|---:|",
  "| boolq | 4 | 2 | 50.00 |",
  "| piqa | 3 | 2 | 66.67 |",
  "| **average** (unweighted, 2 sets) | | | 58.33 |",
].join("\n");

Deno.test("re-scoring hand-written predictions gives the hand-computed table", () => {
  const boolq = rescorePredictions(BOOLQ_JSONL, "b.jsonl", "boolq");
  assertEquals(boolq.map((r) => r.correct), [true, false, true, false]);
  assertEquals(boolq[2].extracted, "true");
  const piqa = rescorePredictions(PIQA_JSONL, "p.jsonl", "piqa");
  assertEquals(piqa.map((r) => [r.extracted, r.correct]), [
    ["solution2", true],
    ["", false],
    ["solution1", true],
  ]);
  // Rows come out in the reference's order whatever order they go in.
  const s = summarize("rescored", [datasetScore("piqa", piqa), datasetScore("boolq", boolq)]);
  assertClose([s.average!], [(50 + 200 / 3) / 2], { rtol: 1e-12 });
  assertEquals(summaryMarkdown(s), `## Accuracy (rescored)\n\n${RESCORED_TABLE}\n`);
  // The reference's gsm8k lines carry no answer: the test set supplies it by position.
  const gsm = [
    JSON.stringify({ context: "a", pred: "The answer is: 7", gt: "x" }),
    JSON.stringify({ context: "b", pred: "The answer is: 7", gt: "y" }),
  ].join("\n");
  const test = [
    { instruction: "a", output: "x", answer: "7" },
    { instruction: "b", output: "y", answer: 8 },
  ];
  assertEquals(rescorePredictions(gsm, "g", "gsm8k", test).map((r) => r.correct), [true, false]);
  assertThrows(() => rescorePredictions(gsm, "g", "gsm8k"), Error, "g: line 1: gsm8k needs");
  assertThrows(
    () => rescorePredictions(gsm, "g", "gsm8k", [...test].reverse()),
    Error,
    "context differs from test record 0",
  );
  assertThrows(() => rescorePredictions("{bad\n", "f.jsonl", "boolq"), Error, "f.jsonl: line 1");
  assertThrows(() => rescorePredictions('{"a":1}\n', "f.jsonl", "boolq"), Error, "no prediction");
  assertThrows(() => rescorePredictions('{"pred":"x"}\n', "f.jsonl", "boolq"), Error, "'gold'");
});

Deno.test("summaries merge per dataset; before/after table", () => {
  const a = summarize("greedy", [{ dataset: "boolq", n: 4, correct: 1, accuracy: 25 }]);
  const b = mergeSummary(a, "greedy", [
    { dataset: "obqa", n: 2, correct: 2, accuracy: 100 },
    { dataset: "boolq", n: 4, correct: 3, accuracy: 75 },
  ]);
  assertEquals(b.rows.map((r) => [r.dataset, r.accuracy]), [["boolq", 75], ["obqa", 100]]);
  assertEquals(b.average, 87.5);
  const md = beforeAfterMarkdown(a, b);
  assertStringIncludes(md, "| boolq | 4 | 25.00 | 75.00 | +50.00 |");
  assertStringIncludes(md, "| obqa | 2 | – | 100.00 | – |");
  assertStringIncludes(md, "| **average** | | 25.00 | 87.50 | +62.50 |");
});

Deno.test("perplexity on the fixture model equals PyTorch's NLL", async () => {
  const model = await loadModelDir(await testGpu(), FIX + "model");
  const seqs = parseTokenFile(JSON.parse(await Deno.readTextFile(FIX + "tokens.json")), "t");
  const f = await openSafetensors(FIX + "golden/base.logits.safetensors");
  let total = 0, count = 0;
  const per: number[] = [];
  for (let i = 0; i < seqs.length; i++) {
    const nll = await f.read(`nll.${i}`, "f32");
    const s = nll.reduce((a, b) => a + b, 0);
    total += s;
    count += nll.length;
    per.push(s / nll.length);
  }
  f.close();
  // Two batch layouts: all sequences packed together, and one per batch.
  for (const maxBatchTokens of [2048, 1]) {
    const r = await perplexity(model, seqs, { maxBatchTokens });
    assertEquals(r.tokens, count);
    assertClose([r.mean_nll], [total / count], { rtol: 1e-5, label: "mean_nll" });
    assertClose([r.perplexity], [Math.exp(total / count)], { rtol: 1e-5, label: "ppl" });
    assertClose(r.per_sequence, per, { rtol: 1e-5, label: "per_sequence" });
  }
  await assertRejects(() => perplexity(model, [[1]], { source: "x.json" }), Error, "x.json");
  await assertRejects(() => perplexity(model, [[1, 256]]), Error, "outside the vocabulary");
  assertEquals(parseTokenFile([[1, 2], [3, 4, 5]], "f"), [[1, 2], [3, 4, 5]]);
  assertThrows(() => parseTokenFile([[1, 2.5]], "f"), Error, "f: item 0");
  assertEquals(parseTextFile("a b\n\n c\r\n", "f"), ["a b", " c"]);
  assertEquals(parseTextFile(' ["x\\ny", "z"]', "f"), ["x\ny", "z"]);
  const tok = await loadTokenizer(TINY);
  assertEquals(documentTokens(tok, "the")[0], tok.bosId);
});

async function copyDir(src: string, dst: string): Promise<void> {
  await Deno.mkdir(dst, { recursive: true });
  for await (const e of Deno.readDir(src)) {
    await Deno.copyFile(join(src, e.name), join(dst, e.name));
  }
}

Deno.test("--ckpt resolves run folders, best checkpoints, adapters and models", async () => {
  await withTempDir("hira-run-", async (run) => {
    await copyDir(FIX + "adapter-lora", join(run, "checkpoint-10"));
    await copyDir(FIX + "adapter-hira", join(run, "checkpoint-30"));
    const state = (best: string | null) => JSON.stringify({ best_model_checkpoint: best });
    await Deno.writeTextFile(join(run, "checkpoint-10", "trainer_state.json"), state(null));
    // Recorded relative to another cwd, as the reference does: found by its name in the run.
    await Deno.writeTextFile(
      join(run, "checkpoint-30", "trainer_state.json"),
      state("results_hira/elsewhere/checkpoint-10"),
    );
    assertEquals(await resolveCheckpoint(run), {
      kind: "adapter",
      dir: join(run, "checkpoint-10"),
    });
    assertEquals(await resolveCheckpoint(run, 0), {
      kind: "adapter",
      dir: join(run, "checkpoint-10"),
    });
    assertEquals(await resolveCheckpoint(join(run, "checkpoint-30")), {
      kind: "adapter",
      dir: join(run, "checkpoint-30"),
    });
    await assertRejects(() => resolveCheckpoint(run, 5), Error, "--load_order");
    await copyDir(FIX + "adapter-hira", join(run, "adapter"));
    assertEquals(await resolveCheckpoint(run), { kind: "adapter", dir: join(run, "adapter") });
    assertEquals(await resolveCheckpoint(FIX + "model"), { kind: "model", dir: FIX + "model" });
    await assertRejects(() => resolveCheckpoint(join(run, "nope")), Error, "not found");
    await assertRejects(() => resolveCheckpoint(FIX + "tokens.json"), Error, "is a file");
    await assertRejects(() => resolveCheckpoint(FIX + "golden"), Error, "holds no adapter");
  });
});

/** A random-init tiny model folder with the tiny tokenizer, and adapters with large B. */
async function tinySetup(root: string): Promise<{ modelDir: string; adapters: string[] }> {
  const gpu = await testGpu();
  const cfg = await readConfig(join(TINY, "model"));
  // A wider init than HF's 0.02 so that greedy outputs vary between prompts and adapters
  // (a 0.02-init model repeats one token whatever the input).
  const model = randomModel(gpu, { ...cfg, raw: { ...cfg.raw, initializer_range: 0.3 } }, 7);
  const modelDir = join(root, "model");
  await writeMergedModelDir(model, modelDir, { sideFilesDir: TINY });
  const adapters: string[] = [];
  for (const type of ["HIRA", "LORA"] as PeftType[]) {
    const ac: AdapterConfig = {
      peftType: type,
      r: 4,
      targetModules: ["q_proj", "v_proj", "up_proj", "down_proj"],
      loraAlpha: 8,
      loraDropout: 0,
      baseModel: modelDir,
      keyStyle: "peft",
    };
    model.adapters.clear();
    attachAdapters(model, ac, { seed: 5 });
    const rng = new Rng(11);
    for (const ad of model.adapters.values()) {
      const b = ad.params()[1].param;
      gpu.write(b, rng.normalArray(b.size, type === "HIRA" ? 4 : 0.5));
    }
    const dir = join(root, `adapter-${type.toLowerCase()}`);
    await writeAdapterDir(dir, ac, await adapterTensors(model, type));
    adapters.push(dir);
  }
  return { modelDir, adapters };
}

Deno.test("a merged folder decodes exactly what its adapter decodes (tiny model, greedy)", async () => {
  const gpu = await testGpu();
  await withTempDir("hira-evalmerge-", async (root) => {
    const { modelDir, adapters } = await tinySetup(root);
    const records = parseRecords(await Deno.readTextFile(BOOLQ), BOOLQ).slice(0, 3);
    const settings = decodeSettings("boolq", { greedy: true, maxNewTokens: 6 });
    const flags = { model: null, tokenizer: null, load_order: -1 };
    const base = await openEvalModel(gpu, { ...flags, ckpt: null, model: modelDir, merge: true });
    const basePreds = await predictTexts(base.model, base.tok!, records, settings);
    for (const dir of adapters) {
      const unmerged = await openEvalModel(gpu, { ...flags, ckpt: dir, merge: false });
      assertEquals(unmerged.merge, null);
      assert(unmerged.model.adapters.size > 0);
      const viaAdapter = await predictTexts(unmerged.model, unmerged.tok!, records, settings);
      const oracle = await predictTexts(unmerged.model, unmerged.tok!, records, settings, {
        decoder: "recompute",
        batch: 2,
      });
      assertEquals(oracle, viaAdapter);
      // The check means something: outputs vary and the adapter changes them.
      assert(new Set(viaAdapter).size > 1, `${dir}: every prompt decoded alike`);
      assertNotEquals(viaAdapter, basePreds);
      const out = join(root, `merged-${dir.slice(-4)}`);
      await writeMergedModelDir(unmerged.model, out, { sideFilesDir: TINY });
      const merged = await openEvalModel(gpu, { ...flags, ckpt: out, merge: true });
      assertEquals(merged.adapterDir, null);
      assertEquals(await predictTexts(merged.model, merged.tok!, records, settings), viaAdapter);
      const inPlace = await openEvalModel(gpu, { ...flags, ckpt: dir, merge: true });
      assert(inPlace.merge !== null && inPlace.model.adapters.size === 0);
      assertEquals(await predictTexts(inPlace.model, inPlace.tok!, records, settings), viaAdapter);
    }
  });
});

Deno.test("accuracy hooks: before/after tables and files; the model is left as it was", async () => {
  const gpu = await testGpu();
  await withTempDir("hira-hooks-", async (root) => {
    const { modelDir, adapters } = await tinySetup(root);
    const dataRoot = join(root, "data");
    await Deno.mkdir(join(dataRoot, "llm_adapt", "boolq"), { recursive: true });
    await Deno.copyFile(BOOLQ, join(dataRoot, "llm_adapt", "boolq", "test.json"));
    assertEquals(await heldOutSets("common_170k", dataRoot), ["boolq"]);
    assertEquals(await heldOutSets("gsm8k", dataRoot), []);
    const args = parseTrainArgs([
      `--model=${modelDir}`,
      "--dataset=boolq",
      `--data_root=${dataRoot}`,
      "--eval_limit=2",
      "--max_new_tokens=4",
    ]);
    assertEquals(accuracyHooks({ ...args, dataset: "gsm8k" }), {});
    const hooks = accuracyHooks(args);
    const em = await openEvalModel(gpu, {
      ckpt: adapters[0],
      model: null,
      tokenizer: null,
      load_order: -1,
      merge: false,
    });
    const w = em.model.weights.layers[0].proj.q_proj;
    const logs: string[] = [];
    const log = console.log;
    console.log = (...a: unknown[]) => logs.push(a.join(" "));
    try {
      await hooks.beforeTraining!(em.model, em.tok!, root);
      await hooks.afterTraining!(em.model, em.tok!, root);
    } finally {
      console.log = log;
    }
    assert(em.model.weights.layers[0].proj.q_proj === w);
    assertEquals(em.model.adapters.size, 16);
    const out = logs.join("\n");
    assertStringIncludes(out, "Held-out accuracy before training (greedy_maxT=4_limit=2)");
    assertStringIncludes(out, "| dataset | examples | before (%) | after (%) | change |");
    const md = await Deno.readTextFile(join(root, "accuracy.md"));
    assertStringIncludes(md, "| boolq | 2 |");
    const lines = (await Deno.readTextFile(
      join(root, "accuracy_after", "output_boolq_greedy_maxT=4_limit=2_eval.jsonl"),
    )).trim().split("\n");
    assertEquals(lines.length, 2);
    const rec = JSON.parse(lines[0]);
    assertEquals(Object.keys(rec), ["context", "pred", "gold", "extracted", "correct"]);
    const json = JSON.parse(await Deno.readTextFile(join(root, "accuracy.json")));
    assertEquals(json.before.rows[0].n, 2);
    assertStringIncludes(await Deno.readTextFile(join(root, "accuracy.svg")), "<svg");
  });
});

Deno.test("a missing test set says which file to put where", async () => {
  const e = await assertRejects(() => readTestRecords("/nonexistent-root", "siqa"));
  assertEquals(
    (e as Error).message.split(":")[0],
    "/nonexistent-root/llm_adapt/social_i_qa/test.json",
  );
  assertStringIncludes((e as Error).message, "LLM-Adapters dataset/social_i_qa/test.json");
  const { records } = await readTestRecords(
    new URL("../../data_file", import.meta.url).pathname,
    "boolq",
    3,
  );
  assertEquals(records.length, 3);
});

Deno.test("a gsm8k test record without 'answer' is a one-line error naming the file and record", async () => {
  await withTempDir("hira-gsm8k-", async (root) => {
    const dir = join(root, "llm_adapt", "gsm8k");
    await Deno.mkdir(dir, { recursive: true });
    const rec = { instruction: "2+2?", input: "", output: "4. The answer is: 4" };
    await Deno.writeTextFile(
      join(dir, "test.json"),
      JSON.stringify([{ ...rec, answer: "4" }, rec]),
    );
    const e = await assertRejects(() => readTestRecords(root, "gsm8k"));
    assertEquals(
      (e as Error).message,
      `${join(dir, "test.json")}: record 1: missing field 'answer' (the number it is scored by)`,
    );
    await Deno.writeTextFile(join(dir, "test.json"), JSON.stringify([{ ...rec, answer: "4" }]));
    assertEquals((await readTestRecords(root, "gsm8k")).records[0].answer, "4");
  });
});
