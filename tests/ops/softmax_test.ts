import { assert } from "@std/assert";
import { softmax, softmaxBackward, type SoftmaxVariant } from "../../lib/ops/softmax.ts";
import { softmaxBackwardRef, softmaxRef } from "../../lib/ref/softmax.ts";
import { assertClose, finiteDifferences, randn, testGpu } from "../_util.ts";

const VARIANTS: SoftmaxVariant[] = ["cpu", "workgroup"];
// 1×1, a single column, a column count below / above / not a multiple of the 256 lanes.
const SHAPES: [number, number][] = [[1, 1], [7, 1], [1, 5], [3, 7], [5, 300], [257, 5], [2, 513]];

Deno.test("softmax forward and backward match the f64 reference (both variants)", async () => {
  const gpu = await testGpu();
  for (const variant of VARIANTS) {
    for (const [rows, cols] of SHAPES) {
      const label = `${variant} [${rows},${cols}]`;
      // Large logits check the max subtraction: exp(60) alone would be fine, exp(±300) not.
      const x = randn(rows * cols, rows * 31 + cols, 300);
      const dy = randn(rows * cols, rows * 7 + cols + 1);
      const tx = gpu.upload(x, [rows, cols]);
      const tdy = gpu.upload(dy, [rows, cols]);
      const ty = await softmax(gpu, tx, { variant });
      const y = await gpu.read(ty);
      const yRef = softmaxRef(x, rows, cols);
      assertClose(y, yRef, { rtol: 1e-5, atol: 1e-7, label: `${label} forward` });
      // The backward gets the GPU's own y, as in training.
      const tdx = await softmaxBackward(gpu, ty, tdy, { variant });
      const dx = await gpu.read(tdx);
      assertClose(dx, softmaxBackwardRef(y, dy, rows, cols), {
        rtol: 1e-4,
        atol: 1e-6,
        label: `${label} backward`,
      });
      for (const t of [tx, tdy, ty, tdx]) t.release();
    }
  }
});

Deno.test("softmax of moderate logits sums to one per row and keeps leading dims", async () => {
  const gpu = await testGpu();
  const x = randn(2 * 3 * 40, 5, 4);
  const tx = gpu.upload(x, [2, 3, 40]);
  const ty = await softmax(gpu, tx);
  assert(ty.shape.join() === "2,3,40");
  const y = await gpu.read(ty);
  for (let r = 0; r < 6; r++) {
    let s = 0;
    for (let c = 0; c < 40; c++) s += y[r * 40 + c];
    assertClose([s], [1], { rtol: 0, atol: 1e-6, label: `row ${r}` });
  }
  tx.release();
  ty.release();
});

Deno.test("softmax reference backward matches central finite differences in f64", () => {
  const rows = 3, cols = 5;
  const x = Float64Array.from(randn(rows * cols, 11, 2));
  const w = Float64Array.from(randn(rows * cols, 12));
  // L = Σ w ⊙ softmax(x), so dL/dy = w.
  const loss = (xs: Float64Array) => {
    const y = softmaxRef(xs, rows, cols);
    let s = 0;
    for (let i = 0; i < y.length; i++) s += w[i] * y[i];
    return s;
  };
  const dx = softmaxBackwardRef(softmaxRef(x, rows, cols), w, rows, cols);
  const fd = finiteDifferences(x, () => loss(x));
  assertClose(dx, fd, { rtol: 1e-6, atol: 1e-9, label: "softmax fd" });
});
