/**
 * Every kernel file with its uniform structs: the op modules' {@linkcode KernelFile}s, each
 * struct described once in its module with `uniformStruct` and spliced into its file by
 * `//! struct NAME` (docs/kernels.md). tests/ops/kernel_source_test.ts checks the files against
 * this list.
 * @module
 */
import type { KernelFile } from "../engine/gpu.ts";
import { ACTIVATION_KERNELS } from "./activation.ts";
import { ATTENTION_KERNELS } from "./attention.ts";
import { ELEMENTWISE_KERNELS } from "./elementwise.ts";
import { EMBEDDING_KERNELS } from "./embedding.ts";
import { HIRA_FUSED_KERNELS, HIRA_GRAD_KERNELS, HIRA_WEIGHT_KERNELS } from "./hira.ts";
import { KVCACHE_KERNELS } from "./kvcache.ts";
import { LINEAR_KERNELS } from "./linear.ts";
import { LORA_KERNELS } from "./lora.ts";
import { LOSS_KERNELS } from "./loss.ts";
import { MATMUL_KERNELS } from "./matmul.ts";
import { NORM_KERNELS } from "./norm.ts";
import { OPTIM_KERNELS } from "./optim.ts";
import { ROPE_KERNELS } from "./rope.ts";
import { SOFTMAX_KERNELS } from "./softmax.ts";

/** One {@linkcode KernelFile} for every file in kernels/ (its snippets in common/ aside). */
export const KERNEL_FILES: readonly KernelFile[] = [
  ACTIVATION_KERNELS,
  ATTENTION_KERNELS,
  ELEMENTWISE_KERNELS,
  EMBEDDING_KERNELS,
  HIRA_FUSED_KERNELS,
  HIRA_GRAD_KERNELS,
  HIRA_WEIGHT_KERNELS,
  KVCACHE_KERNELS,
  LINEAR_KERNELS,
  LORA_KERNELS,
  LOSS_KERNELS,
  MATMUL_KERNELS,
  NORM_KERNELS,
  OPTIM_KERNELS,
  ROPE_KERNELS,
  SOFTMAX_KERNELS,
];
