// The flat index of an invocation of a 256-wide workgroup on a grid folded into x and y
// (lib/gpu.ts grid()): gid.x + gid.y · (nwg.x · 256).
fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return gid.x + gid.y * nwg.x * 256u;
}
