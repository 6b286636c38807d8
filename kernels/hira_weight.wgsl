// HiRA weight kernels, unfused: the reference's order of operations, kept as the path the fused
// kernels (hira_fused.wgsl, hira_grad.wgsl) are tested against. Shapes: W0 [out, in] (element
// type WTYPE, read as f32), A [r, in], B [out, r]; everything else row-major f32.
//   apply_factor turns B·A (a matmul-kernel product) into W0 ⊙ (1 + B·A) or PEFT's W0 ⊙ (B·A);
//   mul_inplace forms W0 ⊙ G; effective_weight, delta_weight and unmerge do the whole element
//   with the rank sum in order (one invocation per element, 2r loads each).
// Define: WTYPE (f32 or the half type). Uniform structs: lib/ops/hira.ts.

//! include "common/flat.wgsl"
//! struct WeightParams

@group(0) @binding(0) var<uniform> wp: WeightParams;
@group(0) @binding(1) var<storage, read> w_src: array<{{WTYPE}}>;
@group(0) @binding(2) var<storage, read> lora_a: array<f32>;
@group(0) @binding(3) var<storage, read> lora_b: array<f32>;
@group(0) @binding(4) var<storage, read_write> w_dst: array<f32>;

// Σ_r B[o, r]·A[r, i] for the element idx = o·in + i.
fn rank_product(idx: u32) -> f32 {
  let o = idx / wp.in_features;
  let i = idx % wp.in_features;
  var s = 0.0;
  for (var k = 0u; k < wp.rank; k++) {
    s += lora_b[o * wp.rank + k] * lora_a[k * wp.in_features + i];
  }
  return s;
}

// w_dst = W0 ⊙ (1 + B·A), with w_src = W0.
@compute @workgroup_size(256)
fn effective_weight(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let idx = flat(gid, nwg);
  if (idx >= wp.out_features * wp.in_features) { return; }
  w_dst[idx] = f32(w_src[idx]) * (1.0 + rank_product(idx));
}

// w_dst = W0 ⊙ (B·A): PEFT's stored delta weight (the bench's unfused PEFT-style path).
@compute @workgroup_size(256)
fn delta_weight(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let idx = flat(gid, nwg);
  if (idx >= wp.out_features * wp.in_features) { return; }
  w_dst[idx] = f32(w_src[idx]) * rank_product(idx);
}

// w_dst = W' ⊘ (1 + B·A), with w_src = W' (a merged weight). Ill-conditioned where 1 + B·A ≈ 0.
@compute @workgroup_size(256)
fn unmerge(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let idx = flat(gid, nwg);
  if (idx >= wp.out_features * wp.in_features) { return; }
  w_dst[idx] = f32(w_src[idx]) / (1.0 + rank_product(idx));
}

//! struct ElemParams

@group(0) @binding(0) var<uniform> ep: ElemParams;
@group(0) @binding(1) var<storage, read> e_src: array<{{WTYPE}}>;
@group(0) @binding(2) var<storage, read_write> e_dst: array<f32>;

// e_dst ⊙= e_src in place (M = W0 ⊙ G overwrites G, which is not needed afterwards).
@compute @workgroup_size(256)
fn mul_inplace(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat(gid, nwg);
  if (i >= ep.n) { return; }
  e_dst[i] = e_dst[i] * f32(e_src[i]);
}

//! struct FactorParams

@group(0) @binding(0) var<uniform> fp: FactorParams;
@group(0) @binding(1) var<storage, read> f_w0: array<{{WTYPE}}>;
@group(0) @binding(2) var<storage, read_write> f_dst: array<f32>;

// f_dst = W0 ⊙ (one + f_dst) in place, where f_dst holds B·A (from the matmul kernel): W_eff
// with one = 1, PEFT's delta weight with one = 0.
@compute @workgroup_size(256)
fn apply_factor(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat(gid, nwg);
  if (i >= fp.n) { return; }
  f_dst[i] = f32(f_w0[i]) * (fp.one + f_dst[i]);
}
