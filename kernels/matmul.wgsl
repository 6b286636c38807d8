// C = alpha·op(A)·op(B) (+ C) for row-major matrices, batched: C is f32, A and B f32 or f16
// (frozen weights stored in f16), always accumulated in f32.
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
//   TRANS_C           "true": the kernel computes Cᵀ (its M and N are out's N and M) and stores it
//                     transposed, so out's layout is as without it.
//   VEC_A, VEC_B      "true" when the operand's contiguous dimension is a multiple of 4 (and so
//                     are its batch strides), so the CPU kernel may load whole vec4s of it.
//   VEC_C             "true" when N, outStride and outOffset are multiples of 4: whole-vec4 stores.
//   KTAIL             "true" when K % 4 != 0: the CPU kernel then zeroes k >= K in its last step.
//   ACC               "true": out += alpha·op(A)·op(B) (a define, not a uniform: the read of out
//                     doubles the store code, which dominates compile time on llvmpipe).
//   RB, CB, LX, LY    CPU kernel shape: each invocation owns RB×CB blocks of 4×4 outputs and a
//                     workgroup is LX (along N) × LY (along M) invocations.
//   ATYPE, BTYPE      element type of a / b: "f32" or "f16" (then lib/gpu.ts prepends the f16
//                     enable directive). Every load goes through va/vb/ea/eb (widened to f32).
//   SG_OPEN, SG_CLOSE "" for the subgroup entry point; a block comment's opener and closer for
//                     every other one, so the subgroup section (at the end) is a comment there
//                     and the file also compiles on devices without the subgroups feature
//                     (lib/gpu.ts adds the subgroups enable directive where the device has it).

//! include "common/mac_block_row.wgsl"

//! struct Params

const TRANS_A: bool = {{TRANS_A}};
const TRANS_B: bool = {{TRANS_B}};
const TRANS_C: bool = {{TRANS_C}};
const VEC_A: bool = {{VEC_A}};
const VEC_B: bool = {{VEC_B}};
const VEC_C: bool = {{VEC_C}};
const KTAIL: bool = {{KTAIL}};
const ACC: bool = {{ACC}};
const RB: u32 = {{RB}}u;
const CB: u32 = {{CB}}u;
const LX: u32 = {{LX}}u;
const LY: u32 = {{LY}}u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<{{ATYPE}}>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<{{BTYPE}}>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;

fn ea(i: u32) -> f32 {
  return f32(a[i >> 2u][i & 3u]);
}

fn eb(i: u32) -> f32 {
  return f32(b[i >> 2u][i & 3u]);
}

fn va(i: u32) -> vec4<f32> {
  return vec4<f32>(a[i]);
}

fn vb(i: u32) -> vec4<f32> {
  return vec4<f32>(b[i]);
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

// Writes row r, columns n0..n0+3 of one batch's output (those inside M×N). With TRANS_C the
// kernel computed the transposed product: its row r is column r of out.
fn store4(cBase: u32, r: u32, n0: u32, v: vec4<f32>) {
  if (r >= p.M || n0 >= p.N) { return; }
  var w = p.alpha * v;
  if (VEC_C && !TRANS_C) {
    let i = (cBase + r * p.outStride + n0) >> 2u;
    if (ACC) { w += c[i]; }
    c[i] = w;
    return;
  }
  // One element at a time; columns past N are clamped for the reads and skipped for the writes.
  let n = min(vec4(n0) + vec4<u32>(0u, 1u, 2u, 3u), vec4(p.N - 1u));
  var idx: vec4<u32>;
  if (TRANS_C) {
    idx = cBase + n * p.outStride + r;
  } else {
    idx = cBase + r * p.outStride + n;
  }
  if (ACC) {
    w += vec4(c[idx.x >> 2u][idx.x & 3u], c[idx.y >> 2u][idx.y & 3u], c[idx.z >> 2u][idx.z & 3u],
      c[idx.w >> 2u][idx.w & 3u]);
  }
  c[idx.x >> 2u][idx.x & 3u] = w.x;
  if (n0 + 1u < p.N) { c[idx.y >> 2u][idx.y & 3u] = w.y; }
  if (n0 + 2u < p.N) { c[idx.z >> 2u][idx.z & 3u] = w.z; }
  if (n0 + 3u < p.N) { c[idx.w >> 2u][idx.w & 3u] = w.w; }
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
// registers (spilling them is cheaper than loading more) and loads whole vec4s along the
// contiguous axis. Addresses advance by a constant step per k so the loop does no index math.
// ---------------------------------------------------------------------------------------------

// Per-k-step advance of an A (B) address vector from aOffsets (bOffsets): 4 ks, in the units
// loadA (loadB) indexes with (vec4s on the vec4 paths, elements otherwise).
fn aStep() -> u32 {
  if (VEC_A && TRANS_A) { return p.M; }
  if (VEC_A) { return 1u; }
  if (TRANS_A) { return 4u * p.M; }
  return 4u;
}

fn bStep() -> u32 {
  if (VEC_B && TRANS_B) { return 1u; }
  if (VEC_B) { return p.N; }
  if (TRANS_B) { return 4u; }
  return 4u * p.N;
}

// Addresses of the op(A) rows m0..m0+3 at k = 0. Rows past M are clamped: their outputs are
// never stored. Vec4 paths: the vec4 of row q (or, transposed, of k-row q); else row q's first
// element.
fn aOffsets(base: u32, m0: u32) -> vec4<u32> {
  if (VEC_A && TRANS_A) {
    let m4 = p.M >> 2u;
    return (base >> 2u) + min(m0, p.M - 4u) / 4u + vec4<u32>(0u, m4, 2u * m4, 3u * m4);
  }
  let last = p.M - 1u;
  let m = min(vec4<u32>(m0, m0 + 1u, m0 + 2u, m0 + 3u), vec4(last));
  if (VEC_A) { return (base >> 2u) + m * (p.K >> 2u); }
  if (TRANS_A) { return base + m; }
  return base + m * p.K;
}

// Addresses of the op(B) columns n0..n0+3 at k = 0, like aOffsets.
fn bOffsets(base: u32, n0: u32) -> vec4<u32> {
  if (VEC_B && !TRANS_B) {
    let n4 = p.N >> 2u;
    return (base >> 2u) + min(n0, p.N - 4u) / 4u + vec4<u32>(0u, n4, 2u * n4, 3u * n4);
  }
  let last = p.N - 1u;
  let n = min(vec4<u32>(n0, n0 + 1u, n0 + 2u, n0 + 3u), vec4(last));
  if (VEC_B) { return (base >> 2u) + n * (p.K >> 2u); }
  if (TRANS_B) { return base + n * p.K; }
  return base + n;
}

// op(A)[m0..m0+3, k..k+3] as a matrix whose column q is op(A)[m0+q, k..k+3].
fn loadA(o: vec4<u32>, k: u32) -> mat4x4<f32> {
  var r: mat4x4<f32>;
  if (VEC_A && TRANS_A) {
    r = transpose(mat4x4<f32>(va(o.x), va(o.y), va(o.z), va(o.w)));
  } else if (VEC_A) {
    r = mat4x4<f32>(va(o.x), va(o.y), va(o.z), va(o.w));
  } else {
    var s = 1u;
    if (TRANS_A) { s = p.M; }
    r = mat4x4<f32>(
      vec4(ea(o.x), ea(o.x + s), ea(o.x + 2u * s), ea(o.x + 3u * s)),
      vec4(ea(o.y), ea(o.y + s), ea(o.y + 2u * s), ea(o.y + 3u * s)),
      vec4(ea(o.z), ea(o.z + s), ea(o.z + 2u * s), ea(o.z + 3u * s)),
      vec4(ea(o.w), ea(o.w + s), ea(o.w + 2u * s), ea(o.w + 3u * s)),
    );
  }
  if (KTAIL) {
    // The last step reads past K: zero those ks (what was read there is arbitrary).
    let keep = vec4<u32>(k, k + 1u, k + 2u, k + 3u) < vec4(p.K);
    r = mat4x4<f32>(
      select(vec4(0.0), r[0], keep),
      select(vec4(0.0), r[1], keep),
      select(vec4(0.0), r[2], keep),
      select(vec4(0.0), r[3], keep),
    );
  }
  return r;
}

// op(B)[k..k+3, n0..n0+3] as a matrix whose column kk is op(B)[k+kk, n0..n0+3].
fn loadB(o: vec4<u32>, k: u32) -> mat4x4<f32> {
  var r: mat4x4<f32>;
  if (VEC_B && TRANS_B) {
    r = transpose(mat4x4<f32>(vb(o.x), vb(o.y), vb(o.z), vb(o.w)));
  } else if (VEC_B) {
    r = mat4x4<f32>(vb(o.x), vb(o.y), vb(o.z), vb(o.w));
  } else {
    var s = p.N;
    if (TRANS_B) { s = 1u; }
    r = mat4x4<f32>(
      vec4(eb(o.x), eb(o.y), eb(o.z), eb(o.w)),
      vec4(eb(o.x + s), eb(o.y + s), eb(o.z + s), eb(o.w + s)),
      vec4(eb(o.x + 2u * s), eb(o.y + 2u * s), eb(o.z + 2u * s), eb(o.w + 2u * s)),
      vec4(eb(o.x + 3u * s), eb(o.y + 3u * s), eb(o.z + 3u * s), eb(o.w + 3u * s)),
    );
  }
  if (KTAIL) {
    let keep = vec4<u32>(k, k + 1u, k + 2u, k + 3u) < vec4(p.K);
    r = mat4x4<f32>(
      select(vec4(0.0), r[0], keep.x),
      select(vec4(0.0), r[1], keep.y),
      select(vec4(0.0), r[2], keep.z),
      select(vec4(0.0), r[3], keep.w),
    );
  }
  return r;
}

fn storeBlock(cBase: u32, m0: u32, n0: u32, v: mat4x4<f32>) {
  store4(cBase, m0, n0, v[0]);
  store4(cBase, m0 + 1u, n0, v[1]);
  store4(cBase, m0 + 2u, n0, v[2]);
  store4(cBase, m0 + 3u, n0, v[3]);
}

// Blocks beyond RB/CB are dead code: the guards are constants.
@compute @workgroup_size(LX, LY)
fn cpu(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
) {
  // Surplus workgroups of the folded grid redo the last tile and store nothing: returning
  // early would leave every load below under a lane mask, which costs on llvmpipe.
  let flat = wg.x + wg.y * nwg.x;
  let o = tileOrigin(min(flat, p.totalTiles - 1u), LY * RB * 4u, LX * CB * 4u);
  let m0 = o.row + lid.y * RB * 4u;
  let n0 = o.col + lid.x * CB * 4u;
  let aBase = o.batch * p.aBatch;
  let bBase = o.batch * p.bBatch;
  let sa = aStep();
  let sb = bStep();
  var ao0 = aOffsets(aBase, m0);
  var ao1 = aOffsets(aBase, m0 + 4u);
  var ao2 = aOffsets(aBase, m0 + 8u);
  var ao3 = aOffsets(aBase, m0 + 12u);
  var bo0 = bOffsets(bBase, n0);
  var bo1 = bOffsets(bBase, n0 + 4u);
  var bo2 = bOffsets(bBase, n0 + 8u);
  var bo3 = bOffsets(bBase, n0 + 12u);
  var c00: mat4x4<f32>; var c01: mat4x4<f32>; var c02: mat4x4<f32>; var c03: mat4x4<f32>;
  var c10: mat4x4<f32>; var c11: mat4x4<f32>; var c12: mat4x4<f32>; var c13: mat4x4<f32>;
  var c20: mat4x4<f32>; var c21: mat4x4<f32>; var c22: mat4x4<f32>; var c23: mat4x4<f32>;
  var c30: mat4x4<f32>; var c31: mat4x4<f32>; var c32: mat4x4<f32>; var c33: mat4x4<f32>;
  for (var k = 0u; k < p.K; k += 4u) {
    var a0: mat4x4<f32>; var a1: mat4x4<f32>; var a2: mat4x4<f32>; var a3: mat4x4<f32>;
    var b0: mat4x4<f32>; var b1: mat4x4<f32>; var b2: mat4x4<f32>; var b3: mat4x4<f32>;
    // B first, then each A block row just before its products: shorter live ranges than loading
    // everything up front (~5% on lavapipe).
    b0 = loadB(bo0, k);
    if (CB > 1u) { b1 = loadB(bo1, k); }
    if (CB > 2u) { b2 = loadB(bo2, k); }
    if (CB > 3u) { b3 = loadB(bo3, k); }
    a0 = loadA(ao0, k);
    mac_block_row(&c00, &c01, &c02, &c03, a0, b0, b1, b2, b3);
    if (RB > 1u) {
      a1 = loadA(ao1, k);
      mac_block_row(&c10, &c11, &c12, &c13, a1, b0, b1, b2, b3);
    }
    if (RB > 2u) {
      a2 = loadA(ao2, k);
      mac_block_row(&c20, &c21, &c22, &c23, a2, b0, b1, b2, b3);
    }
    if (RB > 3u) {
      a3 = loadA(ao3, k);
      mac_block_row(&c30, &c31, &c32, &c33, a3, b0, b1, b2, b3);
    }
    ao0 += sa; ao1 += sa; ao2 += sa; ao3 += sa;
    bo0 += sb; bo1 += sb; bo2 += sb; bo3 += sb;
  }
  if (flat >= p.totalTiles) { return; }
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

{{SG_OPEN}}
// ---------------------------------------------------------------------------------------------
// Subgroup kernel (real GPUs with the subgroups feature): the tiled kernel's 64×64 output tile
// without workgroup-memory tiles or barriers in the k loop. Four consecutive lanes of a subgroup (a quad) own the
// same 8 rows and 16 adjacent columns, 8×4 outputs per lane. Per step of 4 ks each lane loads a
// quarter of the quad's op(A) block and takes the other three quarters from its neighbours with
// subgroupShuffle; it loads its own op(B) columns, which neighbouring lanes read side by side.
//
// Correct for every subgroup size WebGPU allows (powers of two from 4 to 128, each dividing the
// 128 invocations of a workgroup). Nothing assumes how invocations are grouped into subgroups:
// which quad of the tile a lane's quad computes comes from a per-workgroup atomic counter that
// numbers the subgroups, not from local_invocation_index. It does assume full subgroups, which
// drivers give a workgroup whose size is a multiple of the subgroup size. The text of this
// section must not contain a block comment opener or closer (it is wrapped in one elsewhere).
// ---------------------------------------------------------------------------------------------

// Subgroups seen so far in this workgroup, counted in lanes (zeroed at workgroup start).
var<workgroup> sgLanesTaken: atomic<u32>;

// What lane t of a quad loads of op(A)[m0..m0+3, k..k+3]: without TRANS_A row m0+t at the four
// ks, with TRANS_A (contiguous along m) the four rows at k+t. Zero outside M×K.
fn sgPieceA(base: u32, m0: u32, k: u32, t: u32) -> vec4<f32> {
  if (TRANS_A) {
    let kt = k + t;
    if (VEC_A) {
      if (kt < p.K && m0 < p.M) { return va((base + kt * p.M + m0) >> 2u); }
      return vec4(0.0);
    }
    return vec4(fetchA(base, m0, kt), fetchA(base, m0 + 1u, kt), fetchA(base, m0 + 2u, kt),
      fetchA(base, m0 + 3u, kt));
  }
  let m = m0 + t;
  if (VEC_A) {
    if (m < p.M && k < p.K) { return va((base + m * p.K + k) >> 2u); }
    return vec4(0.0);
  }
  return vec4(fetchA(base, m, k), fetchA(base, m, k + 1u), fetchA(base, m, k + 2u),
    fetchA(base, m, k + 3u));
}

// The quad's op(A)[m0..m0+3, k..k+3] from the four lanes' pieces, as loadA returns it (column q
// is row m0+q at the four ks). Every lane of the subgroup must call it (uniform control flow).
fn sgQuadA(piece: vec4<f32>, quad0: u32) -> mat4x4<f32> {
  let r = mat4x4<f32>(
    subgroupShuffle(piece, quad0),
    subgroupShuffle(piece, quad0 + 1u),
    subgroupShuffle(piece, quad0 + 2u),
    subgroupShuffle(piece, quad0 + 3u),
  );
  if (TRANS_A) { return transpose(r); }
  return r;
}

// op(B)[k..k+3, n0..n0+3] as loadB returns it (column kk is op(B)[k+kk, n0..n0+3]); zero outside
// K×N.
fn sgLoadB(base: u32, k: u32, n0: u32) -> mat4x4<f32> {
  if (VEC_B && TRANS_B) {
    // Column j of rows is column n0+j of op(B) at the four ks.
    var rows: mat4x4<f32>;
    for (var j = 0u; j < 4u; j++) {
      if (n0 + j < p.N && k < p.K) { rows[j] = vb((base + (n0 + j) * p.K + k) >> 2u); }
    }
    return transpose(rows);
  }
  var r: mat4x4<f32>;
  for (var kk = 0u; kk < 4u; kk++) {
    if (VEC_B) {
      if (k + kk < p.K && n0 < p.N) { r[kk] = vb((base + (k + kk) * p.N + n0) >> 2u); }
    } else {
      r[kk] = vec4(fetchB(base, k + kk, n0), fetchB(base, k + kk, n0 + 1u),
        fetchB(base, k + kk, n0 + 2u), fetchB(base, k + kk, n0 + 3u));
    }
  }
  return r;
}

// acc + am·bm for a 4×4 block (columns of acc and am are output rows).
fn sgMac(acc: mat4x4<f32>, am: mat4x4<f32>, bm: mat4x4<f32>) -> mat4x4<f32> {
  return mat4x4<f32>(mac_row(acc[0], am[0], bm), mac_row(acc[1], am[1], bm),
    mac_row(acc[2], am[2], bm), mac_row(acc[3], am[3], bm));
}

@compute @workgroup_size(128)
fn subgroup(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(subgroup_invocation_id) lane: u32,
  @builtin(subgroup_size) sgSize: u32,
) {
  let tile = wg.x + wg.y * nwg.x;
  if (tile >= p.totalTiles) { return; }
  // Number this workgroup's lanes subgroup by subgroup: v = first lane of the subgroup + lane.
  var taken = 0u;
  if (lane == 0u) { taken = atomicAdd(&sgLanesTaken, sgSize); }
  // Not needed by the numbering, but without any barrier SwiftShader gave every subgroup of a
  // workgroup its own zeroed counter (all numbered themselves 0). Once per workgroup: cheap.
  workgroupBarrier();
  let v = subgroupBroadcast(taken, 0u) + lane;
  // The subgroup's first lane number is a multiple of its size, so v's quad is 4 lanes of it.
  let quad = v / 4u;
  let t = lane % 4u;
  let quad0 = lane - t;
  let o = tileOrigin(tile, TILE, TILE);
  // 32 quads: 8 along M (8 rows each) by 4 along N (16 columns each).
  let m0 = o.row + (quad / 4u) * 8u;
  let n0 = o.col + (quad % 4u) * 16u + t * 4u;
  let aBase = o.batch * p.aBatch;
  let bBase = o.batch * p.bBatch;
  var acc0: mat4x4<f32>;
  var acc1: mat4x4<f32>;
  // Lanes whose rows or columns fall outside the output still load (zeros) and shuffle: every
  // lane's piece is some other lane's operand.
  for (var k = 0u; k < p.K; k += 4u) {
    let bm = sgLoadB(bBase, k, n0);
    let a0 = sgPieceA(aBase, m0, k, t);
    let a1 = sgPieceA(aBase, m0 + 4u, k, t);
    acc0 = sgMac(acc0, sgQuadA(a0, quad0), bm);
    acc1 = sgMac(acc1, sgQuadA(a1, quad0), bm);
  }
  let cBase = p.outOffset + o.batch * p.outBatch;
  storeBlock(cBase, m0, n0, acc0);
  storeBlock(cBase, m0 + 4u, n0, acc1);
}
{{SG_CLOSE}}
