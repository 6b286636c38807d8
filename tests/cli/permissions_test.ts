/**
 * Scoped task permissions: what each task may read and write, that a process under those flags
 * cannot write (or read) outside them, that real `deno task train|eval|rank|merge|report` runs
 * work inside them, and that names read from files never become paths that leave their folder.
 */
import {
  assert,
  assertEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { join } from "@std/path";
import { planTask, REPO_ROOT } from "../../lib/cli/launch.ts";
import {
  bestCheckpointName,
  denoRunArgs,
  minimalPaths,
  type PermissionPlan,
  safeName,
} from "../../lib/cli/permissions.ts";
import { bestCheckpointIn } from "../../lib/cli/run_folder.ts";
import { runTraining, writeModelDir } from "../../lib/cli/train.ts";
import { resolveCheckpoint } from "../../lib/cli/eval.ts";
import { parseTrainArgs } from "../../lib/cli/flags.ts";
import { parseConfig } from "../../lib/model/config.ts";
import { randomModel } from "../../lib/model/load.ts";
import { HiraError, isHiraError } from "../../lib/engine/errors.ts";
import { mkdirNoLink } from "../../lib/io/paths_deno.ts";
import { launch } from "../../scripts/launch.ts";
import { testGpu, withTempDir } from "../_util.ts";

const KERNELS = join(REPO_ROOT, "kernels");
const DATA = join(REPO_ROOT, "data_file");
const ENV = { DENO_WEBGPU_BACKEND: "vulkan", XDG_RUNTIME_DIR: "/tmp" };

/** {@linkcode withTempDir}, but `fn` is given the folder's real path. */
function withRealTempDir<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  // realPath: the plans hold resolved paths, and /tmp may be a link elsewhere.
  return withTempDir(prefix, async (dir) => fn(await Deno.realPath(dir)));
}

async function writeJson(file: string, v: unknown): Promise<void> {
  await Deno.mkdir(join(file, ".."), { recursive: true });
  await Deno.writeTextFile(file, JSON.stringify(v));
}

Deno.test("plans: each task reads its inputs and writes only its output folder", async (t) => {
  await withRealTempDir("hira-perm-", async (tmp) => {
    const run = join(tmp, "runs", "run1");
    await writeJson(join(run, "args.json"), { model: join(tmp, "m"), data_root: join(tmp, "d") });
    await Deno.writeTextFile(join(run, "log.jsonl"), "");
    await Deno.mkdir(join(run, "checkpoint-2"));
    const base = join(tmp, "base");
    await Deno.mkdir(base);
    const adapter = join(tmp, "ad");
    await writeJson(join(adapter, "adapter_config.json"), {
      peft_type: "HIRA",
      r: 2,
      target_modules: ["q_proj"],
      base_model_name_or_path: base,
    });
    const plan = (task: string, argv: string[]) => planTask(task, argv, tmp);
    await t.step("train", async () => {
      const p = await plan("train", ["--model=m", "--data_root=d", "--output_folder=out"]);
      assertEquals(p.script, join(REPO_ROOT, "train.ts"));
      assertEquals(p.read, [KERNELS, DATA, join(tmp, "d"), join(tmp, "out"), join(tmp, "m")]);
      assertEquals(p.write, [join(tmp, "out")]);
      // Defaults: data_file (relative to the working folder) and results_hira.
      const d = await plan("train", []);
      assertEquals(d.write, [join(tmp, "results_hira")]);
    });
    await t.step(
      "train --resume: the run folder, and the model and data its args.json name",
      async () => {
        for (const r of [run, join(run, "checkpoint-2")]) {
          const p = await plan("train", [`--resume=${r}`]);
          assertEquals(p.read, [KERNELS, DATA, run, join(tmp, "m"), join(tmp, "d")]);
          assertEquals(p.write, [run]);
        }
      },
    );
    await t.step("eval: outputs by command", async () => {
      const cases: [string[], string[]][] = [
        [["boolq", `--ckpt=${run}`], [run]],
        [["boolq", `--ckpt=${adapter}`], [join(adapter, "eval")]],
        [["boolq", `--ckpt=${adapter}`, "--out=o"], [join(tmp, "o")]],
        [["boolq"], [join(tmp, "results_hira")]],
        [["boolq", "--predictions=p/output_boolq_beam=4_eval.jsonl"], [join(tmp, "p")]],
        [["perplexity", "--tokens=t.json"], []],
        [["merge", `--ckpt=${adapter}`, "--out=exports/merged"], [
          join(tmp, "exports", "merged"),
          join(tmp, "exports", ".merged.partial"),
        ]],
        [["rank", `--ckpt=${adapter}`], [join(adapter, "rank")]],
      ];
      for (const [argv, write] of cases) {
        assertEquals((await plan("eval", argv)).write, write, argv.join(" "));
      }
    });
    await t.step("eval reads the adapter's base model, unless --model is given", async () => {
      const p = await plan("eval", ["boolq", `--ckpt=${adapter}`, "--tokenizer=tk"]);
      for (const r of [adapter, base, join(tmp, "tk"), join(tmp, "data_file")]) {
        assert(p.read.includes(r), `${r} in ${p.read}`);
      }
      const m = await plan("eval", ["boolq", `--ckpt=${adapter}`, "--model=mm"]);
      assert(!m.read.includes(base) && m.read.includes(join(tmp, "mm")));
    });
    await t.step("report, help and unparsable flags", async () => {
      const r = await plan("report", [run]);
      assertEquals([r.read.at(-1), r.write], [run, [run]]);
      for (const argv of [["--help"], ["--lr=abc"], ["--bogus"]]) {
        const p = await plan("train", argv);
        assertEquals([p.read, p.write], [[KERNELS, DATA], []], argv.join());
      }
      await assertRejects(() => plan("install", []), HiraError, "unknown task");
    });
  });
});

Deno.test("deno run flags: no prompt, merged paths, commas refused", () => {
  const plan: PermissionPlan = {
    script: "/r/train.ts",
    args: ["--lr=1"],
    read: ["/r/kernels", "/r/data_file", "/r/data_file/", "/r/data_file/x", "/o"],
    write: ["/o/"],
  };
  assertEquals(denoRunArgs(plan, "/r/deno.json"), [
    "run",
    "--no-prompt",
    "--config=/r/deno.json",
    "--allow-read=/r/kernels,/r/data_file,/o",
    "--allow-write=/o",
    "--allow-env",
    "/r/train.ts",
    "--lr=1",
  ]);
  assert(!denoRunArgs({ ...plan, write: [] }).some((a) => a.startsWith("--allow-write")));
  assertThrows(
    () => denoRunArgs({ ...plan, write: ["/a,b"] }),
    HiraError,
    "contains a comma",
  );
  assertEquals(minimalPaths(["/a/b", "/a", "/ab", "/"]), ["/"]);
  assertEquals(minimalPaths(["/a/b", "/a", "/ab"]), ["/a", "/ab"]);
});

/** Runs a probe script under a plan's flags; returns what each attempted access did. */
async function probe(
  plan: PermissionPlan,
  attempts: { op: "write" | "read" | "mkdir"; path: string }[],
): Promise<string[]> {
  return await withRealTempDir("hira-perm-", async (dir) => {
    const file = join(dir, "probe.ts");
    await Deno.writeTextFile(
      file,
      `const out: string[] = [];
for (const a of ${JSON.stringify(attempts)}) {
  try {
    if (a.op === "write") await Deno.writeTextFile(a.path, "x");
    else if (a.op === "mkdir") await Deno.mkdir(a.path, { recursive: true });
    else await Deno.readTextFile(a.path);
    out.push("ok");
  } catch (e) {
    out.push((e as Error).name);
  }
}
console.log(JSON.stringify(out));
`,
    );
    const args = denoRunArgs({ ...plan, script: file, args: [] });
    const r = await new Deno.Command(Deno.execPath(), { args, stderr: "piped", stdout: "piped" })
      .output();
    const text = new TextDecoder().decode(r.stdout);
    assertEquals(r.code, 0, new TextDecoder().decode(r.stderr));
    return JSON.parse(text);
  });
}

Deno.test("under a train task's flags, writes outside the output folder fail", async () => {
  await withRealTempDir("hira-perm-", async (tmp) => {
    const secret = join(tmp, "secret.txt");
    await Deno.writeTextFile(secret, "s");
    const plan = await planTask("train", [
      `--model=${join(tmp, "model")}`,
      `--output_folder=${join(tmp, "out")}`,
    ], tmp);
    const results = await probe(plan, [
      { op: "mkdir", path: join(tmp, "out", "run", "checkpoint-1") },
      { op: "write", path: join(tmp, "out", "run", "log.jsonl") },
      { op: "write", path: join(tmp, "elsewhere.txt") },
      { op: "write", path: join(tmp, "out", "..", "escaped.txt") },
      { op: "write", path: join(tmp, "model", "model.safetensors") },
      { op: "write", path: join(REPO_ROOT, "kernels", "x.wgsl") },
      { op: "mkdir", path: join(tmp, "out-sibling") },
      { op: "read", path: secret },
      { op: "read", path: join(REPO_ROOT, "deno.json") },
    ]);
    assertEquals(results, [
      "ok",
      "ok",
      "NotCapable",
      "NotCapable",
      "NotCapable",
      "NotCapable",
      "NotCapable",
      "NotCapable",
      "NotCapable",
    ]);
    for await (const e of Deno.readDir(tmp)) assert(["out", "secret.txt"].includes(e.name), e.name);
  });
});

Deno.test("names read from files never become paths", async (t) => {
  await t.step("safeName", () => {
    assertEquals(safeName("boolq", "dataset", "f"), "boolq");
    for (const bad of ["", ".", "..", "../x", "a/b", "a\\b", "x\u0000", 3, null]) {
      assertThrows(() => safeName(bad, "dataset", "args.json"), HiraError, "not a plain name");
    }
  });
  await t.step("best_model_checkpoint: only a checkpoint-N name, inside the run", () => {
    assertEquals(bestCheckpointName("results_hira/run/checkpoint-80", "s"), "checkpoint-80");
    assertEquals(bestCheckpointName("/old/place/checkpoint-3/", "s"), "checkpoint-3");
    assertEquals(bestCheckpointName(null, "s"), null);
    assertEquals(
      bestCheckpointIn("/runs/r", "/elsewhere/checkpoint-4", "s"),
      "/runs/r/checkpoint-4",
    );
    for (const bad of ["../../etc", "/etc/passwd", "checkpoint-1/../..", "..", 5]) {
      assertThrows(
        () => bestCheckpointName(bad, "trainer_state.json"),
        HiraError,
        "does not name a checkpoint-N folder",
      );
    }
  });
  await withRealTempDir("hira-perm-", async (tmp) => {
    await t.step("eval --ckpt=RUN ignores a state's path and refuses a traversal", async () => {
      const run = join(tmp, "run");
      const ck = join(run, "checkpoint-2");
      await writeJson(join(ck, "adapter_config.json"), { peft_type: "HIRA", r: 1 });
      await writeJson(join(ck, "trainer_state.json"), {
        best_model_checkpoint: "/somewhere/else/checkpoint-2",
      });
      assertEquals(await resolveCheckpoint(run), { kind: "adapter", dir: ck });
      await writeJson(join(ck, "trainer_state.json"), { best_model_checkpoint: "../../outside" });
      await assertRejects(() => resolveCheckpoint(run), HiraError, "checkpoint-N");
    });
    await t.step("train --resume never turns a dataset name into a path", async () => {
      const run = join(tmp, "evil-run");
      await Deno.mkdir(join(run, "checkpoint-1"), { recursive: true });
      const args = parseTrainArgs([`--output_folder=${tmp}`, "--no-eval_accuracy"]);
      // A plain name is only ever a key of the named sets, never joined into a path.
      await writeJson(join(run, "args.json"), { ...args, dataset: "etc", given: [] });
      // A valid trainer state, so the dataset name is what the resume trips on.
      await writeJson(join(run, "checkpoint-1", "trainer_state.json"), {
        global_step: 1,
        total_steps: 2,
        loader: { epoch: 0, position: 1, epochRngState: [1, 2, 3, 4] },
        best_model_checkpoint: null,
      });
      await assertRejects(
        () => runTraining(parseTrainArgs([`--resume=${run}`]), { quiet: true }),
        HiraError,
        "is not a training dataset",
      );
      // A value with a separator is a --dataset=PATH file (issue 18), read as that path (like
      // the saved model and data_root), not looked up under the data root.
      const evil = join(tmp, "nowhere", "..", "..", "x.jsonl");
      await writeJson(join(run, "args.json"), { ...args, dataset: evil, given: [] });
      await assertRejects(
        () => runTraining(parseTrainArgs([`--resume=${run}`]), { quiet: true }),
        HiraError,
        `${evil}: --dataset: no such file or folder`,
      );
    });
    await t.step("the launcher runs only its own tasks", async () => {
      assertEquals(await launch("../train", []), 2);
    });
  });
});

/** `deno task <task> ...` as a user runs it, in the repository. */
async function task(name: string, args: string[]): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", `--config=${join(REPO_ROOT, "deno.json")}`, name, ...args],
    cwd: REPO_ROOT,
    env: ENV,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

Deno.test("deno task train, eval, rank, merge and report work inside their scopes", async (t) => {
  await withRealTempDir("hira-perm-", async (tmp) => {
    const modelDir = join(tmp, "model");
    const cfg = parseConfig(
      JSON.parse(await Deno.readTextFile(join(DATA, "tiny/model/config.json"))),
    );
    await writeModelDir(randomModel(await testGpu(), cfg, 2), modelDir, join(DATA, "tiny"));
    const out = join(tmp, "out");
    let run = "";
    await t.step("train (an --exp_name with ../ stays inside the output folder)", async () => {
      const r = await task("train", [
        `--model=${modelDir}`,
        `--output_folder=${out}`,
        "--dataset_ratio=0.01",
        "--batch=4",
        "--max_steps=2",
        "--r_ab=2",
        "--eval_strategy=steps",
        "--eval_steps=1",
        "--no-eval_accuracy",
        "--exp_name=../../escape",
      ]);
      assertEquals(r.code, 0, r.out);
      const runs = [...Deno.readDirSync(out)].map((e) => e.name);
      assertEquals(runs.length, 1, runs.join());
      assertStringIncludes(runs[0], ".._.._escape");
      run = join(out, runs[0]);
      const inTmp = [...Deno.readDirSync(tmp)].map((e) => e.name).sort();
      assertEquals(inTmp, ["model", "out"]);
      for (const f of ["adapter", "report.md", "loss.svg", "lr.svg"]) {
        assert(Deno.statSync(join(run, f)), f);
      }
    });
    await t.step("eval on the run folder adds accuracy to its report", async () => {
      const r = await task("eval", [
        "boolq",
        `--ckpt=${run}`,
        `--model=${modelDir}`,
        "--limit=2",
        "--decoding=greedy",
      ]);
      assertEquals(r.code, 0, r.out);
      assertStringIncludes(await Deno.readTextFile(join(run, "report.md")), "| boolq |");
      assert(Deno.statSync(join(run, "accuracy.svg")).isFile);
    });
    await t.step("rank, merge and report", async () => {
      const rank = await task("rank", [`--ckpt=${run}`, `--model=${modelDir}`]);
      assertEquals(rank.code, 0, rank.out);
      assert(Deno.statSync(join(run, "rank", "rank.svg")).isFile);
      const merged = join(tmp, "exports", "merged");
      const merge = await task("merge", [
        `--ckpt=${run}`,
        `--model=${modelDir}`,
        `--out=${merged}`,
      ]);
      assertEquals(merge.code, 0, merge.out);
      assert(Deno.statSync(join(merged, "model.safetensors")).isFile);
      await Deno.remove(join(run, "report.md"));
      const rep = await task("report", [run]);
      assertEquals(rep.code, 0, rep.out);
      assert(Deno.statSync(join(run, "report.md")).isFile);
    });
    await t.step("perplexity runs with no write access at all", async () => {
      const tokens = join(tmp, "tokens.json");
      await Deno.writeTextFile(tokens, "[[5, 9, 12, 7, 3]]");
      const r = await task("eval", ["perplexity", `--model=${modelDir}`, `--tokens=${tokens}`]);
      assertEquals(r.code, 0, r.out);
      assertStringIncludes(r.out, '"perplexity"');
    });
  });
});

Deno.test("symlinks: only links that stay inside the named folder (or its HF cache entry)", async () => {
  await withRealTempDir("hira-links-", async (tmp) => {
    const secret = join(tmp, "secret.txt");
    await Deno.writeTextFile(secret, "root:x:0:0:root:/root:/bin/bash\n");
    // A model folder whose tokenizer.json is a link out of it: refused, naming the link only.
    const model = join(tmp, "model");
    await Deno.mkdir(model);
    await Deno.writeTextFile(join(model, "config.json"), "{}");
    await Deno.symlink(secret, join(model, "tokenizer.json"));
    const e = await planTask("train", [`--model=${model}`, `--output_folder=${join(tmp, "o")}`])
      .then(() => null, (e) => e);
    assert(isHiraError(e), String(e));
    assertEquals(
      e.message,
      `${join(model, "tokenizer.json")}: is a symlink that leads outside ${model}; ` +
        "only links that stay inside the folder you named are followed",
    );
    // A Hugging Face cache snapshot: its files link into the entry's blobs/, which is allowed,
    // and the scope lists the real folders too.
    const entry = join(tmp, "hub", "models--org--tiny");
    const snap = join(entry, "snapshots", "abc123");
    await Deno.mkdir(snap, { recursive: true });
    await Deno.mkdir(join(entry, "blobs"));
    for (const [f, blob] of [["config.json", "b1"], ["tokenizer.json", "b2"]]) {
      await Deno.writeTextFile(join(entry, "blobs", blob), "{}");
      await Deno.symlink(`../../blobs/${blob}`, join(snap, f));
    }
    const ok = await planTask("train", [`--model=${snap}`, `--output_folder=${join(tmp, "o")}`]);
    assert(ok.read.includes(snap), ok.read.join(","));
    // But a snapshot link out of the cache entry is refused.
    await Deno.symlink(secret, join(snap, "special_tokens_map.json"));
    const e2 = await planTask("train", [`--model=${snap}`]).then(() => null, (e) => e);
    assert(isHiraError(e2) && e2.message.includes("special_tokens_map.json"), String(e2));
    assert(!e2.message.includes("root:x"));
    // A run folder whose eval/ links elsewhere: an eval that would write there is refused.
    const run = join(tmp, "run");
    await Deno.mkdir(join(run, "checkpoint-1"), { recursive: true });
    await Deno.writeTextFile(join(run, "log.jsonl"), "");
    const outside = join(tmp, "outside");
    await Deno.mkdir(outside);
    await Deno.symlink(outside, join(run, "eval"));
    const e3 = await planTask("eval", ["boolq", `--ckpt=${run}`]).then(() => null, (e) => e);
    assert(isHiraError(e3) && e3.message.startsWith(`${join(run, "eval")}: is a symlink`), `${e3}`);
    // And in the process itself, output is never written through a link.
    const e4 = await mkdirNoLink(join(run, "eval")).then(() => null, (e) => e);
    assert(isHiraError(e4) && e4.message.includes("never written through a link"), String(e4));
    assertEquals([...Deno.readDirSync(outside)], []);
  });
});
