/**
 * Reading a model folder from disk (the file-I/O edge of model loading): config.json plus
 * model.safetensors or a sharded index, validated, onto the GPU.
 * @module
 */
import { join } from "@std/path";
import type { Gpu } from "../engine/gpu.ts";
import { HiraError, isHiraError, parseJson } from "../engine/errors.ts";
import { type LlamaConfig, parseConfig } from "../model/config.ts";
import { loadModel, type LoadOptions } from "../model/load.ts";
import type { LlamaModel } from "../model/model.ts";
import { openModelWeights } from "./safetensors_deno.ts";
import { JSON_CAPS, readRegularText } from "./fs_deno.ts";

/** The embedded tiny model shipped with the project. */
export const EMBEDDED_MODEL_DIR: string =
  new URL("../../data_file/tiny/model/", import.meta.url).pathname;

/** Reads and validates `dir/config.json`. */
export async function readConfig(dir: string): Promise<LlamaConfig> {
  const file = join(dir, "config.json");
  let text: string;
  try {
    text = await readRegularText(file, JSON_CAPS.config);
  } catch (e) {
    if (isHiraError(e)) throw e;
    if (e instanceof Deno.errors.NotFound) {
      const isDir = await Deno.stat(dir).then((s) => s.isDirectory, () => false);
      throw new HiraError(
        isDir ? file : dir,
        isDir ? "missing: a model folder needs config.json" : "model folder not found",
      );
    }
    throw new HiraError(file, `cannot be read (${(e as Error).message})`);
  }
  return parseConfig(parseJson(text, file), file);
}

/** Loads a Hugging Face model folder onto the GPU (f32, or f16 matrices per `opts`). */
export async function loadModelDir(
  gpu: Gpu,
  dir: string,
  opts: LoadOptions = {},
): Promise<LlamaModel> {
  const cfg = await readConfig(dir);
  const ws = await openModelWeights(dir);
  try {
    return await loadModel(gpu, cfg, ws, opts);
  } finally {
    ws.close();
  }
}
