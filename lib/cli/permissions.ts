/**
 * Scoped permissions for the command-line tasks, pure: which folders a `train`, `eval`, `merge`,
 * `rank` or `report` process may read and write, turned into `deno run` flags, and the checks
 * that keep names read from files (checkpoint names, dataset names) from becoming paths that
 * leave their folder. lib/cli/launch.ts resolves the folders from the flags and the files.
 * @module
 */
import { HiraError } from "../engine/errors.ts";

/** The folders and files a task's process may touch, as absolute paths. */
export interface PermissionPlan {
  /** The entry script (absolute path). */
  script: string;
  /** Its arguments, passed through unchanged. */
  args: string[];
  read: string[];
  /** May be empty (perplexity, a failed flag parse): then no write access at all. */
  write: string[];
  /** Native libraries the process may load (data-parallel training's MPI library). */
  ffi?: string[];
}

/**
 * A name read from a file that becomes one path component: refused when empty, `.` or `..`, or
 * when it holds a path separator, a NUL or another control character.
 */
export function safeName(name: unknown, what: string, file: string): string {
  if (
    typeof name !== "string" || name === "" || name === "." || name === ".." ||
    /[/\\]/.test(name) || [...name].some((ch) => ch.charCodeAt(0) < 0x20)
  ) {
    throw new HiraError(
      file,
      `${what} ${JSON.stringify(name)} is not a plain name (no "/", "\\", "." or ".."): ` +
        "names read from files never become paths",
    );
  }
  return name;
}

/**
 * The `checkpoint-N` folder name a trainer_state.json's `best_model_checkpoint` points at. The
 * file stores a path (the reference's is relative to the training cwd); only its last part is
 * used, and it must be `checkpoint-N`, so an edited or foreign state cannot point anywhere else.
 * Null when no best is recorded.
 */
export function bestCheckpointName(saved: unknown, file: string): string | null {
  if (saved === null || saved === undefined || saved === "") return null;
  const last = typeof saved === "string"
    ? saved.replace(/[/\\]+$/, "").split(/[/\\]/).pop() ?? ""
    : "";
  if (!/^checkpoint-\d+$/.test(last)) {
    throw new HiraError(
      file,
      `best_model_checkpoint ${JSON.stringify(saved)} does not name a checkpoint-N folder`,
    );
  }
  return last;
}

/** Paths in order, without duplicates or paths inside another listed path. */
export function minimalPaths(paths: readonly string[]): string[] {
  const norm = [...new Set(paths.map((p) => p.replace(/(.)[/\\]+$/, "$1")))];
  const inside = (p: string, q: string) =>
    p !== q && (p.startsWith(q.endsWith("/") ? q : q + "/") ||
      p.startsWith(q.endsWith("\\") ? q : q + "\\"));
  return norm.filter((p) => !norm.some((q) => inside(p, q)));
}

/**
 * The `deno run` arguments of a plan: no prompts (a denied access is an error, not a
 * question), read limited to the plan's read and write paths, write to its write paths, and
 * environment variables (the
 * WebGPU backend, the test hooks). Deno's flag lists are comma-separated and cannot escape a
 * comma, so a path with one is refused.
 */
export function denoRunArgs(plan: PermissionPlan, configFile?: string): string[] {
  const list = (paths: string[], flag: string) => {
    for (const p of paths) {
      if (p.includes(",")) {
        throw new HiraError(
          p,
          `contains a comma, which ${flag} cannot express; rename it or run ` +
            "`deno run -A` directly",
        );
      }
    }
    return `${flag}=${minimalPaths(paths).join(",")}`;
  };
  return [
    "run",
    "--no-prompt",
    ...(configFile ? [`--config=${configFile}`] : []),
    // What a task writes it reads back too (atomic writes check their target first).
    list([...plan.read, ...plan.write], "--allow-read"),
    ...(plan.write.length ? [list(plan.write, "--allow-write")] : []),
    ...(plan.ffi?.length ? [list(plan.ffi, "--allow-ffi")] : []),
    "--allow-env",
    plan.script,
    ...plan.args,
  ];
}
