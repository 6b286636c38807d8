import { assertEquals, assertThrows } from "@std/assert";
import { positionsFor, rope, ropeBackward, ropeFrequencies } from "../../lib/ops/rope.ts";
import { ropeBackward as refBackward, ropeForward as refForward } from "../../lib/ref/rope.ts";
import { Rng } from "../../lib/engine/rand.ts";
import { assertClose, finiteDifferences, randn, testGpu } from "../_util.ts";

const LLAMA3 = {
  rope_type: "llama3",
  factor: 8,
  low_freq_factor: 1,
  high_freq_factor: 4,
  original_max_position_embeddings: 32,
};

/** transformers' default + llama3 inv_freq, transcribed array-at-a-time as the Python does. */
function hfLlama3(dim: number, base: number, s: typeof LLAMA3): number[] {
  const invFreq = [];
  for (let k = 0; k < dim; k += 2) invFreq.push(1.0 / base ** (k / dim));
  const lowFreqWavelen = s.original_max_position_embeddings / s.low_freq_factor;
  const highFreqWavelen = s.original_max_position_embeddings / s.high_freq_factor;
  const wavelen = invFreq.map((f) => 2 * Math.PI / f);
  let llama = invFreq.map((f, i) => wavelen[i] > lowFreqWavelen ? f / s.factor : f);
  const smoothFactor = wavelen.map((w) =>
    (s.original_max_position_embeddings / w - s.low_freq_factor) /
    (s.high_freq_factor - s.low_freq_factor)
  );
  const smoothed = llama.map((f, i) => (1 - smoothFactor[i]) * f / s.factor + smoothFactor[i] * f);
  const isMedium = wavelen.map((w) => !(w < highFreqWavelen) && !(w > lowFreqWavelen));
  llama = llama.map((f, i) => isMedium[i] ? smoothed[i] : f);
  return llama;
}

Deno.test("ropeFrequencies: default and llama3 scaling as transformers computes them", () => {
  const plain = ropeFrequencies({ headDim: 8, ropeTheta: 10000 });
  assertClose(plain, [1, 0.1, 0.01, 0.001], { rtol: 1e-7, atol: 0, label: "default" });
  assertEquals(ropeFrequencies({ headDim: 8, ropeTheta: 10000, ropeScaling: null }), plain);
  assertEquals(
    ropeFrequencies({ headDim: 8, ropeTheta: 10000, ropeScaling: { rope_type: "default" } }),
    plain,
  );
  // The golden fixture's config: wavelengths 2π·[1, 10, 100, 1000] against the band [8, 32].
  const fixture = ropeFrequencies({ headDim: 8, ropeTheta: 10000, ropeScaling: LLAMA3 });
  assertClose(fixture, [1, 0.0125, 0.00125, 0.000125], { rtol: 1e-7, atol: 0, label: "fixture" });
  // head_dim 16 puts wavelength 2π·√10 ≈ 19.9 inside the band, so the smooth blend is used.
  for (const [dim, base] of [[16, 10000], [64, 500000], [128, 500000]]) {
    const got = ropeFrequencies({ headDim: dim, ropeTheta: base, ropeScaling: LLAMA3 });
    assertEquals(got, Float32Array.from(hfLlama3(dim, base, LLAMA3)), `llama3 ${dim}`);
  }
  const medium = ropeFrequencies({ headDim: 16, ropeTheta: 10000, ropeScaling: LLAMA3 })[1];
  // Math.pow: Deno's TS transpiler mis-folds the literal `10000 ** -(2 / 16)` (to 6.25e-10).
  const f = Math.pow(10000, -2 / 16), smooth = (32 * f / (2 * Math.PI) - 1) / 3;
  assertClose([medium], [(1 - smooth) * f / 8 + smooth * f], { rtol: 1e-7, label: "blend" });
  // Older configs name the kind "type".
  const { rope_type: _, ...rest } = LLAMA3;
  assertEquals(
    ropeFrequencies({ headDim: 16, ropeTheta: 10000, ropeScaling: { ...rest, type: "llama3" } }),
    ropeFrequencies({ headDim: 16, ropeTheta: 10000, ropeScaling: LLAMA3 }),
  );
  assertThrows(() =>
    ropeFrequencies({ headDim: 8, ropeTheta: 1e4, ropeScaling: { type: "yarn" } })
  );
  assertThrows(() => ropeFrequencies({ headDim: 7, ropeTheta: 1e4 }));
});

Deno.test("positionsFor restarts at 0 in each packed sequence", () => {
  assertEquals(positionsFor(new Uint32Array([0, 3, 3, 5])), new Uint32Array([0, 1, 2, 0, 1]));
  assertEquals(positionsFor(new Uint32Array([0])), new Uint32Array(0));
  assertThrows(() => positionsFor(new Uint32Array([1, 2])));
});

Deno.test("rope forward, inverse, in-place and backward match the f64 reference", async () => {
  const gpu = await testGpu();
  const rng = new Rng(5);
  // [N, H, D]: one token, one head, D/2 odd, and a realistic head size.
  const shapes: [number, number, number][] = [[1, 1, 2], [3, 2, 8], [5, 3, 6], [7, 4, 64]];
  for (const [n, h, d] of shapes) {
    for (const scaling of [null, LLAMA3]) {
      const inv = ropeFrequencies({ headDim: d, ropeTheta: 10000, ropeScaling: scaling });
      const pos = Uint32Array.from({ length: n }, (_, i) => i === 0 ? 0 : rng.int(8192));
      const x = randn(n * h * d, n * h + d);
      const tpos = gpu.upload(pos, [n], "u32"), tinv = gpu.upload(inv, [d / 2]);
      const tx = gpu.upload(x, [n, h, d]);
      const y = await rope(gpu, tx, tpos, tinv);
      const yi = await rope(gpu, tx, tpos, tinv, { inverse: true });
      const dx = await ropeBackward(gpu, tx, tpos, tinv);
      const inPlace = gpu.upload(x, [n, h * d]);
      await rope(gpu, inPlace, tpos, tinv, { out: inPlace });
      const back = gpu.upload(x, [n, h, d]);
      await ropeBackward(gpu, back, tpos, tinv, { out: back });
      const [gy, gyi, gdx, gin, gback] = await gpu.readMany([y, yi, dx, inPlace, back]);
      const ry = refForward(x, n, h, pos, inv), ri = refForward(x, n, h, pos, inv, true);
      const label = `[${n}, ${h}, ${d}] ${scaling ? "llama3" : "default"}`;
      const tol = { rtol: 1e-5, atol: 1e-6 };
      assertClose(gy, ry, { ...tol, label: `rope ${label}` });
      assertClose(gyi, ri, { ...tol, label: `inverse ${label}` });
      assertClose(gdx, refBackward(x, n, h, pos, inv), { ...tol, label: `backward ${label}` });
      assertClose(gin, ry, { ...tol, label: `in place ${label}` });
      assertClose(gback, ri, { ...tol, label: `backward in place ${label}` });
      for (const t of [tpos, tinv, tx, y, yi, dx, inPlace, back]) t.release();
    }
  }
});

Deno.test("rope angles: cos/sin of the f32 product pos·inv_freq for large positions", async () => {
  const gpu = await testGpu();
  const pos = Uint32Array.from([0, 1, 2, 100, 1000, 4095, 4096, 8191, 8192, 12345, 32767, 100000]);
  // inv_freq 1 gives the largest angles; the others have mantissas that make the product round.
  const inv = Float32Array.from([1, 0.7, 0.3141592, 0.0123, 1.337e-4, 0.9999999]);
  const n = pos.length, half = inv.length;
  // One head whose first half is 1 and second half 0: the output is (cos θ, sin θ) itself.
  const x = new Float32Array(n * 2 * half);
  for (let t = 0; t < n; t++) x.fill(1, t * 2 * half, t * 2 * half + half);
  const tpos = gpu.upload(pos, [n], "u32"), tinv = gpu.upload(inv, [half]);
  const tx = gpu.upload(x, [n, 1, 2 * half]);
  const y = await gpu.read(await rope(gpu, tx, tpos, tinv));
  const want = new Float64Array(n * 2 * half);
  for (let t = 0; t < n; t++) {
    for (let i = 0; i < half; i++) {
      const theta = Math.fround(pos[t] * inv[i]);
      want[t * 2 * half + i] = Math.cos(theta);
      want[t * 2 * half + half + i] = Math.sin(theta);
    }
  }
  // An unrounded (fused) product would be off by up to half an f32 ulp of θ: 2.4e-4 at 8192.
  assertClose(y, want, { rtol: 0, atol: 4e-7, label: "cos/sin" });
  for (const t of [tpos, tinv, tx]) t.release();
});

Deno.test("rope reference backward matches central finite differences", () => {
  const n = 3, h = 2, d = 6;
  const inv = ropeFrequencies({ headDim: d, ropeTheta: 10000, ropeScaling: LLAMA3 });
  const pos = [0, 5, 77];
  const x = Array.from(randn(n * h * d, 1)), dy = Array.from(randn(n * h * d, 2));
  const loss = (v: number[]) => refForward(v, n, h, pos, inv).reduce((s, y, i) => s + y * dy[i], 0);
  const fd = finiteDifferences(x, () => loss(x));
  assertClose(refBackward(dy, n, h, pos, inv), fd, { rtol: 1e-6, atol: 1e-9, label: "fd rope" });
});
