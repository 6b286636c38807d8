// The tiled (real-GPU) HiRA kernels' tiles: 64×64 outputs per workgroup of 16×16 invocations,
// the reduction dimension in steps of 16 (hira_fused.wgsl mm_tiled, hira_grad.wgsl grad_tiled;
// lib/ops/hira.ts TILE).
const TILE: u32 = 64u;
const TBK: u32 = 16u;
