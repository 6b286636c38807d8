import { rmsnorm, rmsnormBackward } from "../../lib/ops/norm.ts";
import {
  rmsnormBackward as refBackward,
  rmsnormForward as refForward,
} from "../../lib/ref/norm.ts";
import { assertClose, finiteDifferences, randn, testGpu } from "../_util.ts";

// [N, C]: 1-row and 1-column cases, C below/above/not a multiple of the workgroup sizes.
const SHAPES: [number, number][] = [[1, 1], [1, 7], [5, 1], [3, 300], [17, 64], [2, 513]];
const EPS = 1e-5;

Deno.test("rmsnorm forward matches the f64 reference (both workgroup sizes)", async () => {
  const gpu = await testGpu();
  for (const wg of [8, 256]) {
    for (const [n, c] of SHAPES) {
      const x = randn(n * c, n * 31 + c, 2), w = randn(c, c + 7);
      const tx = gpu.upload(x, [n, c]), tw = gpu.upload(w, [c]);
      const { y, rstd } = await rmsnorm(gpu, tx, tw, EPS, { workgroupSize: wg });
      const [gy, gr] = await gpu.readMany([y, rstd]);
      const ref = refForward(x, w, n, c, EPS);
      const label = `wg ${wg} [${n}, ${c}]`;
      assertClose(gy, ref.y, { rtol: 1e-5, atol: 1e-6, label: `y ${label}` });
      assertClose(gr, ref.rstd, { rtol: 1e-5, atol: 0, label: `rstd ${label}` });
      for (const t of [tx, tw, y, rstd]) t.release();
    }
  }
});

Deno.test("rmsnorm backward matches the f64 reference (dx, accumulated dx and dw)", async () => {
  const gpu = await testGpu();
  for (const wg of [8, 256]) {
    for (const [n, c] of SHAPES) {
      // Small chunks exercise the two-pass weight-gradient reduction; the default is one pass.
      for (const rowsPerChunk of [2, undefined]) {
        const x = randn(n * c, n + 3 * c), w = randn(c, c + 1), dy = randn(n * c, 99 + n);
        const dx0 = randn(n * c, 5), dw0 = randn(c, 6);
        const tx = gpu.upload(x, [n, c]), tw = gpu.upload(w, [c]), tdy = gpu.upload(dy, [n, c]);
        const { y, rstd } = await rmsnorm(gpu, tx, tw, EPS, { workgroupSize: wg });
        const dw = gpu.upload(dw0, [c]);
        const dx = await rmsnormBackward(gpu, tx, tw, rstd, tdy, {
          dw,
          workgroupSize: wg,
          dwRowsPerChunk: rowsPerChunk,
        });
        const dxAcc = gpu.upload(dx0, [n, c]);
        await rmsnormBackward(gpu, tx, tw, rstd, tdy, {
          dx: dxAcc,
          accumulate: true,
          workgroupSize: wg,
        });
        const [gdx, gdw, gacc] = await gpu.readMany([dx, dw, dxAcc]);
        const ref = refBackward(x, w, dy, n, c, EPS);
        const label = `wg ${wg} chunk ${rowsPerChunk} [${n}, ${c}]`;
        const tol = { rtol: 1e-4, atol: 1e-5 };
        assertClose(gdx, ref.dx, { ...tol, label: `dx ${label}` });
        assertClose(gdw, ref.dw.map((v, j) => v + dw0[j]), { ...tol, label: `dw ${label}` });
        assertClose(gacc, ref.dx.map((v, i) => v + dx0[i]), { ...tol, label: `dx+= ${label}` });
        for (const t of [tx, tw, tdy, y, rstd, dw, dx, dxAcc]) t.release();
      }
    }
  }
});

Deno.test("rmsnorm reference backward matches central finite differences", () => {
  for (const [n, c] of [[1, 1], [3, 5], [2, 8]] as [number, number][]) {
    const x = Array.from(randn(n * c, 11 + c)), w = Array.from(randn(c, 12));
    const dy = Array.from(randn(n * c, 13));
    const loss = (xx: number[], ww: number[]) =>
      refForward(xx, ww, n, c, EPS).y.reduce((s, v, i) => s + v * dy[i], 0);
    const { dx, dw } = refBackward(x, w, dy, n, c, EPS);
    const fdx = finiteDifferences(x, () => loss(x, w));
    const fdw = finiteDifferences(w, () => loss(x, w));
    assertClose(dx, fdx, { rtol: 1e-6, atol: 1e-8, label: `fd dx [${n}, ${c}]` });
    assertClose(dw, fdw, { rtol: 1e-6, atol: 1e-8, label: `fd dw [${n}, ${c}]` });
  }
});
