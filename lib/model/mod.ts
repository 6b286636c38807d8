/**
 * The model and its adapters: config.json, safetensors and tokenizer parsing, the Llama forward
 * and backward, HiRA and LoRA layers, PEFT's adapter layout, attaching, loading and merging.
 * Pure (no file I/O). May import engine/ and ops/.
 * @module
 */
export * from "./config.ts";
export * from "./model.ts";
export * from "./load.ts";
export * from "./adapters.ts";
export * from "./attach.ts";
export * from "./peft.ts";
export * from "./safetensors.ts";
export * from "./tokenizer.ts";
export * from "./merge.ts";
export * from "./hub.ts";
