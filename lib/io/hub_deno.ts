/**
 * Resolves `--model` (and an adapter's base_model_name_or_path) on disk: a local folder as it
 * is, else a hub id `org/name` in the local Hugging Face cache (lib/model/hub.ts), or a one-line
 * error saying where it looked and how to download it. Nothing is fetched.
 * @module
 */
import { join } from "@std/path";
import { HiraError } from "../engine/errors.ts";
import {
  type EnvGet,
  hubCacheDir,
  isCommitHash,
  isHubRepoId,
  notCachedReason,
  repoFolderName,
} from "../model/hub.ts";

/** A model resolved to a folder. */
export interface ResolvedModel {
  /** The folder holding config.json (for a hub id: its snapshot folder). */
  dir: string;
  /** For a hub id: the id, and the repo's cache folder (holding blobs/, refs/, snapshots/). */
  hub: { repoId: string; revision: string; commit: string; repoDir: string } | null;
}

/** Environment variables, where readable (a permission-scoped process may not read them all). */
export const denoEnv: EnvGet = (name) => {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
};

async function isDir(p: string): Promise<boolean> {
  return await Deno.stat(p).then((s) => s.isDirectory, () => false);
}

/**
 * A hub id's snapshot folder in the cache, as huggingface_hub's try_to_load_from_cache finds
 * it: `refs/<revision>` (a branch or tag, e.g. main) holds the commit hash; a revision that is
 * itself a commit hash names its snapshot directly. Null when not cached.
 */
export async function findCachedSnapshot(
  cacheDir: string,
  repoId: string,
  revision: string,
): Promise<{ dir: string; commit: string; repoDir: string } | null> {
  const repoDir = join(cacheDir, repoFolderName(repoId));
  if (!(await isDir(repoDir))) return null;
  let commit = revision;
  // A ref name may hold '/' (refs/pr/1); it never leaves refs/ since '..' is refused.
  if (!revision.split("/").includes("..")) {
    const ref = await Deno.readTextFile(join(repoDir, "refs", revision)).catch(() => null);
    if (ref !== null) commit = ref.trim();
    else if (!isCommitHash(revision)) return null;
  }
  if (!/^[\w.-]+$/.test(commit) || commit === "." || commit === "..") return null;
  const dir = join(repoDir, "snapshots", commit);
  return (await isDir(dir)) ? { dir, commit, repoDir } : null;
}

/**
 * `--model`'s folder: an existing local folder wins (as in transformers); else a hub id found
 * in the cache at `revision`. A value that is neither is a one-line {@linkcode HiraError}: a
 * hub id names the cache folder it looked in and the `huggingface-cli download` command.
 */
export async function resolveModel(
  value: string,
  revision = "main",
  env: EnvGet = denoEnv,
): Promise<ResolvedModel> {
  if (await isDir(value)) return { dir: value, hub: null };
  if (!isHubRepoId(value) || value.startsWith(".")) return { dir: value, hub: null };
  const cache = hubCacheDir(env);
  if (cache === null) {
    throw new HiraError(value, notCachedReason(value, revision, "no cache: HOME is not set"));
  }
  const snap = await findCachedSnapshot(cache, value, revision);
  if (snap === null) {
    const where = join(cache, repoFolderName(value));
    throw new HiraError(
      value,
      notCachedReason(value, revision, revision === "main" ? where : `${where} at ${revision}`),
    );
  }
  return {
    dir: snap.dir,
    hub: { repoId: value, revision, commit: snap.commit, repoDir: snap.repoDir },
  };
}

/** The folder of a model value (see {@linkcode resolveModel}). */
export async function resolveModelDir(value: string, revision = "main"): Promise<string> {
  return (await resolveModel(value, revision)).dir;
}

/**
 * What a permission-scoped process must be able to read for a model value: the folder, and
 * for a hub id also its cache folder (the snapshot's files are symlinks into ../../blobs/).
 * A value that does not resolve gives itself, so the task reports the error as usual.
 */
export async function modelReadPaths(
  value: string,
  revision: string,
  abs: (p: string) => string,
): Promise<string[]> {
  if (await isDir(abs(value))) return [abs(value)];
  const r = await resolveModel(value, revision).catch(() => null);
  return r?.hub ? [r.dir, r.hub.repoDir] : [abs(value)];
}
