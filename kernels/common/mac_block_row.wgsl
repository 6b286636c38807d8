// The register-blocked row product of the CPU kernels (kernels/matmul.wgsl's cpu entry, HiRA's
// mm_cpu_strip and grad_cpu). The including module defines `const CB: u32` (1 to 4 column blocks
// per invocation); blocks past CB are dead code.
//! include "common/mac_row.wgsl"

// Adds am·[b0 b1 b2 b3] to the blocks c0..c3 of one block row (columns of c and am are output
// rows). Row by row across the blocks, which measured ~5% faster on lavapipe than block by block.
fn mac_block_row(
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
  mac_row_across(c0, c1, c2, c3, 0u, am[0], b0, b1, b2, b3);
  mac_row_across(c0, c1, c2, c3, 1u, am[1], b0, b1, b2, b3);
  mac_row_across(c0, c1, c2, c3, 2u, am[2], b0, b1, b2, b3);
  mac_row_across(c0, c1, c2, c3, 3u, am[3], b0, b1, b2, b3);
}

// Output row q of the blocks c0..c3 += x·b_c.
fn mac_row_across(
  c0: ptr<function, mat4x4<f32>>,
  c1: ptr<function, mat4x4<f32>>,
  c2: ptr<function, mat4x4<f32>>,
  c3: ptr<function, mat4x4<f32>>,
  q: u32,
  x: vec4<f32>,
  b0: mat4x4<f32>,
  b1: mat4x4<f32>,
  b2: mat4x4<f32>,
  b3: mat4x4<f32>,
) {
  (*c0)[q] = mac_row((*c0)[q], x, b0);
  if (CB > 1u) { (*c1)[q] = mac_row((*c1)[q], x, b1); }
  if (CB > 2u) { (*c2)[q] = mac_row((*c2)[q], x, b2); }
  if (CB > 3u) { (*c3)[q] = mac_row((*c3)[q], x, b3); }
}
