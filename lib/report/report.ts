/**
 * Run reports, pure: from a run's JSONL log, its flags and any accuracy summaries, build
 * `report.md` and the SVG charts beside it (loss, learning rate, accuracy per dataset).
 * lib/io/report_deno.ts reads and writes the files; this module only turns records into text.
 * @module
 */
import { barChart, lineChart, type LineSeries } from "./svg.ts";
import type { AccuracySummary } from "../eval/scoring.ts";

/** One optimizer step as log.jsonl records it. */
export interface TrainPoint {
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokens: number;
  /** Epoch ms; NaN when missing. */
  time: number;
}

/** One validation-loss evaluation. */
export interface EvalPoint {
  step: number;
  evalLoss: number;
}

/** A run's history, as recovered from its log (after resumes and crashes). */
export interface RunHistory {
  /** The `start` record (its `args` are the run's flags), null when missing. */
  start: Record<string, unknown> | null;
  /** One point per step, in step order; steps redone after a resume keep the redone values. */
  train: TrainPoint[];
  eval: EvalPoint[];
  /** Steps the run was resumed from (one per `resume` record). */
  resumes: number[];
  /** The last `end` record after the last resume, null while running or after a crash. */
  end: Record<string, unknown> | null;
  /** `error` records (non-finite loss and the like). */
  errors: { step: number; message: string }[];
  /** Lines that were not JSON objects (a line cut short by a crash, say). */
  badLines: number;
}

function num(v: unknown): number {
  return typeof v === "number" ? v : NaN;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Parses log.jsonl text. Lines that are not JSON objects are counted and skipped (a kill can cut
 * the last line short). A `resume` record at step s drops the records of steps after s written
 * before it: the resumed run redid those steps from the checkpoint and logs them again.
 */
export function parseRunLog(text: string): RunHistory {
  const h: RunHistory = {
    start: null,
    train: [],
    eval: [],
    resumes: [],
    end: null,
    errors: [],
    badLines: 0,
  };
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch {
      h.badLines++;
      continue;
    }
    if (!isRecord(rec) || typeof rec.type !== "string") {
      h.badLines++;
      continue;
    }
    const step = num(rec.step);
    switch (rec.type) {
      case "start":
        h.start ??= rec;
        break;
      case "resume":
        h.resumes.push(step);
        h.train = h.train.filter((p) => p.step <= step);
        h.eval = h.eval.filter((p) => p.step <= step);
        h.end = null;
        break;
      case "train":
        if (!Number.isFinite(step)) break;
        h.train = h.train.filter((p) => p.step !== step);
        h.train.push({
          step,
          loss: num(rec.loss),
          lr: num(rec.lr),
          gradNorm: num(rec.grad_norm),
          tokens: num(rec.tokens),
          time: num(rec.time),
        });
        break;
      case "eval":
        if (!Number.isFinite(step)) break;
        h.eval = h.eval.filter((p) => p.step !== step);
        h.eval.push({ step, evalLoss: num(rec.eval_loss) });
        break;
      case "end":
        h.end = rec;
        break;
      case "error":
        h.errors.push({ step, message: String(rec.message ?? "") });
        break;
    }
  }
  h.train.sort((a, b) => a.step - b.step);
  h.eval.sort((a, b) => a.step - b.step);
  return h;
}

/** One accuracy table shown in a report (e.g. "before training", "eval beam=4"). */
export interface NamedSummary {
  name: string;
  summary: AccuracySummary;
}

/** What a report is built from. */
export interface ReportInput {
  /** The run folder's name (the report title). */
  runName: string;
  /** The run's flags (args.json), null when missing: the log's start record is used. */
  args: Record<string, unknown> | null;
  history: RunHistory;
  /** Accuracy tables to chart and list, in legend order. */
  accuracy: readonly NamedSummary[];
}

/** A built report: the Markdown text and the charts by file name. */
export interface RunReport {
  markdown: string;
  /** File name (`loss.svg`, `lr.svg`, `accuracy.svg`) to SVG text; charts without data are left out. */
  charts: Record<string, string>;
}

/** A running mean over `window` points, for noisy per-step losses. */
export function runningMean(
  points: readonly (readonly [number, number])[],
  window: number,
): [number, number][] {
  const out: [number, number][] = [];
  let sum = 0;
  let count = 0;
  const buf: number[] = [];
  for (const [x, y] of points) {
    if (!Number.isFinite(y)) continue;
    buf.push(y);
    sum += y;
    count++;
    if (buf.length > window) {
      sum -= buf.shift()!;
      count--;
    }
    out.push([x, sum / count]);
  }
  return out;
}

/** The loss chart: training loss per step (and its running mean on long runs), validation loss. */
export function lossChart(h: RunHistory, title = "Training and validation loss"): string {
  const train = h.train.map((p) => [p.step, p.loss] as const);
  const series: LineSeries[] = [{ name: "training loss", points: train }];
  if (train.length >= 100) {
    const w = Math.max(5, Math.round(train.length / 50));
    series.push({ name: `training loss, mean of ${w}`, points: runningMean(train, w) });
  }
  if (h.eval.length) {
    series.push({
      name: "validation loss",
      points: h.eval.map((p) => [p.step, p.evalLoss] as const),
    });
  }
  return lineChart({ title, xLabel: "optimizer step", yLabel: "loss (nats/token)", series });
}

/** The learning-rate chart (warmup then linear decay, as the trainer applied it). */
export function lrChart(h: RunHistory, title = "Learning rate"): string {
  return lineChart({
    title,
    xLabel: "optimizer step",
    yLabel: "learning rate",
    series: [{ name: "learning rate", points: h.train.map((p) => [p.step, p.lr] as const) }],
  });
}

/**
 * Legend names of accuracy tables: the decoding tag joins the name only when the tables were
 * decoded differently (otherwise it goes in the title, keeping legends short).
 */
function accuracyNames(list: readonly NamedSummary[]): { names: string[]; common: string | null } {
  const tags = new Set(list.map((s) => s.summary.decoding));
  if (tags.size === 1) return { names: list.map((s) => s.name), common: [...tags][0] };
  return { names: list.map((s) => `${s.name} (${s.summary.decoding})`), common: null };
}

/**
 * Accuracy per dataset as grouped bars (one group per dataset, plus the unweighted average when
 * there are several), on a fixed 0-100 % axis.
 */
export function accuracyBarChart(list: readonly NamedSummary[]): string {
  const { names, common } = accuracyNames(list);
  const datasets: string[] = [];
  for (const s of list) {
    for (const r of s.summary.rows) if (!datasets.includes(r.dataset)) datasets.push(r.dataset);
  }
  const withAvg = datasets.length > 1;
  const bars = (datasets.length + (withAvg ? 1 : 0)) * list.length;
  return barChart({
    title: `Held-out accuracy per dataset${common ? ` (${common})` : ""}`,
    categories: withAvg ? [...datasets, "average"] : datasets,
    yLabel: "accuracy (%)",
    yInclude: [0, 100],
    width: Math.max(640, Math.min(1600, 200 + bars * 30)),
    valueLabels: bars <= 40,
    series: list.map((s, i) => ({
      name: names[i],
      values: [
        ...datasets.map((d) => s.summary.rows.find((r) => r.dataset === d)?.accuracy ?? NaN),
        ...(withAvg ? [s.summary.average ?? NaN] : []),
      ],
    })),
  });
}

/** Escapes a Markdown table cell. */
function cell(v: unknown): string {
  return String(v).replace(/\\/g, "\\\\").replace(/\|/g, "\\|").replace(/\s*\n\s*/g, " ");
}

function fmt(v: number, digits = 4): string {
  return Number.isFinite(v) ? v.toFixed(digits) : String(v);
}

function duration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "?";
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, "0")}m` : m > 0 ? `${m}m${sec}s` : `${sec}s`;
}

/** Time spent in steps: the sum over uninterrupted segments (resumes split segments). */
function trainingTime(h: RunHistory): number {
  let total = 0;
  let segStart = NaN;
  let prev: TrainPoint | null = null;
  const resumeSteps = new Set(h.resumes);
  for (const p of h.train) {
    const newSegment = prev === null || resumeSteps.has(prev.step) || !(p.time >= prev.time);
    if (newSegment) {
      if (prev !== null && Number.isFinite(segStart)) total += prev.time - segStart;
      segStart = p.time;
    }
    prev = p;
  }
  if (prev !== null && Number.isFinite(segStart)) total += prev.time - segStart;
  return total;
}

function status(h: RunHistory, totalSteps: number): string {
  const last = h.train.at(-1)?.step ?? 0;
  if (h.errors.length) {
    const e = h.errors.at(-1)!;
    return `failed at step ${e.step}: ${e.message}`;
  }
  if (h.end) {
    return h.end.interrupted === true
      ? `stopped at step ${last} (a checkpoint was saved; continue with --resume)`
      : "complete";
  }
  return Number.isFinite(totalSteps) && last >= totalSteps
    ? "steps done, no end record (killed while finishing?)"
    : `incomplete at step ${last}: still running, or killed (continue with --resume)`;
}

function basename(p: unknown): string {
  return typeof p === "string" ? (p.replace(/[/\\]+$/, "").split(/[/\\]/).pop() ?? p) : "";
}

/** Builds report.md and its charts. */
export function buildRunReport(input: ReportInput): RunReport {
  const { history: h } = input;
  const args = input.args ?? (isRecord(h.start?.args) ? h.start.args : {});
  const a = (k: string) => args[k];
  const totalSteps = num(h.start?.steps);
  const lines: string[] = [`# Run report: ${input.runName}`, ""];
  const rows: [string, unknown][] = [];
  rows.push(["status", status(h, totalSteps)]);
  rows.push(["model", a("model") ? a("model") : "embedded tiny model"]);
  rows.push(["dataset", a("dataset") ?? "?"]);
  const peft = String(a("peft_type") ?? "?");
  const method = peft === "full"
    ? "full fine-tuning"
    : `${peft}, r=${a("r_ab")}, targets ${a("target_modules")}`;
  rows.push(["method", method]);
  const trainable = num(h.start?.trainable), base = num(h.start?.base);
  if (Number.isFinite(trainable)) {
    const share = Number.isFinite(base) && base > 0 && peft !== "full"
      // The reference's formula, as printed at the start (lib/model/peft.ts trainableShare).
      ? ` (${((100 * trainable) / (base + trainable)).toFixed(4)}% of all ${
        (base + trainable).toLocaleString("en-US")
      })`
      : "";
    rows.push(["trainable parameters", `${trainable.toLocaleString("en-US")}${share}`]);
  }
  const last = h.train.at(-1);
  rows.push([
    "steps",
    `${last?.step ?? 0}${Number.isFinite(totalSteps) ? ` of ${totalSteps}` : ""}`,
  ]);
  rows.push([
    "learning rate",
    `${a("lr")} peak, ${a("warmup")} warmup steps, then linear decay to 0`,
  ]);
  rows.push(["batch", `${a("batch")} sequences × ${a("grad_acc") ?? 1} accumulation`]);
  rows.push(["seed", a("seed") ?? "?"]);
  if (last) rows.push(["final training loss", fmt(last.loss)]);
  const finiteEvals = h.eval.filter((e) => Number.isFinite(e.evalLoss));
  if (finiteEvals.length) {
    const best = finiteEvals.reduce((b, e) => (e.evalLoss < b.evalLoss ? e : b));
    rows.push(["best validation loss", `${fmt(best.evalLoss)} at step ${best.step}`]);
  }
  if (h.end && typeof h.end.best === "string") {
    rows.push(["final adapter from", basename(h.end.best)]);
  }
  const tokens = h.train.reduce((s, p) => s + (Number.isFinite(p.tokens) ? p.tokens : 0), 0);
  const ms = trainingTime(h);
  rows.push([
    "tokens trained",
    `${tokens.toLocaleString("en-US")}${
      ms > 0 ? ` in ${duration(ms)} of steps (${Math.round(tokens / (ms / 1000))} tokens/s)` : ""
    }`,
  ]);
  if (h.resumes.length) rows.push(["resumed", `from step ${h.resumes.join(", ")}`]);
  if (h.badLines) rows.push(["unreadable log lines", `${h.badLines} (skipped)`]);
  lines.push("| | |", "|---|---|", ...rows.map(([k, v]) => `| ${cell(k)} | ${cell(v)} |`), "");

  const charts: Record<string, string> = {};
  if (h.train.length || h.eval.length) {
    charts["loss.svg"] = lossChart(h);
    lines.push("## Loss", "", "![Training and validation loss against step](loss.svg)", "");
  }
  if (h.train.length) {
    charts["lr.svg"] = lrChart(h);
    lines.push("## Learning rate", "", "![Learning rate against step](lr.svg)", "");
  }
  if (h.eval.length) {
    lines.push("## Validation loss", "", "| step | validation loss |", "|---:|---:|");
    for (const e of h.eval) lines.push(`| ${e.step} | ${fmt(e.evalLoss)} |`);
    lines.push("");
  }
  const withRows = input.accuracy.filter((s) => s.summary.rows.length > 0);
  if (withRows.length) {
    charts["accuracy.svg"] = accuracyBarChart(withRows);
    const { names, common } = accuracyNames(withRows);
    lines.push("## Accuracy", "", "![Accuracy per dataset](accuracy.svg)", "");
    if (common) lines.push(`Decoding: ${common}.`, "");
    const datasets: string[] = [];
    for (const s of withRows) {
      for (const r of s.summary.rows) if (!datasets.includes(r.dataset)) datasets.push(r.dataset);
    }
    lines.push(
      `| dataset | ${names.map((n) => `${cell(n)} (%)`).join(" | ")} |`,
      `|---|${withRows.map(() => "---:").join("|")}|`,
    );
    for (const d of datasets) {
      const vals = withRows.map((s) => {
        const r = s.summary.rows.find((x) => x.dataset === d);
        return r ? `${r.accuracy.toFixed(2)} (${r.correct}/${r.n})` : "";
      });
      lines.push(`| ${cell(d)} | ${vals.join(" | ")} |`);
    }
    if (datasets.length > 1) {
      const avgs = withRows.map((s) =>
        s.summary.average === null ? "" : s.summary.average.toFixed(2)
      );
      lines.push(`| **average** | ${avgs.join(" | ")} |`);
    }
    lines.push("");
  }
  if (h.errors.length) {
    lines.push("## Errors", "");
    for (const e of h.errors) lines.push(`- step ${e.step}: ${e.message.replace(/\n/g, " ")}`);
    lines.push("");
  }
  lines.push(
    "## Files",
    "",
    "- `log.jsonl`: one JSON record per step (`train`), evaluation (`eval`), start, resume and end",
    "- `args.json`: the flags; `checkpoint-N/`: resumable checkpoints; `adapter/` (or `model/`): " +
      "the result",
    "- Rebuild this report with `deno task report <run folder>`.",
    "",
  );
  return { markdown: lines.join("\n"), charts };
}
