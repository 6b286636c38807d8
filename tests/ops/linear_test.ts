import { addBias, biasGrad, copyColumns } from "../../lib/ops/linear.ts";
import { addBiasRef, biasGradRef, copyColumnsRef } from "../../lib/ref/linear.ts";
import { assertClose, randn, testGpu } from "../_util.ts";

Deno.test("linear helpers match their CPU references", async (t) => {
  const gpu = await testGpu();
  for (const [rows, cols] of [[1, 1], [1, 9], [7, 1], [37, 29]]) {
    await t.step(`${rows}x${cols}`, async () => {
      const y = randn(rows * cols, 1), b = randn(cols, 2), db0 = randn(cols, 3);
      const ty = gpu.upload(y, [rows, cols]), tb = gpu.upload(b, [cols]);
      const tdb = gpu.upload(db0, [cols]);
      await addBias(gpu, ty, tb);
      await biasGrad(gpu, gpu.upload(y, [rows, cols]), tdb);
      const off = Math.floor(cols / 3), cnt = cols - off;
      const blk = await copyColumns(gpu, gpu.upload(y, [rows, cols]), off, cnt);
      const [ry, rdb, rblk] = await gpu.readMany([ty, tdb, blk]);
      assertClose(ry, addBiasRef(y, b), { label: "addBias" });
      assertClose(rdb, biasGradRef(y, cols).map((v, i) => v + db0[i]), {
        rtol: 1e-5,
        atol: 1e-5,
        label: "biasGrad",
      });
      assertClose(rblk, copyColumnsRef(y, rows, cols, off, cnt), { label: "copyColumns" });
    });
  }
});
