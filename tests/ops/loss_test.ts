import { assertEquals } from "@std/assert";
import { crossEntropy, lossSum } from "../../lib/ops/loss.ts";
import * as ref from "../../lib/ref/loss.ts";
import { Rng } from "../../lib/engine/rand.ts";
import { assertClose, finiteDifferences, randn, testGpu } from "../_util.ts";

// [N, V]: 1-row and 1-column cases, V below, above and not a multiple of the workgroup sizes.
const SHAPES: [number, number][] = [[1, 1], [1, 7], [5, 1], [6, 300], [4, 1000], [3, 2049]];

/** Logits spread over ±20 with one row shifted far up, where a naive exp would overflow. */
function makeLogits(n: number, v: number, seed: number): Float32Array {
  const x = randn(n * v, seed, 20);
  if (n > 2) { for (let j = 0; j < v; j++) x[v + j] += 500; }
  return x;
}

/** Targets in [0, v) with an ignored (−100) and an out-of-range one when there are rows for it. */
function makeTargets(n: number, v: number, seed: number): Int32Array {
  const rng = new Rng(seed);
  const t = Int32Array.from({ length: n }, () => rng.int(v));
  if (n > 2) t[n - 1] = -100;
  if (n > 4) t[2] = v;
  return t;
}

Deno.test("crossEntropy forward, fused and in-place backward match the f64 reference", async () => {
  const gpu = await testGpu();
  for (const wg of [8, 256]) {
    for (const [n, v] of SHAPES) {
      const logits = makeLogits(n, v, n * v), targets = makeTargets(n, v, n + v);
      const counted = targets.filter((t) => t >= 0 && t < v).length;
      const scale = 1 / Math.max(1, counted);
      const tl = gpu.upload(logits, [n, v]), tt = gpu.upload(targets, [n], "i32");
      const inPlace = gpu.upload(logits, [n, v]);
      // Garbage in dlogits checks that ignored rows get explicit zeros.
      const dOut = gpu.upload(randn(n * v, 3), [n, v]);
      const fwd = await crossEntropy(gpu, tl, tt, { workgroupSize: wg });
      const fused = await crossEntropy(gpu, tl, tt, {
        backward: true,
        scale,
        dlogits: dOut,
        workgroupSize: wg,
      });
      const inp = await crossEntropy(gpu, inPlace, tt, {
        backward: true,
        scale,
        dlogits: inPlace,
        workgroupSize: wg,
      });
      const [l0, l1, l2, d1, d2] = await gpu.readMany([
        fwd.loss,
        fused.loss,
        inp.loss,
        fused.dlogits!,
        inp.dlogits!,
      ]);
      const label = `wg ${wg} [${n}, ${v}]`;
      const wantLoss = ref.crossEntropyForward(logits, n, v, targets);
      const wantGrad = ref.crossEntropyBackward(logits, n, v, targets, scale);
      assertClose(l0, wantLoss, { rtol: 1e-5, atol: 2e-5, label: `loss ${label}` });
      assertEquals(l1, l0, `fused loss ${label}`);
      assertEquals(l2, l0, `in-place loss ${label}`);
      assertClose(d1, wantGrad, { rtol: 1e-4, atol: 1e-7, label: `dlogits ${label}` });
      assertEquals(d2, d1, `in-place dlogits ${label}`);
      for (const t of [tl, tt, inPlace, dOut, fwd.loss, fused.loss, inp.loss]) t.release();
    }
  }
});

Deno.test("lossSum adds up a vector (both workgroup sizes)", async () => {
  const gpu = await testGpu();
  for (const wg of [8, 256]) {
    for (const n of [1, 5, 256, 3001]) {
      const x = randn(n, n, 3);
      const t = gpu.upload(x, [n]);
      const s = await lossSum(gpu, t, { workgroupSize: wg });
      const [got] = await gpu.readMany([s]);
      const want = x.reduce((a, b) => a + b, 0);
      assertClose(got, [want], { rtol: 1e-5, atol: 1e-5, label: `sum ${n} wg ${wg}` });
      t.release();
      s.release();
    }
  }
});

Deno.test("crossEntropy reference backward matches central finite differences", () => {
  const n = 4, v = 5, scale = 1 / 3;
  const logits = Array.from(randn(n * v, 8, 3));
  const targets = [2, -100, 0, 4];
  const loss = (l: number[]) =>
    scale * ref.crossEntropyForward(l, n, v, targets).reduce((a, b) => a + b, 0);
  const fd = finiteDifferences(logits, () => loss(logits));
  const got = ref.crossEntropyBackward(logits, n, v, targets, scale);
  assertClose(got, fd, { rtol: 1e-6, atol: 1e-9, label: "fd" });
});

// ---- golden values from PyTorch: next-token NLL of the fixture model's logits ----

const GOLDEN = new URL("../fixtures/golden/", import.meta.url);

function readF32Safetensors(bytes: Uint8Array): Map<string, Float32Array> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  const out = new Map<string, Float32Array>();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const { dtype, data_offsets: [a, b] } = info as { dtype: string; data_offsets: number[] };
    if (dtype !== "F32") continue;
    out.set(name, new Float32Array(bytes.slice(8 + headerLen + a, 8 + headerLen + b).buffer));
  }
  return out;
}

let haveGolden = true;
try {
  Deno.statSync(new URL("golden/base.logits.safetensors", GOLDEN));
} catch {
  haveGolden = false;
}

Deno.test({
  name: "crossEntropy on packed sequences reproduces PyTorch's golden NLL and masked loss",
  ignore: !haveGolden,
  fn: async () => {
    const gpu = await testGpu();
    const t = readF32Safetensors(
      Deno.readFileSync(new URL("golden/base.logits.safetensors", GOLDEN)),
    );
    const { tokens, loss_mask: mask } = JSON.parse(
      Deno.readTextFileSync(new URL("tokens.json", GOLDEN)),
    ) as { tokens: number[][]; loss_mask: number[][] };
    const v = 256;
    // Pack the sequences; the target of position t is token t+1 when it is counted, and each
    // sequence's last position has none.
    const rows: Float32Array[] = [], targets: number[] = [], allTargets: number[] = [];
    tokens.forEach((seq, s) => {
      rows.push(t.get(`logits.${s}`)!);
      for (let i = 0; i < seq.length; i++) {
        const next = i + 1 < seq.length ? seq[i + 1] : -100;
        allTargets.push(next);
        targets.push(next >= 0 && mask[s][i + 1] === 1 ? next : -100);
      }
    });
    const logits = new Float32Array(rows.reduce((a, r) => a + r.length, 0));
    let off = 0;
    for (const r of rows) {
      logits.set(r, off);
      off += r.length;
    }
    const n = targets.length;
    const counted = targets.filter((x) => x >= 0).length;
    assertEquals(counted, 23);
    const tl = gpu.upload(logits, [n, v]);
    const tAll = gpu.upload(allTargets, [n], "i32"), tMasked = gpu.upload(targets, [n], "i32");
    const all = await crossEntropy(gpu, tl, tAll);
    const masked = await crossEntropy(gpu, tl, tMasked, { backward: true, scale: 1 / counted });
    const sum = await lossSum(gpu, masked.loss);
    const [nll, total] = await gpu.readMany([all.loss, sum]);
    const want: number[] = [];
    tokens.forEach((_, s) => want.push(...t.get(`nll.${s}`)!, 0));
    assertClose(nll, want, { rtol: 1e-5, atol: 1e-5, label: "nll" });
    assertClose([total[0] / counted], t.get("loss")!, { rtol: 1e-5, label: "masked mean loss" });
    for (const x of [tl, tAll, tMasked, all.loss, masked.loss, masked.dlogits!, sum]) x.release();
  },
});
