/**
 * The WebGPU runtime: devices, buffers, kernels and their cache (gpu.ts), the error type every
 * layer throws (errors.ts) and the seeded random numbers (rand.ts). Imports nothing of lib/.
 * @module
 */
export * from "./gpu.ts";
export * from "./errors.ts";
export * from "./rand.ts";
