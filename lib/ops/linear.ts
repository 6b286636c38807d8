/**
 * Linear-layer helpers (kernels/linear.wgsl): bias add, bias gradient, column-block copy.
 * @module
 */
import { cdiv, type Gpu, grid, type KernelSpec, type Tensor } from "../engine/gpu.ts";

function spec(entry: string): KernelSpec {
  return { file: "linear.wgsl", entry, bindings: ["uniform", "read", "rw"] };
}

/** y[r, :] += bias, in place. */
export async function addBias(gpu: Gpu, y: Tensor, bias: Tensor): Promise<Tensor> {
  const cols = bias.size;
  if (y.size % cols !== 0) {
    throw new Error(`addBias: ${y.shape} rows are not a multiple of ${cols}`);
  }
  const k = await gpu.kernel(spec("add_bias"));
  gpu.dispatch(k, [[y.size / cols, cols, 0, 0], bias, y], grid(cdiv(y.size, 256)));
  return y;
}

/** db += column sums of dy [rows, cols]. */
export async function biasGrad(gpu: Gpu, dy: Tensor, db: Tensor): Promise<void> {
  const cols = db.size;
  if (dy.size % cols !== 0) {
    throw new Error(`biasGrad: ${dy.shape} does not match bias ${db.shape}`);
  }
  const k = await gpu.kernel(spec("bias_grad"));
  gpu.dispatch(k, [[dy.size / cols, cols, 0, 0], dy, db], [cdiv(cols, 64)]);
}

/** A new [rows, count] tensor holding columns [offset, offset + count) of src [rows, cols]. */
export async function copyColumns(
  gpu: Gpu,
  src: Tensor,
  offset: number,
  count: number,
): Promise<Tensor> {
  const [rows, cols] = src.shape;
  if (offset + count > cols) throw new Error(`copyColumns: ${offset}+${count} > ${cols} columns`);
  const k = await gpu.kernel(spec("copy_columns"));
  const out = gpu.empty([rows, count]);
  gpu.dispatch(k, [[rows, count, cols, offset], src, out], grid(cdiv(rows * count, 256)));
  return out;
}
