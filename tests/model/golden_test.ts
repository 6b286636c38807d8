/**
 * The engine against what transformers 5 + PEFT 0.21 compute (tests/fixtures/golden/, made by
 * tests/fixtures/make_golden.py): both config.json layouts of a Llama, a Qwen2 and a Mistral;
 * every adapter option (HiRA, HiRA with rank_pattern and a regex target, the reference's names,
 * LoRA, rsLoRA, alpha/rank patterns, a regex target); logits, NLL, adapter gradients, merged
 * weights and the merged folder's dtype and config, generate() tokens, and a 10-step training
 * trajectory from an existing adapter.
 */
import { assert, assertEquals, assertThrows } from "@std/assert";
import { join } from "@std/path";
import { loadModelDir, readConfig } from "../../lib/io/model_deno.ts";
import { openSafetensors } from "../../lib/io/safetensors_deno.ts";
import { loadAdapterDir, openAdapterDir } from "../../lib/io/peft_deno.ts";
import { adapterTensors } from "../../lib/model/attach.ts";
import { type LlamaConfig, parseConfig } from "../../lib/model/config.ts";
import { mergedWeights } from "../../lib/model/merge.ts";
import { writeMergedModelDir } from "../../lib/io/merge_deno.ts";
import type { LlamaModel } from "../../lib/model/model.ts";
import {
  type AdapterConfig,
  adapterConfigJson,
  type LoraAdapter,
  matchTargets,
  parseAdapterConfig,
  parseTargetFlag,
} from "../../mod.ts";
import { HiraError } from "../../lib/engine/errors.ts";
import { KvCacheDecoder } from "../../lib/eval/decode.ts";
import { generate } from "../../lib/eval/generate.ts";
import { Trainer } from "../../lib/train/trainer.ts";
import { assertClose, testGpu, withTempDir } from "../_util.ts";
import { packBatch, readTensors } from "../_fixtures.ts";

const FIX = new URL("../fixtures/golden/", import.meta.url).pathname;

async function json<T>(name: string): Promise<T> {
  return JSON.parse(await Deno.readTextFile(FIX + name));
}

function golden(name: string): Promise<Map<string, Float32Array>> {
  return readTensors(FIX + name);
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** ‖a − b‖ / ‖b‖. */
function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0, n = 0;
  for (let i = 0; i < b.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += b[i] ** 2;
  }
  return Math.sqrt(d / n);
}

/** Next-token NLL of every position of one sequence from its logits [T, V], in f64. */
function nllOf(logits: Float32Array, tokens: readonly number[], v: number): number[] {
  const out: number[] = [];
  for (let t = 0; t + 1 < tokens.length; t++) {
    const row = logits.subarray(t * v, (t + 1) * v);
    const m = Math.max(...row);
    let s = 0;
    for (const x of row) s += Math.exp(x - m);
    out.push(Math.log(s) + m - row[tokens[t + 1]]);
  }
  return out;
}

/** Relative to the sequence's largest |value|: the f32 engine against f64 math. */
function closeToGolden(got: ArrayLike<number>, want: Float32Array, rel: number, label: string) {
  assertClose(got, want, { rtol: rel, atol: rel * maxAbs(want), label });
}

interface Tokens {
  tokens: number[][];
  loss_mask?: number[][];
}

/** Logits and NLL of each sequence, each run alone, against `golden/NAME.logits`. */
async function checkLogits(model: LlamaModel, tk: Tokens, name: string): Promise<void> {
  const g = await golden(`golden/${name}.logits.safetensors`);
  const v = model.config.vocabSize;
  for (const [i, s] of tk.tokens.entries()) {
    const lg = await model.logits(Int32Array.from(s), Uint32Array.from([0, s.length]));
    closeToGolden(lg, g.get(`logits.${i}`)!, 1e-5, `${name} logits.${i}`);
    closeToGolden(nllOf(lg, s, v), g.get(`nll.${i}`)!, 1e-5, `${name} nll.${i}`);
  }
}

/** The config without its raw text and layout, for comparing the two layouts' readings. */
function meaning(c: LlamaConfig): Record<string, unknown> {
  const { raw: _raw, layout: _layout, ...rest } = c;
  return rest;
}

const MODELS = [
  ["model", "tokens.json", "base", "bfloat16"],
  ["model-qwen-style", "tokens-qwen-style.json", "qwen-style", "float32"],
  ["model-qwen2", "tokens-small.json", "qwen2", "bfloat16"],
  ["model-mistral", "tokens-small.json", "mistral", "float16"],
] as const;

Deno.test("Llama, Qwen2 and Mistral in the transformers-5 and -4 config layouts match transformers", async (t) => {
  const gpu = await testGpu();
  for (const [dir, tokens, name, dtype] of MODELS) {
    const tk = await json<Tokens>(tokens);
    const c5 = await readConfig(FIX + dir), c4 = await readConfig(FIX + dir + "-t4");
    assertEquals([c5.layout, c4.layout], ["transformers5", "transformers4"]);
    assertEquals(meaning(c5), meaning(c4), `${dir}: the two layouts read alike`);
    assertEquals(c5.torchDtype, dtype);
    for (const d of [dir, dir + "-t4"]) {
      await t.step(d, async () => {
        const model = await loadModelDir(gpu, FIX + d);
        await checkLogits(model, tk, name);
        model.release();
      });
    }
  }
  // What the layout carries: llama3 RoPE and theta from rope_parameters, not the defaults.
  const c = await readConfig(FIX + "model");
  assertEquals(c.ropeScaling?.factor, 8);
  assertEquals((await readConfig(FIX + "model-qwen2")).ropeTheta, 1e6);
});

Deno.test("config.json: the two layouts together must agree; a contradiction is one line", async () => {
  const base = await json<Record<string, unknown>>("model/config.json");
  const old = await json<Record<string, unknown>>("model-t4/config.json");
  // Both layouts in one file, agreeing (a converted or hand-edited config): read as either.
  const both = { ...base, rope_theta: old.rope_theta, rope_scaling: old.rope_scaling };
  assertEquals(
    meaning(parseConfig({ ...both, torch_dtype: "bfloat16" })),
    meaning(parseConfig(base)),
  );
  const cases: [Record<string, unknown>, string][] = [
    [{ ...base, torch_dtype: "float32" }, 'dtype "bfloat16" contradicts torch_dtype "float32"'],
    [{ ...base, rope_theta: 500000 }, "rope_parameters.rope_theta (10000) contradicts rope_theta"],
    [
      { ...base, rope_scaling: { ...old.rope_scaling as object, factor: 32 } },
      "rope_parameters contradicts rope_scaling",
    ],
    [{ ...base, dtype: "int8" }, 'dtype "int8" is not supported'],
    [
      { ...base, rope_parameters: { rope_type: "yarn", rope_theta: 1e4, factor: 4 } },
      'rope_parameters type "yarn" is not supported',
    ],
  ];
  for (const [cfg, msg] of cases) {
    const e = assertThrows(() => parseConfig(cfg), HiraError);
    assert(e.message.startsWith("config.json: " + msg), e.message);
    assert(!e.message.includes("\n"));
  }
});

const ADAPTERS = [
  "hira",
  "hira-rank",
  "hira-refnames",
  "lora",
  "lora-rslora",
  "lora-pattern",
  "lora-regex",
] as const;

Deno.test("every adapter option: logits, NLL, gradients and merged weights match PEFT", async (t) => {
  const gpu = await testGpu();
  const tk = await json<Tokens>("tokens.json");
  const batch = packBatch(tk.tokens, tk.loss_mask);
  for (const name of ADAPTERS) {
    await t.step(name, async () => {
      // The base in the transformers-4 layout carries the same adapters to the same logits.
      const old = await loadModelDir(gpu, FIX + "model-t4");
      await loadAdapterDir(old, FIX + `adapter-${name}`);
      await checkLogits(old, tk, name);
      old.release();
      const model = await loadModelDir(gpu, FIX + "model");
      await loadAdapterDir(model, FIX + `adapter-${name}`);
      await checkLogits(model, tk, name);
      if (name === "hira-refnames") return; // same math as hira; only the names differ
      const g = await golden(`golden/${name}.grads.safetensors`);
      const loss = await model.trainStep(batch);
      const named = model.trainable();
      const vals = await gpu.readMany([loss, ...named.map((p) => p.grad)]);
      assertEquals(named.length, g.size);
      named.forEach((p, i) => {
        const want = g.get(p.name)!;
        assert(want, `golden has no gradient for ${p.name}`);
        assertEquals(vals[i + 1].length, want.length, p.name);
        assert(relL2(vals[i + 1], want) < 1e-4, `${name} ${p.name}: ${relL2(vals[i + 1], want)}`);
      });
      const merged = await mergedWeights(model);
      const want = await golden(`golden/merged-${name}/model.safetensors`);
      assertEquals([...merged.keys()].sort(), [...want.keys()].sort());
      for (const [n, w] of merged) closeToGolden(w.data, want.get(n)!, 1e-5, `${name} ${n}`);
      model.release();
    });
  }
});

Deno.test("rank and alpha patterns, rsLoRA and regex targets reach the layers as PEFT builds them", async () => {
  const cfg = await readConfig(FIX + "model");
  const model = await loadModelDir(await testGpu(), FIX + "model");
  const ac = await loadAdapterDir(model, FIX + "adapter-lora-pattern");
  const at = (p: string) => model.adapters.get(p) as LoraAdapter;
  // rank_pattern {"k_proj": 2, "layers.0.mlp.down_proj": 6}, alpha_pattern {"v_proj": 32, ...}.
  assertEquals(at("model.layers.1.self_attn.k_proj").r, 2);
  assertEquals(at("model.layers.0.mlp.down_proj").r, 6);
  assertEquals(at("model.layers.1.mlp.down_proj").r, 4);
  assertEquals(at("model.layers.0.self_attn.v_proj").scale, 32 / 4);
  assertEquals(at("model.layers.2.mlp.up_proj").scale, 2 / 4);
  assertEquals(at("model.layers.0.self_attn.q_proj").scale, 8 / 4);
  model.release();
  const rs = await openAdapterDir(FIX + "adapter-lora-regex");
  rs.close();
  assertEquals(typeof rs.config.targetModules, "string");
  assertEquals(matchTargets(cfg, rs.config.targetModules).map((m) => m.path), [
    "model.layers.0.self_attn.q_proj",
    "model.layers.0.self_attn.v_proj",
    "model.layers.0.mlp.gate_proj",
    "model.layers.2.self_attn.q_proj",
    "model.layers.2.self_attn.v_proj",
    "model.layers.2.mlp.gate_proj",
  ]);
  // The same regex as a --target_modules flag; a comma list stays a list.
  assertEquals(parseTargetFlag(String(rs.config.targetModules)), rs.config.targetModules);
  assertEquals(parseTargetFlag("q_proj, v_proj"), ["q_proj", "v_proj"]);
  assertEquals(ac.useRslora, false);
});

Deno.test("merge of a BF16 base writes BF16 and a config in the layout it read", async () => {
  const gpu = await testGpu();
  await withTempDir("hira-golden-merge-", async (tmp) => {
    for (
      const [dir, dtypeKey, other] of [["model", "dtype", "torch_dtype"], [
        "model-t4",
        "torch_dtype",
        "dtype",
      ]] as const
    ) {
      const model = await loadModelDir(gpu, FIX + dir);
      await loadAdapterDir(model, FIX + "adapter-lora-rslora");
      const out = join(tmp, dir);
      assertEquals(await writeMergedModelDir(model, out, {}), "bf16");
      const cfg = JSON.parse(await Deno.readTextFile(join(out, "config.json")));
      assertEquals(cfg[dtypeKey], "bfloat16");
      assertEquals(other in cfg, false, `${dir}: only the layout's dtype key`);
      assertEquals("rope_parameters" in cfg, dir === "model");
      const st = await openSafetensors(join(out, "model.safetensors"));
      const want = await golden("golden/merged-lora-rslora/model.safetensors");
      for (const n of st.names) {
        assertEquals(st.info(n).dtype, "BF16", n);
        // One BF16 rounding of PEFT's merged weight (2^-8 relative at most).
        closeToGolden(await st.read(n, "f32"), want.get(n)!, 2 ** -8, n);
      }
      st.close();
      assertEquals(meaning(await readConfig(out)), meaning(model.config));
      model.release();
    }
  });
});

interface GenerateFixture {
  prompts: number[][];
  eos_token_id: number;
  max_new_tokens: number;
  [model: string]: unknown;
}

Deno.test("greedy and beam search give generate()'s tokens (base, HiRA, LoRA)", async (t) => {
  const gpu = await testGpu();
  const fx = await json<GenerateFixture>("golden/generate.json");
  const settings = {
    greedy: { numBeams: 1 },
    beam4: { numBeams: 4, lengthPenalty: 1 },
    beam4_lp09_nr4: { numBeams: 4, lengthPenalty: 0.9, noRepeatNgramSize: 4 },
  } as const;
  for (const name of ["base", "hira", "lora"]) {
    const model = await loadModelDir(gpu, FIX + "model");
    if (name !== "base") await loadAdapterDir(model, FIX + `adapter-${name}`);
    const want = fx[name] as Record<string, number[][]>;
    for (const [kind, opts] of Object.entries(settings)) {
      await t.step(`${name} ${kind}`, async () => {
        const got = await generate(new KvCacheDecoder(model), fx.prompts, {
          maxNewTokens: fx.max_new_tokens,
          eosIds: [fx.eos_token_id],
          ...opts,
        });
        assertEquals(got, want[kind]);
      });
    }
    model.release();
  }
});

interface Trajectory {
  recipe: {
    lr: number;
    warmup: number;
    steps: number;
    grad_acc: number;
    seqs_per_micro: number;
    weight_decay: number;
    max_grad_norm: number;
  };
  tokens: number[][];
  loss_mask: number[][];
  [method: string]: unknown;
}

Deno.test("10 training steps from an existing adapter follow PEFT + torch AdamW", async (t) => {
  const gpu = await testGpu();
  const fx = await json<Trajectory>("golden/train.json");
  const rc = fx.recipe;
  for (const name of ["hira", "lora"] as const) {
    await t.step(name, async () => {
      const model = await loadModelDir(gpu, FIX + "model");
      const ac = await loadAdapterDir(model, FIX + `adapter-${name}`);
      const trainer = new Trainer(model, {
        lr: rc.lr,
        warmup: rc.warmup,
        weightDecay: rc.weight_decay,
        gradAcc: rc.grad_acc,
        maxGradNorm: rc.max_grad_norm,
        totalSteps: rc.steps,
      });
      const want = fx[name] as { losses: number[]; grad_norms: number[]; lrs: number[] };
      let k = 0;
      for (let step = 0; step < rc.steps; step++) {
        const micro = [];
        for (let m = 0; m < rc.grad_acc; m++, k += rc.seqs_per_micro) {
          const span = [k, k + rc.seqs_per_micro] as const;
          micro.push(packBatch(fx.tokens.slice(...span), fx.loss_mask.slice(...span)));
        }
        const r = await trainer.trainStep(micro);
        assertClose([r.lr], [want.lrs[step]], { rtol: 1e-12, atol: 0, label: `lr ${step}` });
        assertClose([r.loss], [want.losses[step]], { rtol: 1e-5, atol: 0, label: `loss ${step}` });
        assertClose([r.gradNorm], [want.grad_norms[step]], {
          rtol: 1e-4,
          atol: 0,
          label: `grad norm ${step}`,
        });
      }
      const final = await golden(`golden/train-${name}.final.safetensors`);
      for (const tensor of await adapterTensors(model, ac.peftType)) {
        const w = final.get(tensor.name)!;
        assert(w, tensor.name);
        const e = relL2(tensor.data as Float32Array, w);
        assert(e < 1e-3, `${name} ${tensor.name}: relative L2 ${e}`);
      }
      model.release();
    });
  }
});

Deno.test("adapter_config.json we write holds only fields of PEFT's HiraConfig / LoraConfig", async () => {
  const fields = await json<Record<string, string[]>>("peft_fields.json");
  for (const name of ["hira", "hira-rank", "lora", "lora-pattern", "lora-regex", "lora-rslora"]) {
    const ad = await openAdapterDir(FIX + `adapter-${name}`);
    ad.close();
    const written = JSON.parse(adapterConfigJson(ad.config));
    const allowed = fields[ad.config.peftType === "HIRA" ? "HiraConfig" : "LoraConfig"];
    for (const k of Object.keys(written)) assert(allowed.includes(k), `${name}: ${k}`);
    if (ad.config.peftType === "HIRA") assertEquals("bias" in written, false);
    // What we write reads back as the same options.
    assertEquals(parseAdapterConfig(written), { ...ad.config, keyStyle: "peft" });
  }
});

Deno.test("PEFT options we do not implement are refused naming adapter_config.json and the field", async () => {
  const lora = await json<Record<string, unknown>>("adapter-lora/adapter_config.json");
  const hira = await json<Record<string, unknown>>("adapter-hira/adapter_config.json");
  const cases: [Record<string, unknown>, string][] = [
    [{ ...lora, use_dora: true }, "use_dora true is not supported"],
    [{ ...lora, lora_bias: true }, "lora_bias true is not supported"],
    [{ ...lora, init_lora_weights: "pissa" }, 'init_lora_weights "pissa" is not supported'],
    [{ ...lora, layers_to_transform: [0] }, "layers_to_transform [0] is not supported"],
    [{ ...lora, modules_to_save: ["lm_head"] }, "modules_to_save"],
    [{ ...hira, exclude_modules: ["q_proj"] }, "exclude_modules"],
    [{ ...lora, rank_pattern: { q_proj: 0 } }, "rank_pattern.q_proj must be a positive integer"],
    [{ ...lora, target_modules: "(" }, 'target_modules: "(" is not a regular expression'],
  ];
  for (const [c, msg] of cases) {
    const e = assertThrows(() => parseAdapterConfig(c, "x/adapter_config.json"), HiraError);
    assert(e.message.startsWith("x/adapter_config.json"), e.message);
    assert(e.message.includes(msg), e.message);
  }
  // A regex that matches no projection names the config file, not the weights.
  const cfg = await readConfig(FIX + "model");
  const ac: AdapterConfig = parseAdapterConfig({ ...lora, target_modules: ".*\\.nothing" });
  const e = assertThrows(
    () => matchTargets(cfg, ac.targetModules, "x/adapter_config.json"),
    HiraError,
  );
  assert(e.message.startsWith("x/adapter_config.json: target_modules regex"), e.message);
  assertThrows(() => matchTargets(cfg, ".*", "x"), HiraError, "matches lm_head");
});
