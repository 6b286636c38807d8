/**
 * Reads what a model folder says about conversations (the Deno edge of chat.ts): its chat
 * template, from `--chat_template=FILE`, else `chat_template.jinja` (where transformers 4.43+
 * saves it), else tokenizer_config.json's `chat_template`; and generation_config.json's stop
 * tokens.
 * @module
 */
import { join } from "@std/path";
import { HiraError, parseJson } from "../engine/errors.ts";
import { ChatTemplate, configChatTemplate } from "../train/chat.ts";
import type { Tokenizer } from "../model/tokenizer.ts";

async function readOptional(file: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new HiraError(file, `cannot be read (${(e as Error).message})`);
  }
}

function tokenString(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (
    typeof v === "object" && v !== null && typeof (v as { content?: unknown }).content === "string"
  ) {
    return (v as { content: string }).content;
  }
  return null;
}

/**
 * The chat template for `modelDir` (see the module doc for the order), compiled with the
 * tokenizer's special-token strings. A model without one is a one-line {@linkcode HiraError}
 * that names the folder and `--chat_template=FILE`. A `--chat_template` file ending in .json
 * is read as a tokenizer_config.json; any other file is the Jinja source itself.
 */
export async function loadChatTemplate(
  modelDir: string,
  flagFile: string | null,
  tok: Tokenizer,
): Promise<ChatTemplate> {
  const configFile = join(modelDir, "tokenizer_config.json");
  const configText = await readOptional(configFile);
  const config = configText === null ? {} : parseJson(configText, configFile);
  const pad = tokenString((config as Record<string, unknown>)?.pad_token);
  const tokens = {
    bos_token: tok.bosToken,
    eos_token: tok.eosToken,
    unk_token: tok.unkToken,
    pad_token: pad,
  };
  if (flagFile) {
    const text = await readOptional(flagFile);
    if (text === null) throw new HiraError(flagFile, "--chat_template file not found");
    const source = flagFile.endsWith(".json")
      ? configChatTemplate(parseJson(text, flagFile), flagFile)
      : text;
    if (source === null) throw new HiraError(flagFile, "has no chat_template");
    return new ChatTemplate(source, flagFile, tokens);
  }
  const jinjaFile = join(modelDir, "chat_template.jinja");
  const jinja = await readOptional(jinjaFile);
  if (jinja !== null) return new ChatTemplate(jinja, jinjaFile, tokens);
  const source = configChatTemplate(config, configFile);
  if (source === null) {
    throw new HiraError(
      modelDir,
      "the model has no chat template (no chat_template in tokenizer_config.json, no " +
        "chat_template.jinja); chat records need one: pass --chat_template=FILE",
    );
  }
  return new ChatTemplate(source, configFile, tokens);
}

/**
 * The stop token ids of generation_config.json (`eos_token_id`, a number or a list, as
 * transformers' GenerationConfig reads it); empty when the folder has none.
 */
export async function generationStopIds(modelDir: string): Promise<number[]> {
  const file = join(modelDir, "generation_config.json");
  const text = await readOptional(file);
  if (text === null) return [];
  const v = (parseJson(text, file) as Record<string, unknown> | null)?.eos_token_id;
  const ids = Array.isArray(v) ? v : v === undefined || v === null ? [] : [v];
  if (!ids.every((x) => Number.isInteger(x) && (x as number) >= 0)) {
    throw new HiraError(file, "eos_token_id must be a token id or a list of token ids");
  }
  return ids as number[];
}
