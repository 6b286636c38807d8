/**
 * Elementwise ops on GPU tensors (kernels/elementwise.wgsl).
 * @module
 */
import type { Gpu, KernelFile, Tensor } from "../engine/gpu.ts";
import { cdiv, grid, kernelFile, uniformStruct } from "../engine/gpu.ts";

/** The elements and add's factor on b (mul ignores it). */
const PARAMS = uniformStruct("Params", ["n", ["alpha", "f32"]]);
/** kernels/elementwise.wgsl and its uniform struct (docs/kernels.md). */
export const ELEMENTWISE_KERNELS: KernelFile = kernelFile("elementwise.wgsl", [PARAMS]);

function spec(entry: string) {
  return ELEMENTWISE_KERNELS.spec(entry, ["uniform", "read", "read", "rw"]);
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
  gpu.dispatch(k, [PARAMS.pack({ n: a.size, alpha }), a, b, o], grid(cdiv(a.size, 256)));
  return o;
}

/** out = a ⊙ b. */
export async function mul(gpu: Gpu, a: Tensor, b: Tensor, out?: Tensor): Promise<Tensor> {
  sameShape("mul", a, b);
  const k = await gpu.kernel(spec("mul"));
  const o = out ?? gpu.empty(a.shape);
  gpu.dispatch(k, [PARAMS.pack({ n: a.size, alpha: 0 }), a, b, o], grid(cdiv(a.size, 256)));
  return o;
}
