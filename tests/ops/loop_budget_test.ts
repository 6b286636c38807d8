/**
 * llvmpipe's loop budget: one shader invocation runs at most 65,535 loop iterations in all, then
 * every loop is left after its current pass and the kernel carries on with wrong values and no
 * error. These tests show the limit on this adapter, and that the kernels whose loops grow with
 * the input either stay within it (HiRA's "auto" choice, the Row-chunk attention kernels) or
 * refuse with a clear error instead of returning wrong numbers.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { HiraError } from "../../lib/engine/errors.ts";
import { LLVMPIPE_LOOP_LIMIT, loopBudget, type Tensor } from "../../lib/engine/gpu.ts";
import { hiraForwardFused, hiraWeightGradsFused } from "../../lib/ops/hira.ts";
import { attentionBackward, attentionDecode, attentionForward } from "../../lib/ops/attention.ts";
import { attentionBackwardRef, attentionDecodeRef } from "../../lib/ref/attention.ts";
import { crossEntropy } from "../../lib/ops/loss.ts";
import { softmax } from "../../lib/ops/softmax.ts";
import { crossEntropyBackward, crossEntropyForward } from "../../lib/ref/loss.ts";
import { softmaxRef } from "../../lib/ref/softmax.ts";
import { assertClose, randn, testGpu } from "../_util.ts";

Deno.test("loop budget: llvmpipe by its description, unlimited elsewhere", () => {
  assertEquals(loopBudget("llvmpipe (LLVM 15.0.6, 256 bits) / 65541"), LLVMPIPE_LOOP_LIMIT);
  assertEquals(loopBudget("lavapipe"), LLVMPIPE_LOOP_LIMIT);
  assertEquals(loopBudget("google / swiftshader"), Infinity);
  assertEquals(loopBudget("NVIDIA H200"), Infinity);
});

Deno.test("loop budget: a kernel's loops stop after gpu.loopBudget iterations in all", async () => {
  const gpu = await testGpu();
  const device = gpu.device;
  const module = device.createShaderModule({
    code: `@group(0) @binding(0) var<storage, read_write> o: array<u32>;
      @compute @workgroup_size(1) fn main() {
        var n = 0u;
        for (var i = 0u; i < 100000u; i++) { n += 1u; }
        o[0] = n;
        var m = 0u;
        for (var i = 0u; i < 300u; i++) { for (var j = 0u; j < 300u; j++) { m += 1u; } }
        o[1] = m;
      }`,
  });
  const pipeline = device.createComputePipeline({
    layout: "auto",
    compute: { module, entryPoint: "main" },
  });
  const buf = device.createBuffer({
    size: 8,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
  });
  const read = device.createBuffer({
    size: 8,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(
    0,
    device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [{ binding: 0, resource: { buffer: buf } }],
    }),
  );
  pass.dispatchWorkgroups(1);
  pass.end();
  enc.copyBufferToBuffer(buf, 0, read, 0, 8);
  device.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const [n, m] = new Uint32Array(read.getMappedRange().slice(0));
  read.unmap();
  buf.destroy();
  read.destroy();
  if (Number.isFinite(gpu.loopBudget)) {
    // The first loop spends the budget; the nested loops then run one pass each.
    assertEquals([n, m], [gpu.loopBudget, 1]);
  } else {
    assertEquals([n, m], [100000, 90000]);
  }
});

Deno.test("loop budget: HiRA's CPU fused kernels refuse shapes past it", async () => {
  const gpu = await testGpu();
  if (!Number.isFinite(gpu.loopBudget)) return;
  const t = (shape: number[]) => gpu.upload(randn(shape.reduce((a, b) => a * b), 1, 0.1), shape);
  // A 16-token forward through an 8192-wide input: ~72,000 iterations per invocation.
  const x = t([16, 8192]), w0 = t([8, 8192]), a = t([32, 8192]), b = t([8, 32]);
  // Bad input for this adapter (the user can shorten it): a one-line HiraError.
  const e = await assertRejects(
    () => hiraForwardFused(gpu, x, w0, a, b, { variant: "cpu" }),
    HiraError,
    "loop iterations, over this adapter's limit of 65,535",
  );
  assert(!e.message.includes("\n"), e.message);
  // Gradients on 4,400 tokens of a [1024, 2048] layer: every workgroup walks all 64 row blocks.
  const xg = t([4400, 2048]), dy = t([4400, 1024]), w = t([1024, 2048]);
  const ag = t([4, 2048]), bg = t([1024, 4]);
  const ga = gpu.zeros([4, 2048]), gb = gpu.zeros([1024, 4]);
  await assertRejects(
    () => hiraWeightGradsFused(gpu, xg, dy, w, ag, bg, ga, gb, { variant: "cpu" }),
    Error,
    "hiraWeightGradsFused on 4400 tokens",
  );
  for (const tt of [x, w0, a, b, xg, dy, w, ag, bg, ga, gb]) tt.release();
});

Deno.test("loop budget: attention over long sequences at D = 128", async () => {
  const gpu = await testGpu();
  // One 300-token sequence, 4 query heads per KV head: each early key sees ~1,200 (query,
  // head) pairs, past the budget for the one-row kernels' unrolled-nowhere loops over D.
  const n = 300, h = 4, hkv = 1, d = 128;
  const cu = Uint32Array.from([0, n]);
  const qv = randn(n * h * d, 1), kv = randn(n * hkv * d, 2), vv = randn(n * hkv * d, 3);
  const dov = randn(n * h * d, 4);
  const up = (v: Float32Array, s: number[]) => gpu.upload(v, s);
  const q = up(qv, [n, h, d]), k = up(kv, [n, hkv, d]), v = up(vv, [n, hkv, d]);
  const dO = up(dov, [n, h, d]), tcu = gpu.upload(cu, [2], "u32");
  const ref = attentionBackwardRef(qv, kv, vv, dov, { n, h, hkv, d, cuSeqlens: cu });
  const saved = await attentionForward(gpu, q, k, v, tcu, { variant: "cpu" });
  const g = await attentionBackward(gpu, q, k, v, saved, dO, tcu, { variant: "cpu" });
  const [dq, dk, dv] = await gpu.readMany([g.dq, g.dk, g.dv]);
  assertClose(dq, ref.dq, { rtol: 1e-3, atol: 1e-5, label: "cpu dq" });
  assertClose(dk, ref.dk, { rtol: 1e-3, atol: 1e-5, label: "cpu dk" });
  assertClose(dv, ref.dv, { rtol: 1e-3, atol: 1e-5, label: "cpu dv" });
  const rest: Tensor[] = [g.dq, g.dk, g.dv];
  for (const variant of ["rows", "tiled"] as const) {
    const s = await attentionForward(gpu, q, k, v, tcu, { variant });
    rest.push(s.out, s.lse);
    if (Number.isFinite(gpu.loopBudget)) {
      await assertRejects(
        () => attentionBackward(gpu, q, k, v, s, dO, tcu, { variant }),
        Error,
        "over this adapter's limit",
      );
    } else {
      const gg = await attentionBackward(gpu, q, k, v, s, dO, tcu, { variant });
      assertClose(await gpu.read(gg.dv), ref.dv, { rtol: 1e-3, atol: 1e-5, label: variant });
      rest.push(gg.dq, gg.dk, gg.dv);
    }
  }
  // Decoding over a 1,100-token cache: the Row-chunk kernel's loop runs once per cached token.
  const tmax = 1100;
  const qd = randn(h * d, 5), kc = randn(tmax * hkv * d, 6), vc = randn(tmax * hkv * d, 7);
  const lens = Uint32Array.from([tmax]);
  const decIn = [
    up(qd, [1, h, d]),
    up(kc, [1, tmax, hkv, d]),
    up(vc, [1, tmax, hkv, d]),
    gpu.upload(lens, [1], "u32"),
  ] as const;
  const dec = await attentionDecode(gpu, ...decIn);
  const want = attentionDecodeRef(qd, kc, vc, lens, { nb: 1, h, hkv, d, tmax });
  assertClose(await gpu.read(dec), want, { rtol: 1e-4, atol: 1e-5, label: "decode" });
  for (const tt of [q, k, v, dO, tcu, saved.out, saved.lse, dec, ...decIn, ...rest]) tt.release();
});

Deno.test("loop budget: cross-entropy and softmax over rows longer than it", async () => {
  const gpu = await testGpu();
  // 300,000 logits per row: at the CPU's 8 lanes each invocation would loop 75,000 times.
  const n = 2, v = 300_000;
  const lv = randn(n * v, 21, 3);
  const targets = Int32Array.from([7, v - 1]);
  const logits = gpu.upload(lv, [n, v]);
  const tt = gpu.upload(targets, [n], "i32");
  const { loss, dlogits } = await crossEntropy(gpu, logits, tt, { backward: true });
  assertClose(await gpu.read(loss), crossEntropyForward(lv, n, v, targets), {
    rtol: 1e-5,
    atol: 1e-5,
    label: "loss",
  });
  assertClose(await gpu.read(dlogits!), crossEntropyBackward(lv, n, v, targets, 1), {
    rtol: 1e-4,
    atol: 1e-9,
    label: "dlogits",
  });
  // Softmax over 30,000 columns: the per-row kernel would loop 90,000 times.
  const cols = 30_000;
  const sv = randn(2 * cols, 22, 3);
  const x = gpu.upload(sv, [2, cols]);
  const y = await softmax(gpu, x);
  assertClose(await gpu.read(y), softmaxRef(sv, 2, cols), {
    rtol: 1e-4,
    atol: 1e-9,
    label: "softmax",
  });
  if (Number.isFinite(gpu.loopBudget)) {
    await assertRejects(
      () => softmax(gpu, x, { variant: "cpu" }),
      Error,
      "over this adapter's limit",
    );
    await assertRejects(
      () => crossEntropy(gpu, logits, tt, { workgroupSize: 8 }),
      Error,
      "over this adapter's limit",
    );
  }
  for (const t of [logits, tt, loss, dlogits!, x, y]) t.release();
});
