// An invocation of a workgroup on a grid of workgroups folded into x and y (lib/engine/gpu.ts
// grid()), the one parameter of the kernels that give each workgroup a row or a chunk (norm,
// softmax's *_wg, loss, optim's sumsq): wg_index() is the workgroup's flat index, lid the
// invocation's index within it.
struct WgInvocation {
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
}

fn wg_index(ids: WgInvocation) -> u32 {
  return ids.wid.x + ids.wid.y * ids.nwg.x;
}
