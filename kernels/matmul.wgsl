// C = alpha·op(A)·op(B) (+ C) for row-major f32 matrices, batched.
//
// Output tiles of every batch are numbered in one flat range so that any M·N·batch fits the
// 65535-per-dimension workgroup limit: tile = wg.x + wg.y·nwg.x (see grid() in lib/gpu.ts).
//
// a and b are bound as vec4 arrays even where a layout is ragged: the CPU kernel's speed on
// llvmpipe comes from loading four floats per load instruction, and one declaration per binding
// keeps every entry point of this file valid on browsers that reject two variables sharing a
// binding. Single elements are read with ea()/eb() instead. The host rounds both windows up to
// whole vec4s.
//
// Defines (all are substituted for every entry point):
//   TRANS_A, TRANS_B  "true"/"false": a is stored [K, M] / b is stored [N, K].
//   VEC_A, VEC_B      "true" when the operand's contiguous dimension is a multiple of 4 (and so
//                     are its batch strides), so the CPU kernel may load whole vec4s of it.
//   KTAIL             "true" when K % 4 != 0: the CPU kernel then zeroes k >= K in its last step.
//   RB, CB, LX, LY    CPU kernel shape: each invocation owns RB×CB blocks of 4×4 outputs and a
//                     workgroup is LX (along N) × LY (along M) invocations.

struct Params {
  M: u32,
  N: u32,
  K: u32,
  tilesN: u32,
  tilesPerBatch: u32,
  totalTiles: u32,
  aBatch: u32,
  bBatch: u32,
  outBatch: u32,
  outStride: u32,
  outOffset: u32,
  accumulate: u32,
  alpha: f32,
}

const TRANS_A: bool = {{TRANS_A}};
const TRANS_B: bool = {{TRANS_B}};
const VEC_A: bool = {{VEC_A}};
const VEC_B: bool = {{VEC_B}};
const KTAIL: bool = {{KTAIL}};
const RB: u32 = {{RB}}u;
const CB: u32 = {{CB}}u;
const LX: u32 = {{LX}}u;
const LY: u32 = {{LY}}u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

fn ea(i: u32) -> f32 {
  return a[i >> 2u][i & 3u];
}

fn eb(i: u32) -> f32 {
  return b[i >> 2u][i & 3u];
}

// Element index of op(A)[m, k] / op(B)[k, n] relative to the batch base.
fn idxA(m: u32, k: u32) -> u32 {
  if (TRANS_A) { return k * p.M + m; }
  return m * p.K + k;
}

fn idxB(k: u32, n: u32) -> u32 {
  if (TRANS_B) { return n * p.K + k; }
  return k * p.N + n;
}

// Writes row r, columns n0..n0+3 of one batch's output (those inside M×N).
fn store4(cBase: u32, r: u32, n0: u32, v: vec4<f32>) {
  if (r >= p.M) { return; }
  let row = cBase + r * p.outStride;
  for (var j = 0u; j < 4u; j++) {
    let n = n0 + j;
    if (n < p.N) {
      let i = row + n;
      if (p.accumulate != 0u) {
        c[i] = fma(p.alpha, v[j], c[i]);
      } else {
        c[i] = p.alpha * v[j];
      }
    }
  }
}

struct TileOrigin {
  batch: u32,
  row: u32,
  col: u32,
}

fn tileOrigin(tile: u32, tm: u32, tn: u32) -> TileOrigin {
  let t = tile % p.tilesPerBatch;
  return TileOrigin(tile / p.tilesPerBatch, (t / p.tilesN) * tm, (t % p.tilesN) * tn);
}

// ---------------------------------------------------------------------------------------------
// CPU-adapter kernel (llvmpipe/lavapipe): no workgroup memory, no barriers. A CPU rasterizer
// runs 8 invocations in SIMD lanes and turns every storage load into a per-lane loop, so the
// cost is the number of load instructions: each invocation keeps up to 16×16 outputs in
// registers (spilling is cheaper than loading) and loads whole vec4s along the contiguous axis.
// ---------------------------------------------------------------------------------------------

// op(A) rows m0..m0+3 at k..k+3, as a matrix whose column q is op(A)[m0+q, k..k+3]. Rows past
// M are clamped (their outputs are never stored); with KTAIL, entries with k >= K are zeroed.
fn loadA(base: u32, m0: u32, k: u32) -> mat4x4<f32> {
  var r: mat4x4<f32>;
  if (VEC_A && TRANS_A) {
    let m = min(m0, p.M - 4u);
    r = transpose(mat4x4<f32>(
      a[(base + k * p.M + m) >> 2u],
      a[(base + (k + 1u) * p.M + m) >> 2u],
      a[(base + (k + 2u) * p.M + m) >> 2u],
      a[(base + (k + 3u) * p.M + m) >> 2u],
    ));
  } else if (VEC_A) {
    let last = p.M - 1u;
    r = mat4x4<f32>(
      a[(base + min(m0, last) * p.K + k) >> 2u],
      a[(base + min(m0 + 1u, last) * p.K + k) >> 2u],
      a[(base + min(m0 + 2u, last) * p.K + k) >> 2u],
      a[(base + min(m0 + 3u, last) * p.K + k) >> 2u],
    );
  } else {
    for (var q = 0u; q < 4u; q++) {
      let i = base + idxA(min(m0 + q, p.M - 1u), k);
      if (TRANS_A) {
        r[q] = vec4(ea(i), ea(i + p.M), ea(i + 2u * p.M), ea(i + 3u * p.M));
      } else {
        r[q] = vec4(ea(i), ea(i + 1u), ea(i + 2u), ea(i + 3u));
      }
    }
  }
  if (KTAIL) {
    let keep = vec4<u32>(k, k + 1u, k + 2u, k + 3u) < vec4(p.K);
    for (var q = 0u; q < 4u; q++) { r[q] = select(vec4(0.0), r[q], keep); }
  }
  return r;
}

// op(B) rows k..k+3 at columns n0..n0+3, as a matrix whose column kk is op(B)[k+kk, n0..n0+3].
fn loadB(base: u32, n0: u32, k: u32) -> mat4x4<f32> {
  var r: mat4x4<f32>;
  if (VEC_B && TRANS_B) {
    let last = p.N - 1u;
    r = transpose(mat4x4<f32>(
      b[(base + min(n0, last) * p.K + k) >> 2u],
      b[(base + min(n0 + 1u, last) * p.K + k) >> 2u],
      b[(base + min(n0 + 2u, last) * p.K + k) >> 2u],
      b[(base + min(n0 + 3u, last) * p.K + k) >> 2u],
    ));
  } else if (VEC_B) {
    let n = min(n0, p.N - 4u);
    r = mat4x4<f32>(
      b[(base + k * p.N + n) >> 2u],
      b[(base + (k + 1u) * p.N + n) >> 2u],
      b[(base + (k + 2u) * p.N + n) >> 2u],
      b[(base + (k + 3u) * p.N + n) >> 2u],
    );
  } else {
    let last = p.N - 1u;
    let i0 = base + idxB(k, min(n0, last));
    let i1 = base + idxB(k, min(n0 + 1u, last));
    let i2 = base + idxB(k, min(n0 + 2u, last));
    let i3 = base + idxB(k, min(n0 + 3u, last));
    // One step along k in B's storage.
    var dk = p.N;
    if (TRANS_B) { dk = 1u; }
    for (var kk = 0u; kk < 4u; kk++) {
      let o = kk * dk;
      r[kk] = vec4(eb(i0 + o), eb(i1 + o), eb(i2 + o), eb(i3 + o));
    }
  }
  if (KTAIL) {
    for (var kk = 0u; kk < 4u; kk++) {
      if (k + kk >= p.K) { r[kk] = vec4(0.0); }
    }
  }
  return r;
}

// acc + the 4×4 output block of am·bm (columns of acc and am are output rows).
fn mac(acc: mat4x4<f32>, am: mat4x4<f32>, bm: mat4x4<f32>) -> mat4x4<f32> {
  var r = acc;
  for (var q = 0u; q < 4u; q++) {
    let x = am[q];
    r[q] = fma(bm[3], vec4(x.w), fma(bm[2], vec4(x.z), fma(bm[1], vec4(x.y),
      fma(bm[0], vec4(x.x), r[q]))));
  }
  return r;
}

fn storeBlock(cBase: u32, m0: u32, n0: u32, v: mat4x4<f32>) {
  for (var q = 0u; q < 4u; q++) { store4(cBase, m0 + q, n0, v[q]); }
}

// Blocks beyond RB/CB are dead code: the guards are constants.
@compute @workgroup_size(LX, LY)
fn cpu(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
) {
  let tile = wg.x + wg.y * nwg.x;
  if (tile >= p.totalTiles) { return; }
  let o = tileOrigin(tile, LY * RB * 4u, LX * CB * 4u);
  let m0 = o.row + lid.y * RB * 4u;
  let n0 = o.col + lid.x * CB * 4u;
  let aBase = o.batch * p.aBatch;
  let bBase = o.batch * p.bBatch;
  var c00: mat4x4<f32>; var c01: mat4x4<f32>; var c02: mat4x4<f32>; var c03: mat4x4<f32>;
  var c10: mat4x4<f32>; var c11: mat4x4<f32>; var c12: mat4x4<f32>; var c13: mat4x4<f32>;
  var c20: mat4x4<f32>; var c21: mat4x4<f32>; var c22: mat4x4<f32>; var c23: mat4x4<f32>;
  var c30: mat4x4<f32>; var c31: mat4x4<f32>; var c32: mat4x4<f32>; var c33: mat4x4<f32>;
  for (var k = 0u; k < p.K; k += 4u) {
    var a0: mat4x4<f32>; var a1: mat4x4<f32>; var a2: mat4x4<f32>; var a3: mat4x4<f32>;
    var b0: mat4x4<f32>; var b1: mat4x4<f32>; var b2: mat4x4<f32>; var b3: mat4x4<f32>;
    a0 = loadA(aBase, m0, k);
    if (RB > 1u) { a1 = loadA(aBase, m0 + 4u, k); }
    if (RB > 2u) { a2 = loadA(aBase, m0 + 8u, k); }
    if (RB > 3u) { a3 = loadA(aBase, m0 + 12u, k); }
    b0 = loadB(bBase, n0, k);
    if (CB > 1u) { b1 = loadB(bBase, n0 + 4u, k); }
    if (CB > 2u) { b2 = loadB(bBase, n0 + 8u, k); }
    if (CB > 3u) { b3 = loadB(bBase, n0 + 12u, k); }
    c00 = mac(c00, a0, b0);
    if (CB > 1u) { c01 = mac(c01, a0, b1); }
    if (CB > 2u) { c02 = mac(c02, a0, b2); }
    if (CB > 3u) { c03 = mac(c03, a0, b3); }
    if (RB > 1u) {
      c10 = mac(c10, a1, b0);
      if (CB > 1u) { c11 = mac(c11, a1, b1); }
      if (CB > 2u) { c12 = mac(c12, a1, b2); }
      if (CB > 3u) { c13 = mac(c13, a1, b3); }
    }
    if (RB > 2u) {
      c20 = mac(c20, a2, b0);
      if (CB > 1u) { c21 = mac(c21, a2, b1); }
      if (CB > 2u) { c22 = mac(c22, a2, b2); }
      if (CB > 3u) { c23 = mac(c23, a2, b3); }
    }
    if (RB > 3u) {
      c30 = mac(c30, a3, b0);
      if (CB > 1u) { c31 = mac(c31, a3, b1); }
      if (CB > 2u) { c32 = mac(c32, a3, b2); }
      if (CB > 3u) { c33 = mac(c33, a3, b3); }
    }
  }
  let cBase = p.outOffset + o.batch * p.outBatch;
  storeBlock(cBase, m0, n0, c00);
  if (CB > 1u) { storeBlock(cBase, m0, n0 + 4u, c01); }
  if (CB > 2u) { storeBlock(cBase, m0, n0 + 8u, c02); }
  if (CB > 3u) { storeBlock(cBase, m0, n0 + 12u, c03); }
  if (RB > 1u) {
    storeBlock(cBase, m0 + 4u, n0, c10);
    if (CB > 1u) { storeBlock(cBase, m0 + 4u, n0 + 4u, c11); }
    if (CB > 2u) { storeBlock(cBase, m0 + 4u, n0 + 8u, c12); }
    if (CB > 3u) { storeBlock(cBase, m0 + 4u, n0 + 12u, c13); }
  }
  if (RB > 2u) {
    storeBlock(cBase, m0 + 8u, n0, c20);
    if (CB > 1u) { storeBlock(cBase, m0 + 8u, n0 + 4u, c21); }
    if (CB > 2u) { storeBlock(cBase, m0 + 8u, n0 + 8u, c22); }
    if (CB > 3u) { storeBlock(cBase, m0 + 8u, n0 + 12u, c23); }
  }
  if (RB > 3u) {
    storeBlock(cBase, m0 + 12u, n0, c30);
    if (CB > 1u) { storeBlock(cBase, m0 + 12u, n0 + 4u, c31); }
    if (CB > 2u) { storeBlock(cBase, m0 + 12u, n0 + 8u, c32); }
    if (CB > 3u) { storeBlock(cBase, m0 + 12u, n0 + 12u, c33); }
  }
}

// ---------------------------------------------------------------------------------------------
// GPU kernel: 64×64 output tile per workgroup of 16×16 invocations, each owning 4×4 outputs;
// K is walked in steps of 16 through tiles of op(A) and op(B) in workgroup memory (8 KiB).
// Each invocation loads 4 elements of each tile along the operand's contiguous axis so that
// neighbouring invocations read neighbouring addresses whatever the layout.
// ---------------------------------------------------------------------------------------------

const TILE: u32 = 64u;
const TBK: u32 = 16u;

// tileA[kk * 16 + m / 4][m % 4] = op(A)[row0 + m, k0 + kk]; tileB likewise with columns.
var<workgroup> tileA: array<vec4<f32>, 256>;
var<workgroup> tileB: array<vec4<f32>, 256>;

fn fetchA(base: u32, m: u32, k: u32) -> f32 {
  if (m < p.M && k < p.K) { return ea(base + idxA(m, k)); }
  return 0.0;
}

fn fetchB(base: u32, k: u32, n: u32) -> f32 {
  if (k < p.K && n < p.N) { return eb(base + idxB(k, n)); }
  return 0.0;
}

@compute @workgroup_size(16, 16)
fn tiled(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let tile = wg.x + wg.y * nwg.x;
  if (tile >= p.totalTiles) { return; }
  let o = tileOrigin(tile, TILE, TILE);
  let aBase = o.batch * p.aBatch;
  let bBase = o.batch * p.bBatch;
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < p.K; k0 += TBK) {
    if (TRANS_A) {
      // Contiguous along m: 4 rows at one k.
      let kk = li / 16u;
      let m = (li % 16u) * 4u;
      tileA[kk * 16u + m / 4u] = vec4(
        fetchA(aBase, o.row + m, k0 + kk),
        fetchA(aBase, o.row + m + 1u, k0 + kk),
        fetchA(aBase, o.row + m + 2u, k0 + kk),
        fetchA(aBase, o.row + m + 3u, k0 + kk),
      );
    } else {
      // Contiguous along k: 4 ks of one row.
      let m = li / 4u;
      let kk = (li % 4u) * 4u;
      for (var j = 0u; j < 4u; j++) {
        tileA[(kk + j) * 16u + m / 4u][m % 4u] = fetchA(aBase, o.row + m, k0 + kk + j);
      }
    }
    if (TRANS_B) {
      let n = li / 4u;
      let kk = (li % 4u) * 4u;
      for (var j = 0u; j < 4u; j++) {
        tileB[(kk + j) * 16u + n / 4u][n % 4u] = fetchB(bBase, k0 + kk + j, o.col + n);
      }
    } else {
      let kk = li / 16u;
      let n = (li % 16u) * 4u;
      tileB[kk * 16u + n / 4u] = vec4(
        fetchB(bBase, k0 + kk, o.col + n),
        fetchB(bBase, k0 + kk, o.col + n + 1u),
        fetchB(bBase, k0 + kk, o.col + n + 2u),
        fetchB(bBase, k0 + kk, o.col + n + 3u),
      );
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TBK; kk++) {
      let av = tileA[kk * 16u + lid.y];
      let bv = tileB[kk * 16u + lid.x];
      acc[0] = fma(vec4(av.x), bv, acc[0]);
      acc[1] = fma(vec4(av.y), bv, acc[1]);
      acc[2] = fma(vec4(av.z), bv, acc[2]);
      acc[3] = fma(vec4(av.w), bv, acc[3]);
    }
    workgroupBarrier();
  }
  let cBase = p.outOffset + o.batch * p.outBatch;
  for (var i = 0u; i < 4u; i++) {
    store4(cBase, o.row + lid.y * 4u + i, o.col + lid.x * 4u, acc[i]);
  }
}
