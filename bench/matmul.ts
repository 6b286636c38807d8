/**
 * Matmul benchmark: our WGSL matmul beside jax-js (WebGPU and Wasm backends) and TensorFlow.js
 * (WebGPU and Wasm backends), all in the same process on the same adapter.
 *
 * Method: C = A·B for square f32 matrices with entries in [-1, 1). Each implementation runs one
 * warm-up (compiles its kernels), then the median of several timed repetitions. A repetition is
 * "record the op → submit → wait until the device queue is idle" for WebGPU backends (ours:
 * `gpu.sync()`; TF.js: submit its queue and `onSubmittedWorkDone()`; jax-js:
 * `blockUntilReady()`), and the synchronous op for Wasm backends. No backend's timing includes
 * reading C back to the host; every WebGPU timing includes one await, which costs >= 11 ms on
 * Deno. After timing, C is read back once and checked at sampled entries against f64 dot
 * products.
 * @module
 */
import type { Array as JaxArray } from "@jax-js/jax";
import type { Tensor as TfTensor } from "@tensorflow/tfjs-core";
import type { Gpu, Tensor } from "../lib/engine/gpu.ts";
import { matmul, type MatmulVariant } from "../lib/ops/matmul.ts";
import { Rng } from "../lib/engine/rand.ts";

/** Timing of one implementation at one size, or why it could not run. */
export interface MatmulTiming {
  /** GFLOP/s from the median repetition (2·n³ flops). */
  gflops?: number;
  /** Median milliseconds per repetition. */
  ms?: number;
  /** Every repetition, in milliseconds. */
  reps?: number[];
  /** Largest |C - C_f64| / (1 + |C_f64|) over the sampled entries. */
  maxRelErr?: number;
  /**
   * Share of the machine's CPU time that other processes took while this was timed (0..1), when
   * /proc is readable (run with -A); otherwise absent.
   */
  othersLoad?: number;
  /** Set instead of the numbers when the implementation failed to load or run. */
  error?: string;
}

/** Result of {@linkcode benchMatmul}. */
export interface MatmulBenchResult {
  /** The adapter our kernels ran on. */
  adapter: string;
  /** Logical CPUs (navigator.hardwareConcurrency). */
  cpus: number;
  /** 1-minute load average before the run, when Deno.loadavg is permitted. */
  loadavgBefore?: number;
  /** One paragraph on how the numbers were taken. */
  method: string;
  /** Matrix sizes n (n×n·n×n). */
  sizes: number[];
  /** Implementation names in table order; "ours" first. */
  implementations: string[];
  /** results[impl][size] */
  results: Record<string, Record<string, MatmulTiming>>;
  /** ours/peer GFLOP/s ratio: ratios[peer][size]. */
  ratios: Record<string, Record<string, number>>;
}

/** Options for {@linkcode benchMatmul}. */
export interface MatmulBenchOptions {
  /** Peers to run (default: all four). */
  peers?: readonly PeerName[];
  /** Our kernel variants to time (default ["auto"]). */
  variants?: readonly MatmulVariant[];
  /**
   * Also time ours with this many matmuls recorded per submit (default 4; 0 = skip), which
   * spreads the one >= 11 ms await over several products, as a training step does.
   */
  perSubmit?: number;
  /** Give up on an implementation's size after this many milliseconds (default 240000). */
  timeoutMs?: number;
  /** Target milliseconds of timed work per implementation and size (default 6000). */
  budgetMs?: number;
  /** Progress lines go here (default: none). */
  log?: (line: string) => void;
}

/** The peers {@linkcode benchMatmul} knows. */
export const PEERS = ["jax-js webgpu", "jax-js wasm", "tfjs webgpu", "tfjs wasm"] as const;

/** A peer implementation's name. */
export type PeerName = typeof PEERS[number];

const METHOD = "C = A·B, square f32, entries in [-1,1). One warm-up, then the median of " +
  "3..7 repetitions (fewer for slow ones). WebGPU backends: record → submit → await queue " +
  "idle (ours: gpu.sync(); tfjs: submit + onSubmittedWorkDone; jax-js: blockUntilReady), so " +
  "each includes one >= 11 ms Deno await; Wasm backends: the synchronous op. Readback of C is " +
  "excluded for all; C is read once afterwards and checked at 64 sampled entries.";

/** One implementation under test: prepare inputs of size n, then time `run`. */
interface Impl {
  /** Uploads A and B; returns the repetition and a reader for the last C. */
  prepare(
    n: number,
    a: Float32Array<ArrayBuffer>,
    b: Float32Array<ArrayBuffer>,
  ): Promise<{ run(): Promise<void>; result(): Promise<ArrayLike<number>>; dispose(): void }>;
  /** Products per run (default 1). */
  perRun?: number;
  /** Releases the backend. */
  close?(): void;
}

/**
 * Times matmul at each size for ours and each peer. Peers that fail to load or run get an
 * `error` instead of numbers; the run continues.
 */
export async function benchMatmul(
  gpu: Gpu,
  sizes: readonly number[],
  opts: MatmulBenchOptions = {},
): Promise<MatmulBenchResult> {
  const log = opts.log ?? (() => {});
  const budget = opts.budgetMs ?? 6000;
  const variants = opts.variants?.length ? opts.variants : ["auto"] as const;
  const peers = opts.peers ?? PEERS;
  const perSubmit = opts.perSubmit ?? 4;
  const ourRuns: { name: string; variant: MatmulVariant; count: number }[] = variants.map((v) => ({
    name: v === "auto" ? "ours" : `ours (${v})`,
    variant: v,
    count: 1,
  }));
  if (perSubmit > 1) {
    ourRuns.push({ name: `ours ${perSubmit}/submit`, variant: "auto", count: perSubmit });
  }
  const implementations = [...ourRuns.map((o) => o.name), ...peers];
  const results: MatmulBenchResult["results"] = {};
  const inputs = new Map<number, { a: Float32Array<ArrayBuffer>; b: Float32Array<ArrayBuffer> }>();
  for (const n of sizes) {
    const rng = new Rng(n);
    const a = new Float32Array(n * n), b = new Float32Array(n * n);
    for (let i = 0; i < a.length; i++) a[i] = rng.uniform(-1, 1);
    for (let i = 0; i < b.length; i++) b[i] = rng.uniform(-1, 1);
    inputs.set(n, { a, b });
  }
  const loadavgBefore = loadavg();

  for (const name of implementations) {
    results[name] = {};
    let impl: Impl;
    try {
      const mine = ourRuns.find((o) => o.name === name);
      impl = mine ? ours(gpu, mine.variant, mine.count) : await loadPeer(name as PeerName);
    } catch (e) {
      for (const n of sizes) results[name][n] = { error: `load failed: ${message(e)}` };
      log(`${name}: n/a (${message(e)})`);
      continue;
    }
    for (const n of sizes) {
      const { a, b } = inputs.get(n)!;
      try {
        results[name][n] = await withTimeout(
          timeOne(impl, n, a, b, budget),
          opts.timeoutMs ?? 240_000,
        );
        const r = results[name][n];
        log(`${name} ${n}: ${r.gflops!.toFixed(2)} GFLOP/s (${r.reps!.length} reps)`);
      } catch (e) {
        results[name][n] = { error: message(e) };
        log(`${name} ${n}: n/a (${message(e)})`);
      }
    }
    impl.close?.();
  }

  const ratios: MatmulBenchResult["ratios"] = {};
  for (const peer of peers) {
    ratios[peer] = {};
    for (const n of sizes) {
      const o = results[ourRuns[0].name][n]?.gflops, p = results[peer][n]?.gflops;
      if (o !== undefined && p !== undefined) ratios[peer][n] = o / p;
    }
  }
  return {
    adapter: gpu.description,
    cpus: navigator.hardwareConcurrency,
    loadavgBefore,
    method: METHOD,
    sizes: [...sizes],
    implementations,
    results,
    ratios,
  };
}

async function timeOne(
  impl: Impl,
  n: number,
  a: Float32Array<ArrayBuffer>,
  b: Float32Array<ArrayBuffer>,
  budgetMs: number,
): Promise<MatmulTiming> {
  const prepared = await impl.prepare(n, a, b);
  try {
    // The warm-up compiles; a second untimed run estimates the steady cost.
    await prepared.run();
    let t0 = performance.now();
    await prepared.run();
    const est = performance.now() - t0;
    const count = Math.max(3, Math.min(7, Math.floor(budgetMs / Math.max(est, 1))));
    const reps: number[] = [];
    const load0 = cpuTimes();
    for (let i = 0; i < count; i++) {
      t0 = performance.now();
      await prepared.run();
      reps.push(performance.now() - t0);
    }
    const load1 = cpuTimes();
    const sorted = [...reps].sort((x, y) => x - y);
    const ms = sorted[Math.floor(sorted.length / 2)];
    const c = await prepared.result();
    return {
      gflops: ((impl.perRun ?? 1) * 2 * n ** 3) / (ms * 1e6),
      ms,
      reps,
      maxRelErr: sampledError(a, b, c, n),
      othersLoad: load0 && load1 ? othersShare(load0, load1) : undefined,
    };
  } finally {
    prepared.dispose();
  }
}

/** Worst relative error of C at 64 seeded entries against f64 dot products. */
function sampledError(a: Float32Array, b: Float32Array, c: ArrayLike<number>, n: number): number {
  const rng = new Rng(7);
  let worst = 0;
  for (let s = 0; s < 64; s++) {
    const i = Math.floor(rng.uniform(0, n)), j = Math.floor(rng.uniform(0, n));
    let ref = 0;
    for (let k = 0; k < n; k++) ref += a[i * n + k] * b[k * n + j];
    worst = Math.max(worst, Math.abs(c[i * n + j] - ref) / (1 + Math.abs(ref)));
  }
  return worst;
}

function ours(gpu: Gpu, variant: MatmulVariant, perRun: number): Impl {
  return {
    perRun,
    prepare(n, a, b) {
      const ta = gpu.upload(a, [n, n]), tb = gpu.upload(b, [n, n]);
      const tc: Tensor = gpu.empty([n, n]);
      return Promise.resolve({
        async run() {
          for (let i = 0; i < perRun; i++) await matmul(gpu, ta, tb, { out: tc, variant });
          await gpu.sync();
        },
        result: () => gpu.read(tc),
        dispose() {
          for (const t of [ta, tb, tc]) t.release();
        },
      });
    },
  };
}

async function loadPeer(name: PeerName): Promise<Impl> {
  switch (name) {
    case "jax-js webgpu":
      return await jaxPeer("webgpu");
    case "jax-js wasm":
      return await jaxPeer("wasm");
    case "tfjs webgpu":
      return await tfjsPeer("webgpu");
    case "tfjs wasm":
      return await tfjsPeer("wasm");
  }
}

async function jaxPeer(device: "webgpu" | "wasm"): Promise<Impl> {
  const jax = await import("@jax-js/jax");
  const available = await jax.init(device);
  if (!available.includes(device)) throw new Error(`jax-js has no ${device} backend here`);
  const np = jax.numpy;
  return {
    async prepare(n, a, b) {
      const ja = np.array(a, { shape: [n, n], device });
      const jb = np.array(b, { shape: [n, n], device });
      await jax.blockUntilReady([ja.ref, jb.ref]);
      let last: JaxArray | null = null;
      return {
        async run() {
          last?.dispose();
          last = np.matmul(ja.ref, jb.ref);
          await last.blockUntilReady();
        },
        async result() {
          const c = last!;
          last = null;
          return await c.data();
        },
        dispose() {
          last?.dispose();
          ja.dispose();
          jb.dispose();
        },
      };
    },
  };
}

/** The parts of tfjs-backend-webgpu's backend object that flushing its queue needs. */
interface TfWebGpuBackend {
  device: GPUDevice;
  commandEncoder: GPUCommandEncoder | null;
  endComputePassEncoder(): void;
  submitQueue(): void;
}

async function tfjsPeer(backend: "webgpu" | "wasm"): Promise<Impl> {
  const tf = await import("@tensorflow/tfjs-core");
  if (backend === "webgpu") await import("@tensorflow/tfjs-backend-webgpu");
  else {
    const wasm = await import("@tensorflow/tfjs-backend-wasm");
    wasm.setWasmPaths(
      new URL("../node_modules/@tensorflow/tfjs-backend-wasm/dist/", import.meta.url).href,
    );
  }
  if (!(await tf.setBackend(backend))) throw new Error(`tf.setBackend("${backend}") failed`);
  await tf.ready();
  return {
    prepare(n, a, b) {
      const ta = tf.tensor2d(a, [n, n]), tb = tf.tensor2d(b, [n, n]);
      let last: TfTensor | null = null;
      return Promise.resolve({
        async run() {
          last?.dispose();
          last = tf.matMul(ta, tb);
          if (backend === "webgpu") {
            // tfjs batches dispatches into its own encoder; submit it and wait for the queue.
            const be = tf.backend() as unknown as TfWebGpuBackend;
            be.endComputePassEncoder();
            if (be.commandEncoder) be.submitQueue();
            await be.device.queue.onSubmittedWorkDone();
          }
        },
        async result() {
          return await last!.data() as Float32Array;
        },
        dispose() {
          last?.dispose();
          ta.dispose();
          tb.dispose();
        },
      });
    },
    close() {
      tf.removeBackend(backend);
    },
  };
}

/** Formats {@linkcode benchMatmul}'s result as a plain-text table. */
export function formatMatmul(r: MatmulBenchResult): string {
  const lines: string[] = [];
  const notes: string[] = [];
  lines.push(
    `matmul GFLOP/s (${r.adapter}; ${r.cpus} CPUs` +
      (r.loadavgBefore !== undefined ? `; load average before ${r.loadavgBefore.toFixed(2)}` : "") +
      ")",
  );
  const header = ["n", ...r.implementations];
  const rows: string[][] = [];
  for (const n of r.sizes) {
    const row = [String(n)];
    for (const impl of r.implementations) {
      const t = r.results[impl][n];
      if (!t || t.error !== undefined) {
        let idx = notes.indexOf(t?.error ?? "not run");
        if (idx < 0) idx = notes.push(t?.error ?? "not run") - 1;
        row.push(`n/a [${idx + 1}]`);
        continue;
      }
      let cell = t.gflops!.toFixed(2);
      const ratio = r.ratios[impl]?.[n];
      if (ratio !== undefined) cell += ` (ours ${ratio.toFixed(2)}×)`;
      if (t.maxRelErr !== undefined && t.maxRelErr > 1e-3) cell += " WRONG";
      if (t.othersLoad !== undefined && t.othersLoad > 0.1) {
        cell += ` *${Math.round(t.othersLoad * 100)}%`;
      }
      row.push(cell);
    }
    rows.push(row);
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const fmtRow = (row: string[]) => row.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  lines.push(fmtRow(header));
  for (const row of rows) lines.push(fmtRow(row));
  lines.push(
    "(ours X× = our GFLOP/s over the peer's; *P% = other processes took P% of the CPUs meanwhile)",
  );
  notes.forEach((n, i) => lines.push(`[${i + 1}] ${n}`));
  lines.push(`method: ${r.method}`);
  return lines.join("\n");
}

/** Rejects when `p` takes longer than `ms` (the pending work is abandoned, not cancelled). */
async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function message(e: unknown): string {
  const s = e instanceof Error ? e.message : String(e);
  return s.split("\n")[0].slice(0, 160);
}

function loadavg(): number | undefined {
  try {
    return Deno.loadavg()[0];
  } catch {
    return undefined;
  }
}

interface CpuTimes {
  total: number;
  busy: number;
  self: number;
}

/** Machine-wide and own CPU ticks from /proc (Linux; needs -A in Deno 2.9), else null. */
function cpuTimes(): CpuTimes | null {
  try {
    const st = Deno.readTextFileSync("/proc/stat").split("\n")[0].trim().split(/\s+/).slice(1)
      .map(Number);
    const total = st.reduce((x, y) => x + y, 0);
    const self = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
    return { total, busy: total - st[3] - st[4], self: Number(self[11]) + Number(self[12]) };
  } catch {
    return null;
  }
}

function othersShare(a: CpuTimes, b: CpuTimes): number {
  const total = b.total - a.total;
  if (total <= 0) return 0;
  return Math.max(0, (b.busy - a.busy - (b.self - a.self)) / total);
}
