// HiRA's fused adapter gradients. Shapes: W0 [out, in] (element type WTYPE, read as f32),
// A [r, in], B [out, r], X [N, in], dY [N, out]; everything else row-major f32.
//   "cpu" entry grad_cpu for CPU rasterizers (register blocks, vec4 loads, no barrier),
// grad_tiled for real GPUs (tiles in workgroup memory), reduce_grads for both.
//
// Defines (every entry of this file gets all of them): WTYPE, CB, BL (= rank·CB for grad_cpu),
// VEC_K (here: out % 4 == 0), VEC_IN (in % 4 == 0), VEC_R (r % 4 == 0). Uniform structs
// GradParams, ReduceParams: lib/ops/hira.ts.

//! include "common/flat.wgsl"
//! include "common/mac_block.wgsl"
//! include "common/mac_block_row.wgsl"
//! include "common/hira_tile.wgsl"

const CB: u32 = {{CB}}u;
const VEC_K: bool = {{VEC_K}};
const VEC_IN: bool = {{VEC_IN}};
const VEC_R: bool = {{VEC_R}};

// With G = dYᵀ·X and M = W0 ⊙ G ([out, in], never stored):
//   dB = M·Aᵀ [out, r] and dA = Bᵀ·M [r, in].
// A workgroup covers a block of `in` columns and a block (segment) of `out` rows; it writes
//   d_bp[column block, o, j] = Σ_{i in its columns} M[o, i]·A[j, i]
//   d_ap[row block, j, i]    = Σ_{o in its rows} B[o, j]·M[o, i]
// which reduce_grads then sums into the gradients (the partials are r/(block width) and
// r/(block height) of W0's size).

//! struct GradParams

@group(0) @binding(0) var<uniform> gp: GradParams;
@group(0) @binding(1) var<storage, read> g_dy: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> g_x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> g_w0: array<vec4<{{WTYPE}}>>;
@group(0) @binding(4) var<storage, read> g_a: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> g_b: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> g_ap: array<f32>;
@group(0) @binding(7) var<storage, read_write> g_bp: array<f32>;

fn g_dy_e(i: u32) -> f32 {
  return g_dy[i >> 2u][i & 3u];
}

fn g_x_e(i: u32) -> f32 {
  return g_x[i >> 2u][i & 3u];
}

fn g_w0_e(i: u32) -> f32 {
  return f32(g_w0[i >> 2u][i & 3u]);
}

fn g_a_e(i: u32) -> f32 {
  return g_a[i >> 2u][i & 3u];
}

fn g_b_e(i: u32) -> f32 {
  return g_b[i >> 2u][i & 3u];
}

// dY[t, o..o+3] (t clamped: callers scale past-N rows by 0; o past out reads as 0).
fn g_dy4(t: u32, o: u32) -> vec4<f32> {
  let row = min(t, gp.N - 1u) * gp.out_f;
  if (VEC_K) {
    // VEC_K here means out % 4 == 0.
    if (o >= gp.out_f) { return vec4(0.0); }
    return g_dy[(row + o) >> 2u];
  }
  var v: vec4<f32>;
  for (var q = 0u; q < 4u; q++) {
    v[q] = select(0.0, g_dy_e(row + min(o + q, gp.out_f - 1u)), o + q < gp.out_f);
  }
  return v;
}

// X[t, i..i+3] (t clamped, columns clamped).
fn g_x4(t: u32, i: u32) -> vec4<f32> {
  let row = min(t, gp.N - 1u) * gp.in_f;
  if (VEC_IN) { return g_x[(row + min(i, gp.in_f - 4u)) >> 2u]; }
  let last = gp.in_f - 1u;
  return vec4(g_x_e(row + min(i, last)), g_x_e(row + min(i + 1u, last)),
    g_x_e(row + min(i + 2u, last)), g_x_e(row + min(i + 3u, last)));
}

// W0[o, i..i+3], zero for o past out or columns past in (so M is zero there).
fn g_w04(o: u32, i: u32) -> vec4<f32> {
  if (o >= gp.out_f) { return vec4(0.0); }
  let row = o * gp.in_f;
  if (VEC_IN) {
    if (i >= gp.in_f) { return vec4(0.0); }
    return vec4<f32>(g_w0[(row + i) >> 2u]);
  }
  var v: vec4<f32>;
  for (var q = 0u; q < 4u; q++) {
    v[q] = select(0.0, g_w0_e(row + min(i + q, gp.in_f - 1u)), i + q < gp.in_f);
  }
  return v;
}

// A[j, i..i+3] (columns clamped).
fn g_a4(j: u32, i: u32) -> vec4<f32> {
  let base = j * gp.in_f;
  if (VEC_IN) { return g_a[(base + min(i, gp.in_f - 4u)) >> 2u]; }
  let last = gp.in_f - 1u;
  return vec4(g_a_e(base + min(i, last)), g_a_e(base + min(i + 1u, last)),
    g_a_e(base + min(i + 2u, last)), g_a_e(base + min(i + 3u, last)));
}

// B[o, j..j+3] (o clamped; ranks past r read as 0).
fn g_b4(o: u32, j: u32) -> vec4<f32> {
  let row = min(o, gp.out_f - 1u) * gp.rank;
  if (VEC_R) { return g_b[(row + j) >> 2u]; }
  var v: vec4<f32>;
  for (var jj = 0u; jj < 4u; jj++) {
    v[jj] = select(0.0, g_b_e(row + min(j + jj, gp.rank - 1u)), j + jj < gp.rank);
  }
  return v;
}

// dY[t..t+3, o..o+3] as a matrix whose column q is dY[t..t+3, o+q] (tokens past N are zeroed
// through X's block).
fn g_dy_block(t: u32, o: u32) -> mat4x4<f32> {
  return transpose(mat4x4<f32>(g_dy4(t, o), g_dy4(t + 1u, o), g_dy4(t + 2u, o), g_dy4(t + 3u, o)));
}

// X[t..t+3, i..i+3] as a matrix whose column tt is X[t+tt, i..i+3], zero for tokens past N.
fn g_x_block(t: u32, i: u32) -> mat4x4<f32> {
  let live = vec4<f32>(vec4<u32>(t, t + 1u, t + 2u, t + 3u) < vec4(gp.N));
  return mat4x4<f32>(live.x * g_x4(t, i), live.y * g_x4(t + 1u, i), live.z * g_x4(t + 2u, i),
    live.w * g_x4(t + 3u, i));
}

// With VEC_K (out % 4 == 0): vec4 indices of dY[0..3, o..o+3] (columns past out clamped: M is
// zero there); they advance by out per 4 tokens.
fn g_dy_offsets(o: u32) -> vec4<u32> {
  let o4 = gp.out_f >> 2u;
  return min(o, gp.out_f - 4u) / 4u + vec4<u32>(0u, o4, 2u * o4, 3u * o4);
}

// With VEC_IN: vec4 indices of X[0..3, i..i+3] (columns clamped), advancing by in per 4 tokens.
fn g_x_offsets(i: u32) -> vec4<u32> {
  let i4 = gp.in_f >> 2u;
  return min(i, gp.in_f - 4u) / 4u + vec4<u32>(0u, i4, 2u * i4, 3u * i4);
}

// g_dy_block(t, o) for whole 4-token steps, through the offsets `d` with VEC_K.
fn g_dy_at(d: vec4<u32>, t: u32, o: u32) -> mat4x4<f32> {
  if (VEC_K) { return transpose(mat4x4<f32>(g_dy[d.x], g_dy[d.y], g_dy[d.z], g_dy[d.w])); }
  return g_dy_block(t, o);
}

// g_x_block(t, i) for whole 4-token steps, through the offsets `x` with VEC_IN.
fn g_x_at(x: vec4<u32>, t: u32, i: u32) -> mat4x4<f32> {
  if (VEC_IN) { return mat4x4<f32>(g_x[x.x], g_x[x.y], g_x[x.z], g_x[x.w]); }
  return g_x_block(t, i);
}

// G block scaled by W0[o..o+3, i..i+3] (column q is row o + q).
fn g_scale(g: mat4x4<f32>, o: u32, i: u32) -> mat4x4<f32> {
  return mat4x4<f32>(g[0] * g_w04(o, i), g[1] * g_w04(o + 1u, i), g[2] * g_w04(o + 2u, i),
    g[3] * g_w04(o + 3u, i));
}

// transpose(B[o..o+3, j..j+3]): column jj holds B[o..o+3, j + jj] (rows past out read as row
// out − 1, whose M is zero; ranks past r as 0).
fn g_b_block(o: u32, j: u32) -> mat4x4<f32> {
  return transpose(mat4x4<f32>(g_b4(o, j), g_b4(o + 1u, j), g_b4(o + 2u, j), g_b4(o + 3u, j)));
}

// Σ over the invocation's columns of M[o..o+3, i]·A[j, i] for one 4-row block.
fn g_db_rows(
  m0: mat4x4<f32>,
  m1: mat4x4<f32>,
  m2: mat4x4<f32>,
  m3: mat4x4<f32>,
  a0: vec4<f32>,
  a1: vec4<f32>,
  a2: vec4<f32>,
  a3: vec4<f32>,
) -> vec4<f32> {
  var v = transpose(m0) * a0;
  if (CB > 1u) { v += transpose(m1) * a1; }
  if (CB > 2u) { v += transpose(m2) * a2; }
  if (CB > 3u) { v += transpose(m3) * a3; }
  return v;
}

// d_bp[part + o + q, j] = v[q] for the rows inside out.
fn g_store_db(part: u32, o: u32, j: u32, v: vec4<f32>) {
  for (var q = 0u; q < 4u; q++) {
    if (o + q < gp.out_f) { g_bp[(part + o + q) * gp.rank + j] = v[q]; }
  }
}


// CPU-adapter gradients. A workgroup is 8 invocations along `in`, each owning 4·CB columns, and
// walks the 16-row blocks of its `out` segment: per block it accumulates G (16 × 4·CB) over all
// tokens in registers (explicit variables, vec4 loads through constant-stepped addresses, no
// workgroup memory), scales by W0, adds Bᵀ·M into its dA partial (4 ranks at a time as 4×4
// matrix products; written once at the end) and writes M·Aᵀ over its own columns as its own dB
// partial: no barrier anywhere (summing the 8 invocations' dB parts through workgroup memory
// made the whole kernel ~1.6× slower on llvmpipe), for a dB partial buffer of in/(4·CB) × out × r
// (r/16 of W0's size). The per-block work loops over the runtime rank: unrolling it made compiles
// take seconds.
@compute @workgroup_size(8)
fn grad_cpu(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
) {
  let col_tile = wg.x;
  let seg = wg.y;
  let i0 = col_tile * 32u * CB + lid.x * 4u * CB;
  let rank = gp.rank;
  var al: array<vec4<f32>, {{BL}}>;
  for (var j = 0u; j < rank; j++) {
    for (var c = 0u; c < CB; c++) {
      al[j * CB + c] = g_a4(j, i0 + 4u * c);
    }
  }
  var da: array<vec4<f32>, {{BL}}>;
  let blocks = (gp.out_f + 15u) / 16u;
  let ob0 = seg * gp.blocks_per_seg;
  let ob1 = min(ob0 + gp.blocks_per_seg, blocks);
  for (var ob = ob0; ob < ob1; ob++) {
    let o0 = ob * 16u;
    // Explicit zeros: Naga (Deno's WGSL compiler) zeroes a `var` declared without an initializer
    // once per invocation, not on each pass of the loop that declares it, so these would start
    // each row block from the previous block's M.
    let z = mat4x4<f32>();
    var g00 = z; var g01 = z; var g02 = z; var g03 = z;
    var g10 = z; var g11 = z; var g12 = z; var g13 = z;
    var g20 = z; var g21 = z; var g22 = z; var g23 = z;
    var g30 = z; var g31 = z; var g32 = z; var g33 = z;
    // Whole 4-token steps through addresses that advance by a constant (no masks), then the
    // ragged last step through the masked loads.
    var d0 = g_dy_offsets(o0);
    var d1 = g_dy_offsets(o0 + 4u);
    var d2 = g_dy_offsets(o0 + 8u);
    var d3 = g_dy_offsets(o0 + 12u);
    var x0 = g_x_offsets(i0);
    var x1 = g_x_offsets(i0 + 4u);
    var x2 = g_x_offsets(i0 + 8u);
    var x3 = g_x_offsets(i0 + 12u);
    let full = gp.N & ~3u;
    for (var t = 0u; t < full; t += 4u) {
      let b0 = g_x_at(x0, t, i0);
      var b1: mat4x4<f32>;
      var b2: mat4x4<f32>;
      var b3: mat4x4<f32>;
      if (CB > 1u) { b1 = g_x_at(x1, t, i0 + 4u); }
      if (CB > 2u) { b2 = g_x_at(x2, t, i0 + 8u); }
      if (CB > 3u) { b3 = g_x_at(x3, t, i0 + 12u); }
      mac_block_row(&g00, &g01, &g02, &g03, g_dy_at(d0, t, o0), b0, b1, b2, b3);
      mac_block_row(&g10, &g11, &g12, &g13, g_dy_at(d1, t, o0 + 4u), b0, b1, b2, b3);
      mac_block_row(&g20, &g21, &g22, &g23, g_dy_at(d2, t, o0 + 8u), b0, b1, b2, b3);
      mac_block_row(&g30, &g31, &g32, &g33, g_dy_at(d3, t, o0 + 12u), b0, b1, b2, b3);
      d0 += gp.out_f; d1 += gp.out_f; d2 += gp.out_f; d3 += gp.out_f;
      x0 += gp.in_f; x1 += gp.in_f; x2 += gp.in_f; x3 += gp.in_f;
    }
    if (full < gp.N) {
      let t = full;
      let b0 = g_x_block(t, i0);
      var b1: mat4x4<f32>;
      var b2: mat4x4<f32>;
      var b3: mat4x4<f32>;
      if (CB > 1u) { b1 = g_x_block(t, i0 + 4u); }
      if (CB > 2u) { b2 = g_x_block(t, i0 + 8u); }
      if (CB > 3u) { b3 = g_x_block(t, i0 + 12u); }
      mac_blocks(&g00, &g01, &g02, &g03, g_dy_block(t, o0), b0, b1, b2, b3);
      mac_blocks(&g10, &g11, &g12, &g13, g_dy_block(t, o0 + 4u), b0, b1, b2, b3);
      mac_blocks(&g20, &g21, &g22, &g23, g_dy_block(t, o0 + 8u), b0, b1, b2, b3);
      mac_blocks(&g30, &g31, &g32, &g33, g_dy_block(t, o0 + 12u), b0, b1, b2, b3);
    }
    // M = W0 ⊙ G (zero outside out × in): g{rb}{c} column q = M[o0 + 4rb + q, i0 + 4c..+3].
    g00 = g_scale(g00, o0, i0); g01 = g_scale(g01, o0, i0 + 4u);
    g02 = g_scale(g02, o0, i0 + 8u); g03 = g_scale(g03, o0, i0 + 12u);
    g10 = g_scale(g10, o0 + 4u, i0); g11 = g_scale(g11, o0 + 4u, i0 + 4u);
    g12 = g_scale(g12, o0 + 4u, i0 + 8u); g13 = g_scale(g13, o0 + 4u, i0 + 12u);
    g20 = g_scale(g20, o0 + 8u, i0); g21 = g_scale(g21, o0 + 8u, i0 + 4u);
    g22 = g_scale(g22, o0 + 8u, i0 + 8u); g23 = g_scale(g23, o0 + 8u, i0 + 12u);
    g30 = g_scale(g30, o0 + 12u, i0); g31 = g_scale(g31, o0 + 12u, i0 + 4u);
    g32 = g_scale(g32, o0 + 12u, i0 + 8u); g33 = g_scale(g33, o0 + 12u, i0 + 12u);
    // dA partial += Bᵀ·M over this block's rows, 4 ranks at a time: column jj of
    // Σ_rb g{rb}{c}·transpose(B[o0 + 4rb..+3, j..j+3]) is Σ_o B[o, j + jj]·M[o, cols of c].
    for (var j = 0u; j < rank; j += 4u) {
      let bt0 = g_b_block(o0, j);
      let bt1 = g_b_block(o0 + 4u, j);
      let bt2 = g_b_block(o0 + 8u, j);
      let bt3 = g_b_block(o0 + 12u, j);
      let jn = min(4u, rank - j);
      let s0 = g00 * bt0 + g10 * bt1 + g20 * bt2 + g30 * bt3;
      for (var jj = 0u; jj < jn; jj++) { da[(j + jj) * CB] += s0[jj]; }
      if (CB > 1u) {
        let s1 = g01 * bt0 + g11 * bt1 + g21 * bt2 + g31 * bt3;
        for (var jj = 0u; jj < jn; jj++) { da[(j + jj) * CB + 1u] += s1[jj]; }
      }
      if (CB > 2u) {
        let s2 = g02 * bt0 + g12 * bt1 + g22 * bt2 + g32 * bt3;
        for (var jj = 0u; jj < jn; jj++) { da[(j + jj) * CB + 2u] += s2[jj]; }
      }
      if (CB > 3u) {
        let s3 = g03 * bt0 + g13 * bt1 + g23 * bt2 + g33 * bt3;
        for (var jj = 0u; jj < jn; jj++) { da[(j + jj) * CB + 3u] += s3[jj]; }
      }
    }
    // dB partial of this invocation's columns: (transpose(g{rb}{c})·A[j, cols of c])[q] is
    // Σ_i M[o0 + 4rb + q, i]·A[j, i]. Each invocation writes its own partial (no barrier: a
    // workgroup barrier makes llvmpipe run the whole kernel as coroutines, which cost more than
    // the larger partial buffer).
    let part = (col_tile * 8u + lid.x) * gp.out_f;
    for (var j = 0u; j < rank; j++) {
      let a0 = al[j * CB];
      var a1: vec4<f32>;
      var a2: vec4<f32>;
      var a3: vec4<f32>;
      if (CB > 1u) { a1 = al[j * CB + 1u]; }
      if (CB > 2u) { a2 = al[j * CB + 2u]; }
      if (CB > 3u) { a3 = al[j * CB + 3u]; }
      g_store_db(part, o0, j, g_db_rows(g00, g01, g02, g03, a0, a1, a2, a3));
      g_store_db(part, o0 + 4u, j, g_db_rows(g10, g11, g12, g13, a0, a1, a2, a3));
      g_store_db(part, o0 + 8u, j, g_db_rows(g20, g21, g22, g23, a0, a1, a2, a3));
      g_store_db(part, o0 + 12u, j, g_db_rows(g30, g31, g32, g33, a0, a1, a2, a3));
    }
  }
  for (var j = 0u; j < rank; j++) {
    for (var c = 0u; c < CB; c++) {
      let v = da[j * CB + c];
      let base = (seg * rank + j) * gp.in_f;
      for (var q = 0u; q < 4u; q++) {
        let i = i0 + 4u * c + q;
        if (i < gp.in_f) { g_ap[base + i] = v[q]; }
      }
    }
  }
}

// GPU gradients: 64 (out) × 64 (in) tiles of G per workgroup of 16×16 invocations (4×4 each),
// tokens in steps of 16 through workgroup tiles of dY and X. M = W0 ⊙ G then goes through
// workgroup memory in two halves of 32 rows, from which the workgroup forms the tile's dB part
// (M·Aᵀ over its 64 columns) and dA part (Bᵀ·M over its 64 rows). A workgroup walks a block of
// tiles_c column tiles × tiles_r row tiles and accumulates those parts in its own slices of the
// partial buffers (d_bp by column block, d_ap by row block; each element always goes to the same
// invocation, so no two invocations touch it): the partials are r/(64·block) of W0's size each.
var<workgroup> t_dy: array<vec4<f32>, 256>;
var<workgroup> t_x: array<vec4<f32>, 256>;
var<workgroup> t_m: array<f32, 2048>;

@compute @workgroup_size(16, 16)
fn grad_tiled(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let col_block = wg.x;
  let row_block = wg.y;
  // Tiles of the last blocks that lie wholly outside out × in are skipped.
  for (var rt = 0u; rt < gp.tiles_r && (row_block * gp.tiles_r + rt) * TILE < gp.out_f; rt++) {
    for (var ct = 0u; ct < gp.tiles_c && (col_block * gp.tiles_c + ct) * TILE < gp.in_f; ct++) {
      let i0 = (col_block * gp.tiles_c + ct) * TILE;
      let o0 = (row_block * gp.tiles_r + rt) * TILE;
      grad_tile(i0, o0, col_block, row_block, ct == 0u, rt == 0u, lid, li);
    }
  }
}

fn grad_tile(
  i0: u32,
  o0: u32,
  col_block: u32,
  row_block: u32,
  first_c: bool,
  first_r: bool,
  lid: vec3<u32>,
  li: u32,
) {
  var acc: array<vec4<f32>, 4>;
  for (var t0 = 0u; t0 < gp.N; t0 += TBK) {
    {
      // 4 consecutive columns of one token row per invocation.
      let tt = li / 16u;
      let c = (li % 16u) * 4u;
      let t = t0 + tt;
      var d = vec4(0.0);
      var x = vec4(0.0);
      for (var q = 0u; q < 4u; q++) {
        if (t < gp.N && o0 + c + q < gp.out_f) { d[q] = g_dy_e(t * gp.out_f + o0 + c + q); }
        if (t < gp.N && i0 + c + q < gp.in_f) { x[q] = g_x_e(t * gp.in_f + i0 + c + q); }
      }
      t_dy[tt * 16u + c / 4u] = d;
      t_x[tt * 16u + c / 4u] = x;
    }
    workgroupBarrier();
    for (var tt = 0u; tt < TBK; tt++) {
      let dv = t_dy[tt * 16u + lid.y];
      let xv = t_x[tt * 16u + lid.x];
      acc[0] = fma(vec4(dv.x), xv, acc[0]);
      acc[1] = fma(vec4(dv.y), xv, acc[1]);
      acc[2] = fma(vec4(dv.z), xv, acc[2]);
      acc[3] = fma(vec4(dv.w), xv, acc[3]);
    }
    workgroupBarrier();
  }
  for (var q = 0u; q < 4u; q++) {
    let o = o0 + lid.y * 4u + q;
    for (var c = 0u; c < 4u; c++) {
      let i = i0 + lid.x * 4u + c;
      var w = 0.0;
      if (o < gp.out_f && i < gp.in_f) { w = g_w0_e(o * gp.in_f + i); }
      acc[q][c] *= w;
    }
  }
  for (var h = 0u; h < 2u; h++) {
    if (lid.y / 8u == h) {
      for (var q = 0u; q < 4u; q++) {
        let r = (lid.y % 8u) * 4u + q;
        for (var c = 0u; c < 4u; c++) {
          t_m[r * 64u + lid.x * 4u + c] = acc[q][c];
        }
      }
    }
    workgroupBarrier();
    // dB part of rows o0 + 32h .. +31.
    for (var e = li; e < 32u * gp.rank; e += 256u) {
      let r = e / gp.rank;
      let j = e % gp.rank;
      let o = o0 + 32u * h + r;
      var s = 0.0;
      for (var c = 0u; c < 64u; c++) {
        if (i0 + c < gp.in_f) { s = fma(t_m[r * 64u + c], g_a_e(j * gp.in_f + i0 + c), s); }
      }
      if (o < gp.out_f) {
        let idx = (col_block * gp.out_f + o) * gp.rank + j;
        if (first_c) { g_bp[idx] = s; } else { g_bp[idx] += s; }
      }
    }
    // dA part of columns i0 .. +63 over this half's rows.
    for (var e = li; e < 64u * gp.rank; e += 256u) {
      let j = e / 64u;
      let c = e % 64u;
      var s = 0.0;
      for (var r = 0u; r < 32u; r++) {
        let o = o0 + 32u * h + r;
        if (o < gp.out_f) { s = fma(g_b_e(o * gp.rank + j), t_m[r * 64u + c], s); }
      }
      if (i0 + c < gp.in_f) {
        let idx = (row_block * gp.rank + j) * gp.in_f + i0 + c;
        if (first_r && h == 0u) { g_ap[idx] = s; } else { g_ap[idx] += s; }
      }
    }
    workgroupBarrier();
  }
}

//! struct ReduceParams

@group(0) @binding(0) var<uniform> rp: ReduceParams;
@group(0) @binding(1) var<storage, read> r_ap: array<f32>;
@group(0) @binding(2) var<storage, read> r_bp: array<f32>;
@group(0) @binding(3) var<storage, read_write> r_ga: array<f32>;
@group(0) @binding(4) var<storage, read_write> r_gb: array<f32>;

// gradA += Σ_p d_ap[p], gradB += Σ_p d_bp[p], partials in order (deterministic).
@compute @workgroup_size(256)
fn reduce_grads(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let e = flat(gid, nwg);
  if (e < rp.len_a) {
    var s = 0.0;
    for (var p = 0u; p < rp.parts_a; p++) {
      s += r_ap[p * rp.len_a + e];
    }
    r_ga[e] += s;
  } else if (e < rp.len_a + rp.len_b) {
    let f = e - rp.len_a;
    var s = 0.0;
    for (var p = 0u; p < rp.parts_b; p++) {
      s += r_bp[p * rp.len_b + f];
    }
    r_gb[f] += s;
  }
}
