// Causal attention with grouped KV heads over a packed batch, flash-attention style: the T×T
// score matrix never exists. The forward keeps an online softmax (running max m, running sum l,
// running output acc) and saves lse = m + log(l); the backward recomputes p = exp(s − lse).
//
// Layouts (row-major f32): q, out, dout [N, H, D]; k, v [N, HKV, D]; cu u32 [NSEQ+1] with
// sequence b on tokens cu[b] .. cu[b+1]-1 (cu[0] = 0); lse [N, H]; ld [N, H] of (lse, delta)
// where delta = rowsum(dout ⊙ out). Query head h reads KV head h / (H / HKV). Tokens outside
// [cu[0], cu[NSEQ]) are padding: zero output, zero gradients.
//
// Two families, chosen by the wrapper:
// - *_rows: one invocation per row (a query token and head, or a key token and KV head) holding
//   its D-long vectors in private arrays; no workgroup memory and no barriers, which CPU
//   rasterizers run as coroutine switches. Neighbouring lanes are heads of the same token, so they
//   share loop bounds and, within a KV group, the K/V rows they read.
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

struct Params {
  n: u32,
  h: u32,
  hkv: u32,
  nseq: u32,
  scale: f32,
}

struct DecodeParams {
  nb: u32,
  h: u32,
  hkv: u32,
  tmax: u32,
  scale: f32,
}

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
