/**
 * HiRA and LoRA adapter layers behind one interface ({@linkcode LinearAdapter}), so the trainer
 * switches between them with `--peft_type`: one file per method (hira.ts, lora.ts) over one
 * layer base (adapter.ts), as PEFT has them, and the factory here.
 * @module
 */
import type { PeftType } from "./peft.ts";
import type { Gpu } from "../engine/gpu.ts";
import type { Rng } from "../engine/rand.ts";
import type { HiraVariant } from "../ops/hira.ts";
import type { LinearAdapter } from "./adapter.ts";
import { HiraAdapter, type HiraKernel } from "./hira.ts";
import { LoraAdapter } from "./lora.ts";

export * from "./adapter.ts";
export * from "./hira.ts";
export * from "./lora.ts";

/** Options of {@linkcode createAdapter}. */
export interface AdapterOptions {
  inFeatures: number;
  outFeatures: number;
  /** Rank. */
  r: number;
  /** Draws A's init (r·in uniforms, row-major), and the dropout seed when `seed` is absent. */
  rng: Rng;
  /** LoRA α (scale α/r); PEFT's default 8. Ignored by HiRA, whose reference never scales. */
  loraAlpha?: number;
  /** LoRA's scale when it is not α/r (rsLoRA: α/√r); from {@linkcode loraScale}. */
  loraScale?: number;
  /** LoRA dropout probability in [0, 1); default 0. Ignored by HiRA (dead in the reference). */
  loraDropout?: number;
  /** LoRA dropout mask seed (u32); drawn from `rng` after A's init when absent and p > 0. */
  seed?: number;
  /** HiRA only: how the layer is computed (see {@linkcode HiraKernel}); "auto" by default. */
  hiraKernel?: HiraKernel;
  /** HiRA only: the fused kernel family ("auto": by adapter). */
  hiraVariant?: HiraVariant;
}

/** Creates a HiRA or LoRA adapter for a linear layer [out, in] (A random from opts.rng, B = 0). */
export function createAdapter(gpu: Gpu, type: PeftType, opts: AdapterOptions): LinearAdapter {
  const { inFeatures, outFeatures, r, rng } = opts;
  if (type === "HIRA") {
    return new HiraAdapter(gpu, inFeatures, outFeatures, r, rng, {
      kernel: opts.hiraKernel,
      variant: opts.hiraVariant,
    });
  }
  if (type === "LORA") {
    return new LoraAdapter(gpu, inFeatures, outFeatures, r, rng, {
      alpha: opts.loraAlpha,
      dropout: opts.loraDropout,
      seed: opts.seed,
      scale: opts.loraScale,
    });
  }
  throw new Error(`unknown peft type ${type}`);
}
