import { assert, assertAlmostEquals, assertEquals, assertRejects } from "@std/assert";
import { formatProfile, profileDispatches } from "../../bench/profile.ts";
import type { Tensor } from "../../lib/engine/gpu.ts";
import { matmul } from "../../lib/ops/matmul.ts";
import { matmulRef } from "../../lib/ref/matmul.ts";
import { assertClose, randn, testGpu } from "../_util.ts";

Deno.test("profileDispatches: replays each recorded dispatch, grouped by kernel and shape", async (t) => {
  const gpu = await testGpu();
  const big = 384, small = 8;
  const av = randn(big * big, 1), bv = randn(big * big, 2);
  const sav = randn(small * small, 3), sbv = randn(small * small, 4), cv = randn(small * small, 5);
  const a = gpu.upload(av, [big, big]), b = gpu.upload(bv, [big, big]);
  const sa = gpu.upload(sav, [small, small]), sb = gpu.upload(sbv, [small, small]);
  const acc = gpu.upload(cv, [small, small]);
  const outs: Tensor[] = [];
  let recorded = 0;
  const rounds = 2;
  const prof = await profileDispatches(gpu, async () => {
    const before = gpu.dispatches;
    outs.push(await matmul(gpu, a, b, { variant: "cpu" }));
    outs.push(await matmul(gpu, a, b, { variant: "cpu" }));
    await matmul(gpu, sa, sb, { variant: "cpu", out: acc, accumulate: true });
    recorded = gpu.dispatches - before;
    await gpu.sync();
  }, rounds);

  await t.step("one row per kernel and shape, the slowest first, summing to the total", () => {
    assertEquals(prof.dispatches, recorded);
    assertEquals(prof.rows.length, 2);
    const [first, second] = prof.rows;
    assert(first.kernel.startsWith("matmul.wgsl#"), first.kernel);
    assertEquals(first.calls, 2, "the two 384³ products share a row");
    assert(first.uniforms.startsWith(`${big},${big},${big},`), first.uniforms);
    assertEquals(second.calls, 1);
    assert(second.defines.includes("ACC=true"), second.defines);
    assert(first.ms > second.ms, `${first.ms} vs ${second.ms}`);
    assertAlmostEquals(prof.replayMs, first.ms + second.ms, 1e-9);
    assert(prof.awaitMs > 0 && prof.batchedMs > 0);
    assert(formatProfile(prof).includes("| matmul.wgsl#"));
  });

  await t.step(
    "the run computed as without profiling; every dispatch replayed `rounds` times",
    async () => {
      const [p1, p2, got] = await gpu.readMany([...outs, acc]);
      const ref = matmulRef(av, bv, big, big, big, { transA: false, transB: false });
      const tol = { rtol: 1e-5, atol: 2e-6 * Math.sqrt(big) };
      assertClose(p1, ref, { ...tol, label: "first product" });
      assertClose(p2, ref, { ...tol, label: "second product" });
      // The accumulating product ran once in the step and once per replay round.
      const prod = matmulRef(sav, sbv, small, small, small, { transA: false, transB: false });
      const want = cv.map((c, i) => c + (1 + rounds) * prod[i]);
      assertClose(got, want, { rtol: 1e-5, atol: 1e-5, label: "accumulated" });
    },
  );

  await t.step("the hook is removed afterwards, and profiles do not nest", async () => {
    assertEquals(gpu.onDispatch, undefined);
    await assertRejects(
      () =>
        profileDispatches(
          gpu,
          () => profileDispatches(gpu, () => Promise.resolve()).then(() => {}),
        ),
      Error,
      "profiled already",
    );
    assertEquals(gpu.onDispatch, undefined);
  });
  for (const x of [a, b, sa, sb, acc, ...outs]) x.release();
});
