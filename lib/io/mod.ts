/**
 * The I/O edge: file, GPU-device, cache and MPI adapters for Deno (`*_deno.ts`) and the browser
 * (browser_io.ts). The only layer besides cli/ that may use `Deno.*`. May import every layer
 * below it.
 *
 * Not re-exported by the root mod.ts: import the modules you need directly.
 * @module
 */
export * from "./browser_io.ts";
export * from "./chat_deno.ts";
export * from "./dataset_file_deno.ts";
export * from "./fingerprint_deno.ts";
export * from "./fs_deno.ts";
export * from "./gpu_deno.ts";
export * from "./hub_deno.ts";
export * from "./merge_deno.ts";
export * from "./model_deno.ts";
export * from "./mpi_deno.ts";
export * from "./paths_deno.ts";
export * from "./peft_deno.ts";
export * from "./report_deno.ts";
export * from "./runlock_deno.ts";
export * from "./safetensors_deno.ts";
export * from "./tokenizer_deno.ts";
