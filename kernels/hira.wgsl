// HiRA kernels. Shapes: W0 [out, in] (element type WTYPE, read as f32), A [r, in], B [out, r],
// activations [N, in] / [N, out]; everything else row-major f32.
//
// Two families:
// - Unfused (the reference's order of operations, kept as the path the fused kernels are tested
//   against): apply_factor turns B·A (a matmul-kernel product) into W0 ⊙ (1 + B·A) or PEFT's
//   W0 ⊙ (B·A); mul_inplace forms W0 ⊙ G; effective_weight, delta_weight and unmerge do the
//   whole element with the rank sum in order (one invocation per element, 2r loads each).
// - Fused: mm_* multiply activations by W_eff = W0 ⊙ (1 + B·A) forming W_eff tile by tile
//   (never written to memory): forward y = x·W_effᵀ (DX false) and dX = dY·W_eff (DX true).
//   grad_* compute G = dYᵀ·X tile by tile, M = W0 ⊙ G in registers, and write per-tile partial
//   sums of dB = M·Aᵀ and dA = Bᵀ·M; reduce_grads adds the partials into the gradients. The
//   out × in matrices G and M are never written.
//   "cpu" entries suit CPU rasterizers (register blocks, vec4 loads, addresses stepped by
//   constants, as kernels/matmul.wgsl's cpu entry; workgroup memory only where sharing pays for
//   its barriers: on llvmpipe a kernel with a barrier runs its invocations as coroutines, which
//   costs ~1 µs per invocation group and barrier); "tiled" entries stage tiles in workgroup
//   memory for real GPUs.
//
// Every entry of this file is compiled with the defines WTYPE (f32 or the half type), DX, ACC,
// RANK, RB, CB, BL (= RANK·CB), KS, VEC_K, VEC_IN, VEC_R, VEC_N; entries ignore the ones they do
// not use (the host passes fixed values for them).

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return gid.x + gid.y * nwg.x * 256u;
}

// ---------------------------------------------------------------------------------------------
// Unfused kernels.
// ---------------------------------------------------------------------------------------------

struct WeightParams {
  out_features: u32,
  in_features: u32,
  rank: u32,
}

@group(0) @binding(0) var<uniform> wp: WeightParams;
@group(0) @binding(1) var<storage, read> w_src: array<{{WTYPE}}>;
@group(0) @binding(2) var<storage, read> lora_a: array<f32>;
@group(0) @binding(3) var<storage, read> lora_b: array<f32>;
@group(0) @binding(4) var<storage, read_write> w_dst: array<f32>;

// Σ_r B[o, r]·A[r, i]
fn rank_product(o: u32, i: u32) -> f32 {
  var s = 0.0;
  for (var k = 0u; k < wp.rank; k++) {
    s += lora_b[o * wp.rank + k] * lora_a[k * wp.in_features + i];
  }
  return s;
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
  w_dst[idx] = f32(w_src[idx]) * (1.0 + rank_product(o, i));
}

// w_dst = W0 ⊙ (B·A): PEFT's stored delta weight (the bench's unfused PEFT-style path).
@compute @workgroup_size(256)
fn delta_weight(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let idx = flat(gid, nwg);
  if (idx >= wp.out_features * wp.in_features) { return; }
  let o = idx / wp.in_features;
  let i = idx % wp.in_features;
  w_dst[idx] = f32(w_src[idx]) * rank_product(o, i);
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
  w_dst[idx] = f32(w_src[idx]) / (1.0 + rank_product(o, i));
}

struct ElemParams {
  n: u32,
  cols: u32,
}

@group(0) @binding(0) var<uniform> ep: ElemParams;
@group(0) @binding(1) var<storage, read> e_src: array<{{WTYPE}}>;
@group(0) @binding(2) var<storage, read_write> e_dst: array<f32>;

// e_dst ⊙= e_src in place (M = W0 ⊙ G overwrites G, which is not needed afterwards).
@compute @workgroup_size(256)
fn mul_inplace(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat(gid, nwg);
  if (i >= ep.n) { return; }
  e_dst[i] = e_dst[i] * f32(e_src[i]);
}

struct FactorParams {
  n: u32,
  one: f32,
}

@group(0) @binding(0) var<uniform> fp: FactorParams;
@group(0) @binding(1) var<storage, read> f_w0: array<{{WTYPE}}>;
@group(0) @binding(2) var<storage, read_write> f_dst: array<f32>;

// f_dst = W0 ⊙ (one + f_dst) in place, where f_dst holds B·A (from the matmul kernel): W_eff
// with one = 1, PEFT's delta weight with one = 0.
@compute @workgroup_size(256)
fn apply_factor(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let i = flat(gid, nwg);
  if (i >= fp.n) { return; }
  f_dst[i] = f32(f_w0[i]) * (fp.one + f_dst[i]);
}

// ---------------------------------------------------------------------------------------------
// Fused activation × W_eff product.
//   DX false (forward): out[m, n] = Σ_k act[m, k]·W_eff[n, k]   (act = x [M, in], N = out)
//   DX true  (dX):      out[m, n] = Σ_k act[m, k]·W_eff[k, n]   (act = dY [M, out], N = in)
// so op(W)[k, n] is W_eff[n, k] or W_eff[k, n]. All operands are bound as vec4 arrays (the host
// rounds the windows up); single elements are read through the e*() helpers.
// ---------------------------------------------------------------------------------------------

struct MmParams {
  M: u32,
  N: u32,
  K: u32,
  out_f: u32,
  in_f: u32,
  rank: u32,
  tilesN: u32,
  totalTiles: u32,
  // mm_cpu_strip: rows per workgroup segment (a multiple of 4·RB).
  segRows: u32,
}

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

// One output row of a 4×4 block: acc + Σ_kk x[kk]·w[kk].
fn mac_row(acc: vec4<f32>, x: vec4<f32>, w: mat4x4<f32>) -> vec4<f32> {
  return fma(vec4(x.w), w[3], fma(vec4(x.z), w[2], fma(vec4(x.y), w[1], fma(vec4(x.x), w[0],
    acc))));
}

// Adds am·bm to a 4×4 block: column q of acc (output row q) += Σ_kk am[q][kk]·bm[kk].
fn mac_block(acc: ptr<function, mat4x4<f32>>, am: mat4x4<f32>, bm: mat4x4<f32>) {
  (*acc)[0] = mac_row((*acc)[0], am[0], bm);
  (*acc)[1] = mac_row((*acc)[1], am[1], bm);
  (*acc)[2] = mac_row((*acc)[2], am[2], bm);
  (*acc)[3] = mac_row((*acc)[3], am[3], bm);
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

// One block row (4 output rows from m) against the CB column blocks.
fn mm_block_row(
  c0: ptr<function, mat4x4<f32>>,
  c1: ptr<function, mat4x4<f32>>,
  c2: ptr<function, mat4x4<f32>>,
  c3: ptr<function, mat4x4<f32>>,
  m: u32,
  k: u32,
  w0: mat4x4<f32>,
  w1: mat4x4<f32>,
  w2: mat4x4<f32>,
  w3: mat4x4<f32>,
) {
  let am = mm_act_block(m, k);
  mac_block(c0, am, w0);
  if (CB > 1u) { mac_block(c1, am, w1); }
  if (CB > 2u) { mac_block(c2, am, w2); }
  if (CB > 3u) { mac_block(c3, am, w3); }
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
    mm_block_row(&c00, &c01, &c02, &c03, m0, k, w0, w1, w2, w3);
    if (RB > 1u) { mm_block_row(&c10, &c11, &c12, &c13, m0 + 4u, k, w0, w1, w2, w3); }
    if (RB > 2u) { mm_block_row(&c20, &c21, &c22, &c23, m0 + 8u, k, w0, w1, w2, w3); }
    if (RB > 3u) { mm_block_row(&c30, &c31, &c32, &c33, m0 + 12u, k, w0, w1, w2, w3); }
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

// Adds am·[w0 w1 w2 w3] to one block row, output row by output row across the blocks (as
// kernels/matmul.wgsl's macBlockRow, which measured faster than block by block).
fn mm_rows(
  c0: ptr<function, mat4x4<f32>>,
  c1: ptr<function, mat4x4<f32>>,
  c2: ptr<function, mat4x4<f32>>,
  c3: ptr<function, mat4x4<f32>>,
  am: mat4x4<f32>,
  w0: mat4x4<f32>,
  w1: mat4x4<f32>,
  w2: mat4x4<f32>,
  w3: mat4x4<f32>,
) {
  mm_row(c0, c1, c2, c3, 0u, am[0], w0, w1, w2, w3);
  mm_row(c0, c1, c2, c3, 1u, am[1], w0, w1, w2, w3);
  mm_row(c0, c1, c2, c3, 2u, am[2], w0, w1, w2, w3);
  mm_row(c0, c1, c2, c3, 3u, am[3], w0, w1, w2, w3);
}

fn mm_row(
  c0: ptr<function, mat4x4<f32>>,
  c1: ptr<function, mat4x4<f32>>,
  c2: ptr<function, mat4x4<f32>>,
  c3: ptr<function, mat4x4<f32>>,
  q: u32,
  x: vec4<f32>,
  w0: mat4x4<f32>,
  w1: mat4x4<f32>,
  w2: mat4x4<f32>,
  w3: mat4x4<f32>,
) {
  (*c0)[q] = mac_row((*c0)[q], x, w0);
  if (CB > 1u) { (*c1)[q] = mac_row((*c1)[q], x, w1); }
  if (CB > 2u) { (*c2)[q] = mac_row((*c2)[q], x, w2); }
  if (CB > 3u) { (*c3)[q] = mac_row((*c3)[q], x, w3); }
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
        mm_rows(&c00, &c01, &c02, &c03, mm_act_at(ao0, m0, k), w0, w1, w2, w3);
        if (RB > 1u) {
          mm_rows(&c10, &c11, &c12, &c13, mm_act_at(ao1, m0 + 4u, k), w0, w1, w2, w3);
        }
        if (RB > 2u) {
          mm_rows(&c20, &c21, &c22, &c23, mm_act_at(ao2, m0 + 8u, k), w0, w1, w2, w3);
        }
        if (RB > 3u) {
          mm_rows(&c30, &c31, &c32, &c33, mm_act_at(ao3, m0 + 12u, k), w0, w1, w2, w3);
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
const TILE: u32 = 64u;
const TBK: u32 = 16u;

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

// ---------------------------------------------------------------------------------------------
// Fused adapter gradients. With G = dYᵀ·X and M = W0 ⊙ G ([out, in], never stored):
//   dB = M·Aᵀ [out, r] and dA = Bᵀ·M [r, in].
// A workgroup covers a block of `in` columns and a block (segment) of `out` rows; it writes
//   d_bp[column block, o, j] = Σ_{i in its columns} M[o, i]·A[j, i]
//   d_ap[row block, j, i]    = Σ_{o in its rows} B[o, j]·M[o, i]
// which reduce_grads then sums into the gradients (the partials are r/(block width) and
// r/(block height) of W0's size).
// ---------------------------------------------------------------------------------------------

struct GradParams {
  N: u32,
  out_f: u32,
  in_f: u32,
  rank: u32,
  // grad_cpu: 16-row blocks of `out` per segment.
  blocks_per_seg: u32,
  // grad_tiled: 64×64 tiles per workgroup along `in` and along `out`.
  tiles_c: u32,
  tiles_r: u32,
}

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

fn g_block_row(
  c0: ptr<function, mat4x4<f32>>,
  c1: ptr<function, mat4x4<f32>>,
  c2: ptr<function, mat4x4<f32>>,
  c3: ptr<function, mat4x4<f32>>,
  am: mat4x4<f32>,
  b0: mat4x4<f32>,
  b1: mat4x4<f32>,
  b2: mat4x4<f32>,
  b3: mat4x4<f32>,
) {
  mac_block(c0, am, b0);
  if (CB > 1u) { mac_block(c1, am, b1); }
  if (CB > 2u) { mac_block(c2, am, b2); }
  if (CB > 3u) { mac_block(c3, am, b3); }
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
      mm_rows(&g00, &g01, &g02, &g03, g_dy_at(d0, t, o0), b0, b1, b2, b3);
      mm_rows(&g10, &g11, &g12, &g13, g_dy_at(d1, t, o0 + 4u), b0, b1, b2, b3);
      mm_rows(&g20, &g21, &g22, &g23, g_dy_at(d2, t, o0 + 8u), b0, b1, b2, b3);
      mm_rows(&g30, &g31, &g32, &g33, g_dy_at(d3, t, o0 + 12u), b0, b1, b2, b3);
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
      g_block_row(&g00, &g01, &g02, &g03, g_dy_block(t, o0), b0, b1, b2, b3);
      g_block_row(&g10, &g11, &g12, &g13, g_dy_block(t, o0 + 4u), b0, b1, b2, b3);
      g_block_row(&g20, &g21, &g22, &g23, g_dy_block(t, o0 + 8u), b0, b1, b2, b3);
      g_block_row(&g30, &g31, &g32, &g33, g_dy_block(t, o0 + 12u), b0, b1, b2, b3);
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

struct ReduceParams {
  len_a: u32,
  parts_a: u32,
  len_b: u32,
  parts_b: u32,
}

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
