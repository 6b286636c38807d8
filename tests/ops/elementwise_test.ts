import { add, mul } from "../../lib/ops/elementwise.ts";
import { assertClose, randn, testGpu } from "../_util.ts";

Deno.test("elementwise add and mul match plain loops", async () => {
  const gpu = await testGpu();
  for (const n of [1, 7, 256, 1000]) {
    const a = randn(n, 1), b = randn(n, 2);
    const ta = gpu.upload(a, [n]), tb = gpu.upload(b, [n]);
    const s = await add(gpu, ta, tb, 0.5);
    const p = await mul(gpu, ta, tb);
    const [rs, rp] = await gpu.readMany([s, p]);
    assertClose(rs, a.map((x, i) => x + 0.5 * b[i]), { label: `add ${n}` });
    assertClose(rp, a.map((x, i) => x * b[i]), { label: `mul ${n}` });
    for (const t of [ta, tb, s, p]) t.release();
  }
});
