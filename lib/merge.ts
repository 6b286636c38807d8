/**
 * Merging adapters into the base weights and analysing their updates, without file I/O.
 *
 * - Merge (the paper's §4.4; the reference raises NotImplementedError): HiRA W' = W0 ⊙ (1 + B·A),
 *   LoRA W' = W0 + (α/r)·B·A, computed on the GPU by the adapters' own `merged()` kernels, so a
 *   merged model computes exactly the effective weights the adapter path builds.
 * - In-place merge for inference ({@linkcode mergeAdaptersInPlace}): decoding then pays no
 *   per-step adapter cost (the reference rebuilt W0 ⊙ (1 + B·A) on every forward call), and
 *   `restore()` puts W0 and the adapters back exactly (W0 is kept, never recomputed).
 * - Unmerge ({@linkcode unmergeWeight}): W' ⊘ (1 + B·A) for HiRA (ill-conditioned where
 *   1 + B·A ≈ 0), W' − (α/r)·B·A for LoRA; for tests and for users holding only merged weights.
 * - Rank analysis of ΔW per module (paper Fig. 1/4/7/8): numerical rank, effective rank and the
 *   count of singular values above a threshold, as a Markdown table and an SVG chart.
 * @module
 */
import type { Gpu, Tensor } from "./gpu.ts";
import { type LinearAdapter, LoraAdapter, unmergeHira } from "./adapters.ts";
import { type ConfigLayout, modulePath, type Projection, PROJECTIONS } from "./config.ts";
import type { LlamaModel } from "./model.ts";
import { readBaseWeights } from "./load.ts";
import { matmul } from "./ops/matmul.ts";
import type { TensorToWrite } from "./safetensors.ts";
import { HiraError } from "./errors.ts";
import { deltaWeight, rankStats, singularValues } from "./rank.ts";
import { barChart } from "./svg.ts";

/** A model whose adapters were merged in place; `restore()` undoes it exactly. */
export interface MergeHandle {
  /** Number of modules merged. */
  readonly merged: number;
  /** Puts W0 and the adapters back and releases the merged weights. Idempotent. */
  restore(): void;
}

/** The layer and projection of a module path ("model.layers.3.self_attn.q_proj"). */
export function parseModulePath(path: string): { layer: number; proj: Projection } {
  const m = /^model\.layers\.(\d+)\.(?:self_attn|mlp)\.([a-z_]+)$/.exec(path);
  if (!m || !(PROJECTIONS as readonly string[]).includes(m[2])) {
    throw new Error(`not a projection module path: ${path}`);
  }
  return { layer: Number(m[1]), proj: m[2] as Projection };
}

/**
 * Replaces every adapted projection's weight by its merged weight and detaches the adapters,
 * so the model decodes as a plain (merged) model. The original W0 tensors and adapters are kept
 * for `restore()`; in between, training the model is not allowed.
 */
export async function mergeAdaptersInPlace(model: LlamaModel): Promise<MergeHandle> {
  const saved: { path: string; layer: number; proj: Projection; w0: Tensor; merged: Tensor }[] = [];
  const adapters = new Map(model.adapters);
  for (const [path, ad] of adapters) {
    const { layer, proj } = parseModulePath(path);
    const lw = model.weights.layers[layer];
    const w0 = lw.proj[proj];
    const merged = await ad.merged(w0);
    saved.push({ path, layer, proj, w0, merged });
  }
  // Swap only after every merge succeeded, so a failure leaves the model untouched.
  for (const s of saved) model.weights.layers[s.layer].proj[s.proj] = s.merged;
  model.adapters.clear();
  let restored = false;
  return {
    merged: saved.length,
    restore() {
      if (restored) return;
      restored = true;
      for (const s of saved) {
        model.weights.layers[s.layer].proj[s.proj] = s.w0;
        s.merged.release();
      }
      for (const [p, ad] of adapters) model.adapters.set(p, ad);
    },
  };
}

/**
 * Every base tensor by its Hugging Face name with the adapters merged in (f32, host), for an
 * export. The model itself is left as it was.
 */
export async function mergedWeights(
  model: LlamaModel,
): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
  const h = await mergeAdaptersInPlace(model);
  try {
    return await readBaseWeights(model);
  } finally {
    h.restore();
  }
}

function adapterHalves(ad: LinearAdapter): { a: Tensor; b: Tensor } {
  const ps = ad.params();
  const a = ps.find((p) => /_A(\.weight)?$/.test(p.suffix));
  const b = ps.find((p) => /_B(\.weight)?$/.test(p.suffix));
  if (!a || !b) throw new Error("adapter without A/B parameters");
  return { a: a.param, b: b.param };
}

/**
 * Recovers W0 from a merged weight: HiRA W' ⊘ (1 + B·A) (ill-conditioned where 1 + B·A ≈ 0, and
 * W0 is lost where it is exactly 0), LoRA W' − (α/r)·B·A. Returns a new tensor.
 */
export async function unmergeWeight(
  gpu: Gpu,
  ad: LinearAdapter,
  merged: Tensor,
): Promise<Tensor> {
  const { a, b } = adapterHalves(ad);
  if (ad.peftType === "HIRA") return await unmergeHira(gpu, merged, a, b);
  const scale = ad instanceof LoraAdapter ? ad.scale : 1;
  const w = gpu.empty(merged.shape);
  gpu.copy(merged, w);
  await matmul(gpu, b, a, { out: w, accumulate: true, alpha: -scale });
  return w;
}

/** Storage dtypes of a merged export. */
export type ExportDtype = "f32" | "f16" | "bf16";

/**
 * The dtype a merged model is written in: `override` when given, else the base config's
 * torch_dtype (bfloat16 → bf16, float16 → f16, anything else f32).
 */
export function exportDtype(torchDtype: string, override?: ExportDtype | null): ExportDtype {
  if (override) return override;
  if (torchDtype === "bfloat16") return "bf16";
  if (torchDtype === "float16") return "f16";
  return "f32";
}

/** config.json's torch_dtype for an export dtype. */
export function torchDtypeName(d: ExportDtype): string {
  return d === "bf16" ? "bfloat16" : d === "f16" ? "float16" : "float32";
}

/** Weights as safetensors tensors in the export dtype (rounded to nearest even on encoding). */
export function exportTensors(
  weights: Map<string, { shape: number[]; data: Float32Array }>,
  dtype: ExportDtype,
): TensorToWrite[] {
  const st = dtype === "bf16" ? "BF16" : dtype === "f16" ? "F16" : "F32";
  return [...weights].map(([name, t]) => ({ name, dtype: st, shape: t.shape, data: t.data }));
}

/**
 * The merged model's config.json text: the base's fields with the dtype key of its layout
 * (`dtype` for transformers 5, `torch_dtype` for 4.x) set to the export's.
 */
export function exportConfigJson(
  raw: Record<string, unknown>,
  dtype: ExportDtype,
  layout: ConfigLayout = (("dtype" in raw) || ("rope_parameters" in raw))
    ? "transformers5"
    : "transformers4",
): string {
  // One dtype key, the one of the layout the base was read in: a transformers-5 config that
  // also said torch_dtype would contradict itself after a dtype change.
  const out: Record<string, unknown> = { ...raw };
  delete out.dtype;
  delete out.torch_dtype;
  out[layout === "transformers5" ? "dtype" : "torch_dtype"] = torchDtypeName(dtype);
  return JSON.stringify(out, null, 2) + "\n";
}

// ---------------------------------------------------------------------------------------------
// Rank analysis

/** One adapted module's tensors on the host. */
export interface AdapterModule {
  /** Module path ("model.layers.0.self_attn.q_proj"). */
  path: string;
  layer: number;
  proj: Projection;
  outFeatures: number;
  inFeatures: number;
  r: number;
  /** A [r, in]. */
  a: Float32Array;
  /** B [out, r]. */
  b: Float32Array;
  /** W0 [out, in]; needed for HiRA only. */
  w0: Float32Array | null;
}

/** Rank statistics of one module's ΔW. */
export interface ModuleRank {
  path: string;
  layer: number;
  proj: Projection;
  /** [out, in]. */
  shape: [number, number];
  r: number;
  /** Numerical rank (numpy matrix_rank tolerance for f32 data). */
  rank: number;
  /** exp(entropy of σ/Σσ) (Roy & Vetterli; paper App. C). */
  effectiveRank: number;
  /** σ > threshold (paper Fig. 4). */
  countAbove: number;
  /** ‖ΔW‖_F² (paper Fig. 5). */
  sumSquares: number;
  /** Largest singular value. */
  sigmaMax: number;
}

/** One adapter's rank report. */
export interface RankReport {
  /** Display name (e.g. "HiRA" or the folder name). */
  label: string;
  peftType: "HIRA" | "LORA";
  threshold: number;
  modules: ModuleRank[];
}

/**
 * Rank statistics of ΔW for every module: HiRA W0 ⊙ (B·A) (rank up to rank(W0)·r), LoRA
 * (α/r)·B·A (rank ≤ r), computed in f64 on the host.
 */
export function adapterRanks(
  label: string,
  peftType: "HIRA" | "LORA",
  modules: readonly AdapterModule[],
  opts: {
    threshold?: number;
    /** LoRA's factor on B·A: one for all, or per module path (rank/alpha patterns, rsLoRA). */
    loraScale?: number | ((path: string) => number);
  } = {},
): RankReport {
  const threshold = opts.threshold ?? 0.005;
  const out: ModuleRank[] = modules.map((m) => {
    if (peftType === "HIRA" && m.w0 === null) {
      throw new HiraError(m.path, "HiRA's ΔW = W0 ⊙ (B·A) needs the base weight W0");
    }
    const dw = deltaWeight(
      peftType,
      m.w0,
      m.a,
      m.b,
      { inFeatures: m.inFeatures, outFeatures: m.outFeatures, r: m.r },
      typeof opts.loraScale === "function" ? opts.loraScale(m.path) : opts.loraScale ?? 1,
    );
    const sv = singularValues(dw, m.outFeatures, m.inFeatures);
    const st = rankStats(sv, { threshold, shape: [m.outFeatures, m.inFeatures], topK: 1 });
    return {
      path: m.path,
      layer: m.layer,
      proj: m.proj,
      shape: [m.outFeatures, m.inFeatures],
      r: m.r,
      rank: st.rank,
      effectiveRank: st.effectiveRank,
      countAbove: st.countAbove,
      sumSquares: st.sumSquares,
      sigmaMax: st.top[0] ?? 0,
    };
  });
  return { label, peftType, threshold, modules: out };
}

/** The module order of a table: by layer, then projection order. */
function moduleKeys(reports: readonly RankReport[]): { layer: number; proj: Projection }[] {
  const keys = new Map<string, { layer: number; proj: Projection }>();
  for (const r of reports) {
    for (const m of r.modules) keys.set(modulePath(m.layer, m.proj), m);
  }
  return [...keys.values()].sort((a, b) =>
    a.layer - b.layer || PROJECTIONS.indexOf(a.proj) - PROJECTIONS.indexOf(b.proj)
  );
}

/**
 * Rank tables as Markdown: one row per (layer, module) with each adapter's rank, effective rank
 * and count of σ above the threshold side by side, then the per-projection means.
 */
export function rankMarkdown(reports: readonly RankReport[]): string {
  if (reports.length === 0) return "";
  const thr = reports[0].threshold;
  const head = ["layer", "module", "shape"];
  for (const r of reports) {
    head.push(
      `${r.label} r`,
      `${r.label} rank`,
      `${r.label} eff. rank`,
      `${r.label} σ>${thr}`,
      `${r.label} ‖ΔW‖²`,
    );
  }
  const lines = [
    `## Rank of ΔW per module (${reports.map((r) => `${r.label}: ${r.peftType}`).join(", ")})`,
    "",
    `| ${head.join(" | ")} |`,
    `|${head.map((_, i) => (i < 3 ? "---" : "---:")).join("|")}|`,
  ];
  const cells = (m: ModuleRank | undefined) =>
    m
      ? [
        String(m.r),
        String(m.rank),
        m.effectiveRank.toFixed(1),
        String(m.countAbove),
        m.sumSquares.toExponential(3),
      ]
      : ["–", "–", "–", "–", "–"];
  for (const k of moduleKeys(reports)) {
    const ms = reports.map((r) => r.modules.find((m) => m.layer === k.layer && m.proj === k.proj));
    const shape = ms.find((m) => m)!.shape;
    lines.push(
      `| ${k.layer} | ${k.proj} | ${shape[0]}×${shape[1]} | ${ms.flatMap(cells).join(" | ")} |`,
    );
  }
  lines.push("", "Mean over layers per module:", "");
  const head2 = ["module"];
  for (const r of reports) head2.push(`${r.label} rank`, `${r.label} eff. rank`);
  lines.push(
    `| ${head2.join(" | ")} |`,
    `|${head2.map((_, i) => (i ? "---:" : "---")).join("|")}|`,
  );
  for (const p of projectionsOf(reports)) {
    const row = [p as string];
    for (const r of reports) {
      const ms = r.modules.filter((m) => m.proj === p);
      row.push(
        ms.length ? mean(ms.map((m) => m.rank)).toFixed(1) : "–",
        ms.length ? mean(ms.map((m) => m.effectiveRank)).toFixed(1) : "–",
      );
    }
    lines.push(`| ${row.join(" | ")} |`);
  }
  return lines.join("\n") + "\n";
}

function mean(xs: readonly number[]): number {
  return xs.reduce((s, x) => s + x, 0) / xs.length;
}

function projectionsOf(reports: readonly RankReport[]): Projection[] {
  return PROJECTIONS.filter((p) => reports.some((r) => r.modules.some((m) => m.proj === p)));
}

/**
 * An SVG bar chart of the mean effective rank per module type (over layers), one series per
 * adapter (HiRA vs LoRA side by side when two are given).
 */
export function rankChart(reports: readonly RankReport[]): string {
  const projs = projectionsOf(reports);
  return barChart({
    title: "Effective rank of ΔW per module (mean over layers)",
    categories: projs,
    yLabel: "effective rank",
    series: reports.map((r) => ({
      name: `${r.label} (${r.peftType}, r=${r.modules[0]?.r ?? "?"})`,
      values: projs.map((p) => {
        const ms = r.modules.filter((m) => m.proj === p);
        return ms.length ? mean(ms.map((m) => m.effectiveRank)) : NaN;
      }),
    })),
  });
}
