/**
 * The MPI binding: the few Open MPI calls data-parallel training needs (Init/Finalize, rank and
 * size, Allreduce, Bcast, Barrier, Abort), through `Deno.dlopen` of the system's libmpi, found at
 * run time (`HIRA_MPI_LIB` overrides the search). Nothing here is loaded unless a launcher
 * (`mpirun`, `srun`) started this process as one of several ranks; without MPI a run needs no MPI
 * library. Open MPI's handles (`MPI_COMM_WORLD`, `MPI_FLOAT`, `MPI_SUM`, ...) are the addresses of
 * its globals `ompi_mpi_comm_world`, `ompi_mpi_float`, `ompi_mpi_op_sum`, read as static symbols.
 * @module
 */
import { HiraError } from "../engine/errors.ts";
import type { Collective } from "../train/ranks.ts";

/** Reads an environment variable (Deno.env.get, or a test's table). */
export type EnvGet = (name: string) => string | undefined;

const denoEnv: EnvGet = (k) => {
  try {
    return Deno.env.get(k);
  } catch {
    return undefined;
  }
};

/** The launchers' variables that say how many ranks a job has, in the order they are read. */
const SIZE_VARS = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS", "PMIX_SIZE"];
/** Their variables for a rank's index among the ranks of its machine. */
const LOCAL_RANK_VARS = ["OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"];
/** Environment the MPI library and the GPU pinning read; the launcher passes them on. */
export const MPI_ENV_PREFIXES = ["OMPI_", "PMIX_", "PMI_", "SLURM_", "HIRA_MPI_LIB"];

/**
 * How many ranks the launcher started, from its environment; 1 when this process was not
 * started by mpirun or srun as one of several (then MPI is never loaded).
 */
export function launchedRanks(env: EnvGet = denoEnv): number {
  for (const v of SIZE_VARS) {
    const n = Number(env(v));
    if (Number.isInteger(n) && n > 0) return n;
  }
  return 1;
}

/** This rank's index on its machine (for GPU pinning), or null when no launcher says. */
export function localRank(env: EnvGet = denoEnv): number | null {
  for (const v of LOCAL_RANK_VARS) {
    const raw = env(v);
    const n = Number(raw);
    if (raw !== undefined && raw !== "" && Number.isInteger(n) && n >= 0) return n;
  }
  return null;
}

/** How many ranks run on this machine, or null when no launcher says. */
export function localRanks(env: EnvGet = denoEnv): number | null {
  for (const v of ["OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", "MPI_LOCALNRANKS"]) {
    const n = Number(env(v));
    if (Number.isInteger(n) && n > 0) return n;
  }
  return null;
}

/** Library file names of Open MPI's C library, newest ABI first. */
const LIB_NAMES = Deno.build.os === "darwin"
  ? ["libmpi.40.dylib", "libmpi.dylib"]
  : ["libmpi.so.40", "libmpi.so"];
/** Where distributions install it. */
const LIB_DIRS = [
  "/usr/lib/x86_64-linux-gnu",
  "/usr/lib/aarch64-linux-gnu",
  "/usr/lib64/openmpi/lib",
  "/usr/lib/openmpi/lib",
  "/usr/local/lib",
  "/opt/openmpi/lib",
  "/opt/homebrew/lib",
  "/usr/lib64",
  "/usr/lib",
];

/**
 * The absolute path of the MPI library to load: `HIRA_MPI_LIB` when set (as given: the launcher
 * sets it for a child that may not look into system folders), else the
 * first Open MPI library in LD_LIBRARY_PATH's folders and the usual system folders. Null when none
 * is found. `exists` is injectable for tests.
 */
export function findMpiLibrary(
  env: EnvGet = denoEnv,
  exists: (path: string) => boolean = fileExists,
): string | null {
  const given = env("HIRA_MPI_LIB");
  if (given) return given;
  const dirs = [
    ...(env("LD_LIBRARY_PATH") ?? "").split(":").filter((d) => d.startsWith("/")),
    ...LIB_DIRS,
  ];
  for (const d of dirs) {
    for (const n of LIB_NAMES) {
      const p = `${d.replace(/\/+$/, "")}/${n}`;
      if (exists(p)) return p;
    }
  }
  return null;
}

function fileExists(p: string): boolean {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
}

const SYMBOLS = {
  MPI_Init: { parameters: ["pointer", "pointer"], result: "i32" },
  MPI_Finalize: { parameters: [], result: "i32" },
  MPI_Comm_rank: { parameters: ["pointer", "buffer"], result: "i32" },
  MPI_Comm_size: { parameters: ["pointer", "buffer"], result: "i32" },
  // The send buffer is MPI_IN_PLACE, `(void *) 1`, passed as an integer: making a pointer from
  // a number needs unscoped --allow-ffi, and a pointer and a size_t travel alike in the C ABI.
  MPI_Allreduce: {
    parameters: ["usize", "buffer", "i32", "pointer", "pointer", "pointer"],
    result: "i32",
  },
  MPI_Bcast: { parameters: ["buffer", "i32", "pointer", "i32", "pointer"], result: "i32" },
  MPI_Barrier: { parameters: ["pointer"], result: "i32" },
  MPI_Abort: { parameters: ["pointer", "i32"], result: "i32" },
  ompi_mpi_comm_world: { type: "pointer" },
  ompi_mpi_float: { type: "pointer" },
  ompi_mpi_byte: { type: "pointer" },
  ompi_mpi_op_sum: { type: "pointer" },
} as const;

/** An MPI world of this process: the collectives, plus the calls that end it. */
export interface MpiWorld extends Collective {
  /** The library loaded. */
  readonly library: string;
  /** MPI_Barrier on MPI_COMM_WORLD. */
  barrier(): void;
  /** MPI_Finalize, once; the world is unusable after. */
  finalize(): void;
  /** MPI_Abort: kills every rank (the last resort when the agreement itself cannot run). */
  abort(code: number): void;
}

/** The largest element count one MPI call takes (a C int). */
const MAX_COUNT = 0x7fffffff;

/**
 * Loads `library` and calls MPI_Init. Throws a one-line error naming the library when it cannot
 * be loaded or lacks Open MPI's symbols (another MPI: set HIRA_MPI_LIB to an Open MPI library).
 */
export function openMpi(library: string): MpiWorld {
  let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    lib = Deno.dlopen(library, SYMBOLS);
  } catch (e) {
    throw new HiraError(
      library,
      `cannot be loaded as Open MPI (${(e as Error).message.split("\n")[0]}); install Open ` +
        "MPI (apt-get install openmpi-bin) or set HIRA_MPI_LIB to its libmpi.so",
    );
  }
  const s = lib.symbols;
  // Ranks wait on each other in the all-reduce while their GPUs (or, on Mesa's CPU device, their
  // cores) work: waiting ranks yield the CPU instead of spinning, unless the user set it.
  try {
    if (Deno.env.get("OMPI_MCA_mpi_yield_when_idle") === undefined) {
      Deno.env.set("OMPI_MCA_mpi_yield_when_idle", "1");
    }
  } catch { /* no env access: Open MPI's default */ }
  const check = (what: string, rc: number) => {
    if (rc !== 0) throw new Error(`${library}: ${what} failed (MPI error ${rc})`);
  };
  check("MPI_Init", s.MPI_Init(null, null));
  const world = s.ompi_mpi_comm_world;
  const one = new Int32Array(1);
  check("MPI_Comm_rank", s.MPI_Comm_rank(world, one));
  const rank = one[0];
  check("MPI_Comm_size", s.MPI_Comm_size(world, one));
  const size = one[0];
  // MPI_IN_PLACE is (void *) 1 in Open MPI's mpi.h.
  const inPlace = 1n;
  let open = true;
  return {
    library,
    rank,
    size,
    allreduceSum(buf) {
      for (let at = 0; at < buf.length; at += MAX_COUNT) {
        const part = buf.subarray(at, Math.min(buf.length, at + MAX_COUNT));
        check(
          "MPI_Allreduce",
          s.MPI_Allreduce(inPlace, part, part.length, s.ompi_mpi_float, s.ompi_mpi_op_sum, world),
        );
      }
    },
    broadcast(buf, root) {
      for (let at = 0; at < buf.length; at += MAX_COUNT) {
        const part = buf.subarray(at, Math.min(buf.length, at + MAX_COUNT));
        check("MPI_Bcast", s.MPI_Bcast(part, part.length, s.ompi_mpi_byte, root, world));
      }
    },
    barrier() {
      check("MPI_Barrier", s.MPI_Barrier(world));
    },
    finalize() {
      if (!open) return;
      open = false;
      s.MPI_Finalize();
    },
    abort(code) {
      s.MPI_Abort(world, code);
    },
  };
}

/**
 * The world this process runs in: MPI's when a launcher started several ranks (the library found
 * by {@linkcode findMpiLibrary}), else null (one process, no MPI loaded).
 */
export function openLaunchedWorld(env: EnvGet = denoEnv): MpiWorld | null {
  if (launchedRanks(env) <= 1) return null;
  const library = findMpiLibrary(env);
  if (!library) {
    throw new HiraError(
      "HIRA_MPI_LIB",
      `this process is one of ${launchedRanks(env)} ranks but no Open MPI library ` +
        `(${LIB_NAMES.join(", ")}) was found; install openmpi-bin or set HIRA_MPI_LIB`,
    );
  }
  const world = openMpi(library);
  if (world.size <= 1) {
    world.finalize();
    return null;
  }
  return world;
}
