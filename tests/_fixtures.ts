/**
 * Helpers for tests that use the golden fixtures (tests/fixtures/golden/, made by transformers
 * and PEFT with tests/fixtures/make_golden.py).
 * @module
 */
import { packBatch as packExamples } from "../lib/train/data.ts";
import type { Batch } from "../lib/model/model.ts";
import { openSafetensors } from "../lib/io/safetensors_deno.ts";

/** The golden fixtures' folder (a path ending in "/"). */
export const GOLDEN: string = new URL("./fixtures/golden/", import.meta.url).pathname;

/** Every tensor of a safetensors file as f32, by name. */
export async function readTensors(file: string): Promise<Map<string, Float32Array>> {
  const f = await openSafetensors(file);
  const out = new Map<string, Float32Array>();
  for (const n of f.names) out.set(n, await f.read(n, "f32") as Float32Array);
  f.close();
  return out;
}

/**
 * Packs the fixtures' token sequences into one batch with the engine's own packer: target t is
 * token t+1 where the mask counts it (every token when no mask is given).
 */
export function packBatch(seqs: number[][], masks?: number[][]): Batch {
  return packExamples(seqs.map((tokens, i) => ({
    tokens,
    lossMask: masks ? masks[i] : tokens.map(() => 1),
  })));
}
