import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { HiraError, isHiraError } from "../../lib/engine/errors.ts";
import { f16ToF32, f32ToF16 } from "../../lib/engine/gpu.ts";
import {
  type ByteSource,
  bytesSource,
  concatBytes,
  encodeSafetensors,
  f64ToF16,
  MAX_HEADER_BYTES,
  parseShardIndex,
  readHeader,
  readTensor,
  readTensorRows,
  type TensorToWrite,
} from "../../lib/model/safetensors.ts";
import {
  fileSource,
  openModelWeights,
  openSafetensors,
  writeFileAtomic,
  writeSafetensorsFile,
} from "../../lib/io/safetensors_deno.ts";
import { withTempDir } from "../_util.ts";

const FIXTURES = new URL("../fixtures/golden/", import.meta.url);

// ---------------------------------------------------------------------------------------------
// Helpers: a plain hand decoder (independent of the module) and hand-built files.

function bits16(values: number[]): Uint16Array {
  return Uint16Array.from(values);
}

/** Whether two float arrays are identical, NaN == NaN and +0 != -0. */
function assertSameFloats(actual: ArrayLike<number>, expected: ArrayLike<number>, label: string) {
  assertEquals(actual.length, expected.length, `${label}: length`);
  for (let i = 0; i < expected.length; i++) {
    assert(
      Object.is(actual[i], expected[i]),
      `${label}[${i}]: got ${actual[i]}, expected ${expected[i]}`,
    );
  }
}

interface HandTensor {
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

/** Parses a safetensors file by hand: header JSON and the data start. */
function handHeader(bytes: Uint8Array): { header: Record<string, HandTensor>; start: number } {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  const json = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const header: Record<string, HandTensor> = {};
  for (const [k, v] of Object.entries(json)) {
    if (k === "__metadata__") continue;
    const e = v as { dtype: string; shape: number[]; data_offsets: [number, number] };
    header[k] = {
      dtype: e.dtype,
      shape: e.shape,
      begin: e.data_offsets[0],
      end: e.data_offsets[1],
    };
  }
  return { header, start: 8 + n };
}

/** Element i of a tensor decoded by hand with DataView (F32 and BF16 only). */
function handValue(bytes: Uint8Array, start: number, t: HandTensor, i: number): number {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (t.dtype === "F32") return dv.getFloat32(start + t.begin + 4 * i, true);
  if (t.dtype === "BF16") {
    const scratch = new DataView(new ArrayBuffer(4));
    scratch.setUint32(0, dv.getUint16(start + t.begin + 2 * i, true) << 16);
    return scratch.getFloat32(0);
  }
  throw new Error(`handValue: ${t.dtype}`);
}

/** A file from a header (object or raw text/bytes) and `dataLen` bytes of data. */
function fileFrom(header: unknown, dataLen = 0, headerLenOverride?: bigint): Uint8Array {
  const hb = header instanceof Uint8Array
    ? header
    : new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + hb.byteLength + dataLen);
  new DataView(out.buffer).setBigUint64(0, headerLenOverride ?? BigInt(hb.byteLength), true);
  out.set(hb, 8);
  for (let i = 0; i < dataLen; i++) out[8 + hb.byteLength + i] = i & 0xff;
  return out;
}

async function headerError(bytes: Uint8Array | ByteSource, name = "bad.safetensors") {
  const src = bytes instanceof Uint8Array ? bytesSource(bytes, name) : bytes;
  return await assertRejects(() => readHeader(src), HiraError);
}

async function roundTrip(tensors: TensorToWrite[], metadata?: Record<string, string>) {
  const bytes = concatBytes(encodeSafetensors(tensors, metadata));
  const src = bytesSource(bytes, "mem.safetensors");
  return { bytes, src, header: await readHeader(src) };
}

// ---------------------------------------------------------------------------------------------
// Round trips

const F32_SPECIALS = Float32Array.from([
  0,
  -0,
  1,
  -2.5,
  Infinity,
  -Infinity,
  NaN,
  1e-45, // smallest subnormal
  -Math.fround(1e-40), // subnormal
  Math.fround(1.17549435e-38), // smallest normal
  3.4028234663852886e38, // largest finite
  Math.fround(Math.PI),
]);

Deno.test("F32, F16, BF16 and I32 round-trip bit-exactly, incl. subnormals, ±0, ±inf, NaN", async () => {
  const f16Bits = bits16([
    0x0000, // +0
    0x8000, // -0
    0x0001, // smallest subnormal 2^-24
    0x83ff, // largest negative subnormal
    0x0400, // smallest normal
    0x7bff, // 65504
    0x7c00, // +inf
    0xfc00, // -inf
    0x7e00, // NaN
    0x3c00, // 1
    0xc000, // -2
  ]);
  const bf16Bits = bits16([
    0x0000,
    0x8000,
    0x0001, // smallest bf16 subnormal 2^-133
    0x807f, // negative subnormal
    0x7f7f, // largest finite
    0x7f80,
    0xff80,
    0x7fc0, // NaN
    0x3f80, // 1
    0x3f81, // 1 + 2^-7
  ]);
  const i32 = Int32Array.from([0, -1, 1, 2147483647, -2147483648, 123456789]);
  const { src, header, bytes } = await roundTrip([
    { name: "f32", dtype: "F32", shape: [3, 4], data: F32_SPECIALS },
    { name: "f16", dtype: "F16", shape: [11], data: f16Bits },
    { name: "bf16", dtype: "BF16", shape: [2, 5], data: bf16Bits },
    { name: "i32", dtype: "I32", shape: [6, 1], data: i32 },
    { name: "scalar", dtype: "F32", shape: [], data: Float32Array.of(7) },
    { name: "empty", dtype: "F16", shape: [0, 3], data: new Uint16Array(0) },
  ]);
  assertEquals([...header.tensors.keys()].sort(), [
    "bf16",
    "empty",
    "f16",
    "f32",
    "i32",
    "scalar",
  ]);
  const t = (n: string) => header.tensors.get(n)!;
  assertEquals(t("f32").shape, [3, 4]);
  assertEquals(t("f32").dtype, "F32");
  assertEquals(t("i32").shape, [6, 1]);
  assertEquals(t("scalar").shape, []);
  assertEquals(t("empty").shape, [0, 3]);

  // Raw bytes are exactly the input bits.
  const rawOf = (a: { buffer: ArrayBufferLike; byteOffset: number; byteLength: number }) =>
    new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  assertEquals(await readTensor(src, t("f32"), "raw"), rawOf(F32_SPECIALS));
  assertEquals(await readTensor(src, t("f16"), "raw"), rawOf(f16Bits));
  assertEquals(await readTensor(src, t("bf16"), "raw"), rawOf(bf16Bits));
  const rawI32 = await readTensor(src, t("i32"), "raw");
  assertEquals(new Int32Array(rawI32.slice().buffer), i32);

  // f32 reads.
  assertSameFloats(await readTensor(src, t("f32")), F32_SPECIALS, "f32");
  assertSameFloats(await readTensor(src, t("f16"), "f32"), [
    0,
    -0,
    2 ** -24,
    -(1023 * 2 ** -24),
    2 ** -14,
    65504,
    Infinity,
    -Infinity,
    NaN,
    1,
    -2,
  ], "f16 as f32");
  assertSameFloats(await readTensor(src, t("bf16"), "f32"), [
    0,
    -0,
    2 ** -133,
    -(127 * 2 ** -133),
    Math.fround(3.3895313892515355e38),
    Infinity,
    -Infinity,
    NaN,
    1,
    1 + 2 ** -7,
  ], "bf16 as f32");
  assertSameFloats(await readTensor(src, t("scalar")), [7], "scalar");
  assertEquals((await readTensor(src, t("empty"))).length, 0);

  // f16 reads: F16 unchanged; F32/BF16 rounded.
  assertEquals(await readTensor(src, t("f16"), "f16"), f16Bits);
  assertEquals(await readTensor(src, t("f32"), "f16"), f32ToF16(F32_SPECIALS));
  assertEquals(
    [...await readTensor(src, t("bf16"), "f16")].map((b) => b.toString(16)),
    // bf16 subnormals underflow to ±0, the largest bf16 overflows to inf, 1+2^-7 is exact.
    [0x0000, 0x8000, 0x0000, 0x8000, 0x7c00, 0x7c00, 0xfc00, 0x7e00, 0x3c00, 0x3c08].map((b) =>
      b.toString(16)
    ),
  );

  // The encoded layout keeps every tensor aligned and contiguous (the Python library checks
  // contiguity), with the header padded to a multiple of 8.
  const { header: hand, start } = handHeader(bytes);
  assertEquals(start % 8, 0);
  const spans = Object.values(hand).sort((a, b) => a.begin - b.begin);
  let off = 0;
  for (const s of spans) {
    assertEquals(s.begin, off);
    assertEquals(s.begin % ({ F32: 4, I32: 4, F16: 2, BF16: 2 }[s.dtype] ?? 1), 0);
    off = s.end;
  }
  assertEquals(start + off, bytes.byteLength);
});

Deno.test("F16/BF16 from Float32Array are rounded to nearest even on encoding", async () => {
  const values = Float32Array.from([1 + 2 ** -11, 1 + 3 * 2 ** -11, 65519, 65520, 2 ** -25, NaN]);
  const { src, header } = await roundTrip([
    { name: "h", dtype: "F16", shape: [6], data: values },
    {
      name: "b",
      dtype: "BF16",
      shape: [3],
      data: Float32Array.from([1 + 2 ** -8, 1 + 3 * 2 ** -8, -0]),
    },
  ]);
  assertEquals(
    [...await readTensor(src, header.tensors.get("h")!, "f16")],
    [0x3c00, 0x3c02, 0x7bff, 0x7c00, 0x0000, 0x7e00],
  );
  assertSameFloats(
    await readTensor(src, header.tensors.get("b")!),
    [1, 1 + 2 ** -6, -0],
    "bf16 rne",
  );
});

Deno.test("F32 to f16 reads round to nearest even, with overflow and underflow", async () => {
  const v = Float32Array.from([
    1 + 2 ** -11, // tie -> even (1)
    1 + 3 * 2 ** -11, // tie -> even (1 + 2^-9)
    65519, // rounds down to 65504
    65520, // tie -> inf
    -1e6,
    2 ** -25, // tie -> 0
    3 * 2 ** -26, // -> smallest subnormal
    2 ** -14 - 2 ** -25, // -> smallest normal
  ]);
  const { src, header } = await roundTrip([{ name: "x", dtype: "F32", shape: [8], data: v }]);
  assertEquals(
    [...await readTensor(src, header.tensors.get("x")!, "f16")],
    [0x3c00, 0x3c02, 0x7bff, 0x7c00, 0xfc00, 0x0000, 0x0001, 0x0400],
  );
});

Deno.test("F64 tensors read as f32 and as f16 with a single rounding", async () => {
  const values = [1.1, -0, Infinity, NaN, 1 + 2 ** -11 + 2 ** -40, 70000, 2 ** -24 * 0.75];
  const data = new Uint8Array(Float64Array.from(values).buffer);
  const header = { x: { dtype: "F64", shape: [values.length], data_offsets: [0, data.length] } };
  const bytes = fileFrom(header, data.length);
  bytes.set(data, bytes.length - data.length);
  const src = bytesSource(bytes);
  const info = (await readHeader(src)).tensors.get("x")!;
  assertSameFloats(await readTensor(src, info), Float32Array.from(values), "f64 as f32");
  // Through f32 first, 1 + 2^-11 + 2^-40 would become the tie 1 + 2^-11 and round to 1.
  assertEquals([...await readTensor(src, info, "f16")], [
    0x3c66,
    0x8000,
    0x7c00,
    0x7e00,
    0x3c01,
    0x7c00,
    0x0001,
  ]);
  assertEquals(f64ToF16([1.1])[0], f32ToF16(Float32Array.of(1.1))[0]);
  // Agrees with the f32 converter on every value that f32 holds exactly.
  for (let i = 0; i < 2000; i++) {
    const x = Math.fround((Math.random() - 0.5) * 2 ** (Math.random() * 44 - 28));
    assertEquals(f64ToF16([x])[0], f32ToF16(Float32Array.of(x))[0], `x=${x}`);
  }
});

Deno.test("metadata round-trips; integer tensors refuse float conversion", async () => {
  const meta = { format: "pt", note: "ünïcode ✓", empty: "" };
  const { src, header } = await roundTrip(
    [{ name: "ids", dtype: "I32", shape: [2], data: Int32Array.of(5, -5) }],
    meta,
  );
  assertEquals(header.metadata, meta);
  const info = header.tensors.get("ids")!;
  const e = await assertRejects(() => readTensor(src, info, "f32"), HiraError);
  assert(e.message.includes("dtype I32, which cannot be read as f32"), e.message);
  assert(e.message.startsWith("mem.safetensors: "), e.message);
  // No metadata: an empty map, and no __metadata__ key written.
  const { header: h2, bytes } = await roundTrip([]);
  assertEquals(h2.metadata, {});
  assertEquals(h2.tensors.size, 0);
  assert(!new TextDecoder().decode(bytes).includes("__metadata__"));
});

Deno.test("encodeSafetensors rejects bad input", () => {
  const x = { name: "x", dtype: "F32" as const, shape: [2], data: new Float32Array(2) };
  assertThrows(() => encodeSafetensors([x, x]), Error, "duplicate tensor 'x'");
  assertThrows(
    () => encodeSafetensors([{ ...x, shape: [3] }]),
    Error,
    "shape [3] needs 3",
  );
  assertThrows(
    () => encodeSafetensors([{ ...x, data: new Int32Array(2) }]),
    Error,
    "got a Int32Array",
  );
  assertThrows(() => encodeSafetensors([{ ...x, name: "__metadata__" }]), Error, "reserved");
  assertThrows(
    () => encodeSafetensors([x], { a: 1 as unknown as string }),
    Error,
    "not a string",
  );
});

Deno.test("readTensorRows reads a row range of any tensor", async () => {
  const data = Float32Array.from({ length: 5 * 3 }, (_, i) => i * 0.5);
  const { src, header } = await roundTrip([
    { name: "w", dtype: "BF16", shape: [5, 3], data },
  ]);
  const info = header.tensors.get("w")!;
  const full = await readTensor(src, info);
  assertEquals(await readTensorRows(src, info, 1, 3), full.slice(3, 12));
  assertEquals((await readTensorRows(src, info, 5, 0)).length, 0);
  await assertRejects(() => readTensorRows(src, info, 4, 2), RangeError);
});

// ---------------------------------------------------------------------------------------------
// Corrupt headers: each gives its own message naming the file.

Deno.test("every corrupt-header case has its own clear message", async () => {
  const ok = (extra: Record<string, unknown> = {}) => ({
    a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
    ...extra,
  });
  const cases: [string, Uint8Array | ByteSource, string][] = [
    ["short", new Uint8Array(5), "shorter than 8 bytes"],
    ["past end", fileFrom("{}", 0, 1000n), "header length 1000 runs past the end of the file"],
    [
      "huge",
      // A 300 MB file that is never read beyond its first 8 bytes.
      {
        name: "bad.safetensors",
        size: 3 * MAX_HEADER_BYTES,
        read: (o: number, n: number) =>
          Promise.resolve(
            o === 0 ? fileFrom("", 0, BigInt(2 * MAX_HEADER_BYTES)).slice(0, n) : new Uint8Array(n),
          ),
      },
      "over the 100 MB limit",
    ],
    ["utf8", fileFrom(Uint8Array.of(0x7b, 0xff, 0xfe, 0x7d)), "not valid UTF-8"],
    ["json", fileFrom('{"a": '), "not valid JSON"],
    ["array", fileFrom("[1, 2]"), "not a JSON object but an array"],
    ["entry", fileFrom({ a: 3 }), "tensor 'a': entry is not an object"],
    [
      "no dtype",
      fileFrom({ a: { shape: [], data_offsets: [0, 0] } }),
      `tensor 'a': missing "dtype"`,
    ],
    ["no shape", fileFrom({ a: { dtype: "F32", data_offsets: [0, 0] } }), `missing "shape"`],
    ["no offsets", fileFrom({ a: { dtype: "F32", shape: [] } }), `missing "data_offsets"`],
    [
      "dtype type",
      fileFrom({ a: { dtype: 4, shape: [1], data_offsets: [0, 4] } }, 4),
      "dtype is not a string",
    ],
    [
      "unknown dtype",
      fileFrom({ a: { dtype: "Q4_K", shape: [1], data_offsets: [0, 4] } }, 4),
      "unknown dtype 'Q4_K'",
    ],
    [
      "shape type",
      fileFrom({ a: { dtype: "F32", shape: "2x2", data_offsets: [0, 16] } }, 16),
      "shape is not an array",
    ],
    [
      "negative dim",
      fileFrom({ a: { dtype: "F32", shape: [2, -1], data_offsets: [0, 8] } }, 8),
      "shape [2,-1] has a negative or non-integer dimension",
    ],
    [
      "fractional dim",
      fileFrom({ a: { dtype: "F32", shape: [1.5], data_offsets: [0, 4] } }, 4),
      "shape [1.5] has a negative or non-integer dimension",
    ],
    [
      "offsets type",
      fileFrom({ a: { dtype: "F32", shape: [1], data_offsets: [0, "4"] } }, 4),
      "is not a pair [begin, end]",
    ],
    [
      "offsets arity",
      fileFrom({ a: { dtype: "F32", shape: [1], data_offsets: [4] } }, 4),
      "is not a pair [begin, end]",
    ],
    [
      "begin > end",
      fileFrom({ a: { dtype: "F32", shape: [1], data_offsets: [8, 4] } }, 8),
      "has begin > end",
    ],
    [
      "end past data",
      fileFrom(ok(), 6),
      "end is past the end of the data area (6 bytes)",
    ],
    [
      "length",
      fileFrom({ a: { dtype: "BF16", shape: [3], data_offsets: [0, 8] } }, 8),
      "byte length 8 does not match shape [3] × BF16 (6 bytes)",
    ],
    [
      "overlap",
      fileFrom(ok({ b: { dtype: "F16", shape: [2], data_offsets: [6, 10] } }), 10),
      "tensors 'a' [0, 8) and 'b' [6, 10) overlap",
    ],
    [
      "metadata type",
      fileFrom(ok({ __metadata__: ["x"] }), 8),
      "__metadata__ is not a string-to-string map but an array",
    ],
    [
      "metadata value",
      fileFrom(ok({ __metadata__: { step: 3 } }), 8),
      `__metadata__ is not a string-to-string map: key "step" has number 3`,
    ],
  ];
  const messages = new Set<string>();
  for (const [label, file, reason] of cases) {
    const e = await headerError(file);
    assert(e.message.startsWith("bad.safetensors: "), `${label}: ${e.message}`);
    assert(e.message.includes(reason), `${label}: "${e.message}" lacks "${reason}"`);
    assert(!e.message.includes("\n"), `${label}: multi-line message`);
    assertEquals((e as HiraError).file, "bad.safetensors");
    assert(isHiraError(e));
    messages.add(e.message);
  }
  assertEquals(messages.size, cases.length, "messages are not all distinct");
});

Deno.test("valid but unusual files are accepted: padded header, gaps, trailing data", async () => {
  const header = JSON.stringify({
    b: { dtype: "U8", shape: [2], data_offsets: [12, 14] },
    a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
    z: { dtype: "F32", shape: [0], data_offsets: [4, 4] }, // zero-length inside another: fine
    __metadata__: { k: "v" },
  }) + "       ";
  const bytes = fileFrom(header, 20);
  const src = bytesSource(bytes);
  const h = await readHeader(src);
  assertEquals([...h.tensors.keys()], ["b", "a", "z"]);
  assertEquals(h.dataStart, 8 + header.length);
  assertEquals(h.tensors.get("b")!.begin, h.dataStart + 12);
  assertEquals([...await readTensor(src, h.tensors.get("b")!, "raw")], [12, 13]);
  assertEquals(h.metadata, { k: "v" });
});

// ---------------------------------------------------------------------------------------------
// Fixtures

Deno.test("reads the BF16 fixture model and matches a hand decode", async () => {
  const url = new URL("model/model.safetensors", FIXTURES);
  const bytes = await Deno.readFile(url);
  const { header: hand, start } = handHeader(bytes);
  const f = await openSafetensors(url);
  try {
    assertEquals(f.names.length, Object.keys(hand).length);
    for (const name of ["model.embed_tokens.weight", "model.layers.2.mlp.down_proj.weight"]) {
      const h = hand[name];
      assertEquals(h.dtype, "BF16");
      const info = f.info(name);
      assertEquals(info.shape, h.shape);
      assertEquals(info.begin, start + h.begin);
      const values = await f.read(name);
      assertEquals(values.length, h.shape.reduce((a, b) => a * b, 1));
      for (const i of [0, 1, 17, values.length - 1]) {
        assertEquals(values[i], handValue(bytes, start, h, i), `${name}[${i}]`);
      }
      // As f16: the nearest half of each bf16 value (|rel err| <= 2^-11 in the normal range).
      const halves = f16ToF32(await f.read(name, "f16"));
      for (let i = 0; i < values.length; i++) {
        const v = values[i];
        assert(Math.abs(halves[i] - v) <= 2 ** -11 * Math.abs(v) + 2 ** -25, `${name}[${i}]`);
      }
    }
    assertThrows(() => f.info("nope"), HiraError, "no tensor named 'nope'");
  } finally {
    f.close();
  }
  // The same file through the checkpoint-directory loader.
  const w = await openModelWeights(new URL("model/", FIXTURES));
  try {
    assertEquals(w.files.length, 1);
    assertEquals(w.names.length, Object.keys(hand).length);
    const h = hand["model.norm.weight"];
    assertEquals((await w.read("model.norm.weight"))[5], handValue(bytes, start, h, 5));
    assertThrows(() => w.get("lm_head.weight"), HiraError, "checkpoint has no tensor");
  } finally {
    w.close();
  }
});

Deno.test("reads the sharded F32 fixture through its index", async () => {
  const dir = new URL("model-qwen-style/", FIXTURES);
  const index = JSON.parse(await Deno.readTextFile(new URL("model.safetensors.index.json", dir)))
    .weight_map as Record<string, string>;
  const w = await openModelWeights(dir);
  try {
    assertEquals(w.files.length, 2);
    assertEquals(w.names.sort(), Object.keys(index).sort());
    for (
      const name of [
        "lm_head.weight", // shard 1
        "model.layers.1.self_attn.q_proj.bias", // shard 1
        "model.embed_tokens.weight", // shard 2
        "model.layers.1.self_attn.v_proj.weight", // shard 2
      ]
    ) {
      const bytes = await Deno.readFile(new URL(index[name], dir));
      const { header: hand, start } = handHeader(bytes);
      const h = hand[name];
      assertEquals(h.dtype, "F32");
      assertEquals(w.info(name).shape, h.shape);
      assert(w.get(name).source.name.endsWith(index[name]));
      const values = await w.read(name);
      for (const i of [0, 3, values.length - 1]) {
        assertEquals(values[i], handValue(bytes, start, h, i), `${name}[${i}]`);
      }
    }
  } finally {
    w.close();
  }
});

Deno.test("reads golden metadata", async () => {
  const f = await openSafetensors(new URL("golden/base.logits.safetensors", FIXTURES));
  try {
    assertEquals(f.header.metadata.n_targets, "23");
    const loss = await f.read("loss");
    assert(Math.abs(loss[0] - Number(f.header.metadata.loss)) < 1e-5);
    assertEquals(f.info("logits.1").shape, [25, 256]);
  } finally {
    f.close();
  }
});

Deno.test("sharded and directory errors are clear", async () => {
  const src = new URL("model-qwen-style/", FIXTURES);
  await withTempDir("hira-st-", async (tmp) => {
    const index = JSON.parse(
      await Deno.readTextFile(new URL("model.safetensors.index.json", src)),
    );
    const shard1 = "model-00001-of-00002.safetensors";
    const shard2 = "model-00002-of-00002.safetensors";
    await Deno.copyFile(new URL(shard1, src), `${tmp}/${shard1}`);
    const writeIndex = (o: unknown) =>
      Deno.writeTextFile(`${tmp}/model.safetensors.index.json`, JSON.stringify(o));

    // Shard 2 missing.
    await writeIndex(index);
    let e = await assertRejects(() => openModelWeights(tmp), HiraError);
    assert(e.message.startsWith(`${tmp}/${shard2}: `), e.message);
    assert(e.message.includes("shard listed in"), e.message);
    assert(e.message.includes("is missing"), e.message);

    // A tensor listed in the index but absent from its shard.
    await Deno.copyFile(new URL(shard2, src), `${tmp}/${shard2}`);
    await writeIndex({ weight_map: { ...index.weight_map, "extra.weight": shard1 } });
    e = await assertRejects(() => openModelWeights(tmp), HiraError);
    assert(e.message.startsWith(`${tmp}/${shard1}: `), e.message);
    assert(
      e.message.includes(
        "tensor 'extra.weight' is listed in model.safetensors.index.json but absent from this shard",
      ),
      e.message,
    );

    // Both shards present: loads.
    await writeIndex(index);
    const w = await openModelWeights(tmp);
    assertEquals(w.names.length, Object.keys(index.weight_map).length);
    w.close();

    // Bad index files.
    await Deno.writeTextFile(`${tmp}/model.safetensors.index.json`, "{oops");
    await assertRejects(() => openModelWeights(tmp), HiraError, "not valid JSON");
    await writeIndex({ metadata: {} });
    await assertRejects(() => openModelWeights(tmp), HiraError, `missing "weight_map"`);
    assertThrows(
      () => parseShardIndex(JSON.stringify({ weight_map: { a: "../x.safetensors" } }), "i.json"),
      HiraError,
      "must be a file next to the index",
    );
    assertThrows(
      () => parseShardIndex(JSON.stringify({ weight_map: { a: 3 } }), "i.json"),
      HiraError,
      "is not a file name",
    );

    // No weights at all; not a directory; missing directory.
    await Deno.remove(`${tmp}/model.safetensors.index.json`);
    await assertRejects(() => openModelWeights(tmp), HiraError, "no model.safetensors");
    await assertRejects(
      () => openModelWeights(`${tmp}/${shard1}`),
      HiraError,
      "is not a directory",
    );
    await assertRejects(() => openModelWeights(`${tmp}/nope`), HiraError, "directory not found");
    await assertRejects(() => openSafetensors(`${tmp}/nope.safetensors`), HiraError, "not found");
  });
});

// ---------------------------------------------------------------------------------------------
// File I/O

Deno.test("fileSource reads exactly the requested ranges, also concurrently", async () => {
  await withTempDir("hira-st-", async (tmp) => {
    const data = Uint8Array.from({ length: 5000 }, (_, i) => (i * 7) & 0xff);
    await Deno.writeFile(`${tmp}/f.bin`, data);
    const src = await fileSource(`${tmp}/f.bin`);
    assertEquals(src.size, 5000);
    const ranges = Array.from({ length: 20 }, (_, i) => [i * 201, 37 + i * 13]);
    const parts = await Promise.all(ranges.map(([o, n]) => src.read(o, n)));
    ranges.forEach(([o, n], i) => assertEquals(parts[i], data.slice(o, o + n)));
    assertEquals((await src.read(5000, 0)).length, 0);
    await assertRejects(() => src.read(4990, 11), HiraError, "past the end");
    src.close();
    src.close();
  });
});

Deno.test("atomic writes replace existing files and leave no temp files", async () => {
  await withTempDir("hira-st-", async (tmp) => {
    const json = `${tmp}/state.json`;
    await Deno.writeTextFile(json, "old contents that are longer than the new ones");
    await Deno.chmod(json, 0o600);
    await writeFileAtomic(json, '{"step": 2}');
    assertEquals(await Deno.readTextFile(json), '{"step": 2}');
    assertEquals((await Deno.stat(json)).mode! & 0o777, 0o600);
    await writeFileAtomic(json, new TextEncoder().encode("[]"));
    assertEquals(await Deno.readTextFile(json), "[]");

    const st = `${tmp}/adapter_model.safetensors`;
    const a = Float32Array.from({ length: 12 }, (_, i) => i - 5.5);
    await writeSafetensorsFile(st, [{ name: "a", dtype: "F32", shape: [3, 4], data: a }], {
      format: "pt",
    });
    await writeSafetensorsFile(st, [
      { name: "a", dtype: "F32", shape: [4, 3], data: a.map((x) => -x) },
      { name: "b", dtype: "BF16", shape: [2], data: Float32Array.of(1, 2) },
    ]);
    const f = await openSafetensors(st);
    try {
      assertEquals(f.names.sort(), ["a", "b"]);
      assertEquals(f.info("a").shape, [4, 3]);
      assertEquals(await f.read("a"), a.map((x) => -x));
      assertEquals(await f.read("b"), Float32Array.of(1, 2));
      assertEquals(f.header.metadata, {});
    } finally {
      f.close();
    }

    // A failed write (missing directory) is a clear error and creates nothing.
    await assertRejects(
      () => writeFileAtomic(`${tmp}/missing/x.json`, "{}"),
      HiraError,
      "does not exist",
    );
    // Bad tensors fail before anything is written.
    assertThrows(() => encodeSafetensors([{ name: "a", dtype: "F32", shape: [2], data: a }]));
    await assertRejects(() =>
      writeSafetensorsFile(`${tmp}/bad.safetensors`, [
        { name: "a", dtype: "F32", shape: [2], data: a },
      ])
    );

    const names = [];
    for await (const e of Deno.readDir(tmp)) names.push(e.name);
    assertEquals(names.sort(), ["adapter_model.safetensors", "state.json"]);
  });
});
