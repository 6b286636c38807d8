/**
 * Shared test helpers: one GPU per test file, seeded random data, tolerance comparisons, finite
 * differences and scoped temporary folders.
 * @module
 */
import type { Gpu } from "../lib/engine/gpu.ts";
import { createDenoGpu } from "../lib/io/gpu_deno.ts";
import { Rng } from "../lib/engine/rand.ts";

let gpuPromise: Promise<Gpu> | null = null;

/** The test file's GPU device (created once). */
export function testGpu(): Promise<Gpu> {
  gpuPromise ??= createDenoGpu();
  return gpuPromise;
}

/**
 * Runs `fn` with a fresh temporary folder (`Deno.makeTempDir` with `prefix`; `""` for none) and
 * removes it with all it holds afterwards, whether `fn` returns or throws. It exists so that the
 * tests do not each repeat the make / try / finally / remove steps, and so that a failing test
 * leaves no folder behind. A failed removal is an error (something still holds or protects the
 * folder). Returns `fn`'s result.
 */
export async function withTempDir<T>(
  prefix: string,
  fn: (dir: string) => Promise<T> | T,
): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Seeded uniform data in [-1, 1). */
export function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = new Rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = r.uniform(-1, 1) * scale;
  return out;
}

/**
 * Asserts |actual - expected| <= atol + rtol·|expected| elementwise, reporting the worst index.
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  opts: { rtol?: number; atol?: number; label?: string } = {},
): void {
  const { rtol = 1e-5, atol = 1e-6, label = "" } = opts;
  if (actual.length !== expected.length) {
    throw new Error(`${label}: length ${actual.length} != expected ${expected.length}`);
  }
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    const tol = atol + rtol * Math.abs(e);
    const d = Math.abs(a - e);
    if (!(d <= tol)) {
      const excess = Number.isNaN(d) ? Infinity : d - tol;
      if (worst < 0 || excess > worstExcess) {
        worst = i;
        worstExcess = excess;
      }
    }
  }
  if (worst >= 0) {
    throw new Error(
      `${label}: mismatch at ${worst}: got ${actual[worst]}, expected ${expected[worst]} ` +
        `(rtol ${rtol}, atol ${atol})`,
    );
  }
}

/** Max |a - b| over two arrays. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/**
 * Central finite differences of `loss` with respect to each element of `x`:
 * (loss at x[i] + h − loss at x[i] − h) / 2h. `x` is perturbed in place and restored exactly.
 */
export function finiteDifferences(
  x: { length: number; [i: number]: number },
  loss: () => number,
  h = 1e-6,
): Float64Array {
  const fd = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    x[i] = v + h;
    const up = loss();
    x[i] = v - h;
    const down = loss();
    x[i] = v;
    fd[i] = (up - down) / (2 * h);
  }
  return fd;
}
