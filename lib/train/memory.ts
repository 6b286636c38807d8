/**
 * Memory accounting for a training run, from config.json alone (no weights, no dataset, no GPU):
 * what {@linkcode LlamaModel.trainStep} and the trainer allocate, item by item, and a check
 * against the adapter's limits (one buffer, one storage binding) and an optional budget.
 *
 * The estimate follows the engine's allocation pattern: frozen weights (f16 or f32, embeddings in
 * row shards), adapter parameters and gradients, AdamW's two moments, base gradients for full
 * fine-tuning, the activations a step keeps (the same count {@linkcode LlamaModel} tracks as
 * `peakActivationBytes`, with and without gradient checkpointing) and the transient scratch at the
 * peak (backward temporaries of the MLP block, the head's logits chunk, adapter temporaries).
 * Every tensor is rounded to the buffer pool's bucket size ({@linkcode BufferPool.bucket}), since
 * that is what the GPU really holds; `poolRounding: false` gives raw tensor bytes.
 * @module
 */
import { hiraGradScratchBytes } from "../ops/hira.ts";
import { BufferPool, DTYPE_BYTES, splitRows } from "../engine/gpu.ts";
import {
  baseParameterCount,
  type LlamaConfig,
  modulePath,
  type Projection,
  PROJECTIONS,
  projectionShape,
} from "../model/config.ts";
import { matchTargets, parseTargetFlag, type TargetModules } from "../model/peft.ts";
import { frozenWeightDtype, type WeightDtype } from "../model/load.ts";
import { isDatasetName, maxNewTokens, maxTokenLength, type TrainExample } from "./data.ts";
import { templateTypeFor } from "./prompt.ts";

/** The WebGPU specification's default limits (what a device gets without asking for more). */
export const WEBGPU_DEFAULT_LIMITS: MemoryLimits = {
  maxBufferSize: 268435456,
  maxStorageBufferBindingSize: 134217728,
};

/** The adapter limits the check uses. */
export interface MemoryLimits {
  /** Largest single GPU buffer, bytes. */
  maxBufferSize: number;
  /** Largest storage binding (one tensor as a kernel sees it), bytes. */
  maxStorageBufferBindingSize: number;
}

/** What a run looks like, for {@linkcode estimateMemory}. */
export interface MemoryOptions {
  /** "hira", "lora" or "full" (full fine-tuning: every base weight trains, f32). */
  peftType: "hira" | "lora" | "full";
  /** Adapter rank. */
  r: number;
  /** --target_modules entries (module suffixes, e.g. "q_proj", or "all-linear"). */
  targets: Readonly<TargetModules>;
  /** Sequences per micro-batch. */
  batch: number;
  /** Tokens per sequence (the longest a batch can hold; packed batches have no padding). */
  seqLen: number;
  /** Tokens per micro-batch that carry a loss target (default: every token). */
  counted?: number;
  /** Gradient checkpointing (keep only each layer's input). */
  gradCkpt: boolean;
  /** Storage of the frozen projection and embedding matrices. */
  weightDtype: WeightDtype;
  /**
   * HiRA kernels: "materialized" writes W0 ⊙ (1 + B·A) [out, in] (f32) as a temporary (what
   * CPU rasterizers' backward runs), "fused" never does (real GPUs). Default "materialized".
   */
  hiraKernel?: "materialized" | "fused";
  /** Fused HiRA kernel family, which sizes the gradient partials (default "tiled"). */
  hiraVariant?: "cpu" | "tiled";
  /** LoRA dropout probability (a dropout copy of the input is a temporary). */
  loraDropout?: number;
  /** Round each tensor to the buffer pool's bucket (default true). */
  poolRounding?: boolean;
  /** Binding limit used to shard the embedding as lib/model/load.ts does (default WebGPU's). */
  maxStorageBufferBindingSize?: number;
}

/** One line of the estimate. */
export interface MemoryItem {
  /** Short name ("weights", "activations", ...). */
  name: string;
  /** Bytes allocated. */
  bytes: number;
  /** What is in it. */
  detail: string;
  /** Whether it counts toward the total (the activation line not chosen does not). */
  counted: boolean;
}

/** One tensor that must fit a single buffer and binding. */
export interface TensorSize {
  name: string;
  shape: number[];
  dtype: "f32" | "f16";
  bytes: number;
  /** What would make it smaller, for the refusal message. */
  hint?: string;
}

/** The result of {@linkcode estimateMemory}. */
export interface MemoryEstimate {
  items: MemoryItem[];
  /** Sum of the counted items. */
  total: number;
  /** Base model parameters. */
  baseParams: number;
  /** Trainable parameters. */
  trainableParams: number;
  /** Tokens per micro-batch the estimate assumes. */
  tokens: number;
  /** Activation bytes kept at the peak (as LlamaModel.peakActivationBytes, unrounded). */
  activationBytes: { withCkpt: number; withoutCkpt: number };
  /** The largest tensors of each kind, for the per-tensor limit check. */
  largest: TensorSize[];
}

const MiB = 2 ** 20;

/**
 * Itemised bytes a training run with `o` allocates for model `cfg`. Pure: reads nothing.
 * Decoding after training (KV caches) is not included.
 */
export function estimateMemory(cfg: LlamaConfig, o: MemoryOptions): MemoryEstimate {
  const round = o.poolRounding === false ? (b: number) => b : (b: number) => BufferPool.bucket(b);
  const f32 = (n: number) => round(Math.max(4, n * 4));
  const C = cfg.hiddenSize, F = cfg.intermediateSize, L = cfg.numLayers, V = cfg.vocabSize;
  const H = cfg.numHeads, Hkv = cfg.numKvHeads, D = cfg.headDim;
  const N = o.batch * o.seqLen;
  const nc = Math.min(N, o.counted ?? N);
  const full = o.peftType === "full";
  const peft = full ? null : o.peftType === "hira" ? "HIRA" as const : "LORA" as const;
  const adapted = full ? [] : matchTargets(cfg, o.targets);
  const adaptedPaths = new Set(adapted.map((m) => m.path));
  const dtypeOf = (path: string | null): "f32" | "f16" =>
    frozenWeightDtype(o.weightDtype, full, peft, path !== null && adaptedPaths.has(path));
  const bytesOf = (n: number, dt: "f32" | "f16") => round(Math.max(4, n * DTYPE_BYTES[dt]));
  const largest: TensorSize[] = [];
  const note = (name: string, shape: number[], dtype: "f32" | "f16", hint?: string) => {
    const bytes = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
    largest.push({ name, shape, dtype, bytes, hint });
  };

  // Weights, as lib/model/load.ts lays them out.
  const embDt = dtypeOf(null);
  const shards = splitRows(
    V,
    C,
    DTYPE_BYTES[embDt],
    o.maxStorageBufferBindingSize ?? WEBGPU_DEFAULT_LIMITS.maxStorageBufferBindingSize,
  );
  const tables = cfg.tieWordEmbeddings ? 1 : 2;
  const embBytes = tables * shards.reduce((s, rows) => s + bytesOf(rows * C, embDt), 0);
  note(`embedding shard`, [shards[0], C], embDt);
  let projBytes = 0, projF16 = 0, projF32 = 0, small = 0;
  let bigProj: { p: Projection; shape: [number, number]; dt: "f32" | "f16" } | null = null;
  for (let l = 0; l < L; l++) {
    small += 2 * f32(C);
    for (const p of PROJECTIONS) {
      const shape = projectionShape(cfg, p);
      const dt = dtypeOf(modulePath(l, p));
      const b = bytesOf(shape[0] * shape[1], dt);
      projBytes += b;
      if (dt === "f16") projF16++;
      else projF32++;
      const sz = shape[0] * shape[1] * DTYPE_BYTES[dt];
      if (!bigProj || sz > bigProj.shape[0] * bigProj.shape[1] * DTYPE_BYTES[bigProj.dt]) {
        bigProj = { p, shape, dt };
      }
      if (cfg.biasProjections.includes(p)) small += f32(shape[0]);
    }
  }
  if (bigProj) {
    note(
      `${bigProj.p} weight`,
      bigProj.shape,
      bigProj.dt,
      bigProj.dt === "f16"
        ? undefined
        : full
        ? "full fine-tuning keeps f32 weights: use an adapter"
        : o.weightDtype === "f16"
        ? `an adapted W0 stays f32 until the ${o.peftType} kernels read f16 W0`
        : "try --weight_dtype=f16",
    );
  }
  small += f32(C) + f32(D / 2);
  const weights = embBytes + projBytes + small;
  const wDetail = [
    `embedding${tables === 2 ? " + lm_head" : ""} ${embDt} (${shards.length} shard${
      shards.length > 1 ? "s" : ""
    }${tables === 2 ? " each" : ""})`,
    projF16 ? `${projF16} projections f16` : "",
    projF32 ? `${projF32} projections f32` : "",
    "norms f32",
  ].filter(Boolean).join(", ");

  // Adapters: A [r, in] and B [out, r] with one gradient each.
  let adapterBytes = 0, adapterParams = 0;
  for (const m of adapted) {
    const [outF, inF] = projectionShape(cfg, m.proj);
    adapterBytes += 2 * (f32(o.r * inF) + f32(outF * o.r));
    adapterParams += o.r * (inF + outF);
  }
  const baseParams = baseParameterCount(cfg);
  const trainableParams = full ? baseParams : adapterParams;
  // AdamW: exp_avg and exp_avg_sq per trainable tensor, plus the norm/clip scalars.
  let optBytes = 2 * f32(1);
  let baseGradBytes = 0;
  if (full) {
    // Full fine-tuning keeps f32 weights; gradients and both moments mirror every tensor.
    const perTensorF32 = weights;
    baseGradBytes = perTensorF32 - f32(D / 2);
    optBytes += 2 * baseGradBytes;
  } else optBytes += adapterBytes;

  // Activations kept for backward (LlamaModel.#track), raw and rounded.
  const act = (r: (n: number) => number) => {
    const xC = r(N * C), rstd = r(N), q = r(N * H * D), kv = r(N * Hkv * D), lse = r(N * H);
    const layer = 3 * xC + 2 * q + 2 * kv + 2 * rstd + lse + 3 * r(N * F);
    return { withoutCkpt: (L + 2) * xC + L * layer, withCkpt: (L + 2) * xC + layer };
  };
  const rawAct = act((n) => n * 4);
  const actR = act(f32);
  const fewer = "lower --batch or the sequence length";
  note("activation [tokens, intermediate]", [N, F], "f32", fewer);
  note("activation [tokens, heads·head_dim]", [N, H * D], "f32", fewer);

  // Scratch alive at the peak. The pool reuses a free buffer only for a request of the same
  // bucket, so temporaries of different sizes add up: the MLP backward's three [N, F]
  // gradients, the head's logits chunk and its [counted, C] rows, and adapter temporaries.
  const fit = Math.floor(
    (o.maxStorageBufferBindingSize ?? WEBGPU_DEFAULT_LIMITS.maxStorageBufferBindingSize) / (V * 4),
  );
  const logitRows = Math.min(nc, Math.min(4096, Math.max(64, Math.floor(fit / 64) * 64)));
  note("logits chunk", [logitRows, V], "f32");
  const mlpTemps = 3 * f32(N * F);
  const headTemps = f32(logitRows * V) + 4 * f32(nc * C) + 2 * f32(nc) +
    (shards.length > 1 ? f32(logitRows * shards[0]) : 0);
  let adapterTemps = 0;
  if (peft === "HIRA" && adapted.length && o.hiraKernel !== "fused") {
    // The unfused HiRA path materialises W0 ⊙ (1 + B·A) (and dYᵀ·X in backward) in f32.
    const big = Math.max(...adapted.map((m) => {
      const [a, b] = projectionShape(cfg, m.proj);
      return a * b;
    }));
    adapterTemps = f32(big);
    const m = adapted.find((m) => {
      const [a, b] = projectionShape(cfg, m.proj);
      return a * b === big;
    })!;
    note(
      `HiRA effective weight (${m.proj})`,
      projectionShape(cfg, m.proj),
      "f32",
      "the unfused HiRA path materialises it",
    );
  } else if (peft === "HIRA" && adapted.length) {
    // The fused backward writes partial sums of dA and dB per tile instead.
    const sizes = adapted.map((m) => {
      const [outF, inF] = projectionShape(cfg, m.proj);
      return {
        proj: m.proj,
        bytes: hiraGradScratchBytes(o.hiraVariant ?? "tiled", outF, inF, o.r),
      };
    });
    const top = sizes.reduce((a, b) => (b.bytes > a.bytes ? b : a));
    adapterTemps = round(top.bytes);
    note(
      `HiRA gradient partials (${top.proj})`,
      [top.bytes / 4],
      "f32",
      "the fused HiRA backward's per-tile dA/dB partial sums",
    );
  } else if (peft === "LORA" && adapted.length) {
    const widest = Math.max(...adapted.map((m) => projectionShape(cfg, m.proj)[1]));
    adapterTemps = 2 * f32(N * o.r) + ((o.loraDropout ?? 0) > 0 ? f32(N * widest) : 0);
  }
  const ctx = 3 * round(N * 4) + round(4 * (o.batch + 1));
  const scratch = mlpTemps + headTemps + adapterTemps + ctx;

  const items: MemoryItem[] = [
    { name: "weights", bytes: weights, detail: wDetail, counted: true },
    {
      name: "adapters",
      bytes: adapterBytes,
      detail: full
        ? "none (full fine-tuning)"
        : `${adapted.length} modules, r=${o.r}: A, B and their gradients (f32)`,
      counted: true,
    },
    {
      name: "optimizer",
      bytes: optBytes,
      detail: "AdamW exp_avg and exp_avg_sq (f32)",
      counted: true,
    },
  ];
  if (full) {
    items.push({
      name: "base gradients",
      bytes: baseGradBytes,
      detail: "every base weight (f32)",
      counted: true,
    });
  }
  items.push(
    {
      name: "activations",
      bytes: actR.withoutCkpt,
      detail: `${N} tokens, kept for backward, gradient checkpointing off`,
      counted: !o.gradCkpt,
    },
    {
      name: "activations (ckpt)",
      bytes: actR.withCkpt,
      detail: "with --enable_grad_ckpt (layer inputs + one recomputed layer)",
      counted: o.gradCkpt,
    },
    {
      name: "scratch",
      bytes: scratch,
      detail: `backward temporaries, logits chunk [${logitRows}, ${V}]` +
        (adapterTemps ? `, ${peft === "HIRA" ? "HiRA" : "LoRA"} temporaries` : ""),
      counted: true,
    },
  );
  const total = items.reduce((s, it) => s + (it.counted ? it.bytes : 0), 0);
  return {
    items,
    total,
    baseParams,
    trainableParams,
    tokens: N,
    activationBytes: rawAct,
    largest,
  };
}

/** Bytes in binary units ("1.50 GiB", "12.0 MiB", "512 KiB"). */
export function formatBytes(b: number): string {
  if (b >= 2 ** 30) return `${(b / 2 ** 30).toFixed(2)} GiB`;
  if (b >= MiB) return `${(b / MiB).toFixed(1)} MiB`;
  if (b >= 1024) return `${(b / 1024).toFixed(0)} KiB`;
  return `${b} B`;
}

/**
 * Problems that would make the run fail, one line each (empty when it fits): a tensor over one
 * buffer or one storage binding, or a total over `budgetBytes`.
 */
export function checkMemory(
  est: MemoryEstimate,
  limits: MemoryLimits,
  budgetBytes?: number,
): string[] {
  const out: string[] = [];
  for (const t of est.largest) {
    const binding = Math.ceil(t.bytes / 16) * 16;
    const what = `${t.name} [${t.shape.join(", ")}] ${t.dtype} is ${formatBytes(t.bytes)}`;
    if (binding > limits.maxStorageBufferBindingSize) {
      out.push(
        `${what}, over this adapter's maxStorageBufferBindingSize of ${
          formatBytes(limits.maxStorageBufferBindingSize)
        }` + (t.hint ? ` (${t.hint})` : ""),
      );
    } else if (BufferPool.bucket(t.bytes) > limits.maxBufferSize) {
      out.push(
        `${what}, over this adapter's maxBufferSize of ${formatBytes(limits.maxBufferSize)}` +
          (t.hint ? ` (${t.hint})` : ""),
      );
    }
  }
  if (budgetBytes !== undefined && est.total > budgetBytes) {
    out.push(
      `the run needs about ${formatBytes(est.total)}, over --memory_limit=${
        formatBytes(budgetBytes)
      }`,
    );
  }
  return out;
}

/** A plain-text table of the estimate, with the parameter counts and the limit check. */
export function formatMemory(
  est: MemoryEstimate,
  opts: { limits?: MemoryLimits; limitsSource?: string; problems?: string[]; title?: string } = {},
): string {
  const rows = est.items.map((it) => [
    it.counted ? it.name : `(${it.name})`,
    formatBytes(it.bytes),
    it.detail,
  ]);
  rows.push(["total", formatBytes(est.total), `${est.total} bytes`]);
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.max(...rows.map((r) => r[1].length));
  const lines: string[] = [];
  if (opts.title) lines.push(opts.title);
  lines.push(
    `parameters: ${est.baseParams.toLocaleString("en-US")} base (${
      est.baseParams.toExponential(2).replace("e+", "e")
    }), ${
      est.trainableParams.toLocaleString("en-US")
    } trainable; ${est.tokens} tokens per micro-batch`,
  );
  for (const r of rows) lines.push(`  ${r[0].padEnd(w0)}  ${r[1].padStart(w1)}  ${r[2]}`);
  if (opts.limits) {
    lines.push(
      `limits (${opts.limitsSource ?? "adapter"}): maxBufferSize ${
        formatBytes(opts.limits.maxBufferSize)
      }, maxStorageBufferBindingSize ${formatBytes(opts.limits.maxStorageBufferBindingSize)}`,
    );
  }
  if (opts.problems) {
    if (opts.problems.length === 0) lines.push("fits: every tensor is within the limits");
    for (const p of opts.problems) lines.push(`does not fit: ${p}`);
  }
  return lines.join("\n");
}

/** The training flags (train.ts's names) that size a run. */
export interface RunShapeFlags {
  peft_type: "hira" | "lora" | "full";
  r_ab: number;
  target_modules: string;
  batch: number;
  seq_len: number;
  dataset: string;
  enable_grad_ckpt: boolean;
  lora_dropout: number;
}

/**
 * The estimate's inputs for a training run's flags. The sequence length comes from --seq_len,
 * else from `data` (the real examples, see {@linkcode dataShape}), else the longest sequence the
 * dataset's layout allows (context + target cut-offs), so a dry run needs no dataset.
 */
export function memoryOptionsOf(
  args: RunShapeFlags,
  weightDtype: WeightDtype,
  limits: MemoryLimits,
  data?: { seqLen: number; counted: number },
): MemoryOptions {
  let seqLen = args.seq_len, counted: number | undefined;
  if (!seqLen && data) {
    seqLen = data.seqLen;
    counted = data.counted;
  } else if (!seqLen) {
    const name = args.dataset;
    if (isDatasetName(name) && templateTypeFor(name) === 4) {
      seqLen = maxTokenLength(name) + maxNewTokens(name);
      counted = args.batch * maxNewTokens(name);
    } else seqLen = isDatasetName(name) ? maxTokenLength(name) : 256;
  }
  return {
    peftType: args.peft_type,
    r: args.r_ab,
    targets: parseTargetFlag(args.target_modules),
    batch: args.batch,
    seqLen,
    counted,
    gradCkpt: args.enable_grad_ckpt,
    weightDtype,
    loraDropout: args.lora_dropout,
    maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
  };
}

/**
 * The largest micro-batch the examples can form (the `batch` longest packed), as a mean length
 * per sequence, and its counted targets (the `batch` largest counts).
 */
export function dataShape(
  examples: readonly TrainExample[],
  batch: number,
): { seqLen: number; counted: number } {
  const top = (xs: number[]) => xs.sort((a, b) => b - a).slice(0, batch).reduce((a, b) => a + b, 0);
  const tokens = top(examples.map((e) => e.tokens.length));
  return {
    seqLen: Math.max(1, Math.ceil(tokens / batch)),
    counted: top(examples.map((e) => e.lossMask.reduce((a, b) => a + b, 0))),
  };
}

/**
 * The one-line refusal for a run that does not fit, or null when it fits: the first problem of
 * {@linkcode checkMemory}, how many more there are, and where to see the itemised estimate.
 */
export function refusal(problems: readonly string[]): string | null {
  if (problems.length === 0) return null;
  return `${problems[0]}${problems.length > 1 ? ` (and ${problems.length - 1} more)` : ""}; ` +
    "run with --dry_run for the itemised estimate";
}
