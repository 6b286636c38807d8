// Optimizer kernels: AdamW (torch.optim.AdamW semantics) and the global gradient norm used for
// clipping. The clip scale stays on the GPU (a 1-element buffer written by `norm_finish` and read
// by `adamw`), so clipping needs no readback.
//
// Entry points declare disjoint variable sets; bindings are numbered per entry point.

//! include "common/flat.wgsl"

// ---------------------------------------------------------------------------------------------
// AdamW, one invocation per element. Host-side scalars (computed in f64, passed as f32):
//   decay     = 1 - lr·wd (1 for parameters without weight decay)
//   step_size = lr / (1 - beta1^t)
//   bc2_sqrt  = sqrt(1 - beta2^t)
// 1 - beta1 and 1 - beta2 also come from the host, as in torch, because computing them in f32
// (1 - 0.999f) is off by 1e-5 relative.

//! struct AdamParams

@group(0) @binding(0) var<uniform> ap: AdamParams;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(4) var<storage, read_write> exp_avg_sq: array<f32>;
@group(0) @binding(5) var<storage, read> clip_scale: array<f32>;

@compute @workgroup_size(256)
fn adamw(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= ap.n) { return; }
  let g = grad[i] * clip_scale[0];
  // torch updates exp_avg with lerp(grad, 1 - beta1), i.e. m + (1 - beta1)·(g - m).
  let m = exp_avg[i] + ap.one_minus_beta1 * (g - exp_avg[i]);
  let v = ap.beta2 * exp_avg_sq[i] + ap.one_minus_beta2 * g * g;
  exp_avg[i] = m;
  exp_avg_sq[i] = v;
  let denom = sqrt(v) / ap.bc2_sqrt + ap.eps;
  param[i] = param[i] * ap.decay - ap.step_size * (m / denom);
}

// ---------------------------------------------------------------------------------------------
// Sum of squares of one tensor: each workgroup reduces CHUNK = 256·ITEMS consecutive elements to
// one partial, written at partials[base + workgroup]. A fixed reduction tree keeps the result
// deterministic from run to run.

const ITEMS: u32 = 16u;

//! struct SumSqParams

@group(0) @binding(0) var<uniform> sp: SumSqParams;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;

var<workgroup> scratch: array<f32, 256>;

@compute @workgroup_size(256)
fn sumsq(
  @builtin(local_invocation_index) lid: u32,
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let wg = wid.x + wid.y * nwg.x;
  let start = wg * 256u * ITEMS;
  var acc = 0.0;
  for (var k = 0u; k < ITEMS; k++) {
    let i = start + k * 256u + lid;
    if (i < sp.n) {
      let x = values[i];
      acc += x * x;
    }
  }
  scratch[lid] = acc;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (lid < s) { scratch[lid] += scratch[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) { partials[sp.base + wg] = scratch[0]; }
}

// ---------------------------------------------------------------------------------------------
// Final reduction (one workgroup): norm = sqrt(Σ partials), clip scale as torch's
// clip_grad_norm_: min(1, max_norm / (norm + 1e-6)), or 1 when clipping is off.

//! struct FinishParams

@group(0) @binding(0) var<uniform> fp: FinishParams;
@group(0) @binding(1) var<storage, read> sums: array<f32>;
@group(0) @binding(2) var<storage, read_write> norm_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> scale_out: array<f32>;

var<workgroup> total: array<f32, 256>;

@compute @workgroup_size(256)
fn norm_finish(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var i = lid; i < fp.count; i += 256u) {
    acc += sums[i];
  }
  total[lid] = acc;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (lid < s) { total[lid] += total[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let norm = sqrt(total[0]);
    norm_out[0] = norm;
    var scale = 1.0;
    if (fp.clip != 0u) {
      let coef = fp.max_norm / (norm + 1e-6);
      // Written as a select rather than min() so a NaN norm yields a NaN scale, as in torch.
      scale = select(coef, 1.0, coef > 1.0);
    }
    scale_out[0] = scale;
  }
}
