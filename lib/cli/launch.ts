/**
 * What a task's process may touch: resolves the folders a `train`, `eval` (and its `merge`,
 * `rank`, `perplexity` and `--predictions` forms) or `report` command line names, reading the
 * files that name more of them (a resumed run's args.json, an adapter's base model), into a
 * {@linkcode PermissionPlan}. scripts/launch.ts runs the plan; lib/cli/permissions.ts turns it
 * into flags.
 *
 * The plan is a best effort for discovery: a flag that does not parse or a folder that does not
 * exist leaves it out, and the task's own process then reports the error as it always does.
 * @module
 */
import { basename, dirname, fromFileUrl, join, resolve } from "@std/path";
import { mergePartialDir } from "../io/merge_deno.ts";
import { parseTrainArgs, type TrainArgs } from "./flags.ts";
import { type EvalArgs, parseEvalArgs } from "./flags.ts";
import { resolveCheckpoint } from "./eval.ts";
import type { PermissionPlan } from "./permissions.ts";
import { findMpiLibrary, launchedRanks } from "../io/mpi_deno.ts";
import { HiraError } from "../engine/errors.ts";
import { JSON_CAPS, readRegularText } from "../io/fs_deno.ts";
import { checkLinks, realOrAncestor } from "../io/paths_deno.ts";
import { isDatasetPath } from "../train/dataset_file.ts";
import { modelReadPaths } from "../io/hub_deno.ts";
import { isHubRepoId } from "../model/hub.ts";

/** The repository root (where train.ts, eval.ts, kernels/ and data_file/ are). */
export const REPO_ROOT: string = fromFileUrl(new URL("../../", import.meta.url));

/** The tasks a plan exists for, and their entry scripts. */
export const TASK_SCRIPTS: Readonly<Record<string, string>> = {
  train: "train.ts",
  eval: "eval.ts",
  report: "report.ts",
};

async function isDir(path: string): Promise<boolean> {
  return await Deno.stat(path).then((s) => s.isDirectory, () => false);
}

async function readJsonObject(file: string): Promise<Record<string, unknown> | null> {
  try {
    // A FIFO or /dev/zero planted as args.json must not hang or exhaust the launcher.
    const v = JSON.parse(await readRegularText(file, JSON_CAPS.args));
    return typeof v === "object" && v !== null && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

/**
 * The plan for `task` with its command-line `argv`, relative paths resolved against `cwd`.
 * Every task may read the project's kernels/ (the WGSL sources) and data_file/ (the embedded
 * model and data); beyond that:
 *
 * - train: reads --data_root, --model, --init_adapter and --output_folder and writes only
 *   --output_folder; with --resume, reads and writes only the run folder and reads the model
 *   and data_root its args.json names.
 * - eval: reads --data_root, --model, --tokenizer, --ckpt, --ckpt2, --tokens, --text,
 *   --predictions and the base model an adapter's config names; writes only the output folder:
 *   --out, else the run folder given as --ckpt (its eval/ and report), `{ckpt}/eval` (rank:
 *   `{ckpt}/rank`), the predictions' folder, or results_hira/; merge writes --out and the one
 *   `.NAME.partial` folder beside it that it builds the model in; perplexity writes nothing.
 * - report: reads and writes the run folders given.
 */
export async function planTask(
  task: string,
  argv: readonly string[],
  cwd: string = Deno.cwd(),
): Promise<PermissionPlan> {
  const script = TASK_SCRIPTS[task];
  if (script === undefined) {
    throw new HiraError(
      task || "scripts/launch.ts",
      `unknown task (one of ${Object.keys(TASK_SCRIPTS).join(", ")})`,
    );
  }
  const abs = (p: string) => resolve(cwd, p);
  const plan: PermissionPlan = {
    script: join(REPO_ROOT, script),
    args: [...argv],
    read: [join(REPO_ROOT, "kernels"), join(REPO_ROOT, "data_file")],
    write: [],
  };
  const help = argv.some((a) => a === "--help" || a === "-h");
  if (task === "train" && !help) {
    await planTrain(plan, argv, abs);
    plan.ffi = await mpiLibraryPlan();
  }
  if (task === "eval" && !help) await planEval(plan, argv, abs, cwd);
  if (task === "report") {
    for (const d of argv) {
      if (d.startsWith("-")) continue;
      plan.read.push(abs(d));
      plan.write.push(abs(d));
    }
  }
  await resolvePlanPaths(plan);
  return plan;
}

/**
 * A training rank of an `mpirun`/`srun` job may load the MPI library (its path and real path,
 * for Deno's check), and nothing else native; a single process gets no FFI at all.
 */
async function mpiLibraryPlan(): Promise<string[] | undefined> {
  const n = launchedRanks();
  if (n <= 1) return undefined;
  const lib = findMpiLibrary();
  if (!lib) {
    throw new HiraError(
      "HIRA_MPI_LIB",
      `this is one of ${n} ranks but no Open MPI library was found; install openmpi-bin ` +
        "or set HIRA_MPI_LIB to the libmpi.so of the mpirun you use",
    );
  }
  return [...new Set([lib, await Deno.realPath(lib)])];
}

/**
 * Makes the plan safe against symlinks (see lib/io/paths_deno.ts): every folder the command line
 * named is searched for links that leave it (a HiraError naming the link), output folders two
 * levels deep (their run folders' entries); then the real path of every entry is added beside
 * the lexical one, so Deno's lexical check and the real location both match.
 */
async function resolvePlanPaths(plan: PermissionPlan): Promise<void> {
  const fixed = new Set([join(REPO_ROOT, "kernels"), join(REPO_ROOT, "data_file")]);
  for (const p of plan.read) if (!fixed.has(p) && !plan.write.includes(p)) await checkLinks(p);
  for (const p of plan.write) await checkLinks(p, { maxDepth: 2 });
  plan.read.push(...await Promise.all(plan.read.map(realOrAncestor)));
  plan.write.push(...await Promise.all(plan.write.map(realOrAncestor)));
  plan.read = [...new Set(plan.read)];
  plan.write = [...new Set(plan.write)];
}

async function planTrain(
  plan: PermissionPlan,
  argv: readonly string[],
  abs: (p: string) => string,
): Promise<void> {
  let a: TrainArgs;
  try {
    a = parseTrainArgs([...argv]);
  } catch {
    return;
  }
  if (a.resume) {
    const r = abs(a.resume);
    const runDir = /^checkpoint-\d+$/.test(basename(r)) ? dirname(r) : r;
    plan.read.push(runDir);
    plan.write.push(runDir);
    // The resumed run continues with its saved flags: their model and data are read.
    const saved = await readJsonObject(join(runDir, "args.json"));
    for (const k of ["model", "data_root"]) {
      const v = saved?.[k];
      if (typeof v !== "string" || v === "") continue;
      const rev = typeof saved?.revision === "string" ? saved.revision : "main";
      plan.read.push(...(k === "model" ? await modelReadPaths(v, rev, abs) : [abs(v)]));
    }
    for (const k of ["dataset", "chat_template"]) {
      const v = saved?.[k];
      if (typeof v === "string" && (k === "chat_template" || isDatasetPath(v))) {
        plan.read.push(abs(v));
      }
    }
    return;
  }
  plan.read.push(abs(a.data_root), abs(a.output_folder));
  // A hub id reads its snapshot and the repo's cache folder (the snapshot links into blobs/).
  if (a.model) plan.read.push(...await modelReadPaths(a.model, a.revision, abs));
  if (a.init_adapter) plan.read.push(abs(a.init_adapter));
  if (isDatasetPath(a.dataset)) plan.read.push(abs(a.dataset));
  if (a.chat_template) plan.read.push(abs(a.chat_template));
  plan.write.push(abs(a.output_folder));
}

async function planEval(
  plan: PermissionPlan,
  argv: readonly string[],
  abs: (p: string) => string,
  cwd: string,
): Promise<void> {
  let a: EvalArgs;
  try {
    a = parseEvalArgs(argv);
  } catch {
    return;
  }
  const given = [a.data_root, a.tokenizer, a.ckpt, a.ckpt2, a.tokens, a.text, a.out]
    .filter((p): p is string => typeof p === "string" && p !== "");
  plan.read.push(...given.map(abs), ...a.predictions.map(abs));
  // A hub id reads its snapshot and the repo's cache folder (the snapshot links into blobs/).
  if (a.model) plan.read.push(...await modelReadPaths(a.model, a.revision, abs));
  for (const p of [a.dataset, a.chat_template]) if (p) plan.read.push(abs(p));
  // An adapter's base model (adapter_config.json's base_model_name_or_path, when it is a local
  // folder and --model does not override it) is read too: that field is a path by design.
  if (!a.model) {
    for (const p of [a.ckpt, a.ckpt2]) {
      if (!p) continue;
      try {
        const ck = await resolveCheckpoint(abs(p), a.load_order);
        if (ck.kind !== "adapter") continue;
        const cfg = await readJsonObject(join(ck.dir, "adapter_config.json"));
        const base = cfg?.base_model_name_or_path;
        if (typeof base === "string" && base !== "" && await isDir(abs(base))) {
          plan.read.push(abs(base));
        } else if (typeof base === "string" && isHubRepoId(base)) {
          plan.read.push(...await modelReadPaths(base, a.revision, abs));
        }
      } catch {
        // The eval process reports what is wrong with --ckpt.
      }
    }
  }
  const out = a.out ? abs(a.out) : null;
  let write: string | null;
  if (a.command === "perplexity") write = null;
  // merge builds its folder under one fixed temporary name beside --out and renames it into
  // place (lib/io/merge_deno.ts): it writes those two paths only.
  else if (a.command === "merge") write = out;
  else if (a.command === "rank") write = out ?? (a.ckpt ? join(abs(a.ckpt), "rank") : null);
  else if (a.predictions.length) write = out ?? dirname(abs(a.predictions[0]));
  else if (out) write = out;
  else if (a.ckpt) {
    const ck = abs(a.ckpt);
    const isRun = await Deno.stat(join(ck, "log.jsonl")).then((s) => s.isFile, () => false);
    write = isRun ? ck : join(ck, "eval");
  } else write = resolve(cwd, "results_hira");
  if (write !== null) plan.write.push(write);
  if (a.command === "merge" && out) plan.write.push(mergePartialDir(out));
}
