/**
 * The f64 CPU reference every kernel and the whole model are tested against, one file per ops/
 * file of the same name. May import engine/, ops/ (types) and model/ (the config).
 *
 * Not re-exported by the root mod.ts: import the modules you need directly.
 * @module
 */
export * from "./activation.ts";
export * from "./adapters.ts";
export * from "./attention.ts";
export * from "./embedding.ts";
export * from "./kvcache.ts";
export * from "./linear.ts";
export * from "./loss.ts";
export * from "./matmul.ts";
export * from "./model.ts";
export * from "./norm.ts";
export * from "./optim.ts";
export * from "./rope.ts";
export * from "./softmax.ts";
