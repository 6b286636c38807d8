// Causal attention with grouped KV heads over a packed batch, flash-attention style: the T×T
// score matrix never exists. The forward keeps an online softmax (running max m, running sum l,
// running output acc) and saves lse = m + log(l); the backward recomputes p = exp(s − lse).
//
// Layouts (row-major f32): q, out, dout [N, H, D]; k, v [N, HKV, D]; cu u32 [NSEQ+1] with
// sequence b on tokens cu[b] .. cu[b+1]-1 (cu[0] = 0); lse [N, H]; ld [N, H] of (lse, delta)
// where delta = rowsum(dout ⊙ out). Query head h reads KV head h / (H / HKV). Tokens outside
// [cu[0], cu[NSEQ]) are padding: zero output, zero gradients.
//
// Three families, chosen by the wrapper:
// - *_rows: one invocation per row (a query token and head, or a key token and KV head) holding
//   its D-long vectors in private arrays; no workgroup memory and no barriers, which CPU
//   rasterizers run as coroutine switches. Neighbouring lanes are heads of the same token, so they
//   share loop bounds and, within a KV group, the K/V rows they read.
// - *_rows4 (CPU rasterizers, D % 16 == 0 and D <= 128): as *_rows with 4 consecutive rows per
//   invocation held in named 4×4 chunks, so each K/V (or Q/dO) row loaded serves 4 rows.
// - *_tiled: the same per-row math, but a 64-lane workgroup streams tiles of BT K/V rows (or BT
//   query rows) through workgroup memory, so a GPU reads each row from memory once per workgroup
//   instead of once per lane.
// dk/dv come from their own kernel that loops over the queries that see each key and sums over
// the query heads of the group: no float atomics, deterministic.
//
// Defines: ELEM is vec4<f32> when D % 4 == 0 (vec4 loads) and f32 otherwise; DW = D / lanes of
// ELEM; HSUM sums the lanes of an ELEM `x`; BT is the tile height of the tiled kernels, sized so
// that their workgroup memory stays within 16 KiB.
//
// Entry points alias binding numbers (e.g. binding 5 is `out` in the forward and `dout` in the
// backward); WGSL allows that because no single entry point uses two variables with one binding.

//! struct Params
//! struct DecodeParams

const DW: u32 = {{DW}}u;
const BT: u32 = {{BT}}u;
const TILE: u32 = BT * DW;
const ROWS_WG: u32 = 64u;
const TW: u32 = 64u;
// Below any real score; exp(NEG_BIG - s) is 0, so the first key resets the accumulator.
const NEG_BIG: f32 = -3.0e38;

// Forward, dq, dk/dv: the inputs.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<{{ELEM}}>;
@group(0) @binding(2) var<storage, read> k: array<{{ELEM}}>;
@group(0) @binding(3) var<storage, read> v: array<{{ELEM}}>;
@group(0) @binding(4) var<storage, read> cu: array<u32>;
// Forward outputs.
@group(0) @binding(5) var<storage, read_write> out: array<{{ELEM}}>;
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;
// Backward inputs and outputs.
@group(0) @binding(5) var<storage, read> dout: array<{{ELEM}}>;
@group(0) @binding(6) var<storage, read> ld: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read_write> dq: array<{{ELEM}}>;
@group(0) @binding(7) var<storage, read_write> dk: array<{{ELEM}}>;
@group(0) @binding(8) var<storage, read_write> dv: array<{{ELEM}}>;
// attn_bwd_prep.
@group(0) @binding(1) var<storage, read> prep_out: array<{{ELEM}}>;
@group(0) @binding(2) var<storage, read> prep_dout: array<{{ELEM}}>;
@group(0) @binding(3) var<storage, read> prep_lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> prep_ld: array<vec2<f32>>;
// attn_decode: k and v are the caches [NB, TMAX, HKV, D]; out is [NB, H, D].
@group(0) @binding(0) var<uniform> pd: DecodeParams;
@group(0) @binding(4) var<storage, read> lens: array<u32>;

var<workgroup> tile_a: array<{{ELEM}}, TILE>;
var<workgroup> tile_b: array<{{ELEM}}, TILE>;
var<workgroup> tile_ld: array<vec2<f32>, BT>;

fn hsum(x: {{ELEM}}) -> f32 {
  return {{HSUM}};
}

// (start, end) of the sequence holding token t; (t + 1, t) for padding, so that both the keys
// start..=t and the queries t..end-1 are empty ranges.
fn seq_bounds(t: u32) -> vec2<u32> {
  if (t < cu[0] || t >= cu[p.nseq]) { return vec2<u32>(t + 1u, t); }
  // Invariant cu[lo] <= t < cu[hi]; empty sequences (repeated offsets) are skipped.
  var lo = 0u;
  var hi = p.nseq;
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (cu[mid] <= t) { lo = mid; } else { hi = mid; }
  }
  return vec2<u32>(cu[lo], cu[hi]);
}

@compute @workgroup_size(ROWS_WG)
fn attn_fwd_rows(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let row = gid.x + gid.y * nwg.x * ROWS_WG;
  if (row >= p.n * p.h) { return; }
  let t = row / p.h;
  let kvh = (row % p.h) / (p.h / p.hkv);
  let start = seq_bounds(t).x;
  let qb = row * DW;
  var qs: array<{{ELEM}}, DW>;
  var acc: array<{{ELEM}}, DW>;
  for (var d = 0u; d < DW; d++) {
    qs[d] = q[qb + d] * p.scale;
    acc[d] = {{ELEM}}(0.0);
  }
  var m = NEG_BIG;
  var l = 0.0;
  for (var j = start; j <= t; j++) {
    let kb = (j * p.hkv + kvh) * DW;
    var sv = {{ELEM}}(0.0);
    for (var d = 0u; d < DW; d++) { sv = fma(qs[d], k[kb + d], sv); }
    let s = hsum(sv);
    // The max rarely moves after the first keys, so rescaling only then is cheap.
    if (s > m) {
      let c = exp(m - s);
      l *= c;
      for (var d = 0u; d < DW; d++) { acc[d] *= c; }
      m = s;
    }
    let e = exp(s - m);
    l += e;
    for (var d = 0u; d < DW; d++) { acc[d] = fma({{ELEM}}(e), v[kb + d], acc[d]); }
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var d = 0u; d < DW; d++) { out[qb + d] = acc[d] * inv; }
  lse[row] = select(0.0, m + log(l), l > 0.0);
}

// ---------------------------------------------------------------------------------------------
// CPU blocked rows kernels (*_rows4): as the *_rows kernels, but each invocation owns 4
// consecutive tokens of one head (dk/dv: 4 consecutive keys of one KV head), so every K/V row
// (or Q/dO row) it loads from memory serves 4 rows of work. A row of D = 16·CH floats is held in
// a Row of CH 4×4 matrices: named members, never indexed at run time, so llvmpipe keeps them out
// of memory (a private array indexed in a loop lives in memory there and made this kernel ~4×
// slower). Needs D % 16 == 0 and D <= 128 (the wrapper picks the *_rows kernels otherwise).
// ---------------------------------------------------------------------------------------------

const CH: u32 = {{CH}}u;

struct Row {
  c0: mat4x4<f32>,
  c1: mat4x4<f32>,
  c2: mat4x4<f32>,
  c3: mat4x4<f32>,
  c4: mat4x4<f32>,
  c5: mat4x4<f32>,
  c6: mat4x4<f32>,
  c7: mat4x4<f32>,
}

// An element as a vec4 and back: the identity when ELEM is vec4<f32>, which is the only case the
// blocked kernels run in (the module also compiles with ELEM = f32 for the other entries).
fn v4(x: {{ELEM}}) -> vec4<f32> {
  return vec4<f32>(x);
}

fn el(x: vec4<f32>) -> {{ELEM}} {
  return {{VEC4_TO_ELEM}};
}

fn mdot(a: mat4x4<f32>, b: mat4x4<f32>) -> vec4<f32> {
  return fma(a[3], b[3], fma(a[2], b[2], fma(a[1], b[1], a[0] * b[0])));
}

// Σ a ⊙ b over the row.
fn row_dot(a: Row, b: Row) -> f32 {
  var s = mdot(a.c0, b.c0);
  if (CH > 1u) { s += mdot(a.c1, b.c1); }
  if (CH > 2u) { s += mdot(a.c2, b.c2); }
  if (CH > 3u) { s += mdot(a.c3, b.c3); }
  if (CH > 4u) { s += mdot(a.c4, b.c4); }
  if (CH > 5u) { s += mdot(a.c5, b.c5); }
  if (CH > 6u) { s += mdot(a.c6, b.c6); }
  if (CH > 7u) { s += mdot(a.c7, b.c7); }
  return s.x + s.y + s.z + s.w;
}

// y + a·x.
fn row_axpy(y: Row, a: f32, x: Row) -> Row {
  var r: Row;
  r.c0 = y.c0 + x.c0 * a;
  if (CH > 1u) { r.c1 = y.c1 + x.c1 * a; }
  if (CH > 2u) { r.c2 = y.c2 + x.c2 * a; }
  if (CH > 3u) { r.c3 = y.c3 + x.c3 * a; }
  if (CH > 4u) { r.c4 = y.c4 + x.c4 * a; }
  if (CH > 5u) { r.c5 = y.c5 + x.c5 * a; }
  if (CH > 6u) { r.c6 = y.c6 + x.c6 * a; }
  if (CH > 7u) { r.c7 = y.c7 + x.c7 * a; }
  return r;
}

// a·x.
fn row_scale(x: Row, a: f32) -> Row {
  var r: Row;
  return row_axpy(r, a, x);
}

// A chunk of 16 floats from 4 elements (vec4s where these kernels run).
fn chunk(x0: {{ELEM}}, x1: {{ELEM}}, x2: {{ELEM}}, x3: {{ELEM}}) -> mat4x4<f32> {
  return mat4x4<f32>(v4(x0), v4(x1), v4(x2), v4(x3));
}

// The row of q at element-vec4 offset b.
fn row_q(b: u32) -> Row {
  var r: Row;
  r.c0 = chunk(q[b], q[b + 1u], q[b + 2u], q[b + 3u]);
  if (CH > 1u) { r.c1 = chunk(q[b + 4u], q[b + 5u], q[b + 6u], q[b + 7u]); }
  if (CH > 2u) { r.c2 = chunk(q[b + 8u], q[b + 9u], q[b + 10u], q[b + 11u]); }
  if (CH > 3u) { r.c3 = chunk(q[b + 12u], q[b + 13u], q[b + 14u], q[b + 15u]); }
  if (CH > 4u) { r.c4 = chunk(q[b + 16u], q[b + 17u], q[b + 18u], q[b + 19u]); }
  if (CH > 5u) { r.c5 = chunk(q[b + 20u], q[b + 21u], q[b + 22u], q[b + 23u]); }
  if (CH > 6u) { r.c6 = chunk(q[b + 24u], q[b + 25u], q[b + 26u], q[b + 27u]); }
  if (CH > 7u) { r.c7 = chunk(q[b + 28u], q[b + 29u], q[b + 30u], q[b + 31u]); }
  return r;
}

// The row of k at element-vec4 offset b.
fn row_k(b: u32) -> Row {
  var r: Row;
  r.c0 = chunk(k[b], k[b + 1u], k[b + 2u], k[b + 3u]);
  if (CH > 1u) { r.c1 = chunk(k[b + 4u], k[b + 5u], k[b + 6u], k[b + 7u]); }
  if (CH > 2u) { r.c2 = chunk(k[b + 8u], k[b + 9u], k[b + 10u], k[b + 11u]); }
  if (CH > 3u) { r.c3 = chunk(k[b + 12u], k[b + 13u], k[b + 14u], k[b + 15u]); }
  if (CH > 4u) { r.c4 = chunk(k[b + 16u], k[b + 17u], k[b + 18u], k[b + 19u]); }
  if (CH > 5u) { r.c5 = chunk(k[b + 20u], k[b + 21u], k[b + 22u], k[b + 23u]); }
  if (CH > 6u) { r.c6 = chunk(k[b + 24u], k[b + 25u], k[b + 26u], k[b + 27u]); }
  if (CH > 7u) { r.c7 = chunk(k[b + 28u], k[b + 29u], k[b + 30u], k[b + 31u]); }
  return r;
}

// The row of v at element-vec4 offset b.
fn row_v(b: u32) -> Row {
  var r: Row;
  r.c0 = chunk(v[b], v[b + 1u], v[b + 2u], v[b + 3u]);
  if (CH > 1u) { r.c1 = chunk(v[b + 4u], v[b + 5u], v[b + 6u], v[b + 7u]); }
  if (CH > 2u) { r.c2 = chunk(v[b + 8u], v[b + 9u], v[b + 10u], v[b + 11u]); }
  if (CH > 3u) { r.c3 = chunk(v[b + 12u], v[b + 13u], v[b + 14u], v[b + 15u]); }
  if (CH > 4u) { r.c4 = chunk(v[b + 16u], v[b + 17u], v[b + 18u], v[b + 19u]); }
  if (CH > 5u) { r.c5 = chunk(v[b + 20u], v[b + 21u], v[b + 22u], v[b + 23u]); }
  if (CH > 6u) { r.c6 = chunk(v[b + 24u], v[b + 25u], v[b + 26u], v[b + 27u]); }
  if (CH > 7u) { r.c7 = chunk(v[b + 28u], v[b + 29u], v[b + 30u], v[b + 31u]); }
  return r;
}

// The row of dOut at element-vec4 offset b.
fn row_dout(b: u32) -> Row {
  var r: Row;
  r.c0 = chunk(dout[b], dout[b + 1u], dout[b + 2u], dout[b + 3u]);
  if (CH > 1u) { r.c1 = chunk(dout[b + 4u], dout[b + 5u], dout[b + 6u], dout[b + 7u]); }
  if (CH > 2u) { r.c2 = chunk(dout[b + 8u], dout[b + 9u], dout[b + 10u], dout[b + 11u]); }
  if (CH > 3u) { r.c3 = chunk(dout[b + 12u], dout[b + 13u], dout[b + 14u], dout[b + 15u]); }
  if (CH > 4u) { r.c4 = chunk(dout[b + 16u], dout[b + 17u], dout[b + 18u], dout[b + 19u]); }
  if (CH > 5u) { r.c5 = chunk(dout[b + 20u], dout[b + 21u], dout[b + 22u], dout[b + 23u]); }
  if (CH > 6u) { r.c6 = chunk(dout[b + 24u], dout[b + 25u], dout[b + 26u], dout[b + 27u]); }
  if (CH > 7u) { r.c7 = chunk(dout[b + 28u], dout[b + 29u], dout[b + 30u], dout[b + 31u]); }
  return r;
}

// out[b..] = s·r (one chunk of 16 floats at a time).
fn put_out(b: u32, m: mat4x4<f32>) {
  out[b] = el(m[0]);
  out[b + 1u] = el(m[1]);
  out[b + 2u] = el(m[2]);
  out[b + 3u] = el(m[3]);
}

fn store_out(b: u32, r: Row, s: f32) {
  put_out(b, r.c0 * s);
  if (CH > 1u) { put_out(b + 4u, r.c1 * s); }
  if (CH > 2u) { put_out(b + 8u, r.c2 * s); }
  if (CH > 3u) { put_out(b + 12u, r.c3 * s); }
  if (CH > 4u) { put_out(b + 16u, r.c4 * s); }
  if (CH > 5u) { put_out(b + 20u, r.c5 * s); }
  if (CH > 6u) { put_out(b + 24u, r.c6 * s); }
  if (CH > 7u) { put_out(b + 28u, r.c7 * s); }
}

// dq[b..] = s·r (one chunk of 16 floats at a time).
fn put_dq(b: u32, m: mat4x4<f32>) {
  dq[b] = el(m[0]);
  dq[b + 1u] = el(m[1]);
  dq[b + 2u] = el(m[2]);
  dq[b + 3u] = el(m[3]);
}

fn store_dq(b: u32, r: Row, s: f32) {
  put_dq(b, r.c0 * s);
  if (CH > 1u) { put_dq(b + 4u, r.c1 * s); }
  if (CH > 2u) { put_dq(b + 8u, r.c2 * s); }
  if (CH > 3u) { put_dq(b + 12u, r.c3 * s); }
  if (CH > 4u) { put_dq(b + 16u, r.c4 * s); }
  if (CH > 5u) { put_dq(b + 20u, r.c5 * s); }
  if (CH > 6u) { put_dq(b + 24u, r.c6 * s); }
  if (CH > 7u) { put_dq(b + 28u, r.c7 * s); }
}

// dk[b..] = s·r (one chunk of 16 floats at a time).
fn put_dk(b: u32, m: mat4x4<f32>) {
  dk[b] = el(m[0]);
  dk[b + 1u] = el(m[1]);
  dk[b + 2u] = el(m[2]);
  dk[b + 3u] = el(m[3]);
}

fn store_dk(b: u32, r: Row, s: f32) {
  put_dk(b, r.c0 * s);
  if (CH > 1u) { put_dk(b + 4u, r.c1 * s); }
  if (CH > 2u) { put_dk(b + 8u, r.c2 * s); }
  if (CH > 3u) { put_dk(b + 12u, r.c3 * s); }
  if (CH > 4u) { put_dk(b + 16u, r.c4 * s); }
  if (CH > 5u) { put_dk(b + 20u, r.c5 * s); }
  if (CH > 6u) { put_dk(b + 24u, r.c6 * s); }
  if (CH > 7u) { put_dk(b + 28u, r.c7 * s); }
}

// dv[b..] = s·r (one chunk of 16 floats at a time).
fn put_dv(b: u32, m: mat4x4<f32>) {
  dv[b] = el(m[0]);
  dv[b + 1u] = el(m[1]);
  dv[b + 2u] = el(m[2]);
  dv[b + 3u] = el(m[3]);
}

fn store_dv(b: u32, r: Row, s: f32) {
  put_dv(b, r.c0 * s);
  if (CH > 1u) { put_dv(b + 4u, r.c1 * s); }
  if (CH > 2u) { put_dv(b + 8u, r.c2 * s); }
  if (CH > 3u) { put_dv(b + 12u, r.c3 * s); }
  if (CH > 4u) { put_dv(b + 16u, r.c4 * s); }
  if (CH > 5u) { put_dv(b + 20u, r.c5 * s); }
  if (CH > 6u) { put_dv(b + 24u, r.c6 * s); }
  if (CH > 7u) { put_dv(b + 28u, r.c7 * s); }
}

// Online softmax state of one query row.
struct Soft {
  m: f32,
  l: f32,
}

// Adds key score x (if the key is in the row's range) to the state; returns the key's weight and
// rescales the accumulator when the max moves.
fn soft_step(st: ptr<function, Soft>, acc: ptr<function, Row>, x: f32, ok: bool) -> f32 {
  if (ok && x > (*st).m) {
    let c = exp((*st).m - x);
    (*st).l *= c;
    *acc = row_scale(*acc, c);
    (*st).m = x;
  }
  let e = select(0.0, exp(x - (*st).m), ok);
  (*st).l += e;
  return e;
}

// First key of token t's sequence, or t + 1 (an empty range) for padding and tokens past N.
fn key_start(t: u32) -> u32 {
  return select(t + 1u, seq_bounds(min(t, p.n - 1u)).x, t < p.n);
}

// Query block `blk`: 4 consecutive tokens from t0 of head h (rows past N read token N − 1 and
// are never stored), each row's first key and its row index in [N·H], and the keys jlo..=jhi the
// block needs.
struct QueryBlock {
  h: u32,
  kvh: u32,
  t0: u32,
  start: vec4<u32>,
  row: vec4<u32>,
  jlo: u32,
  jhi: u32,
}

fn query_block(blk: u32) -> QueryBlock {
  let h = blk % p.h;
  let t0 = blk / p.h * 4u;
  let t = vec4<u32>(t0, t0 + 1u, t0 + 2u, t0 + 3u);
  let start = vec4<u32>(key_start(t.x), key_start(t.y), key_start(t.z), key_start(t.w));
  return QueryBlock(
    h,
    h / (p.h / p.hkv),
    t0,
    start,
    min(t, vec4(p.n - 1u)) * p.h + h,
    min(min(start.x, start.y), min(start.z, start.w)),
    min(t0 + 3u, p.n - 1u),
  );
}

// Writes a finished query row (if the token exists).
fn fwd_finish(t: u32, h: u32, acc: Row, st: Soft) {
  if (t >= p.n) { return; }
  let row = t * p.h + h;
  store_out(row * DW, acc, select(0.0, 1.0 / st.l, st.l > 0.0));
  lse[row] = select(0.0, st.m + log(st.l), st.l > 0.0);
}

@compute @workgroup_size(ROWS_WG)
fn attn_fwd_rows4(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let blk = gid.x + gid.y * nwg.x * ROWS_WG;
  if (blk >= (p.n + 3u) / 4u * p.h) { return; }
  let b = query_block(blk);
  let t0 = b.t0;
  let q0 = row_scale(row_q(b.row.x * DW), p.scale);
  let q1 = row_scale(row_q(b.row.y * DW), p.scale);
  let q2 = row_scale(row_q(b.row.z * DW), p.scale);
  let q3 = row_scale(row_q(b.row.w * DW), p.scale);
  var a0: Row; var a1: Row; var a2: Row; var a3: Row;
  var st0 = Soft(NEG_BIG, 0.0); var st1 = st0; var st2 = st0; var st3 = st0;
  for (var j = b.jlo; j <= b.jhi; j++) {
    let kb = (j * p.hkv + b.kvh) * DW;
    let kr = row_k(kb);
    let e0 = soft_step(&st0, &a0, row_dot(q0, kr), j >= b.start.x && j <= t0);
    let e1 = soft_step(&st1, &a1, row_dot(q1, kr), j >= b.start.y && j <= t0 + 1u);
    let e2 = soft_step(&st2, &a2, row_dot(q2, kr), j >= b.start.z && j <= t0 + 2u);
    let e3 = soft_step(&st3, &a3, row_dot(q3, kr), j >= b.start.w && j <= t0 + 3u);
    let vr = row_v(kb);
    a0 = row_axpy(a0, e0, vr);
    a1 = row_axpy(a1, e1, vr);
    a2 = row_axpy(a2, e2, vr);
    a3 = row_axpy(a3, e3, vr);
  }
  fwd_finish(t0, b.h, a0, st0);
  fwd_finish(t0 + 1u, b.h, a1, st1);
  fwd_finish(t0 + 2u, b.h, a2, st2);
  fwd_finish(t0 + 3u, b.h, a3, st3);
}

// Adds query row q's share of dq for key row kr when `ok`: (exp(s − lse)·(dout·v − delta))·k.
fn dq_step(acc: ptr<function, Row>, q: Row, dor: Row, c: vec2<f32>, kr: Row, vr: Row, ok: bool) {
  let ds = exp(row_dot(q, kr) - c.x) * (row_dot(dor, vr) - c.y);
  *acc = row_axpy(*acc, select(0.0, ds, ok), kr);
}

@compute @workgroup_size(ROWS_WG)
fn attn_bwd_dq_rows4(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let blk = gid.x + gid.y * nwg.x * ROWS_WG;
  if (blk >= (p.n + 3u) / 4u * p.h) { return; }
  let b = query_block(blk);
  let t0 = b.t0;
  let q0 = row_scale(row_q(b.row.x * DW), p.scale);
  let q1 = row_scale(row_q(b.row.y * DW), p.scale);
  let q2 = row_scale(row_q(b.row.z * DW), p.scale);
  let q3 = row_scale(row_q(b.row.w * DW), p.scale);
  let d0 = row_dout(b.row.x * DW);
  let d1 = row_dout(b.row.y * DW);
  let d2 = row_dout(b.row.z * DW);
  let d3 = row_dout(b.row.w * DW);
  let c0 = ld[b.row.x];
  let c1 = ld[b.row.y];
  let c2 = ld[b.row.z];
  let c3 = ld[b.row.w];
  var a0: Row; var a1: Row; var a2: Row; var a3: Row;
  for (var j = b.jlo; j <= b.jhi; j++) {
    let kb = (j * p.hkv + b.kvh) * DW;
    let kr = row_k(kb);
    let vr = row_v(kb);
    dq_step(&a0, q0, d0, c0, kr, vr, j >= b.start.x && j <= t0);
    dq_step(&a1, q1, d1, c1, kr, vr, j >= b.start.y && j <= t0 + 1u);
    dq_step(&a2, q2, d2, c2, kr, vr, j >= b.start.z && j <= t0 + 2u);
    dq_step(&a3, q3, d3, c3, kr, vr, j >= b.start.w && j <= t0 + 3u);
  }
  if (t0 < p.n) { store_dq(b.row.x * DW, a0, p.scale); }
  if (t0 + 1u < p.n) { store_dq(b.row.y * DW, a1, p.scale); }
  if (t0 + 2u < p.n) { store_dq(b.row.z * DW, a2, p.scale); }
  if (t0 + 3u < p.n) { store_dq(b.row.w * DW, a3, p.scale); }
}

// End (exclusive) of the queries that see key j: its sequence's end, or j (none) for padding and
// keys past N.
fn query_end(j: u32) -> u32 {
  return select(j, seq_bounds(min(j, p.n - 1u)).y, j < p.n);
}

// Adds query row (q, dor, c) to key row (kr, vr)'s dk/dv when `ok`.
fn dkdv_step(
  dka: ptr<function, Row>,
  dva: ptr<function, Row>,
  q: Row,
  dor: Row,
  c: vec2<f32>,
  kr: Row,
  vr: Row,
  ok: bool,
) {
  let pij = exp(row_dot(q, kr) - c.x);
  let ds = pij * (row_dot(dor, vr) - c.y);
  *dva = row_axpy(*dva, select(0.0, pij, ok), dor);
  *dka = row_axpy(*dka, select(0.0, ds, ok), q);
}

@compute @workgroup_size(ROWS_WG)
fn attn_bwd_dkdv_rows4(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let blk = gid.x + gid.y * nwg.x * ROWS_WG;
  if (blk >= (p.n + 3u) / 4u * p.hkv) { return; }
  let kvh = blk % p.hkv;
  let j0 = blk / p.hkv * 4u;
  let g = p.h / p.hkv;
  let last = p.n - 1u;
  let e0 = query_end(j0);
  let e1 = query_end(j0 + 1u);
  let e2 = query_end(j0 + 2u);
  let e3 = query_end(j0 + 3u);
  let b0 = (min(j0, last) * p.hkv + kvh) * DW;
  let b1 = (min(j0 + 1u, last) * p.hkv + kvh) * DW;
  let b2 = (min(j0 + 2u, last) * p.hkv + kvh) * DW;
  let b3 = (min(j0 + 3u, last) * p.hkv + kvh) * DW;
  let k0 = row_scale(row_k(b0), p.scale);
  let k1 = row_scale(row_k(b1), p.scale);
  let k2 = row_scale(row_k(b2), p.scale);
  let k3 = row_scale(row_k(b3), p.scale);
  let v0 = row_v(b0);
  let v1 = row_v(b1);
  let v2 = row_v(b2);
  let v3 = row_v(b3);
  var dk0: Row; var dk1: Row; var dk2: Row; var dk3: Row;
  var dv0: Row; var dv1: Row; var dv2: Row; var dv3: Row;
  let iend = max(max(e0, e1), max(e2, e3));
  for (var i = j0; i < iend; i++) {
    for (var hh = kvh * g; hh < kvh * g + g; hh++) {
      let row = i * p.h + hh;
      let qr = row_q(row * DW);
      let dor = row_dout(row * DW);
      let c = ld[row];
      dkdv_step(&dk0, &dv0, qr, dor, c, k0, v0, i < e0);
      dkdv_step(&dk1, &dv1, qr, dor, c, k1, v1, i >= j0 + 1u && i < e1);
      dkdv_step(&dk2, &dv2, qr, dor, c, k2, v2, i >= j0 + 2u && i < e2);
      dkdv_step(&dk3, &dv3, qr, dor, c, k3, v3, i >= j0 + 3u && i < e3);
    }
  }
  if (j0 < p.n) { store_dk(b0, dk0, p.scale); store_dv(b0, dv0, 1.0); }
  if (j0 + 1u < p.n) { store_dk(b1, dk1, p.scale); store_dv(b1, dv1, 1.0); }
  if (j0 + 2u < p.n) { store_dk(b2, dk2, p.scale); store_dv(b2, dv2, 1.0); }
  if (j0 + 3u < p.n) { store_dk(b3, dk3, p.scale); store_dv(b3, dv3, 1.0); }
}

// attn_decode with the query row and its accumulator in Row chunks (D % 16 == 0, D <= 128): no
// loops over D, so one invocation's loop count is its cache length alone (llvmpipe ends an
// invocation's loops after 65,535 iterations in all; the loops over D of attn_decode count
// against that where Mesa does not unroll them, from D = 100 up).
@compute @workgroup_size(ROWS_WG)
fn attn_decode_rows4(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let row = gid.x + gid.y * nwg.x * ROWS_WG;
  if (row >= pd.nb * pd.h) { return; }
  let b = row / pd.h;
  let kvh = (row % pd.h) / (pd.h / pd.hkv);
  let len = min(lens[b], pd.tmax);
  let qr = row_scale(row_q(row * DW), pd.scale);
  var acc: Row;
  var st = Soft(NEG_BIG, 0.0);
  for (var j = 0u; j < len; j++) {
    let kb = ((b * pd.tmax + j) * pd.hkv + kvh) * DW;
    let e = soft_step(&st, &acc, row_dot(qr, row_k(kb)), true);
    acc = row_axpy(acc, e, row_v(kb));
  }
  store_out(row * DW, acc, select(0.0, 1.0 / st.l, st.l > 0.0));
}

@compute @workgroup_size(TW)
fn attn_fwd_tiled(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lane: u32,
) {
  // A workgroup owns tq consecutive tokens times the g query heads of one KV head, so every
  // lane reads the same K/V rows.
  let g = p.h / p.hkv;
  let tq = TW / g;
  let wg = wid.x + wid.y * nwg.x;
  if (wg >= ((p.n + tq - 1u) / tq) * p.hkv) { return; }
  let kvh = wg % p.hkv;
  let t0 = (wg / p.hkv) * tq;
  let tlast = min(t0 + tq, p.n) - 1u;
  let t = t0 + lane / g;
  let live = lane < tq * g && t < p.n;
  let tc = min(t, p.n - 1u);
  let row = tc * p.h + kvh * g + lane % g;
  let start = select(tc + 1u, seq_bounds(tc).x, live);
  let qb = row * DW;
  var qs: array<{{ELEM}}, DW>;
  var acc: array<{{ELEM}}, DW>;
  for (var d = 0u; d < DW; d++) {
    qs[d] = q[qb + d] * p.scale;
    acc[d] = {{ELEM}}(0.0);
  }
  var m = NEG_BIG;
  var l = 0.0;
  for (var j0 = seq_bounds(t0).x; j0 <= tlast; j0 += BT) {
    for (var e = lane; e < TILE; e += TW) {
      let key = j0 + e / DW;
      if (key <= tlast) {
        let src = (key * p.hkv + kvh) * DW + e % DW;
        tile_a[e] = k[src];
        tile_b[e] = v[src];
      }
    }
    workgroupBarrier();
    let jhi = min(j0 + BT - 1u, tc);
    for (var j = max(j0, start); j <= jhi; j++) {
      let kb = (j - j0) * DW;
      var sv = {{ELEM}}(0.0);
      for (var d = 0u; d < DW; d++) { sv = fma(qs[d], tile_a[kb + d], sv); }
      let s = hsum(sv);
      if (s > m) {
        let c = exp(m - s);
        l *= c;
        for (var d = 0u; d < DW; d++) { acc[d] *= c; }
        m = s;
      }
      let e = exp(s - m);
      l += e;
      for (var d = 0u; d < DW; d++) { acc[d] = fma({{ELEM}}(e), tile_b[kb + d], acc[d]); }
    }
    workgroupBarrier();
  }
  if (live) {
    let inv = select(0.0, 1.0 / l, l > 0.0);
    for (var d = 0u; d < DW; d++) { out[qb + d] = acc[d] * inv; }
    lse[row] = select(0.0, m + log(l), l > 0.0);
  }
}

// ld[row] = (lse[row], rowsum(dout ⊙ out)), the per-row constants of the backward.
@compute @workgroup_size(ROWS_WG)
fn attn_bwd_prep(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let row = gid.x + gid.y * nwg.x * ROWS_WG;
  if (row >= p.n * p.h) { return; }
  let b = row * DW;
  var sv = {{ELEM}}(0.0);
  for (var d = 0u; d < DW; d++) { sv = fma(prep_dout[b + d], prep_out[b + d], sv); }
  prep_ld[row] = vec2<f32>(prep_lse[row], hsum(sv));
}

// dq_t = scale · Σ_j p_tj (dout_t·v_j − delta_t) k_j over the keys j the query sees.
@compute @workgroup_size(ROWS_WG)
fn attn_bwd_dq_rows(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let row = gid.x + gid.y * nwg.x * ROWS_WG;
  if (row >= p.n * p.h) { return; }
  let t = row / p.h;
  let kvh = (row % p.h) / (p.h / p.hkv);
  let start = seq_bounds(t).x;
  let qb = row * DW;
  let c = ld[row];
  var qs: array<{{ELEM}}, DW>;
  var dor: array<{{ELEM}}, DW>;
  var acc: array<{{ELEM}}, DW>;
  for (var d = 0u; d < DW; d++) {
    qs[d] = q[qb + d] * p.scale;
    dor[d] = dout[qb + d];
    acc[d] = {{ELEM}}(0.0);
  }
  for (var j = start; j <= t; j++) {
    let kb = (j * p.hkv + kvh) * DW;
    var sv = {{ELEM}}(0.0);
    var dpv = {{ELEM}}(0.0);
    for (var d = 0u; d < DW; d++) {
      sv = fma(qs[d], k[kb + d], sv);
      dpv = fma(dor[d], v[kb + d], dpv);
    }
    let ds = exp(hsum(sv) - c.x) * (hsum(dpv) - c.y);
    for (var d = 0u; d < DW; d++) { acc[d] = fma({{ELEM}}(ds), k[kb + d], acc[d]); }
  }
  for (var d = 0u; d < DW; d++) { dq[qb + d] = acc[d] * p.scale; }
}

@compute @workgroup_size(TW)
fn attn_bwd_dq_tiled(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lane: u32,
) {
  let g = p.h / p.hkv;
  let tq = TW / g;
  let wg = wid.x + wid.y * nwg.x;
  if (wg >= ((p.n + tq - 1u) / tq) * p.hkv) { return; }
  let kvh = wg % p.hkv;
  let t0 = (wg / p.hkv) * tq;
  let tlast = min(t0 + tq, p.n) - 1u;
  let t = t0 + lane / g;
  let live = lane < tq * g && t < p.n;
  let tc = min(t, p.n - 1u);
  let row = tc * p.h + kvh * g + lane % g;
  let start = select(tc + 1u, seq_bounds(tc).x, live);
  let qb = row * DW;
  let c = ld[row];
  var qs: array<{{ELEM}}, DW>;
  var dor: array<{{ELEM}}, DW>;
  var acc: array<{{ELEM}}, DW>;
  for (var d = 0u; d < DW; d++) {
    qs[d] = q[qb + d] * p.scale;
    dor[d] = dout[qb + d];
    acc[d] = {{ELEM}}(0.0);
  }
  for (var j0 = seq_bounds(t0).x; j0 <= tlast; j0 += BT) {
    for (var e = lane; e < TILE; e += TW) {
      let key = j0 + e / DW;
      if (key <= tlast) {
        let src = (key * p.hkv + kvh) * DW + e % DW;
        tile_a[e] = k[src];
        tile_b[e] = v[src];
      }
    }
    workgroupBarrier();
    let jhi = min(j0 + BT - 1u, tc);
    for (var j = max(j0, start); j <= jhi; j++) {
      let kb = (j - j0) * DW;
      var sv = {{ELEM}}(0.0);
      var dpv = {{ELEM}}(0.0);
      for (var d = 0u; d < DW; d++) {
        sv = fma(qs[d], tile_a[kb + d], sv);
        dpv = fma(dor[d], tile_b[kb + d], dpv);
      }
      let ds = exp(hsum(sv) - c.x) * (hsum(dpv) - c.y);
      for (var d = 0u; d < DW; d++) { acc[d] = fma({{ELEM}}(ds), tile_a[kb + d], acc[d]); }
    }
    workgroupBarrier();
  }
  if (live) {
    for (var d = 0u; d < DW; d++) { dq[qb + d] = acc[d] * p.scale; }
  }
}

// For key j of KV head kvh, over the queries i in j..end-1 of its sequence and the g query heads
// of the group: dv_j = Σ p_ij dout_i, dk_j = scale · Σ p_ij (dout_i·v_j − delta_i) q_i.
@compute @workgroup_size(ROWS_WG)
fn attn_bwd_dkdv_rows(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let krow = gid.x + gid.y * nwg.x * ROWS_WG;
  if (krow >= p.n * p.hkv) { return; }
  let j = krow / p.hkv;
  let kvh = krow % p.hkv;
  let g = p.h / p.hkv;
  let end = seq_bounds(j).y;
  let kb = krow * DW;
  var ks: array<{{ELEM}}, DW>;
  var vr: array<{{ELEM}}, DW>;
  var dka: array<{{ELEM}}, DW>;
  var dva: array<{{ELEM}}, DW>;
  for (var d = 0u; d < DW; d++) {
    ks[d] = k[kb + d] * p.scale;
    vr[d] = v[kb + d];
    dka[d] = {{ELEM}}(0.0);
    dva[d] = {{ELEM}}(0.0);
  }
  for (var i = j; i < end; i++) {
    for (var hh = kvh * g; hh < kvh * g + g; hh++) {
      let row = i * p.h + hh;
      let qb = row * DW;
      let c = ld[row];
      var sv = {{ELEM}}(0.0);
      var dpv = {{ELEM}}(0.0);
      for (var d = 0u; d < DW; d++) {
        sv = fma(q[qb + d], ks[d], sv);
        dpv = fma(dout[qb + d], vr[d], dpv);
      }
      let pij = exp(hsum(sv) - c.x);
      let ds = pij * (hsum(dpv) - c.y);
      for (var d = 0u; d < DW; d++) {
        dva[d] = fma({{ELEM}}(pij), dout[qb + d], dva[d]);
        dka[d] = fma({{ELEM}}(ds), q[qb + d], dka[d]);
      }
    }
  }
  for (var d = 0u; d < DW; d++) {
    dk[kb + d] = dka[d] * p.scale;
    dv[kb + d] = dva[d];
  }
}

@compute @workgroup_size(TW)
fn attn_bwd_dkdv_tiled(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lane: u32,
) {
  // A workgroup owns TW consecutive keys of one KV head and streams the (query token, head of
  // the group) pairs that may see them, token-major, BT pairs per tile.
  let g = p.h / p.hkv;
  let wg = wid.x + wid.y * nwg.x;
  if (wg >= ((p.n + TW - 1u) / TW) * p.hkv) { return; }
  let kvh = wg % p.hkv;
  let j0 = (wg / p.hkv) * TW;
  let jlast = min(j0 + TW, p.n) - 1u;
  let j = j0 + lane;
  let live = j < p.n;
  let jc = min(j, p.n - 1u);
  // Pairs before the key's own token or after its sequence are skipped; padding gets none.
  let end = select(jc, seq_bounds(jc).y, live);
  let pair_lo = (jc - j0) * g;
  let pair_hi = (end - j0) * g;
  let qend = max(seq_bounds(jlast).y, j0);
  let npairs = (qend - j0) * g;
  let krow = jc * p.hkv + kvh;
  let kb = krow * DW;
  var ks: array<{{ELEM}}, DW>;
  var vr: array<{{ELEM}}, DW>;
  var dka: array<{{ELEM}}, DW>;
  var dva: array<{{ELEM}}, DW>;
  for (var d = 0u; d < DW; d++) {
    ks[d] = k[kb + d] * p.scale;
    vr[d] = v[kb + d];
    dka[d] = {{ELEM}}(0.0);
    dva[d] = {{ELEM}}(0.0);
  }
  for (var p0 = 0u; p0 < npairs; p0 += BT) {
    for (var e = lane; e < TILE; e += TW) {
      let pr = p0 + e / DW;
      if (pr < npairs) {
        let src = ((j0 + pr / g) * p.h + kvh * g + pr % g) * DW + e % DW;
        tile_a[e] = q[src];
        tile_b[e] = dout[src];
      }
    }
    for (var e = lane; e < BT; e += TW) {
      let pr = p0 + e;
      if (pr < npairs) { tile_ld[e] = ld[(j0 + pr / g) * p.h + kvh * g + pr % g]; }
    }
    workgroupBarrier();
    let chi = min(p0 + BT, pair_hi);
    for (var pr = max(p0, pair_lo); pr < chi; pr++) {
      let c = pr - p0;
      let qb = c * DW;
      let cl = tile_ld[c];
      var sv = {{ELEM}}(0.0);
      var dpv = {{ELEM}}(0.0);
      for (var d = 0u; d < DW; d++) {
        sv = fma(tile_a[qb + d], ks[d], sv);
        dpv = fma(tile_b[qb + d], vr[d], dpv);
      }
      let pij = exp(hsum(sv) - cl.x);
      let ds = pij * (hsum(dpv) - cl.y);
      for (var d = 0u; d < DW; d++) {
        dva[d] = fma({{ELEM}}(pij), tile_b[qb + d], dva[d]);
        dka[d] = fma({{ELEM}}(ds), tile_a[qb + d], dka[d]);
      }
    }
    workgroupBarrier();
  }
  if (live) {
    for (var d = 0u; d < DW; d++) {
      dk[kb + d] = dka[d] * p.scale;
      dv[kb + d] = dva[d];
    }
  }
}

// One new token per sequence b attending to cached positions 0..lens[b]-1 (clamped to TMAX).
@compute @workgroup_size(ROWS_WG)
fn attn_decode(
  @builtin(global_invocation_id) gid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
) {
  let row = gid.x + gid.y * nwg.x * ROWS_WG;
  if (row >= pd.nb * pd.h) { return; }
  let b = row / pd.h;
  let kvh = (row % pd.h) / (pd.h / pd.hkv);
  let len = min(lens[b], pd.tmax);
  let qb = row * DW;
  var qs: array<{{ELEM}}, DW>;
  var acc: array<{{ELEM}}, DW>;
  for (var d = 0u; d < DW; d++) {
    qs[d] = q[qb + d] * pd.scale;
    acc[d] = {{ELEM}}(0.0);
  }
  var m = NEG_BIG;
  var l = 0.0;
  for (var j = 0u; j < len; j++) {
    let kb = ((b * pd.tmax + j) * pd.hkv + kvh) * DW;
    var sv = {{ELEM}}(0.0);
    for (var d = 0u; d < DW; d++) { sv = fma(qs[d], k[kb + d], sv); }
    let s = hsum(sv);
    if (s > m) {
      let c = exp(m - s);
      l *= c;
      for (var d = 0u; d < DW; d++) { acc[d] *= c; }
      m = s;
    }
    let e = exp(s - m);
    l += e;
    for (var d = 0u; d < DW; d++) { acc[d] = fma({{ELEM}}(e), v[kb + d], acc[d]); }
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var d = 0u; d < DW; d++) { out[qb + d] = acc[d] * inv; }
}
