/**
 * Per-kernel profile of recorded GPU work: {@linkcode profileDispatches} runs a function once
 * with every dispatch it records captured (Gpu.onDispatch), then replays those dispatches one at
 * a time, each submitted alone and awaited, and charges each its wall time less the cost of an
 * empty submit-and-await (measured first). Dispatches are grouped by kernel entry and uniform
 * values (the shape), so one row is, e.g., every forward of the gate and up projections.
 *
 * The replay reruns every dispatch on whatever the buffers hold by then, so it changes state the
 * function had updated (e.g. a training step's weights and optimizer moments are stepped again):
 * profile last. Times include each dispatch's start-up that a batched submit would overlap, so
 * the replay total runs above the batched time (6–13% for a llama-4x512 train step on lavapipe;
 * both are reported).
 * @module
 */
import type { Gpu } from "../lib/engine/gpu.ts";

/** One row of a profile: every replayed dispatch of one kernel entry with one set of uniforms. */
export interface ProfileRow {
  /** Kernel file and entry, e.g. "hira_fused.wgsl#mm_cpu_strip". */
  kernel: string;
  /** The kernel's compile-time defines (rows of one entry can differ only in these). */
  defines: string;
  /** The dispatch's uniform values (the shape), as text. */
  uniforms: string;
  /** Dispatches in the group. */
  calls: number;
  /** Their replay time, in milliseconds. */
  ms: number;
}

/** Result of {@linkcode profileDispatches}. */
export interface DispatchProfile {
  /** Wall time of the function itself (recording, one batched submit, its awaits), in ms. */
  batchedMs: number;
  /** Dispatches the function recorded. */
  dispatches: number;
  /** Sum of the rows' times. */
  replayMs: number;
  /** Median cost of an empty submit and await, subtracted from each dispatch's time. */
  awaitMs: number;
  /** Rows, slowest first. */
  rows: ProfileRow[];
}

type Recorded = Parameters<NonNullable<Gpu["onDispatch"]>>;

function uniformText(args: Recorded[1]): string {
  const u = args.filter((a) => Array.isArray(a)) as unknown as (readonly unknown[])[];
  return u.map((vals) =>
    vals.map((v) => {
      if (typeof v === "number") return String(v);
      const x = v as { u32?: number; i32?: number; f32?: number };
      return String(x.u32 ?? x.i32 ?? x.f32);
    }).join(",")
  ).join(" ");
}

/** Wall time of submitting what is recorded (maybe nothing) and waiting for it. */
async function timedSync(gpu: Gpu): Promise<number> {
  const t0 = performance.now();
  await gpu.sync();
  return performance.now() - t0;
}

/**
 * Runs `run` (which must leave its work submitted or read back), then replays its dispatches one
 * by one `rounds` times (default 2; the first round is a warm-up and is not counted) and returns
 * the per-kernel times.
 */
export async function profileDispatches(
  gpu: Gpu,
  run: () => Promise<void>,
  rounds = 2,
): Promise<DispatchProfile> {
  const recorded: Recorded[] = [];
  if (gpu.onDispatch) throw new Error("profileDispatches: the Gpu is being profiled already");
  gpu.onDispatch = (kernel, args, workgroups) => recorded.push([kernel, args, workgroups]);
  const t0 = performance.now();
  try {
    await run();
  } finally {
    gpu.onDispatch = undefined;
  }
  const batchedMs = performance.now() - t0;
  await gpu.sync();
  const empty: number[] = [];
  for (let i = 0; i < 9; i++) empty.push(await timedSync(gpu));
  const awaitMs = empty.sort((a, b) => a - b)[4];
  const rows = new Map<string, ProfileRow>();
  const total = Math.max(1, rounds);
  for (let round = 0; round < total; round++) {
    for (const [kernel, args, workgroups] of recorded) {
      gpu.dispatch(kernel, args, workgroups);
      const ms = Math.max(0, await timedSync(gpu) - awaitMs);
      if (round < total - 1) continue;
      const uniforms = uniformText(args);
      const key = kernel.key + " " + uniforms;
      const name = `${kernel.spec.file}#${kernel.spec.entry}`;
      const row = rows.get(key) ??
        // The key is the name, "#", the defines (lib/engine/gpu.ts kernelKey).
        { kernel: name, defines: kernel.key.slice(name.length + 1), uniforms, calls: 0, ms: 0 };
      row.calls++;
      row.ms += ms;
      rows.set(key, row);
    }
  }
  const sorted = [...rows.values()].sort((a, b) => b.ms - a.ms);
  return {
    batchedMs,
    dispatches: recorded.length,
    replayMs: sorted.reduce((s, r) => s + r.ms, 0),
    awaitMs,
    rows: sorted,
  };
}

/** The profile as a Markdown table of its `top` slowest rows (default 12). */
export function formatProfile(p: DispatchProfile, top = 12): string {
  const lines = [
    `${p.dispatches} dispatches: batched ${p.batchedMs.toFixed(0)} ms, replayed one by one ` +
    `${p.replayMs.toFixed(0)} ms (each less an empty submit's ${p.awaitMs.toFixed(1)} ms)`,
    "",
    "| kernel | uniforms | calls | ms | % |",
    "| --- | --- | --- | --- | --- |",
  ];
  for (const r of p.rows.slice(0, top)) {
    lines.push(
      `| ${r.kernel} | ${r.uniforms.slice(0, 48)} | ${r.calls} | ${r.ms.toFixed(1)} | ` +
        `${(100 * r.ms / p.replayMs).toFixed(1)} |`,
    );
  }
  return lines.join("\n");
}
