/**
 * Putting adapters on a model and taking them off again: create them on the modules that
 * --target_modules names, load them from a PEFT folder's tensors (refusing any mismatch), and
 * read them back as the tensors of adapter_model.safetensors.
 * @module
 */
import { type AdapterParam, createAdapter } from "./adapters.ts";
import { projectionShape } from "./config.ts";
import { HiraError } from "../engine/errors.ts";
import type { LlamaModel } from "./model.ts";
import {
  type AdapterConfig,
  adapterKey,
  checkAdapterKeys,
  loraScale,
  matchTargets,
  moduleAlpha,
  moduleRank,
  type PeftType,
} from "./peft.ts";
import { Rng } from "../engine/rand.ts";
import type { TensorToWrite, WeightSet } from "./safetensors.ts";

/** How adapters are initialised and which halves train. */
export interface AttachOptions {
  seed: number;
  /** Init of A and B: "kaiming" (U(±1/√in), PEFT/reference), "zero", "gaussian" (N(0, 1/r)). */
  initA?: "kaiming" | "zero" | "gaussian";
  initB?: "kaiming" | "zero" | "gaussian";
  /** Train A / train B (the reference's --train_ab). */
  trainA?: boolean;
  trainB?: boolean;
}

function suffixOf(type: PeftType, which: "A" | "B"): string {
  return type === "HIRA" ? `hira_${which}` : `lora_${which}.weight`;
}

/**
 * Creates adapters on every module `ac.targetModules` matches, in layer order, each drawing its
 * init from one seeded stream (so --seed fixes the init). Returns the module paths.
 */
export function attachAdapters(
  model: LlamaModel,
  ac: AdapterConfig,
  opts: AttachOptions,
): string[] {
  const gpu = model.gpu, cfg = model.config;
  const modules = matchTargets(cfg, ac.targetModules);
  const rng = new Rng(opts.seed);
  for (const m of modules) {
    const [outF, inF] = projectionShape(cfg, m.proj);
    const r = moduleRank(ac, m.path);
    const ad = createAdapter(gpu, ac.peftType, {
      inFeatures: inF,
      outFeatures: outF,
      r,
      rng,
      loraAlpha: moduleAlpha(ac, m.path),
      loraScale: ac.peftType === "LORA" ? loraScale(ac, m.path) : undefined,
      loraDropout: ac.loraDropout,
    });
    for (const [which, init] of [["A", opts.initA], ["B", opts.initB]] as const) {
      const def = which === "A" ? "kaiming" : "zero";
      if (!init || init === def) continue;
      const p = ad.params().find((x) => x.suffix === suffixOf(ac.peftType, which))!;
      const n = p.param.size;
      const data = init === "zero"
        ? new Float32Array(n)
        : init === "gaussian"
        ? rng.normalArray(n, 1 / r)
        : rng.uniformArray(n, -1 / Math.sqrt(p.param.shape[1]), 1 / Math.sqrt(p.param.shape[1]));
      gpu.write(p.param, data);
    }
    model.adapters.set(m.path, ad);
  }
  model.adapterTrain = { A: opts.trainA ?? true, B: opts.trainB ?? true };
  return modules.map((m) => m.path);
}

/**
 * Loads adapter weights from a PEFT folder's tensors into new adapters. Every expected key must
 * be present with the right shape and no key may be left over (the reference's strict=False
 * silently reproduced the base model on a renamed key).
 */
export async function loadAdapters(
  model: LlamaModel,
  ac: AdapterConfig,
  ws: WeightSet,
  attach: AttachOptions = { seed: 0 },
): Promise<void> {
  const shapes = new Map<string, readonly number[]>();
  for (const n of ws.names) shapes.set(n, ws.info(n).shape);
  const style = checkAdapterKeys(model.config, ac, shapes, ws.name);
  // A resumed run passes its original options so LoRA's dropout seeds come out the same.
  attachAdapters(model, ac, attach);
  for (const [path, ad] of model.adapters) {
    for (const which of ["A", "B"] as const) {
      const p = ad.params().find((x) => x.suffix === suffixOf(ac.peftType, which))!;
      const data = await ws.read(adapterKey(path, ac.peftType, which, style), "f32");
      for (const v of data) {
        if (!Number.isFinite(v)) {
          throw new HiraError(
            ws.name,
            `adapter tensor ${adapterKey(path, ac.peftType, which, style)} holds NaN or Inf`,
          );
        }
      }
      model.gpu.write(p.param, data);
    }
  }
}

/** The adapters' tensors under PEFT's keys, read back in one round trip. */
export async function adapterTensors(model: LlamaModel, type: PeftType): Promise<TensorToWrite[]> {
  const entries: { name: string; shape: number[]; t: AdapterParam }[] = [];
  for (const [path, ad] of model.adapters) {
    for (const which of ["A", "B"] as const) {
      const p = ad.params().find((x) => x.suffix === suffixOf(type, which))!;
      entries.push({ name: adapterKey(path, type, which), shape: [...p.param.shape], t: p });
    }
  }
  const vals = await model.gpu.readMany(entries.map((e) => e.t.param));
  return entries.map((e, i) => ({
    name: e.name,
    dtype: "F32",
    shape: e.shape,
    data: vals[i] as Float32Array,
  }));
}

/** Trainable parameter count of the attached adapters (r·(in + out) each, for trained halves). */
export function adapterParameterCount(model: LlamaModel): number {
  let n = 0;
  for (const ad of model.adapters.values()) {
    if (model.adapterTrain.A) n += ad.r * ad.inFeatures;
    if (model.adapterTrain.B) n += ad.r * ad.outFeatures;
  }
  return n;
}
