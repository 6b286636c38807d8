import { assert, assertEquals, assertRejects } from "@std/assert";
import { join } from "@std/path";
import { HiraError } from "../../lib/engine/errors.ts";
import { hubCacheDir, isHubRepoId, repoFolderName } from "../../lib/model/hub.ts";
import { modelReadPaths, resolveModel } from "../../lib/io/hub_deno.ts";
import { planTask, REPO_ROOT } from "../../lib/cli/launch.ts";
import { taskArgs } from "../_tasks.ts";

const TINY = join(REPO_ROOT, "data_file/tiny/model");
const ENV = { DENO_WEBGPU_BACKEND: "vulkan", XDG_RUNTIME_DIR: "/tmp" };

// huggingface_hub's own HF_HUB_CACHE for each environment (tests/fixtures/hf/make_fixtures.py).
const CACHE_FIXTURE = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/hf/hub_cache.json", import.meta.url)),
) as { cases: { env: Record<string, string>; hf_hub_cache: string }[] };

const MAIN = "a".repeat(40);
const DEV = "b".repeat(40);

/**
 * A hub cache laid out as huggingface_hub writes it: blobs/ named by hash, refs/main and
 * refs/dev holding commit hashes, and snapshots/<commit>/ whose files are relative symlinks
 * into ../../blobs/. Both snapshots hold the embedded tiny model.
 */
async function fakeCache(): Promise<{ cache: string; repoDir: string }> {
  const cache = await Deno.makeTempDir({ prefix: "hira_hub_" });
  const repoDir = join(cache, repoFolderName("org/tiny"));
  await Deno.mkdir(join(repoDir, "blobs"), { recursive: true });
  await Deno.mkdir(join(repoDir, "refs"), { recursive: true });
  await Deno.writeTextFile(join(repoDir, "refs", "main"), MAIN);
  await Deno.writeTextFile(join(repoDir, "refs", "dev"), DEV + "\n");
  let n = 0;
  for (const commit of [MAIN, DEV]) {
    const snap = join(repoDir, "snapshots", commit);
    await Deno.mkdir(snap, { recursive: true });
    for await (const e of Deno.readDir(TINY)) {
      const blob = `${(n++).toString(16).padStart(8, "0")}blob`;
      await Deno.copyFile(join(TINY, e.name), join(repoDir, "blobs", blob));
      await Deno.symlink(join("..", "..", "blobs", blob), join(snap, e.name));
    }
  }
  return { cache, repoDir };
}

Deno.test("hub: the cache folder is huggingface_hub's for every environment", () => {
  for (const c of CACHE_FIXTURE.cases) {
    assertEquals(hubCacheDir((k) => c.env[k]), c.hf_hub_cache, JSON.stringify(c.env));
  }
  assertEquals(hubCacheDir(() => undefined), null);
});

Deno.test("hub: repo ids and folder names", () => {
  for (const id of ["meta-llama/Meta-Llama-3-8B", "gpt2", "org/name.v1", "a_b/c-d"]) {
    assert(isHubRepoId(id), id);
  }
  for (const id of ["/abs/path", "./rel", "a/b/c", "org--x/y", "a/../b", "-x/y", "x/y.", ""]) {
    assert(!isHubRepoId(id), id);
  }
  assertEquals(repoFolderName("meta-llama/Meta-Llama-3-8B"), "models--meta-llama--Meta-Llama-3-8B");
});

Deno.test("hub: refs/main, a branch and a commit hash resolve to their snapshots", async () => {
  const { cache, repoDir } = await fakeCache();
  const env = (k: string) => (k === "HF_HUB_CACHE" ? cache : undefined);
  try {
    const main = await resolveModel("org/tiny", "main", env);
    assertEquals(main.dir, join(repoDir, "snapshots", MAIN));
    assertEquals(main.hub?.commit, MAIN);
    assertEquals(main.hub?.repoDir, repoDir);
    // The snapshot's files are symlinks into blobs/ and read through.
    const cfg = join(main.dir, "config.json");
    assert((await Deno.lstat(cfg)).isSymlink);
    assertEquals(await Deno.readTextFile(cfg), await Deno.readTextFile(join(TINY, "config.json")));
    assertEquals((await resolveModel("org/tiny", "dev", env)).dir, join(repoDir, "snapshots", DEV));
    assertEquals((await resolveModel("org/tiny", DEV, env)).dir, join(repoDir, "snapshots", DEV));
    // A local folder wins over the cache, as in transformers.
    assertEquals((await resolveModel(TINY, "main", env)).hub, null);
  } finally {
    await Deno.remove(cache, { recursive: true });
  }
});

Deno.test("hub: a model that is not cached is one line naming where it looked", async () => {
  const { cache } = await fakeCache();
  const env = (k: string) => (k === "HF_HUB_CACHE" ? cache : undefined);
  try {
    const e = await assertRejects(() => resolveModel("org/absent", "main", env), HiraError);
    assertEquals(
      e.message,
      `org/absent: not a local folder and not in the Hugging Face cache (looked in ${
        join(cache, "models--org--absent")
      }); nothing is downloaded: run \`huggingface-cli download org/absent\` first (or set ` +
        "HF_HUB_CACHE / HF_HOME to where it is)",
    );
    const r = await assertRejects(() => resolveModel("org/tiny", "v2", env), HiraError);
    assert(r.message.includes(`models--org--tiny at v2`), r.message);
    assert(r.message.includes("huggingface-cli download org/tiny --revision v2"), r.message);
    // A commit hash without a snapshot, and a ref that would climb out of refs/.
    await assertRejects(() => resolveModel("org/tiny", "c".repeat(40), env), HiraError);
    await assertRejects(() => resolveModel("org/tiny", "../../x", env), HiraError);
  } finally {
    await Deno.remove(cache, { recursive: true });
  }
});

Deno.test("hub: the launcher grants the snapshot and the repo's cache folder", async () => {
  const { cache, repoDir } = await fakeCache();
  const saved = Deno.env.get("HF_HUB_CACHE");
  Deno.env.set("HF_HUB_CACHE", cache);
  try {
    const abs = (p: string) => join("/nowhere", p);
    assertEquals(await modelReadPaths("org/tiny", "main", abs), [
      join(repoDir, "snapshots", MAIN),
      repoDir,
    ]);
    assertEquals(await modelReadPaths("org/absent", "main", abs), ["/nowhere/org/absent"]);
    const plan = await planTask("train", ["--model=org/tiny", "--dataset=d/mine.jsonl"], "/w");
    assert(plan.read.includes(repoDir) && plan.read.includes(join(repoDir, "snapshots", MAIN)));
    assert(plan.read.includes("/w/d/mine.jsonl"));
  } finally {
    if (saved === undefined) Deno.env.delete("HF_HUB_CACHE");
    else Deno.env.set("HF_HUB_CACHE", saved);
    await Deno.remove(cache, { recursive: true });
  }
});

async function run(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: REPO_ROOT,
    env: { ...ENV, ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

Deno.test({
  name: "hub: deno task train/eval with --model=org/name run in their scopes from the cache",
  sanitizeOps: false,
  fn: async () => {
    const { cache, repoDir } = await fakeCache();
    const tmp = await Deno.makeTempDir({ prefix: "hira_hub_run_" });
    try {
      const data = join(tmp, "mine.jsonl");
      await Deno.writeTextFile(
        data,
        Array.from(
          { length: 12 },
          (_, i) => JSON.stringify({ prompt: `Say ${i}:`, completion: ` ${i}` }),
        ).join("\n") + "\n",
      );
      const out = join(tmp, "out");
      const train = await run([
        ...taskArgs("train"),
        "--model=org/tiny",
        `--dataset=${data}`,
        "--max_steps=1",
        "--batch=4",
        `--output_folder=${out}`,
        "--no-eval_accuracy",
      ], { HF_HUB_CACHE: cache });
      assertEquals(train.code, 0, train.out + train.err);
      assert(
        train.out.includes(`dataset ${data}: prompt_completion format (prompt, completion), 12`),
        train.out,
      );
      assert(train.out.includes(`model: ${join(repoDir, "snapshots", MAIN)}`), train.out);
      const [runDir] = [...Deno.readDirSync(out)].map((e) => join(out, e.name));
      assert(runDir.includes("/tiny-mine-hira-"), runDir);
      const ac = JSON.parse(await Deno.readTextFile(join(runDir, "adapter/adapter_config.json")));
      assertEquals(ac.base_model_name_or_path, "org/tiny");
      // eval finds the base model from the adapter config's hub id.
      const ppl = await run([
        ...taskArgs("eval"),
        "perplexity",
        `--dataset=${data}`,
        `--ckpt=${runDir}`,
      ], { HF_HUB_CACHE: cache });
      assertEquals(ppl.code, 0, ppl.out + ppl.err);
      const line = JSON.parse(ppl.out.trim().split("\n").at(-1)!);
      assertEquals(line.format, "prompt_completion");
      assert(Number.isFinite(line.mean_nll) && line.tokens > 0, ppl.out);
      // Not cached: one line, exit 2.
      const miss = await run([
        ...taskArgs("train"),
        "--model=org/absent",
        `--dataset=${data}`,
        `--output_folder=${out}`,
      ], { HF_HUB_CACHE: cache });
      assertEquals(miss.code, 2);
      assertEquals(miss.err.trim().split("\n").length, 1, miss.err);
      assert(miss.err.includes("huggingface-cli download org/absent"), miss.err);
    } finally {
      await Deno.remove(cache, { recursive: true });
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
