/**
 * Reading and writing PEFT adapter folders on disk (the file-I/O edge): adapter_config.json and
 * adapter_model.safetensors, written atomically.
 * @module
 */
import { join } from "@std/path";
import { type AttachOptions, loadAdapters } from "../model/attach.ts";
import { HiraError, isHiraError, parseJson } from "../engine/errors.ts";
import { JSON_CAPS, readRegularText } from "./fs_deno.ts";
import type { LlamaModel } from "../model/model.ts";
import { type AdapterConfig, adapterConfigJson, parseAdapterConfig } from "../model/peft.ts";
import { type TensorToWrite, WeightSet } from "../model/safetensors.ts";
import { openSafetensors, writeFileAtomic, writeSafetensorsFile } from "./safetensors_deno.ts";

/** An adapter folder opened for reading; call `close()` when done. */
export interface AdapterDir {
  config: AdapterConfig;
  weights: WeightSet;
  close(): void;
}

/** Opens `dir/adapter_config.json` and `dir/adapter_model.safetensors`, both validated. */
export async function openAdapterDir(dir: string): Promise<AdapterDir> {
  const cfgFile = join(dir, "adapter_config.json");
  let text: string;
  try {
    text = await readRegularText(cfgFile, JSON_CAPS.adapterConfig);
  } catch (e) {
    if (isHiraError(e)) throw e;
    if (e instanceof Deno.errors.NotFound) {
      const exists = await Deno.stat(dir).then(() => true, () => false);
      throw new HiraError(
        exists ? cfgFile : dir,
        exists ? "missing (not an adapter folder)" : "not found",
      );
    }
    throw new HiraError(cfgFile, `cannot be read (${(e as Error).message})`);
  }
  const config = parseAdapterConfig(parseJson(text, cfgFile), cfgFile);
  const st = join(dir, "adapter_model.safetensors");
  if (!(await Deno.stat(st).then(() => true, () => false))) {
    const bin = await Deno.stat(join(dir, "adapter_model.bin")).then(() => true, () => false);
    throw new HiraError(
      st,
      bin
        ? "missing; only adapter_model.bin (a torch pickle) is there: convert it with " +
          "`python -c \"import torch,safetensors.torch as s; s.save_file(torch.load('adapter_model.bin'), 'adapter_model.safetensors')\"`"
        : "missing",
    );
  }
  const f = await openSafetensors(st);
  const entries = new Map(
    [...f.header.tensors].map(([n, info]) => [n, { source: f.source, info }]),
  );
  return { config, weights: new WeightSet(st, entries, f.header.metadata), close: () => f.close() };
}

/** Writes an adapter folder: config and tensors, each to a temporary name then renamed. */
export async function writeAdapterDir(
  dir: string,
  config: AdapterConfig,
  tensors: TensorToWrite[],
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await writeSafetensorsFile(join(dir, "adapter_model.safetensors"), tensors, { format: "pt" });
  await writeFileAtomic(join(dir, "adapter_config.json"), adapterConfigJson(config));
}

/**
 * Opens the adapter folder `dir` and attaches its adapters to `model`, strictly (see
 * {@linkcode loadAdapters}); the files are closed either way. Returns the folder's config.
 */
export async function loadAdapterDir(
  model: LlamaModel,
  dir: string,
  attach?: AttachOptions,
): Promise<AdapterConfig> {
  const ad = await openAdapterDir(dir);
  try {
    await loadAdapters(model, ad.config, ad.weights, attach);
  } finally {
    ad.close();
  }
  return ad.config;
}
