// Cross-entropy over rows of logits [N, V] with an ignore mask (target < 0), fused with its
// backward, and a sum reduction for the per-token losses.
//
// One workgroup per row ({{WG}}, a power of two: 256 on GPUs, one SIMD batch on CPU
// rasterizers). Pass 1 reads the row once keeping a running (max, Σexp) per invocation
// (online softmax), then the pairs are merged across the workgroup; pass 2 reads the row again
// to write dlogits = scale · (softmax − onehot). So the logits are read twice at most, and
// ignored rows are skipped (their loss and gradient are zero). Logits must be finite.
// Rows beyond 65535 fold into the grid's y dimension. Each entry point declares its own
// bindings, numbered from 0.

//! struct Params

@group(0) @binding(0) var<uniform> p: Params;

// The exact bits of -FLT_MAX: Chromium's Tint rejects the decimal -3.40282347e38 (it lies past
// the largest f32), which naga rounds silently.
const MIN_F32: f32 = -0x1.fffffep+127f;

var<workgroup> red_m: array<f32, {{WG}}>;
var<workgroup> red_s: array<f32, {{WG}}>;
var<workgroup> row_target: i32;

// Adds logit v to a running (max, Σ exp(· − max)). The max rarely changes after the first
// elements, so the branch stays coherent and costs one exp per element.
fn online_add(ms: vec2<f32>, v: f32) -> vec2<f32> {
  if (v > ms.x) {
    return vec2<f32>(v, ms.y * exp(ms.x - v) + 1.0);
  }
  return vec2<f32>(ms.x, ms.y + exp(v - ms.x));
}

fn merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  let m = max(a.x, b.x);
  return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

// Merges the invocations' (max, Σexp) pairs; every invocation gets the row's pair. Must be
// called in uniform control flow.
fn row_reduce(ms: vec2<f32>, lid: u32) -> vec2<f32> {
  red_m[lid] = ms.x;
  red_s[lid] = ms.y;
  workgroupBarrier();
  for (var s = {{WG}}u / 2u; s > 0u; s = s / 2u) {
    if (lid < s) {
      let r = merge(vec2<f32>(red_m[lid], red_s[lid]), vec2<f32>(red_m[lid + s], red_s[lid + s]));
      red_m[lid] = r.x;
      red_s[lid] = r.y;
    }
    workgroupBarrier();
  }
  return vec2<f32>(red_m[0], red_s[0]);
}

fn row_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.x + wid.y * nwg.x;
}

// ---- forward only: loss[row] = logsumexp(logits[row]) − logits[row, target] ----

@group(0) @binding(1) var<storage, read> f_logits: array<f32>;
@group(0) @binding(2) var<storage, read> f_targets: array<i32>;
@group(0) @binding(3) var<storage, read_write> f_loss: array<f32>;

@compute @workgroup_size({{WG}})
fn ce_forward(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = row_index(wid, nwg);
  if (row >= p.n) { return; }
  if (lid == 0u) { row_target = f_targets[row]; }
  let t = workgroupUniformLoad(&row_target);
  if (t < 0 || u32(t) >= p.v) {
    if (lid == 0u) { f_loss[row] = 0.0; }
    return;
  }
  let base = row * p.v;
  var ms = vec2<f32>(MIN_F32, 0.0);
  for (var j = lid; j < p.v; j += {{WG}}u) {
    ms = online_add(ms, f_logits[base + j]);
  }
  let tot = row_reduce(ms, lid);
  if (lid == 0u) {
    f_loss[row] = log(tot.y) + tot.x - f_logits[base + u32(t)];
  }
}

// ---- fused forward + backward into a separate dlogits ----

@group(0) @binding(1) var<storage, read> g_logits: array<f32>;
@group(0) @binding(2) var<storage, read> g_targets: array<i32>;
@group(0) @binding(3) var<storage, read_write> g_loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> g_dlogits: array<f32>;

@compute @workgroup_size({{WG}})
fn ce_fused(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = row_index(wid, nwg);
  if (row >= p.n) { return; }
  if (lid == 0u) { row_target = g_targets[row]; }
  let t = workgroupUniformLoad(&row_target);
  let base = row * p.v;
  if (t < 0 || u32(t) >= p.v) {
    for (var j = lid; j < p.v; j += {{WG}}u) {
      g_dlogits[base + j] = 0.0;
    }
    if (lid == 0u) { g_loss[row] = 0.0; }
    return;
  }
  var ms = vec2<f32>(MIN_F32, 0.0);
  for (var j = lid; j < p.v; j += {{WG}}u) {
    ms = online_add(ms, g_logits[base + j]);
  }
  let tot = row_reduce(ms, lid);
  let inv = 1.0 / tot.y;
  for (var j = lid; j < p.v; j += {{WG}}u) {
    let prob = exp(g_logits[base + j] - tot.x) * inv;
    g_dlogits[base + j] = p.scale * (prob - select(0.0, 1.0, j == u32(t)));
  }
  if (lid == 0u) {
    g_loss[row] = log(tot.y) + tot.x - g_logits[base + u32(t)];
  }
}

// ---- fused forward + backward overwriting the logits with dlogits (saves an [N, V] buffer) ----
// Each invocation rewrites only the elements it read itself, after the row reduction, and the
// target logit is read before the reduction's barriers.

@group(0) @binding(1) var<storage, read_write> i_logits: array<f32>;
@group(0) @binding(2) var<storage, read> i_targets: array<i32>;
@group(0) @binding(3) var<storage, read_write> i_loss: array<f32>;

@compute @workgroup_size({{WG}})
fn ce_fused_inplace(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = row_index(wid, nwg);
  if (row >= p.n) { return; }
  if (lid == 0u) { row_target = i_targets[row]; }
  let t = workgroupUniformLoad(&row_target);
  let base = row * p.v;
  if (t < 0 || u32(t) >= p.v) {
    for (var j = lid; j < p.v; j += {{WG}}u) {
      i_logits[base + j] = 0.0;
    }
    if (lid == 0u) { i_loss[row] = 0.0; }
    return;
  }
  var ms = vec2<f32>(MIN_F32, 0.0);
  for (var j = lid; j < p.v; j += {{WG}}u) {
    ms = online_add(ms, i_logits[base + j]);
  }
  var target_logit = 0.0;
  if (lid == 0u) { target_logit = i_logits[base + u32(t)]; }
  let tot = row_reduce(ms, lid);
  let inv = 1.0 / tot.y;
  for (var j = lid; j < p.v; j += {{WG}}u) {
    let prob = exp(i_logits[base + j] - tot.x) * inv;
    i_logits[base + j] = p.scale * (prob - select(0.0, 1.0, j == u32(t)));
  }
  if (lid == 0u) {
    i_loss[row] = log(tot.y) + tot.x - target_logit;
  }
}

// ---- sum of a vector (the per-token losses) into out[0], in one workgroup ----

@group(0) @binding(1) var<storage, read> s_values: array<f32>;
@group(0) @binding(2) var<storage, read_write> s_out: array<f32>;

@compute @workgroup_size({{WG}})
fn loss_sum(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var j = lid; j < p.n; j += {{WG}}u) {
    acc += s_values[j];
  }
  red_s[lid] = acc;
  workgroupBarrier();
  for (var s = {{WG}}u / 2u; s > 0u; s = s / 2u) {
    if (lid < s) {
      red_s[lid] = red_s[lid] + red_s[lid + s];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    s_out[0] = red_s[0];
  }
}
