/**
 * Training runs end to end: exact resume, checkpoint files, adapter round trips, strict
 * loading, and flag validation.
 */
import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { join } from "@std/path";
import { parseTrainArgs } from "../../lib/cli/flags.ts";
import { runTraining, writeModelDir } from "../../lib/cli/train.ts";
import { parseConfig } from "../../lib/model/config.ts";
import { randomModel } from "../../lib/model/load.ts";
import { openAdapterDir, writeAdapterDir } from "../../lib/io/peft_deno.ts";
import { adapterTensors, attachAdapters, loadAdapters } from "../../lib/model/attach.ts";
import { type AdapterConfig, adapterKey, matchTargets } from "../../lib/model/peft.ts";
import { HiraError } from "../../lib/engine/errors.ts";
import { loadModelDir } from "../../lib/io/model_deno.ts";
import { openSafetensors, writeSafetensorsFile } from "../../lib/io/safetensors_deno.ts";
import { testGpu, withTempDir } from "../_util.ts";

const TINY = new URL("../../data_file/tiny/", import.meta.url).pathname;
const DATA = new URL("../../data_file/", import.meta.url).pathname;

/**
 * Runs `fn` with a random-init tiny model folder (the embedded model's config and tokenizer),
 * removed afterwards.
 */
function withTinyModel<T>(fn: (modelDir: string) => Promise<T>): Promise<T> {
  return withTempDir("hira-model-", async (dir) => {
    const cfg = parseConfig(JSON.parse(await Deno.readTextFile(TINY + "model/config.json")));
    const model = randomModel(await testGpu(), cfg, 3);
    await writeModelDir(model, dir, TINY);
    return await fn(dir);
  });
}

function args(extra: string[], modelDir: string, out: string) {
  return parseTrainArgs([
    `--model=${modelDir}`,
    `--data_root=${DATA}`,
    `--output_folder=${out}`,
    "--dataset=common_170k",
    "--dataset_ratio=0.01",
    "--batch=4",
    "--max_steps=4",
    "--warmup=1",
    "--lr=1e-2",
    "--r_ab=4",
    "--target_modules=q_proj,v_proj,down_proj",
    "--eval_strategy=steps",
    "--eval_steps=2",
    "--no-eval_accuracy",
    ...extra,
  ]);
}

async function adapterBytes(dir: string): Promise<Uint8Array> {
  return await Deno.readFile(join(dir, "adapter_model.safetensors"));
}

Deno.test("a run stopped and resumed ends with the same adapter as one never stopped", async (t) => {
  const gpu = await testGpu();
  await withTinyModel(async (modelDir) => {
    for (
      const [kind, extra] of [
        ["hira", ["--peft_type=hira"]],
        ["lora with dropout and grad checkpointing", [
          "--peft_type=lora",
          "--lora_dropout=0.1",
          "--enable_grad_ckpt",
        ]],
      ] as const
    ) {
      await t.step(kind, async () => {
        await withTempDir("hira-runs-", async (out) => {
          const full = await runTraining(args([...extra], modelDir, join(out, "a")), {
            gpu,
            quiet: true,
          });
          assertEquals(full.steps, 4);
          const stopped = await runTraining(args([...extra], modelDir, join(out, "b")), {
            gpu,
            quiet: true,
            stopAfter: 1,
          });
          assert(stopped.interrupted);
          assertEquals(stopped.steps, 1);
          const resumed = await runTraining(
            parseTrainArgs([`--resume=${stopped.runDir}`]),
            { gpu, quiet: true },
          );
          assertEquals(resumed.steps, 4);
          assertEquals(resumed.finalLoss, full.finalLoss);
          const lastA = join(full.runDir, "checkpoint-4"),
            lastB = join(resumed.runDir, "checkpoint-4");
          assertEquals(await adapterBytes(lastB), await adapterBytes(lastA));
          // The final adapter folder is a PEFT folder that loads back.
          const ad = await openAdapterDir(join(full.runDir, "adapter"));
          ad.close();
        });
      });
    }
  });
});

Deno.test("adapter folders round-trip; hand-written PEFT folders load; mismatches are refused", async (t) => {
  const gpu = await testGpu();
  await withTinyModel((modelDir) =>
    withTempDir("hira-adapter-", async (dir) => {
      const ac: AdapterConfig = {
        peftType: "HIRA",
        r: 3,
        targetModules: ["q_proj", "up_proj"],
        loraAlpha: 8,
        loraDropout: 0,
        baseModel: modelDir,
        keyStyle: "peft",
      };
      await t.step("round trip", async () => {
        const m = await loadModelDir(gpu, modelDir);
        attachAdapters(m, ac, { seed: 5, initB: "gaussian" });
        const written = await adapterTensors(m, "HIRA");
        await writeAdapterDir(join(dir, "rt"), ac, written);
        const m2 = await loadModelDir(gpu, modelDir);
        const ad = await openAdapterDir(join(dir, "rt"));
        await loadAdapters(m2, ad.config, ad.weights);
        ad.close();
        const back = await adapterTensors(m2, "HIRA");
        assertEquals(back.map((t) => t.name), written.map((t) => t.name));
        back.forEach((b, i) => assertEquals(b.data, written[i].data));
        const cfg = JSON.parse(await Deno.readTextFile(join(dir, "rt", "adapter_config.json")));
        assertEquals(cfg.peft_type, "HIRA");
        assertEquals(cfg.r, 3);
        assertEquals(cfg.target_modules, ["q_proj", "up_proj"]);
      });
      await t.step("hand-written PEFT folder (LoRA) loads", async () => {
        const m = await loadModelDir(gpu, modelDir);
        const cfg = m.config;
        const hand = join(dir, "hand");
        await Deno.mkdir(hand);
        await Deno.writeTextFile(
          join(hand, "adapter_config.json"),
          JSON.stringify({ peft_type: "LORA", r: 2, lora_alpha: 4, target_modules: ["v_proj"] }),
        );
        const tensors = [];
        for (const mm of matchTargets(cfg, ["v_proj"])) {
          const kv = cfg.numKvHeads * cfg.headDim;
          tensors.push({
            name: adapterKey(mm.path, "LORA", "A"),
            dtype: "F32" as const,
            shape: [2, cfg.hiddenSize],
            data: new Float32Array(2 * cfg.hiddenSize).fill(0.5),
          });
          tensors.push({
            name: adapterKey(mm.path, "LORA", "B"),
            dtype: "F32" as const,
            shape: [kv, 2],
            data: new Float32Array(kv * 2).fill(0.25),
          });
        }
        await writeSafetensorsFile(join(hand, "adapter_model.safetensors"), tensors);
        const ad = await openAdapterDir(hand);
        await loadAdapters(m, ad.config, ad.weights);
        ad.close();
        assertEquals(m.adapters.size, cfg.numLayers);
        const back = await adapterTensors(m, "LORA");
        assertEquals(back[0].data[0], 0.5);
        assertEquals(back[1].data[0], 0.25);
      });
      await t.step("mismatched adapters are refused with the key named", async () => {
        const m = await loadModelDir(gpu, modelDir);
        const bad = join(dir, "bad");
        await Deno.mkdir(bad);
        await Deno.writeTextFile(
          join(bad, "adapter_config.json"),
          JSON.stringify({ peft_type: "HIRA", r: 3, target_modules: ["q_proj", "up_proj"] }),
        );
        // Wrong rank in one tensor.
        const written = await (async () => {
          const m0 = await loadModelDir(gpu, modelDir);
          attachAdapters(m0, ac, { seed: 1 });
          return await adapterTensors(m0, "HIRA");
        })();
        const wrongShape = written.map((t, i) =>
          i === 0 ? { ...t, shape: [t.shape[1], t.shape[0]] } : t
        );
        // Each case: the folder's tensors are `tensors`, and loading names what is wrong.
        const refused = async (tensors: typeof written, message: string) => {
          await writeSafetensorsFile(join(bad, "adapter_model.safetensors"), tensors);
          const ad = await openAdapterDir(bad);
          await assertRejects(() => loadAdapters(m, ad.config, ad.weights), HiraError, message);
          ad.close();
        };
        await refused(wrongShape, "has shape");
        // A missing key.
        await refused(written.slice(1), "missing adapter tensor");
        // An extra key.
        await refused([
          ...written,
          { ...written[0], name: "base_model.model.model.layers.0.self_attn.k_proj.hira_A" },
        ], "unexpected tensor");
      });
    })
  );
});

Deno.test("flags: reference defaults, fixed bugs, and one-line errors for nonsense", async (t) => {
  await t.step("defaults follow the reference where it is not a bug", () => {
    const a = parseTrainArgs(["--model=/x"]);
    assertEquals(a.batch, 32);
    assertEquals(a.lr, 1e-5);
    assertEquals(a.warmup, 10);
    assertEquals(a.weight_decay, 0.01);
    assertEquals(a.r_ab, 16);
    assertEquals(a.grad_acc, 1);
    assertEquals(a.eval_strategy, "epoch");
    assertEquals(a.output_folder, "results_hira");
    assertEquals(a.peft_type, "hira");
  });
  await t.step("--model_name is an alias and --peft_type=fft means full", () => {
    const a = parseTrainArgs(["--model_name=/m", "--peft_type=fft"]);
    assertEquals(a.model, "/m");
    assertEquals(a.peft_type, "full");
  });
  await t.step("the reference's 'q_proj, v_proj' adapts both", () => {
    const cfg = parseConfig({
      architectures: ["LlamaForCausalLM"],
      hidden_size: 8,
      intermediate_size: 16,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      vocab_size: 10,
    });
    const m = matchTargets(cfg, "q_proj, v_proj".split(",").map((s) => s.trim()));
    assertEquals(m.map((x) => x.proj), ["q_proj", "v_proj", "q_proj", "v_proj"]);
    assertThrows(() => matchTargets(cfg, ["q_prj"]), HiraError, "matches no linear layer");
  });
  for (
    const [flag, msg] of [
      ["--lr=0", "--lr: must be > 0"],
      ["--lr=-1", "--lr: must be > 0"],
      ["--batch=0", "--batch: must be a positive integer"],
      ["--batch=2.5", "--batch: must be a positive integer"],
      ["--r_ab=0", "--r_ab: must be a positive integer"],
      ["--grad_acc=0", "--grad_acc"],
      ["--epoch=0", "--epoch"],
      ["--eval_strategy=sometimes", "--eval_strategy"],
      ["--peft_type=prefix", "--peft_type"],
      ["--train_ab=yes", "--train_ab"],
      ["--init_ab=normal,zero", "--init_ab"],
      ["--lr=abc", "--lr: 'abc' is not a number"],
      ["--bogus=1", "--bogus: unknown flag"],
      ["--load_bit=8", "--load_bit"],
      ["--dataset_ratio=2", "--dataset_ratio"],
    ]
  ) {
    await t.step(flag, () => {
      assertThrows(() => parseTrainArgs(["--model=/x", flag]), HiraError, msg);
    });
  }
});

Deno.test("--init_adapter starts a run from an existing PEFT folder with a fresh optimizer", async () => {
  const gpu = await testGpu();
  await withTinyModel((modelDir) =>
    withTempDir("hira-init-", async (out) => {
      const lora = ["--peft_type=lora", "--use_rslora", "--lora_alpha=16", "--lora_dropout=0"];
      const first = await runTraining(args([...lora, "--max_steps=2"], modelDir, join(out, "a")), {
        gpu,
        quiet: true,
      });
      const init = join(first.runDir, "adapter");
      const initCfg = JSON.parse(await Deno.readTextFile(join(init, "adapter_config.json")));
      assertEquals([initCfg.use_rslora, initCfg.lora_alpha, initCfg.r], [true, 16, 4]);
      // --warmup=5 makes step 1's learning rate 0 (HF's schedule), so checkpoint-1 holds the
      // starting adapter exactly: the run began from the folder's tensors, not a fresh init.
      const second = await runTraining(
        args(
          ["--peft_type=lora", `--init_adapter=${init}`, "--max_steps=1", "--warmup=5"],
          modelDir,
          join(out, "b"),
        ),
        { gpu, quiet: true },
      );
      const ck = join(second.runDir, "checkpoint-1");
      assertEquals(await adapterBytes(ck), await adapterBytes(init));
      const state = JSON.parse(await Deno.readTextFile(join(ck, "trainer_state.json")));
      assertEquals(state.init_adapter, await Deno.realPath(init));
      // The folder's alpha and rsLoRA, not the flags' defaults (32, false), are the run's.
      const cfg = JSON.parse(await Deno.readTextFile(join(ck, "adapter_config.json")));
      assertEquals([cfg.use_rslora, cfg.lora_alpha], [true, 16]);
      const saved = JSON.parse(await Deno.readTextFile(join(second.runDir, "args.json")));
      assertEquals([saved.lora_alpha, saved.use_rslora, saved.init_adapter], [
        16,
        true,
        state.init_adapter,
      ]);
      // A fresh optimizer: its step count starts again.
      const opt = await openSafetensorsMeta(join(ck, "optimizer.safetensors"));
      assertEquals(opt.step, "1");
      // Another method, or a flag that contradicts the folder, is one line before anything runs.
      for (
        const [extra, msg] of [
          [["--peft_type=hira"], "holds a LORA adapter, but --peft_type=hira"],
          [["--peft_type=lora", "--r_ab=8"], "--r_ab: 8 contradicts"],
          [["--peft_type=full"], "--init_adapter: needs --peft_type=hira or lora"],
        ] as const
      ) {
        const e = await assertRejects(
          () =>
            runTraining(args([...extra, `--init_adapter=${init}`], modelDir, join(out, "c")), {
              gpu,
              quiet: true,
            }),
          HiraError,
        );
        assert(e.message.includes(msg), e.message);
      }
    })
  );
});

async function openSafetensorsMeta(file: string): Promise<Record<string, string>> {
  const f = await openSafetensors(file);
  const meta = { ...f.header.metadata };
  f.close();
  return meta;
}
