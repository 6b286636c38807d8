/**
 * Data-parallel training over MPI, against one process: `mpirun -np 2` at --grad_acc=G takes the
 * optimizer steps of one process at --grad_acc=2G (every logged loss within 1e-5 relative, the
 * final adapter within 1e-4 relative L2; HiRA and LoRA with its dropout, f32 weights); a killed
 * 2-rank run resumes to the uninterrupted run's adapter; a rank given another model file, or one
 * whose weights turn NaN, stops both ranks with one line and the same status; two ranks in two
 * network namespaces train over Open MPI's TCP transport as over shared memory. Plus the pure
 * rules (the micro-batch share, the library search, GPU pinning).
 *
 * Needs Open MPI's mpirun (CI installs openmpi-bin and sets HIRA_REQUIRE_MPI=1, so there they
 * cannot be skipped); the namespace test also needs root and iproute2.
 * @module
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { join } from "@std/path";
import { globalIndex, rankShare } from "../../lib/train/ranks.ts";
import { findMpiLibrary, launchedRanks, localRank } from "../../lib/io/mpi_deno.ts";
import { gpuPinningEnv } from "../../lib/io/gpu_deno.ts";
import { denoRunArgs } from "../../lib/cli/permissions.ts";
import { openSafetensors } from "../../lib/io/safetensors_deno.ts";
import { withTempDir } from "../_util.ts";
import { taskArgs } from "../_tasks.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const MODEL = join(ROOT, "data_file/tiny/model");

/** Whether `cmd versionFlag` runs and succeeds (the program is installed). */
function found(cmd: string, versionFlag = "--version"): boolean {
  try {
    return new Deno.Command(cmd, { args: [versionFlag], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

const HAS_MPI = found("mpirun");
if (!HAS_MPI && Deno.env.get("HIRA_REQUIRE_MPI") === "1") {
  throw new Error("HIRA_REQUIRE_MPI=1 but mpirun is not installed (apt-get install openmpi-bin)");
}
const NO_MPI = !HAS_MPI;
/** mpirun's flags for this machine: root allowed (CI), more ranks than cores allowed. */
const MPIRUN = ["--allow-run-as-root", "--oversubscribe"];

function flags(out: string, extra: string[] = []): string[] {
  return [
    `--model=${MODEL}`,
    `--data_root=${join(ROOT, "data_file")}`,
    `--output_folder=${out}`,
    "--dataset=common_170k",
    "--dataset_ratio=0.01",
    "--batch=2",
    "--max_steps=4",
    "--warmup=1",
    "--lr=1e-2",
    "--r_ab=4",
    "--target_modules=q_proj,v_proj,down_proj",
    "--eval_strategy=steps",
    "--eval_steps=2",
    "--seed=5",
    "--log_every=1000",
    "--no-eval_accuracy",
    ...extra,
  ];
}

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<Ran> {
  const o = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { code: o.code, stdout: dec.decode(o.stdout), stderr: dec.decode(o.stderr) };
}

/** train.ts as one process. */
function single(trainFlags: string[]): Promise<Ran> {
  return run(Deno.execPath(), ["run", "-A", join(ROOT, "train.ts"), ...trainFlags]);
}

/** train.ts on `n` ranks (`deno run -A`, or `deno task train`'s launcher with its flags). */
function ranks(n: number, trainFlags: string[], launcher = false): Promise<Ran> {
  return run("mpirun", [...MPIRUN, "-np", String(n), ...entry(launcher), ...trainFlags]);
}

/** Two ranks that run different command lines (MPMD): rank 0 `a`, rank 1 `b`, with mpirun's `-x`. */
function twoRanks(a: string[], b: string[], bEnv: string[] = []): Promise<Ran> {
  const app = (args: string[], env: string[]) => [
    "-np",
    "1",
    ...env.flatMap((e) => ["-x", e]),
    ...entry(false),
    ...args,
  ];
  return run("mpirun", [...MPIRUN, ...app(a, []), ":", ...app(b, bEnv)]);
}

/** The command a rank runs: train.ts, or the launcher as deno.json's train task starts it. */
function entry(launcher: boolean): string[] {
  if (!launcher) return [Deno.execPath(), "run", "-A", join(ROOT, "train.ts")];
  return [Deno.execPath(), ...taskArgs("train")];
}

/** The one run folder under `out`. */
async function runDir(out: string): Promise<string> {
  const dirs: string[] = [];
  for await (const e of Deno.readDir(out)) if (e.isDirectory) dirs.push(join(out, e.name));
  assertEquals(dirs.length, 1, `run folders in ${out}: ${dirs}`);
  return dirs[0];
}

async function logRecords(dir: string): Promise<Record<string, number & string>[]> {
  return (await Deno.readTextFile(join(dir, "log.jsonl"))).trim().split("\n").map((l) =>
    JSON.parse(l)
  );
}

async function adapter(
  dir: string,
  file = join("adapter", "adapter_model.safetensors"),
): Promise<Map<string, Float32Array>> {
  const f = await openSafetensors(join(dir, file));
  const out = new Map<string, Float32Array>();
  for (const n of f.names) out.set(n, await f.read(n));
  f.source.close?.();
  return out;
}

function relL2(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  assertEquals([...a.keys()].sort(), [...b.keys()].sort());
  let num = 0, den = 0;
  for (const [k, x] of a) {
    const y = b.get(k)!;
    for (let i = 0; i < x.length; i++) {
      num += (x[i] - y[i]) ** 2;
      den += x[i] ** 2;
    }
  }
  return Math.sqrt(num / den);
}

function ok(r: Ran, what: string): void {
  assertEquals(r.code, 0, `${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
}

/** `error:` lines in a job's output (rank 0 alone reports a shared error). */
function errorLines(r: Ran): string[] {
  return (r.stdout + r.stderr).split("\n").filter((l) => /^error: /.test(l));
}

/**
 * Starts `mpirun -np 2` on `trainFlags` (output folder `out`), waits until `ready(runDir)` holds
 * for its run folder, then sends `signal` to the rank with the highest pid; resolves to the run
 * folder and the job's output.
 */
async function signalRankWhen(
  out: string,
  trainFlags: string[],
  ready: (runDir: string) => Promise<boolean>,
  signal: Deno.Signal,
): Promise<{ dir: string; output: Promise<Deno.CommandOutput> }> {
  const job = new Deno.Command("mpirun", {
    args: [...MPIRUN, "-np", "2", ...entry(false), ...trainFlags],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = job.output();
  let dir = "";
  for (let i = 0; i < 1200 && !dir; i++) {
    await new Promise((r) => setTimeout(r, 100));
    for (const e of Deno.readDirSync(out)) {
      if (e.isDirectory && await ready(join(out, e.name))) dir = join(out, e.name);
    }
  }
  assert(dir, `the run in ${out} never got ready`);
  const pids = (await run("pgrep", ["-f", `output_folder=${out}`])).stdout.trim()
    .split("\n").map(Number).filter((p) => p > 0 && p !== job.pid);
  assert(pids.length >= 1, "no rank process found");
  Deno.kill(Math.max(...pids), signal);
  return { dir, output };
}

const exists = (p: string) => Deno.stat(p).then(() => true, () => false);

async function equivalence(
  peft: string[],
  launcher: boolean,
  file?: string,
): Promise<void> {
  await withTempDir("hira-dp-", async (tmp) => {
    const one = join(tmp, "one"), two = join(tmp, "two");
    ok(await single(flags(one, [...peft, "--grad_acc=4"])), "one process");
    const r = await ranks(2, flags(two, [...peft, "--grad_acc=2"]), launcher);
    ok(r, "two ranks");
    // Each rank names its adapter; rank 0 alone prints the rest.
    assertMatch(r.stdout, /rank 0\/2: /);
    assertMatch(r.stdout, /rank 1\/2: /);
    assertEquals(r.stdout.match(/^data: /gm)?.length, 1, r.stdout);
    const [d1, d2] = [await runDir(one), await runDir(two)];
    const [l1, l2] = [await logRecords(d1), await logRecords(d2)];
    for (const type of ["train", "eval"]) {
      const key = type === "train" ? "loss" : "eval_loss";
      const a = l1.filter((x) => x.type === type), b = l2.filter((x) => x.type === type);
      assertEquals(a.length, type === "train" ? 4 : 2);
      assertEquals(b.map((x) => x.step), a.map((x) => x.step));
      a.forEach((x, i) => {
        const rel = Math.abs(b[i][key] - x[key]) / Math.abs(x[key]);
        assert(rel < 1e-5, `${type} step ${x.step}: ${b[i][key]} vs ${x[key]} (rel ${rel})`);
      });
    }
    const rel = relL2(await adapter(d1, file), await adapter(d2, file));
    assert(rel < 1e-4, `final adapter differs: relative L2 ${rel}`);
    // The steps changed the adapter (the comparison is not of two initial states).
    assert(l2.filter((x) => x.type === "train").every((x) => x.grad_norm > 0));
    const state = JSON.parse(
      await Deno.readTextFile(join(d2, "checkpoint-4", "trainer_state.json")),
    );
    assertEquals(state.world_size, 2);
  });
}

Deno.test({
  name: "dp: 2 ranks × grad_acc 2 ≡ 1 process × grad_acc 4 for HiRA (through deno task train)",
  ignore: NO_MPI,
  fn: () => equivalence(["--peft_type=hira"], true),
});

Deno.test({
  name: "dp: 2 ranks × grad_acc 2 ≡ 1 process × grad_acc 4 for LoRA with dropout",
  ignore: NO_MPI,
  fn: () => equivalence(["--peft_type=lora", "--lora_dropout=0.1"], false),
});

Deno.test({
  name: "dp: 2 ranks ≡ 1 process with twice the accumulation for full fine-tuning",
  ignore: NO_MPI,
  fn: () =>
    equivalence(["--peft_type=full", "--lr=1e-3"], false, join("model", "model.safetensors")),
});

Deno.test({
  name: "dp: a killed 2-rank run resumes to the uninterrupted run's adapter; 1 process may not",
  ignore: NO_MPI,
  async fn() {
    await withTempDir("hira-dp-resume-", async (tmp) => {
      const whole = join(tmp, "whole"), killed = join(tmp, "killed");
      const f = (out: string) => flags(out, ["--max_steps=6", "--eval_steps=1", "--grad_acc=2"]);
      ok(await ranks(2, f(whole)), "uninterrupted run");
      // Kill rank 1 (SIGKILL, like a crashed node) once checkpoint-3 exists.
      await Deno.mkdir(killed);
      const { dir, output } = await signalRankWhen(
        killed,
        f(killed),
        (d) => exists(join(d, "checkpoint-3")),
        "SIGKILL",
      );
      assert(!(await output).success, "the killed job reported success");
      const cks = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) =>
        /^checkpoint-/.test(n)
      );
      assert(!cks.includes("checkpoint-6"), `the job finished before the kill: ${cks}`);
      // A different number of ranks is refused in one line, before anything changes.
      const wrong = await single([`--resume=${dir}`]);
      assertEquals(wrong.code, 2, wrong.stderr);
      assertEquals(errorLines(wrong).length, 1, wrong.stderr);
      assertMatch(errorLines(wrong)[0], /trained on 2 ranks.*mpirun -np 2/);
      ok(await ranks(2, [`--resume=${dir}`]), "resume on 2 ranks");
      const [a, b] = [await adapter(await runDir(whole)), await adapter(dir)];
      for (const [k, x] of a) assertEquals(b.get(k), x, `${k} differs after the resume`);
    });
  },
});

Deno.test({
  name: "dp: SIGTERM to one rank stops both after the same step, saved, with status 143",
  ignore: NO_MPI,
  async fn() {
    await withTempDir("hira-dp-signal-", async (tmp) => {
      // Signal a rank once the first training record is logged.
      const { dir, output } = await signalRankWhen(
        tmp,
        flags(tmp, ["--max_steps=200", "--eval_strategy=no", "--grad_acc=1"]),
        async (d) =>
          (await Deno.readTextFile(join(d, "log.jsonl")).catch(() => "")).includes(
            '"type":"train"',
          ),
        "SIGTERM",
      );
      const o = await output;
      assertEquals(o.code, 143, new TextDecoder().decode(o.stderr));
      const log = await logRecords(dir);
      const end = log.at(-1)!;
      assertEquals(end.type, "end");
      assertEquals(end.interrupted as unknown, true);
      assert(end.step < 200, `ran to the end (${end.step})`);
      // The stop step's checkpoint is there: a resume continues from it.
      assert(await exists(join(dir, `checkpoint-${end.step}`)));
    });
  },
});

Deno.test({
  name: "dp: a rank given another model file fails both ranks with one line naming it (exit 2)",
  ignore: NO_MPI,
  async fn() {
    await withTempDir("hira-dp-model-", async (tmp) => {
      // The same weights with other metadata: the header (and the size) differ.
      const other = join(tmp, "model");
      await Deno.mkdir(other);
      for (const e of Deno.readDirSync(MODEL)) {
        await Deno.copyFile(join(MODEL, e.name), join(other, e.name));
      }
      const bytes = await Deno.readFile(join(MODEL, "model.safetensors"));
      const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
      const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
      header.__metadata__ = { ...(header.__metadata__ ?? {}), note: "another file" };
      let text = JSON.stringify(header);
      while ((8 + text.length) % 8) text += " ";
      const h = new TextEncoder().encode(text);
      const out = new Uint8Array(8 + h.length + bytes.length - 8 - n);
      new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
      out.set(h, 8);
      out.set(bytes.subarray(8 + n), 8 + h.length);
      await Deno.writeFile(join(other, "model.safetensors"), out);
      const o = join(tmp, "out");
      await Deno.mkdir(o);
      const base = flags(o, ["--grad_acc=1"]).filter((x) => !x.startsWith("--model="));
      const r = await twoRanks([`--model=${MODEL}`, ...base], [`--model=${other}`, ...base]);
      assertEquals(r.code, 2, r.stdout + r.stderr);
      const lines = errorLines(r);
      assertEquals(lines.length, 1, r.stdout + r.stderr);
      assertMatch(lines[0], /rank 1's model file model\.safetensors differs from rank 0's/);
      // Nothing was written: the check comes before the run folder.
      assertEquals([...Deno.readDirSync(o)], []);
    });
  },
});

Deno.test({
  name: "dp: one rank's NaN stops both ranks at the same step with exit 3",
  ignore: NO_MPI,
  async fn() {
    await withTempDir("hira-dp-nan-", async (tmp) => {
      const f = flags(tmp, ["--grad_acc=1", "--eval_strategy=no"]);
      const r = await twoRanks(f, f, ["HIRA_TEST_NAN_AFTER_STEP=2"]);
      assertEquals(r.code, 3, r.stdout + r.stderr);
      const lines = errorLines(r);
      assertEquals(lines.length, 1, r.stdout + r.stderr);
      assertMatch(lines[0], /not finite at step 3/);
      const log = await logRecords(await runDir(tmp));
      assertEquals(log.at(-1)?.type, "error");
      assertEquals(log.filter((x) => x.type === "train").length, 2);
    });
  },
});

// `id -u`: Deno.uid() needs --allow-sys, which the suite does not grant.
const IS_ROOT = (() => {
  try {
    const o = new Deno.Command("id", { args: ["-u"], stdout: "piped" }).outputSync();
    return new TextDecoder().decode(o.stdout).trim() === "0";
  } catch {
    return false;
  }
})();
const HAS_IP = found("ip", "-V");

Deno.test({
  name: "dp: two ranks in two network namespaces train over TCP as over shared memory",
  ignore: NO_MPI || !IS_ROOT || !HAS_IP,
  async fn() {
    const tag = `h${Deno.pid % 100000}`;
    const [nsA, nsB] = [`${tag}a`, `${tag}b`];
    const sh = (cmd: string) => run("sh", ["-c", cmd]);
    await withTempDir("hira-dp-netns-", async (tmp) => {
      try {
        // Two "machines": namespaces joined by a veth pair, 10.77.0.1 and 10.77.0.2.
        for (
          const c of [
            `ip netns add ${nsA}`,
            `ip netns add ${nsB}`,
            `ip link add ${tag}x type veth peer name ${tag}y`,
            `ip link set ${tag}x netns ${nsA}`,
            `ip link set ${tag}y netns ${nsB}`,
            `ip -n ${nsA} addr add 10.77.0.1/24 dev ${tag}x`,
            `ip -n ${nsB} addr add 10.77.0.2/24 dev ${tag}y`,
            `ip -n ${nsA} link set ${tag}x up`,
            `ip -n ${nsB} link set ${tag}y up`,
            `ip -n ${nsA} link set lo up`,
            `ip -n ${nsB} link set lo up`,
          ]
        ) {
          const r = await sh(c);
          assertEquals(r.code, 0, `${c}: ${r.stderr}`);
        }
        // mpirun's "ssh": run the daemon's command line in the namespace of the host it names.
        const agent = join(tmp, "netns-rsh");
        await Deno.writeTextFile(
          agent,
          `#!/bin/sh\n# netns-rsh HOST COMMAND...\nhost="$1"; shift\n` +
            `case "$host" in 10.77.0.1) ns=${nsA};; 10.77.0.2) ns=${nsB};; *) exit 255;; esac\n` +
            `exec ip netns exec "$ns" sh -c "$*"\n`,
        );
        await Deno.chmod(agent, 0o755);
        const hosts = join(tmp, "hosts");
        await Deno.writeTextFile(hosts, "10.77.0.1 slots=1\n10.77.0.2 slots=1\n");
        const out = join(tmp, "out"), ref = join(tmp, "ref");
        await Deno.mkdir(out);
        await Deno.mkdir(ref);
        const f = (o: string) => flags(o, ["--grad_acc=2"]);
        ok(await ranks(2, f(ref)), "the shared-memory run");
        const env = ["DENO_WEBGPU_BACKEND", "XDG_RUNTIME_DIR", "PATH", "HOME", "DENO_DIR"]
          .filter((k) => Deno.env.get(k) !== undefined).flatMap((k) => ["-x", k]);
        const r = await run("ip", [
          "netns",
          "exec",
          nsA,
          "mpirun",
          ...MPIRUN,
          "--hostfile",
          hosts,
          "-np",
          "2",
          "--map-by",
          "node",
          "--mca",
          "plm_rsh_agent",
          agent,
          // Only the network between the namespaces: no shared memory, no loopback.
          "--mca",
          "btl",
          "tcp,self",
          "--mca",
          "btl_tcp_if_include",
          "10.77.0.0/24",
          "--mca",
          "oob_tcp_if_include",
          "10.77.0.0/24",
          ...env,
          ...entry(false),
          ...f(out),
        ]);
        ok(r, "the two-namespace run");
        const [a, b] = [await runDir(ref), await runDir(out)];
        const la = (await logRecords(a)).filter((x) => x.type === "train");
        const lb = (await logRecords(b)).filter((x) => x.type === "train");
        assertEquals(lb.length, 4);
        la.forEach((x, i) => assert(Math.abs(lb[i].loss - x.loss) <= 1e-5 * Math.abs(x.loss)));
        assert(relL2(await adapter(a), await adapter(b)) < 1e-4);
      } finally {
        await sh(`ip netns del ${nsA}; ip netns del ${nsB}`);
      }
    });
  },
});

Deno.test("dp: rank k takes micro-batch k of each group of N", () => {
  const all = [0, 1, 2, 3, 4, 5];
  assertEquals(rankShare(all, 0, 2), [0, 2, 4]);
  assertEquals(rankShare(all, 1, 2), [1, 3, 5]);
  assertEquals(rankShare(all, 2, 3), [2, 5]);
  assertEquals(rankShare(all, 0, 1), all);
  // The j-th micro-batch of rank k is micro-batch j·N + k of the step.
  for (const [k, n] of [[0, 2], [1, 2], [2, 3]]) {
    rankShare(all, k, n).forEach((x, j) => assertEquals(globalIndex(j, k, n), x));
  }
});

Deno.test("dp: the launcher's environment gives the rank count and the local rank", () => {
  const env = (t: Record<string, string>) => (k: string) => t[k];
  assertEquals(launchedRanks(env({})), 1);
  assertEquals(launchedRanks(env({ OMPI_COMM_WORLD_SIZE: "4" })), 4);
  assertEquals(launchedRanks(env({ SLURM_STEP_NUM_TASKS: "8" })), 8);
  assertEquals(launchedRanks(env({ PMI_SIZE: "x" })), 1);
  assertEquals(localRank(env({})), null);
  assertEquals(localRank(env({ OMPI_COMM_WORLD_LOCAL_RANK: "3" })), 3);
  assertEquals(localRank(env({ SLURM_LOCALID: "1" })), 1);
});

Deno.test("dp: the MPI library is HIRA_MPI_LIB's, or the first Open MPI one in the search", () => {
  const env = (t: Record<string, string>) => (k: string) => t[k];
  const has = (...p: string[]) => (x: string) => p.includes(x);
  assertEquals(
    findMpiLibrary(env({ HIRA_MPI_LIB: "/opt/x/libmpi.so" }), has()),
    "/opt/x/libmpi.so",
  );
  assertEquals(
    findMpiLibrary(
      env({ LD_LIBRARY_PATH: "/opt/ompi/lib:relative" }),
      has("/opt/ompi/lib/libmpi.so", "/usr/lib/x86_64-linux-gnu/libmpi.so.40"),
    ),
    "/opt/ompi/lib/libmpi.so",
  );
  assertEquals(findMpiLibrary(env({}), has()), null);
});

Deno.test("dp: GPU pinning picks the local rank's GPU by PCI address, or leaves it alone", () => {
  const gpus = [
    { address: "0000:17:00.0", vendor: 0x10de },
    { address: "0000:65:00.0", vendor: 0x10de },
  ];
  const none = () => undefined;
  assertEquals(gpuPinningEnv(1, gpus, none), {
    DRI_PRIME: "pci-0000_65_00_0",
    MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: "1",
  });
  assertEquals(gpuPinningEnv(2, gpus, none).DRI_PRIME, "pci-0000_17_00_0");
  assertEquals(gpuPinningEnv(0, gpus.slice(0, 1), none), {});
  assertEquals(gpuPinningEnv(null, gpus, none), {});
  assertEquals(gpuPinningEnv(0, gpus, (k) => (k === "DRI_PRIME" ? "1" : undefined)), {});
  assertEquals(gpuPinningEnv(0, gpus, (k) => (k === "HIRA_GPU_PINNING" ? "off" : undefined)), {});
});

Deno.test("dp: a rank's child may load the MPI library and nothing else native", () => {
  const plan = { script: "/r/train.ts", args: [], read: ["/r/kernels"], write: ["/o"] };
  assert(!denoRunArgs(plan).some((a) => a.startsWith("--allow-ffi")));
  const args = denoRunArgs({ ...plan, ffi: ["/usr/lib/libmpi.so.40", "/usr/lib/libmpi.so.40.1"] });
  assert(args.includes("--allow-ffi=/usr/lib/libmpi.so.40,/usr/lib/libmpi.so.40.1"), `${args}`);
});
