/**
 * The kernel loader's source mechanisms (docs/kernels.md): `//! include` lines spliced once per
 * module with errors that name the including file, `//! struct` lines filled from a
 * {@linkcode uniformStruct} description, and checks over the kernels/ folder (every file expands,
 * shared helpers are defined once, each uniform struct a file splices is given by its op module).
 */
import {
  assert,
  assertEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { expandIncludes, Gpu, spliceStructs, uniformStruct } from "../../lib/engine/gpu.ts";
import { KERNEL_FILES } from "../../lib/ops/uniforms.ts";
import { testGpu, withTempDir } from "../_util.ts";

const KERNELS = new URL("../../kernels/", import.meta.url);

function reader(files: Record<string, string>) {
  const reads: string[] = [];
  const read = (f: string) => {
    reads.push(f);
    return f in files ? Promise.resolve(files[f]) : Promise.reject(new Error(`no file ${f}`));
  };
  return { read, reads };
}

Deno.test("kernel include: spliced in place, recursively, each file once per module", async () => {
  const { read, reads } = reader({
    "main.wgsl": '// main\n//! include "common/a.wgsl"\n//! include "common/b.wgsl"\nfn main() {}',
    "common/a.wgsl": '//! include "common/c.wgsl"\nfn a() {}',
    "common/b.wgsl": '  //!  include  "common/c.wgsl"  \nfn b() {}',
    "common/c.wgsl": "fn c() {}",
  });
  const src = await expandIncludes("main.wgsl", read);
  assertEquals(src.code, "// main\nfn c() {}\nfn a() {}\nfn b() {}\nfn main() {}");
  assertEquals(src.files, ["main.wgsl", "common/a.wgsl", "common/c.wgsl", "common/b.wgsl"]);
  assertEquals(reads, src.files);
  assertEquals(src.lines, [
    { file: "main.wgsl", line: 1 },
    { file: "common/c.wgsl", line: 1 },
    { file: "common/a.wgsl", line: 2 },
    { file: "common/b.wgsl", line: 2 },
    { file: "main.wgsl", line: 4 },
  ]);
});

Deno.test("kernel include: cycles, missing files and malformed lines name the including file", async () => {
  const cyc = reader({
    "main.wgsl": '//! include "common/a.wgsl"',
    "common/a.wgsl": '\n//! include "common/b.wgsl"',
    "common/b.wgsl": '//! include "common/a.wgsl"',
  });
  await assertRejects(
    () => expandIncludes("main.wgsl", cyc.read),
    Error,
    "kernels/common/b.wgsl:1: include cycle kernels/common/a.wgsl -> kernels/common/b.wgsl -> " +
      "kernels/common/a.wgsl",
  );
  const self = reader({ "main.wgsl": 'fn f() {}\n//! include "main.wgsl"' });
  await assertRejects(
    () => expandIncludes("main.wgsl", self.read),
    Error,
    "kernels/main.wgsl:2: include cycle kernels/main.wgsl -> kernels/main.wgsl",
  );
  const missing = reader({ "main.wgsl": '\n\n//! include "common/nope.wgsl"' });
  await assertRejects(
    () => expandIncludes("main.wgsl", missing.read),
    Error,
    "kernels/main.wgsl:3 includes kernels/common/nope.wgsl, which cannot be read: no file",
  );
  for (const bad of ["common/x.wgsl", '"../x.wgsl"', '"/x.wgsl"', '"x.txt"', '"a//b.wgsl"']) {
    const r = reader({ "main.wgsl": `//! include ${bad}` });
    await assertRejects(
      () => expandIncludes("main.wgsl", r.read),
      Error,
      "kernels/main.wgsl:1: malformed include",
    );
  }
});

Deno.test("uniformStruct: one description gives the WGSL struct and the packed values", () => {
  const s = uniformStruct("P", [["n", "u32"], ["scale", "f32"], ["shift", "i32"]]);
  assertEquals(s.wgsl, "struct P {\n  n: u32,\n  scale: f32,\n  shift: i32,\n}");
  assertEquals(s.pack({ shift: -2, n: 7, scale: 0.5 }), [7, { f32: 0.5 }, { i32: -2 }]);
  assertThrows(() => s.pack({ n: 7, scale: 1 } as never), Error, "P.shift: no value given");
  assertThrows(() => s.pack({ n: -1, scale: 1, shift: 0 }), Error, "P.n: -1 is not a u32");
  assertThrows(() => s.pack({ n: 1.5, scale: 1, shift: 0 }), Error, "P.n: 1.5 is not a u32");
  assertThrows(() => uniformStruct("Q", [["a", "u32"], ["a", "u32"]]), Error, "repeated");
  assertThrows(() => uniformStruct("Q", [["a", "vec4" as "u32"]]), Error, "is not u32");
  assertThrows(() => uniformStruct("Q", []), Error, "no fields");
});

Deno.test("kernel struct: `//! struct NAME` takes the spec's struct, and names a missing one", async () => {
  const { read } = reader({
    "k.wgsl": '//! include "common/s.wgsl"\n@group(0) @binding(0) var<uniform> p: P;',
    "common/s.wgsl": "//! struct P",
  });
  const src = await expandIncludes("k.wgsl", read);
  const P = uniformStruct("P", [["n", "u32"]]);
  const done = spliceStructs(src, [P]);
  assertEquals(done.code, "struct P {\n  n: u32,\n}\n@group(0) @binding(0) var<uniform> p: P;");
  assertEquals(done.lines.length, 4);
  assertEquals(done.lines[0], { file: "common/s.wgsl", line: 1 });
  assertThrows(
    () => spliceStructs(src, [], "kernels/k.wgsl (main)"),
    Error,
    "kernels/k.wgsl (main): kernels/common/s.wgsl:1 splices struct P, which its kernel spec " +
      "does not give (structs: none)",
  );
});

async function kernelFiles(): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(KERNELS)) if (e.name.endsWith(".wgsl")) out.push(e.name);
  return out.sort();
}

const readKernel = (f: string) => Deno.readTextFile(new URL(f, KERNELS));

Deno.test("kernels/: every file expands, and no module defines a function twice", async () => {
  for (const file of await kernelFiles()) {
    const { code } = await expandIncludes(file, readKernel);
    assert(!/^\s*\/\/!\s*include/m.test(code), `${file}: an include left`);
    const names = [...code.matchAll(/^fn (\w+)/gm)].map((m) => m[1]);
    const twice = names.filter((n, i) => names.indexOf(n) !== i);
    assertEquals(twice, [], `${file} defines ${twice} twice`);
    if (/\bflat\(/.test(code)) assert(names.includes("flat"), `${file} calls flat()`);
  }
});

Deno.test("kernels/: shared helpers live in kernels/common/ only", async () => {
  const shared = ["flat", "mac_row", "mac_block", "mac_block_row", "mac_row_across"];
  for (const file of await kernelFiles()) {
    const text = await readKernel(file);
    for (const fn of shared) {
      assert(!new RegExp(`^fn ${fn}\\(`, "m").test(text), `${file} defines ${fn} itself`);
    }
  }
});

Deno.test("kernels/: every file's uniform structs are the ones its op module describes", async () => {
  const files = await kernelFiles();
  assertEquals(KERNEL_FILES.map((k) => k.file).sort(), files, "lib/ops/uniforms.ts has every file");
  for (const { file, structs } of KERNEL_FILES) {
    const src = await expandIncludes(file, readKernel);
    const spliced = [...src.code.matchAll(/^\s*\/\/!\s*struct\s+(\w+)/gm)].map((m) => m[1]);
    assertEquals(spliced.sort(), structs.map((s) => s.name).sort(), file);
    const code = spliceStructs(src, structs).code;
    assert(!/^\s*struct \w*Params\b/m.test(src.code), `${file} declares a Params struct itself`);
    const uniforms = [...code.matchAll(/var<uniform> \w+: (\w+);/g)].map((m) => m[1]);
    assert(uniforms.length > 0, `${file} has no uniform block`);
    for (const type of uniforms) {
      assert(structs.some((s) => s.name === type), `${file}: uniform of type ${type}`);
      assert(!new RegExp(`^\\s*struct ${type}\\b`, "m").test(src.code), `${file} declares ${type}`);
    }
  }
});

Deno.test("kernel loader: errors in an included file and a missing include name the files", async () => {
  await withTempDir("", async (dir) => {
    await Deno.mkdir(`${dir}/common`);
    await Deno.writeTextFile(
      `${dir}/main.wgsl`,
      '//! include "common/bad.wgsl"\n@compute @workgroup_size(1) fn main() { let x = f(); }\n',
    );
    await Deno.writeTextFile(`${dir}/common/bad.wgsl`, "// f\nfn f() -> u32 { return 1.5; }\n");
    await Deno.writeTextFile(`${dir}/lost.wgsl`, '\n//! include "common/gone.wgsl"\n');
    const base = await testGpu();
    // A loader over the temporary folder on the shared device.
    const gpu = new Gpu(base.adapter, base.device, new URL(`file://${dir}/`));
    const e = await assertRejects(() =>
      gpu.kernel({ file: "main.wgsl", entry: "main", bindings: [] })
    );
    assertStringIncludes((e as Error).message, "WGSL error in kernels/main.wgsl (main): line 2:");
    assertStringIncludes((e as Error).message, "(kernels/common/bad.wgsl:2)");
    await assertRejects(
      () => gpu.kernel({ file: "lost.wgsl", entry: "main", bindings: [] }),
      Error,
      "kernels/lost.wgsl:2 includes kernels/common/gone.wgsl, which cannot be read",
    );
  });
});
