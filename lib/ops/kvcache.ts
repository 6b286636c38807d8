/**
 * KV-cache maintenance for incremental decoding (kernels/kvcache.wgsl): writing new keys and
 * values into their sequences' rows, and reordering whole sequences when beam search keeps some
 * beams, drops others and duplicates the best.
 *
 * A cache is a tensor [S, Tmax, Hkv, D] (the layout {@linkcode attentionDecode} reads): sequence
 * s holds the key or value of its position t at row s·Tmax + t. K and V always move together,
 * so every dispatch moves both.
 * @module
 */
import type { Gpu, KernelFile, Tensor } from "../engine/gpu.ts";
import { cdiv, grid, kernelFile, uniformStruct } from "../engine/gpu.ts";

/** kv_scatter: n source rows (new tokens) of w floats. */
const SCATTER_PARAMS = uniformStruct("ScatterParams", ["n", "w"]);
/** kv_gather: nseq destination sequences of tmax rows of w floats; the first tcopy are copied. */
const GATHER_PARAMS = uniformStruct("GatherParams", ["nseq", "w", "tmax", "tcopy"]);
/** kernels/kvcache.wgsl and its uniform structs (docs/kernels.md). */
export const KVCACHE_KERNELS: KernelFile = kernelFile("kvcache.wgsl", [
  SCATTER_PARAMS,
  GATHER_PARAMS,
]);

function spec(entry: string) {
  return KVCACHE_KERNELS.spec(entry, ["uniform", "read", "read", "read", "rw", "rw"]);
}

/** Floats per cache row (Hkv·D) and rows per sequence (Tmax) of a cache [S, Tmax, Hkv, D]. */
function cacheDims(op: string, kCache: Tensor, vCache: Tensor): { w: number; tmax: number } {
  if (kCache.shape.length !== 4) {
    throw new Error(`${op}: cache ${kCache.shape} is not [S, Tmax, Hkv, D]`);
  }
  if (
    vCache.shape.length !== 4 || vCache.shape.some((d, i) => d !== kCache.shape[i]) ||
    kCache.dtype !== "f32" || vCache.dtype !== "f32"
  ) {
    throw new Error(`${op}: K cache ${kCache.shape} and V cache ${vCache.shape} differ`);
  }
  return { w: kCache.shape[2] * kCache.shape[3], tmax: kCache.shape[1] };
}

/**
 * Writes the new rows k, v [n, Hkv, D] (or [n, Hkv·D]) into the caches: row r goes to flat cache
 * row `rows[r]` (u32 [n], = sequence·Tmax + position). Rows out of range are a caller bug the
 * kernel cannot report, so the caller validates them on the host.
 */
export async function kvScatter(
  gpu: Gpu,
  k: Tensor,
  v: Tensor,
  rows: Tensor,
  kCache: Tensor,
  vCache: Tensor,
): Promise<void> {
  const op = "kvScatter";
  const { w } = cacheDims(op, kCache, vCache);
  const n = rows.size;
  if (rows.dtype !== "u32") throw new Error(`${op}: rows must be u32, got ${rows.dtype}`);
  if (k.size !== n * w || v.size !== n * w) {
    throw new Error(`${op}: k ${k.shape} / v ${v.shape} are not [${n}, ${w}] rows`);
  }
  if (n === 0) return;
  const kern = await gpu.kernel(spec("kv_scatter"));
  const params = SCATTER_PARAMS.pack({ n, w });
  gpu.dispatch(kern, [params, k, v, rows, kCache, vCache], grid(cdiv(n * w, 256)));
}

/**
 * New caches [S, Tmax, Hkv, D] whose sequence s is sequence `parents[s]` (u32 [S]) of the given
 * caches, copying only the first `copyRows` positions of each (the rest is left undefined:
 * decoding never reads past a sequence's length). Parents may repeat and may be dropped.
 */
export async function kvGather(
  gpu: Gpu,
  kCache: Tensor,
  vCache: Tensor,
  parents: Tensor,
  copyRows: number,
): Promise<{ k: Tensor; v: Tensor }> {
  const op = "kvGather";
  const { w, tmax } = cacheDims(op, kCache, vCache);
  if (parents.dtype !== "u32") throw new Error(`${op}: parents must be u32`);
  if (!Number.isInteger(copyRows) || copyRows < 0 || copyRows > tmax) {
    throw new Error(`${op}: copyRows ${copyRows} is outside [0, ${tmax}]`);
  }
  const s = parents.size;
  const shape = [s, tmax, kCache.shape[2], kCache.shape[3]];
  const k = gpu.empty(shape), v = gpu.empty(shape);
  const total = s * copyRows * w;
  if (total === 0) return { k, v };
  const kern = await gpu.kernel(spec("kv_gather"));
  const params = GATHER_PARAMS.pack({ nseq: s, w, tmax, tcopy: copyRows });
  gpu.dispatch(kern, [params, kCache, vCache, parents, k, v], grid(cdiv(total, 256)));
  return { k, v };
}
