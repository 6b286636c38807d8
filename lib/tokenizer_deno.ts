/**
 * Reads a Hugging Face tokenizer folder from disk (the Deno edge of tokenizer.ts).
 * @module
 */
import { join } from "@std/path";
import { HiraError } from "./errors.ts";
import { Tokenizer } from "./tokenizer.ts";

async function readJson(path: string, required: boolean): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      if (!required) return undefined;
      throw new HiraError(path, "file not found (a tokenizer folder needs tokenizer.json)");
    }
    if (e instanceof Deno.errors.IsADirectory) throw new HiraError(path, "is a directory");
    if (e instanceof Deno.errors.PermissionDenied) throw new HiraError(path, "permission denied");
    throw e;
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HiraError(path, `not valid JSON: ${(e as Error).message}`);
  }
}

/**
 * Loads `dir/tokenizer.json` (required) with `dir/tokenizer_config.json` and
 * `dir/special_tokens_map.json` (each optional). Throws {@linkcode HiraError} on a missing
 * tokenizer.json, a malformed JSON file, or a tokenizer the library cannot build.
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer> {
  const tokenizerPath = join(dir, "tokenizer.json");
  const tokenizer = await readJson(tokenizerPath, true);
  const configPath = join(dir, "tokenizer_config.json");
  const config = await readJson(configPath, false);
  const mapPath = join(dir, "special_tokens_map.json");
  const specialTokensMap = await readJson(mapPath, false);
  for (const [path, value] of [[configPath, config], [mapPath, specialTokensMap]] as const) {
    if (
      value !== undefined && (typeof value !== "object" || value === null || Array.isArray(value))
    ) {
      throw new HiraError(path, "must be a JSON object");
    }
  }
  return new Tokenizer({ tokenizer, config, specialTokensMap, source: tokenizerPath });
}
