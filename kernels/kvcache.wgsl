// KV-cache maintenance for incremental decoding. A cache is [S, TMAX, W] floats (W = Hkv*D):
// sequence s keeps the roped key (or value) of its position t in row s*TMAX + t. K and V move
// together in every dispatch because they always move together, which halves the dispatches.
// One invocation per element; the flat index folds the y dimension of the grid.

// ScatterParams: n source rows (new tokens) of w floats. GatherParams: nseq destination
// sequences of tmax rows of w floats in both caches, of which the leading tcopy rows (the longest
// valid prefix) are copied; the rest stay undefined.
//! struct ScatterParams
//! struct GatherParams

@group(0) @binding(0) var<uniform> ps: ScatterParams;
@group(0) @binding(0) var<uniform> pg: GatherParams;
// kv_scatter: new rows [n, w] and their destination rows [n].
@group(0) @binding(1) var<storage, read> src_k: array<f32>;
@group(0) @binding(2) var<storage, read> src_v: array<f32>;
@group(0) @binding(3) var<storage, read> rows: array<u32>;
// kv_gather: the parent sequence of each destination sequence [nseq].
@group(0) @binding(3) var<storage, read> parents: array<u32>;
@group(0) @binding(4) var<storage, read_write> dst_k: array<f32>;
@group(0) @binding(5) var<storage, read_write> dst_v: array<f32>;

//! include "common/flat.wgsl"

// dst[rows[r], :] = src[r, :] for the keys and the values.
@compute @workgroup_size(256)
fn kv_scatter(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= ps.n * ps.w) { return; }
  let r = i / ps.w;
  let j = i - r * ps.w;
  let o = rows[r] * ps.w + j;
  dst_k[o] = src_k[i];
  dst_v[o] = src_v[i];
}

// dst[s, t, :] = src[parents[s], t, :] for t < tcopy: reorders (and duplicates) beams.
@compute @workgroup_size(256)
fn kv_gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  let per = pg.tcopy * pg.w;
  if (i >= pg.nseq * per) { return; }
  let s = i / per;
  let rem = i - s * per;
  let block = pg.tmax * pg.w;
  let src_i = parents[s] * block + rem;
  let dst_i = s * block + rem;
  dst_k[dst_i] = src_k[src_i];
  dst_v[dst_i] = src_v[src_i];
}
