// Embedding lookup and its deterministic backward. The table may be split into row shards (each
// under the storage-binding size limit): a dispatch handles the shard holding rows
// [row_start, row_start + row_count). One invocation per output element; the flat index folds
// the grid's y dimension. Each entry point declares its own bindings, numbered from 0.
//
// Define WTYPE: the element type of the forward's table ("f32", or "f16" for frozen tables stored
// in half precision; rows are widened to f32). The backward's tables are always f32.

//! include "common/flat.wgsl"

// ---- forward: out[t, :] = table[ids[t], :] ----

// Params: n tokens of c columns, the shard's rows [row_start, row_start + row_count), and
// zero_others: write zeros for ids outside this shard (set on the first shard's dispatch), so ids
// outside the whole table give zero rows and no separate clear is needed.
//! struct Params

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> f_table: array<{{WTYPE}}>;
@group(0) @binding(2) var<storage, read> f_ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> f_out: array<f32>;

@compute @workgroup_size(256)
fn embedding_forward(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat(gid, nwg);
  if (i >= p.n * p.c) { return; }
  let t = i / p.c;
  let col = i - t * p.c;
  // Negative i32 ids wrap to large u32 values and so land outside every shard.
  let local = f_ids[t] - p.row_start;
  if (f_ids[t] >= p.row_start && local < p.row_count) {
    f_out[i] = f32(f_table[local * p.c + col]);
  } else if (p.zero_others != 0u) {
    f_out[i] = 0.0;
  }
}

// ---- backward: dTable[id, :] += Σ dOut[t, :] over the tokens t with ids[t] = id ----
// The host-built plan (one u32 buffer) is a CSR list: unique ids at [0, u), offsets at
// [offsets_at, offsets_at + u + 1), token positions at [positions_at, ...), grouped by id in
// ascending token order. One invocation per (unique id, column) sums its tokens' rows in that
// fixed order, so the result is deterministic and needs no float atomics.

//! struct BackParams

@group(0) @binding(0) var<uniform> q: BackParams;
@group(0) @binding(1) var<storage, read> b_dout: array<f32>;
@group(0) @binding(2) var<storage, read> b_plan: array<u32>;
@group(0) @binding(3) var<storage, read_write> b_dtable: array<f32>;

@compute @workgroup_size(256)
fn embedding_backward(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat(gid, nwg);
  if (i >= q.u * q.c) { return; }
  let k = i / q.c;
  let col = i - k * q.c;
  let id = b_plan[k];
  if (id < q.row_start || id - q.row_start >= q.row_count) { return; }
  let first = b_plan[q.offsets_at + k];
  let last = b_plan[q.offsets_at + k + 1u];
  var acc = 0.0;
  for (var j = first; j < last; j++) {
    acc += b_dout[b_plan[q.positions_at + j] * q.c + col];
  }
  let o = (id - q.row_start) * q.c + col;
  b_dtable[o] = b_dtable[o] + acc;
}

// ---- widening copy: out[i] = f32(src[i]) (an f16 table or weight as an f32 tensor) ----

//! struct CastParams

@group(0) @binding(0) var<uniform> cp: CastParams;
@group(0) @binding(1) var<storage, read> c_src: array<{{WTYPE}}>;
@group(0) @binding(2) var<storage, read_write> c_out: array<f32>;

@compute @workgroup_size(256)
fn to_f32(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat(gid, nwg);
  if (i >= cp.n) { return; }
  c_out[i] = f32(c_src[i]);
}
