/**
 * Rank analysis of adapter updates ΔW per module (paper Fig. 1/4/7/8): numerical rank, effective
 * rank and the count of singular values above a threshold (numbers from lib/eval/rank.ts), as a
 * Markdown table and an SVG chart.
 * @module
 */
import { modulePath, type Projection, PROJECTIONS } from "../model/config.ts";
import { HiraError } from "../engine/errors.ts";
import { deltaWeight, rankStats, singularValues } from "../eval/rank.ts";
import { barChart } from "./svg.ts";

/** One adapted module's tensors on the host. */
export interface AdapterModule {
  /** Module path ("model.layers.0.self_attn.q_proj"). */
  path: string;
  layer: number;
  proj: Projection;
  outFeatures: number;
  inFeatures: number;
  r: number;
  /** A [r, in]. */
  a: Float32Array;
  /** B [out, r]. */
  b: Float32Array;
  /** W0 [out, in]; needed for HiRA only. */
  w0: Float32Array | null;
}

/** Rank statistics of one module's ΔW. */
export interface ModuleRank {
  path: string;
  layer: number;
  proj: Projection;
  /** [out, in]. */
  shape: [number, number];
  r: number;
  /** Numerical rank (numpy matrix_rank tolerance for f32 data). */
  rank: number;
  /** exp(entropy of σ/Σσ) (Roy & Vetterli; paper App. C). */
  effectiveRank: number;
  /** σ > threshold (paper Fig. 4). */
  countAbove: number;
  /** ‖ΔW‖_F² (paper Fig. 5). */
  sumSquares: number;
  /** Largest singular value. */
  sigmaMax: number;
}

/** One adapter's rank report. */
export interface RankReport {
  /** Display name (e.g. "HiRA" or the folder name). */
  label: string;
  peftType: "HIRA" | "LORA";
  threshold: number;
  modules: ModuleRank[];
}

/**
 * Rank statistics of ΔW for every module: HiRA W0 ⊙ (B·A) (rank up to rank(W0)·r), LoRA
 * (α/r)·B·A (rank ≤ r), computed in f64 on the host.
 */
export function adapterRanks(
  label: string,
  peftType: "HIRA" | "LORA",
  modules: readonly AdapterModule[],
  opts: {
    threshold?: number;
    /** LoRA's factor on B·A: one for all, or per module path (rank/alpha patterns, rsLoRA). */
    loraScale?: number | ((path: string) => number);
  } = {},
): RankReport {
  const threshold = opts.threshold ?? 0.005;
  const out: ModuleRank[] = modules.map((m) => {
    if (peftType === "HIRA" && m.w0 === null) {
      throw new HiraError(m.path, "HiRA's ΔW = W0 ⊙ (B·A) needs the base weight W0");
    }
    const dw = deltaWeight(
      peftType,
      m.w0,
      m.a,
      m.b,
      { inFeatures: m.inFeatures, outFeatures: m.outFeatures, r: m.r },
      typeof opts.loraScale === "function" ? opts.loraScale(m.path) : opts.loraScale ?? 1,
    );
    const sv = singularValues(dw, m.outFeatures, m.inFeatures);
    const st = rankStats(sv, { threshold, shape: [m.outFeatures, m.inFeatures], topK: 1 });
    return {
      path: m.path,
      layer: m.layer,
      proj: m.proj,
      shape: [m.outFeatures, m.inFeatures],
      r: m.r,
      rank: st.rank,
      effectiveRank: st.effectiveRank,
      countAbove: st.countAbove,
      sumSquares: st.sumSquares,
      sigmaMax: st.top[0] ?? 0,
    };
  });
  return { label, peftType, threshold, modules: out };
}

/** The module order of a table: by layer, then projection order. */
function moduleKeys(reports: readonly RankReport[]): { layer: number; proj: Projection }[] {
  const keys = new Map<string, { layer: number; proj: Projection }>();
  for (const r of reports) {
    for (const m of r.modules) keys.set(modulePath(m.layer, m.proj), m);
  }
  return [...keys.values()].sort((a, b) =>
    a.layer - b.layer || PROJECTIONS.indexOf(a.proj) - PROJECTIONS.indexOf(b.proj)
  );
}

/**
 * Rank tables as Markdown: one row per (layer, module) with each adapter's rank, effective rank
 * and count of σ above the threshold side by side, then the per-projection means.
 */
export function rankMarkdown(reports: readonly RankReport[]): string {
  if (reports.length === 0) return "";
  const thr = reports[0].threshold;
  const head = ["layer", "module", "shape"];
  for (const r of reports) {
    head.push(
      `${r.label} r`,
      `${r.label} rank`,
      `${r.label} eff. rank`,
      `${r.label} σ>${thr}`,
      `${r.label} ‖ΔW‖²`,
    );
  }
  const lines = [
    `## Rank of ΔW per module (${reports.map((r) => `${r.label}: ${r.peftType}`).join(", ")})`,
    "",
    `| ${head.join(" | ")} |`,
    `|${head.map((_, i) => (i < 3 ? "---" : "---:")).join("|")}|`,
  ];
  const cells = (m: ModuleRank | undefined) =>
    m
      ? [
        String(m.r),
        String(m.rank),
        m.effectiveRank.toFixed(1),
        String(m.countAbove),
        m.sumSquares.toExponential(3),
      ]
      : ["–", "–", "–", "–", "–"];
  for (const k of moduleKeys(reports)) {
    const ms = reports.map((r) => r.modules.find((m) => m.layer === k.layer && m.proj === k.proj));
    const shape = ms.find((m) => m)!.shape;
    lines.push(
      `| ${k.layer} | ${k.proj} | ${shape[0]}×${shape[1]} | ${ms.flatMap(cells).join(" | ")} |`,
    );
  }
  lines.push("", "Mean over layers per module:", "");
  const head2 = ["module"];
  for (const r of reports) head2.push(`${r.label} rank`, `${r.label} eff. rank`);
  lines.push(
    `| ${head2.join(" | ")} |`,
    `|${head2.map((_, i) => (i ? "---:" : "---")).join("|")}|`,
  );
  for (const p of projectionsOf(reports)) {
    const row = [p as string];
    for (const r of reports) {
      const ms = r.modules.filter((m) => m.proj === p);
      row.push(
        ms.length ? mean(ms.map((m) => m.rank)).toFixed(1) : "–",
        ms.length ? mean(ms.map((m) => m.effectiveRank)).toFixed(1) : "–",
      );
    }
    lines.push(`| ${row.join(" | ")} |`);
  }
  return lines.join("\n") + "\n";
}

function mean(xs: readonly number[]): number {
  return xs.reduce((s, x) => s + x, 0) / xs.length;
}

function projectionsOf(reports: readonly RankReport[]): Projection[] {
  return PROJECTIONS.filter((p) => reports.some((r) => r.modules.some((m) => m.proj === p)));
}

/**
 * An SVG bar chart of the mean effective rank per module type (over layers), one series per
 * adapter (HiRA vs LoRA side by side when two are given).
 */
export function rankChart(reports: readonly RankReport[]): string {
  const projs = projectionsOf(reports);
  return barChart({
    title: "Effective rank of ΔW per module (mean over layers)",
    categories: projs,
    yLabel: "effective rank",
    series: reports.map((r) => ({
      name: `${r.label} (${r.peftType}, r=${r.modules[0]?.r ?? "?"})`,
      values: projs.map((p) => {
        const ms = r.modules.filter((m) => m.proj === p);
        return ms.length ? mean(ms.map((m) => m.effectiveRank)) : NaN;
      }),
    })),
  });
}
