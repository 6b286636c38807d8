// 4×4 block products for the HiRA CPU kernels. The including module defines `const CB: u32`
// (1 to 4 column blocks per invocation) for mac_blocks; blocks past CB are dead code.
//! include "common/mac_row.wgsl"

// Adds am·bm to a 4×4 block: column q of acc (output row q) += Σ_kk am[q][kk]·bm[kk].
fn mac_block(acc: ptr<function, mat4x4<f32>>, am: mat4x4<f32>, bm: mat4x4<f32>) {
  (*acc)[0] = mac_row((*acc)[0], am[0], bm);
  (*acc)[1] = mac_row((*acc)[1], am[1], bm);
  (*acc)[2] = mac_row((*acc)[2], am[2], bm);
  (*acc)[3] = mac_row((*acc)[3], am[3], bm);
}

// Adds am·b_c to each block c_c of one block row, block by block (c0 first).
fn mac_blocks(
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
