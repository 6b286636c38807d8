// SiLU and SwiGLU (Llama MLP: h = silu(gate) · up) with their backwards. One invocation per
// element; the flat index folds the grid's y dimension so tensors above 65535·256 elements still
// fit one dispatch. Each entry point declares its own bindings, numbered from 0.

//! struct Params

@group(0) @binding(0) var<uniform> p: Params;

//! include "common/flat.wgsl"

// WGSL lets implementations assume no overflow, so exp() only ever sees non-positive arguments.
fn sigmoid(x: f32) -> f32 {
  let e = exp(-abs(x));
  return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
}

// d silu / dx = s · (1 + x · (1 − s))
fn silu_grad(x: f32) -> f32 {
  let s = sigmoid(x);
  return s * (1.0 + x * (1.0 - s));
}

// ---- silu: y = x · sigmoid(x) ----

@group(0) @binding(1) var<storage, read> s_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> s_y: array<f32>;

@compute @workgroup_size(256)
fn silu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  let x = s_x[i];
  s_y[i] = x * sigmoid(x);
}

// ---- silu backward: dx = dy · silu'(x) ----

@group(0) @binding(1) var<storage, read> sb_x: array<f32>;
@group(0) @binding(2) var<storage, read> sb_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> sb_dx: array<f32>;

@compute @workgroup_size(256)
fn silu_backward(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  sb_dx[i] = sb_dy[i] * silu_grad(sb_x[i]);
}

// ---- swiglu: h = silu(gate) · up ----

@group(0) @binding(1) var<storage, read> g_gate: array<f32>;
@group(0) @binding(2) var<storage, read> g_up: array<f32>;
@group(0) @binding(3) var<storage, read_write> g_h: array<f32>;

@compute @workgroup_size(256)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  let g = g_gate[i];
  g_h[i] = g * sigmoid(g) * g_up[i];
}

// ---- swiglu backward: dGate = dh · up · silu'(gate), dUp = dh · silu(gate) ----

@group(0) @binding(1) var<storage, read> gb_gate: array<f32>;
@group(0) @binding(2) var<storage, read> gb_up: array<f32>;
@group(0) @binding(3) var<storage, read> gb_dh: array<f32>;
@group(0) @binding(4) var<storage, read_write> gb_dgate: array<f32>;
@group(0) @binding(5) var<storage, read_write> gb_dup: array<f32>;

@compute @workgroup_size(256)
fn swiglu_backward(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat(gid, nwg);
  if (i >= p.n) { return; }
  let g = gb_gate[i];
  let dh = gb_dh[i];
  let s = sigmoid(g);
  gb_dgate[i] = dh * gb_up[i] * s * (1.0 + g * (1.0 - s));
  gb_dup[i] = dh * g * s;
}
