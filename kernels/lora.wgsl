// LoRA dropout with a stateless mask: element i of the activation [rows, in] is kept iff
// hash(seed, mask_id, i) >= threshold (threshold = p·2^32), and kept values are scaled by
// 1/(1 - p) as nn.Dropout does. The mask is a pure function of (seed, mask_id, i), so the
// backward pass regenerates exactly the forward's mask without storing it.
// lib/ref/adapters.ts (loraDropoutMaskRef) mirrors the hash bit for bit; lib/ops/lora.ts is the
// host.

//! include "common/flat.wgsl"

// "lowbias32" integer finaliser (Chris Wellons): a full-avalanche u32 -> u32 mix.
fn mix32(v: u32) -> u32 {
  var x = v;
  x ^= x >> 16u;
  x *= 0x7feb352du;
  x ^= x >> 15u;
  x *= 0x846ca68bu;
  x ^= x >> 16u;
  return x;
}

//! struct DropoutParams

@group(0) @binding(0) var<uniform> dp: DropoutParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn keep_factor(i: u32) -> f32 {
  let h = mix32(i + mix32(dp.mask_id + mix32(dp.seed)));
  return select(0.0, dp.scale, h >= dp.threshold);
}

// dst = mask ⊙ src (forward: dropout(x)).
@compute @workgroup_size(256)
fn dropout(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= dp.n) { return; }
  dst[i] = src[i] * keep_factor(i);
}

// dst += mask ⊙ src (backward: the dropout branch's input gradient added into dX).
@compute @workgroup_size(256)
fn dropout_accumulate(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat(gid, nwg);
  if (i >= dp.n) { return; }
  dst[i] = dst[i] + src[i] * keep_factor(i);
}
