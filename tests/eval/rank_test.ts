/** Singular values and rank statistics on matrices with known spectra. */
import { assertAlmostEquals, assertEquals, assertGreater, assertThrows } from "@std/assert";
import { deltaWeight, rankStats, singularValues } from "../../lib/eval/rank.ts";
import { Rng } from "../../lib/engine/rand.ts";

/** n×k matrix (row-major) with orthonormal columns: Gram-Schmidt, twice, on Gaussian columns. */
function orthonormalColumns(n: number, k: number, rng: Rng): Float64Array {
  const cols: Float64Array[] = [];
  for (let j = 0; j < k; j++) {
    const v = Float64Array.from({ length: n }, () => rng.normal());
    for (let pass = 0; pass < 2; pass++) {
      for (const q of cols) {
        let d = 0;
        for (let i = 0; i < n; i++) d += q[i] * v[i];
        for (let i = 0; i < n; i++) v[i] -= d * q[i];
      }
    }
    const nrm = Math.hypot(...v);
    for (let i = 0; i < n; i++) v[i] /= nrm;
    cols.push(v);
  }
  const out = new Float64Array(n * k);
  for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) out[i * k + j] = cols[j][i];
  return out;
}

/** U·diag(s)·Vᵀ for random orthonormal U [rows, k], V [cols, k]. */
function withSpectrum(rows: number, cols: number, s: number[], seed: number): Float64Array {
  const rng = new Rng(seed);
  const k = s.length;
  const u = orthonormalColumns(rows, k, rng);
  const v = orthonormalColumns(cols, k, rng);
  const a = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      let acc = 0;
      for (let t = 0; t < k; t++) acc += u[i * k + t] * s[t] * v[j * k + t];
      a[i * cols + j] = acc;
    }
  }
  return a;
}

function assertSpectrum(actual: Float64Array, expected: number[], tol: number, label: string) {
  assertEquals(actual.length, expected.length, label);
  for (let i = 0; i < expected.length; i++) {
    assertAlmostEquals(actual[i], expected[i], tol, `${label}: σ${i}`);
  }
}

Deno.test("singularValues: 2×2 by hand", () => {
  // AᵀA = [[25, 20], [20, 25]] has eigenvalues 45 and 5.
  assertSpectrum(singularValues([3, 0, 4, 5], 2, 2), [Math.sqrt(45), Math.sqrt(5)], 1e-13, "2×2");
  assertSpectrum(singularValues([-2], 1, 1), [2], 0, "1×1");
  // One row / one column: the single σ is the vector norm.
  assertSpectrum(singularValues([3, 4, 12], 1, 3), [13], 1e-13, "1×3");
  assertSpectrum(singularValues([3, 4, 12], 3, 1), [13], 1e-13, "3×1");
  assertEquals(singularValues([], 0, 5).length, 0);
});

Deno.test("singularValues recovers known spectra to 1e-9 (tall, wide, square, deficient)", () => {
  const cases: [number, number, number[]][] = [
    [12, 8, [9, 5, 4, 2.5, 1, 0.5, 0.1, 1e-3]],
    [8, 12, [7, 7, 3, 1, 1, 0.25, 0.125, 0.0625]],
    [17, 17, Array.from({ length: 17 }, (_, i) => 2 ** -i)],
    [30, 21, [100, 10, 1, 0.1, 0.01]],
    [21, 30, [3, 2, 1]],
    [40, 33, Array.from({ length: 33 }, (_, i) => 1 + i)],
  ];
  cases.forEach(([m, n, s], c) => {
    const sv = singularValues(withSpectrum(m, n, s, 10 + c), m, n);
    const sorted = [...s].sort((a, b) => b - a);
    const want = sorted.concat(new Array(Math.min(m, n) - s.length).fill(0));
    assertSpectrum(sv, want, 1e-9, `${m}×${n}`);
  });
});

Deno.test("singularValues accepts Float32Array input and rejects bad input", () => {
  const a32 = Float32Array.from(withSpectrum(9, 6, [4, 3, 2, 1, 0.5, 0.25], 3));
  const sv = singularValues(a32, 9, 6);
  // The f32 rounding of the entries perturbs σ by ~1e-7 relative.
  assertSpectrum(sv, [4, 3, 2, 1, 0.5, 0.25], 1e-5, "f32");
  assertThrows(() => singularValues([1, 2, 3], 2, 2), RangeError);
  assertThrows(() => singularValues([1, NaN, 3, 4], 2, 2), RangeError);
});

Deno.test("rankStats: effective rank of I, rank-1 and diag(1,1,0,0)", () => {
  const n = 7;
  const eye = new Float64Array(n * n);
  for (let i = 0; i < n; i++) eye[i * n + i] = 1;
  const st = rankStats(singularValues(eye, n, n), { shape: [n, n] });
  assertAlmostEquals(st.effectiveRank, n, 1e-12);
  assertEquals(st.rank, n);
  assertAlmostEquals(st.sumSquares, n, 1e-12);

  // Outer product u·vᵀ: rank 1, σ₁ = |u|·|v| = 5·13.
  const u = [3, 4, 0, 0, 0];
  const v = [5, 12, 0, 0];
  const outer = new Float64Array(20);
  for (let i = 0; i < 5; i++) for (let j = 0; j < 4; j++) outer[i * 4 + j] = u[i] * v[j];
  const r1 = rankStats(singularValues(outer, 5, 4), { shape: [5, 4], dtype: "f64" });
  assertEquals(r1.rank, 1);
  assertAlmostEquals(r1.effectiveRank, 1, 1e-9);
  assertAlmostEquals(r1.top[0], 65, 1e-12);
  assertEquals(r1.top.length, 4);

  const d = rankStats([1, 1, 0, 0]);
  assertAlmostEquals(d.effectiveRank, 2, 1e-15);
  assertEquals(d.rank, 2);
  // A zero matrix has no spectrum to spread: effective rank 0.
  assertEquals(rankStats([0, 0, 0]).effectiveRank, 0);
});

Deno.test("rankStats: numpy tolerance, relTol, threshold and topK", () => {
  // numpy matrix_rank: σ > σmax·max(M, N)·eps.
  const sv = [1, 1e-6, 1e-12];
  assertEquals(rankStats(sv, { shape: [10, 10], dtype: "f32" }).rank, 1); // tol ≈ 1.19e-6
  assertEquals(rankStats(sv, { shape: [10, 10], dtype: "f64" }).rank, 3); // tol ≈ 2.2e-15
  const f32 = rankStats(sv, { shape: [10, 4], dtype: "f32" });
  assertAlmostEquals(f32.tolerance, 10 * 2 ** -23, 1e-20);
  assertEquals(rankStats(sv, { relTol: 1e-9 }).rank, 2);
  // p = (4, 2, 1, 1)/8: erank = exp(-(½ln½ + ¼ln¼ + 2·⅛ln⅛)) = 2^1.75.
  const st = rankStats([1, 4, 1, 2], { threshold: 1.5, topK: 2 });
  assertAlmostEquals(st.effectiveRank, 2 ** 1.75, 1e-12);
  assertEquals(st.countAbove, 2);
  assertEquals(st.top, [4, 2]);
  assertEquals(rankStats([0.004, 0.006, 0.01]).countAbove, 2); // default threshold 0.005
  assertAlmostEquals(st.sumSquares, 22, 1e-12);
});

Deno.test("HiRA ΔW = W0 ⊙ (B·A) has rank > r while B·A and LoRA's ΔW have rank r", () => {
  const rng = new Rng(42);
  const dims = { inFeatures: 12, outFeatures: 16, r: 2 };
  const w0 = Float64Array.from({ length: 16 * 12 }, () => rng.normal());
  const a = Float64Array.from({ length: 2 * 12 }, () => rng.normal());
  const b = Float64Array.from({ length: 16 * 2 }, () => rng.normal());
  const ones = new Float64Array(16 * 12).fill(1);
  const ba = deltaWeight("HIRA", ones, a, b, dims);
  const hira = deltaWeight("HIRA", w0, a, b, dims);
  const lora = deltaWeight("LORA", null, a, b, dims, 16 / 2);
  const rank = (m: Float64Array) => rankStats(singularValues(m, 16, 12), { shape: [16, 12] }).rank;
  assertEquals(rank(ba), 2);
  assertEquals(rank(lora), 2);
  assertGreater(rank(hira), 2);
  // Generic W0 makes the Hadamard product full rank here (bound: rank(W0)·r = 24 ≥ 12).
  assertEquals(rank(hira), 12);
  // LoRA's ΔW is exactly scale·B·A.
  for (let i = 0; i < lora.length; i++) assertAlmostEquals(lora[i], 8 * ba[i], 1e-12);
  assertThrows(() => deltaWeight("HIRA", null, a, b, dims), RangeError);
  assertThrows(() => deltaWeight("LORA", null, a, b.subarray(1), dims), RangeError);
});

Deno.test("singularValues: 160×128 known spectrum and Σσ² = ‖A‖_F²", () => {
  // Large enough for many QR sweeps and deflations; the Frobenius identity is an independent check.
  const s = Array.from({ length: 128 }, (_, i) => 10 / (1 + i));
  const a = withSpectrum(160, 128, s, 99);
  const sv = singularValues(a, 160, 128);
  assertSpectrum(sv, s, 1e-9, "160×128");
  let fro = 0;
  for (const v of a) fro += v * v;
  assertAlmostEquals(rankStats(sv).sumSquares, fro, 1e-9);
});
