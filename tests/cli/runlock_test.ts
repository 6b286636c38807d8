/**
 * Run folders (lib/io/runlock_deno.ts) without a GPU: unique names, exclusive creation that never
 * follows a symlink planted at the predictable name, a lock refused while held and taken over
 * once its holder released it.
 * @module
 */
import { assert, assertEquals, assertNotEquals, assertRejects } from "@std/assert";
import { join } from "@std/path";
import { createRunDir, LOCK_FILE, lockRunDir } from "../../lib/io/runlock_deno.ts";
import { HiraError, isHiraError } from "../../lib/engine/errors.ts";
import { parseTrainArgs } from "../../lib/cli/flags.ts";
import { runTraining } from "../../lib/cli/train.ts";
import { snapshot, trainFlags, withFixture } from "../_bad_input_fixture.ts";
import { withTempDir } from "../_util.ts";

Deno.test("run folders: unique, exclusive, never through a planted symlink", async () => {
  await withTempDir("hira-runlock-", async (tmp) => {
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
  });
});

Deno.test("run folders: a held lock refuses a second holder; a released one is taken", async () => {
  await withTempDir("hira-runlock-", async (tmp) => {
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
  });
});

Deno.test("an output folder the process may not write is refused before the model loads", async () => {
  await withFixture("hira-nowrite-", async (f) => {
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
        new URL("../../train.ts", import.meta.url).pathname,
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
  });
});

/** A 1 MiB tmpfs to fill up, or null where this process may not mount one (not root). */
async function smallDisk(): Promise<string | null> {
  const dir = await Deno.makeTempDir({ prefix: "hira-enospc-" });
  const r = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir],
  })
    .output().catch(() => null);
  if (!r?.success) {
    await Deno.remove(dir);
    return null;
  }
  return dir;
}

Deno.test("a full disk mid-run: one line naming the file, an error record, no leftovers", async () => {
  const disk = await smallDisk();
  if (disk === null) {
    console.log("skipped: mounting a small tmpfs needs root (the ENOSPC case is not exercised)");
    return;
  }
  await withFixture("hira-enospc-", async (f) => {
    try {
      const out = join(disk, "runs");
      const args = parseTrainArgs(
        trainFlags(f, [`--output_folder=${out}`, "--eval_strategy=steps", "--eval_steps=1"]),
      );
      const reserve = join(disk, "reserve");
      let filled = false;
      const e = await runTraining(args, {
        quiet: true,
        noReport: true,
        afterStep: async () => {
          if (filled) return;
          filled = true;
          // Fill the disk, then free two pages: the log's next lines fit, the checkpoint does not.
          await Deno.writeFile(reserve, new Uint8Array(8192));
          const filler = await Deno.open(join(disk, "filler"), { write: true, create: true });
          try {
            for (;;) await filler.write(new Uint8Array(4096));
          } catch {
            /* full */
          } finally {
            filler.close();
          }
          await Deno.remove(reserve);
        },
      }).then(() => null, (e) => e);
      assert(isHiraError(e), `not a HiraError: ${e?.stack ?? e}`);
      assert(!e.message.includes("\n"), e.message);
      assert(/no space left on the device/.test(e.message), e.message);
      assert(e.message.startsWith(out), `names a file in the run: ${e.message}`);
      await Deno.remove(join(disk, "filler"));
      const runDir = join(out, [...Deno.readDirSync(out)][0].name);
      const left = [...Deno.readDirSync(runDir)].map((x) => x.name);
      assertEquals(left.filter((n) => n.includes(".tmp-")), [], `${left}`);
      assert(!left.includes("run.lock"), `${left}`);
      const log = Deno.readTextFileSync(join(runDir, "log.jsonl")).trim().split("\n");
      assertEquals(JSON.parse(log.at(-1)!).type, "error", log.at(-1));
    } finally {
      await new Deno.Command("umount", { args: [disk] }).output();
      await Deno.remove(disk, { recursive: true });
    }
  });
});

Deno.test("an output folder on a read-only file system: one line before the model loads", async () => {
  const disk = await smallDisk();
  if (disk === null) {
    console.log("skipped: mounting a small tmpfs needs root (the EROFS case is not exercised)");
    return;
  }
  await withFixture("hira-erofs-", async (f) => {
    try {
      await Deno.mkdir(join(disk, "runs"));
      const r = await new Deno.Command("mount", { args: ["-o", "remount,ro", disk] }).output();
      assert(r.success, new TextDecoder().decode(r.stderr));
      const out = join(disk, "runs");
      const args = parseTrainArgs(trainFlags(f, [`--output_folder=${out}`]));
      let loaded = false;
      const e = await runTraining(args, {
        quiet: true,
        noReport: true,
        beforeTraining: () => {
          loaded = true;
          return Promise.resolve();
        },
      }).then(() => null, (e) => e);
      assert(isHiraError(e), `not a HiraError: ${e?.stack ?? e}`);
      assert(!e.message.includes("\n"), e.message);
      assert(/read-only file system/.test(e.message), e.message);
      assert(e.message.startsWith(out), `names the folder: ${e.message}`);
      assert(!loaded, "the model was loaded before the folder was checked");
      assertEquals([...Deno.readDirSync(out)], []);
    } finally {
      await new Deno.Command("umount", { args: [disk] }).output();
      await Deno.remove(disk, { recursive: true });
    }
  });
});

Deno.test("a symlink planted at a live run's log.jsonl is not written through", async () => {
  await withFixture("hira-loglink-", async (f) => {
    const outside = join(f.root, "outside.txt");
    await Deno.writeTextFile(outside, "untouched\n");
    const args = parseTrainArgs(trainFlags(f, ["--max_steps=3"]));
    let planted = false;
    const e = await runTraining(args, {
      quiet: true,
      noReport: true,
      afterStep: async () => {
        if (planted) return;
        planted = true;
        const runDir = join(f.out, [...Deno.readDirSync(f.out)][0].name);
        await Deno.remove(join(runDir, "log.jsonl"));
        await Deno.symlink(outside, join(runDir, "log.jsonl"));
      },
    }).then(() => null, (e) => e);
    assert(isHiraError(e) && e.message.includes("never written through a link"), `${e}`);
    assertEquals(await Deno.readTextFile(outside), "untouched\n");
  });
});
