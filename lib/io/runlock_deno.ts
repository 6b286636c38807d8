/**
 * Run folders that belong to one process at a time: a fresh run's folder gets a unique name and
 * is created exclusively (never an existing folder, never through a symlink planted at that
 * name), and every run (fresh or resumed) holds an exclusive advisory lock on `run.lock` inside
 * it for its whole life. The lock file holds the owner's pid for the message; the lock itself
 * is the kernel's (flock), so it dies with its process: a killed run leaves a stale `run.lock`
 * that the next `--resume` simply takes over.
 * @module
 */
import { join } from "@std/path";
import { HiraError } from "../engine/errors.ts";

/** The lock file's name inside a run folder. */
export const LOCK_FILE = "run.lock";

/** A held run-folder lock. */
export interface RunLock {
  /** The run folder. */
  runDir: string;
  /** The pid of the process that held a stale lock taken over here, if any. */
  recoveredFrom: number | null;
  /** Unlocks and removes the lock file (idempotent). */
  release(): Promise<void>;
}

function randomSuffix(): string {
  const b = crypto.getRandomValues(new Uint8Array(3));
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

function lockAt(runDir: string, file: Deno.FsFile): RunLock {
  const path = join(runDir, LOCK_FILE);
  let held = true;
  return {
    runDir,
    recoveredFrom: null,
    async release() {
      if (!held) return;
      held = false;
      // Removed while still locked, so no other process can take a lock on a file about to go.
      await Deno.remove(path).catch(() => {});
      try {
        await file.unlock();
      } catch { /* closing releases it too */ }
      file.close();
    },
  };
}

async function writePid(file: Deno.FsFile): Promise<void> {
  await file.truncate(0);
  await file.seek(0, Deno.SeekMode.Start);
  const text = new TextEncoder().encode(`${JSON.stringify({ pid: Deno.pid, time: Date.now() })}\n`);
  let n = 0;
  while (n < text.length) n += await file.write(text.subarray(n));
}

/**
 * Creates a fresh run folder `${parent}/${name}-p<pid>` (a random suffix is added while that
 * name exists) with `mkdir` that never reuses an existing folder or follows a symlink there,
 * and locks it. `parent` is created when missing.
 */
export async function createRunDir(parent: string, name: string): Promise<RunLock> {
  await Deno.mkdir(parent, { recursive: true });
  let candidate = `${name}-p${Deno.pid}`;
  for (let tries = 0;; tries++) {
    const dir = join(parent, candidate);
    try {
      await Deno.mkdir(dir);
    } catch (e) {
      // EEXIST also for a symlink or file at that name: a new name, never the existing entry.
      if (e instanceof Deno.errors.AlreadyExists && tries < 20) {
        candidate = `${name}-p${Deno.pid}-${randomSuffix()}`;
        continue;
      }
      throw e;
    }
    // createNew is O_EXCL: it fails on anything at that name, a symlink included.
    const file = await Deno.open(join(dir, LOCK_FILE), {
      read: true,
      write: true,
      createNew: true,
    });
    if (!(await file.tryLock(true))) {
      file.close();
      throw new HiraError(dir, "was locked by another process as soon as it was created");
    }
    await writePid(file);
    return lockAt(dir, file);
  }
}

/** The pid a lock file names, if it parses. */
async function lockOwner(path: string): Promise<number | null> {
  try {
    const st = await Deno.lstat(path);
    if (!st.isFile || st.size > 4096) return null;
    const v = JSON.parse(await Deno.readTextFile(path));
    return Number.isInteger(v?.pid) ? v.pid : null;
  } catch {
    return null;
  }
}

/**
 * Locks an existing run folder for `--resume`: refused with one line when a live process holds
 * the lock (its pid named), taken over when the lock is stale (its process died). A `run.lock`
 * that is a symlink or not a regular file is refused rather than opened.
 */
export async function lockRunDir(runDir: string): Promise<RunLock> {
  const path = join(runDir, LOCK_FILE);
  for (let tries = 0;; tries++) {
    const st = await Deno.lstat(path).catch(() => null);
    if (st && !st.isFile) {
      throw new HiraError(
        path,
        st.isSymlink
          ? "is a symlink; a run's lock file is never followed"
          : "is not a regular file",
      );
    }
    const owner = st ? await lockOwner(path) : null;
    let file: Deno.FsFile;
    try {
      file = st
        ? await Deno.open(path, { read: true, write: true })
        : await Deno.open(path, { read: true, write: true, createNew: true });
    } catch (e) {
      // Removed or created by another process between the lstat and the open: look again.
      if (
        (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.AlreadyExists) && tries < 5
      ) {
        continue;
      }
      throw e;
    }
    if (!(await file.tryLock(true))) {
      file.close();
      throw new HiraError(
        runDir,
        `is in use by a running training process${
          owner !== null ? ` (pid ${owner})` : ""
        }; wait for it to end or stop it, then resume`,
      );
    }
    // The owner may have removed the file just before unlocking it: a lock on an unlinked file
    // guards nothing, so only the file still at the path counts.
    const now = await Deno.lstat(path).catch(() => null);
    if (!now || now.ino !== (await file.stat()).ino) {
      file.close();
      if (tries < 5) continue;
      throw new HiraError(path, "keeps changing while it is being locked");
    }
    await writePid(file);
    const lock = lockAt(runDir, file);
    lock.recoveredFrom = st ? owner : null;
    return lock;
  }
}
