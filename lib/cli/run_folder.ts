/**
 * A run folder's layout, in one place: its checkpoint-N folders (listed, rotated with HF's rule,
 * the best one never removed), the best checkpoint a trainer state names, what a killed run
 * leaves behind, and where `--resume` continues. The train and eval programs both read it.
 * @module
 */
import { basename, join } from "@std/path";
import { HiraError } from "../engine/errors.ts";
import { bestCheckpointName } from "./permissions.ts";

/**
 * Removes what a killed run leaves behind: half-written checkpoint folders
 * (`.checkpoint-N.tmp-*`), half-deleted ones (`.checkpoint-N.del-*`) and half-copied final
 * folders (`adapter.tmp-*`, `model.tmp-*`) and files (`report.md.tmp-<hex>`). None of them is
 * ever read.
 */
export async function removeLeftovers(runDir: string): Promise<void> {
  for await (const e of Deno.readDir(runDir)) {
    if (/^(\.checkpoint-\d+\.(tmp|del)-|(adapter|model)\.tmp-)|\.tmp-[0-9a-f]{16}$/.test(e.name)) {
      await Deno.remove(join(runDir, e.name), { recursive: true }).catch(() => {});
    }
  }
}

/** The best checkpoint a saved trainer state names, as a folder of `runDir` (never elsewhere). */
export function bestCheckpointIn(runDir: string, saved: unknown, file: string): string | null {
  const name = bestCheckpointName(saved, file);
  return name === null ? null : join(runDir, name);
}

/** checkpoint-N folders of a run, sorted by step. */
export async function listCheckpoints(runDir: string): Promise<{ step: number; dir: string }[]> {
  const out: { step: number; dir: string }[] = [];
  for await (const e of Deno.readDir(runDir)) {
    const m = /^checkpoint-(\d+)$/.exec(e.name);
    if (e.isDirectory && m) out.push({ step: Number(m[1]), dir: join(runDir, e.name) });
  }
  return out.sort((a, b) => a.step - b.step);
}

/** Deletes old checkpoints beyond the limit, never the best one (HF's rotation). */
export async function rotate(runDir: string, limit: number, best: string | null): Promise<void> {
  const cks = await listCheckpoints(runDir);
  const removable = cks.filter((c) => c.dir !== best);
  const keep = Math.max(1, limit);
  for (const c of removable.slice(0, Math.max(0, removable.length - keep))) {
    // Renamed first, so a kill mid-delete leaves no half-deleted checkpoint-N behind.
    const doomed = join(runDir, `.${basename(c.dir)}.del-${crypto.randomUUID().slice(0, 8)}`);
    await Deno.rename(c.dir, doomed);
    await Deno.remove(doomed, { recursive: true });
  }
}

/** The run folder and the newest checkpoint of a `--resume` path. */
export async function resolveResume(path: string): Promise<{ runDir: string; ckpt: string }> {
  const isDir = await Deno.stat(path).then((s) => s.isDirectory, () => false);
  if (!isDir) throw new HiraError(path, "--resume needs a run folder or a checkpoint folder");
  if (/^checkpoint-\d+$/.test(basename(path))) return { runDir: join(path, ".."), ckpt: path };
  const cks = await listCheckpoints(path);
  if (cks.length === 0) throw new HiraError(path, "no checkpoint-N folder to resume from");
  return { runDir: path, ckpt: cks[cks.length - 1].dir };
}
