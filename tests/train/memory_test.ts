/**
 * Memory accounting (lib/train/memory.ts): the estimate against the bytes a real training step
 * allocates, Llama-3-8B's known sizes from its config.json alone, the limit check and the
 * refusal, and `train.ts --dry_run` on a folder holding only config.json.
 */
import { hiraGradScratchBytes } from "../../lib/ops/hira.ts";
import { assert, assertEquals, assertMatch, assertRejects } from "@std/assert";
import { join } from "@std/path";
import { createDenoGpu } from "../../lib/io/gpu_deno.ts";
import { EMBEDDED_MODEL_DIR, loadModelDir, readConfig } from "../../lib/io/model_deno.ts";
import { frozenWeightDtype, type WeightDtype } from "../../lib/model/load.ts";
import { attachAdapters } from "../../lib/model/attach.ts";
import { Trainer } from "../../lib/train/trainer.ts";
import { packBatch } from "../../lib/train/data.ts";
import { Rng } from "../../lib/engine/rand.ts";
import { type LlamaConfig, parseConfig } from "../../lib/model/config.ts";
import { matchTargets } from "../../lib/model/peft.ts";
import { dryRunReport } from "../../lib/cli/dry_run.ts";
import {
  checkMemory,
  estimateMemory,
  type MemoryOptions,
  refusal,
  WEBGPU_DEFAULT_LIMITS,
} from "../../lib/train/memory.ts";
import { parseTrainArgs } from "../../lib/cli/flags.ts";
import { runTraining } from "../../lib/cli/train.ts";
import { isHiraError } from "../../lib/engine/errors.ts";
import { withTempDir } from "../_util.ts";

/** Llama-3-8B's config.json (meta-llama/Meta-Llama-3-8B), as published. */
const LLAMA3_8B = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_size: 4096,
  intermediate_size: 14336,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 500000.0,
  vocab_size: 128256,
  max_position_embeddings: 8192,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  bos_token_id: 128000,
  eos_token_id: 128001,
  hidden_act: "silu",
};
const LLAMA3_8B_PARAMS = 8_030_261_248;
const TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"];

/**
 * Bytes the buffer pool created for loading the tiny model, attaching adapters, building the
 * optimizer and running two steps, on a fresh device (so nothing is reused from other tests),
 * and the model's own count of activation bytes at the peak.
 */
async function realRun(
  peft: "hira" | "lora",
  gradCkpt: boolean,
  weightDtype: WeightDtype,
  batch: ReturnType<typeof packBatch>,
): Promise<{ total: number; weights: number; peakActivations: number; cfg: LlamaConfig }> {
  const type = peft === "hira" ? "HIRA" : "LORA";
  const cfg = await readConfig(EMBEDDED_MODEL_DIR);
  const adapted = new Set(matchTargets(cfg, TARGETS).map((m) => m.path));
  const gpu = await createDenoGpu();
  try {
    const model = await loadModelDir(gpu, EMBEDDED_MODEL_DIR, {
      weightDtype,
      keepF32: (p) => frozenWeightDtype(weightDtype, false, type, adapted.has(p)) === "f32",
    });
    const weights = gpu.pool.bytesCreated;
    model.gradCheckpointing = gradCkpt;
    attachAdapters(model, {
      peftType: type,
      r: 8,
      targetModules: TARGETS,
      loraAlpha: 16,
      loraDropout: 0.05,
      baseModel: "",
      keyStyle: "peft",
    }, { seed: 1 });
    const trainer = new Trainer(model, {
      lr: 1e-3,
      warmup: 0,
      weightDecay: 0.01,
      gradAcc: 1,
      maxGradNorm: 1,
      totalSteps: 10,
    });
    await trainer.trainStep([batch]);
    await trainer.trainStep([batch]);
    return {
      total: gpu.pool.bytesCreated,
      weights,
      peakActivations: model.peakActivationBytes,
      cfg,
    };
  } finally {
    gpu.destroy();
  }
}

function randomBatch(seqs: number, len: number, target: number, seed: number) {
  const rng = new Rng(seed);
  return packBatch(Array.from({ length: seqs }, () => {
    const tokens = Array.from({ length: len }, () => rng.nextU32() % 600);
    return { tokens, lossMask: tokens.map((_, i) => (i >= len - target ? 1 : 0)) };
  }));
}

Deno.test("memory estimate matches what a real training step allocates (tiny model)", async (t) => {
  const gpu = await createDenoGpu();
  const hasF16 = gpu.hasF16;
  gpu.destroy();
  const batch = randomBatch(16, 77, 16, 3);
  const cases: [string, "hira" | "lora", boolean, WeightDtype][] = [
    ["lora, no checkpointing", "lora", false, "f32"],
    ["lora, checkpointing", "lora", true, hasF16 ? "f16" : "f32"],
    ["hira, no checkpointing", "hira", false, hasF16 ? "f16" : "f32"],
  ];
  for (const [label, peft, ckpt, wdt] of cases) {
    await t.step(`${label}, weights ${wdt}`, async () => {
      const real = await realRun(peft, ckpt, wdt, batch);
      const o: MemoryOptions = {
        peftType: peft,
        r: 8,
        targets: TARGETS,
        batch: 16,
        seqLen: 77,
        counted: batch.numCounted,
        gradCkpt: ckpt,
        weightDtype: wdt,
        loraDropout: 0.05,
      };
      const est = estimateMemory(real.cfg, o);
      // The activations the model keeps are counted exactly as the model counts them.
      assertEquals(
        ckpt ? est.activationBytes.withCkpt : est.activationBytes.withoutCkpt,
        real.peakActivations,
      );
      const w = est.items.find((i) => i.name === "weights")!.bytes;
      assertEquals(w, real.weights, "weights (pool-rounded)");
      const err = est.total / real.total - 1;
      assert(
        Math.abs(err) < 0.1,
        `estimate ${est.total} vs allocated ${real.total}: ${(err * 100).toFixed(1)}%`,
      );
    });
  }
});

Deno.test("Llama-3-8B from config.json: 8.03e9 parameters and its weight bytes", () => {
  const cfg = parseConfig(LLAMA3_8B);
  const base: MemoryOptions = {
    peftType: "lora",
    r: 16,
    targets: ["q_proj", "v_proj"],
    batch: 16,
    seqLen: 272,
    gradCkpt: false,
    weightDtype: "f32",
    poolRounding: false,
  };
  const f32 = estimateMemory(cfg, base);
  assertEquals(f32.baseParams, LLAMA3_8B_PARAMS);
  const invFreq = (4096 / 32 / 2) * 4;
  const weights = (e: typeof f32) => e.items.find((i) => i.name === "weights")!.bytes;
  assertEquals(weights(f32), LLAMA3_8B_PARAMS * 4 + invFreq);
  // LoRA r=16 on q and v: 32 layers × 16 × ((4096 + 4096) + (4096 + 1024)).
  assertEquals(f32.trainableParams, 32 * 16 * (8192 + 5120));
  // f16: matrices in 2 bytes except the adapted W0 (f32 until the adapters read f16 W0); norms
  // stay f32.
  const f16 = estimateMemory(cfg, { ...base, weightDtype: "f16" });
  const norms = (32 * 2 + 1) * 4096;
  const adaptedW0 = 32 * (4096 * 4096 + 1024 * 4096);
  const matrices = LLAMA3_8B_PARAMS - norms;
  const w0Bytes = frozenWeightDtype("f16", false, "LORA", true) === "f16" ? 2 : 4;
  assertEquals(
    weights(f16),
    (matrices - adaptedW0) * 2 + adaptedW0 * w0Bytes + norms * 4 + invFreq,
  );
  // Gradient checkpointing keeps (layers + 2) layer inputs and one layer's activations.
  assert(f32.activationBytes.withCkpt < f32.activationBytes.withoutCkpt / 10);
  // Full fine-tuning: f32 weights, their gradients and two AdamW moments.
  const full = estimateMemory(cfg, { ...base, peftType: "full", targets: [] });
  assertEquals(full.trainableParams, LLAMA3_8B_PARAMS);
  const item = (n: string) => full.items.find((i) => i.name === n)!.bytes;
  assertEquals(item("base gradients"), LLAMA3_8B_PARAMS * 4);
  assertEquals(item("optimizer"), 2 * LLAMA3_8B_PARAMS * 4 + 8);
  // HiRA's scratch: the materialising path holds one f32 effective weight of the widest adapted
  // projection (down_proj, 4096 × 14336); the fused one only its per-tile gradient partials.
  const hira = { ...base, peftType: "hira" as const, targets: ["q_proj", "down_proj"] };
  const scratch = (e: typeof f32) => e.items.find((i) => i.name === "scratch")!.bytes;
  const mat = estimateMemory(cfg, { ...hira, hiraKernel: "materialized" });
  const fused = estimateMemory(cfg, { ...hira, hiraKernel: "fused" });
  const partials = hiraGradScratchBytes("tiled", 4096, 14336, 16);
  assertEquals(scratch(mat) - scratch(fused), 4096 * 14336 * 4 - partials);
  assert(partials <= (4096 * 14336 * 4) / 8, `partials ${partials}`);
});

Deno.test("limit check names the tensor that does not fit, and the budget", () => {
  const cfg = parseConfig(LLAMA3_8B);
  const est = estimateMemory(cfg, {
    peftType: "lora",
    r: 16,
    targets: ["q_proj"],
    batch: 16,
    seqLen: 272,
    gradCkpt: true,
    weightDtype: "f32",
  });
  const problems = checkMemory(est, WEBGPU_DEFAULT_LIMITS, 8 * 2 ** 30);
  // gate/up/down [14336, 4096] f32 are 224 MiB, over the default 128 MiB binding.
  assertMatch(problems[0], /weight \[14336, 4096\] f32 is 224\.0 MiB, over .*128\.0 MiB/);
  assert(problems.some((p) => /activation \[tokens, intermediate\] \[4352, 14336\]/.test(p)));
  assertMatch(problems.at(-1)!, /over --memory_limit=8\.00 GiB/);
  assertMatch(refusal(problems)!, /\(and \d+ more\); run with --dry_run/);
  assertEquals(refusal([]), null);
  // Within a real GPU's limits and no budget, it fits.
  const big = { maxBufferSize: 2 ** 34, maxStorageBufferBindingSize: 2 ** 32 };
  assertEquals(checkMemory(est, big), []);
});

Deno.test("dry run report without a GPU uses WebGPU's default limits and says so", () => {
  const args = parseTrainArgs([
    "--model=x",
    "--peft_type=hira",
    "--r_ab=32",
    "--batch=16",
    "--target_modules=q_proj,k_proj,v_proj,up_proj,down_proj",
  ]);
  const r = dryRunReport(args, parseConfig(LLAMA3_8B), "Meta-Llama-3-8B", null);
  assertMatch(r.text, /8,030,261,248 base \(8\.03e9\)/);
  assertMatch(r.text, /no GPU found: WebGPU's default limits/);
  assertMatch(r.text, /weights f32 \(auto without a GPU\)/);
  assertEquals(r.fits, false);
  // The commonsense layout: 256 context + 16 target tokens per sequence.
  assertEquals(r.estimate.tokens, 16 * 272);
});

Deno.test("dry run counts the HiRA path training runs: materialised on CPU rasterizers", () => {
  const device = (description: string, isCpuAdapter: boolean) => ({
    limits: WEBGPU_DEFAULT_LIMITS,
    description,
    hasF16: true,
    isCpuAdapter,
  });
  // The HiRA temporary the estimate counts (its largest tensor of that kind).
  const hiraTemp = (batch: number, seqLen: number, adapter: string, cpu = true) =>
    dryRunReport(
      parseTrainArgs([
        "--model=x",
        "--peft_type=hira",
        "--r_ab=32",
        `--batch=${batch}`,
        `--seq_len=${seqLen}`,
        "--target_modules=q_proj,up_proj",
      ]),
      parseConfig(LLAMA3_8B),
      "Meta-Llama-3-8B",
      device(adapter, cpu),
    ).estimate.largest.find((t) => t.name.startsWith("HiRA"))?.name;
  // CPU rasterizers: even calls short enough for the fused forward (≤ 128 tokens on llvmpipe)
  // run the materialising backward, whose effective weight is the temporary.
  const llvmpipe = "llvmpipe (LLVM 15.0.6, 256 bits)";
  assertEquals(hiraTemp(2, 64, llvmpipe), "HiRA effective weight (up_proj)");
  assertEquals(hiraTemp(1, 129, llvmpipe), "HiRA effective weight (up_proj)");
  assertEquals(hiraTemp(1, 16, "google / swiftshader"), "HiRA effective weight (up_proj)");
  // GPUs: the fused kernels at any length, whose gradient partials are counted instead.
  assertEquals(hiraTemp(2, 64, "nvidia", false), "HiRA gradient partials (up_proj)");
  assertEquals(hiraTemp(8, 512, "nvidia", false), "HiRA gradient partials (up_proj)");
});

Deno.test("train.ts --dry_run on a folder with only config.json prints the estimate, exit 0", async () => {
  await withTempDir("hira-memory-", async (dir) => {
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(LLAMA3_8B));
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--no-check",
        new URL("../../train.ts", import.meta.url).pathname,
        "--dry_run",
        `--model=${dir}`,
        "--peft_type=lora",
        "--batch=4",
        "--enable_grad_ckpt",
      ],
      env: { DENO_WEBGPU_BACKEND: "vulkan", XDG_RUNTIME_DIR: "/tmp" },
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    assertMatch(text, /parameters: 8,030,261,248 base/);
    assertMatch(text, /weights +\d+\.\d+ GiB/);
    assertMatch(text, /activations \(ckpt\)/);
    assertMatch(text, /limits \(/);
  });
});

Deno.test("a run over --memory_limit is refused before allocating, in one line", async () => {
  await withTempDir("hira-memory-", async (dir) => {
    const gpu = await createDenoGpu();
    const before = gpu.pool.bytesCreated;
    const args = parseTrainArgs([
      "--peft_type=hira",
      "--memory_limit=0.001",
      "--max_steps=1",
      "--no-eval_accuracy",
      `--output_folder=${dir}`,
    ]);
    const err = await assertRejects(() => runTraining(args, { gpu, quiet: true }));
    assert(isHiraError(err), String(err));
    const msg = (err as Error).message;
    assertMatch(msg, /over --memory_limit=1\.0 MiB/);
    assert(!msg.includes("\n"), msg);
    assertEquals(gpu.pool.bytesCreated, before, "nothing was allocated");
    gpu.destroy();
  });
});
