/**
 * LoRA dropout with a stateless hash mask (kernels/lora.wgsl): element i is kept iff
 * hash(seed, mask id, i) >= p·2^32, and kept values are scaled by 1/(1 − p) as nn.Dropout does.
 * The mask is a pure function of (seed, mask id, i), so a backward pass regenerates the
 * forward's mask instead of storing it.
 * @module
 */
import type { Gpu, KernelFile, Tensor } from "../engine/gpu.ts";
import { cdiv, grid, kernelFile, uniformStruct } from "../engine/gpu.ts";

/** n elements, the mask's key (seed, mask_id), the keep threshold and 1/(1 − p). */
const DROPOUT_PARAMS = uniformStruct("DropoutParams", [
  ...["n", "seed", "mask_id", "threshold"] as const,
  ["scale", "f32"],
]);
/** kernels/lora.wgsl and its uniform struct (docs/kernels.md). */
export const LORA_KERNELS: KernelFile = kernelFile("lora.wgsl", [DROPOUT_PARAMS]);

/**
 * The u32 keep threshold of LoRA dropout with probability p: an element is kept iff its hash
 * is >= p·2^32 (so it is kept with probability 1 − p).
 */
export function dropoutThreshold(p: number): number {
  if (!(p >= 0 && p < 1)) throw new Error(`dropout probability ${p} must be in [0, 1)`);
  return Math.min(0xffffffff, Math.round(p * 4294967296));
}

/** The mask of {@linkcode hashDropout}: probability p, keyed by (seed, maskId), both u32. */
export interface DropoutMask {
  p: number;
  seed: number;
  maskId: number;
}

/**
 * dst = mask ⊙ src, or with `accumulate` dst += mask ⊙ src (the backward adding the dropout
 * branch's input gradient into dX). Records one dispatch.
 */
export async function hashDropout(
  gpu: Gpu,
  src: Tensor,
  dst: Tensor,
  mask: DropoutMask,
  accumulate = false,
): Promise<void> {
  const entry = accumulate ? "dropout_accumulate" : "dropout";
  const k = await gpu.kernel(LORA_KERNELS.spec(entry, ["uniform", "read", "rw"]));
  const params = DROPOUT_PARAMS.pack({
    n: src.size,
    seed: mask.seed,
    mask_id: mask.maskId >>> 0,
    threshold: dropoutThreshold(mask.p),
    scale: 1 / (1 - mask.p),
  });
  gpu.dispatch(k, [params, src, dst], grid(cdiv(src.size, 256)));
}
