/**
 * The numerical guard: a NaN or Inf loss or gradient, and a lost GPU device, stop a run with a
 * message naming the step and the checkpoint left behind, keep that checkpoint intact, write
 * nothing after it, and (for train.ts) exit with status 3.
 */
import { assert, assertEquals, assertMatch, assertRejects } from "@std/assert";
import { join } from "@std/path";
import { parseTrainArgs } from "../../lib/cli/flags.ts";
import { runTraining } from "../../lib/cli/train.ts";
import { DeviceLostAtStepError, NonFiniteError } from "../../lib/train/trainer.ts";
import { openAdapterDir } from "../../lib/io/peft_deno.ts";
import { createDenoGpu } from "../../lib/io/gpu_deno.ts";
import type { LlamaModel } from "../../lib/model/model.ts";
import { type Fixture, trainFlags, withFixture } from "../_bad_input_fixture.ts";
import { testGpu } from "../_util.ts";

const REPO = new URL("../..", import.meta.url).pathname;
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const decoder = new TextDecoder();

async function trainCli(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "train.ts", ...args],
    cwd: REPO,
    env: { DENO_WEBGPU_BACKEND: "vulkan", XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** The one run folder under the fixture's output folder. */
async function runDirOf(f: Fixture): Promise<string> {
  const dirs = [];
  for await (const e of Deno.readDir(f.out)) if (e.isDirectory) dirs.push(e.name);
  assertEquals(dirs.length, 1, `run folders: ${dirs}`);
  return join(f.out, dirs[0]);
}

async function entries(dir: string): Promise<string[]> {
  const names = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

async function logRecords(runDir: string): Promise<Record<string, unknown>[]> {
  const text = await Deno.readTextFile(join(runDir, "log.jsonl"));
  return text.trim().split("\n").map((l) => JSON.parse(l));
}

/** The checkpoint's adapter loads and every value in it is finite. */
async function assertFiniteAdapter(ckpt: string): Promise<void> {
  const ad = await openAdapterDir(ckpt);
  try {
    for (const n of ad.weights.names) {
      const v = await ad.weights.read(n, "f32");
      assert(v.every(Number.isFinite), `${ckpt}: ${n} is not finite`);
    }
  } finally {
    ad.close();
  }
}

/** What a stopped run must have left: checkpoint-`kept` intact, nothing of later steps. */
async function assertStoppedAt(runDir: string, step: number, kept: number): Promise<void> {
  const names = await entries(runDir);
  assert(names.includes(`checkpoint-${kept}`), `no checkpoint-${kept} in ${names}`);
  assert(!names.includes(`checkpoint-${step}`), `checkpoint-${step} was written: ${names}`);
  assert(!names.includes("adapter"), `a final adapter/ was written: ${names}`);
  assert(!names.some((n) => n.includes(".tmp-")), `temporary files left: ${names}`);
  await assertFiniteAdapter(join(runDir, `checkpoint-${kept}`));
  const last = (await logRecords(runDir)).filter((r) => r.type === "error").at(-1);
  assertEquals(last?.step, step, "log.jsonl records the error at its step");
}

Deno.test("guard (CLI): an absurd --lr diverges; the run stops at the step, keeps its last checkpoint and exits 3", async () => {
  await withFixture("hira-guard-", async (f) => {
    // Step 1 trains and stops with checkpoint-1 (as Ctrl-C would); the resumed run's first
    // forward pass through A, B ~ ±1e30 overflows f32.
    const flags = trainFlags(f, ["--lr=1e30", "--max_steps=4"]);
    const first = await trainCli(flags, { HIRA_STOP_AFTER: "1" });
    assertEquals(first.code, 130, first.stderr);
    const runDir = await runDirOf(f);
    const second = await trainCli([`--resume=${runDir}`]);
    assertEquals(second.code, 3, `stdout:\n${second.stdout}\nstderr:\n${second.stderr}`);
    const lines = second.stderr.trimEnd().split("\n");
    assertEquals(lines.length, 1, second.stderr);
    assertMatch(
      lines[0],
      new RegExp(
        `^error: the (training loss|gradient norm) is not finite at step 2; the run stopped and ` +
          `the last good checkpoint is ${esc(runDir)}/checkpoint-1\\. Try a lower learning rate ` +
          `\\(--lr, now 1e\\+30\\)`,
      ),
    );
    await assertStoppedAt(runDir, 2, 1);
  });
});

Deno.test("guard (CLI): a validation loss that is not finite stops the run before any checkpoint", async () => {
  await withFixture("hira-guard-", async (f) => {
    const flags = trainFlags(f, ["--lr=1e30", "--eval_strategy=steps", "--eval_steps=1"]);
    const r = await trainCli(flags);
    assertEquals(r.code, 3, r.stderr);
    assertMatch(
      r.stderr.trim(),
      /^error: the validation loss is not finite at step 1; the run stopped and no checkpoint had been saved yet\. Try a lower learning rate \(--lr, now 1e\+30\)/,
    );
    const runDir = await runDirOf(f);
    const names = await entries(runDir);
    assert(!names.some((n) => n.startsWith("checkpoint-") || n === "adapter"), `${names}`);
  });
});

/** Overwrites the first adapter's hira_B with `value` (a fault injected between steps). */
function fillFirstHiraB(model: LlamaModel, value: number): void {
  const b = model.adapters.values().next().value!.params().find((p) => p.suffix === "hira_B")!
    .param;
  model.gpu.write(b, new Float32Array(b.size).fill(value));
}

Deno.test("guard: a NaN injected into an adapter after step 2 stops the run at step 3", async () => {
  const gpu = await testGpu();
  await withFixture("hira-guard-", async (f) => {
    const args = parseTrainArgs(
      trainFlags(f, ["--max_steps=5", "--eval_strategy=steps", "--eval_steps=1"]),
    );
    const e = await assertRejects(
      () =>
        runTraining(args, {
          gpu,
          quiet: true,
          noReport: true,
          afterStep: (r, model) => {
            if (r.step !== 2) return;
            fillFirstHiraB(model, NaN);
          },
        }),
      NonFiniteError,
    );
    assertEquals(e.step, 3);
    const runDir = await runDirOf(f);
    assertMatch(
      e.message,
      new RegExp(
        `^the training loss is not finite at step 3; the run stopped and the last good ` +
          `checkpoint is ${
            esc(runDir)
          }/checkpoint-2\\. Try a lower learning rate \\(--lr, now 0\\.001\\)`,
      ),
    );
    await assertStoppedAt(runDir, 3, 2);
  });
});

Deno.test("guard: weights that overflow after a finite step are never saved as a checkpoint", async () => {
  const gpu = await testGpu();
  await withFixture("hira-guard-", async (f) => {
    const args = parseTrainArgs(trainFlags(f, ["--max_steps=4", "--eval_strategy=no"]));
    const e = await assertRejects(
      () =>
        runTraining(args, {
          gpu,
          quiet: true,
          noReport: true,
          stopAfter: 1,
          // Step 1's loss and gradient were finite; its update is made to overflow here.
          afterStep: (r, model) => {
            if (r.step !== 1) return;
            fillFirstHiraB(model, Infinity);
          },
        }),
      NonFiniteError,
    );
    assertEquals(e.step, 1);
    assertMatch(
      e.message,
      /^the saved tensor \S+hira_B is not finite at step 1; .*no checkpoint had been saved yet/,
    );
    const names = await entries(await runDirOf(f));
    assert(!names.some((n) => n.startsWith("checkpoint-")), `a checkpoint was written: ${names}`);
    assert(!names.some((n) => n.includes(".tmp-")), `temporary files left: ${names}`);
  });
});

Deno.test("guard: a GPU device lost after step 1 is reported at step 2 with the checkpoint kept", async () => {
  // A device of its own: this test destroys it.
  const gpu = await createDenoGpu();
  await withFixture("hira-guard-", async (f) => {
    const args = parseTrainArgs(
      trainFlags(f, ["--max_steps=4", "--eval_strategy=steps", "--eval_steps=1"]),
    );
    const e = await assertRejects(
      () =>
        runTraining(args, {
          gpu,
          quiet: true,
          noReport: true,
          afterStep: (r) => {
            if (r.step === 1) gpu.device.destroy();
          },
        }),
      DeviceLostAtStepError,
    );
    assertEquals(e.name, "DeviceLostError");
    assertEquals(e.step, 2);
    const runDir = await runDirOf(f);
    assertMatch(
      e.message,
      new RegExp(
        `^the GPU device was lost \\(destroyed.*\\) at step 2; the run stopped and the last ` +
          `good checkpoint is ${esc(runDir)}/checkpoint-1\\. Resume with --resume=RUN_DIR`,
      ),
    );
    assert(!e.message.includes("\n"), "one line");
    await assertStoppedAt(runDir, 2, 1);
  });
});
