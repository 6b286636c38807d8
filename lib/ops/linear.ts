/**
 * Linear-layer helpers (kernels/linear.wgsl): bias add, bias gradient, column-block copy.
 * @module
 */
import type { Gpu, KernelFile, Tensor } from "../engine/gpu.ts";
import { cdiv, grid, kernelFile, uniformStruct } from "../engine/gpu.ts";

/** A [rows, cols] destination; copy_columns reads it from columns colOffset.. of [rows, srcCols]. */
const PARAMS = uniformStruct("Params", ["rows", "cols", "srcCols", "colOffset"]);
/** kernels/linear.wgsl and its uniform struct (docs/kernels.md). */
export const LINEAR_KERNELS: KernelFile = kernelFile("linear.wgsl", [PARAMS]);

function spec(entry: string) {
  return LINEAR_KERNELS.spec(entry, ["uniform", "read", "rw"]);
}

/** The bias kernels' parameters: rows × cols, no column block. */
function biasParams(rows: number, cols: number) {
  return PARAMS.pack({ rows, cols, srcCols: 0, colOffset: 0 });
}

/** y[r, :] += bias, in place. */
export async function addBias(gpu: Gpu, y: Tensor, bias: Tensor): Promise<Tensor> {
  const cols = bias.size;
  if (y.size % cols !== 0) {
    throw new Error(`addBias: ${y.shape} rows are not a multiple of ${cols}`);
  }
  const k = await gpu.kernel(spec("add_bias"));
  gpu.dispatch(k, [biasParams(y.size / cols, cols), bias, y], grid(cdiv(y.size, 256)));
  return y;
}

/** db += column sums of dy [rows, cols]. */
export async function biasGrad(gpu: Gpu, dy: Tensor, db: Tensor): Promise<void> {
  const cols = db.size;
  if (dy.size % cols !== 0) {
    throw new Error(`biasGrad: ${dy.shape} does not match bias ${db.shape}`);
  }
  const k = await gpu.kernel(spec("bias_grad"));
  gpu.dispatch(k, [biasParams(dy.size / cols, cols), dy, db], [cdiv(cols, 64)]);
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
  gpu.dispatch(
    k,
    [PARAMS.pack({ rows, cols: count, srcCols: cols, colOffset: offset }), src, out],
    grid(cdiv(rows * count, 256)),
  );
  return out;
}
