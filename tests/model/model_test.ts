/**
 * The whole model against an independent PyTorch implementation (the golden fixtures) and
 * against our own f64 CPU forward: logits, loss, adapter gradients, finite differences,
 * gradient checkpointing.
 */
import { assert, assertEquals } from "@std/assert";
import { loadModelDir, readConfig } from "../../lib/io/model_deno.ts";
import { openModelWeights } from "../../lib/io/safetensors_deno.ts";
import { loadAdapterDir } from "../../lib/io/peft_deno.ts";
import { adapterTensors, attachAdapters } from "../../lib/model/attach.ts";
import type { LlamaModel } from "../../lib/model/model.ts";
import { refForward, refNll } from "../../lib/ref/model.ts";
import { hiraWeightRef, loraWeightRef } from "../../lib/ref/adapters.ts";
import { modulePath, parseConfig, PROJECTIONS, projectionShape } from "../../lib/model/config.ts";
import { randomModel, readBaseWeights } from "../../lib/model/load.ts";
import { Rng } from "../../lib/engine/rand.ts";
import { AdamW } from "../../lib/ops/optim.ts";
import { assertClose, testGpu } from "../_util.ts";
import { packBatch, readTensors } from "../_fixtures.ts";

const FIX = new URL("../fixtures/golden/", import.meta.url).pathname;

interface Tokens {
  tokens: number[][];
  loss_mask?: number[][];
}

async function tokensFile(name: string): Promise<Tokens> {
  return JSON.parse(await Deno.readTextFile(FIX + name));
}

function golden(name: string): Promise<Map<string, Float32Array>> {
  return readTensors(FIX + "golden/" + name);
}

async function withAdapter(dir: string | null): Promise<LlamaModel> {
  const gpu = await testGpu();
  const model = await loadModelDir(gpu, FIX + "model");
  if (dir) {
    await loadAdapterDir(model, FIX + dir);
  }
  return model;
}

const LOGIT_TOL = { rtol: 1e-4, atol: 2e-5 };

Deno.test("whole-model logits and loss match PyTorch (base, HiRA, HiRA reference names, LoRA)", async (t) => {
  const tk = await tokensFile("tokens.json");
  const batch = packBatch(tk.tokens, tk.loss_mask);
  for (
    const [name, dir] of [
      ["base", null],
      ["hira", "adapter-hira"],
      ["hira-refnames", "adapter-hira-refnames"],
      ["lora", "adapter-lora"],
    ] as const
  ) {
    await t.step(name, async () => {
      const model = await withAdapter(dir);
      const g = await golden(`${name}.logits.safetensors`);
      // All three sequences in one packed batch: also checks that packing isolates them.
      const logits = await model.logits(batch.tokens, batch.cuSeqlens);
      const V = model.config.vocabSize;
      let off = 0;
      tk.tokens.forEach((s, i) => {
        assertClose(logits.subarray(off * V, (off + s.length) * V), g.get(`logits.${i}`)!, {
          ...LOGIT_TOL,
          label: `${name} logits.${i}`,
        });
        off += s.length;
      });
      const lossT = await model.trainStep(batch, 1 / batch.numCounted, false);
      const [sum] = await model.gpu.read(lossT);
      assertClose([sum / batch.numCounted], g.get("loss")!, { rtol: 1e-5, label: `${name} loss` });
    });
  }
});

Deno.test("Qwen-style model (q/k/v biases, untied head, sharded checkpoint) matches PyTorch", async () => {
  const gpu = await testGpu();
  const model = await loadModelDir(gpu, FIX + "model-qwen-style");
  assertEquals(model.config.biasProjections, ["q_proj", "k_proj", "v_proj", "o_proj"]);
  const tk = await tokensFile("tokens-qwen-style.json");
  const batch = packBatch(tk.tokens);
  const logits = await model.logits(batch.tokens, batch.cuSeqlens);
  const g = await golden("qwen-style.logits.safetensors");
  const V = model.config.vocabSize;
  let off = 0;
  tk.tokens.forEach((s, i) => {
    assertClose(logits.subarray(off * V, (off + s.length) * V), g.get(`logits.${i}`)!, {
      ...LOGIT_TOL,
      label: `qwen logits.${i}`,
    });
    off += s.length;
  });
  const loss = await model.trainStep(batch, 1, false);
  assertClose([(await gpu.read(loss))[0] / batch.numCounted], g.get("loss")!, {
    rtol: 1e-5,
    label: "qwen loss",
  });
});

Deno.test("adapter gradients match PyTorch's (HiRA and LoRA, masked loss)", async (t) => {
  const tk = await tokensFile("tokens.json");
  const batch = packBatch(tk.tokens, tk.loss_mask);
  for (const [name, dir] of [["hira", "adapter-hira"], ["lora", "adapter-lora"]] as const) {
    await t.step(name, async () => {
      const model = await withAdapter(dir);
      const g = await golden(`${name}.grads.safetensors`);
      const loss = await model.trainStep(batch);
      const named = model.trainable();
      const vals = await model.gpu.readMany([loss, ...named.map((p) => p.grad)]);
      const summary = JSON.parse(await Deno.readTextFile(FIX + "golden/summary.json"));
      assertClose([vals[0][0] / batch.numCounted], [summary[`${name}.grads.safetensors`].loss], {
        rtol: 1e-5,
        label: "loss",
      });
      assertEquals(named.length, g.size - (g.has("loss") ? 1 : 0));
      named.forEach((p, i) => {
        const want = g.get(p.name);
        assert(want, `golden has no gradient for ${p.name}`);
        assertClose(vals[i + 1], want!, { rtol: 1e-3, atol: 1e-6, label: p.name });
      });
    });
  }
});

Deno.test("GPU forward equals the independent f64 CPU forward; CPU forward equals PyTorch", async () => {
  const gpu = await testGpu();
  const cfg = await readConfig(FIX + "model");
  const ws = await openModelWeights(FIX + "model");
  const w = new Map<string, Float32Array>();
  for (const n of ws.names) w.set(n, await ws.read(n, "f32"));
  ws.close();
  const tk = await tokensFile("tokens.json");
  const g = await golden("base.logits.safetensors");
  const ref = refForward(cfg, w, tk.tokens[1]);
  assertClose(ref, g.get("logits.1")!, { rtol: 1e-6, atol: 1e-7, label: "CPU ref vs PyTorch" });
  const model = await loadModelDir(gpu, FIX + "model");
  const seq = tk.tokens[1];
  const logits = await model.logits(Int32Array.from(seq), Uint32Array.from([0, seq.length]));
  assertClose(logits, ref, { ...LOGIT_TOL, label: "GPU vs CPU ref" });
});

/** Random non-zero adapters on a fixture model, plus the f64 effective weights. */
async function randomAdapterModel(type: "HIRA" | "LORA") {
  const gpu = await testGpu();
  const model = await loadModelDir(gpu, FIX + "model");
  const cfg = model.config;
  const ac = {
    peftType: type,
    r: 2,
    targetModules: ["q_proj", "v_proj", "down_proj"],
    loraAlpha: 4,
    loraDropout: 0,
    baseModel: "",
    keyStyle: "peft" as const,
  };
  attachAdapters(model, ac, { seed: 7, initB: "gaussian" });
  const ws = await openModelWeights(FIX + "model");
  const base = new Map<string, Float64Array>();
  for (const n of ws.names) base.set(n, Float64Array.from(await ws.read(n, "f32")));
  ws.close();
  const tensors = await adapterTensors(model, type);
  const ad = new Map(tensors.map((t) => [t.name, Float64Array.from(t.data as Float32Array)]));
  const effective = () => {
    const w = new Map(base);
    for (let l = 0; l < cfg.numLayers; l++) {
      for (const p of PROJECTIONS) {
        const key = `base_model.model.${modulePath(l, p)}`;
        const a = ad.get(`${key}.${type === "HIRA" ? "hira_A" : "lora_A.weight"}`);
        const b = ad.get(`${key}.${type === "HIRA" ? "hira_B" : "lora_B.weight"}`);
        if (!a || !b) continue;
        const [o, i] = projectionShape(cfg, p);
        const w0 = base.get(`${modulePath(l, p)}.weight`)!;
        w.set(
          `${modulePath(l, p)}.weight`,
          type === "HIRA"
            ? hiraWeightRef(w0, a, b, { inFeatures: i, outFeatures: o, r: 2 })
            : loraWeightRef(w0, a, b, { inFeatures: i, outFeatures: o, r: 2 }, 2),
        );
      }
    }
    return w;
  };
  return { model, ad, effective, cfg };
}

Deno.test("whole-model adapter gradients agree with central finite differences of the f64 CPU forward", async (t) => {
  const tk = await tokensFile("tokens.json");
  const seqs = [tk.tokens[0], tk.tokens[2]], masks = [tk.loss_mask![0], tk.loss_mask![2]];
  const batch = packBatch(seqs, masks);
  const refLoss = (w: Map<string, ArrayLike<number>>, cfg: LlamaModel["config"]) => {
    let s = 0;
    seqs.forEach((seq, i) => {
      const nll = refNll(refForward(cfg, w, seq), seq, cfg.vocabSize);
      nll.forEach((v, t) => {
        if (masks[i][t + 1] === 1) s += v;
      });
    });
    return s / batch.numCounted;
  };
  for (const type of ["HIRA", "LORA"] as const) {
    await t.step(type, async () => {
      const { model, ad, effective, cfg } = await randomAdapterModel(type);
      await model.trainStep(batch);
      const named = model.trainable();
      const grads = await model.gpu.readMany(named.map((p) => p.grad));
      const h = 1e-5;
      // A handful of entries of a few tensors (each probe is two full f64 forwards).
      for (const [pi, idx] of [[0, 3], [1, 5], [named.length - 2, 7], [named.length - 1, 2]]) {
        const arr = ad.get(named[pi].name)!;
        const orig = arr[idx];
        arr[idx] = orig + h;
        const lp = refLoss(effective(), cfg);
        arr[idx] = orig - h;
        const lm = refLoss(effective(), cfg);
        arr[idx] = orig;
        const fd = (lp - lm) / (2 * h);
        assertClose([grads[pi][idx]], [fd], {
          rtol: 2e-3,
          atol: 2e-6,
          label: `${named[pi].name}[${idx}]`,
        });
      }
    });
  }
});

Deno.test("gradient checkpointing gives the same gradients with less activation memory", async () => {
  const tk = await tokensFile("tokens.json");
  const batch = packBatch(tk.tokens, tk.loss_mask);
  const runs: { grads: ArrayLike<number>[]; peak: number }[] = [];
  for (const ckpt of [false, true]) {
    const { model } = await randomAdapterModel("HIRA");
    model.gradCheckpointing = ckpt;
    await model.trainStep(batch);
    const grads = await model.gpu.readMany(model.trainable().map((p) => p.grad));
    runs.push({ grads, peak: model.peakActivationBytes });
  }
  runs[0].grads.forEach((g, i) =>
    assertClose(runs[1].grads[i], g, { rtol: 1e-6, atol: 1e-9, label: `grad ${i}` })
  );
  assert(runs[1].peak < runs[0].peak, `checkpointed peak ${runs[1].peak} >= ${runs[0].peak}`);
});

Deno.test("loss falls on a tiny overfit task for hira, lora and full", async (t) => {
  const tk = await tokensFile("tokens.json");
  const batch = packBatch(tk.tokens, tk.loss_mask);
  for (const kind of ["hira", "lora", "full"] as const) {
    await t.step(kind, async () => {
      const gpu = await testGpu();
      const model = await loadModelDir(gpu, FIX + "model");
      if (kind === "full") model.enableBaseGrads();
      else {
        attachAdapters(model, {
          peftType: kind === "hira" ? "HIRA" : "LORA",
          r: 4,
          targetModules: [...PROJECTIONS],
          loraAlpha: 8,
          loraDropout: 0,
          baseModel: "",
          keyStyle: "peft",
        }, { seed: 1 });
      }
      const opt = new AdamW(gpu, model.trainable(), {
        lr: kind === "hira" ? 3e-2 : 1e-2,
        weightDecay: 0,
      });
      const losses: number[] = [];
      for (let s = 0; s < 12; s++) {
        for (const p of opt.params) gpu.clear(p.grad);
        const l = await model.trainStep(batch);
        await opt.step();
        losses.push((await gpu.read(l))[0] / batch.numCounted);
      }
      assert(losses.at(-1)! < 0.5 * losses[0], `${kind}: loss ${losses[0]} -> ${losses.at(-1)}`);
    });
  }
});

Deno.test("per-token NLL of every position matches PyTorch's (HiRA adapter)", async () => {
  const tk = await tokensFile("tokens.json");
  const model = await withAdapter("adapter-hira");
  const nll = await model.tokenNll(packBatch(tk.tokens));
  const g = await golden("hira.logits.safetensors");
  const want = tk.tokens.flatMap((_, i) => [...g.get(`nll.${i}`)!]);
  assertClose(nll, want, { rtol: 1e-4, atol: 1e-5, label: "token NLL" });
});

Deno.test("a 300-token sequence at Llama-3's head shape (D = 128, 4 query heads per KV head): loss and HiRA gradients against the f64 CPU model", async () => {
  // One layer, hidden 512 as 4 heads of 128 over 1 KV head: each early key is seen by ~1,200
  // (query, head) pairs, so kernels that count loop passes per invocation (llvmpipe stops them at
  // 65,535) are exercised at a length the fixtures never reach.
  const gpu = await testGpu();
  const cfg = parseConfig({
    architectures: ["LlamaForCausalLM"],
    hidden_size: 512,
    intermediate_size: 96,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    num_key_value_heads: 1,
    vocab_size: 48,
    tie_word_embeddings: true,
    initializer_range: 0.05,
  });
  const model = randomModel(gpu, cfg, 11);
  const r = 2;
  const targets = ["k_proj", "v_proj", "down_proj"] as const;
  attachAdapters(model, {
    peftType: "HIRA",
    r,
    targetModules: [...targets],
    loraAlpha: 4,
    loraDropout: 0,
    baseModel: "",
    keyStyle: "peft",
  }, { seed: 5, initB: "gaussian" });
  const rng = new Rng(3);
  const seqs = [300, 37].map((n) => Array.from({ length: n }, () => rng.int(cfg.vocabSize)));
  const batch = packBatch(seqs);
  const lossSum = await model.trainStep(batch);
  const named = model.trainable();
  const [loss, ...grads] = await gpu.readMany([lossSum, ...named.map((p) => p.grad)]);
  const base = new Map<string, Float64Array>();
  for (const [n, t] of await readBaseWeights(model)) base.set(n, Float64Array.from(t.data));
  const ad = new Map(
    (await adapterTensors(model, "HIRA")).map((
      t,
    ) => [t.name, Float64Array.from(t.data as Float32Array)]),
  );
  const refLoss = () => {
    const w = new Map(base);
    for (const p of targets) {
      const key = `base_model.model.${modulePath(0, p)}`;
      const [o, i] = projectionShape(cfg, p);
      const w0 = base.get(`${modulePath(0, p)}.weight`)!;
      const a = ad.get(`${key}.hira_A`)!, b = ad.get(`${key}.hira_B`)!;
      w.set(
        `${modulePath(0, p)}.weight`,
        hiraWeightRef(w0, a, b, { inFeatures: i, outFeatures: o, r }),
      );
    }
    let sum = 0;
    for (const seq of seqs) {
      refNll(refForward(cfg, w, seq), seq, cfg.vocabSize).forEach((v) => sum += v);
    }
    return sum / batch.numCounted;
  };
  assertClose([loss[0] / batch.numCounted], [refLoss()], { rtol: 1e-5, atol: 1e-6, label: "loss" });
  // k_proj's A reaches the loss through dK (the dk/dv kernel), v_proj's B through dV.
  const h = 1e-5;
  for (const [name, idx] of [["k_proj.hira_A", 5], ["v_proj.hira_B", 9], ["down_proj.hira_A", 3]]) {
    const pi = named.findIndex((p) => p.name.endsWith(name as string));
    const arr = ad.get(named[pi].name)!;
    const orig = arr[idx as number];
    arr[idx as number] = orig + h;
    const lp = refLoss();
    arr[idx as number] = orig - h;
    const lm = refLoss();
    arr[idx as number] = orig;
    assertClose([grads[pi][idx as number]], [(lp - lm) / (2 * h)], {
      rtol: 2e-3,
      atol: 2e-6,
      label: `${named[pi].name}[${idx}]`,
    });
  }
  model.release();
});
