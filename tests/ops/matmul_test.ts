import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { type Gpu, spliceStructs, Tensor } from "../../lib/engine/gpu.ts";
import {
  matmul,
  MATMUL_KERNELS,
  type MatmulVariant,
  resolveMatmulVariant,
} from "../../lib/ops/matmul.ts";
import { matmulBackwardRef, matmulRef } from "../../lib/ref/matmul.ts";
import { assertClose, finiteDifferences, randn, testGpu } from "../_util.ts";

/**
 * The "subgroup" kernel needs the device's subgroups feature. Deno's lavapipe adapter has none,
 * so its tests are registered but ignored here; tests/browser/browser_test.ts runs it in headless
 * Chromium, whose SwiftShader device has subgroups (window.hiraTest.matmulCheck).
 */
const HAS_SUBGROUPS = (await testGpu()).hasSubgroups;
const VARIANTS: MatmulVariant[] = HAS_SUBGROUPS ? ["cpu", "tiled", "subgroup"] : ["cpu", "tiled"];
const SUBGROUP_IGNORED = " [needs the subgroups feature: ignored on this adapter]";
const LAYOUTS = [
  { transA: false, transB: false },
  { transA: false, transB: true },
  { transA: true, transB: false },
  { transA: true, transB: true },
];
const tag = (l: { transA: boolean; transB: boolean }) =>
  `${l.transA ? "T" : "N"}${l.transB ? "T" : "N"}`;

// Shapes [M, N, K]: degenerate, thin (HiRA ranks), ragged and tile/vec4-aligned. The CPU kernel
// computes an output narrower than M and than one workgroup's columns (128 aligned, 64 ragged)
// transposed: [37, 29, 13], [70, 36, 8], [96, 92, 16] and the N ≤ 8 ones are; [65, 67, 71],
// [130, 128, 8] and [40, 136, 40] are not.
const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [1, 37, 13],
  [29, 1, 13],
  [37, 29, 13],
  [65, 67, 71],
  [1, 64, 64],
  [40, 136, 40],
  [70, 36, 8],
  [33, 8, 96],
  [96, 92, 16],
  [130, 128, 8],
];

/** f32 accumulation error grows like sqrt(K) for inputs in [-1, 1]. */
function tol(K: number) {
  return { rtol: 1e-5, atol: 2e-6 * Math.sqrt(K) };
}

function shapeA(M: number, K: number, transA: boolean, batch?: number): number[] {
  const s = transA ? [K, M] : [M, K];
  return batch === undefined ? s : [batch, ...s];
}

function shapeB(K: number, N: number, transB: boolean, batch?: number): number[] {
  const s = transB ? [N, K] : [K, N];
  return batch === undefined ? s : [batch, ...s];
}

function releaseAll(ts: Tensor[]): void {
  for (const t of ts) t.release();
}

async function checkPlain(gpu: Gpu, variant: MatmulVariant): Promise<void> {
  for (const layout of LAYOUTS) {
    const inputs: Tensor[] = [];
    const outs: Tensor[] = [];
    const refs: Float64Array[] = [];
    // All shapes of a layout are read back together.
    for (const [i, [M, N, K]] of SHAPES.entries()) {
      const av = randn(M * K, 100 + i), bv = randn(K * N, 200 + i);
      const a = gpu.upload(av, shapeA(M, K, layout.transA));
      const b = gpu.upload(bv, shapeB(K, N, layout.transB));
      inputs.push(a, b);
      outs.push(await matmul(gpu, a, b, { ...layout, variant }));
      refs.push(matmulRef(av, bv, M, N, K, layout));
    }
    const got = await gpu.readMany(outs);
    SHAPES.forEach(([M, N, K], i) =>
      assertClose(got[i], refs[i], { ...tol(K), label: `${variant} ${tag(layout)} ${M}x${N}x${K}` })
    );
    releaseAll([...inputs, ...outs]);
  }
}

/** Registers a test of one variant, ignored where the device cannot run it. */
function variantTest(variant: MatmulVariant, what: string, fn: () => Promise<void>): void {
  const unavailable = variant === "subgroup" && !HAS_SUBGROUPS;
  Deno.test({
    name: `matmul ${variant}: ${what}${unavailable ? SUBGROUP_IGNORED : ""}`,
    ignore: unavailable,
    fn,
  });
}

for (const variant of ["cpu", "tiled", "subgroup"] as const) {
  variantTest(variant, "all layouts on ragged, thin and aligned shapes", async () => {
    await checkPlain(await testGpu(), variant);
  });

  variantTest(variant, "batched, broadcast a or b, alpha and accumulate", async () => {
    const gpu = await testGpu();
    const B = 3;
    for (const layout of LAYOUTS) {
      for (const [M, N, K] of [[37, 29, 13], [40, 136, 40], [40, 8, 12]] as const) {
        const av = randn(B * M * K, 1), bv = randn(B * K * N, 2), bv2 = randn(K * N, 3);
        const av2 = randn(M * K, 5), cv = randn(B * M * N, 4);
        const a = gpu.upload(av, shapeA(M, K, layout.transA, B));
        const b = gpu.upload(bv, shapeB(K, N, layout.transB, B));
        const a2 = gpu.upload(av2, shapeA(M, K, layout.transA));
        const b2 = gpu.upload(bv2, shapeB(K, N, layout.transB));
        const acc = gpu.upload(cv, [B, M, N]);
        const batched = await matmul(gpu, a, b, { ...layout, variant, alpha: -0.5 });
        const bcastB = await matmul(gpu, a, b2, { ...layout, variant });
        const bcastA = await matmul(gpu, a2, b, { ...layout, variant });
        await matmul(gpu, a, b, { ...layout, variant, out: acc, accumulate: true, alpha: 2 });
        const got = await gpu.readMany([batched, bcastB, bcastA, acc]);
        const want = [0, 1, 2, 3].map(() => new Float64Array(B * M * N));
        for (let i = 0; i < B; i++) {
          const ai = av.subarray(i * M * K, (i + 1) * M * K);
          const bi = bv.subarray(i * K * N, (i + 1) * K * N);
          const r1 = matmulRef(ai, bi, M, N, K, layout);
          const r2 = matmulRef(ai, bv2, M, N, K, layout);
          const r3 = matmulRef(av2, bi, M, N, K, layout);
          for (let j = 0; j < M * N; j++) {
            const o = i * M * N + j;
            want[0][o] = -0.5 * r1[j];
            want[1][o] = r2[j];
            want[2][o] = r3[j];
            want[3][o] = cv[o] + 2 * r1[j];
          }
        }
        const label = `${variant} ${tag(layout)} ${B}x${M}x${N}x${K}`;
        ["batched", "broadcast b", "broadcast a", "accumulate"].forEach((what, i) =>
          assertClose(got[i], want[i], { ...tol(K), label: `${what} ${label}` })
        );
        for (const t of [batched, bcastA, bcastB]) {
          if (t.shape.join() !== [B, M, N].join()) throw new Error(`shape ${t.shape}`);
        }
        releaseAll([a, b, a2, b2, acc, batched, bcastB, bcastA]);
      }
    }
  });

  variantTest(variant, "outStride/outOffset write a column block", async () => {
    const gpu = await testGpu();
    for (const layout of LAYOUTS) {
      // Ragged (element stores), vec4-aligned (whole-vec4 stores) and narrow (the CPU kernel
      // computes the transposed product) outputs.
      for (
        const [M, N, K, pad, c0] of [
          [37, 29, 13, 9, 5],
          [40, 136, 40, 8, 4],
          [40, 8, 12, 5, 3],
        ] as const
      ) {
        // out is [rows, W]; the product lands in rows [r0, r0+M), columns [c0, c0+N).
        const W = N + pad, rows = M + 3, r0 = 2;
        const av = randn(M * K, 11), bv = randn(K * N, 12), cv = randn(rows * W, 13);
        const a = gpu.upload(av, shapeA(M, K, layout.transA));
        const b = gpu.upload(bv, shapeB(K, N, layout.transB));
        const set = gpu.upload(cv, [rows, W]);
        const acc = gpu.upload(cv, [rows, W]);
        const o = { ...layout, variant, outStride: W, outOffset: r0 * W + c0 };
        await matmul(gpu, a, b, { ...o, out: set, alpha: 3 });
        await matmul(gpu, a, b, { ...o, out: acc, accumulate: true });
        const [gs, ga] = await gpu.readMany([set, acc]);
        const ref = matmulRef(av, bv, M, N, K, layout);
        const es = Float64Array.from(cv), ea = Float64Array.from(cv);
        for (let m = 0; m < M; m++) {
          for (let n = 0; n < N; n++) {
            const i = (r0 + m) * W + c0 + n;
            es[i] = 3 * ref[m * N + n];
            ea[i] = cv[i] + ref[m * N + n];
          }
        }
        const label = `${variant} ${tag(layout)} ${M}x${N}x${K}`;
        assertClose(gs, es, { ...tol(K), label: `set ${label}` });
        assertClose(ga, ea, { ...tol(K), label: `accumulate ${label}` });
        releaseAll([a, b, set, acc]);
      }
    }
  });
}

Deno.test("matmul: reads past K (ragged K) never leak into the result", async () => {
  const gpu = await testGpu();
  // Operands are views followed by NaNs: a k >= K read that is not zeroed poisons the output.
  const padded = (data: Float32Array, shape: number[]) => {
    const backing = gpu.upload([...data, ...new Array(64).fill(NaN)], [data.length + 64]);
    return { backing, view: new Tensor(gpu, shape, "f32", backing.buffer, 0, false) };
  };
  for (const variant of VARIANTS) {
    for (const layout of LAYOUTS) {
      for (const [M, N, K] of [[5, 6, 7], [8, 8, 6], [40, 8, 10]] as const) {
        const av = randn(M * K, 51), bv = randn(K * N, 52);
        const a = padded(av, shapeA(M, K, layout.transA));
        const b = padded(bv, shapeB(K, N, layout.transB));
        const c = await matmul(gpu, a.view, b.view, { ...layout, variant });
        const label = `${variant} ${tag(layout)} ${M}x${N}x${K}`;
        assertClose(await gpu.read(c), matmulRef(av, bv, M, N, K, layout), { ...tol(K), label });
        releaseAll([a.backing, b.backing, c]);
      }
    }
  }
});

Deno.test("matmul: more tiles than one grid dimension holds are folded into two", async () => {
  const gpu = await testGpu();
  // 70000 batches of 1×1 outputs: one tile each, past the 65535 workgroups of one dimension.
  const B = 70000;
  const av = randn(B * 2, 41), bv = randn(B * 2, 42);
  const a = gpu.upload(av, [B, 1, 2]), b = gpu.upload(bv, [B, 2, 1]);
  for (const variant of VARIANTS) {
    const c = await matmul(gpu, a, b, { variant });
    const got = await gpu.read(c);
    const ref = Float64Array.from(
      { length: B },
      (_, i) => av[2 * i] * bv[2 * i] + av[2 * i + 1] * bv[2 * i + 1],
    );
    assertClose(got, ref, { ...tol(2), label: `folded grid ${variant}` });
    c.release();
  }
  releaseAll([a, b]);
});

Deno.test("matmul: the model's forward and backward products match the f64 reference", async () => {
  const gpu = await testGpu();
  // y = x·Wᵀ, dX = dY·W, dW = dYᵀ·X with x [T, C], W [O, C].
  const T = 19, C = 24, O = 10;
  const xv = randn(T * C, 21), wv = randn(O * C, 22), dyv = randn(T * O, 23);
  const x = gpu.upload(xv, [T, C]), w = gpu.upload(wv, [O, C]), dy = gpu.upload(dyv, [T, O]);
  for (const variant of [...VARIANTS, "auto"] as const) {
    const y = await matmul(gpu, x, w, { transB: true, variant });
    const dx = await matmul(gpu, dy, w, { variant });
    const dw = await matmul(gpu, dy, x, { transA: true, variant });
    const [gy, gdx, gdw] = await gpu.readMany([y, dx, dw]);
    const { da, db } = matmulBackwardRef(dyv, xv, wv, T, O, C, { transB: true });
    assertClose(gy, matmulRef(xv, wv, T, O, C, { transB: true }), { ...tol(C), label: "y" });
    assertClose(gdx, da, { ...tol(O), label: `dX ${variant}` });
    assertClose(gdw, db, { ...tol(T), label: `dW ${variant}` });
    releaseAll([y, dx, dw]);
  }
  releaseAll([x, w, dy]);
});

Deno.test("matmulBackwardRef matches central finite differences of matmulRef", () => {
  const M = 3, N = 4, K = 5;
  for (const layout of LAYOUTS) {
    const a = Float64Array.from(randn(M * K, 31)), b = Float64Array.from(randn(K * N, 32));
    const dc = Float64Array.from(randn(M * N, 33));
    const loss = (aa: Float64Array, bb: Float64Array) =>
      matmulRef(aa, bb, M, N, K, layout).reduce((s, v, i) => s + v * dc[i], 0);
    const { da, db } = matmulBackwardRef(dc, a, b, M, N, K, layout);
    const f = () => loss(a, b);
    assertClose(da, finiteDifferences(a, f), {
      rtol: 1e-7,
      atol: 1e-8,
      label: `dA ${tag(layout)}`,
    });
    assertClose(db, finiteDifferences(b, f), {
      rtol: 1e-7,
      atol: 1e-8,
      label: `dB ${tag(layout)}`,
    });
  }
});

Deno.test("matmul: K = 0 gives zeros, or leaves out as it was when accumulating", async () => {
  const gpu = await testGpu();
  for (const variant of VARIANTS) {
    const a = gpu.empty([3, 0]), b = gpu.empty([0, 5]);
    const init = randn(15, 61);
    const set = gpu.upload(init, [3, 5]), acc = gpu.upload(init, [3, 5]);
    await matmul(gpu, a, b, { variant, out: set });
    await matmul(gpu, a, b, { variant, out: acc, accumulate: true });
    const [gs, ga] = await gpu.readMany([set, acc]);
    assertClose(gs, new Float32Array(15), { label: `K=0 ${variant}` });
    assertClose(ga, init, { label: `K=0 accumulate ${variant}` });
    releaseAll([a, b, set, acc]);
  }
});

Deno.test("matmul: shape errors are clear", async () => {
  const gpu = await testGpu();
  const a = gpu.empty([4, 5]), b = gpu.empty([6, 7]), b3 = gpu.empty([2, 5, 7]);
  const a3 = gpu.empty([3, 4, 5]), small = gpu.empty([4, 6]);
  await assertRejects(() => matmul(gpu, a, b), Error, "inner dimensions differ");
  await assertRejects(() => matmul(gpu, a3, b3), Error, "batch sizes differ");
  await assertRejects(() => matmul(gpu, gpu.empty([5]), b), Error, "rank 2 or 3");
  const b57 = gpu.empty([5, 7]);
  await assertRejects(() => matmul(gpu, a, b57, { out: small }), Error, "needs 28");
  await assertRejects(() => matmul(gpu, a, b57, { outStride: 3, out: small }), Error, ">= N");
  await assertRejects(() => matmul(gpu, a, b57, { outOffset: 2 }), Error, "explicit out");
  await assertRejects(() => matmul(gpu, a, b57, { out: b57 }), Error, "must not share");
  // Over the 128 MiB binding limit (Vulkan allocates lazily, so this costs no memory).
  const rows = Math.ceil(gpu.limits.maxStorageBufferBindingSize / 4 / 64) + 1;
  const huge = gpu.empty([rows, 64]), w = gpu.empty([8, 64]);
  await assertRejects(() => matmul(gpu, huge, w, { transB: true }), Error, "split it");
  releaseAll([a, b, b3, a3, small, b57, huge, w]);
});

Deno.test("matmul cpu: outputs narrower than M and one workgroup's columns run transposed", async () => {
  const gpu = await testGpu();
  // [M, N, K, transB, whether the kernel computes Cᵀ]: LoRA's and HiRA's rank-32 products are
  // narrow; 128 aligned (64 ragged) columns fill a workgroup; N ≥ M never swaps.
  const cases: [number, number, number, boolean, boolean][] = [
    [300, 32, 20, true, true],
    [300, 96, 20, false, true],
    [300, 128, 20, false, false],
    [300, 65, 20, false, false],
    [300, 63, 20, false, true],
    [40, 64, 20, false, false],
  ];
  for (const [M, N, K, transB, swapped] of cases) {
    const av = randn(M * K, 61), bv = randn(K * N, 62);
    const a = gpu.upload(av, [M, K]), b = gpu.upload(bv, shapeB(K, N, transB));
    let transC: string | number | undefined;
    gpu.onDispatch = (kernel) => transC = kernel.spec.defines?.TRANS_C;
    let c: Tensor;
    try {
      c = await matmul(gpu, a, b, { transB, variant: "cpu" });
    } finally {
      gpu.onDispatch = undefined;
    }
    const label = `${M}x${N}x${K}`;
    assertEquals(transC, String(swapped), label);
    assertClose(await gpu.read(c), matmulRef(av, bv, M, N, K, { transB }), { ...tol(K), label });
    releaseAll([a, b, c]);
  }
});

Deno.test("matmul: variant choice by adapter; a forced subgroup kernel needs the feature", async () => {
  const dev = (isCpuAdapter: boolean, hasSubgroups: boolean) => ({ isCpuAdapter, hasSubgroups });
  // "auto": CPU rasterizers keep the register-blocked kernel even with subgroups (SwiftShader).
  assertEquals(resolveMatmulVariant(dev(true, false), "auto"), "cpu");
  assertEquals(resolveMatmulVariant(dev(true, true), "auto"), "cpu");
  assertEquals(resolveMatmulVariant(dev(false, false), "auto"), "tiled");
  assertEquals(resolveMatmulVariant(dev(false, true), "auto"), "subgroup");
  for (const v of ["cpu", "tiled"] as const) {
    assertEquals(resolveMatmulVariant(dev(false, true), v), v);
    assertEquals(resolveMatmulVariant(dev(true, false), v), v);
  }
  assertEquals(resolveMatmulVariant(dev(true, true), "subgroup"), "subgroup");
  for (const d of [dev(true, false), dev(false, false)]) {
    assertThrows(() => resolveMatmulVariant(d, "subgroup"), Error, "subgroups feature");
  }
  assertThrows(
    () => resolveMatmulVariant(dev(false, false), "fast" as MatmulVariant),
    Error,
    "fast",
  );
  const gpu = await testGpu();
  if (!gpu.hasSubgroups) {
    const a = gpu.empty([2, 3]), b = gpu.empty([3, 4]);
    await assertRejects(
      () => matmul(gpu, a, b, { variant: "subgroup" }),
      Error,
      "subgroups feature",
    );
    releaseAll([a, b]);
  }
});

Deno.test("matmul: the subgroup section of the kernel file can be commented out whole", async () => {
  // Without the subgroup variant, SG_OPEN/SG_CLOSE wrap the section in one block comment: a block
  // comment opener or closer inside it would end that comment early or unbalance it.
  const src = await Deno.readTextFile(new URL("../../kernels/matmul.wgsl", import.meta.url));
  const open = src.indexOf("{{SG_OPEN}}"), close = src.indexOf("{{SG_CLOSE}}");
  assert(open > 0 && close > open, "matmul.wgsl has {{SG_OPEN}} ... {{SG_CLOSE}}");
  const section = src.slice(open + "{{SG_OPEN}}".length, close);
  assert(!/\/\*|\*\//.test(section), "no /* or */ between {{SG_OPEN}} and {{SG_CLOSE}}");
  assert(/subgroupShuffle/.test(section) && !/subgroup[A-Z_]/.test(src.slice(0, open)));
  assertEquals(src.slice(close + "{{SG_CLOSE}}".length).trim(), "");
});

Deno.test({
  name: "matmul subgroup: the kernel parses here; only the missing subgroups feature stops it",
  ignore: HAS_SUBGROUPS,
  async fn() {
    // Deno's WGSL compiler (Naga) checks the capability after parsing and type checking, so on
    // an adapter without subgroups this still catches syntax and type errors in the section.
    const gpu = await testGpu();
    // The file with its `//! include` and `//! struct` lines spliced in, as the loader compiles it.
    let { code } = spliceStructs(
      await gpu.kernelSource("matmul.wgsl"),
      MATMUL_KERNELS.structs,
    );
    const defines: Record<string, string> = {
      TRANS_A: "true",
      TRANS_B: "false",
      TRANS_C: "false",
      VEC_A: "true",
      VEC_B: "false",
      VEC_C: "true",
      KTAIL: "false",
      ACC: "true",
      RB: "1",
      CB: "1",
      LX: "1",
      LY: "1",
      ATYPE: "f32",
      BTYPE: "f32",
      SG_OPEN: "",
      SG_CLOSE: "",
    };
    for (const [k, v] of Object.entries(defines)) code = code.replaceAll(`{{${k}}}`, v);
    assert(!code.includes("{{"), "every define is substituted");
    gpu.device.pushErrorScope("validation");
    const info = await gpu.device.createShaderModule({ code }).getCompilationInfo();
    await gpu.device.popErrorScope();
    const errors = info.messages.filter((m) => m.type === "error").map((m) => m.message);
    assert(errors.length > 0, "Naga compiled subgroup builtins without the feature?");
    for (const e of errors) assert(/Capabilities\(SUBGROUP\)/.test(e) && !/parsing/.test(e), e);
  },
});

Deno.test({
  name: "matmul subgroup: f16 operands" +
    (HAS_SUBGROUPS && (await testGpu()).hasF16
      ? ""
      : " [needs the subgroups and shader-f16 features: ignored on this adapter]"),
  ignore: !(HAS_SUBGROUPS && (await testGpu()).hasF16),
  async fn() {
    const gpu = await testGpu();
    for (
      const [M, N, K, transA, transB] of [[37, 29, 13, false, true], [
        21,
        12,
        36,
        true,
        false,
      ]] as const
    ) {
      const av = randn(M * K, 71), bv = randn(K * N, 72);
      const a = gpu.upload(av, transA ? [K, M] : [M, K], "f16");
      const b = gpu.upload(bv, transB ? [N, K] : [K, N], "f16");
      const c = await matmul(gpu, a, b, { transA, transB, variant: "subgroup" });
      const [ar, br] = await gpu.readMany([a, b]);
      assertClose(await gpu.read(c), matmulRef(ar, br, M, N, K, { transA, transB }), {
        ...tol(K),
        label: `subgroup f16 ${M}x${N}x${K}`,
      });
      releaseAll([a, b, c]);
    }
  },
});
