/**
 * Merging adapters into the base weights, without file I/O (the rank analysis of the updates is
 * lib/report/rank.ts).
 *
 * - Merge (the paper's §4.4; the reference raises NotImplementedError): HiRA W' = W0 ⊙ (1 + B·A),
 *   LoRA W' = W0 + (α/r)·B·A, computed on the GPU by the adapters' own `merged()` kernels, so a
 *   merged model computes exactly the effective weights the adapter path builds.
 * - In-place merge for inference ({@linkcode mergeAdaptersInPlace}): decoding then pays no
 *   per-step adapter cost (the reference rebuilt W0 ⊙ (1 + B·A) on every forward call), and
 *   `restore()` puts W0 and the adapters back exactly (W0 is kept, never recomputed).
 * - Unmerge ({@linkcode unmergeWeight}): W' ⊘ (1 + B·A) for HiRA (ill-conditioned where
 *   1 + B·A ≈ 0), W' − (α/r)·B·A for LoRA; for tests and for users holding only merged weights.
 * @module
 */
import type { Gpu, Tensor } from "../engine/gpu.ts";
import { type LinearAdapter, LoraAdapter, unmergeHira } from "./adapters.ts";
import { type ConfigLayout, type Projection, PROJECTIONS } from "./config.ts";
import type { LlamaModel } from "./model.ts";
import { readBaseWeights } from "./load.ts";
import { matmul } from "../ops/matmul.ts";
import type { TensorToWrite } from "./safetensors.ts";

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
  layout: ConfigLayout,
): string {
  // One dtype key, the one of the layout the base was read in: a transformers-5 config that
  // also said torch_dtype would contradict itself after a dtype change.
  const out: Record<string, unknown> = { ...raw };
  delete out.dtype;
  delete out.torch_dtype;
  out[layout === "transformers5" ? "dtype" : "torch_dtype"] = torchDtypeName(dtype);
  return JSON.stringify(out, null, 2) + "\n";
}
