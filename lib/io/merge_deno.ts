/**
 * The file-I/O edge of merging and rank analysis: writing a merged Hugging Face model folder
 * atomically, and reading an adapter's tensors (with the base weights HiRA's ΔW needs) for the
 * rank report.
 * @module
 */
import { basename, dirname, join } from "@std/path";
import { HiraError } from "../engine/errors.ts";
import type { LlamaConfig } from "../model/config.ts";
import { projectionShape } from "../model/config.ts";
import type { LlamaModel } from "../model/model.ts";
import {
  type AdapterConfig,
  adapterConfigFileOf,
  adapterKey,
  checkAdapterKeys,
  matchTargets,
  moduleRank,
} from "../model/peft.ts";
import { openAdapterDir } from "./peft_deno.ts";
import { openModelWeights, writeFileAtomic, writeSafetensorsFile } from "./safetensors_deno.ts";
import type { AdapterModule } from "../report/rank.ts";
import {
  exportConfigJson,
  type ExportDtype,
  exportDtype,
  exportTensors,
  mergedWeights,
} from "../model/merge.ts";

/** Tokenizer and generation files copied next to a merged model when the base has them. */
export const MODEL_SIDE_FILES: readonly string[] = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "tokenizer.model",
  "generation_config.json",
];

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/**
 * Refuses an output folder that exists and is not empty (unless `force`), or that is a file.
 * Returns whether it exists.
 */
export async function checkOutputDir(dir: string, force: boolean): Promise<boolean> {
  const st = await Deno.stat(dir).catch(() => null);
  if (!st) return false;
  if (!st.isDirectory) throw new HiraError(dir, "exists and is a file, not a folder");
  if (force) return true;
  for await (const _ of Deno.readDir(dir)) {
    throw new HiraError(dir, "exists and is not empty; pass --force to overwrite it");
  }
  return true;
}

/** Options of {@linkcode writeMergedModelDir}. */
export interface MergedDirOptions {
  /** Storage dtype; default the base config's dtype (`dtype` or `torch_dtype`). */
  dtype?: ExportDtype | null;
  /** Folder whose tokenizer/generation files are copied (usually the base model's). */
  sideFilesDir?: string | null;
  /** Replace a non-empty `outDir`. */
  force?: boolean;
}

/** The largest finite value of each export dtype (f32 needs no check beyond finiteness). */
const EXPORT_MAX: Readonly<Record<ExportDtype, number>> = {
  f32: 3.4028234663852886e38,
  f16: 65504,
  bf16: 3.3895313892515355e38,
};

/**
 * Refuses a merged model that is not finite, or that the export dtype would round to Inf
 * (f16 above 65504), naming the first such tensor, before anything is written: a LoRA
 * `lora_alpha` of 1e300 wrote a model with 491,520 non-finite weights and exit 0.
 */
export function checkExportable(
  weights: Map<string, { shape: number[]; data: Float32Array }>,
  dtype: ExportDtype,
): void {
  // Values within half an ulp above the maximum still round down to it; beyond, to Inf.
  const limit = dtype === "f16" ? 65520 : dtype === "bf16" ? 3.3961775292304e38 : Infinity;
  for (const [name, t] of weights) {
    let bad = 0, big = 0, first = 0;
    for (let i = 0; i < t.data.length; i++) {
      const v = t.data[i];
      if (!Number.isFinite(v)) bad++;
      else if (Math.abs(v) >= limit) {
        if (big++ === 0) first = v;
      }
    }
    if (bad > 0) {
      throw new HiraError(
        name,
        `${bad} of ${t.data.length} merged weights are not finite (the adapter's scale or ` +
          "weights overflow); nothing was written",
      );
    }
    if (big > 0) {
      throw new HiraError(
        name,
        `${big} merged weights (e.g. ${first}) exceed ${dtype}'s largest value ` +
          `${EXPORT_MAX[dtype]}; write with --dtype=f32; nothing was written`,
      );
    }
  }
}

/** The temporary folder a merge into `outDir` is built in before it is renamed into place. */
export function mergePartialDir(outDir: string): string {
  return join(dirname(outDir), `.${basename(outDir)}.partial`);
}

/**
 * Writes `model` with its adapters merged in as a complete Hugging Face model folder:
 * config.json (its dtype key updated), model.safetensors in the export dtype, and the base's
 * tokenizer files. The folder is built under a temporary name beside `outDir` and renamed into
 * place, so a crash never leaves a half-written model; an existing non-empty `outDir` is
 * refused unless `force`. Returns the dtype written.
 */
export async function writeMergedModelDir(
  model: LlamaModel,
  outDir: string,
  opts: MergedDirOptions = {},
): Promise<ExportDtype> {
  const had = await checkOutputDir(outDir, opts.force ?? false);
  const dtype = exportDtype(model.config.torchDtype, opts.dtype);
  const weights = await mergedWeights(model);
  checkExportable(weights, dtype);
  // The scoped merge task may write only outDir and the one fixed partial name beside it, so
  // the partial folder is created with its parents (mkdir of the parent itself would need
  // write access to the parent).
  const tmp = mergePartialDir(outDir);
  await Deno.remove(tmp, { recursive: true }).catch(() => {}); // left by a killed merge
  await Deno.mkdir(tmp, { recursive: true });
  try {
    await writeSafetensorsFile(join(tmp, "model.safetensors"), exportTensors(weights, dtype), {
      format: "pt",
    });
    await writeFileAtomic(
      join(tmp, "config.json"),
      exportConfigJson(model.config.raw, dtype, model.config.layout),
    );
    if (opts.sideFilesDir) {
      for (const f of MODEL_SIDE_FILES) {
        const src = join(opts.sideFilesDir, f);
        if (await exists(src)) await Deno.copyFile(src, join(tmp, f));
      }
    }
    if (had) await Deno.remove(outDir, { recursive: true });
    await Deno.rename(tmp, outDir);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  return dtype;
}

/** An adapter folder's config and per-module tensors on the host. */
export interface AdapterModules {
  config: AdapterConfig;
  modules: AdapterModule[];
}

/**
 * Reads every adapted module's A and B (and W0 from `modelDir` for HiRA) of an adapter folder,
 * checked against the model config like loading is (missing, extra or misshapen keys are
 * errors). `layers` keeps only those layers (the SVD of a big projection takes minutes).
 */
export async function readAdapterModules(
  adapterDir: string,
  cfg: LlamaConfig,
  modelDir: string,
  opts: { layers?: readonly number[] | null } = {},
): Promise<AdapterModules> {
  const ad = await openAdapterDir(adapterDir);
  try {
    const ac = ad.config;
    const shapes = new Map<string, readonly number[]>();
    for (const n of ad.weights.names) shapes.set(n, ad.weights.info(n).shape);
    const style = checkAdapterKeys(cfg, ac, shapes, ad.weights.name);
    let mods = matchTargets(cfg, ac.targetModules, adapterConfigFileOf(ad.weights.name));
    if (opts.layers) {
      for (const l of opts.layers) {
        if (l >= cfg.numLayers) {
          throw new HiraError("--layers", `layer ${l} does not exist (${cfg.numLayers} layers)`);
        }
      }
      mods = mods.filter((m) => opts.layers!.includes(m.layer));
    }
    const base = ac.peftType === "HIRA" ? await openModelWeights(modelDir) : null;
    try {
      const out: AdapterModule[] = [];
      for (const m of mods) {
        const [o, i] = projectionShape(cfg, m.proj);
        out.push({
          path: m.path,
          layer: m.layer,
          proj: m.proj,
          outFeatures: o,
          inFeatures: i,
          r: moduleRank(ac, m.path),
          a: await ad.weights.read(adapterKey(m.path, ac.peftType, "A", style), "f32"),
          b: await ad.weights.read(adapterKey(m.path, ac.peftType, "B", style), "f32"),
          w0: base ? await base.read(`${m.path}.weight`, "f32") : null,
        });
      }
      return { config: ac, modules: out };
    } finally {
      base?.close();
    }
  } finally {
    ad.close();
  }
}
