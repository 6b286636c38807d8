// HiRA's fused activation × W_eff product, with W_eff = W0 ⊙ (1 + B·A) formed tile by tile
// (never written to memory): forward y = x·W_effᵀ (DX false) and dX = dY·W_eff (DX true).
// Shapes: W0 [out, in] (element type WTYPE, read as f32), A [r, in], B [out, r], activations
// [N, in] / [N, out]; everything else row-major f32.
//   DX false (forward): out[m, n] = Σ_k act[m, k]·W_eff[n, k]   (act = x [M, in], N = out)
//   DX true  (dX):      out[m, n] = Σ_k act[m, k]·W_eff[k, n]   (act = dY [M, out], N = in)
// so op(W)[k, n] is W_eff[n, k] or W_eff[k, n]. All operands are bound as vec4 arrays (the host
// rounds the windows up); single elements are read through the e*() helpers.
//   "cpu" entries (mm_cpu, mm_cpu_strip) suit CPU rasterizers (register blocks, vec4 loads,
// addresses stepped by constants, as kernels/matmul.wgsl's cpu entry; workgroup memory only where
// sharing pays for its barriers: on llvmpipe a kernel with a barrier runs its invocations as
// coroutines, which costs ~1 µs per invocation group and barrier); mm_tiled stages tiles in
// workgroup memory for real GPUs.
//
// Defines (every entry of this file gets all of them; the host passes fixed values for those an
// entry does not use): WTYPE, DX, ACC, RANK, RB, CB, BL (= RANK·CB), KS, VEC_K, VEC_IN, VEC_R,
// VEC_N. Uniform struct MmParams: lib/ops/hira.ts.

//! include "common/mac_block.wgsl"
//! include "common/mac_block_row.wgsl"
//! include "common/hira_tile.wgsl"

//! struct MmParams

const DX: bool = {{DX}};
const ACC: bool = {{ACC}};
const RANK: u32 = {{RANK}}u;
const RB: u32 = {{RB}}u;
const CB: u32 = {{CB}}u;
// K % 4 == 0 (activation rows load as vec4), in % 4 == 0 (W0 and A rows), r % 4 == 0 (B rows),
// N % 4 == 0 (output rows store as vec4).
const VEC_K: bool = {{VEC_K}};
const VEC_IN: bool = {{VEC_IN}};
const VEC_R: bool = {{VEC_R}};
const VEC_N: bool = {{VEC_N}};

@group(0) @binding(0) var<uniform> mp: MmParams;
@group(0) @binding(1) var<storage, read> m_act: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> m_w0: array<vec4<{{WTYPE}}>>;
@group(0) @binding(3) var<storage, read> m_a: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> m_b: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> m_out: array<vec4<f32>>;

fn m_act_e(i: u32) -> f32 {
  return m_act[i >> 2u][i & 3u];
}

fn m_w0_e(i: u32) -> f32 {
  return f32(m_w0[i >> 2u][i & 3u]);
}

fn m_a_e(i: u32) -> f32 {
  return m_a[i >> 2u][i & 3u];
}

fn m_b_e(i: u32) -> f32 {
  return m_b[i >> 2u][i & 3u];
}

// act[m, k..k+3], zero past K. Rows past M are clamped (their outputs are never stored).
fn mm_act4(m: u32, k: u32) -> vec4<f32> {
  let row = min(m, mp.M - 1u) * mp.K;
  if (VEC_K) { return m_act[(row + k) >> 2u]; }
  var v: vec4<f32>;
  for (var kk = 0u; kk < 4u; kk++) {
    v[kk] = select(0.0, m_act_e(row + min(k + kk, mp.K - 1u)), k + kk < mp.K);
  }
  return v;
}

// A[j, i..i+3] (columns clamped into range; callers zero what lies past `in` elsewhere).
fn mm_a4(j: u32, i: u32) -> vec4<f32> {
  if (VEC_IN) { return m_a[(j * mp.in_f + min(i, mp.in_f - 4u)) >> 2u]; }
  let last = mp.in_f - 1u;
  let base = j * mp.in_f;
  return vec4(m_a_e(base + min(i, last)), m_a_e(base + min(i + 1u, last)),
    m_a_e(base + min(i + 2u, last)), m_a_e(base + min(i + 3u, last)));
}

// W0[o, i..i+3] with o clamped and columns clamped.
fn mm_w0row4(o: u32, i: u32) -> vec4<f32> {
  let row = min(o, mp.out_f - 1u) * mp.in_f;
  if (VEC_IN) { return vec4<f32>(m_w0[(row + min(i, mp.in_f - 4u)) >> 2u]); }
  let last = mp.in_f - 1u;
  return vec4(m_w0_e(row + min(i, last)), m_w0_e(row + min(i + 1u, last)),
    m_w0_e(row + min(i + 2u, last)), m_w0_e(row + min(i + 3u, last)));
}

// B[o, j..j+3] (o clamped; ranks past r read as 0).
fn mm_b4(o: u32, j: u32) -> vec4<f32> {
  let row = min(o, mp.out_f - 1u) * mp.rank;
  if (VEC_R) { return m_b[(row + j) >> 2u]; }
  var v: vec4<f32>;
  for (var jj = 0u; jj < 4u; jj++) {
    v[jj] = select(0.0, m_b_e(row + min(j + jj, mp.rank - 1u)), j + jj < mp.rank);
  }
  return v;
}

// B[o, j] (o clamped).
fn mm_b_at(o: u32, j: u32) -> f32 {
  return m_b_e(min(o, mp.out_f - 1u) * mp.rank + j);
}

// op(W0)[k..k+3, n..n+3] as a matrix whose column kk is op(W0)[k+kk, n..n+3].
fn mm_w0tile(k: u32, n: u32) -> mat4x4<f32> {
  if (DX) {
    return mat4x4<f32>(mm_w0row4(k, n), mm_w0row4(k + 1u, n), mm_w0row4(k + 2u, n),
      mm_w0row4(k + 3u, n));
  }
  return transpose(mat4x4<f32>(mm_w0row4(n, k), mm_w0row4(n + 1u, k), mm_w0row4(n + 2u, k),
    mm_w0row4(n + 3u, k)));
}

// Writes out[m, n..n+3] (those inside M×N), adding the old values where add_old (ACC for the
// kernels that write each output once; mm_cpu_strip has read them back already).
fn mm_store4(m: u32, n: u32, v: vec4<f32>, add_old: bool) {
  if (m >= mp.M || n >= mp.N) { return; }
  var w = v;
  if (add_old) { w += mm_out4(m, n); }
  let base = m * mp.N + n;
  if (VEC_N) {
    m_out[base >> 2u] = w;
    return;
  }
  for (var q = 0u; q < 4u; q++) {
    if (n + q < mp.N) { m_out[(base + q) >> 2u][(base + q) & 3u] = w[q]; }
  }
}

// out[m, n..n+3] (zero outside M×N).
fn mm_out4(m: u32, n: u32) -> vec4<f32> {
  if (m >= mp.M || n >= mp.N) { return vec4(0.0); }
  let base = m * mp.N + n;
  if (VEC_N) { return m_out[base >> 2u]; }
  var v: vec4<f32>;
  for (var q = 0u; q < 4u; q++) {
    if (n + q < mp.N) { v[q] = m_out[(base + q) >> 2u][(base + q) & 3u]; }
  }
  return v;
}

// act[m..m+3, k..k+3] as a matrix whose column q is act[m+q, k..k+3].
fn mm_act_block(m: u32, k: u32) -> mat4x4<f32> {
  return mat4x4<f32>(mm_act4(m, k), mm_act4(m + 1u, k), mm_act4(m + 2u, k), mm_act4(m + 3u, k));
}

// Adds the rank term of one rank j to a factor block: f[kk] += u[kk]·v (u varies along k,
// v along the block's 4 columns).
fn add_outer(f: ptr<function, mat4x4<f32>>, u: vec4<f32>, v: vec4<f32>) {
  (*f)[0] = fma(vec4(u.x), v, (*f)[0]);
  (*f)[1] = fma(vec4(u.y), v, (*f)[1]);
  (*f)[2] = fma(vec4(u.z), v, (*f)[2]);
  (*f)[3] = fma(vec4(u.w), v, (*f)[3]);
}

fn hadamard(a: mat4x4<f32>, b: mat4x4<f32>) -> mat4x4<f32> {
  return mat4x4<f32>(a[0] * b[0], a[1] * b[1], a[2] * b[2], a[3] * b[3]);
}

fn mm_store_block(m: u32, n: u32, v: mat4x4<f32>, add_old: bool) {
  mm_store4(m, n, v[0], add_old);
  mm_store4(m + 1u, n, v[1], add_old);
  mm_store4(m + 2u, n, v[2], add_old);
  mm_store4(m + 3u, n, v[3], add_old);
}

// Stores a (4·RB)×(4·CB) register tile at (m0, n0): c{rb}{c} holds rows m0 + 4rb.., columns
// n0 + 4c.. (the blocks past RB, CB are not stored).
fn mm_store_tile(
  m0: u32, n0: u32, add_old: bool,
  c00: mat4x4<f32>, c01: mat4x4<f32>, c02: mat4x4<f32>, c03: mat4x4<f32>,
  c10: mat4x4<f32>, c11: mat4x4<f32>, c12: mat4x4<f32>, c13: mat4x4<f32>,
  c20: mat4x4<f32>, c21: mat4x4<f32>, c22: mat4x4<f32>, c23: mat4x4<f32>,
  c30: mat4x4<f32>, c31: mat4x4<f32>, c32: mat4x4<f32>, c33: mat4x4<f32>,
) {
  mm_store_block(m0, n0, c00, add_old);
  if (CB > 1u) { mm_store_block(m0, n0 + 4u, c01, add_old); }
  if (CB > 2u) { mm_store_block(m0, n0 + 8u, c02, add_old); }
  if (CB > 3u) { mm_store_block(m0, n0 + 12u, c03, add_old); }
  if (RB > 1u) {
    mm_store_block(m0 + 4u, n0, c10, add_old);
    if (CB > 1u) { mm_store_block(m0 + 4u, n0 + 4u, c11, add_old); }
    if (CB > 2u) { mm_store_block(m0 + 4u, n0 + 8u, c12, add_old); }
    if (CB > 3u) { mm_store_block(m0 + 4u, n0 + 12u, c13, add_old); }
  }
  if (RB > 2u) {
    mm_store_block(m0 + 8u, n0, c20, add_old);
    if (CB > 1u) { mm_store_block(m0 + 8u, n0 + 4u, c21, add_old); }
    if (CB > 2u) { mm_store_block(m0 + 8u, n0 + 8u, c22, add_old); }
    if (CB > 3u) { mm_store_block(m0 + 8u, n0 + 12u, c23, add_old); }
  }
  if (RB > 3u) {
    mm_store_block(m0 + 12u, n0, c30, add_old);
    if (CB > 1u) { mm_store_block(m0 + 12u, n0 + 4u, c31, add_old); }
    if (CB > 2u) { mm_store_block(m0 + 12u, n0 + 8u, c32, add_old); }
    if (CB > 3u) { mm_store_block(m0 + 12u, n0 + 12u, c33, add_old); }
  }
}

// The rank factor that is fixed along k for the 4·CB columns from n0, preloaded once per
// invocation: pre[j·CB + c] holds B[n0+4c.., j] (forward) or A[j, n0+4c..] (dX).
fn mm_preload(pre: ptr<function, array<vec4<f32>, {{BL}}>>, n0: u32) {
  for (var j = 0u; j < RANK; j++) {
    for (var c = 0u; c < CB; c++) {
      let n = n0 + 4u * c;
      if (DX) {
        (*pre)[j * CB + c] = mm_a4(j, n);
      } else {
        (*pre)[j * CB + c] = vec4(mm_b_at(n, j), mm_b_at(n + 1u, j), mm_b_at(n + 2u, j),
          mm_b_at(n + 3u, j));
      }
    }
  }
}

// op(W_eff)[k..k+3, n0 + 4c..+3] = op(W0) ⊙ (1 + B·A) for c < CB (column kk of w_c is k + kk),
// from the preloaded rank values and one vec4 of the rank factor that varies along k per rank.
fn mm_weff_step(
  pre: ptr<function, array<vec4<f32>, {{BL}}>>,
  k: u32,
  n0: u32,
  w0: ptr<function, mat4x4<f32>>,
  w1: ptr<function, mat4x4<f32>>,
  w2: ptr<function, mat4x4<f32>>,
  w3: ptr<function, mat4x4<f32>>,
) {
  let ones = mat4x4<f32>(vec4(1.0), vec4(1.0), vec4(1.0), vec4(1.0));
  var f0 = ones;
  var f1 = ones;
  var f2 = ones;
  var f3 = ones;
  if (DX) {
    // op(W)[k, n] = W_eff[k, n]: the factor varying along k is B[k+kk, j].
    for (var j = 0u; j < RANK; j += 4u) {
      let bt = transpose(mat4x4<f32>(mm_b4(k, j), mm_b4(k + 1u, j), mm_b4(k + 2u, j),
        mm_b4(k + 3u, j)));
      for (var jj = 0u; jj < 4u; jj++) {
        if (j + jj < RANK) {
          let u = bt[jj];
          add_outer(&f0, u, (*pre)[(j + jj) * CB]);
          if (CB > 1u) { add_outer(&f1, u, (*pre)[(j + jj) * CB + 1u]); }
          if (CB > 2u) { add_outer(&f2, u, (*pre)[(j + jj) * CB + 2u]); }
          if (CB > 3u) { add_outer(&f3, u, (*pre)[(j + jj) * CB + 3u]); }
        }
      }
    }
  } else {
    // op(W)[k, n] = W_eff[n, k]: the factor varying along k is A[j, k+kk].
    for (var j = 0u; j < RANK; j++) {
      let u = mm_a4(j, k);
      add_outer(&f0, u, (*pre)[j * CB]);
      if (CB > 1u) { add_outer(&f1, u, (*pre)[j * CB + 1u]); }
      if (CB > 2u) { add_outer(&f2, u, (*pre)[j * CB + 2u]); }
      if (CB > 3u) { add_outer(&f3, u, (*pre)[j * CB + 3u]); }
    }
  }
  *w0 = hadamard(mm_w0tile(k, n0), f0);
  if (CB > 1u) { *w1 = hadamard(mm_w0tile(k, n0 + 4u), f1); }
  if (CB > 2u) { *w2 = hadamard(mm_w0tile(k, n0 + 8u), f2); }
  if (CB > 3u) { *w3 = hadamard(mm_w0tile(k, n0 + 12u), f3); }
}

// CPU-adapter fused product for a few rows (decoding, short prompts; mm_cpu_strip below for
// more). A workgroup is 8 invocations along N; each owns (4·RB) rows × (4·CB) columns of the
// output in registers (explicit variables, as in kernels/matmul.wgsl: arrays indexed in loops end
// up in memory on llvmpipe). Per step of 4 k it loads its W0 columns, forms their factor
// 1 + B·A from rank values preloaded once (B rows in the forward, A columns in dX) and one vec4
// of the other rank factor per rank, then runs the (4·RB)×(4·CB)×4 product. The factor costs
// RANK/(4·RB) of the product's FMAs, no extra writes and no barrier.
@compute @workgroup_size(8)
fn mm_cpu(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
) {
  let tile = wg.x + wg.y * nwg.x;
  if (tile >= mp.totalTiles) { return; }
  let m0 = (tile / mp.tilesN) * 4u * RB;
  let n0 = (tile % mp.tilesN) * 32u * CB + lid.x * 4u * CB;
  var pre: array<vec4<f32>, {{BL}}>;
  mm_preload(&pre, n0);
  var c00: mat4x4<f32>; var c01: mat4x4<f32>; var c02: mat4x4<f32>; var c03: mat4x4<f32>;
  var c10: mat4x4<f32>; var c11: mat4x4<f32>; var c12: mat4x4<f32>; var c13: mat4x4<f32>;
  var c20: mat4x4<f32>; var c21: mat4x4<f32>; var c22: mat4x4<f32>; var c23: mat4x4<f32>;
  var c30: mat4x4<f32>; var c31: mat4x4<f32>; var c32: mat4x4<f32>; var c33: mat4x4<f32>;
  for (var k = 0u; k < mp.K; k += 4u) {
    var w0: mat4x4<f32>;
    var w1: mat4x4<f32>;
    var w2: mat4x4<f32>;
    var w3: mat4x4<f32>;
    mm_weff_step(&pre, k, n0, &w0, &w1, &w2, &w3);
    mac_blocks(&c00, &c01, &c02, &c03, mm_act_block(m0, k), w0, w1, w2, w3);
    if (RB > 1u) {
      mac_blocks(&c10, &c11, &c12, &c13, mm_act_block(m0 + 4u, k), w0, w1, w2, w3);
    }
    if (RB > 2u) {
      mac_blocks(&c20, &c21, &c22, &c23, mm_act_block(m0 + 8u, k), w0, w1, w2, w3);
    }
    if (RB > 3u) {
      mac_blocks(&c30, &c31, &c32, &c33, mm_act_block(m0 + 12u, k), w0, w1, w2, w3);
    }
  }
  mm_store_tile(m0, n0, ACC, c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31,
    c32, c33);
}

// With VEC_K: the vec4 indices of act rows m..m+3 at k = 0 (rows past M clamped); they advance
// by 1 per 4 k, so the product loop does no index math (as kernels/matmul.wgsl's cpu entry).
fn mm_act_offsets(m: u32) -> vec4<u32> {
  let last = mp.M - 1u;
  return min(vec4<u32>(m, m + 1u, m + 2u, m + 3u), vec4(last)) * (mp.K >> 2u);
}

// act[m..m+3, k..k+3] (column q is row m+q), through the offsets `o` with VEC_K.
fn mm_act_at(o: vec4<u32>, m: u32, k: u32) -> mat4x4<f32> {
  if (VEC_K) { return mat4x4<f32>(m_act[o.x], m_act[o.y], m_act[o.z], m_act[o.w]); }
  return mm_act_block(m, k);
}

// CPU-adapter fused product for more rows (mm_cpu above for a few), with no barrier. A workgroup
// is 8 invocations along N, each owning 4·CB columns, and a segment of M (segRows rows; grid
// tiles tilesN per segment). K is walked in chunks of KS: per chunk each invocation forms the
// W_eff strip of its own columns (KS × 4·CB, r FMAs per element) in its own part of workgroup
// memory, then streams every row of its segment through it in (4·RB)-row register blocks (the
// product of kernels/matmul.wgsl's cpu entry), adding the chunk's part into the output, which it
// reads back after the first chunk. The factor costs r/segRows of the product's FMAs and the
// output round trips 2/KS loads and stores per FMA. No invocation reads what another wrote, so
// there is no barrier: on llvmpipe a barrier makes the invocations coroutines (~1 µs per
// invocation group and barrier), which made a kernel that shared one W_eff tile per workgroup
// ~1.5× slower than the matmul kernel.
const KS: u32 = {{KS}}u;
const SL: u32 = KS / 4u * CB;
// Invocation lx's strip: s_strip[lx·SL + (kk/4)·CB + c] = op(W_eff)[k0 + kk..+3, n0 + 4c..+3]
// (column kk % 4 is one k). Each invocation reads only what it wrote, so no barrier is needed.
var<workgroup> s_strip: array<mat4x4<f32>, 8u * SL>;

// out[m..m+3, n..n+3] (column q is row m+q; zero outside M×N).
fn mm_out_block(m: u32, n: u32) -> mat4x4<f32> {
  return mat4x4<f32>(mm_out4(m, n), mm_out4(m + 1u, n), mm_out4(m + 2u, n), mm_out4(m + 3u, n));
}

// The accumulator block at (m, n) before a chunk: zero for the first chunk unless ACC.
fn mm_acc_start(m: u32, n: u32, fresh: bool) -> mat4x4<f32> {
  if (fresh) { return mat4x4<f32>(); }
  return mm_out_block(m, n);
}

@compute @workgroup_size(8)
fn mm_cpu_strip(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
) {
  // Surplus workgroups of a folded grid get an empty row range (an early return would leave every
  // load below under a lane mask, which costs on llvmpipe).
  let flat_tile = wg.x + wg.y * nwg.x;
  let tile = min(flat_tile, mp.totalTiles - 1u);
  let n0 = (tile % mp.tilesN) * 32u * CB + lid.x * 4u * CB;
  let m_begin = (tile / mp.tilesN) * mp.segRows;
  let m_end = select(m_begin, min(mp.M, m_begin + mp.segRows), flat_tile < mp.totalTiles);
  var pre: array<vec4<f32>, {{BL}}>;
  mm_preload(&pre, n0);
  let own = lid.x * SL;
  for (var k0 = 0u; k0 < mp.K; k0 += KS) {
    let kn = min(KS, mp.K - k0);
    for (var kk = 0u; kk < kn; kk += 4u) {
      var w0: mat4x4<f32>;
      var w1: mat4x4<f32>;
      var w2: mat4x4<f32>;
      var w3: mat4x4<f32>;
      mm_weff_step(&pre, k0 + kk, n0, &w0, &w1, &w2, &w3);
      let s = own + (kk >> 2u) * CB;
      s_strip[s] = w0;
      if (CB > 1u) { s_strip[s + 1u] = w1; }
      if (CB > 2u) { s_strip[s + 2u] = w2; }
      if (CB > 3u) { s_strip[s + 3u] = w3; }
    }
    let fresh = k0 == 0u && !ACC;
    for (var m0 = m_begin; m0 < m_end; m0 += 4u * RB) {
      var c00 = mm_acc_start(m0, n0, fresh);
      var c01: mat4x4<f32>; var c02: mat4x4<f32>; var c03: mat4x4<f32>;
      var c10: mat4x4<f32>; var c11: mat4x4<f32>; var c12: mat4x4<f32>; var c13: mat4x4<f32>;
      var c20: mat4x4<f32>; var c21: mat4x4<f32>; var c22: mat4x4<f32>; var c23: mat4x4<f32>;
      var c30: mat4x4<f32>; var c31: mat4x4<f32>; var c32: mat4x4<f32>; var c33: mat4x4<f32>;
      if (CB > 1u) { c01 = mm_acc_start(m0, n0 + 4u, fresh); }
      if (CB > 2u) { c02 = mm_acc_start(m0, n0 + 8u, fresh); }
      if (CB > 3u) { c03 = mm_acc_start(m0, n0 + 12u, fresh); }
      if (RB > 1u) {
        c10 = mm_acc_start(m0 + 4u, n0, fresh);
        if (CB > 1u) { c11 = mm_acc_start(m0 + 4u, n0 + 4u, fresh); }
        if (CB > 2u) { c12 = mm_acc_start(m0 + 4u, n0 + 8u, fresh); }
        if (CB > 3u) { c13 = mm_acc_start(m0 + 4u, n0 + 12u, fresh); }
      }
      if (RB > 2u) {
        c20 = mm_acc_start(m0 + 8u, n0, fresh);
        if (CB > 1u) { c21 = mm_acc_start(m0 + 8u, n0 + 4u, fresh); }
        if (CB > 2u) { c22 = mm_acc_start(m0 + 8u, n0 + 8u, fresh); }
        if (CB > 3u) { c23 = mm_acc_start(m0 + 8u, n0 + 12u, fresh); }
      }
      if (RB > 3u) {
        c30 = mm_acc_start(m0 + 12u, n0, fresh);
        if (CB > 1u) { c31 = mm_acc_start(m0 + 12u, n0 + 4u, fresh); }
        if (CB > 2u) { c32 = mm_acc_start(m0 + 12u, n0 + 8u, fresh); }
        if (CB > 3u) { c33 = mm_acc_start(m0 + 12u, n0 + 12u, fresh); }
      }
      let step = vec4((k0 >> 2u));
      var ao0 = mm_act_offsets(m0) + step;
      var ao1 = mm_act_offsets(m0 + 4u) + step;
      var ao2 = mm_act_offsets(m0 + 8u) + step;
      var ao3 = mm_act_offsets(m0 + 12u) + step;
      for (var kk = 0u; kk < kn; kk += 4u) {
        let s = own + (kk >> 2u) * CB;
        let w0 = s_strip[s];
        var w1: mat4x4<f32>;
        var w2: mat4x4<f32>;
        var w3: mat4x4<f32>;
        if (CB > 1u) { w1 = s_strip[s + 1u]; }
        if (CB > 2u) { w2 = s_strip[s + 2u]; }
        if (CB > 3u) { w3 = s_strip[s + 3u]; }
        let k = k0 + kk;
        mac_block_row(&c00, &c01, &c02, &c03, mm_act_at(ao0, m0, k), w0, w1, w2, w3);
        if (RB > 1u) {
          mac_block_row(&c10, &c11, &c12, &c13, mm_act_at(ao1, m0 + 4u, k), w0, w1, w2, w3);
        }
        if (RB > 2u) {
          mac_block_row(&c20, &c21, &c22, &c23, mm_act_at(ao2, m0 + 8u, k), w0, w1, w2, w3);
        }
        if (RB > 3u) {
          mac_block_row(&c30, &c31, &c32, &c33, mm_act_at(ao3, m0 + 12u, k), w0, w1, w2, w3);
        }
        ao0 += 1u; ao1 += 1u; ao2 += 1u; ao3 += 1u;
      }
      mm_store_tile(m0, n0, false, c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30,
        c31, c32, c33);
    }
  }
}

// GPU fused product: 64×64 output tile per workgroup of 16×16 invocations, each owning 4×4
// outputs; k in steps of 16 through a tile of activations and a tile of W_eff, both in workgroup
// memory. The W_eff tile (16×64) is formed by the workgroup from W0, A and B (r FMAs per
// element, read through the caches), so the factor costs r/64 of the product.

// t_act[kk·16 + m/4][m%4] = act[row0 + m, k0 + kk]; t_w likewise with columns of op(W).
var<workgroup> t_act: array<vec4<f32>, 256>;
var<workgroup> t_w: array<vec4<f32>, 256>;

// op(W_eff)[k, n], or 0 outside K×N.
fn mm_weff(k: u32, n: u32) -> f32 {
  if (k >= mp.K || n >= mp.N) { return 0.0; }
  var o = n;
  var i = k;
  if (DX) {
    o = k;
    i = n;
  }
  var s = 1.0;
  for (var j = 0u; j < mp.rank; j++) {
    s = fma(m_b_e(o * mp.rank + j), m_a_e(j * mp.in_f + i), s);
  }
  return m_w0_e(o * mp.in_f + i) * s;
}

@compute @workgroup_size(16, 16)
fn mm_tiled(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let tile = wg.x + wg.y * nwg.x;
  if (tile >= mp.totalTiles) { return; }
  let row0 = (tile / mp.tilesN) * TILE;
  let col0 = (tile % mp.tilesN) * TILE;
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < mp.K; k0 += TBK) {
    {
      // Activations are contiguous along k: 4 ks of one row per invocation.
      let m = li / 4u;
      let kk = (li % 4u) * 4u;
      for (var j = 0u; j < 4u; j++) {
        let k = k0 + kk + j;
        var v = 0.0;
        if (row0 + m < mp.M && k < mp.K) { v = m_act_e((row0 + m) * mp.K + k); }
        t_act[(kk + j) * 16u + m / 4u][m % 4u] = v;
      }
    }
    {
      // 4 columns at one k per invocation.
      let kk = li / 16u;
      let n = (li % 16u) * 4u;
      t_w[kk * 16u + n / 4u] = vec4(mm_weff(k0 + kk, col0 + n), mm_weff(k0 + kk, col0 + n + 1u),
        mm_weff(k0 + kk, col0 + n + 2u), mm_weff(k0 + kk, col0 + n + 3u));
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TBK; kk++) {
      let av = t_act[kk * 16u + lid.y];
      let bv = t_w[kk * 16u + lid.x];
      acc[0] = fma(vec4(av.x), bv, acc[0]);
      acc[1] = fma(vec4(av.y), bv, acc[1]);
      acc[2] = fma(vec4(av.z), bv, acc[2]);
      acc[3] = fma(vec4(av.w), bv, acc[3]);
    }
    workgroupBarrier();
  }
  for (var q = 0u; q < 4u; q++) {
    mm_store4(row0 + lid.y * 4u + q, col0 + lid.x * 4u, acc[q], ACC);
  }
}
