/**
 * SiLU and SwiGLU activations with their backwards (kernels/activation.wgsl). All elementwise
 * over flat f32 tensors of any shape.
 * @module
 */
import type { Gpu, KernelFile, Tensor } from "../engine/gpu.ts";
import { cdiv, grid, kernelFile, uniformStruct } from "../engine/gpu.ts";

/** The elements of every entry. */
const PARAMS = uniformStruct("Params", ["n"]);
/** kernels/activation.wgsl and its uniform struct (docs/kernels.md). */
export const ACTIVATION_KERNELS: KernelFile = kernelFile("activation.wgsl", [PARAMS]);
const spec = ACTIVATION_KERNELS.spec;

function sameSize(op: string, ...ts: Tensor[]): void {
  for (const t of ts) {
    if (t.size !== ts[0].size) throw new Error(`${op}: sizes ${ts.map((u) => `[${u.shape}]`)}`);
  }
}

/** y = x · sigmoid(x). `out` (same size, not aliasing x) receives y if given. */
export async function silu(gpu: Gpu, x: Tensor, out?: Tensor): Promise<Tensor> {
  const y = out ?? gpu.empty(x.shape);
  sameSize("silu", x, y);
  const k = await gpu.kernel(spec("silu", ["uniform", "read", "rw"]));
  gpu.dispatch(k, [PARAMS.pack({ n: x.size }), x, y], grid(cdiv(x.size, 256)));
  return y;
}

/** dx = dy · silu'(x) with silu'(x) = s·(1 + x·(1 − s)), s = sigmoid(x). */
export async function siluBackward(
  gpu: Gpu,
  x: Tensor,
  dy: Tensor,
  out?: Tensor,
): Promise<Tensor> {
  const dx = out ?? gpu.empty(x.shape);
  sameSize("siluBackward", x, dy, dx);
  const k = await gpu.kernel(spec("silu_backward", ["uniform", "read", "read", "rw"]));
  gpu.dispatch(k, [PARAMS.pack({ n: x.size }), x, dy, dx], grid(cdiv(x.size, 256)));
  return dx;
}

/** Llama's gated MLP activation h = silu(gate) · up, for gate and up [N, F]. */
export async function swiglu(gpu: Gpu, gate: Tensor, up: Tensor, out?: Tensor): Promise<Tensor> {
  const h = out ?? gpu.empty(gate.shape);
  sameSize("swiglu", gate, up, h);
  const k = await gpu.kernel(spec("swiglu", ["uniform", "read", "read", "rw"]));
  gpu.dispatch(k, [PARAMS.pack({ n: gate.size }), gate, up, h], grid(cdiv(gate.size, 256)));
  return h;
}

/** Gradients of {@linkcode swiglu}. */
export interface SwigluGrads {
  /** dh · up · silu'(gate). */
  dGate: Tensor;
  /** dh · silu(gate). */
  dUp: Tensor;
}

/**
 * Backward of {@linkcode swiglu} for the upstream gradient dh. `opts.dGate` / `opts.dUp` receive
 * the gradients if given (they must not alias the inputs).
 */
export async function swigluBackward(
  gpu: Gpu,
  gate: Tensor,
  up: Tensor,
  dh: Tensor,
  opts: { dGate?: Tensor; dUp?: Tensor } = {},
): Promise<SwigluGrads> {
  const dGate = opts.dGate ?? gpu.empty(gate.shape);
  const dUp = opts.dUp ?? gpu.empty(gate.shape);
  sameSize("swigluBackward", gate, up, dh, dGate, dUp);
  const k = await gpu.kernel(
    spec("swiglu_backward", ["uniform", "read", "read", "read", "rw", "rw"]),
  );
  gpu.dispatch(
    k,
    [PARAMS.pack({ n: gate.size }), gate, up, dh, dGate, dUp],
    grid(cdiv(gate.size, 256)),
  );
  return { dGate, dUp };
}
