/**
 * The architecture holds: lib/ is layers whose imports only go down, `Deno.*` appears only at the
 * I/O edge (io/, cli/), every layer says what it is in a mod.ts, and no file of the repository
 * reads or cites a path outside it.
 */
import { assert, assertEquals } from "@std/assert";
import { dirname, join, normalize, relative } from "@std/path";

const ROOT = new URL("../../", import.meta.url).pathname;
const LIB = join(ROOT, "lib");
/** Bottom to top; a module may import its own layer and the ones before it. */
const ORDER = ["engine", "ops", "model", "ref", "train", "eval", "report", "io", "cli"];

async function* walk(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) {
      if (["node_modules", ".git", "fixtures", "test_output"].includes(e.name)) continue;
      yield* walk(p);
    } else yield p;
  }
}

async function libModules(): Promise<string[]> {
  const out: string[] = [];
  for await (const f of walk(LIB)) if (f.endsWith(".ts")) out.push(f);
  return out.sort();
}

const layerOf = (file: string) => relative(LIB, file).split("/")[0];

Deno.test("lib/: every module is in a layer and imports only its own layer or lower ones", async () => {
  const upward: string[] = [];
  for (const f of await libModules()) {
    const layer = layerOf(f);
    assert(ORDER.includes(layer), `${relative(ROOT, f)} is in no layer`);
    const src = await Deno.readTextFile(f);
    for (const m of src.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)) {
      const target = normalize(join(dirname(f), m[1]));
      if (!target.startsWith(LIB + "/")) continue; // kernels/, data_file/: not code layers
      const to = layerOf(target);
      if (ORDER.indexOf(to) > ORDER.indexOf(layer)) {
        upward.push(`${relative(ROOT, f)} -> ${relative(ROOT, target)}`);
      }
    }
  }
  assertEquals(upward, []);
});

Deno.test("lib/: Deno APIs only at the I/O edge (io/, cli/), so the page reuses the rest", async () => {
  const found: string[] = [];
  for (const f of await libModules()) {
    if (["io", "cli"].includes(layerOf(f))) continue;
    const lines = (await Deno.readTextFile(f)).split("\n");
    lines.forEach((line, i) => {
      const code = line.trim();
      if (code.startsWith("*") || code.startsWith("//") || code.startsWith("/*")) return;
      if (/\bDeno\./.test(code)) found.push(`${relative(ROOT, f)}:${i + 1}`);
    });
  }
  assertEquals(found, []);
});

Deno.test("lib/: every layer has a mod.ts that says what it is", async () => {
  for (const layer of ORDER) {
    const text = await Deno.readTextFile(join(LIB, layer, "mod.ts"));
    assert(/^\/\*\*\n \* \S/.test(text), `lib/${layer}/mod.ts has no module comment`);
  }
});

Deno.test("no file reads or cites a path outside the repository", async () => {
  const outside = /\.\.\/shared\b|shared\/(reference|fixtures)\b/;
  const hits: string[] = [];
  for await (const f of walk(ROOT)) {
    if (!/\.(ts|md|json|sh|py|html|css)$/.test(f) && !f.endsWith("/.ci/run")) continue;
    if (f === new URL(import.meta.url).pathname) continue; // this test names the pattern
    const text = await Deno.readTextFile(f);
    if (outside.test(text)) hits.push(relative(ROOT, f));
  }
  assertEquals(hits, []);
});
