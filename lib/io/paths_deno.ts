/**
 * Paths resolved before they are trusted. Deno checks permission paths lexically, so a
 * `tokenizer.json -> /etc/passwd` inside a permitted model folder used to be read by the scoped
 * process. Before the launcher builds a scope, every folder it names is searched for symlinks:
 * one is followed only when its real target stays inside the folder the user named (for a
 * Hugging Face cache snapshot, inside that model's `models--org--name/`, whose snapshot files
 * link into its `blobs/`); any other is a one-line error naming the link (never the content of
 * its target). The scope then lists the real paths too.
 * @module
 */
import { basename, dirname, join, resolve, SEPARATOR } from "@std/path";
import { HiraError } from "../engine/errors.ts";

/** Whether `path` is `dir` or below it (both absolute and normalised). */
export function isInside(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith(SEPARATOR) ? dir : dir + SEPARATOR);
}

/**
 * The folder a link below `path` must stay inside: the nearest ancestor named `models--*` (a
 * Hugging Face hub cache entry: `snapshots/<rev>/` links into `blobs/`), else `path` itself.
 */
export function containmentRoot(path: string): string {
  for (let p = resolve(path); dirname(p) !== p; p = dirname(p)) {
    if (/^models--[^/\\]+--[^/\\]+$/.test(basename(p))) return p;
  }
  return resolve(path);
}

/** The real path of `path`, or of its nearest existing ancestor joined with the rest. */
export async function realOrAncestor(path: string): Promise<string> {
  const rest: string[] = [];
  for (let p = resolve(path);; p = dirname(p)) {
    try {
      return join(await Deno.realPath(p), ...rest.reverse());
    } catch {
      if (dirname(p) === p) return resolve(path);
      rest.push(basename(p));
    }
  }
}

/** Limits of {@linkcode checkLinks}'s walk (a folder named by mistake must not take minutes). */
export interface LinkWalk {
  /** Folder levels searched below the named folder (default 6). */
  maxDepth?: number;
  /** Entries looked at in all (default 20000); beyond, the rest is not searched. */
  maxEntries?: number;
}

/**
 * Refuses a symlink at or below `path` whose real target leaves {@linkcode containmentRoot} of
 * `path`: a HiraError naming the link. A dangling link is left to the reader (NotFound).
 * Links are not descended into (their targets are inside the root, which is searched anyway).
 */
export async function checkLinks(path: string, walk: LinkWalk = {}): Promise<void> {
  const root = containmentRoot(path);
  const realRoot = await Deno.realPath(root).catch(() => root);
  const maxDepth = walk.maxDepth ?? 6;
  let budget = walk.maxEntries ?? 20000;
  const check = async (p: string) => {
    let real: string;
    try {
      real = await Deno.realPath(p);
    } catch {
      return; // dangling: reading it fails on its own
    }
    if (!isInside(real, realRoot)) {
      throw new HiraError(
        p,
        `is a symlink that leads outside ${root}; only links that stay inside the folder ` +
          "you named are followed",
      );
    }
  };
  const st = await Deno.lstat(path).catch(() => null);
  if (!st) return;
  // The named path itself may be a link (a folder linked into place): it is what the user
  // named, so it is followed; its real folder is what is searched.
  const start = st.isSymlink ? await Deno.realPath(path).catch(() => null) : path;
  if (start === null) return;
  const isDir = await Deno.stat(start).then((s) => s.isDirectory, () => false);
  if (!isDir) return;
  const visit = async (dir: string, depth: number, shown: string): Promise<void> => {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(dir));
    } catch {
      return; // unreadable: the task reports it if it needs the folder
    }
    for (const e of entries) {
      if (--budget < 0) return;
      const p = join(dir, e.name);
      const named = join(shown, e.name);
      if (e.isSymlink) {
        try {
          await check(p);
        } catch (err) {
          // Named as the user would see it (below the folder they gave).
          if (err instanceof HiraError) throw new HiraError(named, err.reason);
          throw err;
        }
      } else if (e.isDirectory && depth < maxDepth) await visit(p, depth + 1, named);
    }
  };
  await visit(start, 1, path);
}

/**
 * `mkdir -p dir` for output, refusing a `dir` that is a symlink (a planted `RUN/eval -> /else`
 * would be written through, and Deno's lexical scope check allows it).
 */
export async function mkdirNoLink(dir: string): Promise<void> {
  const st = await Deno.lstat(dir).catch(() => null);
  if (st?.isSymlink) {
    throw new HiraError(
      dir,
      "is a symlink; output is never written through a link (remove it, or pass --out)",
    );
  }
  await Deno.mkdir(dir, { recursive: true });
}
