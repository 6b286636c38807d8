/**
 * Process-level WebGPU set-up for the Deno entrypoints.
 * @module
 */
import { createGpu, type Gpu, type GpuOptions } from "../engine/gpu.ts";

/**
 * Quiets Mesa's Vulkan driver, which prints "XDG_RUNTIME_DIR is invalid" twice per process when
 * the variable is unset (as on servers and in CI), then creates the device. The backend is
 * Deno's default (Vulkan when a driver is installed) unless DENO_WEBGPU_BACKEND says otherwise.
 */
export function createDenoGpu(options: GpuOptions = {}): Promise<Gpu> {
  try {
    if (Deno.build.os === "linux" && !Deno.env.get("XDG_RUNTIME_DIR")) {
      Deno.env.set("XDG_RUNTIME_DIR", "/tmp");
    }
  } catch {
    // Without --allow-env the warning is merely printed.
  }
  return createGpu(options);
}
