/**
 * Embedding lookup and its deterministic backward (kernels/embedding.wgsl). Tables above the
 * storage-binding limit are passed as row shards (see `splitRows` in ../gpu.ts): shard i holds
 * the rows that follow those of shards 0..i-1. The forward's table may be f16 (a frozen embedding
 * stored in half precision); the rows come out f32.
 * @module
 */
import type { BindingKind, Gpu, Tensor } from "../engine/gpu.ts";
import { cdiv, grid, type KernelFile, kernelFile, uniformStruct } from "../engine/gpu.ts";

/**
 * embedding_forward: n tokens of c columns against the shard of rows [row_start, row_start +
 * row_count); zero_others = 1 on the first shard's dispatch writes zeros for ids outside it.
 */
const FORWARD_PARAMS = uniformStruct("Params", ["n", "c", "row_start", "row_count", "zero_others"]);
/**
 * embedding_backward: u distinct ids of c columns, the shard's rows, and where the plan buffer
 * keeps its offsets and positions.
 */
const BACKWARD_PARAMS = uniformStruct("BackParams", [
  "u",
  "c",
  "row_start",
  "row_count",
  "offsets_at",
  "positions_at",
]);
/** to_f32: the elements. */
const CAST_PARAMS = uniformStruct("CastParams", ["n"]);
/** kernels/embedding.wgsl and its uniform structs (docs/kernels.md). */
export const EMBEDDING_KERNELS: KernelFile = kernelFile("embedding.wgsl", [
  FORWARD_PARAMS,
  BACKWARD_PARAMS,
  CAST_PARAMS,
]);

function spec(entry: string, wtype: "f32" | "f16", bindings: readonly BindingKind[]) {
  return EMBEDDING_KERNELS.spec(entry, bindings, { WTYPE: wtype });
}

/** An embedding table [V, C], whole or as consecutive row shards [rows_i, C]. */
export type EmbeddingTable = Tensor | readonly Tensor[];

interface Shard {
  tensor: Tensor;
  rowStart: number;
  rows: number;
}

function shardsOf(
  op: string,
  table: EmbeddingTable,
  allowF16 = false,
): { shards: Shard[]; c: number; dtype: "f32" | "f16" } {
  const list: readonly Tensor[] = Array.isArray(table) ? table : [table as Tensor];
  if (list.length === 0) throw new Error(`${op}: no table shards`);
  const c = list[0].shape[list[0].shape.length - 1];
  const dtype = list[0].dtype === "f16" && allowF16 ? "f16" : "f32";
  const shards: Shard[] = [];
  let rowStart = 0;
  for (const tensor of list) {
    if (tensor.shape.length !== 2 || tensor.shape[1] !== c || tensor.dtype !== dtype) {
      throw new Error(
        `${op}: shard ${tensor.shape}/${tensor.dtype} is not an ${dtype} [rows, ${c}]`,
      );
    }
    shards.push({ tensor, rowStart, rows: tensor.shape[0] });
    rowStart += tensor.shape[0];
  }
  return { shards, c, dtype };
}

/**
 * out[t, :] = table[ids[t], :] for ids u32 or i32 [N]; returns f32 [N, C] (an f16 table's rows
 * are widened). Ids outside the table (including negative ones) give zero rows. `out` receives
 * the rows if given.
 */
export async function embedding(
  gpu: Gpu,
  table: EmbeddingTable,
  ids: Tensor,
  out?: Tensor,
): Promise<Tensor> {
  const { shards, c, dtype } = shardsOf("embedding", table, true);
  if (dtype === "f16" && !gpu.hasF16) throw new Error("embedding: f16 table without shader-f16");
  const n = ids.size;
  const o = out ?? gpu.empty([n, c]);
  if (o.size !== n * c || o.dtype !== "f32") {
    throw new Error(`embedding: out ${o.shape}/${o.dtype} for f32 [${n}, ${c}]`);
  }
  const k = await gpu.kernel(spec("embedding_forward", dtype, ["uniform", "read", "read", "rw"]));
  shards.forEach((s, i) => {
    const params = FORWARD_PARAMS.pack({
      n,
      c,
      row_start: s.rowStart,
      row_count: s.rows,
      zero_others: i === 0 ? 1 : 0,
    });
    gpu.dispatch(k, [params, s.tensor, ids, o], grid(cdiv(n * c, 256)));
  });
  return o;
}

/**
 * CSR list of the token positions of each distinct id, built on the host for
 * {@linkcode embeddingBackward}.
 */
export interface EmbeddingBackwardPlan {
  /** Distinct ids in ascending order, [U]. */
  uniqueIds: Uint32Array;
  /** positions[offsets[u] .. offsets[u+1]) are the tokens with id uniqueIds[u]; [U+1]. */
  offsets: Uint32Array;
  /** Token positions grouped by id, ascending within each id. */
  positions: Uint32Array;
}

/**
 * Groups token positions by id. Negative ids (and u32 ids of 2³¹ or more, which are negative
 * i32s) are skipped: they contribute no gradient.
 */
export function embeddingBackwardPlan(ids: Int32Array | Uint32Array): EmbeddingBackwardPlan {
  const valid: number[] = [];
  for (let t = 0; t < ids.length; t++) if (ids[t] >= 0 && ids[t] < 2 ** 31) valid.push(t);
  // Array.prototype.sort is stable, so positions stay ascending within an id.
  valid.sort((a, b) => ids[a] - ids[b]);
  const positions = Uint32Array.from(valid);
  const unique: number[] = [];
  const offsets: number[] = [];
  for (let j = 0; j < positions.length; j++) {
    if (j === 0 || ids[positions[j]] !== ids[positions[j - 1]]) {
      unique.push(ids[positions[j]]);
      offsets.push(j);
    }
  }
  offsets.push(positions.length);
  return {
    uniqueIds: Uint32Array.from(unique),
    offsets: Uint32Array.from(offsets),
    positions,
  };
}

/**
 * Backward of {@linkcode embedding} (full fine-tuning only): adds each token's row of dOut [N, C]
 * into dTable's row for its id, deterministically and without float atomics. `plan` comes from
 * {@linkcode embeddingBackwardPlan}; when it is null the plan is built here from host `ids`.
 * dTable is whole or sharded like the forward's table. Ids outside dTable are skipped.
 */
export async function embeddingBackward(
  gpu: Gpu,
  dOut: Tensor,
  ids: Int32Array | Uint32Array | Tensor | null,
  plan: EmbeddingBackwardPlan | null,
  dTable: EmbeddingTable,
): Promise<void> {
  const { shards, c } = shardsOf("embeddingBackward", dTable);
  if (!plan) {
    if (!ids || !(ids instanceof Int32Array || ids instanceof Uint32Array)) {
      throw new Error("embeddingBackward: without a plan, host ids are needed to build one");
    }
    plan = embeddingBackwardPlan(ids);
  }
  const u = plan.uniqueIds.length;
  if (u === 0) return;
  const n = dOut.size / c;
  if (!Number.isInteger(n)) throw new Error(`embeddingBackward: dOut ${dOut.shape} for C=${c}`);
  const maxPos = plan.positions.reduce((m, v) => Math.max(m, v), 0);
  if (maxPos >= n) throw new Error(`embeddingBackward: plan has token ${maxPos} of ${n}`);
  const packed = new Uint32Array(2 * u + 1 + plan.positions.length);
  packed.set(plan.uniqueIds, 0);
  packed.set(plan.offsets, u);
  packed.set(plan.positions, 2 * u + 1);
  const tplan = gpu.upload(packed, [packed.length], "u32");
  const k = await gpu.kernel(spec("embedding_backward", "f32", ["uniform", "read", "read", "rw"]));
  for (const s of shards) {
    const params = BACKWARD_PARAMS.pack({
      u,
      c,
      row_start: s.rowStart,
      row_count: s.rows,
      offsets_at: u,
      positions_at: 2 * u + 1,
    });
    gpu.dispatch(k, [params, dOut, tplan, s.tensor], grid(cdiv(u * c, 256)));
  }
  // Safe to recycle now: a later upload into this buffer submits the recorded work first.
  tplan.release();
}

/**
 * An f32 copy of a tensor (f16 widened exactly; f32 copied), as a new tensor of the same shape:
 * for code that needs an f32 view of a frozen f16 weight (e.g. merging an adapter into it).
 */
export async function toF32(gpu: Gpu, t: Tensor): Promise<Tensor> {
  const out = gpu.empty(t.shape);
  if (t.dtype === "f32") {
    gpu.copy(t, out);
    return out;
  }
  if (t.dtype !== "f16") throw new Error(`toF32: ${t.dtype} is not a float type`);
  const k = await gpu.kernel(spec("to_f32", "f16", ["uniform", "read", "rw"]));
  gpu.dispatch(k, [CAST_PARAMS.pack({ n: t.size }), t, out], grid(cdiv(t.size, 256)));
  return out;
}
