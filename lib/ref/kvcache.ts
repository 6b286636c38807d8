/**
 * Plain-loop references of the KV-cache scatter and gather (lib/ops/kvcache.ts). Caches are
 * flat arrays [S, tmax, w]; both ops are pure data movement, so there is no backward.
 * @module
 */

/** A copy of `cache` [·, w] with row rows[r] replaced by row r of `src` [n, w]. */
export function kvScatterRef(
  cache: ArrayLike<number>,
  w: number,
  src: ArrayLike<number>,
  rows: ArrayLike<number>,
): Float64Array {
  const out = Float64Array.from(cache);
  for (let r = 0; r < rows.length; r++) {
    for (let j = 0; j < w; j++) out[rows[r] * w + j] = src[r * w + j];
  }
  return out;
}

/**
 * out [parents.length, tmax, w] with out[s, t, :] = cache[parents[s], t, :] for t < copyRows;
 * the rows after copyRows are NaN (undefined in the GPU op, so tests must not compare them).
 */
export function kvGatherRef(
  cache: ArrayLike<number>,
  tmax: number,
  w: number,
  parents: ArrayLike<number>,
  copyRows: number,
): Float64Array {
  const out = new Float64Array(parents.length * tmax * w).fill(NaN);
  for (let s = 0; s < parents.length; s++) {
    for (let t = 0; t < copyRows; t++) {
      for (let j = 0; j < w; j++) {
        out[(s * tmax + t) * w + j] = cache[(parents[s] * tmax + t) * w + j];
      }
    }
  }
  return out;
}
