/**
 * Llama-family model configuration, read from a Hugging Face config.json.
 *
 * Supported: LlamaForCausalLM (Llama 2, Llama 3/3.x, TinyLlama, SmolLM), Qwen2ForCausalLM
 * (q/k/v biases) and MistralForCausalLM without sliding windows. Anything else is refused with a
 * clear error rather than loaded wrongly.
 * @module
 */
import { HiraError, preview } from "../engine/errors.ts";

/** llama3-type RoPE scaling parameters (transformers `_compute_llama3_parameters`). */
export interface RopeScaling {
  rope_type: "llama3";
  factor: number;
  low_freq_factor: number;
  high_freq_factor: number;
  original_max_position_embeddings: number;
}

/** The fields of config.json the engine uses, normalised. */
export interface LlamaConfig {
  architecture: string;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  tieWordEmbeddings: boolean;
  /**
   * Projections that carry a bias: q/k/v for Qwen2; q/k/v/o for Llama with attention_bias
   * (transformers gives LlamaAttention's o_proj a bias too); none otherwise.
   */
  biasProjections: Projection[];
  vocabSize: number;
  bosTokenId: number | null;
  eosTokenIds: number[];
  maxPositionEmbeddings: number;
  /** dtype the checkpoint was saved in ("bfloat16", "float16", "float32"). */
  torchDtype: string;
  /**
   * Which config.json layout the file uses: "transformers5" (`rope_parameters`, `dtype`) or
   * "transformers4" (top-level `rope_theta` / `rope_scaling`, `torch_dtype`). Merged exports
   * write the layout they read.
   */
  layout: ConfigLayout;
  /** The parsed config.json, kept so merged exports can write it back. */
  raw: Record<string, unknown>;
}

/** config.json layouts: transformers ≥ 5 and the 4.x one before it. */
export type ConfigLayout = "transformers5" | "transformers4";

const SUPPORTED = ["LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"];

/** The seven linear projections of a Llama decoder layer, in PEFT's names. */
export const PROJECTIONS = [
  "q_proj",
  "k_proj",
  "v_proj",
  "o_proj",
  "gate_proj",
  "up_proj",
  "down_proj",
] as const;

/** One of {@linkcode PROJECTIONS}. */
export type Projection = typeof PROJECTIONS[number];

/** Parses and validates a config.json object; `file` names it in errors. */
export function parseConfig(json: unknown, file = "config.json"): LlamaConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new HiraError(file, "is not a JSON object");
  }
  const c = json as Record<string, unknown>;
  // Only strings are read as names: String() of a deeply nested array overflows the stack.
  const str = (v: unknown): string => (typeof v === "string" ? v : "");
  const arch = Array.isArray(c.architectures) ? str(c.architectures[0]) : "";
  const modelType = str(c.model_type);
  if (!SUPPORTED.includes(arch) && !["llama", "qwen2", "mistral"].includes(modelType)) {
    throw new HiraError(
      file,
      `unsupported architecture ${arch || modelType || "(none given)"}; ` +
        `supported: ${SUPPORTED.join(", ")}`,
    );
  }
  const int = (key: string, fallback?: number): number => {
    const v = c[key] ?? fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
      throw new HiraError(
        file,
        v === undefined
          ? `missing field ${key}`
          : `${key} must be a positive integer, got ${preview(v)}`,
      );
    }
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = c[key] ?? fallback;
    if (typeof v !== "number" || !(v > 0)) {
      throw new HiraError(file, `${key} must be a positive number, got ${preview(v)}`);
    }
    return v;
  };
  const hiddenSize = int("hidden_size");
  const numHeads = int("num_attention_heads");
  const numKvHeads = int("num_key_value_heads", numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new HiraError(
      file,
      `num_attention_heads (${numHeads}) is not a multiple of num_key_value_heads (${numKvHeads})`,
    );
  }
  const headDim = c.head_dim == null ? hiddenSize / numHeads : int("head_dim");
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) {
    throw new HiraError(file, `head dimension ${headDim} must be an even integer`);
  }
  if (c.sliding_window != null && c.use_sliding_window !== false && modelType === "mistral") {
    throw new HiraError(file, "sliding-window attention is not supported");
  }
  const rope = readRope(c, file);
  const ropeScaling = rope.scaling;
  const eos = c.eos_token_id;
  const eosTokenIds = Array.isArray(eos)
    ? eos.filter((e): e is number => typeof e === "number")
    : typeof eos === "number"
    ? [eos]
    : [];
  if (c.hidden_act != null && c.hidden_act !== "silu") {
    throw new HiraError(file, `hidden_act ${preview(c.hidden_act)} is not supported (silu)`);
  }
  if (c.mlp_bias === true) throw new HiraError(file, "mlp_bias is not supported");
  checkConfigSizes(c, file);
  return {
    architecture: arch || modelType,
    hiddenSize,
    intermediateSize: int("intermediate_size"),
    numLayers: int("num_hidden_layers"),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: num("rms_norm_eps", 1e-6),
    ropeTheta: rope.theta,
    ropeScaling,
    tieWordEmbeddings: c.tie_word_embeddings === true,
    biasProjections: arch === "Qwen2ForCausalLM" || modelType === "qwen2"
      ? ["q_proj", "k_proj", "v_proj"]
      : c.attention_bias === true
      ? ["q_proj", "k_proj", "v_proj", "o_proj"]
      : [],
    vocabSize: int("vocab_size"),
    bosTokenId: typeof c.bos_token_id === "number" ? c.bos_token_id : null,
    eosTokenIds,
    maxPositionEmbeddings: int("max_position_embeddings", 2048),
    torchDtype: readDtype(c, file),
    layout: "rope_parameters" in c || "dtype" in c ? "transformers5" : "transformers4",
    raw: c,
  };
}

/**
 * Upper bounds of config.json's sizes: several times the largest Llama-family model (Llama 3.1
 * 405B: 126 layers, hidden 16384, MLP 53248, 128 heads; vocabularies up to 256k; contexts up to
 * 10M tokens). Beyond them a config is a mistake or an attack: 1e6 layers overflowed arrays with
 * a RangeError and 1e12 ran V8 out of memory before any other check.
 */
export const CONFIG_SIZE_LIMITS: Readonly<Record<string, number>> = {
  num_hidden_layers: 1024,
  hidden_size: 65536,
  intermediate_size: 262144,
  num_attention_heads: 1024,
  num_key_value_heads: 1024,
  head_dim: 1024,
  vocab_size: 4194304,
  max_position_embeddings: 16777216,
};

/**
 * Refuses a config.json size (a field of {@linkcode CONFIG_SIZE_LIMITS}) above its limit, with
 * one line naming the field; runs before anything is sized from the config. Values that are not
 * positive integers are left to the parser's own check (and its message).
 */
export function checkConfigSizes(c: Record<string, unknown>, file: string): void {
  for (const [key, max] of Object.entries(CONFIG_SIZE_LIMITS)) {
    const v = c[key];
    if (typeof v === "number" && v > max) {
      throw new HiraError(file, `${key} is ${v}, more than the limit ${max}`);
    }
  }
}

/** [out, in] of a projection. */
export function projectionShape(cfg: LlamaConfig, p: Projection): [number, number] {
  const C = cfg.hiddenSize, F = cfg.intermediateSize;
  const q = cfg.numHeads * cfg.headDim, kv = cfg.numKvHeads * cfg.headDim;
  switch (p) {
    case "q_proj":
      return [q, C];
    case "k_proj":
    case "v_proj":
      return [kv, C];
    case "o_proj":
      return [C, q];
    case "gate_proj":
    case "up_proj":
      return [F, C];
    case "down_proj":
      return [C, F];
  }
}

/** The module path of a projection in layer `l` ("model.layers.3.self_attn.q_proj"). */
export function modulePath(l: number, p: Projection): string {
  const group = p === "gate_proj" || p === "up_proj" || p === "down_proj" ? "mlp" : "self_attn";
  return `model.layers.${l}.${group}.${p}`;
}

/** Parameter count of the base model (embeddings, layers, norms, untied head). */
export function baseParameterCount(cfg: LlamaConfig): number {
  let n = cfg.vocabSize * cfg.hiddenSize * (cfg.tieWordEmbeddings ? 1 : 2) + cfg.hiddenSize;
  for (const p of PROJECTIONS) {
    const [o, i] = projectionShape(cfg, p);
    n += cfg.numLayers * o * i;
  }
  n += cfg.numLayers * 2 * cfg.hiddenSize;
  for (const p of cfg.biasProjections) n += cfg.numLayers * projectionShape(cfg, p)[0];
  return n;
}

const LLAMA3_FIELDS = [
  "factor",
  "low_freq_factor",
  "high_freq_factor",
  "original_max_position_embeddings",
] as const;

/**
 * RoPE theta and scaling from either layout. transformers ≥ 5 writes `rope_parameters`
 * ({rope_type, rope_theta, ...the type's fields}); 4.x wrote top-level `rope_theta` and
 * `rope_scaling` ({rope_type or type, ...fields}, or null). Both may appear (a 5.x config
 * edited by hand, or one converted by a tool): then they must agree, and a contradiction is an
 * error rather than a silent choice, since either reading changes every logit.
 */
function readRope(
  c: Record<string, unknown>,
  file: string,
): { theta: number; scaling: RopeScaling | null } {
  const obj = (key: string): Record<string, unknown> | null => {
    const v = c[key];
    if (v == null) return null;
    if (typeof v !== "object" || Array.isArray(v)) {
      throw new HiraError(file, `${key} must be an object, got ${preview(v)}`);
    }
    return v as Record<string, unknown>;
  };
  const scalingOf = (rs: Record<string, unknown> | null, where: string): RopeScaling | null => {
    if (rs == null) return null;
    const type = rs.rope_type ?? rs.type ?? "default";
    if (type === "default") return null;
    if (type !== "llama3") {
      throw new HiraError(
        file,
        `${where} type ${preview(type)} is not supported (llama3 or default)`,
      );
    }
    for (const k of LLAMA3_FIELDS) {
      if (typeof rs[k] !== "number" || !(rs[k] as number > 0)) {
        throw new HiraError(file, `${where}.${k} is missing or not a positive number`);
      }
    }
    return {
      rope_type: "llama3",
      factor: rs.factor as number,
      low_freq_factor: rs.low_freq_factor as number,
      high_freq_factor: rs.high_freq_factor as number,
      original_max_position_embeddings: rs.original_max_position_embeddings as number,
    };
  };
  const theta = (v: unknown, where: string): number | null => {
    if (v == null) return null;
    if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
      throw new HiraError(file, `${where} must be a positive number, got ${preview(v)}`);
    }
    return v;
  };
  const rp = obj("rope_parameters");
  const old = {
    theta: theta(c.rope_theta, "rope_theta"),
    scaling: scalingOf(obj("rope_scaling"), "rope_scaling"),
  };
  if (rp == null) return { theta: old.theta ?? 10000, scaling: old.scaling };
  const now = {
    theta: theta(rp.rope_theta, "rope_parameters.rope_theta"),
    scaling: scalingOf(rp, "rope_parameters"),
  };
  if (old.theta !== null && now.theta !== null && old.theta !== now.theta) {
    throw new HiraError(
      file,
      `rope_parameters.rope_theta (${now.theta}) contradicts rope_theta (${old.theta})`,
    );
  }
  if (c.rope_scaling != null && JSON.stringify(old.scaling) !== JSON.stringify(now.scaling)) {
    throw new HiraError(file, "rope_parameters contradicts rope_scaling");
  }
  return { theta: now.theta ?? old.theta ?? 10000, scaling: now.scaling };
}

const DTYPES = ["float32", "float16", "bfloat16"];

/**
 * The checkpoint's dtype: `dtype` (transformers ≥ 5) or `torch_dtype` (4.x); both agreeing is
 * fine, both disagreeing is an error. Missing means float32, as transformers assumes.
 */
function readDtype(c: Record<string, unknown>, file: string): string {
  const read = (key: string): string | null => {
    const v = c[key];
    if (v == null) return null;
    if (typeof v !== "string" || !DTYPES.includes(v)) {
      throw new HiraError(file, `${key} ${preview(v)} is not supported (${DTYPES.join(", ")})`);
    }
    return v;
  };
  const now = read("dtype"), old = read("torch_dtype");
  if (now !== null && old !== null && now !== old) {
    throw new HiraError(file, `dtype "${now}" contradicts torch_dtype "${old}"`);
  }
  return now ?? old ?? "float32";
}
