import { assert, assertEquals, assertThrows } from "@std/assert";
import { join } from "@std/path";
import { HiraError } from "../../lib/engine/errors.ts";
import { parseTrainArgs } from "../../lib/cli/flags.ts";
import { parseEvalArgs } from "../../lib/cli/flags.ts";
import { isDatasetPath } from "../../lib/train/dataset_file.ts";
import { REPO_ROOT } from "../../lib/cli/launch.ts";
import { taskArgs } from "../_tasks.ts";

const ENV = { DENO_WEBGPU_BACKEND: "vulkan", XDG_RUNTIME_DIR: "/tmp" };

async function deno(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: REPO_ROOT,
    env: ENV,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

Deno.test("flags: the file-dataset flags are checked; the embedded demo stays the default", () => {
  const a = parseTrainArgs([]);
  assertEquals([a.model, a.dataset, a.validation_split, a.revision], [
    "",
    "common_170k",
    0.05,
    "main",
  ]);
  assert(!isDatasetPath(a.dataset));
  assertEquals(a.lr, 2e-2); // the demo preset still applies without --model
  const b = parseTrainArgs(["--dataset=mine.jsonl", "--dataset_format=chat"]);
  assertEquals([b.dataset, b.dataset_format], ["mine.jsonl", "chat"]);
  assertThrows(
    () => parseTrainArgs(["--dataset_format=xml"]),
    HiraError,
    "--dataset_format: 'xml' is not one of alpaca, chat, text, prompt_completion",
  );
  assertThrows(
    () => parseTrainArgs(["--validation_split=1"]),
    HiraError,
    "--validation_split: must be in [0, 1), got 1",
  );
  const e = parseEvalArgs(["--dataset=d/mine.jsonl", "--decoding=greedy"]);
  assertEquals([e.command, e.dataset], ["file", "d/mine.jsonl"]);
  const p = parseEvalArgs(["perplexity", "--dataset=mine.jsonl"]);
  assertEquals([p.command, p.dataset], ["perplexity", "mine.jsonl"]);
  assertEquals(parseEvalArgs(["mine.jsonl"]).dataset, "mine.jsonl");
  assertEquals(parseEvalArgs(["boolq"]).dataset, null);
  assertThrows(
    () => parseEvalArgs(["boolq", "--dataset=mine.jsonl"]),
    HiraError,
    "--dataset: a file dataset goes with perplexity or no command, not 'boolq'",
  );
});

Deno.test({
  name: "train.ts on a tiny JSONL with the embedded model: the format line, then eval on it",
  sanitizeOps: false,
  fn: async () => {
    const tmp = await Deno.makeTempDir({ prefix: "hira_own_" });
    try {
      const data = join(tmp, "mine.jsonl");
      const recs = Array.from({ length: 24 }, (_, i) => ({
        instruction: `What is ${i} plus ${i}?`,
        output: String(2 * i),
      }));
      await Deno.writeTextFile(data, recs.map((r) => JSON.stringify(r)).join("\n") + "\n");
      const out = join(tmp, "out");
      const train = await deno([
        "run",
        "-A",
        "train.ts",
        `--dataset=${data}`,
        "--max_steps=3",
        "--batch=4",
        `--output_folder=${out}`,
        "--no-eval_accuracy",
      ]);
      assertEquals(train.code, 0, train.out + train.err);
      const lines = train.out.split("\n");
      assert(
        lines.includes(
          `dataset ${data}: alpaca format (instruction, optional input, output), 24 records`,
        ),
        train.out,
      );
      assert(
        lines.includes(
          "validation: 1 examples held out of the train file (--validation_split=0.05, --seed=42)",
        ),
        train.out,
      );
      assert(train.out.includes("data: 23 training examples, 1 validation; 3 steps of 4×1"));
      const [runName] = [...Deno.readDirSync(out)].map((e) => e.name);
      assert(runName.startsWith("model-mine-hira-"), runName);
      const runDir = join(out, runName);
      const start = JSON.parse((await Deno.readTextFile(join(runDir, "log.jsonl"))).split("\n")[0]);
      assertEquals(start.type, "start");
      assertEquals(start.data[0], lines.find((l) => l.startsWith("dataset ")));

      const ev = await deno([
        "run",
        "-A",
        "eval.ts",
        `--dataset=${data}`,
        `--ckpt=${runDir}`,
        "--limit=3",
        "--decoding=greedy",
        "--max_new_tokens=3",
      ]);
      assertEquals(ev.code, 0, ev.out + ev.err);
      const predFile = join(runDir, "eval", "predictions_mine_greedy_limit=3.jsonl");
      const preds = (await Deno.readTextFile(predFile)).trim().split("\n").map((l) =>
        JSON.parse(l)
      );
      assertEquals(preds.map((p) => p.reference), ["0", "2", "4"]);
      assertEquals(preds.map((p) => p.where), ["line 1", "line 2", "line 3"]);
      for (const p of preds) assertEquals(typeof p.exact_match, "boolean");
      const scores = JSON.parse(
        await Deno.readTextFile(join(runDir, "eval", "scores_mine_greedy_limit=3.json")),
      );
      assertEquals([scores.examples, scores.scored, scores.format], [3, 3, "alpaca"]);

      const ppl = await deno(["run", "-A", "eval.ts", "perplexity", `--dataset=${data}`]);
      assertEquals(ppl.code, 0, ppl.err);
      const r = JSON.parse(ppl.out.trim().split("\n").at(-1)!);
      assertEquals(r.examples, 24);
      assert(r.mean_nll > 0 && Number.isFinite(r.mean_nll));
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test({
  name: "train.ts: a bad record or a model without a chat template is one line, exit 2",
  sanitizeOps: false,
  fn: async () => {
    const tmp = await Deno.makeTempDir({ prefix: "hira_own_bad_" });
    try {
      const bad = join(tmp, "bad.jsonl");
      await Deno.writeTextFile(bad, '{"prompt":"a","completion":"b"}\n{"prompt":"a"}\n');
      const r = await deno(["run", "-A", "train.ts", `--dataset=${bad}`, `--output_folder=${tmp}`]);
      assertEquals(r.code, 2);
      assertEquals(
        r.err.trim(),
        `error: ${bad}: line 2: missing field 'completion' (prompt_completion records have ` +
          "prompt, completion)",
      );
      const chat = join(tmp, "chat.jsonl");
      await Deno.writeTextFile(
        chat,
        JSON.stringify({
          messages: [{ role: "user", content: "hi" }, { role: "assistant", content: "yo" }],
        }) +
          "\n",
      );
      const c = await deno([
        "run",
        "-A",
        "train.ts",
        `--dataset=${chat}`,
        `--output_folder=${tmp}`,
      ]);
      assertEquals(c.code, 2);
      assertEquals(c.err.trim().split("\n").length, 1, c.err);
      assert(c.err.includes("the model has no chat template"), c.err);
      assert(c.err.includes("--chat_template=FILE"), c.err);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

// A chat template in the tiny model's character vocabulary; it honours add_generation_prompt,
// so the assistant text is found by rendering prefixes.
const TINY_CHAT = "{% for m in messages %}{{ bos_token if loop.first }}{{ m.role }}: " +
  "{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}";

Deno.test({
  name: "deno task train: chat records with --chat_template, stopped and resumed in scope",
  sanitizeOps: false,
  fn: async () => {
    const tmp = await Deno.makeTempDir({ prefix: "hira_own_chat_" });
    try {
      const data = join(tmp, "chat");
      await Deno.mkdir(data);
      const conv = (i: number) => ({
        messages: [
          { role: "user", content: `say ${i}` },
          { role: "assistant", content: `${i}` },
        ],
      });
      const lines = (a: number, b: number) =>
        Array.from({ length: b - a }, (_, k) => JSON.stringify(conv(a + k))).join("\n") + "\n";
      await Deno.writeTextFile(join(data, "train.jsonl"), lines(0, 16));
      await Deno.writeTextFile(join(data, "validation.jsonl"), lines(16, 20));
      await Deno.writeTextFile(join(data, "test.jsonl"), lines(20, 22));
      const tmpl = join(tmp, "chat.jinja");
      await Deno.writeTextFile(tmpl, TINY_CHAT);
      const out = join(tmp, "out");
      const r = await new Deno.Command(Deno.execPath(), {
        args: [
          ...taskArgs("train"),
          `--dataset=${data}`,
          `--chat_template=${tmpl}`,
          "--max_steps=2",
          "--batch=4",
          `--output_folder=${out}`,
          "--no-eval_accuracy",
        ],
        cwd: REPO_ROOT,
        env: { ...ENV, HIRA_STOP_AFTER: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
      assertEquals(r.code, 130, text);
      assert(
        text.includes(
          `dataset ${join(data, "train.jsonl")}: chat format (messages: [{role, content}]), 16`,
        ),
        text,
      );
      assert(text.includes(`validation ${join(data, "validation.jsonl")}: chat format`), text);
      const [runName] = [...Deno.readDirSync(out)].map((e) => e.name);
      assert(runName.startsWith("model-chat-hira-"), runName);
      const runDir = join(out, runName);
      // The resumed process gets the dataset folder and the template from args.json.
      const resumed = await deno([...taskArgs("train"), `--resume=${runDir}`]);
      assertEquals(resumed.code, 0, resumed.out + resumed.err);
      assert(resumed.out.includes(`resuming ${runDir} at step 1/2`), resumed.out);
      const ev = await deno([
        ...taskArgs("eval"),
        `--dataset=${data}`,
        `--chat_template=${tmpl}`,
        `--ckpt=${runDir}`,
        "--decoding=greedy",
        "--max_new_tokens=2",
      ]);
      assertEquals(ev.code, 0, ev.out + ev.err);
      assert(ev.out.includes(`dataset ${join(data, "test.jsonl")}: chat format`), ev.out);
      const preds = (await Deno.readTextFile(join(runDir, "eval", "predictions_chat_greedy.jsonl")))
        .trim().split("\n").map((l) => JSON.parse(l));
      assertEquals(preds.map((p) => p.prompt), [
        "<s>user: say 20\nassistant: ",
        "<s>user: say 21\nassistant: ",
      ]);
      assertEquals(preds.map((p) => p.reference), ["20", "21"]);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
