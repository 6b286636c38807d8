/** KV-cache scatter and gather against the plain-loop reference. */
import { assertRejects } from "@std/assert";
import { kvGather, kvScatter } from "../../lib/ops/kvcache.ts";
import { kvGatherRef, kvScatterRef } from "../../lib/ref/kvcache.ts";
import { assertClose, randn, testGpu } from "../_util.ts";

Deno.test("kvScatter writes each new row into its sequence position and nothing else", async () => {
  const gpu = await testGpu();
  const cases = [
    { s: 3, tmax: 5, hkv: 2, d: 3, rows: [0, 7, 14, 9] },
    { s: 1, tmax: 1, hkv: 1, d: 1, rows: [0] },
    // Over 256 elements, so the flat index crosses workgroups.
    { s: 2, tmax: 40, hkv: 2, d: 8, rows: Array.from({ length: 37 }, (_, i) => (i * 13) % 80) },
  ];
  for (const [ci, c] of cases.entries()) {
    const w = c.hkv * c.d, size = c.s * c.tmax * w, n = c.rows.length;
    const k0 = randn(size, 10 + ci), v0 = randn(size, 20 + ci);
    const nk = randn(n * w, 30 + ci), nv = randn(n * w, 40 + ci);
    const shape = [c.s, c.tmax, c.hkv, c.d];
    const kc = gpu.upload(k0, shape), vc = gpu.upload(v0, shape);
    const tk = gpu.upload(nk, [n, c.hkv, c.d]), tv = gpu.upload(nv, [n, c.hkv, c.d]);
    const rows = gpu.upload(c.rows, [n], "u32");
    await kvScatter(gpu, tk, tv, rows, kc, vc);
    const [gk, gv] = await gpu.readMany([kc, vc]);
    // Rows are distinct in every case ((i·13) mod 80 is injective), so write order is moot.
    assertClose(gk, kvScatterRef(k0, w, nk, c.rows), { atol: 0, rtol: 0, label: `K ${ci}` });
    assertClose(gv, kvScatterRef(v0, w, nv, c.rows), { atol: 0, rtol: 0, label: `V ${ci}` });
    for (const t of [kc, vc, tk, tv, rows]) t.release();
  }
});

Deno.test("kvGather reorders, duplicates and drops sequences, copying the valid prefix", async () => {
  const gpu = await testGpu();
  const cases = [
    { s: 3, tmax: 5, hkv: 2, d: 3, parents: [2, 0, 0, 1], copy: 3 },
    { s: 1, tmax: 4, hkv: 1, d: 1, parents: [0], copy: 4 },
    { s: 4, tmax: 6, hkv: 2, d: 4, parents: [3, 1], copy: 1 },
    { s: 2, tmax: 30, hkv: 2, d: 8, parents: [1, 1, 0, 1, 0], copy: 29 },
  ];
  for (const [ci, c] of cases.entries()) {
    const w = c.hkv * c.d, size = c.s * c.tmax * w;
    const k0 = randn(size, 50 + ci), v0 = randn(size, 60 + ci);
    const shape = [c.s, c.tmax, c.hkv, c.d];
    const kc = gpu.upload(k0, shape), vc = gpu.upload(v0, shape);
    const parents = gpu.upload(c.parents, [c.parents.length], "u32");
    const out = await kvGather(gpu, kc, vc, parents, c.copy);
    const [gk, gv] = await gpu.readMany([out.k, out.v]);
    const rk = kvGatherRef(k0, c.tmax, w, c.parents, c.copy);
    const rv = kvGatherRef(v0, c.tmax, w, c.parents, c.copy);
    // Only the copied prefix of each sequence is defined.
    const pick = (a: ArrayLike<number>) =>
      Array.from(a).filter((_, i) => Math.floor(i / w) % c.tmax < c.copy);
    assertClose(pick(gk), pick(rk), { atol: 0, rtol: 0, label: `K ${ci}` });
    assertClose(pick(gv), pick(rv), { atol: 0, rtol: 0, label: `V ${ci}` });
    for (const t of [kc, vc, parents, out.k, out.v]) t.release();
  }
});

Deno.test("kvScatter and kvGather reject mismatched shapes", async () => {
  const gpu = await testGpu();
  const kc = gpu.zeros([2, 3, 1, 2]), vc = gpu.zeros([2, 3, 2, 1]);
  const rows = gpu.upload([0], [1], "u32");
  const k = gpu.zeros([1, 2]), v = gpu.zeros([1, 2]);
  await assertRejects(() => kvScatter(gpu, k, v, rows, kc, vc), Error, "differ");
  await assertRejects(() => kvScatter(gpu, k, v, rows, kc.reshape([6, 2]), kc), Error, "not [S");
  await assertRejects(() => kvGather(gpu, kc, kc, rows, 4), Error, "copyRows");
  for (const t of [kc, vc, rows, k, v]) t.release();
});
