/**
 * Rotary position embedding in the HF Llama convention (rotate_half: the pairs are (i, i + D/2),
 * not interleaved), with the llama3 frequency scaling (kernels/rope.wgsl).
 * @module
 */
import type { Gpu, KernelFile, Tensor } from "../engine/gpu.ts";
import { cdiv, grid, kernelFile, uniformStruct } from "../engine/gpu.ts";

/**
 * `total` (token, head, pair) triples of `heads` heads with `half` pairs each; sign −1 rotates
 * by −θ; zero is 0, the uniform that pins θ to its rounded f32 (kernels/rope.wgsl).
 */
const PARAMS = uniformStruct("Params", ["total", "heads", "half", ["sign", "f32"], "zero"]);
/** kernels/rope.wgsl and its uniform struct (docs/kernels.md). */
export const ROPE_KERNELS: KernelFile = kernelFile("rope.wgsl", [PARAMS]);

/** A config's `rope_scaling` block as HF writes it (only "llama3" and "default" are supported). */
export interface RopeScalingJson {
  /** "llama3" or "default" (newer configs). */
  rope_type?: string;
  /** Older configs' name for `rope_type`. */
  type?: string;
  factor?: number;
  low_freq_factor?: number;
  high_freq_factor?: number;
  original_max_position_embeddings?: number;
}

/** What {@linkcode ropeFrequencies} needs from a model config. */
export interface RopeConfig {
  /** Head dimension D (even). */
  headDim: number;
  /** `rope_theta`, the frequency base. */
  ropeTheta: number;
  /** `rope_scaling`, or null/absent for plain RoPE. */
  ropeScaling?: RopeScalingJson | null;
}

/**
 * inv_freq [D/2] as transformers computes it (`_compute_default_rope_parameters`, then
 * `_compute_llama3_parameters` for llama3 scaling), evaluated in f64 on the host and rounded to
 * f32 once. Throws for scaling types other than llama3.
 */
export function ropeFrequencies(config: RopeConfig): Float32Array {
  const dim = config.headDim;
  if (!Number.isInteger(dim) || dim < 2 || dim % 2 !== 0) {
    throw new Error(`ropeFrequencies: head dim ${dim} must be a positive even integer`);
  }
  const half = dim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / config.ropeTheta ** ((2 * i) / dim);
  const s = config.ropeScaling;
  const kind = s ? (s.rope_type ?? s.type ?? "default") : "default";
  if (kind === "llama3") {
    const need = (k: keyof RopeScalingJson): number => {
      const v = s![k];
      if (typeof v !== "number") throw new Error(`ropeFrequencies: llama3 scaling lacks ${k}`);
      return v;
    };
    const factor = need("factor");
    const low = need("low_freq_factor");
    const high = need("high_freq_factor");
    const oldLen = need("original_max_position_embeddings");
    const lowWavelen = oldLen / low;
    const highWavelen = oldLen / high;
    for (let i = 0; i < half; i++) {
      const wavelen = (2 * Math.PI) / inv[i];
      // Same order of operations as transformers: scale the long wavelengths, then blend the
      // medium ones between scaled and unscaled.
      const scaled = wavelen > lowWavelen ? inv[i] / factor : inv[i];
      const smooth = (oldLen / wavelen - low) / (high - low);
      const medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
      inv[i] = medium ? (1 - smooth) * scaled / factor + smooth * scaled : scaled;
    }
  } else if (kind !== "default") {
    throw new Error(`ropeFrequencies: rope scaling type "${kind}" is not supported`);
  }
  return Float32Array.from(inv);
}

/**
 * Token positions for a packed batch: 0, 1, … restarting at each sequence start given by the
 * prefix sums `cuSeqlens` [B+1] (cuSeqlens[0] = 0).
 */
export function positionsFor(cuSeqlens: Uint32Array): Uint32Array {
  const b = cuSeqlens.length - 1;
  if (b < 0 || cuSeqlens[0] !== 0) throw new Error("positionsFor: cuSeqlens must start at 0");
  const out = new Uint32Array(cuSeqlens[b]);
  for (let s = 0; s < b; s++) {
    if (cuSeqlens[s + 1] < cuSeqlens[s]) throw new Error("positionsFor: cuSeqlens decreases");
    for (let t = cuSeqlens[s]; t < cuSeqlens[s + 1]; t++) out[t] = t - cuSeqlens[s];
  }
  return out;
}

/** Options for {@linkcode rope}. */
export interface RopeOptions {
  /** Rotate by −θ (the inverse rotation, which is also the backward). */
  inverse?: boolean;
  /** Where the result goes; may be `x` itself for an in-place rotation. A new tensor otherwise. */
  out?: Tensor;
}

/**
 * Applies RoPE to x [N, H, D] (or [N, H·D]) with positions u32 [N] and inv_freq [D/2] (from
 * {@linkcode ropeFrequencies}). θ = pos · inv_freq is an f32 product as in HF, with cos/sin
 * accurate to about 1 ulp for |θ| up to ~1e5.
 */
export async function rope(
  gpu: Gpu,
  x: Tensor,
  positions: Tensor,
  invFreq: Tensor,
  opts: RopeOptions = {},
): Promise<Tensor> {
  const half = invFreq.size;
  const n = positions.size;
  if (n === 0 || x.size % (n * 2 * half) !== 0) {
    throw new Error(`rope: x ${x.shape} is not [${n}, H, ${2 * half}]`);
  }
  const heads = x.size / (n * 2 * half);
  const out = opts.out ?? gpu.empty(x.shape);
  if (out.size !== x.size) throw new Error(`rope: out ${out.shape} vs x ${x.shape}`);
  const inPlace = out.buffer === x.buffer && out.byteOffset === x.byteOffset;
  const total = n * heads * half;
  const params = PARAMS.pack({ total, heads, half, sign: opts.inverse ? -1 : 1, zero: 0 });
  const wg = grid(cdiv(total, 256));
  if (inPlace) {
    const k = await gpu.kernel(
      ROPE_KERNELS.spec("rope_inplace", ["uniform", "read", "read", "rw"]),
    );
    gpu.dispatch(k, [params, positions, invFreq, x], wg);
  } else {
    const k = await gpu.kernel(
      ROPE_KERNELS.spec("rope", ["uniform", "read", "read", "read", "rw"]),
    );
    gpu.dispatch(k, [params, positions, invFreq, x, out], wg);
  }
  return out;
}

/**
 * Backward of {@linkcode rope}: RoPE is a rotation, so dx is dy rotated by −θ.
 * `opts.out` may be dy itself.
 */
export function ropeBackward(
  gpu: Gpu,
  dy: Tensor,
  positions: Tensor,
  invFreq: Tensor,
  opts: { out?: Tensor } = {},
): Promise<Tensor> {
  return rope(gpu, dy, positions, invFreq, { inverse: true, out: opts.out });
}
