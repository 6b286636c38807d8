/**
 * Model loading: config.json validation, tensor checks naming the tensor and file, and the
 * row-sharded embedding / output head used for tables above one storage binding.
 */
import { assertEquals, assertRejects, assertThrows } from "@std/assert";
import { join } from "@std/path";
import { parseConfig } from "../../lib/model/config.ts";
import { HiraError } from "../../lib/engine/errors.ts";
import { loadModelDir } from "../../lib/io/model_deno.ts";
import { LlamaModel } from "../../lib/model/model.ts";
import { randomModel } from "../../lib/model/load.ts";
import { attachAdapters } from "../../lib/model/attach.ts";
import { openModelWeights, writeSafetensorsFile } from "../../lib/io/safetensors_deno.ts";
import { assertClose, testGpu, withTempDir } from "../_util.ts";
import { packBatch } from "../_fixtures.ts";

const FIX = new URL("../fixtures/golden/", import.meta.url).pathname;

const BASE = {
  architectures: ["LlamaForCausalLM"],
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 1,
  num_attention_heads: 4,
  vocab_size: 10,
};

Deno.test("config.json: supported layouts parse, the rest is a one-line error naming the file", async (t) => {
  await t.step("Llama defaults", () => {
    const c = parseConfig(BASE);
    assertEquals(c.numKvHeads, 4);
    assertEquals(c.headDim, 4);
    assertEquals(c.biasProjections, []);
    assertEquals(c.tieWordEmbeddings, false);
    assertEquals(c.ropeScaling, null);
  });
  await t.step("Qwen2 has q/k/v biases; Llama with attention_bias also biases o_proj", () => {
    assertEquals(
      parseConfig({ ...BASE, architectures: ["Qwen2ForCausalLM"], model_type: "qwen2" })
        .biasProjections,
      ["q_proj", "k_proj", "v_proj"],
    );
    assertEquals(parseConfig({ ...BASE, attention_bias: true }).biasProjections, [
      "q_proj",
      "k_proj",
      "v_proj",
      "o_proj",
    ]);
  });
  await t.step("llama3 rope scaling (both key spellings)", () => {
    const rs = {
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    };
    assertEquals(
      parseConfig({ ...BASE, rope_scaling: { rope_type: "llama3", ...rs } }).ropeScaling?.factor,
      8,
    );
    assertEquals(
      parseConfig({ ...BASE, rope_scaling: { type: "llama3", ...rs } }).ropeScaling?.factor,
      8,
    );
  });
  for (
    const [what, cfg, msg] of [
      ["unsupported architecture", {
        ...BASE,
        architectures: ["GPT2LMHeadModel"],
        model_type: "gpt2",
      }, "unsupported architecture GPT2LMHeadModel"],
      ["missing field", { ...BASE, hidden_size: undefined }, "missing field hidden_size"],
      [
        "bad number",
        { ...BASE, num_hidden_layers: 0 },
        "num_hidden_layers must be a positive integer",
      ],
      [
        "heads not divisible",
        { ...BASE, num_key_value_heads: 3 },
        "num_attention_heads (4) is not a multiple of num_key_value_heads (3)",
      ],
      [
        "rope scaling type",
        { ...BASE, rope_scaling: { rope_type: "yarn", factor: 2 } },
        "rope_scaling type",
      ],
      ["activation", { ...BASE, hidden_act: "gelu" }, "hidden_act"],
      ["not an object", [1, 2], "is not a JSON object"],
    ] as const
  ) {
    await t.step(what, () => {
      assertThrows(() => parseConfig(cfg, "m/config.json"), HiraError, `m/config.json: ${msg}`);
    });
  }
});

Deno.test("a missing or misshapen tensor is an error naming the tensor and the file", async () => {
  const gpu = await testGpu();
  // The last check looks for a model folder inside the removed temporary one.
  const gone = await withTempDir("hira-load-", async (dir) => {
    await Deno.copyFile(FIX + "model/config.json", join(dir, "config.json"));
    const ws = await openModelWeights(FIX + "model");
    const tensors = [];
    for (const n of ws.names) {
      tensors.push({
        name: n,
        dtype: "F32" as const,
        shape: ws.info(n).shape,
        data: await ws.read(n, "f32"),
      });
    }
    ws.close();
    const file = join(dir, "model.safetensors");
    await writeSafetensorsFile(
      file,
      tensors.filter((t) => t.name !== "model.layers.1.mlp.up_proj.weight"),
    );
    await assertRejects(
      () => loadModelDir(gpu, dir),
      HiraError,
      "missing tensor model.layers.1.mlp.up_proj.weight",
    );
    await writeSafetensorsFile(
      file,
      tensors.map((t) =>
        t.name === "model.layers.0.self_attn.k_proj.weight" ? { ...t, shape: [48, 16] } : t
      ),
    );
    await assertRejects(
      () => loadModelDir(gpu, dir),
      HiraError,
      `${file}: tensor model.layers.0.self_attn.k_proj.weight has shape [48,16], config.json expects [16,48]`,
    );
    return dir;
  });
  await assertRejects(
    () => loadModelDir(gpu, join(gone, "nope")),
    HiraError,
    "model folder not found",
  );
});

Deno.test("embedding and head split into row shards give the same logits and gradients", async () => {
  const gpu = await testGpu();
  const tk = JSON.parse(await Deno.readTextFile(FIX + "tokens.json"));
  const batch = packBatch(tk.tokens, tk.loss_mask);
  const run = async (shards: number[] | null) => {
    const model = await loadModelDir(gpu, FIX + "model");
    if (shards) {
      // Re-split the (tied) table as a GPU with a small binding limit would.
      const full = await gpu.read(model.weights.embed[0]);
      const C = model.config.hiddenSize;
      let r0 = 0;
      const parts = shards.map((rows) => {
        const t = gpu.upload(full.subarray(r0 * C, (r0 + rows) * C), [rows, C]);
        r0 += rows;
        return t;
      });
      (model.weights as { embed: typeof parts }).embed = parts;
    }
    const logits = await model.logits(batch.tokens, batch.cuSeqlens);
    model.enableBaseGrads();
    const loss = await model.trainStep(batch);
    const g = model.baseGrads!;
    const embedGrad = await gpu.readMany(g.embed);
    const other = await gpu.readMany([loss, g.norm, g.layers[0].proj.q_proj]);
    const joined = new Float32Array(embedGrad.reduce((a, x) => a + x.length, 0));
    let off = 0;
    for (const e of embedGrad) {
      joined.set(e as Float32Array, off);
      off += e.length;
    }
    return { logits, embedGrad: joined, other };
  };
  const one = await run(null);
  const three = await run([100, 96, 60]);
  assertClose(three.logits, one.logits, { rtol: 1e-6, atol: 1e-6, label: "logits" });
  assertClose(three.embedGrad, one.embedGrad, { rtol: 1e-4, atol: 1e-6, label: "embedding grad" });
  three.other.forEach((x, i) =>
    assertClose(x, one.other[i], { rtol: 1e-4, atol: 1e-6, label: `grad ${i}` })
  );
  assertEquals(LlamaModel.shardRows(gpu, (await loadModelDir(gpu, FIX + "model")).config), [256]);
});

Deno.test("LlamaModel.release returns every weight, adapter and base gradient to the pool", async () => {
  const gpu = await testGpu();
  const cfg = parseConfig({
    architectures: ["Qwen2ForCausalLM"],
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 50,
    tie_word_embeddings: false,
  });
  const model = randomModel(gpu, cfg, 1);
  attachAdapters(model, {
    peftType: "HIRA",
    r: 2,
    targetModules: ["q_proj", "down_proj"],
    loraAlpha: 4,
    loraDropout: 0,
    baseModel: "",
    keyStyle: "peft",
  }, { seed: 1 });
  model.enableBaseGrads();
  const w = model.weights;
  const held = [
    ...w.embed,
    ...(w.lmHead ?? []),
    w.norm,
    ...w.layers.flatMap((l) => [...Object.values(l.proj), ...Object.values(l.bias)]),
    ...model.trainable().map((p) => p.grad),
  ];
  assertEquals(held.length, 1 + 1 + 1 + 2 * (7 + 3) + model.trainable().length);
  assertEquals(held.some((t) => t!.released), false);
  model.release();
  assertEquals(held.filter((t) => !t!.released).length, 0);
  assertEquals(model.adapters.size, 0);
  assertEquals(model.baseGrads, null);
});
