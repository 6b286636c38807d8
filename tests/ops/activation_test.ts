import { silu, siluBackward, swiglu, swigluBackward } from "../../lib/ops/activation.ts";
import * as ref from "../../lib/ref/activation.ts";
import { assertClose, randn, testGpu } from "../_util.ts";

// [N, F]: 1-row and 1-column cases and sizes that are not multiples of the workgroup size.
const SHAPES: [number, number][] = [[1, 1], [1, 7], [9, 1], [3, 100], [5, 301]];

/** Inputs spread over [-12, 12) plus extremes that would overflow a naive exp. */
function inputs(n: number, seed: number): Float32Array {
  const x = randn(n, seed, 12);
  if (n > 4) x.set([-100, 100, -88.5, 0], 0);
  return x;
}

const TOL = { rtol: 1e-5, atol: 1e-6 };

Deno.test("silu and siluBackward match the f64 reference", async () => {
  const gpu = await testGpu();
  for (const [n, f] of SHAPES) {
    const x = inputs(n * f, n + f), dy = randn(n * f, 3);
    const tx = gpu.upload(x, [n, f]), tdy = gpu.upload(dy, [n, f]);
    const y = await silu(gpu, tx);
    const dx = await siluBackward(gpu, tx, tdy);
    const [gy, gdx] = await gpu.readMany([y, dx]);
    assertClose(gy, ref.siluForward(x), { ...TOL, label: `silu [${n}, ${f}]` });
    assertClose(gdx, ref.siluBackward(x, dy), { ...TOL, label: `silu dx [${n}, ${f}]` });
    for (const t of [tx, tdy, y, dx]) t.release();
  }
});

Deno.test("swiglu and swigluBackward match the f64 reference", async () => {
  const gpu = await testGpu();
  for (const [n, f] of SHAPES) {
    const gate = inputs(n * f, 7 * n + f), up = randn(n * f, 8, 3), dh = randn(n * f, 9);
    const tg = gpu.upload(gate, [n, f]), tu = gpu.upload(up, [n, f]), tdh = gpu.upload(dh, [n, f]);
    const h = await swiglu(gpu, tg, tu);
    const { dGate, dUp } = await swigluBackward(gpu, tg, tu, tdh);
    const [gh, gdg, gdu] = await gpu.readMany([h, dGate, dUp]);
    const r = ref.swigluBackward(gate, up, dh);
    assertClose(gh, ref.swigluForward(gate, up), { ...TOL, label: `swiglu [${n}, ${f}]` });
    assertClose(gdg, r.dGate, { ...TOL, label: `swiglu dGate [${n}, ${f}]` });
    assertClose(gdu, r.dUp, { ...TOL, label: `swiglu dUp [${n}, ${f}]` });
    for (const t of [tg, tu, tdh, h, dGate, dUp]) t.release();
  }
});

Deno.test("activation reference backwards match central finite differences", () => {
  const n = 40;
  const x = Array.from(randn(n, 21, 6)), up = Array.from(randn(n, 22, 2));
  const dy = Array.from(randn(n, 23));
  const h = 1e-6;
  // Each output depends on its own element only, so one central difference per element.
  const fd = (fn: (v: number, i: number) => number) =>
    x.map((v, i) => (fn(v + h, i) - fn(v - h, i)) / (2 * h));
  const siluOf = (v: number) => ref.siluForward([v])[0];
  const fdSilu = fd((v, i) => siluOf(v) * dy[i]);
  assertClose(ref.siluBackward(x, dy), fdSilu, { rtol: 1e-6, atol: 1e-9, label: "fd silu" });
  const { dGate, dUp } = ref.swigluBackward(x, up, dy);
  const fdGate = fd((v, i) => ref.swigluForward([v], [up[i]])[0] * dy[i]);
  const fdUp = up.map((u, i) =>
    (ref.swigluForward([x[i]], [u + h])[0] - ref.swigluForward([x[i]], [u - h])[0]) * dy[i] /
    (2 * h)
  );
  assertClose(dGate, fdGate, { rtol: 1e-6, atol: 1e-9, label: "fd swiglu dGate" });
  assertClose(dUp, fdUp, { rtol: 1e-6, atol: 1e-9, label: "fd swiglu dUp" });
});
