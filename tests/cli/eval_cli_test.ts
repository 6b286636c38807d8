/**
 * eval.ts as a user runs it (a subprocess): bad inputs exit 2 with one line
 * `error: <file>: ...` and no stack trace; --predictions re-scores saved files; perplexity prints
 * its JSON; merge writes a folder and refuses to overwrite it.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { assertClose, withTempDir } from "../_util.ts";
import { openSafetensors } from "../../lib/io/safetensors_deno.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const FIX = new URL("../fixtures/golden/", import.meta.url).pathname;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function evalTs(...args: string[]): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", join(ROOT, "deno.json"), join(ROOT, "eval.ts"), ...args],
    cwd: ROOT,
    env: { DENO_WEBGPU_BACKEND: "vulkan", XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Exit code 2 and exactly one stderr line starting with `error: <prefix>`. */
function assertOneLineError(r: Run, prefix: string): void {
  assertEquals(r.code, 2, `exit code (stderr: ${r.stderr})`);
  const lines = r.stderr.trim().split("\n");
  assertEquals(lines.length, 1, `one line expected, got:\n${r.stderr}`);
  assert(lines[0].startsWith(`error: ${prefix}`), `got: ${lines[0]}`);
  assert(!/\bat .*:\d+:\d+/.test(r.stderr), "no stack trace");
}

Deno.test("bad inputs exit 2 with one line naming the file", async () => {
  await withTempDir("hira-cli-", async (tmp) => {
    const missing = await evalTs("boolq", `--data_root=${tmp}`);
    assertOneLineError(
      missing,
      `${tmp}/llm_adapt/boolq/test.json: missing: put the boolq test set`,
    );
    assertOneLineError(await evalTs("boolqq"), "boolqq: unknown dataset or command");
    assertOneLineError(await evalTs("boolq", "--beams=2"), "--beams: unknown flag");
    // An adapter for another model: the 48-wide fixture adapter on the 32-wide Qwen-style model.
    const misfit = await evalTs(
      "merge",
      `--model=${FIX}model-qwen-style`,
      `--ckpt=${FIX}adapter-hira`,
      `--out=${tmp}/m`,
    );
    assertOneLineError(misfit, `${FIX}adapter-hira/adapter_model.safetensors: adapter tensor`);
    assertStringIncludes(misfit.stderr, "the model needs [4,32]");
    assertOneLineError(
      await evalTs("boolq", `--ckpt=${tmp}/nope`),
      `${tmp}/nope: not found`,
    );
    assertOneLineError(
      await evalTs("perplexity", `--model=${FIX}model`, `--tokens=${FIX}README.md`),
      `${FIX}README.md: not valid JSON`,
    );
  });
});

Deno.test("--predictions re-scores saved files into the hand-computed table", async () => {
  await withTempDir("hira-cli-", async (tmp) => {
    const boolq = join(tmp, "output_-1_boolq_beam=4_eval.jsonl");
    await Deno.writeTextFile(
      boolq,
      [
        { dataset: "boolq" },
        { context: "q1", pred: "the correct answer is true", gt: "the correct answer is true" },
        { context: "q2", pred: "the correct answer is false", gt: "the correct answer is true" },
        { context: "q3", pred: "untrue", gt: "the correct answer is true" },
        { context: "q4", pred: "I do not know", gt: "the correct answer is false" },
      ].map((r) => JSON.stringify(r)).join("\n") + "\n",
    );
    const piqa = join(tmp, "output_piqa_greedy_eval.jsonl");
    await Deno.writeTextFile(
      piqa,
      [
        { pred: "solution2 is right", gold: "the correct answer is solution2" },
        { pred: "Solution1", gold: "the correct answer is solution1" },
        { pred: "solution1 solution2", gold: "the correct answer is solution1" },
      ].map((r) => JSON.stringify(r)).join("\n") + "\n",
    );
    const r = await evalTs("all", `--predictions=${boolq}`, `--predictions=${piqa}`);
    assertEquals(r.code, 0, r.stderr);
    assertStringIncludes(
      r.stdout,
      [
        "| dataset | examples | correct | accuracy (%) |",
        "|---|---:|---:|---:|",
        "| boolq | 4 | 2 | 50.00 |",
        "| piqa | 3 | 2 | 66.67 |",
        "| **average** (unweighted, 2 sets) | | | 58.33 |",
      ].join("\n"),
    );
    const summary = JSON.parse(await Deno.readTextFile(join(tmp, "summary_rescored.json")));
    assertClose([summary.average], [(50 + 200 / 3) / 2], { rtol: 1e-12 });
    // A file whose name says no dataset needs the dataset as the command.
    const other = join(tmp, "preds.jsonl");
    await Deno.copyFile(piqa, other);
    assertOneLineError(await evalTs("all", `--predictions=${other}`), `${other}: cannot tell`);
    const one = await evalTs("piqa", `--predictions=${other}`, `--out=${tmp}/o`);
    assertEquals(one.code, 0, one.stderr);
    assertStringIncludes(one.stdout, "| piqa | 3 | 2 | 66.67 |");
  });
});

Deno.test("perplexity prints JSON; merge writes once and refuses to overwrite; rank", async () => {
  const p = await evalTs("perplexity", `--model=${FIX}model`, `--tokens=${FIX}tokens.json`);
  assertEquals(p.code, 0, p.stderr);
  const json = JSON.parse(p.stdout.trim().split("\n").at(-1)!);
  assertEquals(Object.keys(json), ["mean_nll", "perplexity", "tokens", "per_sequence"]);
  assertEquals(json.tokens, 41);
  // transformers' next-token NLL of every position of the three sequences, averaged.
  const golden = await openSafetensors(`${FIX}golden/base.logits.safetensors`);
  const nll: number[] = [];
  for (let i = 0; i < 3; i++) nll.push(...(await golden.read(`nll.${i}`, "f32")));
  golden.close();
  assertEquals(nll.length, 41);
  assertClose([json.mean_nll], [nll.reduce((a, b) => a + b, 0) / nll.length], { rtol: 1e-5 });
  await withTempDir("hira-cli-", async (tmp) => {
    const args = [
      "merge",
      `--model=${FIX}model`,
      `--ckpt=${FIX}adapter-lora`,
      `--out=${tmp}/merged`,
      "--dtype=f32",
    ];
    const m = await evalTs(...args);
    assertEquals(m.code, 0, m.stderr);
    assertMatch(m.stdout, /merged 21 LORA modules .* \(f32\)/);
    assertOneLineError(await evalTs(...args), `${tmp}/merged: exists and is not empty`);
    assertEquals((await evalTs(...args, "--force")).code, 0);
    const rank = await evalTs(
      "rank",
      `--model=${FIX}model`,
      `--ckpt=${FIX}adapter-hira`,
      `--ckpt2=${FIX}adapter-lora`,
      `--out=${tmp}/rank`,
      "--layers=1",
    );
    assertEquals(rank.code, 0, rank.stderr);
    assertStringIncludes(rank.stdout, "| 1 | v_proj | 16×48 | 4 | 16 |");
    for (const f of ["rank.md", "rank.json", "rank.svg"]) await Deno.stat(join(tmp, "rank", f));
    const help = await evalTs("--help");
    assertEquals(help.code, 0);
    assertStringIncludes(help.stdout, "deno task merge");
  });
});
