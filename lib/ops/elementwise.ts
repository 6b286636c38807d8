/**
 * Elementwise ops on GPU tensors (kernels/elementwise.wgsl).
 * @module
 */
import { cdiv, type Gpu, grid, type KernelSpec, type Tensor } from "../engine/gpu.ts";

const BINARY: readonly ("uniform" | "read" | "rw")[] = ["uniform", "read", "read", "rw"];

function spec(entry: string): KernelSpec {
  return { file: "elementwise.wgsl", entry, bindings: BINARY };
}

function sameShape(op: string, a: Tensor, b: Tensor): void {
  if (a.size !== b.size) throw new Error(`${op}: sizes ${a.shape} and ${b.shape} differ`);
}

/** out = a + alpha·b (alpha defaults to 1). `out` may alias `a`. */
export async function add(
  gpu: Gpu,
  a: Tensor,
  b: Tensor,
  alpha = 1,
  out?: Tensor,
): Promise<Tensor> {
  sameShape("add", a, b);
  const k = await gpu.kernel(spec("add"));
  const o = out ?? gpu.empty(a.shape);
  gpu.dispatch(k, [[a.size, { f32: alpha }], a, b, o], grid(cdiv(a.size, 256)));
  return o;
}

/** out = a ⊙ b. */
export async function mul(gpu: Gpu, a: Tensor, b: Tensor, out?: Tensor): Promise<Tensor> {
  sameShape("mul", a, b);
  const k = await gpu.kernel(spec("mul"));
  const o = out ?? gpu.empty(a.shape);
  gpu.dispatch(k, [[a.size, { f32: 0 }], a, b, o], grid(cdiv(a.size, 256)));
  return o;
}
