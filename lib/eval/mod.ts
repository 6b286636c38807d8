/**
 * Evaluation without file I/O: greedy and beam search, the KV-cache decoder, answer extraction
 * and scoring as the reference scores, ConvAI2's metrics, perplexity and the rank numerics. May
 * import the layers below (engine/ to train/).
 * @module
 */
export * from "./scoring.ts";
export * from "./metrics.ts";
export * from "./rank.ts";
export * from "./generate.ts";
export * from "./decode.ts";
export * from "./evaluate.ts";
export * from "./perplexity.ts";
