import { assertEquals } from "@std/assert";
import type { Tensor } from "../../lib/engine/gpu.ts";
import { embedding, embeddingBackward, embeddingBackwardPlan } from "../../lib/ops/embedding.ts";
import * as ref from "../../lib/ref/embedding.ts";
import { Rng } from "../../lib/engine/rand.ts";
import { assertClose, finiteDifferences, randn, testGpu } from "../_util.ts";

const V = 10;
/** Row counts of the sharded layout: the table split in three uneven shards. */
const SHARD_ROWS = [3, 3, 4];

/** Ids in the table, with repeats; two out-of-range ones (a negative and one past V) if n > 3. */
function makeIds(n: number, seed: number): Int32Array {
  const rng = new Rng(seed);
  const ids = Int32Array.from({ length: n }, () => rng.int(V));
  if (n > 3) ids.set([-1, V + 3], 1);
  return ids;
}

function uploadShards(data: Float32Array, c: number): Tensor[] {
  return SHARD_ROWS.map((rows, i) => {
    const start = SHARD_ROWS.slice(0, i).reduce((a, b) => a + b, 0);
    return gpu.upload(data.subarray(start * c, (start + rows) * c), [rows, c]);
  });
}

const gpu = await testGpu();
const SHAPES: [number, number][] = [[1, 1], [7, 1], [1, 5], [33, 5], [9, 300]];

Deno.test("embedding forward matches the reference (whole and sharded tables, i32/u32 ids)", async () => {
  for (const [n, c] of SHAPES) {
    const table = randn(V * c, c);
    const ids = makeIds(n, n + c);
    const want = ref.embeddingForward(table, V, c, ids);
    const whole = gpu.upload(table, [V, c]);
    const shards = uploadShards(table, c);
    const idsI = gpu.upload(ids, [n], "i32");
    const idsU = gpu.upload(new Uint32Array(ids.buffer), [n], "u32");
    // Garbage in `out` checks that out-of-range ids write zeros rather than leave it untouched.
    const prefilled = gpu.upload(randn(n * c, 1), [n, c]);
    const outs = [
      await embedding(gpu, whole, idsI),
      await embedding(gpu, whole, idsU),
      await embedding(gpu, shards, idsI, prefilled),
    ];
    const got = await gpu.readMany(outs);
    got.forEach((g, i) => assertClose(g, want, { rtol: 0, atol: 0, label: `[${n}, ${c}] #${i}` }));
    for (const t of [whole, ...shards, idsI, idsU, ...outs]) t.release();
  }
});

Deno.test("embeddingBackwardPlan groups positions by id in ascending order", () => {
  const plan = embeddingBackwardPlan(Int32Array.from([4, 2, 4, -100, 7, 2, 4]));
  assertEquals(plan.uniqueIds, Uint32Array.from([2, 4, 7]));
  assertEquals(plan.offsets, Uint32Array.from([0, 2, 5, 6]));
  assertEquals(plan.positions, Uint32Array.from([1, 5, 0, 2, 6, 4]));
  const empty = embeddingBackwardPlan(new Uint32Array(0));
  assertEquals([empty.uniqueIds.length, empty.offsets, empty.positions.length], [
    0,
    Uint32Array.from([0]),
    0,
  ]);
});

Deno.test("embedding backward accumulates the reference gradient, deterministically", async () => {
  for (const [n, c] of SHAPES) {
    const ids = makeIds(n, 3 * n + c);
    const dOut = randn(n * c, n);
    const base = randn(V * c, 77);
    const want = ref.embeddingBackward(dOut, ids, V, c).map((g, i) => g + base[i]);
    const tdOut = gpu.upload(dOut, [n, c]);
    const whole = gpu.upload(base, [V, c]);
    const again = gpu.upload(base, [V, c]);
    const shards = uploadShards(base, c);
    const plan = embeddingBackwardPlan(ids);
    await embeddingBackward(gpu, tdOut, ids, null, whole);
    await embeddingBackward(gpu, tdOut, null, plan, again);
    await embeddingBackward(gpu, tdOut, null, plan, shards);
    const [gw, ga, ...gs] = await gpu.readMany([whole, again, ...shards]);
    const label = `[${n}, ${c}]`;
    assertClose(gw, want, { rtol: 1e-6, atol: 1e-6, label: `whole ${label}` });
    assertEquals(ga, gw, `repeat ${label}`);
    const joined = new Float32Array(V * c);
    let off = 0;
    for (const s of gs) {
      joined.set(s, off);
      off += s.length;
    }
    assertEquals(joined, gw, `sharded ${label}`);
    for (const t of [tdOut, whole, again, ...shards]) t.release();
  }
});

Deno.test("embedding reference backward matches central finite differences", () => {
  const n = 6, c = 3, v = 4;
  const ids = [1, 3, 1, 0, 9, 1];
  const table = Array.from(randn(v * c, 3)), dOut = Array.from(randn(n * c, 4));
  const loss = (tb: number[]) =>
    ref.embeddingForward(tb, v, c, ids).reduce((s, y, i) => s + y * dOut[i], 0);
  const fd = finiteDifferences(table, () => loss(table));
  assertClose(ref.embeddingBackward(dOut, ids, v, c), fd, { rtol: 1e-6, atol: 1e-9, label: "fd" });
});
