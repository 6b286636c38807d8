/**
 * Deterministic fuzzing of the loaders: seeded mutations of a small valid safetensors file, of
 * dataset JSON files, and of config.json / adapter_config.json. Every outcome must be success or
 * a HiraError (our one-line bad-input error); any other exception fails the test with the seed
 * and the mutation, so a failure can be replayed with `fuzzOne*(seed)`. Iteration counts are
 * fixed, and nothing a mutated header claims is allocated before it is checked against the file
 * size, so a header claiming a 1e12-element tensor costs nothing.
 */
import { assert, assertEquals } from "@std/assert";
import { join } from "@std/path";
import { isHiraError } from "../../lib/engine/errors.ts";
import { Rng } from "../../lib/engine/rand.ts";
import {
  bytesSource,
  concatBytes,
  encodeSafetensors,
  readHeader,
  readTensor,
  readTensorRows,
  type TensorToWrite,
} from "../../lib/model/safetensors.ts";
import { openSafetensors } from "../../lib/io/safetensors_deno.ts";
import { type DataRecord, parseRecords, trainExamples } from "../../lib/train/data.ts";
import { baseParameterCount, CONFIG_SIZE_LIMITS, parseConfig } from "../../lib/model/config.ts";
import { parseAdapterConfig } from "../../lib/model/peft.ts";
import { loadTokenizer } from "../../lib/io/tokenizer_deno.ts";
import { createTokenizer, MAX_TOKEN_ID, type Tokenizer } from "../../lib/model/tokenizer.ts";
import { sampleRecords, TINY_CONFIG } from "../_bad_input_fixture.ts";
import { withTempDir } from "../_util.ts";

const SAFETENSORS_CASES = 1500;
const DATASET_CASES = 1000;
const CONFIG_CASES = 600;
const SIZE_CASES = 400;
const TOKEN_ID_CASES = 200;

// ---------------------------------------------------------------------------------------------
// Valid inputs

function validSafetensors(): Uint8Array {
  const f32 = new Float32Array(24).map((_, i) => i / 7 - 1);
  const tensors: TensorToWrite[] = [
    { name: "model.embed_tokens.weight", dtype: "F32", shape: [6, 4], data: f32 },
    { name: "model.norm.weight", dtype: "F16", shape: [4], data: f32.subarray(0, 4) },
    { name: "lm_head.weight", dtype: "BF16", shape: [2, 3], data: f32.subarray(4, 10) },
    { name: "ids", dtype: "I32", shape: [3], data: Int32Array.of(1, -2, 3) },
    { name: "empty", dtype: "F32", shape: [0, 5], data: new Float32Array(0) },
    { name: "scalar", dtype: "F32", shape: [], data: Float32Array.of(2.5) },
  ];
  return concatBytes(encodeSafetensors(tensors, { format: "pt" }));
}

// ---------------------------------------------------------------------------------------------
// Mutation building blocks

/**
 * Stands for a 20,000-deep array, which JSON.stringify cannot write (stack overflow) but
 * JSON.parse reads fine: {@linkcode toJsonText} expands it in the text.
 */
const DEEP = "@@deeply-nested@@";
const DEEP_TEXT = "[".repeat(20_000) + "]".repeat(20_000);

/** JSON text of a mutated value, with {@linkcode DEEP} markers expanded. */
function toJsonText(v: unknown, indent?: number): string {
  return (JSON.stringify(v, null, indent) ?? "null").replaceAll(`"${DEEP}"`, DEEP_TEXT);
}

/** Values that break assumptions: wrong types, huge, negative, fractional, deep, odd strings. */
function evilValue(rng: Rng): unknown {
  const pool: (() => unknown)[] = [
    () => null,
    () => true,
    () => -1,
    () => 0,
    () => 1.5,
    () => 1e308,
    () => -1e308,
    () => 2 ** 53 + 2,
    () => 2 ** 64,
    () => "",
    () => "F32",
    () => "x".repeat(1 + rng.int(2000)),
    () => "\ud800\udfff\u0000",
    () => [],
    () => {},
    () => [[]],
    () => [-1],
    () => [1e12, 1e12],
    () => [1_000_000, 1_000_000],
    () => [0, 2 ** 60],
    () => [2 ** 31, 2 ** 31, 2 ** 31],
    () => [1, 2, 3].map(() => rng.int(100) - 5),
    () => JSON.parse('{"__proto__": {"dtype": "F32"}}'),
    () => DEEP,
    () => [DEEP],
    () => Array.from({ length: 5000 }, () => rng.int(10)),
  ];
  return pool[rng.int(pool.length)]();
}

/** A random path inside a JSON value (object keys and array indices), at most `depth` deep. */
function randomPath(v: unknown, rng: Rng, depth = 3): (string | number)[] {
  const path: (string | number)[] = [];
  let cur = v;
  for (let d = 0; d < depth; d++) {
    if (Array.isArray(cur) && cur.length) {
      const i = rng.int(cur.length);
      path.push(i);
      cur = cur[i];
    } else if (cur && typeof cur === "object" && Object.keys(cur).length) {
      const keys = Object.keys(cur);
      const k = keys[rng.int(keys.length)];
      path.push(k);
      cur = (cur as Record<string, unknown>)[k];
    } else break;
    if (rng.uniform(0, 1) < 0.3) break;
  }
  return path;
}

/** Applies one structural edit to a parsed JSON value; returns the new value and its name. */
function mutateJson(value: unknown, rng: Rng): { value: unknown; what: string } {
  const v = structuredClone(value);
  const path = randomPath(v, rng);
  const kind = rng.int(4);
  if (path.length === 0) return { value: evilValue(rng), what: "replace the whole value" };
  let parent = v as Record<string | number, unknown>;
  for (const p of path.slice(0, -1)) parent = parent[p] as Record<string | number, unknown>;
  const last = path[path.length - 1];
  const where = JSON.stringify(path);
  if (kind === 0 && !Array.isArray(parent)) {
    delete parent[last];
    return { value: v, what: `delete ${where}` };
  }
  if (kind === 1) {
    const extra = ["dtype", "shape", "data_offsets", "__metadata__", "instruction", "output"];
    const k = extra[rng.int(extra.length)];
    if (parent && typeof parent === "object") {
      (parent as Record<string, unknown>)[Array.isArray(parent) ? rng.int(4) : k] = evilValue(rng);
    }
    return { value: v, what: `set a sibling of ${where}` };
  }
  parent[last] = evilValue(rng);
  return { value: v, what: `replace ${where}` };
}

/** Text-level edits of a JSON document (produce things JSON.stringify never does). */
function mutateJsonText(text: string, rng: Rng): { text: string; what: string } {
  const kind = rng.int(8);
  const at = rng.int(text.length + 1);
  switch (kind) {
    case 0: {
      // A duplicated key: JSON.parse keeps the last one.
      const m = [...text.matchAll(/"([^"\\]{1,80})"\s*:/g)];
      if (!m.length) break;
      const k = m[rng.int(m.length)][1];
      const dup = `${JSON.stringify(k)}: ${toJsonText(evilValue(rng))},`;
      const brace = text.indexOf("{");
      if (brace < 0) break;
      return { text: text.slice(0, brace + 1) + dup + text.slice(brace + 1), what: `dup ${k}` };
    }
    case 1: {
      const giants = ["1e400", "-1e400", "123456789012345678901234567890", "-0", "0.0000001e-400"];
      const g = giants[rng.int(giants.length)];
      const m = [...text.matchAll(/-?\d+(\.\d+)?([eE][-+]?\d+)?/g)];
      if (!m.length) break;
      const hit = m[rng.int(m.length)];
      return {
        text: text.slice(0, hit.index) + g + text.slice(hit.index! + hit[0].length),
        what: `number ${hit[0]} -> ${g}`,
      };
    }
    case 2:
      return { text: text.slice(0, at), what: `truncate at ${at}` };
    case 3: {
      const junk = ["{", "}", "[", "]", ",", ":", '"', "\\", "\u0000", "\ufeff", "null", "NaN"];
      const j = junk[rng.int(junk.length)];
      return { text: text.slice(0, at) + j + text.slice(at), what: `insert ${JSON.stringify(j)}` };
    }
    case 4:
      return { text: text.slice(0, at) + text.slice(at + 1 + rng.int(20)), what: `cut at ${at}` };
    case 5: {
      const tops = ["[]", "{}", "null", "42", '"text"', "[[]]", "true", ""];
      const t = tops[rng.int(tops.length)];
      return { text: t, what: `top-level ${t}` };
    }
    case 6:
      return { text: "\ufeff" + text, what: "BOM" };
    default: {
      const c = String.fromCharCode(rng.int(0x10000));
      return {
        text: text.slice(0, at) + c + text.slice(at + 1),
        what: `char ${c.charCodeAt(0)} at ${at}`,
      };
    }
  }
  return { text, what: "unchanged" };
}

// ---------------------------------------------------------------------------------------------
// Safetensors

function withHeaderText(headerText: string, data: Uint8Array, lengthDelta = 0): Uint8Array {
  const h = new TextEncoder().encode(headerText);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(Math.max(0, h.length + lengthDelta)), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

function splitFile(bytes: Uint8Array): { header: string; data: Uint8Array } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return {
    header: new TextDecoder().decode(bytes.subarray(8, 8 + n)),
    data: bytes.subarray(8 + n),
  };
}

/** One seeded mutation of the valid file. */
function mutateSafetensors(valid: Uint8Array, seed: number): { bytes: Uint8Array; what: string } {
  const rng = new Rng(seed);
  const { header, data } = splitFile(valid);
  const kind = rng.int(8);
  switch (kind) {
    case 0: {
      const b = valid.slice();
      const flips = 1 + rng.int(8);
      for (let i = 0; i < flips; i++) b[rng.int(b.length)] ^= 1 << rng.int(8);
      return { bytes: b, what: `${flips} bit flips` };
    }
    case 1: {
      const b = valid.slice();
      b[rng.int(Math.min(b.length, 8 + header.length))] ^= 1 << rng.int(8);
      return { bytes: b, what: "a bit flip in the header" };
    }
    case 2: {
      const n = rng.int(valid.length);
      return { bytes: valid.slice(0, n), what: `truncated to ${n} bytes` };
    }
    case 3: {
      const b = valid.slice();
      const lens = [0n, 1n, 7n, BigInt(valid.length), 100_000_001n, 2n ** 63n, 2n ** 64n - 1n];
      const v = lens[rng.int(lens.length)];
      new DataView(b.buffer).setBigUint64(0, v, true);
      return { bytes: b, what: `header length ${v}` };
    }
    case 4:
    case 5: {
      const m = mutateJson(JSON.parse(header), rng);
      const text = toJsonText(m.value);
      return { bytes: withHeaderText(text, data), what: `header ${m.what}` };
    }
    case 6: {
      const m = mutateJsonText(header, rng);
      return { bytes: withHeaderText(m.text, data), what: `header text ${m.what}` };
    }
    default: {
      const extra = new Uint8Array(rng.int(64)).map(() => rng.int(256));
      const delta = rng.int(3) - 1;
      return {
        bytes: withHeaderText(header, concatBytes([data, extra]), delta),
        what: `${extra.length} trailing bytes, header length ${delta >= 0 ? "+" : ""}${delta}`,
      };
    }
  }
}

/** Loads every tensor of a (mutated) file in every way the engine reads tensors. */
async function loadAll(bytes: Uint8Array): Promise<void> {
  const src = bytesSource(bytes, "fuzz.safetensors");
  const h = await readHeader(src);
  for (const info of h.tensors.values()) {
    assert(info.end - info.begin <= bytes.length, "a tensor larger than the file was accepted");
    await readTensor(src, info, "raw");
    if (["F32", "F16", "BF16", "F64"].includes(info.dtype)) {
      await readTensor(src, info, "f32");
      await readTensor(src, info, "f16");
      const rows = info.shape.length ? info.shape[0] : 1;
      if (rows > 0) await readTensorRows(src, info, rows - 1, 1, "f32");
    } else {
      await readTensor(src, info, "f32").catch((e) => {
        if (!isHiraError(e)) throw e;
      });
    }
  }
}

/** How many mutations loaded and how many were refused (to check the fuzzing bites). */
const outcomes = {
  loaded: 0,
  refused: 0,
  parsed: 0,
  rejected: 0,
  sizesAccepted: 0,
  sizesRefused: 0,
  tokenizersBuilt: 0,
  tokenizersRefused: 0,
};

/** Runs one seeded safetensors mutation; returns a failure description or null. */
export async function fuzzOneSafetensors(seed: number, dir?: string): Promise<string | null> {
  const { bytes, what } = mutateSafetensors(validSafetensors(), seed);
  try {
    await loadAll(bytes).then(
      () => outcomes.loaded++,
      (e) => {
        if (isHiraError(e)) outcomes.refused++;
        throw e;
      },
    );
    if (dir) {
      // Every few cases also go through the file-backed source the CLI uses.
      const path = join(dir, `fuzz-${seed}.safetensors`);
      await Deno.writeFile(path, bytes);
      try {
        const f = await openSafetensors(path);
        try {
          for (const n of f.names) await f.read(n, "raw");
        } finally {
          f.close();
        }
      } finally {
        await Deno.remove(path);
      }
    }
    return null;
  } catch (e) {
    if (isHiraError(e) && !e.message.includes("\n")) return null;
    return `safetensors seed ${seed} (${what}): ${(e as Error)?.stack ?? e}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Datasets

function mutateDataset(seed: number): { text: string; what: string } {
  const rng = new Rng(seed);
  const base = sampleRecords(3);
  if (rng.int(2) === 0) {
    const m = mutateJson(base, rng);
    return { text: toJsonText(m.value, 1), what: m.what };
  }
  return mutateJsonText(JSON.stringify(base, null, 1), rng);
}

/** Runs one seeded dataset mutation; returns a failure description or null. */
export async function fuzzOneDataset(
  seed: number,
  tok: Tokenizer,
  dir?: string,
): Promise<string | null> {
  const { text, what } = mutateDataset(seed);
  try {
    for (const fields of ["alpaca", "metamath"] as const) {
      let records: DataRecord[] | null = null;
      try {
        records = parseRecords(text, "fuzz.json", { fields });
        if (fields === "alpaca") outcomes.parsed++;
      } catch (e) {
        if (!isHiraError(e) || e.message.includes("\n")) throw e;
        if (fields === "alpaca") outcomes.rejected++;
      }
      if (records) {
        trainExamples(records, tok, "common_170k");
        trainExamples(records, tok, "convai2");
      }
    }
    if (dir) {
      const path = join(dir, `fuzz-${seed}.json`);
      await Deno.writeTextFile(path, text);
      try {
        parseRecords(await Deno.readTextFile(path), path);
      } catch (e) {
        if (!isHiraError(e)) throw e;
      } finally {
        await Deno.remove(path);
      }
    }
    return null;
  } catch (e) {
    return `dataset seed ${seed} (${what}): ${(e as Error)?.stack ?? e}`;
  }
}

// ---------------------------------------------------------------------------------------------
// config.json and adapter_config.json

/** Runs one seeded config mutation; returns a failure description or null. */
export function fuzzOneConfig(seed: number): string | null {
  const rng = new Rng(seed);
  const adapter = {
    peft_type: "HIRA",
    r: 4,
    target_modules: ["q_proj", "v_proj"],
    base_model_name_or_path: "m",
  };
  const isAdapter = rng.int(3) === 0;
  const base = isAdapter ? adapter : TINY_CONFIG;
  let value: unknown, what: string;
  if (rng.int(3) === 0) {
    const m = mutateJsonText(JSON.stringify(base), rng);
    what = m.what;
    try {
      value = JSON.parse(m.text);
    } catch {
      return null; // the loaders turn a JSON syntax error into a HiraError themselves
    }
  } else {
    const m = mutateJson(base, rng);
    value = JSON.parse(toJsonText(m.value));
    what = m.what;
  }
  try {
    if (isAdapter) parseAdapterConfig(value, "adapter_config.json");
    else parseConfig(value, "config.json");
    return null;
  } catch (e) {
    if (isHiraError(e) && !e.message.includes("\n") && e.message.length < 2000) return null;
    return `${isAdapter ? "adapter " : ""}config seed ${seed} (${what}): ${
      (e as Error)?.stack ?? e
    }`;
  }
}

// ---------------------------------------------------------------------------------------------
// config.json sizes and tokenizer ids

/** Sizes a hostile or mistaken config.json may give (as JSON text, so 1e400 is Infinity). */
const HOSTILE_SIZES = [
  "0",
  "-1",
  "-7",
  "1.5",
  "1e6",
  "1e12",
  "1e15",
  "9007199254740993",
  "1e308",
  "1e400",
  '"16"',
  "null",
  "true",
  "[16]",
  "{}",
];

/**
 * One seeded config whose size fields (1 to 3 of them) get hostile values or values around their
 * limit; a config that parses must have every size within {@linkcode CONFIG_SIZE_LIMITS}, and
 * counting its parameters must be instant (nothing is sized by a value that was not bounded).
 */
export function fuzzOneConfigSize(seed: number): string | null {
  const rng = new Rng(seed);
  const keys = Object.keys(CONFIG_SIZE_LIMITS);
  let text = JSON.stringify(TINY_CONFIG);
  const what: string[] = [];
  for (let n = 1 + rng.int(3); n > 0; n--) {
    const key = keys[rng.int(keys.length)];
    const lim = CONFIG_SIZE_LIMITS[key];
    const near = [lim, lim + 1, lim * 2, Math.floor(lim / 2)].map(String);
    const pool = [...HOSTILE_SIZES, ...near];
    const v = pool[rng.int(pool.length)];
    const cfg = JSON.parse(text);
    delete cfg[key];
    text = JSON.stringify(cfg).replace(/}$/, `, "${key}": ${v}}`);
    what.push(`${key}=${v}`);
  }
  const t0 = performance.now();
  try {
    const cfg = parseConfig(JSON.parse(text), "config.json");
    const sizes: Record<string, number> = {
      num_hidden_layers: cfg.numLayers,
      hidden_size: cfg.hiddenSize,
      intermediate_size: cfg.intermediateSize,
      num_attention_heads: cfg.numHeads,
      num_key_value_heads: cfg.numKvHeads,
      head_dim: cfg.headDim,
      vocab_size: cfg.vocabSize,
      max_position_embeddings: cfg.maxPositionEmbeddings,
    };
    for (const [k, v] of Object.entries(sizes)) {
      if (!(Number.isInteger(v) && v >= 1 && v <= CONFIG_SIZE_LIMITS[k])) {
        return `size seed ${seed} (${what.join(", ")}): accepted ${k} = ${v}`;
      }
    }
    if (!Number.isSafeInteger(baseParameterCount(cfg))) {
      return `size seed ${seed} (${what.join(", ")}): parameter count is not a safe integer`;
    }
    outcomes.sizesAccepted++;
  } catch (e) {
    if (!(isHiraError(e) && !e.message.includes("\n") && e.message.length < 300)) {
      return `size seed ${seed} (${what.join(", ")}): ${(e as Error)?.stack ?? e}`;
    }
    outcomes.sizesRefused++;
  }
  const ms = performance.now() - t0;
  return ms > 200 ? `size seed ${seed} (${what.join(", ")}): took ${ms.toFixed(0)} ms` : null;
}

/** Ids (JSON text) a hostile tokenizer.json may give a token. */
const HOSTILE_IDS = ["-7", "-1", "2.5", "1e15", "1e400", String(MAX_TOKEN_ID + 1), '"3"', "null"];

/**
 * One seeded tokenizer.json (the embedded model's) with a vocab id, an added token's id or the
 * vocab itself broken; a tokenizer that builds must encode and decode a sample with ids that
 * are integers inside its vocabulary.
 */
export function fuzzOneTokenizer(seed: number, base: Record<string, unknown>): string | null {
  const rng = new Rng(seed);
  const json = structuredClone(base) as {
    model: { vocab: unknown };
    added_tokens: { id: unknown }[];
  };
  const vocab = json.model.vocab as Record<string, unknown>;
  const tokens = Object.keys(vocab);
  const id = JSON.parse(HOSTILE_IDS[rng.int(HOSTILE_IDS.length)]);
  let what: string;
  const kind = rng.int(4);
  if (kind === 0) {
    const t = tokens[rng.int(tokens.length)];
    vocab[t] = id;
    what = `vocab[${JSON.stringify(t)}] = ${id}`;
  } else if (kind === 1) {
    const i = rng.int(json.added_tokens.length);
    json.added_tokens[i].id = id;
    what = `added_tokens[${i}].id = ${id}`;
  } else if (kind === 2) {
    const forms = [Object.entries(vocab), "vocab", 7, null, Object.values(vocab)];
    json.model.vocab = forms[rng.int(forms.length)];
    what = `vocab = ${JSON.stringify(json.model.vocab).slice(0, 20)}`;
  } else {
    what = "unchanged";
  }
  try {
    const tok = createTokenizer({ tokenizer: json, source: "tokenizer.json" });
    const ids = tok.encode("Please answer: true or false?", { addSpecial: true });
    for (const x of ids) {
      if (!(Number.isInteger(x) && x >= 0 && x < tok.vocabSize)) {
        return `tokenizer seed ${seed} (${what}): encoded id ${x} (vocab ${tok.vocabSize})`;
      }
    }
    tok.decode(ids);
    outcomes.tokenizersBuilt++;
    return null;
  } catch (e) {
    if (isHiraError(e) && !e.message.includes("\n") && e.message.length < 300) {
      outcomes.tokenizersRefused++;
      return null;
    }
    return `tokenizer seed ${seed} (${what}): ${(e as Error)?.stack ?? e}`;
  }
}

// ---------------------------------------------------------------------------------------------
// The tests

function report(failures: string[], total: number): void {
  assertEquals(
    failures.length,
    0,
    `${failures.length}/${total} mutations escaped as non-HiraErrors:\n` +
      failures.slice(0, 10).join("\n\n"),
  );
}

Deno.test(`fuzz: ${SAFETENSORS_CASES} mutated safetensors files load or fail with a HiraError`, async () => {
  await withTempDir("hira-fuzz-", async (dir) => {
    const failures: string[] = [];
    for (let seed = 0; seed < SAFETENSORS_CASES; seed++) {
      const f = await fuzzOneSafetensors(seed, seed % 10 === 0 ? dir : undefined);
      if (f) failures.push(f);
    }
    report(failures, SAFETENSORS_CASES);
    // Both outcomes must be common, or the mutations are too mild or too crude to find anything.
    assert(outcomes.loaded > SAFETENSORS_CASES / 10, `only ${outcomes.loaded} loaded`);
    assert(outcomes.refused > SAFETENSORS_CASES / 3, `only ${outcomes.refused} refused`);
  });
});

Deno.test(`fuzz: ${DATASET_CASES} mutated dataset files parse or fail with a HiraError`, async () => {
  const tok = await loadTokenizer(new URL("../../data_file/tiny/model/", import.meta.url).pathname);
  await withTempDir("hira-fuzz-", async (dir) => {
    const failures: string[] = [];
    for (let seed = 0; seed < DATASET_CASES; seed++) {
      const f = await fuzzOneDataset(seed, tok, seed % 10 === 0 ? dir : undefined);
      if (f) failures.push(f);
    }
    report(failures, DATASET_CASES);
    assert(outcomes.parsed > DATASET_CASES / 10, `only ${outcomes.parsed} parsed`);
    assert(outcomes.rejected > DATASET_CASES / 3, `only ${outcomes.rejected} rejected`);
  });
});

Deno.test(`fuzz: ${CONFIG_CASES} mutated config.json / adapter_config.json`, () => {
  const failures: string[] = [];
  for (let seed = 0; seed < CONFIG_CASES; seed++) {
    const f = fuzzOneConfig(seed);
    if (f) failures.push(f);
  }
  report(failures, CONFIG_CASES);
});

Deno.test("fuzz: a header claiming a 1e12-element tensor is refused without allocating", async () => {
  const { data } = splitFile(validSafetensors());
  for (
    const [shape, offsets] of [
      [[1_000_000, 1_000_000], [0, 4e12]],
      [[1_000_000, 1_000_000], [0, 96]],
      [[2 ** 40, 2 ** 40], [0, 0]],
      [[2 ** 26, 2 ** 26, 2 ** 26], [0, 8]],
    ]
  ) {
    const header = JSON.stringify({ big: { dtype: "F32", shape, data_offsets: offsets } });
    const bytes = withHeaderText(header, data);
    const e = await readHeader(bytesSource(bytes, "big.safetensors")).then(() => null, (e) => e);
    assert(isHiraError(e), `shape ${shape} offsets ${offsets}: ${e}`);
  }
});

function assertShortHiraError(e: unknown, label: string): void {
  if (!isHiraError(e)) throw new Error(`${label}: not a HiraError: ${e}`);
  assert(e.message.length < 300, `${label}: ${e.message.length}-character message`);
}

Deno.test("fuzz regressions: deeply nested values are refused with a short message", async () => {
  // Found by this fuzzer: JSON.stringify / String() of a 20,000-deep array overflowed the stack
  // inside error messages (a RangeError instead of a HiraError), and a 5,000-number shape
  // produced a 10 KB "one-line" message.
  const deep = "[".repeat(100_000) + "]".repeat(100_000);
  const long = JSON.stringify(Array.from({ length: 5000 }, (_, i) => (i % 9) + 1));
  for (const shape of [deep, `[${deep}]`, long]) {
    const header = `{"t": {"dtype": "F32", "shape": ${shape}, "data_offsets": [0, 0]}}`;
    const e = await readHeader(bytesSource(withHeaderText(header, new Uint8Array(0)), "d"))
      .then(() => null, (e) => e);
    assertShortHiraError(e, shape.slice(0, 20));
  }
  for (const key of ["hidden_size", "model_type", "rope_theta", "eos_token_id", "torch_dtype"]) {
    const cfg = JSON.parse(JSON.stringify(TINY_CONFIG).replace(/}$/, `, "${key}": ${deep}}`));
    try {
      parseConfig(cfg, "config.json");
    } catch (e) {
      assertShortHiraError(e, key);
    }
  }
  for (const key of ["peft_type", "r", "base_model_name_or_path"]) {
    const ac = JSON.parse(`{"peft_type": "HIRA", "r": 2, "target_modules": ["q_proj"]}`);
    ac[key] = JSON.parse(deep);
    try {
      parseAdapterConfig(ac);
    } catch (e) {
      assertShortHiraError(e, key);
    }
  }
});

Deno.test(`fuzz: ${SIZE_CASES} configs with hostile sizes are bounded or refused at once`, () => {
  const failures: string[] = [];
  for (let seed = 0; seed < SIZE_CASES; seed++) {
    const f = fuzzOneConfigSize(seed);
    if (f) failures.push(f);
  }
  report(failures, SIZE_CASES);
  assert(outcomes.sizesAccepted > SIZE_CASES / 20, `only ${outcomes.sizesAccepted} accepted`);
  assert(outcomes.sizesRefused > SIZE_CASES / 2, `only ${outcomes.sizesRefused} refused`);
  // The cases of the issue, each refused with one line naming the field.
  for (
    const [key, v] of [["num_hidden_layers", 1e6], ["num_hidden_layers", 1e12], [
      "vocab_size",
      1e9,
    ]] as const
  ) {
    const e = (() => {
      try {
        parseConfig({ ...TINY_CONFIG, [key]: v }, "config.json");
      } catch (e) {
        return e;
      }
    })();
    assert(isHiraError(e) && e.message.startsWith(`config.json: ${key} is ${v}`), String(e));
  }
});

Deno.test(`fuzz: ${TOKEN_ID_CASES} tokenizers with hostile ids build correctly or are refused`, async () => {
  const base = JSON.parse(
    await Deno.readTextFile(new URL("../../data_file/tiny/model/tokenizer.json", import.meta.url)),
  );
  const failures: string[] = [];
  for (let seed = 0; seed < TOKEN_ID_CASES; seed++) {
    const f = fuzzOneTokenizer(seed, base);
    if (f) failures.push(f);
  }
  report(failures, TOKEN_ID_CASES);
  assert(outcomes.tokenizersBuilt > TOKEN_ID_CASES / 10, `only ${outcomes.tokenizersBuilt} built`);
  assert(outcomes.tokenizersRefused > TOKEN_ID_CASES / 2, `only ${outcomes.tokenizersRefused}`);
  // The cases: a negative, a huge and a fractional id, and a vocab that is an array.
  for (const id of [-7, 1e15, 2.5]) {
    const json = structuredClone(base);
    json.model.vocab[Object.keys(json.model.vocab)[5]] = id;
    const e = (() => {
      try {
        createTokenizer({ tokenizer: json, source: "tokenizer.json" });
      } catch (e) {
        return e;
      }
    })();
    assert(isHiraError(e) && /model\.vocab entry 5 has id/.test(e.message), `${id}: ${e}`);
  }
  const arr = structuredClone(base);
  arr.model.vocab = Object.entries(arr.model.vocab);
  const e = (() => {
    try {
      createTokenizer({ tokenizer: arr, source: "tokenizer.json" });
    } catch (e) {
      return e;
    }
  })();
  assert(isHiraError(e) && /model\.vocab of a BPE model must be an object/.test(e.message), `${e}`);
});
