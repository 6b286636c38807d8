// One output row of a 4×4 block: acc + Σ_kk x[kk]·w[kk] (w's column kk is input row kk), as a
// chain of fmas from x.x to x.w. Shared by the register-blocked products of matmul.wgsl and the
// HiRA kernels, whose tests compare their results bit for bit: keep the order.
fn mac_row(acc: vec4<f32>, x: vec4<f32>, w: mat4x4<f32>) -> vec4<f32> {
  return fma(vec4(x.w), w[3], fma(vec4(x.z), w[2], fma(vec4(x.y), w[1], fma(vec4(x.x), w[0],
    acc))));
}
