/**
 * The launcher behind `deno task train|eval|merge|rank|report`: works out which folders the
 * command line names (lib/cli/launch.ts), then runs the task in a child `deno run` that may
 * read only those folders and the project's kernels/ and data_file/, and write only the output
 * folder. The launcher itself reads (to resolve folders) and starts `deno`; it writes nothing.
 *
 *   deno run --allow-read --allow-run=deno scripts/launch.ts <train|eval|report> [flags...]
 *
 * `HIRA_SHOW_PERMISSIONS=1` prints the child's command line first. SIGINT, SIGTERM and SIGHUP
 * are passed to the child (training saves a checkpoint), and the launcher exits with the
 * child's status; a training child whose launcher died stops itself (HIRA_LAUNCHER_PID).
 * `deno run -A train.ts ...` still runs a task without any of this.
 * @module
 */
import { join } from "@std/path";
import { isHiraError } from "../lib/engine/errors.ts";
import { planTask, REPO_ROOT } from "../lib/cli/launch.ts";
import { denoRunArgs, type PermissionPlan } from "../lib/cli/permissions.ts";
import { launchedRanks, localRank } from "../lib/io/mpi_deno.ts";
import { gpuPinningEnv, pciGpus } from "../lib/io/gpu_deno.ts";

function envGet(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/** Plans and runs one task; resolves to the exit code. */
export async function launch(task: string, argv: readonly string[]): Promise<number> {
  let args: string[];
  let plan: PermissionPlan;
  try {
    plan = await planTask(task, argv);
    args = denoRunArgs(plan, join(REPO_ROOT, "deno.json"));
  } catch (e) {
    if (isHiraError(e)) {
      console.error(`error: ${e.message}`);
      return 2;
    }
    throw e;
  }
  if (Deno.env.get("HIRA_SHOW_PERMISSIONS") === "1") {
    console.error(
      ["deno", ...args].map((a) => (/^[\w./=,:@+-]+$/.test(a) ? a : `'${a}'`)).join(" "),
    );
  }
  // Deno refuses to start a child whose environment has LD_LIBRARY_PATH or LD_PRELOAD unless
  // --allow-run is unscoped, and mpirun started by its full path sets LD_LIBRARY_PATH. The child
  // does without: its MPI library was found here (HIRA_MPI_LIB) and Open MPI's libraries find
  // their own through their RUNPATH (docs/data-parallel.md).
  for (const v of ["LD_LIBRARY_PATH", "LD_PRELOAD"]) {
    try {
      Deno.env.delete(v);
    } catch { /* not granted: then it is not set either, or the spawn says why */ }
  }
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("deno", {
      args,
      // The child watches this pid: if the launcher dies (even by SIGKILL), it stops itself.
      env: {
        HIRA_LAUNCHER_PID: String(Deno.pid),
        // One GPU per rank of an mpirun/srun job (the child cannot read /sys itself).
        ...(launchedRanks() > 1 ? gpuPinningEnv(localRank(), pciGpus(), envGet) : {}),
        // The library the plan lets it load (it may not search the system's folders itself).
        ...(plan.ffi?.length ? { HIRA_MPI_LIB: plan.ffi[0] } : {}),
      },
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    })
      .spawn();
  } catch (e) {
    console.error(
      `error: cannot start deno (${(e as Error).message}); run the task directly: ` +
        `deno run -A ${task}.ts ...`,
    );
    return 1;
  }
  // SIGHUP too (a closed terminal): it used to kill the launcher and orphan the child.
  const signals: Deno.Signal[] = Deno.build.os === "windows"
    ? ["SIGINT"]
    : ["SIGINT", "SIGTERM", "SIGHUP"];
  const forward = signals.map((sig) => {
    const f = () => {
      try {
        child.kill(sig);
      } catch { /* already gone */ }
    };
    Deno.addSignalListener(sig, f);
    return () => Deno.removeSignalListener(sig, f);
  });
  let status: Deno.CommandStatus;
  try {
    status = await child.status;
  } finally {
    forward.forEach((off) => off());
  }
  // A child killed by a signal it did not handle: report it as a shell would (128 + n).
  if (status.signal !== null && status.code === 0) {
    return status.signal === "SIGKILL" ? 137 : status.signal === "SIGTERM" ? 143 : 128;
  }
  return status.code;
}

if (import.meta.main) {
  const [task = "", ...argv] = Deno.args;
  Deno.exit(await launch(task, argv));
}
