// Rotary position embedding, HF Llama convention (rotate_half): in each head of D values the
// pairs are (i, i + D/2), rotated by θ = pos · inv_freq[i]:
//   out[i]       = x[i] · cos θ − x[i + D/2] · sin θ
//   out[i + D/2] = x[i + D/2] · cos θ + x[i] · sin θ
// `sign` = −1 rotates by −θ, which is both the inverse and the backward.
//
// x is [N, H, D] with one position per token. One invocation per (token, head, pair); the flat
// index folds the grid's y dimension. Each entry point declares its own bindings, from 0.
//
// Precision: HF computes θ as an f32 product and then cos/sin of that f32 value. A compiler may
// fuse the product into a later subtraction (FMA), which would skip the rounding, so θ goes
// through an integer OR with a uniform zero to pin it to the rounded f32. The trig functions are
// our own: WGSL's sin/cos are only accurate on [−π, π] and θ reaches thousands of radians.

//! struct Params

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;

// π/2 = PIO2_1 + PIO2_2 + PIO2_3 + PIO2_4, the first three with 8 significant bits each so that
// j · PIO2_k is exact for |j| < 2^16 (|θ| up to about 1e5) (Cody-Waite reduction).
const PIO2_1: f32 = 1.5703125;
const PIO2_2: f32 = 4.825592041015625e-4;
const PIO2_3: f32 = 1.2665987014770508e-6;
const PIO2_4: f32 = 9.920935184482005e-10;
const TWO_OVER_PI: f32 = 0.6366197466850281;

// (sin θ, cos θ) to about 1 ulp: reduction to r ∈ [−π/4, π/4] plus the Cephes sinf/cosf
// minimax polynomials.
fn sin_cos(theta: f32) -> vec2<f32> {
  let j = round(theta * TWO_OVER_PI);
  var r = theta - j * PIO2_1;
  r = r - j * PIO2_2;
  r = r - j * PIO2_3;
  r = r - j * PIO2_4;
  let z = r * r;
  let s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
  let c = 1.0 - 0.5 * z +
    z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
  switch (i32(j) & 3) {
    case 0: { return vec2<f32>(s, c); }
    case 1: { return vec2<f32>(c, -s); }
    case 2: { return vec2<f32>(-s, -c); }
    default: { return vec2<f32>(-c, s); }
  }
}

struct Pair {
  // Index of the first element of the pair; the second is lo + half.
  lo: u32,
  cos_t: f32,
  sin_t: f32,
}

fn pair_of(i: u32) -> Pair {
  let k = i % p.half;
  let token_head = i / p.half;
  let token = token_head / p.heads;
  let theta = bitcast<f32>(bitcast<u32>(f32(positions[token]) * inv_freq[k]) | p.zero);
  let sc = sin_cos(theta);
  return Pair(token_head * 2u * p.half + k, sc.y, p.sign * sc.x);
}

//! include "common/flat.wgsl"

@group(0) @binding(3) var<storage, read> r_x: array<f32>;
@group(0) @binding(4) var<storage, read_write> r_out: array<f32>;

@compute @workgroup_size(256)
fn rope(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.total) { return; }
  let q = pair_of(i);
  let x1 = r_x[q.lo];
  let x2 = r_x[q.lo + p.half];
  r_out[q.lo] = x1 * q.cos_t - x2 * q.sin_t;
  r_out[q.lo + p.half] = x2 * q.cos_t + x1 * q.sin_t;
}

@group(0) @binding(3) var<storage, read_write> i_x: array<f32>;

@compute @workgroup_size(256)
fn rope_inplace(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat(gid, nwg);
  if (i >= p.total) { return; }
  let q = pair_of(i);
  let x1 = i_x[q.lo];
  let x2 = i_x[q.lo + p.half];
  i_x[q.lo] = x1 * q.cos_t - x2 * q.sin_t;
  i_x[q.lo + p.half] = x2 * q.cos_t + x1 * q.sin_t;
}
