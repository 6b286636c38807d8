/**
 * hira: HiRA, LoRA and full fine-tuning of Llama-family models on WebGPU.
 *
 * The engine (everything here) uses no Deno APIs, so it runs in a browser as well; the
 * `*_deno.ts` modules add file I/O for the command-line tools.
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
export * from "./lib/gpu.ts";
export * from "./lib/errors.ts";
export * from "./lib/rand.ts";
export * from "./lib/config.ts";
export * from "./lib/model.ts";
export * from "./lib/load.ts";
export * from "./lib/adapters.ts";
export * from "./lib/attach.ts";
export * from "./lib/peft.ts";
export * from "./lib/trainer.ts";
export * from "./lib/schedule.ts";
export * from "./lib/safetensors.ts";
export * from "./lib/tokenizer.ts";
export * from "./lib/prompt.ts";
export * from "./lib/data.ts";
export * from "./lib/extract.ts";
export * from "./lib/ops/matmul.ts";
export * from "./lib/ops/elementwise.ts";
export * from "./lib/ops/linear.ts";
export * from "./lib/ops/norm.ts";
export * from "./lib/ops/rope.ts";
export * from "./lib/ops/activation.ts";
export * from "./lib/ops/embedding.ts";
export * from "./lib/ops/softmax.ts";
export * from "./lib/ops/attention.ts";
export * from "./lib/ops/loss.ts";
export * from "./lib/ops/optim.ts";
export * from "./lib/metrics.ts";
export * from "./lib/rank.ts";
export * from "./lib/svg.ts";
export * from "./lib/generate.ts";
export * from "./lib/decode.ts";
export * from "./lib/ops/kvcache.ts";
export * from "./lib/evaluate.ts";
export * from "./lib/merge.ts";
export * from "./lib/memory.ts";
export * from "./lib/report.ts";
export * from "./lib/permissions.ts";
