/**
 * Data-parallel benchmark (`deno task bench --only=dp`): with 1 and 2 ranks (`mpirun -np N`) on
 * this machine, the optimizer step's time, the all-reduce's time within it and its share, and
 * the all-reduce alone at a few sizes (its bandwidth here). HiRA r=32 on every projection, one
 * micro-batch per rank per step (so 2 ranks do twice the work of 1 in a step: the tokens/s ratio
 * is the scaling efficiency).
 *
 * Each rank is this file run with `--worker`; rank 0 prints its result as one JSON line. The
 * all-reduce time is measured around every Collective call a step makes (the gradients' one plus
 * the ranks' small agreement), from the host: it includes waiting for the slower rank.
 *
 * On a machine whose ranks share one CPU device (Mesa's lavapipe here) two ranks compete for the
 * same cores: the efficiency measured then is the machine's, not the method's (docs/benchmarks.md).
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { fromFileUrl } from "@std/path";
import { createGpu } from "../lib/engine/gpu.ts";
import { randomModel } from "../lib/model/load.ts";
import { Trainer } from "../lib/train/trainer.ts";
import { type Collective, Ranks, SINGLE_PROCESS } from "../lib/train/ranks.ts";
import { findMpiLibrary, openLaunchedWorld } from "../lib/io/mpi_deno.ts";
import { attachBenchAdapters, BENCH_TRAINER, configs, randomBatch } from "./train_step.ts";

/** One (config, ranks) measurement. */
export interface DpTiming {
  config: string;
  ranks: number;
  /** Trainable f32 values all-reduced per step. */
  gradValues: number;
  /** Median step time (ms). */
  stepMs: number;
  /** Median time in collective calls per step (ms). */
  allreduceMs: number;
  /** allreduceMs / stepMs. */
  allreduceShare: number;
  /** Tokens of all ranks per second. */
  tokensPerSecond: number;
}

/** The all-reduce alone: bytes and median time (ms) with 2 ranks. */
export interface AllreduceTiming {
  bytes: number;
  ms: number;
  /** Bytes / time: the algorithm's bandwidth as a caller sees it. */
  gbPerSecond: number;
}

/** What `--only=dp` reports. */
export interface DpBenchResult {
  steps: DpTiming[];
  allreduce: AllreduceTiming[];
  /** Per config: tokens/s with 2 ranks / (2 × tokens/s with 1). */
  efficiency: Record<string, number>;
  note?: string;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** A collective that adds the time of every call to `spent.ms`. */
function timed(world: Collective, spent: { ms: number }): Collective {
  const t = <T>(f: () => T): T => {
    const t0 = performance.now();
    try {
      return f();
    } finally {
      spent.ms += performance.now() - t0;
    }
  };
  return {
    rank: world.rank,
    size: world.size,
    allreduceSum: (b) => t(() => world.allreduceSum(b)),
    broadcast: (b, r) => t(() => world.broadcast(b, r)),
  };
}

/** A rank's part: times `reps` steps (after two warm-up steps) and the all-reduce alone. */
async function worker(config: string, reps: number, sizes: number[]): Promise<void> {
  const world = openLaunchedWorld();
  const base: Collective = world ?? SINGLE_PROCESS;
  const spent = { ms: 0 };
  const ranks = new Ranks(timed(base, spent), () => 1);
  const bc = await configs()[config]();
  const gpu = await createGpu();
  try {
    const model = randomModel(gpu, bc.cfg, 1);
    attachBenchAdapters(model, "HIRA", 32);
    const trainer = new Trainer(model, { ...BENCH_TRAINER, ranks });
    // The step's micro-batches, one per rank (each rank computes its own).
    const micro = Array.from(
      { length: ranks.size },
      (_, j) => randomBatch(bc.seqs, bc.cfg.vocabSize, 3 + j),
    );
    const gradValues = trainer.opt.params.reduce((a, p) => a + p.grad.size, 0);
    for (let i = 0; i < 2; i++) await trainer.trainStep(micro);
    const steps: number[] = [], reduces: number[] = [];
    for (let i = 0; i < reps; i++) {
      spent.ms = 0;
      const t0 = performance.now();
      await trainer.trainStep(micro);
      steps.push(performance.now() - t0);
      reduces.push(spent.ms);
    }
    const tokens = micro.reduce((a, b) => a + b.tokens.length, 0);
    const allreduce: AllreduceTiming[] = [];
    if (world) {
      for (const bytes of sizes) {
        const buf = new Float32Array(bytes / 4);
        const ts: number[] = [];
        for (let i = 0; i < 5; i++) {
          const t0 = performance.now();
          world.allreduceSum(buf);
          ts.push(performance.now() - t0);
        }
        const ms = median(ts);
        allreduce.push({ bytes, ms, gbPerSecond: bytes / ms / 1e6 });
      }
    }
    const stepMs = median(steps), allreduceMs = median(reduces);
    if (ranks.rank === 0) {
      const r: DpTiming & { allreduceAlone: AllreduceTiming[] } = {
        config,
        ranks: ranks.size,
        gradValues,
        stepMs,
        allreduceMs,
        allreduceShare: allreduceMs / stepMs,
        tokensPerSecond: tokens / (stepMs / 1000),
        allreduceAlone: allreduce,
      };
      console.log(JSON.stringify(r));
    }
  } finally {
    gpu.destroy();
    world?.finalize();
  }
}

/** Options of {@linkcode benchDp}. */
export interface DpBenchOptions {
  configs?: string[];
  reps?: number;
  log?: (line: string) => void;
}

/** Runs the workers under mpirun with 1 and 2 ranks and gathers rank 0's results. */
export async function benchDp(opts: DpBenchOptions = {}): Promise<DpBenchResult> {
  const lib = findMpiLibrary();
  if (!lib) throw new Error("--only=dp needs Open MPI (apt-get install openmpi-bin)");
  const self = fromFileUrl(import.meta.url);
  const names = opts.configs ?? ["tiny", "llama-4x512"];
  const steps: DpTiming[] = [];
  let alone: AllreduceTiming[] = [];
  for (const config of names) {
    for (const n of [1, 2]) {
      opts.log?.(`dp: ${config} on ${n} rank${n > 1 ? "s" : ""}`);
      const o = await new Deno.Command("mpirun", {
        args: [
          "--allow-run-as-root",
          "--oversubscribe",
          "-np",
          String(n),
          Deno.execPath(),
          "run",
          "--allow-read=.",
          "--allow-env",
          `--allow-ffi=${lib},${await Deno.realPath(lib)}`,
          self,
          "--worker",
          `--config=${config}`,
          `--reps=${opts.reps ?? 5}`,
        ],
        // The workers may not search the system's folders: they load what was found here.
        env: { HIRA_MPI_LIB: lib },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(o.stdout);
      const line = text.split("\n").find((l) => l.startsWith("{"));
      if (!o.success || !line) {
        throw new Error(`dp worker failed: ${new TextDecoder().decode(o.stderr).slice(-2000)}`);
      }
      const r = JSON.parse(line);
      if (r.allreduceAlone.length) alone = r.allreduceAlone;
      delete r.allreduceAlone;
      steps.push(r);
    }
  }
  const efficiency: Record<string, number> = {};
  for (const c of names) {
    const one = steps.find((s) => s.config === c && s.ranks === 1)!;
    const two = steps.find((s) => s.config === c && s.ranks === 2)!;
    efficiency[c] = two.tokensPerSecond / (2 * one.tokensPerSecond);
  }
  return { steps, allreduce: alone, efficiency };
}

/** The result as Markdown tables. */
export function formatDp(r: DpBenchResult): string {
  const rows = r.steps.map((s) =>
    `| ${s.config} | ${s.ranks} | ${(s.gradValues * 4 / 2 ** 20).toFixed(2)} | ${
      s.stepMs.toFixed(1)
    } | ${s.allreduceMs.toFixed(2)} | ${(100 * s.allreduceShare).toFixed(1)}% | ${
      s.tokensPerSecond.toFixed(0)
    } |`
  );
  const ar = r.allreduce.map((a) =>
    `| ${(a.bytes / 2 ** 20).toFixed(0)} MiB | ${a.ms.toFixed(2)} | ${a.gbPerSecond.toFixed(2)} |`
  );
  return [
    "## data parallel (HiRA r=32, one micro-batch per rank per step)",
    "",
    "| config | ranks | all-reduced MiB | step ms | all-reduce ms | share | tokens/s |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    ...rows,
    "",
    "scaling efficiency (2 ranks' tokens/s ÷ twice 1 rank's): " +
    Object.entries(r.efficiency).map(([c, e]) => `${c} ${(100 * e).toFixed(0)}%`).join(", "),
    "",
    "| all-reduce alone (2 ranks) | ms | GB/s |",
    "| --- | --- | --- |",
    ...ar,
  ].join("\n");
}

if (import.meta.main) {
  const a = parseArgs(Deno.args, { boolean: ["worker"], string: ["config", "reps"] });
  if (!a.worker) throw new Error("bench/dp.ts runs under `deno task bench --only=dp`");
  await worker(a.config ?? "tiny", Number(a.reps ?? 5), [4 << 20, 64 << 20, 226 << 20]);
}
