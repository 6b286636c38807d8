//! include "common/mac_row.wgsl"

// Adds am·bm to a 4×4 block: column q of acc (output row q) += Σ_kk am[q][kk]·bm[kk].
fn mac_block(acc: ptr<function, mat4x4<f32>>, am: mat4x4<f32>, bm: mat4x4<f32>) {
  (*acc)[0] = mac_row((*acc)[0], am[0], bm);
  (*acc)[1] = mac_row((*acc)[1], am[1], bm);
  (*acc)[2] = mac_row((*acc)[2], am[2], bm);
  (*acc)[3] = mac_row((*acc)[3], am[3], bm);
}
