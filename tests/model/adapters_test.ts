import { assert, assertEquals, assertNotEquals } from "@std/assert";
import {
  createAdapter,
  type HiraAdapter,
  hiraEffectiveWeight,
  type HiraKernel,
  type LinearAdapter,
  type LoraAdapter,
  unmergeHira,
} from "../../lib/model/adapters.ts";
import type { HiraVariant } from "../../lib/ops/hira.ts";
import type { PeftType } from "../../lib/model/peft.ts";
import { bf16ToF32, type Gpu, loopBudget, type Tensor } from "../../lib/engine/gpu.ts";
import { matmul } from "../../lib/ops/matmul.ts";
import { Rng } from "../../lib/engine/rand.ts";
import {
  type AdapterDims,
  type AdapterGradsRef,
  hiraBackwardRef,
  hiraForwardRef,
  linearRef,
  loraBackwardRef,
  loraDropoutMaskRef,
  loraForwardRef,
  mergeRef,
  unmergeHiraRef,
} from "../../lib/ref/adapters.ts";
import { assertClose, finiteDifferences, randn, testGpu } from "../_util.ts";

/** Shapes including 1-row / 1-column / rank-1 edge cases and sizes off any tile multiple. */
const SHAPES: AdapterDims[] = [
  { n: 5, inFeatures: 13, outFeatures: 9, r: 3 },
  { n: 1, inFeatures: 1, outFeatures: 1, r: 1 },
  { n: 17, inFeatures: 33, outFeatures: 20, r: 4 },
  { n: 3, inFeatures: 1, outFeatures: 7, r: 2 },
  { n: 2, inFeatures: 8, outFeatures: 1, r: 5 },
];

const TOL = { rtol: 1e-4, atol: 1e-5 };

interface Layer {
  adapter: LinearAdapter;
  a: Float32Array;
  b: Float32Array;
  w0: Float32Array;
  w0T: Tensor;
}

/** An adapter with random (non-zero) A and B written into its parameters. */
function layer(gpu: Gpu, type: PeftType, d: AdapterDims, seed: number, extra = {}): Layer {
  const adapter = createAdapter(gpu, type, { ...d, rng: new Rng(seed), ...extra });
  const a = randn(d.r * d.inFeatures, seed + 1, 0.5);
  const b = randn(d.outFeatures * d.r, seed + 2, 0.5);
  const [pa, pb] = adapter.params();
  gpu.write(pa.param, a);
  gpu.write(pb.param, b);
  const w0 = randn(d.outFeatures * d.inFeatures, seed + 3);
  return { adapter, a, b, w0, w0T: gpu.upload(w0, [d.outFeatures, d.inFeatures]) };
}

function release(l: Layer, ...more: (Tensor | null)[]): void {
  l.adapter.release();
  l.w0T.release();
  for (const t of more) t?.release();
}

Deno.test("init: A within ±1/√in, B and gradients zero, PEFT key suffixes", async () => {
  const gpu = await testGpu();
  for (const type of ["HIRA", "LORA"] as const) {
    const inFeatures = 37, r = 8;
    const ad = createAdapter(gpu, type, { inFeatures, outFeatures: 6, r, rng: new Rng(7) });
    assertEquals([ad.peftType, ad.r, ad.inFeatures, ad.outFeatures], [type, r, inFeatures, 6]);
    const ps = ad.params();
    assertEquals(
      ps.map((p) => p.suffix),
      type === "HIRA" ? ["hira_A", "hira_B"] : ["lora_A.weight", "lora_B.weight"],
    );
    assertEquals(ps.map((p) => p.param.shape), [[r, inFeatures], [6, r]]);
    const [a, b, ga, gb] = (await gpu.readMany([ps[0].param, ps[1].param, ps[0].grad, ps[1].grad]))
      .map((t) => Float32Array.from(t));
    const bound = 1 / Math.sqrt(inFeatures);
    assert(a.every((v) => Math.abs(v) <= bound), `${type}: A outside ±${bound}`);
    // Really uniform over the whole interval, not squeezed near 0.
    assert(Math.max(...a.map(Math.abs)) > 0.9 * bound, `${type}: A range too narrow`);
    const mean = a.reduce((s, v) => s + v, 0) / a.length;
    assert(Math.abs(mean) < 0.15 * bound, `${type}: A mean ${mean}`);
    for (const t of [b, ga, gb]) assert(t.every((v) => v === 0), `${type}: not zero`);
    // Same seed, same A (the init is reproducible from the rng).
    const again = createAdapter(gpu, type, { inFeatures, outFeatures: 6, r, rng: new Rng(7) });
    assertEquals(Array.from(await gpu.read(again.params()[0].param)), Array.from(a));
    ad.release();
    again.release();
  }
});

Deno.test("with B = 0 the adapter output equals the base layer exactly", async () => {
  const gpu = await testGpu();
  const d = SHAPES[2];
  const x = randn(d.n * d.inFeatures, 40);
  const w0 = randn(d.outFeatures * d.inFeatures, 41);
  const bias = randn(d.outFeatures, 42);
  const xT = gpu.upload(x, [d.n, d.inFeatures]);
  const w0T = gpu.upload(w0, [d.outFeatures, d.inFeatures]);
  const biasT = gpu.upload(bias, [d.outFeatures]);
  const base = await matmul(gpu, xT, w0T, { transB: true });
  for (const type of ["HIRA", "LORA"] as const) {
    const ad = createAdapter(gpu, type, { ...d, rng: new Rng(3), loraDropout: 0.2 });
    const y = await ad.forward(xT, w0T);
    const yb = await ad.forward(xT, w0T, biasT);
    const [rb, ry, ryb] = await gpu.readMany([base, y, yb]);
    assertEquals(Array.from(ry), Array.from(rb), `${type}: y != x·W0ᵀ`);
    assertClose(ryb, linearRef(x, w0, d.n, d.inFeatures, d.outFeatures, bias), {
      ...TOL,
      label: `${type} bias`,
    });
    y.release();
    yb.release();
    ad.release();
  }
  for (const t of [xT, w0T, biasT, base]) t.release();
});

/** Runs forward (with and without bias) and backward on the GPU and compares with the ref. */
async function checkAgainstRef(
  gpu: Gpu,
  type: PeftType,
  d: AdapterDims,
  seed: number,
  ref: {
    forward: (l: Layer, x: Float32Array, bias?: Float32Array) => Float64Array;
    backward: (l: Layer, x: Float32Array, dy: Float32Array) => AdapterGradsRef;
  },
  extra = {},
): Promise<void> {
  const label = `${type} ${JSON.stringify(d)}`;
  const l = layer(gpu, type, d, seed, extra);
  const x = randn(d.n * d.inFeatures, seed + 10);
  const dy = randn(d.n * d.outFeatures, seed + 11);
  const bias = randn(d.outFeatures, seed + 12);
  const xT = gpu.upload(x, [d.n, d.inFeatures]);
  const dyT = gpu.upload(dy, [d.n, d.outFeatures]);
  const biasT = gpu.upload(bias, [d.outFeatures]);
  // Gradients accumulate: start them (and an accumulated dx) from non-zero values.
  const ga0 = randn(d.r * d.inFeatures, seed + 13);
  const gb0 = randn(d.outFeatures * d.r, seed + 14);
  const dx0 = randn(d.n * d.inFeatures, seed + 15);
  const [pa, pb] = l.adapter.params();
  gpu.write(pa.grad, ga0);
  gpu.write(pb.grad, gb0);
  const dxAcc = gpu.upload(dx0, [d.n, d.inFeatures]);

  const yb = await l.adapter.forward(xT, l.w0T, biasT);
  const y = await l.adapter.forward(xT, l.w0T);
  const dx = await l.adapter.backward(xT, l.w0T, dyT);
  const dxOut = await l.adapter.backward(xT, l.w0T, dyT, { dx: dxAcc, accumulateDx: true });
  assert(dxOut === dxAcc, "backward must return opts.dx");
  const none = await l.adapter.backward(xT, l.w0T, dyT, { needDx: false });
  assertEquals(none, null);
  const [ry, ryb, rdx, rdxAcc, rga, rgb] = await gpu.readMany([
    y,
    yb,
    dx!,
    dxAcc,
    pa.grad,
    pb.grad,
  ]);
  assertClose(ry, ref.forward(l, x), { ...TOL, label: `${label} y` });
  assertClose(ryb, ref.forward(l, x, bias), { ...TOL, label: `${label} y+bias` });
  const g = ref.backward(l, x, dy);
  assertClose(rdx, g.dX, { ...TOL, label: `${label} dX` });
  assertClose(rdxAcc, g.dX.map((v, i) => v + dx0[i]), { ...TOL, label: `${label} dX acc` });
  // Three backward calls accumulated onto the initial gradients.
  assertClose(rga, g.dA.map((v, i) => 3 * v + ga0[i]), { ...TOL, label: `${label} dA` });
  assertClose(rgb, g.dB.map((v, i) => 3 * v + gb0[i]), { ...TOL, label: `${label} dB` });
  release(l, xT, dyT, biasT, dxAcc, y, yb, dx);
}

const dims = (l: Layer, n: number): AdapterDims => ({
  n,
  inFeatures: l.adapter.inFeatures,
  outFeatures: l.adapter.outFeatures,
  r: l.adapter.r,
});

Deno.test("HiRA forward and backward match the f64 reference", async () => {
  const gpu = await testGpu();
  for (const [i, d] of SHAPES.entries()) {
    await checkAgainstRef(gpu, "HIRA", d, 100 * i, {
      forward: (l, x, bias) => hiraForwardRef(x, l.w0, l.a, l.b, d, bias),
      backward: (l, x, dy) => hiraBackwardRef(x, l.w0, l.a, l.b, dy, dims(l, d.n)),
    });
  }
});

Deno.test("every HiRA kernel mode (fused cpu/tiled, materialized, PEFT) matches", async () => {
  const gpu = await testGpu();
  const modes: { hiraKernel: HiraKernel; hiraVariant?: HiraVariant }[] = [
    { hiraKernel: "fused", hiraVariant: "cpu" },
    { hiraKernel: "fused", hiraVariant: "tiled" },
    { hiraKernel: "materialized" },
    { hiraKernel: "peft" },
  ];
  for (const mode of modes) {
    for (const [i, d] of [SHAPES[2]].entries()) {
      await checkAgainstRef(gpu, "HIRA", d, 100 * i + 7, {
        forward: (l, x, bias) => hiraForwardRef(x, l.w0, l.a, l.b, d, bias),
        backward: (l, x, dy) => hiraBackwardRef(x, l.w0, l.a, l.b, dy, dims(l, d.n)),
      }, mode);
    }
  }
});

Deno.test("HiRA auto kernel: fused on GPUs; on CPU rasterizers a short fused forward only", async () => {
  const gpu = await testGpu();
  const hira = (kernel?: HiraKernel) =>
    createAdapter(gpu, "HIRA", {
      inFeatures: 8,
      outFeatures: 4,
      r: 2,
      rng: new Rng(3),
      hiraKernel: kernel,
    }) as HiraAdapter;
  const auto = hira();
  // The same adapter seen from a GPU and from CPU rasterizers (kernelFor reads only these).
  const view = (ad: HiraAdapter, description: string, isCpuAdapter: boolean) =>
    Object.create(ad, {
      gpu: {
        value: {
          description,
          isCpuAdapter,
          limits: gpu.limits,
          loopBudget: loopBudget(description),
        },
      },
    }) as HiraAdapter;
  const on = (description: string, isCpuAdapter: boolean) => view(auto, description, isCpuAdapter);
  const lavapipe = on("llvmpipe (LLVM 15.0.6, 256 bits)", true);
  assertEquals(lavapipe.kernelFor(128), "fused");
  assertEquals(lavapipe.kernelFor(129), "materialized");
  assertEquals(lavapipe.kernelFor(8, "backward"), "materialized");
  const swiftshader = on("google / swiftshader", true);
  assertEquals(swiftshader.kernelFor(16), "fused");
  assertEquals(swiftshader.kernelFor(17), "materialized");
  assertEquals(swiftshader.kernelFor(16, "backward"), "materialized");
  const gpuAdapter = on("nvidia", false);
  assertEquals(gpuAdapter.kernelFor(100_000), "fused");
  assertEquals(gpuAdapter.kernelFor(100_000, "backward"), "fused");
  // A layer whose fused forward would outrun llvmpipe's loop budget materialises even when short
  // (a Llama-3-8B down_proj input, 14336 wide: ~115,000 iterations per invocation at 16 tokens).
  const wide = createAdapter(gpu, "HIRA", {
    inFeatures: 14336,
    outFeatures: 8,
    r: 32,
    rng: new Rng(4),
  }) as HiraAdapter;
  assertEquals(view(wide, "llvmpipe (LLVM 15.0.6, 256 bits)", true).kernelFor(16), "materialized");
  assertEquals(view(wide, "nvidia", false).kernelFor(16), "fused");
  wide.release();
  // A forced kernel is used as it is, whatever the adapter and pass.
  const forced = hira("fused");
  assertEquals(forced.kernelFor(4096, "backward"), "fused");
  for (const ad of [auto, forced]) ad.release();
});

Deno.test("LoRA forward and backward match the f64 reference (no dropout)", async () => {
  const gpu = await testGpu();
  for (const [i, d] of SHAPES.entries()) {
    const alpha = 16;
    const s = alpha / d.r;
    await checkAgainstRef(gpu, "LORA", d, 100 * i + 50, {
      forward: (l, x, bias) => loraForwardRef(x, l.w0, l.a, l.b, d, s, undefined, bias),
      backward: (l, x, dy) => loraBackwardRef(x, l.w0, l.a, l.b, dy, d, s),
    }, { loraAlpha: alpha });
  }
});

Deno.test("LoRA dropout: GPU mask equals the reference hash and backward reuses it", async () => {
  const gpu = await testGpu();
  const d = SHAPES[2];
  const p = 0.3, alpha = 8, s = alpha / d.r;
  const l = layer(gpu, "LORA", d, 900, { loraAlpha: alpha, loraDropout: p, seed: 1234 });
  const lora = l.adapter as LoraAdapter;
  assertEquals(lora.seed, 1234);
  const x = randn(d.n * d.inFeatures, 901);
  const dy = randn(d.n * d.outFeatures, 902);
  const xT = gpu.upload(x, [d.n, d.inFeatures]);
  const dyT = gpu.upload(dy, [d.n, d.outFeatures]);

  // Two forwards: each takes a fresh mask; backward must use the second one.
  const y1 = await lora.forward(xT, l.w0T);
  const mask1 = await lora.dropoutMask(d.n);
  const y2 = await lora.forward(xT, l.w0T);
  assertEquals(lora.lastMaskId, 1);
  const mask2 = await lora.dropoutMask(d.n);
  assertNotEquals(Array.from(mask1), Array.from(mask2));
  const expect1 = loraDropoutMaskRef(1234, 0, d.n * d.inFeatures, p);
  const expect2 = loraDropoutMaskRef(1234, 1, d.n * d.inFeatures, p);
  assertClose(mask1, expect1, { rtol: 1e-6, label: "mask 0" });
  assertClose(mask2, expect2, { rtol: 1e-6, label: "mask 1" });
  assert(mask2.some((v) => v === 0) && mask2.some((v) => v > 1), "mask must drop and scale");

  const dx = await lora.backward(xT, l.w0T, dyT);
  const [ry1, ry2, rdx, rga, rgb] = await gpu.readMany([
    y1,
    y2,
    dx!,
    lora.gradA,
    lora.gradB,
  ]);
  assertClose(ry1, loraForwardRef(x, l.w0, l.a, l.b, d, s, mask1), { ...TOL, label: "y1" });
  assertClose(ry2, loraForwardRef(x, l.w0, l.a, l.b, d, s, mask2), { ...TOL, label: "y2" });
  const g = loraBackwardRef(x, l.w0, l.a, l.b, dy, d, s, mask2);
  assertClose(rdx, g.dX, { ...TOL, label: "dX" });
  assertClose(rga, g.dA, { ...TOL, label: "dA" });
  assertClose(rgb, g.dB, { ...TOL, label: "dB" });

  // Eval mode: no dropout at all, and the mask counter does not move.
  lora.training = false;
  const ye = await lora.forward(xT, l.w0T);
  assertEquals(lora.dropoutCounter, 2);
  assertClose(await gpu.read(ye), loraForwardRef(x, l.w0, l.a, l.b, d, s), {
    ...TOL,
    label: "eval",
  });
  release(l, xT, dyT, y1, y2, dx, ye);
});

Deno.test("LoRA dropout mask keeps about 1 - p of the elements, independently per mask", () => {
  const n = 20000, p = 0.25;
  const m0 = loraDropoutMaskRef(5, 0, n, p);
  const m1 = loraDropoutMaskRef(5, 1, n, p);
  const m2 = loraDropoutMaskRef(6, 0, n, p);
  const sd = Math.sqrt(n * p * (1 - p));
  for (const m of [m0, m1, m2]) {
    const kept = m.filter((v) => v > 0).length;
    assert(Math.abs(kept - n * (1 - p)) < 5 * sd, `kept ${kept} of ${n}`);
    assert(m.every((v) => v === 0 || Math.abs(v - 1 / (1 - p)) < 1e-12));
  }
  // Different ids or seeds: about (1-p)² of the elements kept by both.
  for (const [a, b] of [[m0, m1], [m0, m2]]) {
    let both = 0;
    for (let i = 0; i < n; i++) if (a[i] > 0 && b[i] > 0) both++;
    assert(Math.abs(both - n * (1 - p) ** 2) < 5 * Math.sqrt(n * 0.5 * 0.5), `both ${both}`);
  }
});

/** Central differences of L = Σ y ⊙ R in f64 against an analytic gradient. */
function checkFiniteDiff(
  label: string,
  f: (x: Float64Array, a: Float64Array, b: Float64Array) => Float64Array,
  grads: AdapterGradsRef,
  x: Float64Array,
  a: Float64Array,
  b: Float64Array,
  rw: Float64Array,
): void {
  const loss = () => f(x, a, b).reduce((s, v, i) => s + v * rw[i], 0);
  const eps = 1e-6;
  for (
    const [name, t, g] of [["X", x, grads.dX], ["A", a, grads.dA], ["B", b, grads.dB]] as const
  ) {
    assertClose(g, finiteDifferences(t, loss, eps), {
      rtol: 1e-6,
      atol: 1e-7,
      label: `${label} d${name}`,
    });
  }
}

Deno.test("reference gradients match central finite differences in f64", () => {
  for (const [i, d] of [SHAPES[0], SHAPES[1], SHAPES[3]].entries()) {
    const f64 = (n: number, seed: number) => Float64Array.from(randn(n, seed));
    const x = f64(d.n * d.inFeatures, 10 * i + 1);
    const w0 = f64(d.outFeatures * d.inFeatures, 10 * i + 2);
    const a = f64(d.r * d.inFeatures, 10 * i + 3);
    const b = f64(d.outFeatures * d.r, 10 * i + 4);
    const rw = f64(d.n * d.outFeatures, 10 * i + 5);
    const hira = hiraBackwardRef(x, w0, a, b, rw, d);
    checkFiniteDiff(`HiRA ${i}`, (x, a, b) => hiraForwardRef(x, w0, a, b, d), hira, x, a, b, rw);
    const mask = loraDropoutMaskRef(9, i, d.n * d.inFeatures, 0.4);
    const s = 2.5;
    const lora = loraBackwardRef(x, w0, a, b, rw, d, s, mask);
    checkFiniteDiff(
      `LoRA ${i}`,
      (x, a, b) => loraForwardRef(x, w0, a, b, d, s, mask),
      lora,
      x,
      a,
      b,
      rw,
    );
  }
});

Deno.test("merged weight reproduces the adapter output; HiRA unmerge restores W0", async () => {
  const gpu = await testGpu();
  for (const [i, d] of [SHAPES[0], SHAPES[2], SHAPES[4]].entries()) {
    for (const type of ["HIRA", "LORA"] as const) {
      const label = `${type} ${i}`;
      const l = layer(gpu, type, d, 300 + 10 * i, { loraAlpha: 4 });
      const x = randn(d.n * d.inFeatures, 301 + 10 * i);
      const xT = gpu.upload(x, [d.n, d.inFeatures]);
      const y = await l.adapter.forward(xT, l.w0T);
      const w = await l.adapter.merged(l.w0T);
      const yw = await matmul(gpu, xT, w, { transB: true });
      const [ry, rw, ryw] = await gpu.readMany([y, w, yw]);
      assertClose(ryw, ry, { ...TOL, label: `${label} x·mergedᵀ` });
      const s = type === "LORA" ? 4 / d.r : 1;
      assertClose(rw, mergeRef(type, l.w0, l.a, l.b, d, s), { ...TOL, label: `${label} merged` });
      if (type === "HIRA") {
        const [ta, tb] = l.adapter.params().map((p) => p.param);
        const w0back = await unmergeHira(gpu, w, ta, tb);
        const eff = await hiraEffectiveWeight(gpu, l.w0T, ta, tb);
        const [rback, reff] = await gpu.readMany([w0back, eff]);
        assertEquals(Array.from(reff), Array.from(rw), `${label}: merged != effective weight`);
        // |B·A| <= r/4 here, so 1 + B·A stays away from 0 except by chance; compare the
        // reference on the same f32 merged weight, then W0 with a tolerance.
        assertClose(rback, unmergeHiraRef(rw, l.a, l.b, d), { ...TOL, label: `${label} unmerge` });
        assertClose(rback, l.w0, { rtol: 1e-4, atol: 1e-4, label: `${label} W0 restored` });
        w0back.release();
        eff.release();
      }
      release(l, xT, y, w, yw);
    }
  }
});

const GOLDEN = new URL("../fixtures/golden/", import.meta.url);

/** A minimal safetensors reader (F32 and BF16 only) so this test depends on no loader. */
async function readSafetensors(
  url: URL,
): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
  const bytes = await Deno.readFile(url);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const { dtype, shape, data_offsets: [lo, hi] } = info as {
      dtype: string;
      shape: number[];
      data_offsets: [number, number];
    };
    const raw = bytes.slice(8 + headerLen + lo, 8 + headerLen + hi);
    let data: Float32Array;
    if (dtype === "F32") data = new Float32Array(raw.buffer);
    else if (dtype === "BF16") data = bf16ToF32(new Uint16Array(raw.buffer));
    else throw new Error(`${name}: dtype ${dtype} not handled here`);
    out.set(name, { shape, data });
  }
  return out;
}

Deno.test("merged weights match PyTorch's merged golden checkpoints", async () => {
  const gpu = await testGpu();
  const base = await readSafetensors(new URL("model/model.safetensors", GOLDEN));
  for (const type of ["HIRA", "LORA"] as const) {
    const dir = type === "HIRA" ? "hira" : "lora";
    const adapterFile = await readSafetensors(
      new URL(`adapter-${dir}/adapter_model.safetensors`, GOLDEN),
    );
    const golden = await readSafetensors(new URL(`golden/merged-${dir}/model.safetensors`, GOLDEN));
    const [sa, sb] = type === "HIRA" ? ["hira_A", "hira_B"] : ["lora_A.weight", "lora_B.weight"];
    const keys = [...adapterFile.keys()].filter((k) => k.endsWith(`.${sa}`));
    assertEquals(keys.length, 21);
    const merged: Tensor[] = [];
    const expected: Float32Array[] = [];
    const owned: Tensor[] = [];
    for (const key of keys) {
      const module = key.slice("base_model.model.".length, -sa.length - 1);
      const a = adapterFile.get(key)!, b = adapterFile.get(`${key.slice(0, -sa.length)}${sb}`)!;
      const w0 = base.get(`${module}.weight`)!;
      const [outFeatures, inFeatures] = w0.shape;
      const ad = createAdapter(gpu, type, {
        inFeatures,
        outFeatures,
        r: a.shape[0],
        rng: new Rng(0),
        loraAlpha: 8,
      });
      const [pa, pb] = ad.params();
      gpu.write(pa.param, a.data);
      gpu.write(pb.param, b.data);
      const w0T = gpu.upload(w0.data, w0.shape);
      merged.push(await ad.merged(w0T));
      expected.push(golden.get(`${module}.weight`)!.data);
      owned.push(w0T, pa.param, pb.param, pa.grad, pb.grad);
    }
    const got = await gpu.readMany(merged);
    got.forEach((g, i) => assertClose(g, expected[i], { rtol: 1e-4, atol: 1e-5, label: keys[i] }));
    for (const t of [...merged, ...owned]) t.release();
  }
});
