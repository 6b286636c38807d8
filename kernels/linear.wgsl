// Helpers around linear layers: bias add and its gradient, and copying a column block out of a
// wide row-major matrix (the output head is split into vocabulary shards above the binding
// limit, and each shard's backward needs its block of the logits gradient contiguous).

//! struct Params

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

//! include "common/flat.wgsl"

// dst[r, c] += src[c] (dst is [rows, cols], src the bias [cols]).
@compute @workgroup_size(256)
fn add_bias(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.rows * p.cols) { return; }
  dst[i] = dst[i] + src[i % p.cols];
}

// dst[c] += sum_r src[r, c]: one invocation per column, rows summed in order (deterministic).
@compute @workgroup_size(64)
fn bias_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= p.cols) { return; }
  var s = 0.0;
  for (var r = 0u; r < p.rows; r++) {
    s += src[r * p.cols + c];
  }
  dst[c] = dst[c] + s;
}

// dst[r, c] = src[r, colOffset + c] for a [rows, srcCols] source and a [rows, cols] block.
@compute @workgroup_size(256)
fn copy_columns(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.rows * p.cols) { return; }
  let r = i / p.cols;
  let c = i % p.cols;
  dst[i] = src[r * p.srcCols + p.colOffset + c];
}
