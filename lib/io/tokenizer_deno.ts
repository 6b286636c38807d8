/**
 * Reads a Hugging Face tokenizer folder from disk (the Deno edge of tokenizer.ts).
 * @module
 */
import { join } from "@std/path";
import { HiraError, isHiraError, parseJson } from "../engine/errors.ts";
import { JSON_CAPS, readRegularText } from "./fs_deno.ts";
import { Tokenizer } from "../model/tokenizer.ts";

async function readJson(path: string, required: boolean, cap: number): Promise<unknown> {
  let text: string;
  try {
    text = await readRegularText(path, cap);
  } catch (e) {
    if (isHiraError(e)) throw e;
    if (e instanceof Deno.errors.NotFound) {
      if (!required) return undefined;
      throw new HiraError(path, "file not found (a tokenizer folder needs tokenizer.json)");
    }
    if (e instanceof Deno.errors.IsADirectory) throw new HiraError(path, "is a directory");
    if (e instanceof Deno.errors.PermissionDenied) throw new HiraError(path, "permission denied");
    throw e;
  }
  return parseJson(text, path);
}

/**
 * Loads `dir/tokenizer.json` (required) with `dir/tokenizer_config.json` and
 * `dir/special_tokens_map.json` (each optional). Throws {@linkcode HiraError} on a missing
 * tokenizer.json, a malformed JSON file, or a tokenizer the library cannot build.
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer> {
  const tokenizerPath = join(dir, "tokenizer.json");
  const tokenizer = await readJson(tokenizerPath, true, JSON_CAPS.tokenizer);
  const configPath = join(dir, "tokenizer_config.json");
  const config = await readJson(configPath, false, JSON_CAPS.tokenizerConfig);
  const mapPath = join(dir, "special_tokens_map.json");
  const specialTokensMap = await readJson(mapPath, false, JSON_CAPS.tokenizerConfig);
  for (const [path, value] of [[configPath, config], [mapPath, specialTokensMap]] as const) {
    if (
      value !== undefined && (typeof value !== "object" || value === null || Array.isArray(value))
    ) {
      throw new HiraError(path, "must be a JSON object");
    }
  }
  return new Tokenizer({ tokenizer, config, specialTokensMap, source: tokenizerPath });
}
