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

/** A GPU on the PCI bus, as /sys lists it. */
export interface PciGpu {
  /** The PCI address, `dddd:bb:dd.f`. */
  address: string;
  /** The PCI vendor id (0x10de NVIDIA, 0x1002 AMD, 0x8086 Intel). */
  vendor: number;
}

/** Vendors whose display devices are GPUs with Vulkan drivers (not a server's BMC VGA). */
const GPU_VENDORS = new Set([0x10de, 0x1002, 0x8086]);

/**
 * The machine's GPUs in PCI address order: display-class devices (class 0x03xxxx) of the GPU
 * vendors under `root` (Linux's /sys/bus/pci/devices); empty where it cannot be read.
 */
export function pciGpus(root = "/sys/bus/pci/devices"): PciGpu[] {
  const out: PciGpu[] = [];
  try {
    for (const e of Deno.readDirSync(root)) {
      try {
        const cls = Number(Deno.readTextFileSync(`${root}/${e.name}/class`).trim());
        const vendor = Number(Deno.readTextFileSync(`${root}/${e.name}/vendor`).trim());
        if (cls >> 16 === 0x03 && GPU_VENDORS.has(vendor)) out.push({ address: e.name, vendor });
      } catch { /* not a device folder */ }
    }
  } catch {
    return [];
  }
  return out.sort((a, b) => a.address.localeCompare(b.address));
}

/**
 * The environment that gives local rank `local` its own GPU through Mesa's Vulkan device-select
 * layer (installed with Mesa's Vulkan drivers; it sits above every driver, NVIDIA's included):
 * `DRI_PRIME=pci-dddd_bb_dd_f` picks the rank's GPU by PCI address and
 * `MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE=1` hides the others. Empty (ranks share the
 * default device) with fewer than two GPUs, without a local rank, or when the user already chose
 * (DRI_PRIME, MESA_VK_DEVICE_SELECT, or HIRA_GPU_PINNING=off). docs/data-parallel.md has the
 * recipes where this layer is absent.
 */
export function gpuPinningEnv(
  local: number | null,
  gpus: readonly PciGpu[],
  env: (name: string) => string | undefined,
): Record<string, string> {
  if (local === null || gpus.length < 2) return {};
  if (env("HIRA_GPU_PINNING") === "off" || env("DRI_PRIME") || env("MESA_VK_DEVICE_SELECT")) {
    return {};
  }
  const m = /^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/i.exec(
    gpus[local % gpus.length].address,
  );
  if (!m) return {};
  return {
    DRI_PRIME: `pci-${m[1]}_${m[2]}_${m[3]}_${m[4]}`.toLowerCase(),
    MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: "1",
  };
}
