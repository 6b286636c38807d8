// RMSNorm (Llama): y = x · rstd · w with rstd = 1 / sqrt(mean(x²) + eps), over rows of [N, C].
//
// Row kernels run one workgroup per row. {{WG}} (a power of two) is the workgroup size: 256 on
// GPUs; on CPU rasterizers a workgroup of one SIMD batch makes the barriers nearly free while the
// strided loop still reads contiguous memory. Rows beyond 65535 fold into the grid's y dimension.
// Each entry point declares its own bindings, numbered from 0.

// RowParams: n rows of c, eps, and accumulate (dx kernel: add into dx instead of overwriting
// it, for residual-stream gradients).
//! struct RowParams

@group(0) @binding(0) var<uniform> p: RowParams;

var<workgroup> red: array<f32, {{WG}}>;

// Sums `v` over the workgroup; every invocation gets the total. Must be called in uniform control
// flow. The trailing barrier lets the caller reuse `red` right after.
fn workgroup_sum(v: f32, lid: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = {{WG}}u / 2u; s > 0u; s = s / 2u) {
    if (lid < s) {
      red[lid] = red[lid] + red[lid + s];
    }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}

// ---- forward ----

@group(0) @binding(1) var<storage, read> f_x: array<f32>;
@group(0) @binding(2) var<storage, read> f_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_y: array<f32>;
@group(0) @binding(4) var<storage, read_write> f_rstd: array<f32>;

@compute @workgroup_size({{WG}})
fn rmsnorm_forward(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.n) { return; }
  let base = row * p.c;
  var acc = 0.0;
  for (var j = lid; j < p.c; j += {{WG}}u) {
    let v = f_x[base + j];
    acc += v * v;
  }
  let r = inverseSqrt(workgroup_sum(acc, lid) / f32(p.c) + p.eps);
  for (var j = lid; j < p.c; j += {{WG}}u) {
    f_y[base + j] = f_x[base + j] * r * f_w[j];
  }
  if (lid == 0u) {
    f_rstd[row] = r;
  }
}

// ---- backward: input gradient ----
// dx = rstd · (w ⊙ dy) − x · rstd³ · Σ_j(w_j dy_j x_j) / C

@group(0) @binding(1) var<storage, read> b_x: array<f32>;
@group(0) @binding(2) var<storage, read> b_w: array<f32>;
@group(0) @binding(3) var<storage, read> b_rstd: array<f32>;
@group(0) @binding(4) var<storage, read> b_dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> b_dx: array<f32>;

@compute @workgroup_size({{WG}})
fn rmsnorm_backward_dx(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.n) { return; }
  let base = row * p.c;
  let r = b_rstd[row];
  var acc = 0.0;
  for (var j = lid; j < p.c; j += {{WG}}u) {
    acc += b_w[j] * b_dy[base + j] * b_x[base + j];
  }
  let k = workgroup_sum(acc, lid) * r * r * r / f32(p.c);
  for (var j = lid; j < p.c; j += {{WG}}u) {
    var v = r * b_w[j] * b_dy[base + j] - b_x[base + j] * k;
    if (p.accumulate != 0u) {
      v += b_dx[base + j];
    }
    b_dx[base + j] = v;
  }
}

// ---- backward: weight gradient, dw_j += Σ_n dy_nj · x_nj · rstd_n ----
// A column reduction over rows done in two passes without float atomics (so it is
// deterministic): pass 1 sums each chunk of `rows_per_chunk` rows per column, one invocation per
// (column, chunk); pass 2 adds the chunk sums into dw in chunk order. With a single chunk pass 1
// adds straight into dw.

// ColParams: n rows of c in chunks of rows_per_chunk, and accumulate (pass 1: add into `out`,
// dw, instead of overwriting it).
//! struct ColParams

@group(0) @binding(0) var<uniform> q: ColParams;
@group(0) @binding(1) var<storage, read> w_x: array<f32>;
@group(0) @binding(2) var<storage, read> w_rstd: array<f32>;
@group(0) @binding(3) var<storage, read> w_dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> w_out: array<f32>;

@compute @workgroup_size(64)
fn rmsnorm_dw_partial(@builtin(global_invocation_id) gid: vec3<u32>) {
  let col = gid.x;
  let chunk = gid.y;
  if (col >= q.c || chunk >= q.chunks) { return; }
  let r0 = chunk * q.rows_per_chunk;
  let r1 = min(q.n, r0 + q.rows_per_chunk);
  var acc = 0.0;
  for (var r = r0; r < r1; r++) {
    acc += w_dy[r * q.c + col] * w_x[r * q.c + col] * w_rstd[r];
  }
  let o = chunk * q.c + col;
  if (q.accumulate != 0u) {
    acc += w_out[o];
  }
  w_out[o] = acc;
}

@group(0) @binding(1) var<storage, read> s_partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> s_dw: array<f32>;

@compute @workgroup_size(64)
fn rmsnorm_dw_reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
  let col = gid.x;
  if (col >= q.c) { return; }
  var acc = 0.0;
  for (var k = 0u; k < q.chunks; k++) {
    acc += s_partial[k * q.c + col];
  }
  s_dw[col] += acc;
}
