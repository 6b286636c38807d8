/**
 * WebGPU runtime: adapter and device, GPU tensors, a buffer pool, a pipeline cache and a
 * per-step command recorder.
 *
 * Design constraints (docs/reference.md, WebGPU constraints):
 * - every await costs >= 11 ms on Deno, and `queue.submit` blocks, so work is recorded into one
 *   command encoder and submitted once per step; `read()` is the only await in a step;
 * - a storage binding is at most `maxStorageBufferBindingSize` (128 MiB by default), so tensors
 *   bigger than that are split into row shards by the caller (see {@linkcode splitRows});
 * - workgroup-memory tiles are slow on CPU rasterizers (llvmpipe/lavapipe) and fast on real
 *   GPUs, so kernels pick a variant from {@linkcode Gpu.isCpuAdapter}.
 *
 * This module uses no `Deno.*` API so that it also runs in a browser.
 * @module
 */
import { HiraError } from "./errors.ts";

/** Element types a GPU tensor can hold. */
export type DType = "f32" | "f16" | "i32" | "u32";

/** Bytes per element of each {@linkcode DType}. */
export const DTYPE_BYTES: Record<DType, number> = { f32: 4, f16: 2, i32: 4, u32: 4 };

/** How a kernel sees one binding: uniform parameters, read-only or read-write storage. */
export type BindingKind = "uniform" | "read" | "rw";

/** A compiled compute kernel: one entry point of one WGSL file with its binding layout. */
export interface Kernel {
  /** Cache key (file, entry, defines): {@linkcode kernelKey} of `spec`. */
  readonly key: string;
  /** What it was compiled from. */
  readonly spec: KernelSpec;
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  readonly bindings: readonly BindingKind[];
}

/** Description of a kernel for {@linkcode Gpu.kernel}. */
export interface KernelSpec {
  /** WGSL file name inside kernels/, e.g. "matmul.wgsl". */
  file: string;
  /** Entry point name. */
  entry: string;
  /** Binding kinds in binding-number order (group 0). Binding 0 is usually "uniform". */
  bindings: readonly BindingKind[];
  /**
   * Text substitutions applied before compilation: every `{{NAME}}` in the source becomes the
   * value. Used for tile sizes and element types, which WGSL `override` cannot express.
   */
  defines?: Record<string, string | number>;
  /**
   * Uniform structs the source splices in with a `//! struct NAME` line (see
   * {@linkcode uniformStruct}). Constants of the op module: the cache key leaves them out.
   */
  structs?: readonly UniformStruct[];
}

/** Scalar types of a {@linkcode uniformStruct} field: 4 bytes each, packed in order. */
export type UniformType = "u32" | "i32" | "f32";

/**
 * One description of a kernel's uniform block, from which both sides follow: {@linkcode pack}
 * turns named values into the positional list {@linkcode Gpu.dispatch} writes, and
 * {@linkcode wgsl} is the WGSL struct a kernel splices in with `//! struct NAME`.
 */
export interface UniformStruct<F extends string = string> {
  readonly name: string;
  readonly fields: readonly (readonly [F, UniformType])[];
  /** `struct NAME { field: type, ... }` as WGSL text (one field a line). */
  readonly wgsl: string;
  /** The values in field order, each typed as its field (u32 as a plain number). */
  pack(values: Readonly<Record<F, number>>): UniformValue[];
}

/**
 * Describes a uniform struct of 4-byte scalars once, for both the host's buffer layout and the
 * WGSL declaration (docs/kernels.md): `uniformStruct("MmParams", ["M", "N", ["alpha", "f32"]])`.
 * A bare name is a u32 field (most are sizes and counts); `[name, type]` gives the type.
 */
export function uniformStruct<const F extends string>(
  name: string,
  fieldList: readonly (F | readonly [F, UniformType])[],
): UniformStruct<F> {
  if (!/^[A-Za-z_]\w*$/.test(name)) throw new Error(`uniformStruct: bad name "${name}"`);
  const fields = fieldList.map((f): readonly [F, UniformType] =>
    typeof f === "string" ? [f, "u32"] : f
  );
  const seen = new Set<string>();
  for (const [f, t] of fields) {
    if (!/^[A-Za-z_]\w*$/.test(f) || seen.has(f)) {
      throw new Error(`uniformStruct ${name}: bad or repeated field "${f}"`);
    }
    if (t !== "u32" && t !== "i32" && t !== "f32") {
      throw new Error(`uniformStruct ${name}.${f}: type ${t} is not u32, i32 or f32`);
    }
    seen.add(f);
  }
  if (!fields.length) throw new Error(`uniformStruct ${name}: no fields`);
  const wgsl = `struct ${name} {\n${fields.map(([f, t]) => `  ${f}: ${t},\n`).join("")}}`;
  return {
    name,
    fields,
    wgsl,
    pack(values) {
      return fields.map(([f, t]) => {
        const v = values[f];
        if (typeof v !== "number") throw new Error(`${name}.${f}: no value given`);
        if (t === "u32") {
          if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
            throw new Error(`${name}.${f}: ${v} is not a u32`);
          }
          return v;
        }
        return t === "i32" ? { i32: v } : { f32: v };
      });
    },
  };
}

/**
 * A kernel file with the uniform structs it splices, so that every spec of it gives them
 * (docs/kernels.md): op modules describe their file once and build their entries' specs from it.
 */
export interface KernelFile {
  /** WGSL file name inside kernels/. */
  readonly file: string;
  /** The structs of its `//! struct NAME` lines. */
  readonly structs: readonly UniformStruct[];
  /** The spec of one entry of the file. */
  spec(
    entry: string,
    bindings: readonly BindingKind[],
    defines?: KernelSpec["defines"],
  ): KernelSpec;
}

/** Describes a kernel file and its uniform structs once (see {@linkcode KernelFile}). */
export function kernelFile(file: string, structs: readonly UniformStruct[]): KernelFile {
  return {
    file,
    structs,
    spec: (entry, bindings, defines) => ({
      file,
      entry,
      bindings,
      ...(defines && { defines }),
      structs,
    }),
  };
}

/** Where one line of an expanded kernel source came from (kernels/-relative file, 1-based). */
export interface SourceLine {
  file: string;
  line: number;
}

/** A kernel file with its includes spliced in (see {@linkcode expandIncludes}). */
export interface ExpandedSource {
  /** The WGSL text. */
  code: string;
  /** The origin of each line of `code`. */
  lines: readonly SourceLine[];
  /** Every file spliced in, the kernel file first, in the order they were read. */
  files: readonly string[];
}

const INCLUDE_LINE = /^\s*\/\/!\s*include\b(.*)$/;
const STRUCT_LINE = /^\s*\/\/!\s*struct\b(.*)$/;

/** A kernels/-relative include path, checked: `name.wgsl` or `folder/name.wgsl`, no "..". */
function includePath(raw: string): string | null {
  const m = /^\s*"([^"]+)"\s*$/.exec(raw);
  if (!m) return null;
  const parts = m[1].split("/");
  if (
    !m[1].endsWith(".wgsl") ||
    parts.some((p) => p === "" || p === "." || p === ".." || p.includes("\\"))
  ) return null;
  return m[1];
}

/**
 * Splices the includes of a kernel file: a line `//! include "common/flat.wgsl"` is replaced by
 * that file (paths relative to kernels/), recursively. Each file is spliced once per module (a
 * second include of it is dropped); an include cycle, a malformed directive or a file that cannot
 * be read is an error naming the including file and line. `read` gets kernels/-relative paths.
 * Runs before the defines are substituted (docs/kernels.md).
 */
export async function expandIncludes(
  file: string,
  read: (file: string) => Promise<string>,
): Promise<ExpandedSource> {
  const out: string[] = [];
  const lines: SourceLine[] = [];
  const done = new Set<string>();
  const stack: string[] = [];
  const visit = async (f: string, from?: SourceLine): Promise<void> => {
    if (stack.includes(f)) {
      const cycle = [...stack.slice(stack.indexOf(f)), f].map((x) => `kernels/${x}`);
      throw new Error(`kernels/${from!.file}:${from!.line}: include cycle ${cycle.join(" -> ")}`);
    }
    if (done.has(f)) return;
    done.add(f);
    let text: string;
    try {
      text = await read(f);
    } catch (e) {
      if (!from) throw e;
      throw new Error(
        `kernels/${from.file}:${from.line} includes kernels/${f}, which cannot be read: ` +
          (e instanceof Error ? e.message : String(e)),
      );
    }
    stack.push(f);
    const src = text.split("\n");
    for (let i = 0; i < src.length; i++) {
      const m = INCLUDE_LINE.exec(src[i]);
      if (!m) {
        out.push(src[i]);
        lines.push({ file: f, line: i + 1 });
        continue;
      }
      const path = includePath(m[1]);
      if (!path) {
        throw new Error(
          `kernels/${f}:${i + 1}: malformed include ${src[i].trim()} (want //! include ` +
            `"folder/name.wgsl", relative to kernels/)`,
        );
      }
      await visit(path, { file: f, line: i + 1 });
    }
    stack.pop();
  };
  await visit(file);
  return { code: out.join("\n"), lines, files: [...done] };
}

/**
 * Replaces each `//! struct NAME` line of an expanded source by the WGSL of the struct of that
 * name in `structs`; a directive whose struct is not given is an error.
 */
export function spliceStructs(
  src: ExpandedSource,
  structs: readonly UniformStruct[] = [],
  what = `kernels/${src.files[0]}`,
): ExpandedSource {
  const code = src.code.split("\n");
  if (!code.some((l) => STRUCT_LINE.test(l))) return src;
  const out: string[] = [];
  const lines: SourceLine[] = [];
  code.forEach((l, i) => {
    const m = STRUCT_LINE.exec(l);
    if (!m) {
      out.push(l);
      lines.push(src.lines[i]);
      return;
    }
    const name = m[1].trim();
    const s = structs.find((x) => x.name === name);
    if (!s) {
      const at = src.lines[i];
      throw new Error(
        `${what}: kernels/${at.file}:${at.line} splices struct ${name}, which its kernel spec ` +
          `does not give (structs: ${structs.map((x) => x.name).join(", ") || "none"})`,
      );
    }
    for (const sl of s.wgsl.split("\n")) {
      out.push(sl);
      lines.push(src.lines[i]);
    }
  });
  return { code: out.join("\n"), lines, files: src.files };
}

/** The compiled-kernel cache key of a spec: "file#entry#NAME=value,..." with the defines sorted. */
export function kernelKey(spec: KernelSpec): string {
  const defs = spec.defines ?? {};
  return `${spec.file}#${spec.entry}#${
    Object.keys(defs).sort().map((k) => `${k}=${defs[k]}`).join(",")
  }`;
}

/** A window of a GPU buffer bound to a kernel. */
export interface BufferWindow {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

/** Values written into a kernel's uniform block: u32, i32 or f32 each, 4 bytes apiece. */
export type UniformValue = { u32: number } | { i32: number } | { f32: number } | number;

/**
 * A dense row-major tensor living in one GPU buffer (possibly a window of it).
 * Tensors come from {@linkcode Gpu.empty} / {@linkcode Gpu.upload}, which take buffers from the
 * pool; {@linkcode Tensor.release} gives the buffer back.
 */
export class Tensor {
  /** Number of elements. */
  readonly size: number;
  #released = false;

  constructor(
    readonly gpu: Gpu,
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly buffer: GPUBuffer,
    readonly byteOffset = 0,
    /** Whether this tensor owns its buffer (false for views). */
    readonly owned = true,
  ) {
    this.size = shape.reduce((a, b) => a * b, 1);
  }

  /** Size in bytes (unpadded). */
  get byteLength(): number {
    return this.size * DTYPE_BYTES[this.dtype];
  }

  /** The binding window of this tensor, padded to 4 bytes. */
  get window(): BufferWindow {
    return {
      buffer: this.buffer,
      offset: this.byteOffset,
      size: Math.ceil(this.byteLength / 4) * 4,
    };
  }

  /** Whether {@linkcode release} was called. */
  get released(): boolean {
    return this.#released;
  }

  /** A tensor over the same memory with another shape (same element count). */
  reshape(shape: readonly number[]): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    if (n !== this.size) throw new Error(`reshape: ${this.shape} -> ${shape} changes the size`);
    return new Tensor(this.gpu, shape, this.dtype, this.buffer, this.byteOffset, false);
  }

  /**
   * Rows [start, start+count) of a tensor, viewed along dimension 0 without a copy.
   * The byte offset must respect the adapter's storage offset alignment.
   */
  rows(start: number, count: number): Tensor {
    const rowElems = this.size / this.shape[0];
    const off = this.byteOffset + start * rowElems * DTYPE_BYTES[this.dtype];
    if (off % this.gpu.limits.minStorageBufferOffsetAlignment !== 0) {
      throw new Error(`rows: offset ${off} is not aligned for a storage binding`);
    }
    return new Tensor(
      this.gpu,
      [count, ...this.shape.slice(1)],
      this.dtype,
      this.buffer,
      off,
      false,
    );
  }

  /** Gives the buffer back to the pool. Views release nothing. Idempotent. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    if (this.owned) this.gpu.pool.give(this.buffer);
  }
}

/** A reusable set of GPU buffers, bucketed by size, so a steady training step allocates nothing. */
export class BufferPool {
  #free = new Map<number, GPUBuffer[]>();
  /** Buffers created so far (grows only on a miss). */
  created = 0;
  /** Bytes held by buffers created by this pool. */
  bytesCreated = 0;

  constructor(readonly device: GPUDevice) {}

  /** Bucket size for a request: powers of two up to 1 MiB, then multiples of 1 MiB. */
  static bucket(bytes: number): number {
    const b = Math.max(256, bytes);
    if (b <= 1 << 20) return 1 << Math.ceil(Math.log2(b));
    return Math.ceil(b / (1 << 20)) * (1 << 20);
  }

  /** A storage buffer of at least `bytes` bytes. */
  take(bytes: number): GPUBuffer {
    const size = BufferPool.bucket(bytes);
    const list = this.#free.get(size);
    const hit = list?.pop();
    if (hit) return hit;
    this.created++;
    this.bytesCreated += size;
    return this.device.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
  }

  /** Returns a buffer taken from this pool. */
  give(buffer: GPUBuffer): void {
    const list = this.#free.get(buffer.size);
    if (list) list.push(buffer);
    else this.#free.set(buffer.size, [buffer]);
  }

  /** Destroys every free buffer. */
  trim(): void {
    for (const list of this.#free.values()) for (const b of list) b.destroy();
    this.#free.clear();
  }
}

const UNIFORM_SLOT = 256;
const UNIFORM_CHUNK = 64 * 1024;

/** Options for {@linkcode createGpu}. */
export interface GpuOptions {
  /** "high-performance" by default. */
  powerPreference?: GPUPowerPreference;
  /** Where kernels/*.wgsl live; defaults to the project's kernels/ folder. */
  kernelsUrl?: URL;
  /** Disable shader-f16 even when the adapter has it. */
  noF16?: boolean;
}

/** The message shown when no WebGPU adapter is found. */
export const NO_ADAPTER_HELP =
  "no WebGPU adapter found. On a machine without a GPU install Mesa's Vulkan driver " +
  "(`apt-get install -y mesa-vulkan-drivers`) and set DENO_WEBGPU_BACKEND=vulkan " +
  "(or DENO_WEBGPU_BACKEND=gl for llvmpipe); the value must be exactly 'vulkan' or 'gl'.";

/**
 * The GPU device was lost (driver reset or crash, GPU out of memory, device destroyed). Nothing
 * on the device survives; a training run reports the step and stops with its last checkpoint.
 */
export class DeviceLostError extends Error {
  /** Why, as WebGPU reports it ("destroyed" or "unknown"). */
  readonly reason: string;
  /** Makes the error from the device's lost info. */
  constructor(info: { reason: string; message: string }, options?: ErrorOptions) {
    super(
      `the GPU device was lost (${info.reason}${info.message ? `: ${info.message}` : ""})`,
      options,
    );
    this.name = "DeviceLostError";
    this.reason = info.reason;
  }
}

/**
 * Acquires an adapter and a device with the adapter's real limits (large buffers) and its
 * optional features (shader-f16, subgroups, timestamp-query).
 */
export async function createGpu(options: GpuOptions = {}): Promise<Gpu> {
  if (typeof navigator === "undefined" || !("gpu" in navigator)) {
    throw new Error(NO_ADAPTER_HELP);
  }
  const adapter = await navigator.gpu.requestAdapter({
    powerPreference: options.powerPreference ?? "high-performance",
  });
  if (!adapter) throw new Error(NO_ADAPTER_HELP);
  const wanted: GPUFeatureName[] = ["shader-f16", "subgroups", "timestamp-query"];
  const requiredFeatures = wanted.filter((f) =>
    adapter.features.has(f) && !(f === "shader-f16" && options.noF16)
  );
  const l = adapter.limits;
  const requiredLimits: Record<string, number> = {
    maxBufferSize: l.maxBufferSize,
    maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
    maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
    maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
    maxComputeWorkgroupSizeY: l.maxComputeWorkgroupSizeY,
    maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
  };
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  return new Gpu(adapter, device, options.kernelsUrl ?? new URL("../../kernels/", import.meta.url));
}

/**
 * One WebGPU device plus everything the engine needs around it. Work is recorded with
 * {@linkcode dispatch} into a single command encoder and submitted by {@linkcode flush}
 * (called by {@linkcode read}).
 */
export class Gpu {
  /** The pool every tensor buffer comes from. */
  readonly pool: BufferPool;
  /** The device's limits as granted. */
  readonly limits: GPUSupportedLimits;
  /** Whether the device has shader-f16. */
  readonly hasF16: boolean;
  /** Whether the device has subgroups. */
  readonly hasSubgroups: boolean;
  /** True for CPU rasterizers (llvmpipe, lavapipe, SwiftShader), which want other kernels. */
  readonly isCpuAdapter: boolean;
  /**
   * Loop iterations one invocation may run in all (see {@linkcode loopBudget}): 65,535 on
   * llvmpipe, unlimited elsewhere. Kernels whose loops could run longer check it first.
   */
  readonly loopBudget: number;
  /** Number of dispatches recorded since creation (for tests and benchmarks). */
  dispatches = 0;
  /** Number of submits since creation. */
  submits = 0;
  /**
   * Called with every dispatch as it is recorded (tensors given as their buffer windows), so a
   * profiler can replay the same dispatches one at a time (bench/profile.ts).
   */
  onDispatch?: (
    kernel: Kernel,
    args: readonly (BufferWindow | readonly UniformValue[])[],
    workgroups: readonly [number, number?, number?],
  ) => void;

  #sources = new Map<string, Promise<string>>();
  #expanded = new Map<string, Promise<ExpandedSource>>();
  #kernels = new Map<string, Kernel>();
  #pending = new Map<string, Promise<Kernel>>();
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #uniformChunks: { buffer: GPUBuffer; data: ArrayBuffer }[] = [];
  #uniformChunk = 0;
  #uniformOffset = 0;
  #staging: GPUBuffer[] = [];
  #lost: GPUDeviceLostInfo | null = null;
  #errors: string[] = [];
  #subgroupsDirective: Promise<boolean> | null = null;

  constructor(
    readonly adapter: GPUAdapter,
    readonly device: GPUDevice,
    readonly kernelsUrl: URL,
  ) {
    this.pool = new BufferPool(device);
    this.limits = device.limits;
    this.hasF16 = device.features.has("shader-f16");
    this.hasSubgroups = device.features.has("subgroups");
    const info = adapter.info;
    const desc = `${info?.description ?? ""} ${info?.device ?? ""}`.toLowerCase();
    this.isCpuAdapter = (info as { isFallbackAdapter?: boolean })?.isFallbackAdapter === true ||
      /llvmpipe|lavapipe|swiftshader/.test(desc);
    this.loopBudget = loopBudget(desc);
    device.lost.then((info) => {
      this.#lost = info;
    });
    // Validation errors (e.g. a buffer bound both read-only and writable in one dispatch) are
    // otherwise only printed; collect them and fail the next flush so bugs cannot go silent.
    device.addEventListener("uncapturederror", (e) => {
      this.#errors.push((e as GPUUncapturedErrorEvent).error.message);
    });
  }

  /** A one-line description of the adapter. */
  get description(): string {
    const i = this.adapter.info;
    return [i?.description || i?.device, i?.vendor, i?.architecture].filter(Boolean).join(" / ") ||
      "unknown adapter";
  }

  /** Throws a {@linkcode DeviceLostError} if the device was lost (driver reset, out of memory). */
  checkLost(): void {
    if (this.#lost) throw new DeviceLostError(this.#lost);
    if (this.#errors.length) {
      const errs = this.#errors.splice(0);
      throw new Error(`WebGPU validation error: ${errs.join("; ")}`);
    }
  }

  /**
   * Whether the device is lost, waiting up to `waitMs` for `device.lost` to settle: after a
   * failed GPU call the loss may be reported a moment later than the failure.
   */
  async lostInfo(waitMs = 0): Promise<GPUDeviceLostInfo | null> {
    if (this.#lost || waitMs <= 0) return this.#lost;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const info = await Promise.race([
      this.device.lost,
      new Promise<null>((r) => (timer = setTimeout(() => r(null), waitMs))),
    ]);
    clearTimeout(timer);
    return info;
  }

  async #source(file: string): Promise<string> {
    let p = this.#sources.get(file);
    if (!p) {
      p = fetch(new URL(file, this.kernelsUrl)).then((r) => {
        if (!r.ok) throw new Error(`cannot load kernel ${file}: HTTP ${r.status}`);
        return r.text();
      });
      this.#sources.set(file, p);
      // A failed read is not cached: the next kernel asks again.
      p.catch(() => this.#sources.delete(file));
    }
    return await p;
  }

  /**
   * A kernel file of {@linkcode kernelsUrl} with its `//! include` lines spliced in (once per
   * file; see {@linkcode expandIncludes}), before defines and structs.
   */
  kernelSource(file: string): Promise<ExpandedSource> {
    let p = this.#expanded.get(file);
    if (!p) {
      p = expandIncludes(file, (f) => this.#source(f));
      this.#expanded.set(file, p);
      p.catch(() => this.#expanded.delete(file));
    }
    return p;
  }

  /**
   * Compiles (once) and returns a kernel. Compilation errors are reported with the file, entry
   * and the WGSL compiler's messages.
   */
  async kernel(spec: KernelSpec): Promise<Kernel> {
    const key = kernelKey(spec);
    const done = this.#kernels.get(key);
    if (done) return done;
    let p = this.#pending.get(key);
    if (!p) {
      p = this.#compile(key, spec);
      this.#pending.set(key, p);
    }
    return await p;
  }

  /** A kernel compiled earlier by {@linkcode kernel}, or undefined. Synchronous. */
  cached(spec: KernelSpec): Kernel | undefined {
    return this.#kernels.get(kernelKey(spec));
  }

  /**
   * Whether WGSL here takes `enable subgroups;`: Dawn (browsers) requires it for subgroup
   * builtins, while Naga (Deno) rejects it as not yet implemented and gates the builtins on the
   * device feature alone. Probed once, inside an error scope so that a rejection is not reported
   * as a validation error of the next flush.
   */
  #acceptsSubgroupsDirective(): Promise<boolean> {
    this.#subgroupsDirective ??= (async () => {
      this.device.pushErrorScope("validation");
      const module = this.device.createShaderModule({
        code: "enable subgroups;\n@compute @workgroup_size(1) fn main() {}",
      });
      const info = await module.getCompilationInfo();
      const scoped = await this.device.popErrorScope();
      return !scoped && !info.messages.some((m) => m.type === "error");
    })();
    return this.#subgroupsDirective;
  }

  async #compile(key: string, spec: KernelSpec): Promise<Kernel> {
    const src = spliceStructs(
      await this.kernelSource(spec.file),
      spec.structs,
      `kernels/${spec.file} (${spec.entry})`,
    );
    let code = src.code;
    // Lines prepended below (enable directives) come before the expanded source's first line.
    let prefix = 0;
    for (const [k, v] of Object.entries(spec.defines ?? {})) {
      code = code.replaceAll(`{{${k}}}`, String(v));
    }
    // A directive, not a mention in a comment, decides whether the source already enables f16.
    if (this.hasF16 && /\bf16\b/.test(code) && !/^\s*enable f16;/m.test(code)) {
      code = "enable f16;\n" + code;
      prefix++;
    }
    // Subgroup builtins (here a mention in a comment counts too, which is harmless).
    if (
      this.hasSubgroups && /\bsubgroup[A-Z_]/.test(code) && !/^\s*enable subgroups;/m.test(code) &&
      await this.#acceptsSubgroupsDirective()
    ) {
      code = "enable subgroups;\n" + code;
      prefix++;
    }
    const module = this.device.createShaderModule({ code, label: key });
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === "error");
    if (errors.length) {
      // Deno reports every message at 1:1 with the position in its text ("wgsl:L:C"); browsers
      // give lineNum. Either counts lines of the compiled code: name the file line it came from.
      const at = (m: GPUCompilationMessage) => {
        const pos = /\bwgsl:(\d+):(\d+)/.exec(m.message);
        const line = pos ? Number(pos[1]) : m.lineNum;
        const col = pos ? Number(pos[2]) : m.linePos;
        const from = src.files.length > 1 ? src.lines[line - 1 - prefix] : undefined;
        return `line ${line}:${col}${from ? ` (kernels/${from.file}:${from.line})` : ""}`;
      };
      throw new Error(
        `WGSL error in kernels/${spec.file} (${spec.entry}): ` +
          errors.map((m) => `${at(m)} ${m.message}`).join("; "),
      );
    }
    const layout = this.device.createBindGroupLayout({
      label: key,
      entries: spec.bindings.map((kind, binding) => ({
        binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: {
          type: kind === "uniform" ? "uniform" : kind === "read" ? "read-only-storage" : "storage",
        },
      })),
    });
    this.device.pushErrorScope("validation");
    const pipeline = this.device.createComputePipeline({
      label: key,
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: spec.entry },
    });
    const err = await this.device.popErrorScope();
    if (err) throw new Error(`pipeline for kernels/${spec.file} (${spec.entry}): ${err.message}`);
    const kernel: Kernel = { key, spec, pipeline, layout, bindings: spec.bindings };
    this.#kernels.set(key, kernel);
    this.#pending.delete(key);
    return kernel;
  }

  /** A new tensor from the pool; contents undefined. */
  empty(shape: readonly number[], dtype: DType = "f32"): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    const buf = this.pool.take(Math.max(4, n * DTYPE_BYTES[dtype]));
    return new Tensor(this, shape, dtype, buf);
  }

  /** A new zero-filled tensor (the clear is recorded in the current step). */
  zeros(shape: readonly number[], dtype: DType = "f32"): Tensor {
    const t = this.empty(shape, dtype);
    this.clear(t);
    return t;
  }

  /** Records a zero fill of a tensor. */
  clear(t: Tensor): void {
    this.#endPass();
    const w = t.window;
    this.#enc().clearBuffer(w.buffer, w.offset, w.size);
  }

  /** Records a copy of `src` into `dst` (same byte length). */
  copy(src: Tensor, dst: Tensor): void {
    if (src.byteLength !== dst.byteLength) {
      throw new Error(`copy: ${src.shape}/${src.dtype} into ${dst.shape}/${dst.dtype}`);
    }
    this.#endPass();
    const w = src.window;
    this.#enc().copyBufferToBuffer(w.buffer, w.offset, dst.buffer, dst.byteOffset, w.size);
  }

  /**
   * Uploads host data into a new tensor. Pending work is submitted first, because
   * `writeBuffer` runs ahead of unsubmitted commands and the buffer may be a recycled one that
   * pending work still reads.
   */
  upload(
    data: Float32Array | Int32Array | Uint32Array | Uint16Array | ArrayLike<number>,
    shape: readonly number[],
    dtype: DType = "f32",
  ): Tensor {
    const t = this.empty(shape, dtype);
    this.write(t, data);
    return t;
  }

  /** Overwrites a tensor with host data (see {@linkcode upload} on ordering). */
  write(
    t: Tensor,
    data: Float32Array | Int32Array | Uint32Array | Uint16Array | ArrayLike<number>,
  ): void {
    const bytes = toBytes(data, t.dtype);
    if (bytes.byteLength !== t.byteLength) {
      throw new Error(`write: ${bytes.byteLength} bytes into a tensor of ${t.byteLength}`);
    }
    if (this.#encoder) this.flush();
    // writeBuffer wants a multiple of 4 bytes.
    const padded = bytes.byteLength % 4 === 0 ? bytes : padTo4(bytes);
    this.device.queue.writeBuffer(t.buffer, t.byteOffset, padded);
  }

  #enc(): GPUCommandEncoder {
    this.checkLost();
    if (!this.#encoder) this.#encoder = this.device.createCommandEncoder();
    return this.#encoder;
  }

  #endPass(): void {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
  }

  #uniformSlot(values: readonly UniformValue[]): BufferWindow {
    const bytes = Math.ceil((values.length * 4) / 16) * 16 || 16;
    if (bytes > UNIFORM_SLOT) throw new Error(`too many uniforms (${values.length})`);
    if (this.#uniformOffset + UNIFORM_SLOT > UNIFORM_CHUNK) {
      this.#uniformChunk++;
      this.#uniformOffset = 0;
    }
    if (this.#uniformChunk === this.#uniformChunks.length) {
      this.#uniformChunks.push({
        buffer: this.device.createBuffer({
          size: UNIFORM_CHUNK,
          usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
        }),
        data: new ArrayBuffer(UNIFORM_CHUNK),
      });
    }
    const chunk = this.#uniformChunks[this.#uniformChunk];
    const view = new DataView(chunk.data, this.#uniformOffset, bytes);
    values.forEach((v, i) => {
      if (typeof v === "number") {
        if (!Number.isInteger(v) || v < 0) throw new Error(`uniform ${i}: ${v} is not a u32`);
        view.setUint32(i * 4, v, true);
      } else if ("u32" in v) view.setUint32(i * 4, v.u32, true);
      else if ("i32" in v) view.setInt32(i * 4, v.i32, true);
      else view.setFloat32(i * 4, v.f32, true);
    });
    const w = { buffer: chunk.buffer, offset: this.#uniformOffset, size: bytes };
    this.#uniformOffset += UNIFORM_SLOT;
    return w;
  }

  /**
   * Records one dispatch. `args` gives each binding in order: a uniform value list for
   * "uniform" bindings, a tensor or buffer window for storage bindings.
   * A workgroup count above the per-dimension limit is an error: kernels fold large
   * counts into y/z themselves (see {@linkcode grid}).
   */
  dispatch(
    kernel: Kernel,
    args: readonly (Tensor | BufferWindow | readonly UniformValue[])[],
    workgroups: readonly [number, number?, number?],
  ): void {
    if (args.length !== kernel.bindings.length) {
      throw new Error(
        `${kernel.key}: ${args.length} bindings given, ${kernel.bindings.length} needed`,
      );
    }
    const max = this.limits.maxComputeWorkgroupsPerDimension;
    const [x, y = 1, z = 1] = workgroups;
    if (x > max || y > max || z > max) {
      throw new Error(`${kernel.key}: workgroups ${workgroups} exceed ${max} per dimension`);
    }
    if (x === 0 || y === 0 || z === 0) return;
    const entries: GPUBindGroupEntry[] = args.map((a, binding) => {
      let w: BufferWindow;
      if (a instanceof Tensor) {
        if (a.released) throw new Error(`${kernel.key}: binding ${binding} was released`);
        w = a.window;
      } else if (Array.isArray(a)) w = this.#uniformSlot(a as UniformValue[]);
      else w = a as BufferWindow;
      if (
        w.size > this.limits.maxStorageBufferBindingSize && kernel.bindings[binding] !== "uniform"
      ) {
        throw new Error(
          `${kernel.key}: binding ${binding} is ${w.size} bytes, over the adapter's ` +
            `${this.limits.maxStorageBufferBindingSize}-byte binding limit; split the tensor`,
        );
      }
      return { binding, resource: { buffer: w.buffer, offset: w.offset, size: w.size } };
    });
    this.onDispatch?.(
      kernel,
      args.map((a) => a instanceof Tensor ? a.window : a as BufferWindow | UniformValue[]),
      workgroups,
    );
    const bindGroup = this.device.createBindGroup({ layout: kernel.layout, entries });
    if (!this.#pass) this.#pass = this.#enc().beginComputePass();
    this.#pass.setPipeline(kernel.pipeline);
    this.#pass.setBindGroup(0, bindGroup);
    this.#pass.dispatchWorkgroups(x, y, z);
    this.dispatches++;
  }

  /** Submits everything recorded so far (does not wait). */
  flush(): void {
    if (!this.#encoder) return;
    this.#endPass();
    for (let i = 0; i <= this.#uniformChunk && i < this.#uniformChunks.length; i++) {
      const c = this.#uniformChunks[i];
      const used = i < this.#uniformChunk ? UNIFORM_CHUNK : this.#uniformOffset;
      if (used > 0) this.device.queue.writeBuffer(c.buffer, 0, c.data, 0, used);
    }
    this.device.queue.submit([this.#encoder.finish()]);
    this.#encoder = null;
    this.#uniformChunk = 0;
    this.#uniformOffset = 0;
    this.submits++;
  }

  /** Waits until the GPU has finished all submitted work. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.checkLost();
  }

  /**
   * Submits pending work and reads tensors back to the host in one round trip.
   * f16 tensors come back as Float32Array.
   */
  async readMany(tensors: readonly Tensor[]): Promise<(Float32Array | Int32Array | Uint32Array)[]> {
    this.#endPass();
    const enc = this.#enc();
    const total = tensors.reduce((s, t) => s + Math.ceil(t.byteLength / 4) * 4, 0);
    let staging = this.#staging.find((b) => b.size >= total);
    if (staging) this.#staging.splice(this.#staging.indexOf(staging), 1);
    else {
      staging = this.device.createBuffer({
        size: BufferPool.bucket(total),
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
    }
    let off = 0;
    for (const t of tensors) {
      const w = t.window;
      enc.copyBufferToBuffer(w.buffer, w.offset, staging, off, w.size);
      off += w.size;
    }
    this.flush();
    await staging.mapAsync(GPUMapMode.READ, 0, total);
    this.checkLost();
    const all = staging.getMappedRange(0, total).slice(0);
    staging.unmap();
    this.#staging.push(staging);
    off = 0;
    return tensors.map((t) => {
      const n = t.size;
      let out: Float32Array | Int32Array | Uint32Array;
      if (t.dtype === "f32") out = new Float32Array(all, off, n);
      else if (t.dtype === "i32") out = new Int32Array(all, off, n);
      else if (t.dtype === "u32") out = new Uint32Array(all, off, n);
      else out = f16ToF32(new Uint16Array(all, off, n));
      off += Math.ceil(t.byteLength / 4) * 4;
      return out;
    });
  }

  /** Reads one tensor back (see {@linkcode readMany}). */
  async read(t: Tensor): Promise<Float32Array> {
    const [r] = await this.readMany([t]);
    return r instanceof Float32Array ? r : Float32Array.from(r);
  }

  /** Releases pooled buffers and the device. */
  destroy(): void {
    this.flush();
    this.pool.trim();
    for (const c of this.#uniformChunks) c.buffer.destroy();
    for (const s of this.#staging) s.destroy();
    this.device.destroy();
  }
}

/**
 * Splits a workgroup count that may exceed the per-dimension limit into (x, y) with x*y >= n.
 * Kernels then compute a flat index as `wg.x + wg.y * nwg.x`.
 */
export function grid(n: number, max = 65535): [number, number] {
  if (n <= max) return [n, 1];
  const y = Math.ceil(n / max);
  return [Math.ceil(n / y), y];
}

/** Loop iterations per invocation after which llvmpipe ends every loop of the invocation. */
export const LLVMPIPE_LOOP_LIMIT = 65535;

/**
 * Loop iterations one shader invocation may run in all on the adapter described by
 * `adapterDescription`. llvmpipe (Mesa's CPU driver behind lavapipe and GL) counts the iterations
 * of every loop of an invocation against one budget of {@linkcode LLVMPIPE_LOOP_LIMIT} (gallivm's
 * loop limiter, against shaders that never end) and, once it is spent, leaves each loop after
 * its current pass: the kernel carries on with partial sums and no error is raised. Loops that
 * Mesa unrolls do not count. Other adapters: unlimited.
 */
export function loopBudget(adapterDescription: string): number {
  return isLlvmpipe(adapterDescription) ? LLVMPIPE_LOOP_LIMIT : Infinity;
}

/** Whether an adapter description names llvmpipe (lavapipe is its Vulkan driver). */
export function isLlvmpipe(adapterDescription: string): boolean {
  return /llvmpipe|lavapipe/i.test(adapterDescription);
}

/**
 * Whether a kernel whose invocations run about `iterations` loop passes fits `budget`
 * ({@linkcode loopBudget}): the estimates are fitted to where llvmpipe went wrong, not exact, so
 * they may use 90% of it.
 */
export function withinLoopBudget(iterations: number, budget: number): boolean {
  return iterations <= 0.9 * budget;
}

/**
 * Error for a kernel launch whose loops would run past the adapter's {@linkcode loopBudget}:
 * `what` names the call, `iterations` is the estimate per invocation, `instead` what to use. A
 * {@linkcode HiraError}: the input's size is what the user can change, so entrypoints print it
 * as one line.
 */
export function loopBudgetError(
  what: string,
  iterations: number,
  budget: number,
  instead: string,
): HiraError {
  return new HiraError(
    what,
    `one invocation would run about ${Math.round(iterations).toLocaleString("en-US")} ` +
      `loop iterations, over this adapter's limit of ${budget.toLocaleString("en-US")} ` +
      `(llvmpipe ends longer loops early and the result would be wrong); ${instead}`,
  );
}

/** Ceiling division. */
export function cdiv(a: number, b: number): number {
  return Math.floor((a + b - 1) / b);
}

/**
 * Row counts for splitting a [rows, cols] tensor into shards of at most `maxBytes` each, with
 * every shard boundary on a row (used for embeddings above the binding limit).
 */
export function splitRows(
  rows: number,
  cols: number,
  bytesPerElem: number,
  maxBytes: number,
): number[] {
  const rowBytes = cols * bytesPerElem;
  // Keep shard byte sizes a multiple of 256 so each shard can also be a view at an aligned offset.
  let per = Math.max(1, Math.floor(maxBytes / rowBytes));
  while (per > 1 && (per * rowBytes) % 256 !== 0) per--;
  const out: number[] = [];
  for (let r = 0; r < rows; r += per) out.push(Math.min(per, rows - r));
  return out;
}

function toBytes(
  data: Float32Array | Int32Array | Uint32Array | Uint16Array | ArrayLike<number>,
  dtype: DType,
): Uint8Array<ArrayBuffer> {
  let arr: Float32Array | Int32Array | Uint32Array | Uint16Array;
  if (dtype === "f32") arr = data instanceof Float32Array ? data : Float32Array.from(data);
  else if (dtype === "i32") arr = data instanceof Int32Array ? data : Int32Array.from(data);
  else if (dtype === "u32") arr = data instanceof Uint32Array ? data : Uint32Array.from(data);
  else arr = data instanceof Uint16Array ? data : f32ToF16(Float32Array.from(data));
  return new Uint8Array(arr.buffer as ArrayBuffer, arr.byteOffset, arr.byteLength);
}

function padTo4(b: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(Math.ceil(b.byteLength / 4) * 4);
  out.set(b);
  return out;
}

/** IEEE half bits to f32 values. */
export function f16ToF32(h: Uint16Array): Float32Array {
  const out = new Float32Array(h.length);
  for (let i = 0; i < h.length; i++) {
    const x = h[i];
    const s = x & 0x8000 ? -1 : 1;
    const e = (x >> 10) & 0x1f;
    const m = x & 0x3ff;
    if (e === 0) out[i] = s * m * 2 ** -24;
    else if (e === 31) out[i] = m ? NaN : s * Infinity;
    else out[i] = s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}

/** f32 values to IEEE half bits, round to nearest even. */
export function f32ToF16(f: Float32Array): Uint16Array {
  const out = new Uint16Array(f.length);
  const u = new Uint32Array(f.buffer, f.byteOffset, f.length);
  for (let i = 0; i < f.length; i++) {
    const x = u[i];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    let e = exp - 127 + 15;
    if (e >= 31) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      let hm = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      if (rem > half || (rem === half && (hm & 1))) hm++;
      out[i] = sign | hm;
      continue;
    }
    let hm = mant >>> 13;
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (hm & 1))) {
      hm++;
      if (hm === 0x400) {
        hm = 0;
        e++;
        if (e >= 31) {
          out[i] = sign | 0x7c00;
          continue;
        }
      }
    }
    out[i] = sign | (e << 10) | hm;
  }
  return out;
}

/** BF16 bits to f32 values (exact). */
export function bf16ToF32(b: Uint16Array): Float32Array {
  const u = new Uint32Array(b.length);
  for (let i = 0; i < b.length; i++) u[i] = b[i] << 16;
  return new Float32Array(u.buffer);
}

/** f32 values to BF16 bits, round to nearest even (NaN kept quiet). */
export function f32ToBf16(f: Float32Array): Uint16Array {
  const u = new Uint32Array(f.buffer, f.byteOffset, f.length);
  const out = new Uint16Array(f.length);
  for (let i = 0; i < f.length; i++) {
    const x = u[i];
    if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) {
      out[i] = (x >>> 16) | 0x40;
      continue;
    }
    out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}
