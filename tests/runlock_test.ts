/**
 * Run folders (lib/runlock_deno.ts) without a GPU: unique names, exclusive creation that never
 * follows a symlink planted at the predictable name, a lock refused while held and taken over
 * once its holder released it.
 * @module
 */
import { assert, assertEquals, assertNotEquals, assertRejects } from "@std/assert";
import { join } from "@std/path";
import { createRunDir, LOCK_FILE, lockRunDir } from "../lib/runlock_deno.ts";
import { HiraError } from "../lib/errors.ts";
import { makeFixture, snapshot, trainFlags } from "./_bad_input_fixture.ts";

Deno.test("run folders: unique, exclusive, never through a planted symlink", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "hira-runlock-" });
  try {
    const parent = join(tmp, "out");
    const a = await createRunDir(parent, "m-boolq-hira-2026");
    const b = await createRunDir(parent, "m-boolq-hira-2026");
    assertNotEquals(a.runDir, b.runDir);
    assert(a.runDir.startsWith(join(parent, "m-boolq-hira-2026-p")), a.runDir);
    const pid = JSON.parse(await Deno.readTextFile(join(a.runDir, LOCK_FILE))).pid;
    assertEquals(pid, Deno.pid);
    // A symlink planted at the next predictable name is not followed: a new name is chosen and
    // the link's target stays empty.
    const target = join(tmp, "elsewhere");
    await Deno.mkdir(target);
    await Deno.symlink(target, join(parent, `planted-p${Deno.pid}`));
    const c = await createRunDir(parent, "planted");
    assert(!c.runDir.endsWith(`planted-p${Deno.pid}`), c.runDir);
    assertEquals([...Deno.readDirSync(target)], []);
    assert((await Deno.lstat(c.runDir)).isDirectory);
    for (const l of [a, b, c]) await l.release();
    assertEquals([...Deno.readDirSync(a.runDir)], [], "release removes the lock file");
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("run folders: a held lock refuses a second holder; a released one is taken", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "hira-runlock-" });
  try {
    const a = await createRunDir(tmp, "run");
    await assertRejects(() => lockRunDir(a.runDir), HiraError, `(pid ${Deno.pid})`);
    await a.release();
    // A stale lock file (its process died without removing it) names a pid that is gone.
    await Deno.writeTextFile(join(a.runDir, LOCK_FILE), '{"pid": 999999999}\n');
    const b = await lockRunDir(a.runDir);
    assertEquals(b.recoveredFrom, 999999999);
    await b.release();
    // A lock file that is a symlink is never opened.
    await Deno.symlink("/dev/null", join(a.runDir, LOCK_FILE));
    await assertRejects(() => lockRunDir(a.runDir), HiraError, "is a symlink");
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("an output folder the process may not write is refused before the model loads", async () => {
  const f = await makeFixture("hira-nowrite-");
  try {
    // The scoped task may write only elsewhere: Deno answers NotCapable for --output_folder.
    const elsewhere = join(f.root, "elsewhere");
    await Deno.mkdir(elsewhere);
    const before = await snapshot(f.root);
    const r = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        "--allow-read",
        "--allow-env",
        `--allow-write=${elsewhere}`,
        new URL("../train.ts", import.meta.url).pathname,
        ...trainFlags(f),
      ],
      env: { DENO_WEBGPU_BACKEND: "vulkan", XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(r.stderr).trim();
    assertEquals(r.code, 2, err);
    assertEquals(
      err,
      `error: ${f.out}: --output_folder is not writable (outside this task's permitted folders)`,
    );
    // Refused before loading: nothing about the model was printed.
    assertEquals(new TextDecoder().decode(r.stdout), "");
    assertEquals(await snapshot(f.root), before);
  } finally {
    await Deno.remove(f.root, { recursive: true });
  }
});
