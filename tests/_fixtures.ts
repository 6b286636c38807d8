/**
 * Helpers for tests that use the PyTorch golden fixtures.
 * @module
 */
import { packBatch as packExamples } from "../lib/train/data.ts";
import type { Batch } from "../lib/model/model.ts";

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
