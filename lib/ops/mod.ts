/**
 * Tensor operations, each a WGSL kernel in kernels/ with its host code, forward and backward side
 * by side (matmul, norms, RoPE, attention, loss, optimizer, HiRA's fused kernels...). May import
 * engine/.
 * @module
 */
export * from "./matmul.ts";
export * from "./elementwise.ts";
export * from "./linear.ts";
export * from "./norm.ts";
export * from "./rope.ts";
export * from "./activation.ts";
export * from "./embedding.ts";
export * from "./softmax.ts";
export * from "./attention.ts";
export * from "./loss.ts";
export * from "./optim.ts";
export * from "./kvcache.ts";
export * from "./lora.ts";
