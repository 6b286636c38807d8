import { assertEquals } from "@std/assert";
import { AdamW, gradNorm, NORM_CHUNK, zeroGrads } from "../../lib/ops/optim.ts";
import { adamwStepRef, clipScaleRef, gradNormRef } from "../../lib/ref/optim.ts";
import { assertClose, randn, testGpu } from "../_util.ts";

Deno.test("gradNorm and clip scale match clip_grad_norm_ over several tensors", async () => {
  const gpu = await testGpu();
  const sizes = [1, 7, 1000, 2 * NORM_CHUNK + 3];
  const host = sizes.map((n, i) => randn(n, 10 + i));
  const grads = host.map((h, i) => gpu.upload(h, [sizes[i]]));
  const norm = gradNormRef(host);
  const cases: (number | undefined)[] = [undefined, norm / 3, norm * 2, 1e-3];
  const results = [];
  for (const maxNorm of cases) results.push(await gradNorm(gpu, grads, maxNorm));
  const single = await gradNorm(gpu, [grads[0]], 0.5);
  const empty = await gradNorm(gpu, []);
  const read = await gpu.readMany(results.flatMap((r) => [r.norm, r.clipScale]));
  cases.forEach((maxNorm, i) => {
    const label = `maxNorm ${maxNorm}`;
    assertClose(read[2 * i], [norm], { rtol: 1e-6, label });
    const scale = maxNorm === undefined ? 1 : clipScaleRef(norm, maxNorm);
    assertClose(read[2 * i + 1], [scale], { rtol: 1e-6, label });
  });
  const [sn, ss, en, es] = await gpu.readMany([
    single.norm,
    single.clipScale,
    empty.norm,
    empty.clipScale,
  ]);
  assertClose(sn, [Math.abs(host[0][0])], { rtol: 1e-6, label: "single" });
  assertClose(ss, [clipScaleRef(Math.abs(host[0][0]), 0.5)], { rtol: 1e-6, label: "single" });
  assertEquals([en[0], es[0]], [0, 1]);
  for (const t of [...grads, ...results.flatMap((r) => [r.norm, r.clipScale])]) t.release();
});

Deno.test("zeroGrads clears every gradient", async () => {
  const gpu = await testGpu();
  const grads = [1, 7, 1000].map((n, i) => gpu.upload(randn(n, 30 + i), [n]));
  zeroGrads(gpu, grads);
  for (const r of await gpu.readMany(grads)) assertEquals(r.every((x) => x === 0), true);
  for (const g of grads) g.release();
});

interface Case {
  label: string;
  weightDecay: number;
  maxNorm?: number;
  /** Per-parameter decay flags (sizes 1, 7, 1000). */
  decay: boolean[];
  gradScale: number;
}

const CASES: Case[] = [
  { label: "plain Adam", weightDecay: 0, decay: [true, true, true], gradScale: 1 },
  { label: "weight decay", weightDecay: 0.1, decay: [true, false, true], gradScale: 1 },
  // Gradients of norm ~36 clipped to 1, so the scale is far below 1 at every step.
  { label: "clipped", weightDecay: 0, maxNorm: 1, decay: [true, true, true], gradScale: 2 },
  {
    label: "clipped + decay",
    weightDecay: 0.05,
    maxNorm: 5,
    decay: [false, true, true],
    gradScale: 0.5,
  },
  // maxNorm above the norm: scale clamped to exactly 1.
  {
    label: "clip inactive",
    weightDecay: 0.01,
    maxNorm: 1e6,
    decay: [true, true, true],
    gradScale: 1,
  },
];

Deno.test("AdamW matches the f64 reference over several steps", async () => {
  const gpu = await testGpu();
  const sizes = [1, 7, 1000];
  const steps = 5;
  for (const c of CASES) {
    const p0 = sizes.map((n, i) => randn(n, 100 + i));
    const params = sizes.map((n, i) => ({
      name: `p${i}`,
      param: gpu.upload(p0[i], [n]),
      grad: gpu.empty([n]),
      decay: c.decay[i],
    }));
    const opt = new AdamW(gpu, params, { lr: 0.05, weightDecay: c.weightDecay });
    const refP = p0.map((p) => Float64Array.from(p));
    const refM = sizes.map((n) => new Float64Array(n));
    const refV = sizes.map((n) => new Float64Array(n));
    for (let t = 1; t <= steps; t++) {
      const lr = 0.05 * (1 - (t - 1) / (2 * steps));
      const g = sizes.map((n, i) => randn(n, 1000 * t + i, c.gradScale));
      params.forEach((p, i) => gpu.write(p.grad, g[i]));
      const { gradNorm: normT, clipScale } = await opt.step(
        lr,
        c.maxNorm === undefined ? undefined : { maxNorm: c.maxNorm },
      );
      const norm = gradNormRef(g);
      const scale = c.maxNorm === undefined ? 1 : clipScaleRef(norm, c.maxNorm);
      sizes.forEach((_, i) => {
        const wd = c.decay[i] ? c.weightDecay : 0;
        adamwStepRef(refP[i], g[i], refM[i], refV[i], t, {
          lr,
          beta1: 0.9,
          beta2: 0.999,
          eps: 1e-8,
          weightDecay: wd,
        }, scale);
      });
      const st = opt.state();
      const read = await gpu.readMany([
        normT,
        clipScale,
        ...params.map((p) => p.param),
        ...st.moments.flatMap((m) => [m.expAvg, m.expAvgSq]),
      ]);
      const label = `${c.label} step ${t}`;
      assertClose(read[0], [norm], { rtol: 1e-6, label: `${label} norm` });
      assertClose(read[1], [scale], { rtol: 1e-6, label: `${label} scale` });
      sizes.forEach((_, i) => {
        assertClose(read[2 + i], refP[i], { rtol: 1e-5, atol: 1e-6, label: `${label} p${i}` });
        const m = read[2 + sizes.length + 2 * i], v = read[3 + sizes.length + 2 * i];
        assertClose(m, refM[i], { rtol: 1e-5, atol: 1e-7, label: `${label} m${i}` });
        assertClose(v, refV[i], { rtol: 1e-5, atol: 1e-9, label: `${label} v${i}` });
      });
    }
    assertEquals(opt.stepCount, steps);
    opt.release();
    for (const p of params) {
      p.param.release();
      p.grad.release();
    }
  }
});

Deno.test("AdamW state round-trips through readState/load", async () => {
  const gpu = await testGpu();
  const sizes = [7, 300];
  const init = sizes.map((n, i) => randn(n, 500 + i));
  const grads = [1, 2, 3].map((t) => sizes.map((n, i) => randn(n, 600 + 10 * t + i)));
  const make = () =>
    sizes.map((n, i) => ({
      name: `w${i}`,
      param: gpu.upload(init[i], [n]),
      grad: gpu.empty([n]),
      decay: true,
    }));
  // Uninterrupted: three steps.
  const a = make();
  const optA = new AdamW(gpu, a, { lr: 0.01 });
  for (const g of grads) {
    a.forEach((p, i) => gpu.write(p.grad, g[i]));
    await optA.step(0.01, { maxNorm: 1 });
  }
  // Interrupted after two steps: state saved, a fresh optimizer (and params) restored from it.
  const b = make();
  const optB = new AdamW(gpu, b, { lr: 0.01 });
  for (const g of grads.slice(0, 2)) {
    b.forEach((p, i) => gpu.write(p.grad, g[i]));
    await optB.step(0.01, { maxNorm: 1 });
  }
  const saved = await optB.readState();
  const savedParams = await gpu.readMany(b.map((p) => p.param));
  const c = make();
  c.forEach((p, i) => gpu.write(p.param, savedParams[i] as Float32Array));
  const optC = new AdamW(gpu, c, { lr: 0.01 });
  optC.load(saved);
  assertEquals(optC.stepCount, 2);
  c.forEach((p, i) => gpu.write(p.grad, grads[2][i]));
  await optC.step(0.01, { maxNorm: 1 });
  const ra = await gpu.readMany(a.map((p) => p.param));
  const rc = await gpu.readMany(c.map((p) => p.param));
  ra.forEach((x, i) => assertEquals(Array.from(rc[i]), Array.from(x), `param ${i}`));
  for (const o of [optA, optB, optC]) o.release();
  for (const p of [...a, ...b, ...c]) {
    p.param.release();
    p.grad.release();
  }
});
