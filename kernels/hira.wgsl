// HiRA layer, unfused path: the effective weight W0 ⊙ (1 + B·A) is materialised, then an
// ordinary matmul uses it (exactly the reference's order of operations). A fused kernel is tested
// against these, so they stay simple: one invocation per output element, the rank sum in order.
//
// Shapes: W0, W_eff, G [out, in]; A [r, in]; B [out, r]; all row-major f32.

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return gid.x + gid.y * nwg.x * 256u;
}

struct WeightParams {
  out_features: u32,
  in_features: u32,
  rank: u32,
}

@group(0) @binding(0) var<uniform> wp: WeightParams;
@group(0) @binding(1) var<storage, read> w_src: array<f32>;
@group(0) @binding(2) var<storage, read> lora_a: array<f32>;
@group(0) @binding(3) var<storage, read> lora_b: array<f32>;
@group(0) @binding(4) var<storage, read_write> w_dst: array<f32>;

// 1 + Σ_r B[o, r]·A[r, i]
fn hadamard_factor(o: u32, i: u32) -> f32 {
  var s = 0.0;
  for (var k = 0u; k < wp.rank; k++) {
    s += lora_b[o * wp.rank + k] * lora_a[k * wp.in_features + i];
  }
  return 1.0 + s;
}

// w_dst = W0 ⊙ (1 + B·A), with w_src = W0.
@compute @workgroup_size(256)
fn effective_weight(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let idx = flat(gid, nwg);
  if (idx >= wp.out_features * wp.in_features) { return; }
  let o = idx / wp.in_features;
  let i = idx % wp.in_features;
  w_dst[idx] = w_src[idx] * hadamard_factor(o, i);
}

// w_dst = W' ⊘ (1 + B·A), with w_src = W' (a merged weight). Ill-conditioned where 1 + B·A ≈ 0.
@compute @workgroup_size(256)
fn unmerge(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let idx = flat(gid, nwg);
  if (idx >= wp.out_features * wp.in_features) { return; }
  let o = idx / wp.in_features;
  let i = idx % wp.in_features;
  w_dst[idx] = w_src[idx] / hadamard_factor(o, i);
}

struct ElemParams {
  n: u32,
  cols: u32,
}

@group(0) @binding(0) var<uniform> ep: ElemParams;
@group(0) @binding(1) var<storage, read> e_src: array<f32>;
@group(0) @binding(2) var<storage, read_write> e_dst: array<f32>;

// e_dst ⊙= e_src in place (M = W0 ⊙ G overwrites G, which is not needed afterwards).
@compute @workgroup_size(256)
fn mul_inplace(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat(gid, nwg);
  if (i >= ep.n) { return; }
  e_dst[i] = e_dst[i] * e_src[i];
}
