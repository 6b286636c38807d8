import { assert } from "@std/assert";
import {
  attentionBackward,
  attentionDecode,
  attentionForward,
  type AttentionVariant,
} from "../../lib/ops/attention.ts";
import {
  attentionBackwardRef,
  attentionDecodeRef,
  attentionRef,
  type AttentionRefShape,
} from "../../lib/ref/attention.ts";
import { assertClose, randn, testGpu } from "../_util.ts";

// "cpu" runs the blocked rows kernels (4 rows per invocation) where D % 16 == 0 and D <= 128,
// else the same kernels as "rows".
const VARIANTS: AttentionVariant[] = ["cpu", "rows", "tiled"];

interface Case {
  /** Sequence lengths, packed in order. */
  lens: number[];
  /** Tokens before the first sequence and after the last one, which belong to no sequence. */
  lead?: number;
  h: number;
  hkv: number;
  d: number;
  pad?: number;
  scale?: number;
  /** Multiplier of the random q, to push the scores far from 0. */
  qScale?: number;
  /**
   * Skip the CPU backward ("cpu" and "rows" run the same rows kernels at D = 256): its four
   * 64-vec4 private arrays cost lavapipe ~5 s of cold LLVM compile, and the code is the same as
   * at D = 64 but for one constant.
   */
  cpuForwardOnly?: boolean;
}

const CASES: Case[] = [
  { lens: [1], h: 2, hkv: 2, d: 8 },
  { lens: [5, 1, 13], h: 2, hkv: 2, d: 8 },
  { lens: [5, 1, 13], h: 6, hkv: 2, d: 12 },
  // D % 4 != 0: the scalar path.
  { lens: [5, 1, 13], h: 4, hkv: 1, d: 6 },
  { lens: [5, 1, 13], h: 6, hkv: 2, d: 64 },
  // The blocked CPU kernels at each chunk count they are built for (D = 16·CH): 4-token blocks
  // that straddle sequences, end past N (N % 4 != 0) and hold padding tokens.
  { lens: [6, 1, 9], h: 4, hkv: 2, d: 16, lead: 1, pad: 2 },
  { lens: [7, 6], h: 3, hkv: 1, d: 32 },
  { lens: [5, 1, 13], h: 2, hkv: 1, d: 128 },
  // An empty sequence, padding tokens on both sides, and a large explicit scale (scores of ±20
  // and more).
  { lens: [3, 0, 4], h: 4, hkv: 2, d: 8, lead: 2, pad: 2, scale: 1, qScale: 3 },
  // Longer than a tiled workgroup (32 tokens at H/Hkv = 2, 64 keys) and a key tile (32).
  { lens: [70, 30], h: 2, hkv: 1, d: 4 },
  // The largest head dimension: tiles of 7 rows, 64 vec4 per private array.
  { lens: [3, 2], h: 2, hkv: 1, d: 256, cpuForwardOnly: true },
];

function cuOf(lens: number[], lead = 0): Uint32Array {
  const cu = new Uint32Array(lens.length + 1);
  cu[0] = lead;
  lens.forEach((l, i) => cu[i + 1] = cu[i] + l);
  return cu;
}

function label(c: Case): string {
  return `lens ${c.lens}${c.lead || c.pad ? ` padded ${c.lead}/${c.pad}` : ""} ` +
    `H${c.h}/${c.hkv} D${c.d}`;
}

Deno.test("attention forward and backward match the f64 reference", async () => {
  const gpu = await testGpu();
  for (const [ci, c] of CASES.entries()) {
    const cu = cuOf(c.lens, c.lead);
    const n = cu[cu.length - 1] + (c.pad ?? 0);
    const shape: AttentionRefShape = {
      n,
      h: c.h,
      hkv: c.hkv,
      d: c.d,
      cuSeqlens: cu,
      scale: c.scale,
    };
    const q = randn(n * c.h * c.d, 100 + ci, c.qScale ?? 1);
    const k = randn(n * c.hkv * c.d, 200 + ci);
    const v = randn(n * c.hkv * c.d, 300 + ci);
    const dOut = randn(n * c.h * c.d, 400 + ci);
    const ref = attentionRef(q, k, v, shape);
    const grads = attentionBackwardRef(q, k, v, dOut, shape);
    const tq = gpu.upload(q, [n, c.h, c.d]);
    const tk = gpu.upload(k, [n, c.hkv, c.d]);
    const tv = gpu.upload(v, [n, c.hkv, c.d]);
    const tdo = gpu.upload(dOut, [n, c.h, c.d]);
    const tcu = gpu.upload(cu, [cu.length], "u32");
    for (const variant of VARIANTS) {
      const name = `${label(c)} ${variant}`;
      const opts = { scale: c.scale, variant };
      const saved = await attentionForward(gpu, tq, tk, tv, tcu, opts);
      if (c.cpuForwardOnly && variant !== "tiled") {
        const [out, lse] = await gpu.readMany([saved.out, saved.lse]);
        assertClose(out, ref.out, { rtol: 1e-4, atol: 1e-5, label: `${name} out` });
        assertClose(lse, ref.lse, { rtol: 1e-5, atol: 1e-5, label: `${name} lse` });
        saved.out.release();
        saved.lse.release();
        continue;
      }
      const g = await attentionBackward(gpu, tq, tk, tv, saved, tdo, tcu, opts);
      const [out, lse, dq, dk, dv] = await gpu.readMany([saved.out, saved.lse, g.dq, g.dk, g.dv]);
      assertClose(out, ref.out, { rtol: 1e-4, atol: 1e-5, label: `${name} out` });
      assertClose(lse, ref.lse, { rtol: 1e-5, atol: 1e-5, label: `${name} lse` });
      assertClose(dq, grads.dq, { rtol: 1e-3, atol: 1e-5, label: `${name} dq` });
      assertClose(dk, grads.dk, { rtol: 1e-3, atol: 1e-5, label: `${name} dk` });
      assertClose(dv, grads.dv, { rtol: 1e-3, atol: 1e-5, label: `${name} dv` });
      for (const t of [saved.out, saved.lse, g.dq, g.dk, g.dv]) t.release();
    }
    for (const t of [tq, tk, tv, tdo, tcu]) t.release();
  }
});

Deno.test("attention reference backward matches central finite differences in f64", () => {
  const lens = [3, 2];
  const cu = cuOf(lens);
  const n = 5, h = 4, hkv = 2, d = 3;
  const shape: AttentionRefShape = { n, h, hkv, d, cuSeqlens: cu, scale: 0.7 };
  const q = Float64Array.from(randn(n * h * d, 1, 2));
  const k = Float64Array.from(randn(n * hkv * d, 2, 2));
  const v = Float64Array.from(randn(n * hkv * d, 3));
  const w = Float64Array.from(randn(n * h * d, 4));
  // L = Σ w ⊙ out, so dL/dout = w.
  const loss = (qq: Float64Array, kk: Float64Array, vv: Float64Array) => {
    const { out } = attentionRef(qq, kk, vv, shape);
    let s = 0;
    for (let i = 0; i < out.length; i++) s += w[i] * out[i];
    return s;
  };
  const g = attentionBackwardRef(q, k, v, w, shape);
  const eps = 1e-6;
  const inputs = [q, k, v];
  const analytic = [g.dq, g.dk, g.dv];
  for (let which = 0; which < 3; which++) {
    const x = inputs[which];
    const fd = new Float64Array(x.length);
    for (let i = 0; i < x.length; i++) {
      const keep = x[i];
      x[i] = keep + eps;
      const up = loss(q, k, v);
      x[i] = keep - eps;
      const down = loss(q, k, v);
      x[i] = keep;
      fd[i] = (up - down) / (2 * eps);
    }
    assertClose(analytic[which], fd, { rtol: 1e-6, atol: 1e-8, label: `fd ${"qkv"[which]}` });
  }
});

Deno.test("attentionDecode matches the forward's last-token rows", async () => {
  const gpu = await testGpu();
  // D = 32: the CPU adapters' Row-chunk decode kernel; 12 and 6 the one-row kernel.
  for (const [h, hkv, d] of [[6, 2, 12], [4, 1, 6], [4, 2, 32]]) {
    const lens = [5, 1, 13];
    const cu = cuOf(lens);
    const n = cu[cu.length - 1];
    const tmax = 16;
    // A fourth sequence with nothing cached must give a zero row.
    const nb = lens.length + 1;
    const q = randn(n * h * d, 7 + d);
    const k = randn(n * hkv * d, 8 + d);
    const v = randn(n * hkv * d, 9 + d);
    const tq = gpu.upload(q, [n, h, d]);
    const tk = gpu.upload(k, [n, hkv, d]);
    const tv = gpu.upload(v, [n, hkv, d]);
    const tcu = gpu.upload(cu, [cu.length], "u32");
    const saved = await attentionForward(gpu, tq, tk, tv, tcu);
    // Caches full of garbage beyond each length, so reading past it would show.
    const kCache = randn(nb * tmax * hkv * d, 10, 50);
    const vCache = randn(nb * tmax * hkv * d, 11, 50);
    const qDec = new Float32Array(nb * h * d);
    const row = h * d, krow = hkv * d;
    for (let b = 0; b < lens.length; b++) {
      kCache.set(k.subarray(cu[b] * krow, cu[b + 1] * krow), b * tmax * krow);
      vCache.set(v.subarray(cu[b] * krow, cu[b + 1] * krow), b * tmax * krow);
      qDec.set(q.subarray((cu[b + 1] - 1) * row, cu[b + 1] * row), b * row);
    }
    const lensDec = Uint32Array.from([...lens, 0]);
    const tqd = gpu.upload(qDec, [nb, h, d]);
    const tkc = gpu.upload(kCache, [nb, tmax, hkv, d]);
    const tvc = gpu.upload(vCache, [nb, tmax, hkv, d]);
    const tlen = gpu.upload(lensDec, [nb], "u32");
    const dec = await attentionDecode(gpu, tqd, tkc, tvc, tlen);
    const [got, fwd] = await gpu.readMany([dec, saved.out]);
    const expected = new Float32Array(nb * row);
    for (let b = 0; b < lens.length; b++) {
      expected.set(fwd.subarray((cu[b + 1] - 1) * row, cu[b + 1] * row), b * row);
    }
    const name = `decode H${h}/${hkv} D${d}`;
    assertClose(got, expected, { rtol: 1e-5, atol: 1e-6, label: name });
    const ref = attentionDecodeRef(qDec, kCache, vCache, lensDec, { nb, h, hkv, d, tmax });
    assertClose(got, ref, { rtol: 1e-4, atol: 1e-5, label: `${name} vs ref` });
    for (
      const t of [tq, tk, tv, tcu, saved.out, saved.lse, tqd, tkc, tvc, tlen, dec]
    ) t.release();
  }
});

Deno.test("attention rejects mismatched heads and shapes", async () => {
  const gpu = await testGpu();
  const q = gpu.empty([4, 6, 8]), k = gpu.empty([4, 4, 8]), cu = gpu.upload([0, 4], [2], "u32");
  let msg = "";
  try {
    await attentionForward(gpu, q, k, k, cu);
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg.includes("not a multiple"), msg);
  for (const t of [q, k, cu]) t.release();
});
