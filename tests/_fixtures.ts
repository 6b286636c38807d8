/**
 * Helpers for tests that use the PyTorch golden fixtures.
 * @module
 */
import type { Batch } from "../lib/model.ts";

/** Packs sequences into one batch; target t is token t+1 where the mask counts it. */
export function packBatch(seqs: number[][], masks?: number[][]): Batch {
  const tokens: number[] = [], targets: number[] = [], cu = [0];
  let counted = 0;
  seqs.forEach((s, i) => {
    s.forEach((tok, t) => {
      tokens.push(tok);
      const next = t + 1 < s.length && (masks ? masks[i][t + 1] === 1 : true);
      targets.push(next ? s[t + 1] : -100);
      if (next) counted++;
    });
    cu.push(tokens.length);
  });
  return {
    tokens: Int32Array.from(tokens),
    targets: Int32Array.from(targets),
    cuSeqlens: Uint32Array.from(cu),
    numCounted: counted,
  };
}
