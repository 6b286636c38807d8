/**
 * Accuracy and ConvAI2 results as Markdown tables and an SVG chart.
 * @module
 */
import type { AccuracySummary } from "../eval/scoring.ts";
import type { ConvAI2Scores } from "../eval/metrics.ts";
import { barChart } from "./svg.ts";

const pct = (x: number | null) => (x === null ? "–" : x.toFixed(2));

/** The accuracy table as Markdown. */
export function summaryMarkdown(s: AccuracySummary, title = "Accuracy"): string {
  const lines = [
    `## ${title} (${s.decoding})`,
    "",
    "| dataset | examples | correct | accuracy (%) |",
    "|---|---:|---:|---:|",
    ...s.rows.map((r) => `| ${r.dataset} | ${r.n} | ${r.correct} | ${pct(r.accuracy)} |`),
  ];
  if (s.rows.length > 1) {
    lines.push(`| **average** (unweighted, ${s.rows.length} sets) | | | ${pct(s.average)} |`);
  }
  return lines.join("\n") + "\n";
}

/** A before/after accuracy table as Markdown (rows matched by dataset). */
export function beforeAfterMarkdown(
  before: AccuracySummary,
  after: AccuracySummary,
  title = "Held-out accuracy",
): string {
  const names = after.rows.map((r) => r.dataset);
  for (const r of before.rows) if (!names.includes(r.dataset)) names.push(r.dataset);
  const acc = (s: AccuracySummary, d: string) => s.rows.find((r) => r.dataset === d) ?? null;
  const delta = (a: number | null, b: number | null) =>
    a === null || b === null ? "–" : `${b - a >= 0 ? "+" : ""}${(b - a).toFixed(2)}`;
  const lines = [
    `## ${title} (${after.decoding})`,
    "",
    "| dataset | examples | before (%) | after (%) | change |",
    "|---|---:|---:|---:|---:|",
  ];
  for (const d of names) {
    const b = acc(before, d), a = acc(after, d);
    lines.push(
      `| ${d} | ${(a ?? b)!.n} | ${pct(b?.accuracy ?? null)} | ${pct(a?.accuracy ?? null)} | ${
        delta(b?.accuracy ?? null, a?.accuracy ?? null)
      } |`,
    );
  }
  if (names.length > 1) {
    lines.push(
      `| **average** | | ${pct(before.average)} | ${pct(after.average)} | ${
        delta(before.average, after.average)
      } |`,
    );
  }
  return lines.join("\n") + "\n";
}

/**
 * A bar chart of accuracy per dataset (plus the average when there are several), one series
 * per summary (e.g. before/after, or HiRA/LoRA).
 */
export function accuracyChart(
  series: readonly { name: string; summary: AccuracySummary }[],
  title = "Accuracy per dataset",
): string {
  const names: string[] = [];
  for (const s of series) {
    for (const r of s.summary.rows) if (!names.includes(r.dataset)) names.push(r.dataset);
  }
  const withAvg = names.length > 1;
  const categories = withAvg ? [...names, "average"] : names;
  return barChart({
    title,
    categories,
    yLabel: "accuracy (%)",
    series: series.map((s) => ({
      name: s.name,
      values: [
        ...names.map((d) => s.summary.rows.find((r) => r.dataset === d)?.accuracy ?? NaN),
        ...(withAvg ? [s.summary.average ?? NaN] : []),
      ],
    })),
  });
}

/** ConvAI2 scores and the BERTScore note as Markdown. */
export function convai2Markdown(s: ConvAI2Scores, decoding: string): string {
  const f = (x: number) => x.toFixed(2);
  return [
    `## ConvAI2 (${decoding}, ${s.items} items, ×100)`,
    "",
    "| BLEU | METEOR | ROUGE-L | F1 | dist-1 | dist-2 | BERTScore |",
    "|---:|---:|---:|---:|---:|---:|---|",
    `| ${f(s.bleu)} | ${f(s.meteor)} | ${f(s.rougeL)} | ${f(s.f1)} | ${f(s.dist1)} | ${
      f(s.dist2)
    } | skipped |`,
    "",
    "BERTScore (roberta-large) is skipped: no local scorer is bundled, so the paper's Average " +
    "(which includes its three BERTScore numbers) cannot be formed here.",
    "",
  ].join("\n");
}
