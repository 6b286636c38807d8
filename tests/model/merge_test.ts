/**
 * Merging adapters into the base weights: merged weights and logits against PyTorch's merged
 * golden checkpoints, merged folders that load and compute what the adapter computes, in-place
 * merge/restore, unmerge round trips, bf16/f16 export, overwrite protection, and the rank table.
 */
import { readTensors } from "../_fixtures.ts";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { loadModelDir, readConfig } from "../../lib/io/model_deno.ts";
import { openModelWeights } from "../../lib/io/safetensors_deno.ts";
import { loadAdapterDir } from "../../lib/io/peft_deno.ts";
import type { LlamaModel } from "../../lib/model/model.ts";
import { PROJECTIONS } from "../../lib/model/config.ts";
import {
  exportDtype,
  mergeAdaptersInPlace,
  mergedWeights,
  parseModulePath,
  torchDtypeName,
  unmergeWeight,
} from "../../lib/model/merge.ts";
import { adapterRanks, rankChart, rankMarkdown } from "../../lib/report/rank.ts";
import {
  checkOutputDir,
  readAdapterModules,
  writeMergedModelDir,
} from "../../lib/io/merge_deno.ts";
import { isHiraError } from "../../lib/engine/errors.ts";
import { assertClose, testGpu, withTempDir } from "../_util.ts";

const FIX = new URL("../fixtures/golden/", import.meta.url).pathname;
const TOL = { rtol: 1e-4, atol: 1e-5 };

interface Tokens {
  tokens: number[][];
}

async function withAdapter(dir: string | null): Promise<LlamaModel> {
  const model = await loadModelDir(await testGpu(), FIX + "model");
  if (dir) {
    await loadAdapterDir(model, FIX + dir);
  }
  return model;
}

const goldenTensors = readTensors;

/** Logits of every fixture sequence, one packed batch. */
async function allLogits(model: LlamaModel, seqs: number[][]): Promise<Float32Array> {
  const cu = [0];
  for (const s of seqs) cu.push(cu[cu.length - 1] + s.length);
  return await model.logits(Int32Array.from(seqs.flat()), Uint32Array.from(cu));
}

const SEQS: number[][] = (JSON.parse(await Deno.readTextFile(FIX + "tokens.json")) as Tokens)
  .tokens;

for (const [name, dir] of [["hira", "adapter-hira"], ["lora", "adapter-lora"]] as const) {
  Deno.test(`${name}: merged weights, merged folder and its logits match PyTorch`, async () => {
    const model = await withAdapter(dir);
    const golden = await goldenTensors(FIX + `golden/merged-${name}/model.safetensors`);
    const merged = await mergedWeights(model);
    assertEquals([...merged.keys()].sort(), [...golden.keys()].sort());
    for (const [n, t] of merged) assertClose(t.data, golden.get(n)!, { ...TOL, label: n });
    // The adapter is still attached and unmerged afterwards.
    assertEquals(model.adapters.size, 21);

    await withTempDir("hira-merge-", async (root) => {
      const out = join(root, "merged");
      const dtype = await writeMergedModelDir(model, out, { dtype: "f32" });
      assertEquals(dtype, "f32");
      const cfg = JSON.parse(await Deno.readTextFile(join(out, "config.json")));
      // The base is in the transformers-5 layout, so the merged config says `dtype` only.
      assertEquals(cfg.dtype, "float32");
      assertEquals("torch_dtype" in cfg, false);
      assertEquals(cfg.hidden_size, 48);
      const mergedModel = await loadModelDir(model.gpu, out);
      const viaAdapter = await allLogits(model, SEQS);
      const viaMerged = await allLogits(mergedModel, SEQS);
      assertClose(viaMerged, viaAdapter, { ...TOL, label: "merged vs adapter logits" });
      const g = await goldenTensors(FIX + `golden/${name}.logits.safetensors`);
      const want = new Float32Array(viaMerged.length);
      let off = 0;
      SEQS.forEach((_, i) => {
        want.set(g.get(`logits.${i}`)!, off);
        off += g.get(`logits.${i}`)!.length;
      });
      assertClose(viaMerged, want, { ...TOL, label: "merged vs PyTorch logits" });
      // The golden merged checkpoint itself loads and gives the same logits.
      const goldenModel = await loadModelDir(model.gpu, FIX + `golden/merged-${name}`);
      assertClose(await allLogits(goldenModel, SEQS), want, { ...TOL, label: "golden merged" });
    });
  });
}

Deno.test("in-place merge gives the adapter's logits and restore puts W0 back exactly", async () => {
  for (const dir of ["adapter-hira", "adapter-lora"]) {
    const model = await withAdapter(dir);
    const before = await allLogits(model, SEQS);
    const w0 = model.weights.layers[1].proj.q_proj;
    const h = await mergeAdaptersInPlace(model);
    assertEquals(h.merged, 21);
    assertEquals(model.adapters.size, 0);
    assert(model.weights.layers[1].proj.q_proj !== w0);
    assertClose(await allLogits(model, SEQS), before, { ...TOL, label: `${dir} merged in place` });
    h.restore();
    h.restore(); // idempotent
    assertEquals(model.adapters.size, 21);
    assert(model.weights.layers[1].proj.q_proj === w0);
    assertEquals(await allLogits(model, SEQS), before);
  }
});

Deno.test("merge then unmerge round-trips (HiRA W' ⊘ (1 + B·A), LoRA W' − s·B·A)", async () => {
  for (const dir of ["adapter-hira", "adapter-lora"]) {
    const model = await withAdapter(dir);
    const gpu = model.gpu;
    for (const [path, ad] of model.adapters) {
      const { layer, proj } = parseModulePath(path);
      const w0 = model.weights.layers[layer].proj[proj];
      const merged = await ad.merged(w0);
      const back = await unmergeWeight(gpu, ad, merged);
      const [want, got, m] = await gpu.readMany([w0, back, merged]);
      assertClose(got, want, { rtol: 1e-4, atol: 1e-6, label: `${dir} ${path}` });
      // The merge really changed the weight (B ≠ 0 in the fixtures).
      assert(m.some((v, i) => Math.abs(v - want[i]) > 1e-4), `${dir} ${path} unchanged`);
      for (const t of [merged, back]) t.release();
    }
  }
});

Deno.test("export dtype: the base's torch_dtype by default; bf16 and f16 round-trip", async () => {
  assertEquals(exportDtype("bfloat16"), "bf16");
  assertEquals(exportDtype("float16"), "f16");
  assertEquals(exportDtype("float32"), "f32");
  assertEquals(exportDtype("bfloat16", "f32"), "f32");
  assertEquals(torchDtypeName("bf16"), "bfloat16");
  const model = await withAdapter("adapter-hira");
  const exact = await mergedWeights(model);
  await withTempDir("hira-merge-", async (root) => {
    // The fixture is BF16, so the default export is BF16.
    assertEquals(await writeMergedModelDir(model, join(root, "bf16")), "bf16");
    assertEquals(await writeMergedModelDir(model, join(root, "f16"), { dtype: "f16" }), "f16");
    for (
      const [d, st, rtol, atol, torch] of [
        ["bf16", "BF16", 2 ** -8, 0, "bfloat16"],
        ["f16", "F16", 2 ** -10, 6e-8, "float16"],
      ] as const
    ) {
      const cfg = await readConfig(join(root, d));
      assertEquals(cfg.torchDtype, torch);
      const ws = await openModelWeights(join(root, d));
      for (const [n, t] of exact) {
        assertEquals(ws.info(n).dtype, st);
        assertClose(await ws.read(n, "f32"), t.data, { rtol, atol, label: `${d} ${n}` });
      }
      ws.close();
      const m = await loadModelDir(model.gpu, join(root, d));
      assertEquals(m.config.numLayers, 3);
    }
  });
});

Deno.test("merged folder: written atomically, non-empty folders refused without force", async () => {
  const model = await withAdapter("adapter-lora");
  await withTempDir("hira-merge-", async (root) => {
    const out = join(root, "out");
    await Deno.mkdir(out);
    await Deno.writeTextFile(join(out, "keep.txt"), "x");
    const err = await assertRejects(() => writeMergedModelDir(model, out, { dtype: "f32" }));
    assert(isHiraError(err));
    assertStringIncludes((err as Error).message, `${out}: exists and is not empty`);
    assertEquals(await Deno.readTextFile(join(out, "keep.txt")), "x");
    await writeMergedModelDir(model, out, {
      dtype: "f32",
      force: true,
      sideFilesDir: new URL("../../data_file/tiny/", import.meta.url).pathname,
    });
    const names = [];
    for await (const e of Deno.readDir(out)) names.push(e.name);
    assertEquals(names.sort(), [
      "config.json",
      "model.safetensors",
      "special_tokens_map.json",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
    // No temporary folder is left behind.
    const left = [];
    for await (const e of Deno.readDir(root)) left.push(e.name);
    assertEquals(left, ["out"]);
    // An empty existing folder is fine; a file is not.
    await Deno.mkdir(join(root, "empty"));
    assertEquals(await checkOutputDir(join(root, "empty"), false), true);
    await Deno.writeTextFile(join(root, "file"), "");
    await assertRejects(() => checkOutputDir(join(root, "file"), true), Error, "is a file");
  });
});

Deno.test("rank table: HiRA's ΔW can exceed rank r, LoRA's never does", async () => {
  const cfg = await readConfig(FIX + "model");
  const hira = await readAdapterModules(FIX + "adapter-hira", cfg, FIX + "model");
  const lora = await readAdapterModules(FIX + "adapter-lora", cfg, FIX + "model", {
    layers: [0, 2],
  });
  assertEquals(hira.modules.length, 21);
  assertEquals(lora.modules.length, 14);
  const rh = adapterRanks("HiRA", "HIRA", hira.modules);
  const rl = adapterRanks("LoRA", "LORA", lora.modules, {
    loraScale: lora.config.loraAlpha / lora.config.r,
  });
  for (const m of rh.modules) {
    assert(m.effectiveRank <= m.rank + 1e-9 && m.rank <= Math.min(...m.shape));
    assert(m.countAbove <= Math.min(...m.shape));
  }
  assert(rh.modules.every((m) => m.rank > m.r), "HiRA: rank > r on random fixtures");
  for (const m of rl.modules) {
    assert(m.rank <= m.r, `LoRA ${m.path} rank ${m.rank} > r`);
    assert(m.effectiveRank <= m.r + 1e-9 && m.effectiveRank >= 1);
  }
  // LoRA's ‖ΔW‖² scales with s² (s = α/r = 2).
  const unscaled = adapterRanks("x", "LORA", lora.modules.slice(0, 1));
  assertClose([rl.modules[0].sumSquares], [4 * unscaled.modules[0].sumSquares], { rtol: 1e-9 });
  const md = rankMarkdown([rh, rl]);
  assertStringIncludes(md, "| 0 | q_proj | 48×48 | 4 | 48 |");
  // Layer 1 has no LoRA entry (filtered), shown as dashes.
  assertStringIncludes(md, "| 1 | q_proj | 48×48 | 4 | 48 |");
  assertStringIncludes(md, "| – | – | – | – | – |");
  for (const p of PROJECTIONS) assertStringIncludes(md, `| ${p} |`);
  const svg = rankChart([rh, rl]);
  assert(svg.startsWith("<svg") || svg.startsWith("<?xml"));
  assertStringIncludes(svg, "HiRA (HIRA, r=4)");
  assertStringIncludes(svg, "LoRA (LORA, r=4)");
  // A wrong layer is a one-line error naming the flag.
  await assertRejects(
    () => readAdapterModules(FIX + "adapter-lora", cfg, FIX + "model", { layers: [7] }),
    Error,
    "--layers: layer 7 does not exist",
  );
});
