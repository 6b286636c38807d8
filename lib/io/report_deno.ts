/**
 * The file edge of run reports: reads a run folder (log.jsonl, args.json, accuracy.json, eval
 * summaries) and writes report.md, loss.svg, lr.svg and accuracy.svg into it atomically.
 * runTraining calls it when a run ends or stops, eval calls it after evaluating a run folder,
 * and `deno task report RUN` rebuilds it.
 * @module
 */
import { basename, join } from "@std/path";
import { HiraError, isHiraError } from "../engine/errors.ts";
import { JSON_CAPS, readRegularText } from "./fs_deno.ts";
import type { AccuracySummary } from "../eval/scoring.ts";
import {
  buildRunReport,
  type NamedSummary,
  parseRunLog,
  type ReportInput,
} from "../report/report.ts";
import { writeFileAtomic } from "./safetensors_deno.ts";

async function readJson(file: string): Promise<unknown> {
  try {
    return JSON.parse(await readRegularText(file, JSON_CAPS.trainerState));
  } catch {
    return null;
  }
}

function asSummary(v: unknown): AccuracySummary | null {
  const s = v as AccuracySummary | null;
  return s && typeof s === "object" && Array.isArray(s.rows) ? s : null;
}

/** `summary_<tag>.json` files of a folder, by name (missing folder: none). */
async function summaryFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && /^summary_[\w.=+-]+\.json$/.test(e.name)) out.push(e.name);
    }
  } catch {
    return [];
  }
  return out.sort();
}

/** Whether a folder is a training run folder (it has a log.jsonl). */
export async function isRunDir(dir: string): Promise<boolean> {
  return await Deno.stat(join(dir, "log.jsonl")).then((s) => s.isFile, () => false);
}

/**
 * Everything a report of `runDir` is built from. Accuracy tables: accuracy.json (train.ts's
 * before/after report), then the summaries `deno task eval --ckpt=RUN` wrote under `eval/`
 * (or `adapter/eval/`, `model/eval/`). Only log.jsonl is required.
 */
export async function readReportInput(runDir: string): Promise<ReportInput> {
  let text: string;
  try {
    text = await readRegularText(join(runDir, "log.jsonl"));
  } catch (e) {
    if (isHiraError(e)) throw e;
    if (e instanceof Deno.errors.NotFound) {
      throw new HiraError(runDir, "has no log.jsonl: not a training run folder");
    }
    throw new HiraError(join(runDir, "log.jsonl"), `cannot be read (${(e as Error).message})`);
  }
  const args = await readJson(join(runDir, "args.json"));
  const accuracy: NamedSummary[] = [];
  const acc = await readJson(join(runDir, "accuracy.json")) as Record<string, unknown> | null;
  for (const phase of ["before", "after"]) {
    const s = asSummary(acc?.[phase]);
    if (s) accuracy.push({ name: `${phase} training`, summary: s });
  }
  for (const sub of ["eval", "adapter/eval", "model/eval"]) {
    const dir = join(runDir, sub);
    for (const f of await summaryFiles(dir)) {
      const s = asSummary(await readJson(join(dir, f)));
      const where = sub === "eval" ? "" : `${sub.split("/")[0]}/ `;
      if (s) accuracy.push({ name: `eval ${where}`.trim(), summary: s });
    }
  }
  return {
    runName: basename(runDir.replace(/[/\\]+$/, "")) || runDir,
    args: args && typeof args === "object" && !Array.isArray(args)
      ? args as Record<string, unknown>
      : null,
    history: parseRunLog(text),
    accuracy,
  };
}

/** Builds and writes `runDir`'s report.md and charts; returns the files written. */
export async function writeRunReport(runDir: string): Promise<string[]> {
  const report = buildRunReport(await readReportInput(runDir));
  const written: string[] = [];
  for (const [name, svg] of Object.entries(report.charts)) {
    await writeFileAtomic(join(runDir, name), svg);
    written.push(join(runDir, name));
  }
  await writeFileAtomic(join(runDir, "report.md"), report.markdown);
  written.push(join(runDir, "report.md"));
  return written;
}
