/**
 * hira: HiRA, LoRA and full fine-tuning of Llama-family models on WebGPU.
 *
 * The library is lib/ in layers, each a folder whose mod.ts says what it is and what it may
 * import (imports only go down): engine/ → ops/ → model/ → ref/ → train/ → eval/ → report/ →
 * io/ → cli/. Everything re-exported here uses no Deno APIs, so it runs in a browser as well;
 * lib/io/ (file adapters) and lib/cli/ (the programs) add what the command-line tools need.
 *
 * @example
 * ```ts
 * import { attachAdapters, createGpu, parseConfig, randomModel } from "./mod.ts";
 * const gpu = await createGpu();
 * const cfg = parseConfig({ architectures: ["LlamaForCausalLM"], hidden_size: 64, intermediate_size: 128,
 *   num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 100 });
 * const model = randomModel(gpu, cfg, 0);
 * attachAdapters(model, { peftType: "HIRA", r: 4, targetModules: ["q_proj", "v_proj"],
 *   loraAlpha: 8, loraDropout: 0, baseModel: "", keyStyle: "peft" }, { seed: 0 });
 * ```
 * @module
 */
export * from "./lib/engine/mod.ts";
export * from "./lib/ops/mod.ts";
export * from "./lib/model/mod.ts";
export * from "./lib/train/mod.ts";
export * from "./lib/eval/mod.ts";
export * from "./lib/report/mod.ts";
export * from "./lib/cli/flags.ts";
export * from "./lib/cli/dry_run.ts";
export * from "./lib/cli/permissions.ts";
