// Row-wise softmax over a row-major [rows, cols] f32 matrix, and its backward
// dx = y ⊙ (dy − rowsum(dy ⊙ y)).
//
// Two families:
// - *_rows: one invocation per row, no workgroup memory or barriers (CPU rasterizers run
//   barriers as coroutine switches, and each workgroup there is one thread anyway);
// - *_wg: one 256-wide workgroup per row with a tree reduction in workgroup memory, so a long
//   row is spread over many GPU lanes.
// Row indices fold the y dimension of the grid so more than 65535 workgroups fit one dispatch.
//
// The forward entries do not use binding 2; their layout still has it (the wrapper binds x
// twice) so that both directions share one binding table.

//! struct Params

const WG: u32 = 256u;
const ROWS_WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
// x in the forward, y in the backward.
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(ROWS_WG)
fn softmax_rows(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let row = gid.x + gid.y * nwg.x * ROWS_WG;
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  var m = src[base];
  for (var c = 1u; c < p.cols; c++) { m = max(m, src[base + c]); }
  // Keep the exponentials in `out` so the last pass only scales them.
  var s = 0.0;
  for (var c = 0u; c < p.cols; c++) {
    let e = exp(src[base + c] - m);
    out[base + c] = e;
    s += e;
  }
  let inv = 1.0 / s;
  for (var c = 0u; c < p.cols; c++) { out[base + c] *= inv; }
}

@compute @workgroup_size(ROWS_WG)
fn softmax_backward_rows(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let row = gid.x + gid.y * nwg.x * ROWS_WG;
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  var dot = 0.0;
  for (var c = 0u; c < p.cols; c++) { dot += src[base + c] * dy[base + c]; }
  for (var c = 0u; c < p.cols; c++) { out[base + c] = src[base + c] * (dy[base + c] - dot); }
}

// Reduces `red` (filled by every lane) to red[0]; `is_max` picks max instead of sum.
fn reduce_wg(lane: u32, is_max: bool) -> f32 {
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lane < stride) {
      if (is_max) {
        red[lane] = max(red[lane], red[lane + stride]);
      } else {
        red[lane] += red[lane + stride];
      }
    }
    workgroupBarrier();
  }
  let r = red[0];
  // Everyone must have read red[0] before a following reduction overwrites it.
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(WG)
fn softmax_wg(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lane: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  var m = -3.0e38;
  for (var c = lane; c < p.cols; c += WG) { m = max(m, src[base + c]); }
  red[lane] = m;
  m = reduce_wg(lane, true);
  var s = 0.0;
  for (var c = lane; c < p.cols; c += WG) { s += exp(src[base + c] - m); }
  red[lane] = s;
  s = reduce_wg(lane, false);
  let inv = 1.0 / s;
  for (var c = lane; c < p.cols; c += WG) { out[base + c] = exp(src[base + c] - m) * inv; }
}

@compute @workgroup_size(WG)
fn softmax_backward_wg(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lane: u32,
) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  var dot = 0.0;
  for (var c = lane; c < p.cols; c += WG) { dot += src[base + c] * dy[base + c]; }
  red[lane] = dot;
  dot = reduce_wg(lane, false);
  for (var c = lane; c < p.cols; c += WG) {
    out[base + c] = src[base + c] * (dy[base + c] - dot);
  }
}
