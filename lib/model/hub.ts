/**
 * Hugging Face hub ids, offline: where huggingface_hub keeps its cache and how a model id and
 * revision map to a snapshot folder in it (`models--org--name/refs/<revision>` holds a commit
 * hash; `snapshots/<hash>/` holds the files, symlinks into `../../blobs/`). Nothing is ever
 * fetched. Pure: lib/io/hub_deno.ts reads the environment and the folders.
 * @module
 */

/** Reads an environment variable (undefined when unset or not readable). */
export type EnvGet = (name: string) => string | undefined;

/** The environment variables the cache location depends on, in huggingface_hub's order. */
export const HUB_ENV_VARS: readonly string[] = [
  "HF_HUB_CACHE",
  "HUGGINGFACE_HUB_CACHE",
  "HF_HOME",
  "XDG_CACHE_HOME",
  "HOME",
];

// os.path.expanduser then os.path.expandvars, as huggingface_hub/constants.py applies them.
function expand(path: string, env: EnvGet, home: string | null): string {
  let p = path;
  if (home !== null && (p === "~" || p.startsWith("~/"))) p = home + p.slice(1);
  return p.replace(
    /\$(\w+)|\$\{(\w+)\}/g,
    (m, a: string | undefined, b: string | undefined) => env(a ?? b!) ?? m,
  );
}

/**
 * The hub cache folder exactly as huggingface_hub computes it: `HF_HUB_CACHE`, else the legacy
 * `HUGGINGFACE_HUB_CACHE`, else `HF_HOME/hub`, where HF_HOME defaults to
 * `$XDG_CACHE_HOME/huggingface` and that to `~/.cache/huggingface`. Null when nothing names a
 * folder (no HOME either).
 */
export function hubCacheDir(env: EnvGet): string | null {
  const home = env("HOME") ?? null;
  const direct = env("HF_HUB_CACHE") ?? env("HUGGINGFACE_HUB_CACHE");
  if (direct !== undefined && direct !== "") return expand(direct, env, home);
  let hfHome = env("HF_HOME");
  if (hfHome === undefined) {
    const xdg = env("XDG_CACHE_HOME") ?? (home === null ? undefined : `${home}/.cache`);
    if (xdg === undefined) return null;
    hfHome = `${xdg}/huggingface`;
  }
  return `${expand(hfHome, env, home).replace(/\/+$/, "")}/hub`;
}

/**
 * Whether `value` has the shape of a hub model id (huggingface_hub's validate_repo_id:
 * `name` or `org/name` of letters, digits, `-`, `_`, `.`; no `--` or `..`; at most 96
 * characters; not starting or ending with `-` or `.`).
 */
export function isHubRepoId(value: string): boolean {
  if (value.length > 96 || value.includes("--") || value.includes("..")) return false;
  return /^([A-Za-z0-9_](?:[\w.-]*[A-Za-z0-9_])?\/)?[A-Za-z0-9_](?:[\w.-]*[A-Za-z0-9_])?$/.test(
    value,
  );
}

/** The cache folder name of a model repo: `models--org--name`. */
export function repoFolderName(repoId: string): string {
  return `models--${repoId.replaceAll("/", "--")}`;
}

/** Whether a revision is a full commit hash (used as a snapshot name directly). */
export function isCommitHash(revision: string): boolean {
  return /^[0-9a-f]{40}$/.test(revision);
}

/** The one-line reason a hub id is not usable offline. */
export function notCachedReason(repoId: string, revision: string, lookedIn: string): string {
  const rev = revision === "main" ? "" : ` --revision ${revision}`;
  return `not a local folder and not in the Hugging Face cache (looked in ${lookedIn}); ` +
    `nothing is downloaded: run \`huggingface-cli download ${repoId}${rev}\` first ` +
    "(or set HF_HUB_CACHE / HF_HOME to where it is)";
}
