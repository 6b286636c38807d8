/**
 * Crash safety of a real `train.ts` process: SIGKILL after the k-th logged step, SIGKILL in the
 * middle of a checkpoint write, SIGKILL right after a resume starts, Ctrl-C (SIGINT) and SIGTERM.
 * After each, every checkpoint-N folder is complete and loads, and the run resumed from the
 * newest one ends with the same adapter and optimizer state, byte for byte, as a run never
 * stopped with the same seed.
 */
import { assert, assertEquals, assertGreaterOrEqual } from "@std/assert";
import { join } from "@std/path";
import { parseConfig } from "../../lib/model/config.ts";
import { randomModel } from "../../lib/model/load.ts";
import { writeModelDir } from "../../lib/cli/train.ts";
import { openAdapterDir } from "../../lib/io/peft_deno.ts";
import { openSafetensors } from "../../lib/io/safetensors_deno.ts";
import { parseRunLog } from "../../lib/report/report.ts";
import { testGpu, withTempDir } from "../_util.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const TINY = join(ROOT, "data_file/tiny/");
const STEPS = 12;

/**
 * Runs `fn` with a random-init tiny model folder, removed afterwards, so the test does not depend
 * on the embedded weights.
 */
function withTinyModel<T>(fn: (modelDir: string) => Promise<T>): Promise<T> {
  return withTempDir("hira-crash-model-", async (dir) => {
    const cfg = parseConfig(JSON.parse(await Deno.readTextFile(join(TINY, "model/config.json"))));
    await writeModelDir(randomModel(await testGpu(), cfg, 11), dir, TINY);
    return await fn(dir);
  });
}

function trainFlags(modelDir: string, out: string): string[] {
  return [
    `--model=${modelDir}`,
    `--data_root=${join(ROOT, "data_file")}`,
    `--output_folder=${out}`,
    "--dataset=common_170k",
    "--dataset_ratio=0.01",
    "--batch=4",
    `--max_steps=${STEPS}`,
    "--warmup=2",
    "--lr=1e-2",
    "--r_ab=4",
    "--target_modules=q_proj,v_proj,down_proj",
    // A validation loss and a checkpoint after every step: many moments to be killed at.
    "--eval_strategy=steps",
    "--eval_steps=1",
    "--save_total_limit=1",
    "--seed=5",
    "--log_every=1000",
    "--no-eval_accuracy",
  ];
}

/** A train.ts child process, its stderr collected for failure messages. */
class TrainProcess {
  readonly child: Deno.ChildProcess;
  readonly stderr: Promise<string>;

  /** `launcher`: run through scripts/launch.ts (`deno task train`'s scoped child). */
  constructor(flags: string[], env: Record<string, string> = {}, launcher = false) {
    const entry = launcher
      ? [
        "--allow-read",
        "--allow-env",
        "--allow-run=deno",
        join(ROOT, "scripts/launch.ts"),
        "train",
      ]
      : ["-A", join(ROOT, "train.ts")];
    this.child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...entry, ...flags],
      cwd: ROOT,
      env: { DENO_WEBGPU_BACKEND: "vulkan", XDG_RUNTIME_DIR: "/tmp", ...env },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.stderr = new Response(this.child.stderr).text();
  }

  async exit(): Promise<Deno.CommandStatus> {
    const status = await this.child.status;
    await this.stderr;
    return status;
  }

  /** Sends `signal` and waits for the exit. */
  async kill(signal: Deno.Signal): Promise<Deno.CommandStatus> {
    try {
      this.child.kill(signal);
    } catch { /* already gone */ }
    return await this.exit();
  }
}

/** Polls `cond` every few ms until it holds (or the process ends, or 60 s pass). */
async function waitFor(
  p: TrainProcess,
  what: string,
  cond: () => Promise<boolean>,
): Promise<void> {
  let done = false;
  p.child.status.then(() => (done = true));
  const t0 = Date.now();
  while (!(await cond())) {
    if (done) throw new Error(`train.ts exited before ${what}:\n${await p.stderr}`);
    if (Date.now() - t0 > 60_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 3));
  }
}

async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) out.push(e.name);
  } catch { /* not there yet */ }
  return out.sort();
}

async function runDirOf(out: string): Promise<string | null> {
  const n = (await names(out)).filter((x) => !x.startsWith("."));
  return n.length === 1 ? join(out, n[0]) : null;
}

/** Steps of the `train` records logged after the last `resume` record (or from the start). */
async function stepsLoggedSinceResume(runDir: string): Promise<number[]> {
  const text = await Deno.readTextFile(join(runDir, "log.jsonl")).catch(() => "");
  const steps: number[] = [];
  for (const line of text.split("\n")) {
    if (line.includes('"type":"resume"')) steps.length = 0;
    const m = /^\{"type":"train","step":(\d+),/.exec(line);
    if (m) steps.push(Number(m[1]));
  }
  return steps;
}

async function checkpointSteps(runDir: string): Promise<number[]> {
  return (await names(runDir)).map((n) => /^checkpoint-(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null).map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

/**
 * Every checkpoint-N folder is complete: its adapter opens and every tensor reads, the optimizer
 * moments read, and trainer_state.json parses and says step N. Returns the newest step.
 */
async function checkCheckpoints(runDir: string): Promise<number> {
  const steps = await checkpointSteps(runDir);
  assert(steps.length > 0, `no checkpoint in ${runDir}`);
  for (const step of steps) {
    const dir = join(runDir, `checkpoint-${step}`);
    assertEquals(
      await names(dir),
      [
        "adapter_config.json",
        "adapter_model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
      ],
      dir,
    );
    const ad = await openAdapterDir(dir);
    ad.close();
    for (const file of ["adapter_model.safetensors", "optimizer.safetensors"]) {
      const f = await openSafetensors(join(dir, file));
      try {
        for (const n of f.names) assert((await f.read(n, "f32")).length > 0, `${file} ${n}`);
      } finally {
        f.close();
      }
    }
    const state = JSON.parse(await Deno.readTextFile(join(dir, "trainer_state.json")));
    assertEquals(state.global_step, step);
  }
  return steps.at(-1)!;
}

/** The bytes that must match an uninterrupted run's. */
async function finalBytes(runDir: string): Promise<Record<string, Uint8Array>> {
  const out: Record<string, Uint8Array> = {};
  for (
    const f of [
      "adapter/adapter_model.safetensors",
      "adapter/adapter_config.json",
      `checkpoint-${STEPS}/adapter_model.safetensors`,
      `checkpoint-${STEPS}/optimizer.safetensors`,
    ]
  ) out[f] = await Deno.readFile(join(runDir, f));
  return out;
}

Deno.test("killed, interrupted and resumed training ends with the uninterrupted run's adapter", async (t) => {
  await withTinyModel((modelDir) =>
    withTempDir("hira-crash-", async (tmp) => {
      const outA = join(tmp, "a"), outB = join(tmp, "b");
      // The uninterrupted reference runs alongside the interrupted run's first segments.
      const reference = new TrainProcess(trainFlags(modelDir, outA));
      try {
        let runDir = "";
        // Each segment continues the previous one's run: stop at the first failure.
        let ok = true;
        const resume = (env: Record<string, string> = {}) =>
          new TrainProcess([`--resume=${runDir}`, "--log_every=1000"], env);

        ok = ok && await t.step("SIGKILL after the 3rd logged step", async () => {
          const p = new TrainProcess(trainFlags(modelDir, outB));
          await waitFor(p, "3 logged steps", async () => {
            const dir = await runDirOf(outB);
            return dir !== null && (await stepsLoggedSinceResume(dir)).length >= 3;
          });
          const status = await p.kill("SIGKILL");
          assertEquals(status.signal, "SIGKILL");
          runDir = (await runDirOf(outB))!;
          // Step 3's record is written after checkpoint-2's rename.
          assertGreaterOrEqual(await checkCheckpoints(runDir), 2);
        });

        ok = ok && await t.step("SIGKILL in the middle of a checkpoint write", async () => {
          const before = await checkCheckpoints(runDir);
          const p = resume({ HIRA_CHECKPOINT_PAUSE_MS: "400" });
          let partial = "";
          // The pause comes after the adapter file and before the optimizer state.
          await waitFor(p, "a checkpoint half written", async () => {
            partial = (await names(runDir)).find((n) => /^\.checkpoint-\d+\.tmp-/.test(n)) ?? "";
            return partial !== "" &&
              (await names(join(runDir, partial))).includes("adapter_model.safetensors");
          });
          await p.kill("SIGKILL");
          const step = Number(/^\.checkpoint-(\d+)/.exec(partial)![1]);
          assertEquals(step, before + 1);
          // Killed halfway: the adapter was written, the optimizer state and trainer state were not.
          const inside = await names(join(runDir, partial));
          assert(!inside.includes("trainer_state.json"), `${partial}: ${inside}`);
          assert(!inside.includes("optimizer.safetensors"), `${partial}: ${inside}`);
          assert(!(await checkpointSteps(runDir)).includes(step), `checkpoint-${step} appeared`);
          assertEquals(await checkCheckpoints(runDir), before);
        });

        ok = ok && await t.step("SIGKILL right after a resume starts", async () => {
          const p = resume();
          await waitFor(p, "the resume record", async () => {
            const log = await Deno.readTextFile(join(runDir, "log.jsonl"));
            return log.split('"type":"resume"').length - 1 >= 2;
          });
          await p.kill("SIGKILL");
          // The resume removed the half-written checkpoint folder of the previous kill.
          assertEquals((await names(runDir)).filter((n) => n.startsWith(".")), []);
          await checkCheckpoints(runDir);
        });

        for (const [signal, atStep, code] of [["SIGINT", 6, 130], ["SIGTERM", 9, 143]] as const) {
          ok = ok &&
            await t.step(`${signal} saves a checkpoint and exits with ${code}`, async () => {
              const p = resume();
              await waitFor(p, `step ${atStep}`, async () => {
                return (await stepsLoggedSinceResume(runDir)).some((s) => s >= atStep);
              });
              const status = await p.kill(signal);
              assertEquals(status.code, code, await p.stderr);
              const steps = await stepsLoggedSinceResume(runDir);
              const last = steps.at(-1)!;
              assert(last < STEPS, `stopped at ${last}, before the end`);
              assertEquals(await checkCheckpoints(runDir), last);
              const log = parseRunLog(await Deno.readTextFile(join(runDir, "log.jsonl")));
              assertEquals(log.end?.interrupted, true);
              // The report is written on stop, too.
              assert((await names(runDir)).includes("report.md"));
            });
        }

        ok = ok &&
          await t.step("the resumed run ends byte-identical to the uninterrupted one", async () => {
            const p = resume();
            const status = await p.exit();
            assertEquals(status.code, 0, await p.stderr);
            const refStatus = await reference.exit();
            assertEquals(refStatus.code, 0, await reference.stderr);
            const refDir = (await runDirOf(outA))!;
            const expected = await finalBytes(refDir);
            const actual = await finalBytes(runDir);
            for (const [file, bytes] of Object.entries(expected)) {
              assertEquals(actual[file], bytes, `${file} differs from the uninterrupted run's`);
            }
            // The log holds every step once (redone steps replace the killed run's) and the resumes.
            const log = parseRunLog(await Deno.readTextFile(join(runDir, "log.jsonl")));
            assertEquals(
              log.train.map((p) => p.step),
              Array.from({ length: STEPS }, (_, i) => i + 1),
            );
            assertEquals(log.resumes.length, 5);
            const refLog = parseRunLog(await Deno.readTextFile(join(refDir, "log.jsonl")));
            assertEquals(log.train.map((p) => p.loss), refLog.train.map((p) => p.loss));
            assertEquals(log.eval, refLog.eval);
            const md = await Deno.readTextFile(join(runDir, "report.md"));
            assert(md.includes("| status | complete |"), md);
            assertEquals((await names(runDir)).filter((n) => n.startsWith(".")), []);
            // Resumes kept the run's saved flags (--no-eval_accuracy), not the command line's.
            assert(!(await names(runDir)).includes("accuracy_after"));
          });
      } finally {
        await reference.kill("SIGKILL"); // a no-op unless a step failed early
      }
    })
  );
});

Deno.test("two runs started together get two folders; a resume of a live run is refused", async () => {
  await withTinyModel((modelDir) =>
    withTempDir("hira-lock-", async (tmp) => {
      // The same flags in the same second: the reference's name alone would be one folder.
      const out = join(tmp, "together");
      const flags = [...trainFlags(modelDir, out), "--max_steps=2", "--eval_strategy=no"];
      const a = new TrainProcess(flags), b = new TrainProcess(flags);
      const [sa, sb] = [await a.exit(), await b.exit()];
      assertEquals(sa.code, 0, await a.stderr);
      assertEquals(sb.code, 0, await b.stderr);
      const dirs = (await names(out)).filter((n) => !n.startsWith("."));
      assertEquals(dirs.length, 2, `${dirs}`);
      for (const d of dirs) {
        const inside = await names(join(out, d));
        assert(inside.includes("adapter") && inside.includes("args.json"), `${d}: ${inside}`);
        assert(!inside.includes("run.lock"), `${d}: the lock outlived its run`);
        const log = await Deno.readTextFile(join(out, d, "log.jsonl"));
        assertEquals(log.split('"type":"start"').length - 1, 1, `${d}: one run per folder`);
        assert(log.includes(JSON.stringify(join(out, d))), `${d}: its own run_dir`);
      }

      // A live run, paused inside its second checkpoint write (so there is one to resume from).
      const out2 = join(tmp, "live");
      const live = new TrainProcess(
        [...trainFlags(modelDir, out2), "--max_steps=2"],
        { HIRA_CHECKPOINT_PAUSE_MS: "2500" },
      );
      let runDir = "";
      let partial = "";
      await waitFor(live, "a checkpoint being written", async () => {
        runDir = (await runDirOf(out2)) ?? "";
        if (!runDir) return false;
        partial = (await names(runDir)).find((n) => /^\.checkpoint-2\.tmp-/.test(n)) ?? "";
        return partial !== "";
      });
      const refused = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", join(ROOT, "train.ts"), `--resume=${runDir}`],
        cwd: ROOT,
        env: { DENO_WEBGPU_BACKEND: "vulkan", XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
        stdout: "null",
        stderr: "piped",
      }).output();
      const msg = new TextDecoder().decode(refused.stderr).trim();
      assertEquals(refused.code, 2, msg);
      assertEquals(msg.split("\n").length, 1, msg);
      assert(/is in use by a running training process \(pid \d+\)/.test(msg), msg);
      // The refused resume touched nothing: the live run's half-written checkpoint is still there.
      assert((await names(runDir)).includes(partial), "the live checkpoint was removed");

      // Killed, the run leaves a stale lock; the next resume takes it over and finishes.
      await live.kill("SIGKILL");
      assert((await names(runDir)).includes("run.lock"));
      const again = new TrainProcess([`--resume=${runDir}`]);
      assertEquals((await again.exit()).code, 0, await again.stderr);
      assert(!(await names(runDir)).includes("run.lock"));
      assert((await names(runDir)).includes("adapter"));
    })
  );
});

/** The run's log, parsed, once it exists. */
async function runLog(runDir: string) {
  return parseRunLog(await Deno.readTextFile(join(runDir, "log.jsonl")));
}

/** Waits until the run `p` trains into `out` has logged 2 steps; returns its run folder. */
async function twoStepsLogged(p: TrainProcess, out: string): Promise<string> {
  let runDir = "";
  await waitFor(p, "2 logged steps", async () => {
    runDir = (await runDirOf(out)) ?? "";
    return runDir !== "" && (await stepsLoggedSinceResume(runDir)).length >= 2;
  });
  return runDir;
}

Deno.test("signals in every phase: the accuracy pass, SIGHUP, and through the launcher", async (t) => {
  await withTinyModel((modelDir) =>
    withTempDir("hira-signals-", async (tmp) => {
      const flags = (out: string) => [...trainFlags(modelDir, out), "--max_steps=6"];
      await t.step(
        "SIGTERM during the accuracy pass before training: end record, 143",
        async () => {
          const out = join(tmp, "accuracy");
          const p = new TrainProcess([
            ...flags(out).filter((f) => f !== "--no-eval_accuracy"),
            "--eval_accuracy",
            "--beam_size=4",
          ]);
          let runDir = "";
          await waitFor(p, "the accuracy pass", async () => {
            runDir = (await runDirOf(out)) ?? "";
            return runDir !== "" && (await names(runDir)).includes("accuracy_before");
          });
          const status = await p.kill("SIGTERM");
          assertEquals(status.code, 143, await p.stderr);
          const log = await runLog(runDir);
          assertEquals(log.end?.interrupted, true);
          assertEquals(log.train.length, 0, "stopped before the first step");
          assert(!(await names(runDir)).includes("run.lock"));
          assert(!(await names(runDir)).includes("adapter"), "no final product of a stopped run");
        },
      );

      await t.step("SIGHUP during training saves a checkpoint and exits with 129", async () => {
        const out = join(tmp, "hup");
        const p = new TrainProcess(flags(out));
        const runDir = await twoStepsLogged(p, out);
        const status = await p.kill("SIGHUP");
        assertEquals(status.code, 129, await p.stderr);
        const last = (await stepsLoggedSinceResume(runDir)).at(-1)!;
        assertEquals(await checkCheckpoints(runDir), last);
        assertEquals((await runLog(runDir)).end?.interrupted, true);
      });

      await t.step(
        "the launcher forwards SIGHUP to its child and exits with its status",
        async () => {
          const out = join(tmp, "launcher-hup");
          const p = new TrainProcess(flags(out), {}, true);
          const runDir = await twoStepsLogged(p, out);
          const status = await p.kill("SIGHUP");
          assertEquals(status.code, 129, await p.stderr);
          assertEquals((await runLog(runDir)).end?.interrupted, true);
          await checkCheckpoints(runDir);
        },
      );

      await t.step(
        "a child whose launcher was SIGKILLed stops itself with its state saved",
        async () => {
          const out = join(tmp, "launcher-kill");
          const p = new TrainProcess([...flags(out), "--max_steps=200"], {}, true);
          const runDir = await twoStepsLogged(p, out);
          await p.kill("SIGKILL");
          // The orphaned child notices within a second, finishes its step and saves it.
          const t0 = Date.now();
          while ((await names(runDir)).includes("run.lock")) {
            assert(Date.now() - t0 < 60_000, "the child outlived its launcher");
            await new Promise((r) => setTimeout(r, 100));
          }
          const log = await runLog(runDir);
          assertEquals(log.end?.interrupted, true);
          const last = (await stepsLoggedSinceResume(runDir)).at(-1)!;
          assert(last < 200, `ran to ${last}`);
          assertEquals(await checkCheckpoints(runDir), last);
        },
      );
    })
  );
});
