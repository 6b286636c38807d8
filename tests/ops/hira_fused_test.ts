import { assert } from "@std/assert";
import type { Gpu, Tensor } from "../../lib/engine/gpu.ts";
import { f16ToF32, f32ToF16 } from "../../lib/engine/gpu.ts";
import {
  hiraDeltaWeight,
  hiraDeltaWeightDirect,
  hiraEffectiveWeight,
  hiraEffectiveWeightDirect,
  hiraForwardFused,
  hiraInputGradFused,
  type HiraProductOptions,
  type HiraVariant,
  hiraWeightGradsFused,
} from "../../lib/ops/hira.ts";
import {
  type AdapterDims,
  hiraBackwardRef,
  hiraForwardRef,
  hiraWeightRef,
} from "../../lib/ref/adapters.ts";
import { assertClose, randn, testGpu } from "../_util.ts";
import type { HiraAdapter } from "../../lib/model/adapters.ts";
import { attachAdapters } from "../../lib/model/attach.ts";
import { parseConfig } from "../../lib/model/config.ts";
import { randomModel } from "../../lib/model/load.ts";
import { Rng } from "../../lib/engine/rand.ts";

const VARIANTS: HiraVariant[] = ["cpu", "tiled"];

/** Ragged shapes (off every tile multiple), r = 1, N = 1, and a few multiples of 4. */
const SHAPES: AdapterDims[] = [
  { n: 5, inFeatures: 13, outFeatures: 9, r: 3 },
  { n: 1, inFeatures: 1, outFeatures: 1, r: 1 },
  { n: 1, inFeatures: 36, outFeatures: 20, r: 4 },
  { n: 70, inFeatures: 67, outFeatures: 131, r: 5 },
  { n: 33, inFeatures: 136, outFeatures: 72, r: 8 },
];

/** Indices of SHAPES the CPU variant runs on. */
const CPU_SHAPES = new Set([0, 1, 4]);

const TOL = { rtol: 1e-4, atol: 1e-4 };

interface Case {
  d: AdapterDims;
  x: Float32Array;
  dy: Float32Array;
  w0: Float32Array;
  a: Float32Array;
  b: Float32Array;
  t: { x: Tensor; dy: Tensor; w0: Tensor; a: Tensor; b: Tensor };
}

function makeCase(gpu: Gpu, d: AdapterDims, seed: number): Case {
  const x = randn(d.n * d.inFeatures, seed);
  const dy = randn(d.n * d.outFeatures, seed + 1);
  const w0 = randn(d.outFeatures * d.inFeatures, seed + 2);
  const a = randn(d.r * d.inFeatures, seed + 3, 0.5);
  const b = randn(d.outFeatures * d.r, seed + 4, 0.5);
  return {
    d,
    x,
    dy,
    w0,
    a,
    b,
    t: {
      x: gpu.upload(x, [d.n, d.inFeatures]),
      dy: gpu.upload(dy, [d.n, d.outFeatures]),
      w0: gpu.upload(w0, [d.outFeatures, d.inFeatures]),
      a: gpu.upload(a, [d.r, d.inFeatures]),
      b: gpu.upload(b, [d.outFeatures, d.r]),
    },
  };
}

function freeCase(c: Case): void {
  for (const t of Object.values(c.t)) t.release();
}

Deno.test("fused forward, dX and dA/dB match the f64 reference (both variants)", async () => {
  const gpu = await testGpu();
  for (const [si, d] of SHAPES.entries()) {
    const c = makeCase(gpu, d, 1000 + 10 * si);
    const ref = hiraBackwardRef(c.x, c.w0, c.a, c.b, c.dy, d);
    const yRef = hiraForwardRef(c.x, c.w0, c.a, c.b, d);
    // Gradients accumulate: start from non-zero values.
    const ga0 = randn(d.r * d.inFeatures, 7);
    const gb0 = randn(d.outFeatures * d.r, 8);
    const dx0 = randn(d.n * d.inFeatures, 9);
    // The CPU kernels take seconds to compile per shape on llvmpipe: they get the ragged,
    // r = 1 / N = 1 and multi-workgroup shapes; the tiled kernels get every shape.
    const variants = CPU_SHAPES.has(si) ? VARIANTS : VARIANTS.filter((v) => v !== "cpu");
    for (const variant of variants) {
      const label = `${variant} ${JSON.stringify(d)}`;
      const y = await hiraForwardFused(gpu, c.t.x, c.t.w0, c.t.a, c.t.b, { variant });
      const dx = await hiraInputGradFused(gpu, c.t.dy, c.t.w0, c.t.a, c.t.b, { variant });
      const dxAcc = gpu.upload(dx0, [d.n, d.inFeatures]);
      await hiraInputGradFused(gpu, c.t.dy, c.t.w0, c.t.a, c.t.b, {
        variant,
        out: dxAcc,
        accumulate: true,
      });
      const ga = gpu.upload(ga0, [d.r, d.inFeatures]);
      const gb = gpu.upload(gb0, [d.outFeatures, d.r]);
      await hiraWeightGradsFused(gpu, c.t.x, c.t.dy, c.t.w0, c.t.a, c.t.b, ga, gb, { variant });
      const [ry, rdx, rdxAcc, rga, rgb] = await gpu.readMany([y, dx, dxAcc, ga, gb]);
      assertClose(ry, yRef, { ...TOL, label: `${label} y` });
      assertClose(rdx, ref.dX, { ...TOL, label: `${label} dX` });
      assertClose(rdxAcc, ref.dX.map((v, i) => v + dx0[i]), { ...TOL, label: `${label} dX acc` });
      assertClose(rga, ref.dA.map((v, i) => v + ga0[i]), { ...TOL, label: `${label} dA` });
      assertClose(rgb, ref.dB.map((v, i) => v + gb0[i]), { ...TOL, label: `${label} dB` });
      for (const t of [y, dx, dxAcc, ga, gb]) t.release();
    }
    // Tiled gradients with each workgroup walking 2×2 tiles (ragged last blocks included).
    const ga = gpu.upload(ga0, [d.r, d.inFeatures]);
    const gb = gpu.upload(gb0, [d.outFeatures, d.r]);
    await hiraWeightGradsFused(gpu, c.t.x, c.t.dy, c.t.w0, c.t.a, c.t.b, ga, gb, {
      variant: "tiled",
      tileBlock: 2,
    });
    const [rga, rgb] = await gpu.readMany([ga, gb]);
    const label = `tiled 2×2 blocks ${JSON.stringify(d)}`;
    assertClose(rga, ref.dA.map((v, i) => v + ga0[i]), { ...TOL, label: `${label} dA` });
    assertClose(rgb, ref.dB.map((v, i) => v + gb0[i]), { ...TOL, label: `${label} dB` });
    ga.release();
    gb.release();
    freeCase(c);
  }
});

Deno.test("CPU fused gradients: workgroups that walk several 16-row blocks of out", async () => {
  const gpu = await testGpu();
  // out 300 is 19 blocks (the last ragged) in one column tile (in 40): 10 segments of 2 blocks.
  // Each block's G accumulators must start from zero, which caught a loop-local `var` that Naga
  // zeroes only once per invocation.
  const d: AdapterDims = { n: 9, inFeatures: 40, outFeatures: 300, r: 4 };
  const c = makeCase(gpu, d, 4242);
  const ref = hiraBackwardRef(c.x, c.w0, c.a, c.b, c.dy, d);
  const ga = gpu.zeros([d.r, d.inFeatures]);
  const gb = gpu.zeros([d.outFeatures, d.r]);
  await hiraWeightGradsFused(gpu, c.t.x, c.t.dy, c.t.w0, c.t.a, c.t.b, ga, gb, { variant: "cpu" });
  const [rga, rgb] = await gpu.readMany([ga, gb]);
  assertClose(rga, ref.dA, { ...TOL, label: "dA" });
  assertClose(rgb, ref.dB, { ...TOL, label: "dB" });
  ga.release();
  gb.release();
  freeCase(c);
});

Deno.test("CPU fused product: per-block and strip kernels match the reference", async () => {
  const gpu = await testGpu();
  // Ragged shapes (scalar loads), vec4 shapes whose K is not a whole number of strip chunks
  // (K = 136: chunks of 64, 64, 8; K = 300 at 4 output columns per invocation: 256, 44), rows
  // not a multiple of the register block, and several row segments (the last one short).
  const variants: HiraProductOptions[] = [
    { cpuStrip: false },
    { cpuStrip: true },
    { cpuStrip: true, cpuSegRows: 16 },
  ];
  const cases: AdapterDims[] = [
    SHAPES[3],
    { n: 50, inFeatures: 136, outFeatures: 72, r: 8 },
    { n: 40, inFeatures: 300, outFeatures: 24, r: 4 },
  ];
  for (const [ci, d] of cases.entries()) {
    const c = makeCase(gpu, d, 500 + ci);
    const yRef = hiraForwardRef(c.x, c.w0, c.a, c.b, d);
    const dxRef = hiraBackwardRef(c.x, c.w0, c.a, c.b, c.dy, d).dX;
    const dx0 = randn(d.n * d.inFeatures, 11);
    for (const v of variants) {
      const label = `${JSON.stringify(v)} ${JSON.stringify(d)}`;
      const opts = { variant: "cpu" as const, ...v };
      const y = await hiraForwardFused(gpu, c.t.x, c.t.w0, c.t.a, c.t.b, opts);
      const dx = gpu.upload(dx0, [d.n, d.inFeatures]);
      await hiraInputGradFused(gpu, c.t.dy, c.t.w0, c.t.a, c.t.b, {
        ...opts,
        out: dx,
        accumulate: true,
      });
      const [ry, rdx] = await gpu.readMany([y, dx]);
      assertClose(ry, yRef, { ...TOL, label: `${label} y` });
      assertClose(rdx, dxRef.map((v, i) => v + dx0[i]), { ...TOL, label: `${label} dX acc` });
      y.release();
      dx.release();
    }
    freeCase(c);
  }
});

Deno.test("W_eff and PEFT delta weight (matmul and per-element) match the reference", async () => {
  const gpu = await testGpu();
  for (const d of [SHAPES[1], SHAPES[3]]) {
    const c = makeCase(gpu, d, 77);
    const eff = hiraWeightRef(c.w0, c.a, c.b, d);
    const delta = eff.map((v, i) => v - c.w0[i]);
    const ts = [
      await hiraEffectiveWeight(gpu, c.t.w0, c.t.a, c.t.b),
      await hiraEffectiveWeightDirect(gpu, c.t.w0, c.t.a, c.t.b),
      await hiraDeltaWeight(gpu, c.t.w0, c.t.a, c.t.b),
      await hiraDeltaWeightDirect(gpu, c.t.w0, c.t.a, c.t.b),
    ];
    const [e1, e2, d1, d2] = await gpu.readMany(ts);
    assertClose(e1, eff, { ...TOL, label: "effective (matmul)" });
    assertClose(e2, eff, { ...TOL, label: "effective (per element)" });
    assertClose(d1, delta, { ...TOL, label: "delta (matmul)" });
    assertClose(d2, delta, { ...TOL, label: "delta (per element)" });
    for (const t of ts) t.release();
    freeCase(c);
  }
});

Deno.test("fused forward with an f16 W0 matches f32 on the rounded weight", async () => {
  const gpu = await testGpu();
  if (!gpu.hasF16) {
    console.log("skipped: this adapter has no shader-f16");
    return;
  }
  const d = { n: 21, inFeatures: 40, outFeatures: 36, r: 4 };
  const c = makeCase(gpu, d, 300);
  const w16 = f32ToF16(c.w0);
  const w0h = gpu.upload(w16, [d.outFeatures, d.inFeatures], "f16");
  const w0r = f16ToF32(w16);
  const w0rT = gpu.upload(w0r, [d.outFeatures, d.inFeatures]);
  for (const variant of ["tiled", "cpu"] as const) {
    const yh = await hiraForwardFused(gpu, c.t.x, w0h, c.t.a, c.t.b, { variant });
    const yf = await hiraForwardFused(gpu, c.t.x, w0rT, c.t.a, c.t.b, { variant });
    const [rh, rf] = await gpu.readMany([yh, yf]);
    // Same f32 arithmetic on the same (f16-representable) weights: equal up to f32 rounding.
    assertClose(rh, rf, { rtol: 1e-6, atol: 1e-6, label: `${variant} f16 vs f32-rounded` });
    // Against the unrounded f32 weight: the f16 rounding of W0 (relative 2^-11) shows.
    assertClose(rh, hiraForwardRef(c.x, c.w0, c.a, c.b, d), {
      rtol: 1e-2,
      atol: 2e-2,
      label: `${variant} f16 vs f32 weight`,
    });
    yh.release();
    yf.release();
  }
  w0h.release();
  w0rT.release();
  freeCase(c);
  assert(true);
});

Deno.test("a model step gives the same loss and gradients with every HiRA kernel", async () => {
  const gpu = await testGpu();
  const cfg = parseConfig(
    JSON.parse(
      await Deno.readTextFile(new URL("../../data_file/tiny/model/config.json", import.meta.url)),
    ),
  );
  const seqs = [7, 12];
  const rng = new Rng(5);
  const n = seqs[0] + seqs[1];
  const tokens = Int32Array.from({ length: n }, () => Math.floor(rng.uniform(0, cfg.vocabSize)));
  const targets = Int32Array.from({ length: n }, () => Math.floor(rng.uniform(0, cfg.vocabSize)));
  const batch = { tokens, targets, cuSeqlens: Uint32Array.from([0, 7, n]), numCounted: n };
  const runs: Float32Array[][] = [];
  // The tiled fused kernels compile fast on llvmpipe (runtime rank); the CPU ones are covered
  // op by op above.
  for (const kernel of ["materialized", "fused", "peft"] as const) {
    const model = randomModel(gpu, cfg, 11);
    attachAdapters(model, {
      peftType: "HIRA",
      r: 4,
      targetModules: ["q_proj", "v_proj", "down_proj"],
      loraAlpha: 8,
      loraDropout: 0,
      baseModel: "test",
      keyStyle: "peft",
    }, { seed: 3, initB: "gaussian" });
    for (const ad of model.adapters.values()) {
      (ad as HiraAdapter).kernel = kernel;
      (ad as HiraAdapter).variant = "tiled";
    }
    const loss = await model.trainStep(batch);
    const grads = [...model.adapters.values()].flatMap((ad) => ad.params().map((p) => p.grad));
    runs.push((await gpu.readMany([loss, ...grads])).map((t) => Float32Array.from(t)));
    loss.release();
    for (const ad of model.adapters.values()) ad.release();
  }
  for (const [k, run] of runs.entries()) {
    run.forEach((t, i) =>
      assertClose(t, runs[0][i], { rtol: 1e-3, atol: 1e-6, label: `run ${k} tensor ${i}` })
    );
  }
  assert(runs[0].slice(1).some((g) => g.some((v) => v !== 0)), "gradients must not be zero");
});
