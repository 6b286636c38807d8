/**
 * `train.ts --dry_run`: the itemised memory estimate of lib/train/memory.ts for a run's flags and
 * config.json, checked against the device's limits, as the text the CLI prints.
 * @module
 */
import type { LlamaConfig } from "../model/config.ts";
import { parseTargetFlag, targetText } from "../model/peft.ts";
import { resolveWeightDtype } from "../model/load.ts";
import { hiraTrainingKernel } from "../model/adapters.ts";
import {
  checkMemory,
  estimateMemory,
  formatMemory,
  type MemoryEstimate,
  type MemoryLimits,
  memoryOptionsOf,
  WEBGPU_DEFAULT_LIMITS,
} from "../train/memory.ts";

/** What --dry_run knows of the device: its limits and features, or null without a GPU. */
export interface DeviceInfo {
  limits: MemoryLimits;
  description: string;
  hasF16: boolean;
  /** CPU rasterizer (HiRA's backward then materialises W_eff and dYᵀ·X). */
  isCpuAdapter?: boolean;
}

/** Flags {@linkcode dryRunReport} reads. */
export type DryRunArgs = Parameters<typeof memoryOptionsOf>[0] & {
  weight_dtype: "auto" | "f32" | "f16";
  memory_limit: number;
};

/**
 * train.ts --dry_run: the itemised estimate for `cfg` and the flags, with the limit check
 * against `device` (WebGPU's default limits when null, and the text says so). Pure.
 */
export function dryRunReport(
  args: DryRunArgs,
  cfg: LlamaConfig,
  modelName: string,
  device: DeviceInfo | null,
): { text: string; fits: boolean; estimate: MemoryEstimate } {
  const limits = device?.limits ?? WEBGPU_DEFAULT_LIMITS;
  const full = args.peft_type === "full";
  const wdt = device
    ? resolveWeightDtype(args.weight_dtype, device.hasF16, full)
    : args.weight_dtype === "auto"
    ? "f32"
    : args.weight_dtype;
  const opts = memoryOptionsOf(args, wdt, limits);
  // What HiraAdapter's "auto" runs in training; without a device, the materialising path (the
  // larger for real models).
  const gpu = device !== null && device.isCpuAdapter !== true;
  const est = estimateMemory(cfg, {
    ...opts,
    hiraKernel: hiraTrainingKernel(!gpu),
    hiraVariant: gpu ? "tiled" : "cpu",
  });
  const budget = args.memory_limit > 0 ? args.memory_limit * 2 ** 30 : undefined;
  const problems = checkMemory(est, limits, budget);
  const title = `memory estimate: ${modelName}, ${args.peft_type}${
    full ? "" : ` r=${args.r_ab} on ${targetText(parseTargetFlag(args.target_modules))}`
  }, batch ${args.batch} × ${est.tokens / args.batch} tokens, weights ${wdt}${
    !device && args.weight_dtype === "auto" ? " (auto without a GPU)" : ""
  }, gradient checkpointing ${args.enable_grad_ckpt ? "on" : "off"}`;
  const text = formatMemory(est, {
    limits,
    limitsSource: device ? device.description : "no GPU found: WebGPU's default limits",
    problems,
    title,
  });
  return { text, fits: problems.length === 0, estimate: est };
}
