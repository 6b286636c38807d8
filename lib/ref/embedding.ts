/**
 * Plain-loop f64 reference of the embedding lookup, forward and backward side by side.
 * @module
 */

/** out[t, :] = table[ids[t], :] for a table [v, c]; ids outside [0, v) give zero rows. */
export function embeddingForward(
  table: ArrayLike<number>,
  v: number,
  c: number,
  ids: ArrayLike<number>,
): Float64Array {
  const out = new Float64Array(ids.length * c);
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t];
    if (id < 0 || id >= v) continue;
    for (let j = 0; j < c; j++) out[t * c + j] = table[id * c + j];
  }
  return out;
}

/** Gradient of Σ dOut·out with respect to the table [v, c]. */
export function embeddingBackward(
  dOut: ArrayLike<number>,
  ids: ArrayLike<number>,
  v: number,
  c: number,
): Float64Array {
  const dTable = new Float64Array(v * c);
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t];
    if (id < 0 || id >= v) continue;
    for (let j = 0; j < c; j++) dTable[id * c + j] += dOut[t * c + j];
  }
  return dTable;
}
