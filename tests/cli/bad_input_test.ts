/**
 * Bad input, table-driven: every case breaks one thing in a fresh fixture (a tiny model folder,
 * a data root and an adapter), runs train.ts / eval.ts (or, where a CLI run adds nothing, the lib
 * function the CLI calls) and asserts the exit code, a ONE-line message naming the file or flag
 * and the problem, and that nothing was written: the fixture tree is byte-for-byte unchanged.
 */
import { assert, assertEquals } from "@std/assert";
import { join } from "@std/path";
import { isHiraError } from "../../lib/engine/errors.ts";
import { parseConfig } from "../../lib/model/config.ts";
import { parseTrainArgs } from "../../lib/cli/flags.ts";
import { parseEvalArgs } from "../../lib/cli/flags.ts";
import { parseRecords } from "../../lib/train/data.ts";
import { checkAdapterKeys, parseAdapterConfig } from "../../lib/model/peft.ts";
import { openModelWeights, openSafetensors } from "../../lib/io/safetensors_deno.ts";
import { loadTokenizer } from "../../lib/io/tokenizer_deno.ts";
import { openAdapterDir } from "../../lib/io/peft_deno.ts";
import { readConfig } from "../../lib/io/model_deno.ts";
import {
  adapterTensorsFor,
  type Fixture,
  jsonText,
  modelTensors,
  safetensorsBytes,
  sampleRecords,
  snapshot,
  TINY_CONFIG,
  trainFlags,
  withFixture,
} from "../_bad_input_fixture.ts";

const REPO = new URL("../..", import.meta.url).pathname;
const CFG = parseConfig(TINY_CONFIG);

/** How a case is run. */
type Run =
  | { cli: "train" | "eval"; args: (f: Fixture) => string[] }
  | { lib: (f: Fixture) => unknown };

/** One bad input. */
interface Case {
  name: string;
  /** Breaks the fixture (the default fixture is valid). */
  setup?: (f: Fixture) => Promise<void>;
  run: Run;
  /** Expected exit code of a CLI run (default 2, bad input). */
  exit?: number;
  /** The one-line message (without the "error: " prefix); a function gets the fixture. */
  message: RegExp | ((f: Fixture) => RegExp);
}

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

// ---------------------------------------------------------------------------------------------
// Ways to break files

/** A safetensors file whose header is exactly `header` (any text), then `data`. */
function rawSafetensors(header: string, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** The fixture's model.safetensors split into its header object and data bytes. */
async function splitWeights(
  f: Fixture,
): Promise<{ header: Record<string, unknown>; data: Uint8Array }> {
  const bytes = await Deno.readFile(f.weights);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  return { header, data: bytes.subarray(8 + n) };
}

/** Rewrites model.safetensors with its header passed through `edit`. */
function editHeader(edit: (h: Record<string, Record<string, unknown>>) => void) {
  return async (f: Fixture) => {
    const { header, data } = await splitWeights(f);
    edit(header as Record<string, Record<string, unknown>>);
    await Deno.writeFile(f.weights, rawSafetensors(JSON.stringify(header), data));
  };
}

/** Makes a FIFO at `path` (replacing a file there): reading it would block forever. */
async function mkfifo(path: string): Promise<void> {
  await Deno.remove(path).catch(() => {});
  const r = await new Deno.Command("mkfifo", { args: [path] }).output();
  if (!r.success) throw new Error(`mkfifo ${path} failed`);
}

/** Replaces `path` with a symlink to `target`. */
async function linkTo(path: string, target: string): Promise<void> {
  await Deno.remove(path).catch(() => {});
  await Deno.symlink(target, path);
}

/** A valid trainer_state.json of checkpoint-1. */
const STATE = {
  global_step: 1,
  total_steps: 2,
  epoch: 0.5,
  loader: { epoch: 0, position: 1, epochRngState: [1, 2, 3, 4] },
  best_metric: null,
  best_model_checkpoint: null,
  evals_without_improvement: 0,
  dropout_counters: {},
  log_history: [],
};

/**
 * A resumable run folder `out/run` (args.json from the fixture's flags, checkpoint-1 with the
 * fixture's adapter and STATE), with `args` and `state` fields overridden.
 */
function resumable(edit: { args?: Record<string, unknown>; state?: Record<string, unknown> }) {
  return async (f: Fixture) => {
    const run = join(f.out, "run"), ck = join(run, "checkpoint-1");
    await Deno.mkdir(ck, { recursive: true });
    const a = parseTrainArgs(trainFlags(f));
    await Deno.writeTextFile(
      join(run, "args.json"),
      JSON.stringify({ ...a, given: [...a.given], ...edit.args }),
    );
    for (const n of ["adapter_config.json", "adapter_model.safetensors"]) {
      await Deno.copyFile(join(f.adapter, n), join(ck, n));
    }
    await Deno.writeTextFile(
      join(ck, "trainer_state.json"),
      JSON.stringify({ ...STATE, ...edit.state }),
    );
  };
}

const EMBED = "model.embed_tokens.weight";
const Q = "model.layers.0.self_attn.q_proj.weight";
const K = "model.layers.0.self_attn.k_proj.weight";

async function editJson(file: string, edit: (j: Record<string, unknown>) => unknown) {
  const j = JSON.parse(await Deno.readTextFile(file));
  edit(j);
  await Deno.writeTextFile(file, JSON.stringify(j));
}

const editConfig = (edit: (j: Record<string, unknown>) => unknown) => (f: Fixture) =>
  editJson(join(f.model, "config.json"), edit);

const writeTrain = (v: unknown) => (f: Fixture) =>
  Deno.writeTextFile(f.trainJson, typeof v === "string" ? v : jsonText(v));

const writeAdapterWeights =
  (edit: (ts: ReturnType<typeof adapterTensorsFor>) => void) => async (f: Fixture) => {
    const ts = adapterTensorsFor(CFG);
    edit(ts);
    await Deno.writeFile(join(f.adapter, "adapter_model.safetensors"), safetensorsBytes(ts));
  };

const perplexityArgs = (f: Fixture, extra: string[] = []) => [
  "perplexity",
  `--model=${f.model}`,
  `--tokens=${f.tokens}`,
  ...extra,
];

const train = (...extra: string[]): Run => ({ cli: "train", args: (f) => trainFlags(f, extra) });
/** eval merge of the fixture's model and adapter into the folder `out` under its root. */
const mergeInto = (out: string, ...extra: string[]): Run => ({
  cli: "eval",
  args: (f) => [
    "merge",
    `--model=${f.model}`,
    `--ckpt=${f.adapter}`,
    `--out=${join(f.root, out)}`,
    ...extra,
  ],
});

// ---------------------------------------------------------------------------------------------
// The table

const CASES: Case[] = [
  // --- safetensors ---------------------------------------------------------------------------
  {
    name: "weights shorter than the 8-byte header length",
    setup: (f) => Deno.writeFile(f.weights, new Uint8Array([1, 2, 3])),
    run: train(),
    message: (f) => new RegExp(`^${esc(f.weights)}: file is shorter than 8 bytes`),
  },
  {
    name: "weights truncated inside the header",
    setup: async (f) => {
      const b = await Deno.readFile(f.weights);
      await Deno.writeFile(f.weights, b.subarray(0, 40));
    },
    run: train(),
    message: (f) => new RegExp(`^${esc(f.weights)}: header length \\d+ runs past the end`),
  },
  {
    name: "weights truncated inside the data",
    setup: async (f) => {
      const b = await Deno.readFile(f.weights);
      await Deno.writeFile(f.weights, b.subarray(0, b.length - 100));
    },
    run: train(),
    message: (f) => new RegExp(`^${esc(f.weights)}: tensor '.+': data_offsets .* past the end`),
  },
  {
    name: "header length over 100 MB",
    setup: async (f) => {
      const b = new Uint8Array(64);
      new DataView(b.buffer).setBigUint64(0, 200_000_000n, true);
      await Deno.writeFile(f.weights, b);
    },
    run: { cli: "eval", args: (f) => perplexityArgs(f) },
    message: (f) =>
      new RegExp(`^${esc(f.weights)}: header length 200000000 bytes is over the 100 MB`),
  },
  {
    name: "header is not JSON",
    setup: (f) => Deno.writeFile(f.weights, rawSafetensors("{not json")),
    run: train(),
    message: (f) => new RegExp(`^${esc(f.weights)}: header is not valid JSON`),
  },
  {
    name: "header is a JSON array",
    setup: (f) => Deno.writeFile(f.weights, rawSafetensors("[1, 2]")),
    run: { lib: (f) => openSafetensors(f.weights) },
    message: /model\.safetensors: header is not a JSON object but an array$/,
  },
  {
    name: "header is not UTF-8",
    setup: async (f) => {
      const b = rawSafetensors('{"a": 1}');
      b[10] = 0xff;
      await Deno.writeFile(f.weights, b);
    },
    run: { lib: (f) => openSafetensors(f.weights) },
    message: /model\.safetensors: header is not valid UTF-8$/,
  },
  {
    name: "unknown dtype",
    setup: editHeader((h) => (h[Q].dtype = "F33")),
    run: train(),
    message: (f) =>
      new RegExp(`^${esc(f.weights)}: tensor '${esc(Q)}': unknown dtype 'F33' \\(known: F64`),
  },
  {
    name: "offsets past the end of the data",
    setup: editHeader((h) => {
      const [b, e] = h[Q].data_offsets as number[];
      h[Q].data_offsets = [b + 1_000_000, e + 1_000_000];
    }),
    run: { cli: "eval", args: (f) => perplexityArgs(f) },
    message:
      /model\.safetensors: tensor '.*q_proj\.weight': data_offsets \[\d+, \d+\] end is past the end of the data area/,
  },
  {
    name: "overlapping tensors",
    setup: editHeader((h) => {
      h[K].data_offsets = [...(h[Q].data_offsets as number[])];
      h[K].shape = [...(h[Q].shape as number[])];
    }),
    run: train(),
    message:
      /model\.safetensors: tensors '.*_proj\.weight' \[\d+, \d+\) and '.*_proj\.weight' \[\d+, \d+\) overlap$/,
  },
  {
    name: "shape does not match the byte length",
    setup: editHeader((h) => (h[Q].shape = [16, 17])),
    run: train(),
    message:
      /model\.safetensors: tensor '.*q_proj\.weight': byte length 1024 does not match shape \[16,17\] × F32 \(1088 bytes\)$/,
  },
  {
    name: "negative data offset",
    setup: editHeader((h) => (h[Q].data_offsets = [-4, 1020])),
    run: { lib: (f) => openSafetensors(f.weights) },
    message:
      /tensor '.*q_proj\.weight': data_offsets \[-4,1020\] is not a pair \[begin, end\] of non-negative integers$/,
  },
  {
    name: "begin after end",
    setup: editHeader((h) => (h[Q].data_offsets = [1024, 0])),
    run: { lib: (f) => openSafetensors(f.weights) },
    message: /data_offsets \[1024, 0\] has begin > end$/,
  },
  {
    name: "negative dimension",
    setup: editHeader((h) => (h[Q].shape = [-16, 16])),
    run: { lib: (f) => openSafetensors(f.weights) },
    message: /shape \[-16,16\] has a negative or non-integer dimension/,
  },
  {
    name: "a 1e12-element tensor is refused before any allocation",
    setup: editHeader((h) => (h[Q].shape = [1_000_000, 1_000_000])),
    run: { lib: (f) => openSafetensors(f.weights) },
    message:
      /byte length 1024 does not match shape \[1000000,1000000\] × F32 \(4000000000000 bytes\)/,
  },
  {
    name: "__metadata__ with a non-string value",
    setup: editHeader((
      h,
    ) => (h.__metadata__ = { format: 3 } as unknown as Record<string, unknown>)),
    run: { lib: (f) => openSafetensors(f.weights) },
    message: /__metadata__ is not a string-to-string map: key "format" has number 3$/,
  },
  {
    name: "a weight stored as I32",
    setup: editHeader((h) => (h[Q].dtype = "I32")),
    run: train(),
    message:
      /model\.safetensors: tensor '.*q_proj\.weight' has dtype I32, which cannot be read as f(32|16)/,
  },
  {
    name: "a tensor the config needs is missing",
    setup: async (f) => {
      const ts = modelTensors(CFG).filter((t) => t.name !== K);
      await Deno.writeFile(f.weights, safetensorsBytes(ts));
    },
    run: train(),
    message:
      /model\/model\.safetensors: missing tensor model\.layers\.0\.self_attn\.k_proj\.weight \(config\.json expects shape \[8,16\]\)$/,
  },
  {
    name: "a tensor shaped unlike the config",
    setup: async (f) => {
      const ts = modelTensors(CFG).map((t) => t.name === EMBED ? { ...t, shape: [320, 32] } : t);
      await Deno.writeFile(f.weights, safetensorsBytes(ts));
    },
    run: { cli: "eval", args: (f) => perplexityArgs(f) },
    message:
      /model\.safetensors: tensor model\.embed_tokens\.weight has shape \[320,32\], config\.json expects \[640,16\]$/,
  },
  {
    name: "no weights file at all",
    setup: (f) => Deno.remove(f.weights),
    run: train(),
    message: (f) =>
      new RegExp(`^${esc(f.model)}: no model\\.safetensors or model\\.safetensors\\.index\\.json$`),
  },
  {
    name: "sharded index names a missing shard",
    setup: async (f) => {
      await Deno.rename(f.weights, join(f.model, "model-00001-of-00002.safetensors"));
      const map: Record<string, string> = {};
      for (const t of modelTensors(CFG)) {
        map[t.name] = t.name === Q
          ? "model-00002-of-00002.safetensors"
          : "model-00001-of-00002.safetensors";
      }
      await Deno.writeTextFile(
        join(f.model, "model.safetensors.index.json"),
        JSON.stringify({ weight_map: map }),
      );
    },
    run: { lib: (f) => openModelWeights(f.model) },
    message:
      /model-00002-of-00002\.safetensors: shard listed in .*model\.safetensors\.index\.json is missing$/,
  },
  {
    name: "sharded index escapes the folder",
    setup: async (f) => {
      await Deno.remove(f.weights);
      await Deno.writeTextFile(
        join(f.model, "model.safetensors.index.json"),
        JSON.stringify({ weight_map: { [Q]: "../../etc/passwd" } }),
      );
    },
    run: train(),
    message:
      /model\.safetensors\.index\.json: weight_map\['.*'\] = '\.\.\/\.\.\/etc\/passwd' must be a file next to the index$/,
  },
  {
    name: "sharded index without weight_map",
    setup: async (f) => {
      await Deno.remove(f.weights);
      await Deno.writeTextFile(join(f.model, "model.safetensors.index.json"), "{}");
    },
    run: { lib: (f) => openModelWeights(f.model) },
    message: /model\.safetensors\.index\.json: missing "weight_map"$/,
  },

  // --- config.json ---------------------------------------------------------------------------
  {
    name: "config.json missing",
    setup: (f) => Deno.remove(join(f.model, "config.json")),
    run: train(),
    message: /model\/config\.json: missing: a model folder needs config\.json$/,
  },
  {
    name: "config.json is not JSON",
    setup: (f) => Deno.writeTextFile(join(f.model, "config.json"), "{hidden_size: 16"),
    run: train(),
    message: /model\/config\.json: not valid JSON/,
  },
  {
    name: "config.json without hidden_size",
    setup: editConfig((j) => void delete j.hidden_size),
    run: train(),
    message: /model\/config\.json: missing field hidden_size$/,
  },
  {
    name: "config.json without num_hidden_layers",
    setup: editConfig((j) => void delete j.num_hidden_layers),
    run: { lib: (f) => readConfig(f.model) },
    message: /config\.json: missing field num_hidden_layers$/,
  },
  {
    name: "unsupported architecture",
    setup: editConfig((j) => {
      j.architectures = ["GPT2LMHeadModel"];
      j.model_type = "gpt2";
    }),
    run: train(),
    message:
      /model\/config\.json: unsupported architecture GPT2LMHeadModel; supported: LlamaForCausalLM/,
  },
  {
    name: "heads not a multiple of KV heads",
    setup: editConfig((j) => (j.num_key_value_heads = 3)),
    run: { lib: (f) => readConfig(f.model) },
    message:
      /config\.json: num_attention_heads \(2\) is not a multiple of num_key_value_heads \(3\)$/,
  },
  {
    name: "a non-integer layer count",
    setup: editConfig((j) => (j.num_hidden_layers = 1.5)),
    run: train(),
    message: /model\/config\.json: num_hidden_layers must be a positive integer, got 1\.5$/,
  },
  {
    name: "a layer count of 1e12 (--dry_run)",
    setup: editConfig((j) => (j.num_hidden_layers = 1e12)),
    run: train("--dry_run"),
    message: /model\/config\.json: num_hidden_layers is 1000000000000, more than the limit 1024$/,
  },
  {
    name: "a layer count of 1e6",
    setup: editConfig((j) => (j.num_hidden_layers = 1e6)),
    run: train(),
    message: /model\/config\.json: num_hidden_layers is 1000000, more than the limit 1024$/,
  },
  {
    name: "a vocabulary of 1e9",
    setup: editConfig((j) => (j.vocab_size = 1e9)),
    run: { lib: (f) => readConfig(f.model) },
    message: /config\.json: vocab_size is 1000000000, more than the limit 4194304$/,
  },
  {
    name: "max_position_embeddings of 1e15",
    setup: editConfig((j) => (j.max_position_embeddings = 1e15)),
    run: { lib: (f) => readConfig(f.model) },
    message: /config\.json: max_position_embeddings is 1000000000000000, more than the limit/,
  },
  {
    name: "an unsupported activation",
    setup: editConfig((j) => (j.hidden_act = "gelu")),
    run: { lib: (f) => readConfig(f.model) },
    message: /config\.json: hidden_act "gelu" is not supported \(silu\)$/,
  },
  {
    name: "an unsupported RoPE scaling",
    setup: editConfig((j) => (j.rope_scaling = { rope_type: "yarn", factor: 4 })),
    run: { lib: (f) => readConfig(f.model) },
    message: /config\.json: rope_scaling type "yarn" is not supported/,
  },
  {
    name: "config.json is an array",
    run: { lib: () => parseConfig([TINY_CONFIG], "m/config.json") },
    message: /^m\/config\.json: is not a JSON object$/,
  },
  {
    name: "--model folder that does not exist",
    run: { cli: "train", args: (f) => trainFlags(f, [`--model=${join(f.root, "nope")}`]) },
    message: /nope: model folder not found$/,
  },

  // --- tokenizer -----------------------------------------------------------------------------
  {
    name: "tokenizer.json missing",
    setup: (f) => Deno.remove(join(f.model, "tokenizer.json")),
    run: train(),
    message: /model\/tokenizer\.json: file not found \(a tokenizer folder needs tokenizer\.json\)$/,
  },
  {
    name: "tokenizer.json is not JSON",
    setup: (f) => Deno.writeTextFile(join(f.model, "tokenizer.json"), '{"model": '),
    run: train(),
    message: /model\/tokenizer\.json: not valid JSON/,
  },
  {
    name: "tokenizer.json without a model",
    setup: (f) => Deno.writeTextFile(join(f.model, "tokenizer.json"), '{"version": "1.0"}'),
    run: train(),
    message: /model\/tokenizer\.json: tokenizer\.json has no "model" object$/,
  },
  {
    name: "tokenizer.json with a broken model",
    setup: (f) =>
      Deno.writeTextFile(join(f.model, "tokenizer.json"), '{"model": {"type": "Nope"}}'),
    run: { lib: (f) => loadTokenizer(f.model) },
    message: /tokenizer\.json: (cannot build tokenizer|no eos_token)/,
  },
  {
    name: "a negative token id in tokenizer.json",
    setup: (f) =>
      editJson(join(f.model, "tokenizer.json"), (j) => {
        const v = (j.model as { vocab: Record<string, number> }).vocab;
        v[Object.keys(v)[3]] = -7;
      }),
    run: train(),
    message: /model\/tokenizer\.json: model\.vocab entry 3 has id -7; ids are integers/,
  },
  {
    name: "a token id of 1e15 in tokenizer.json",
    setup: (f) =>
      editJson(join(f.model, "tokenizer.json"), (j) => {
        const v = (j.model as { vocab: Record<string, number> }).vocab;
        v[Object.keys(v)[3]] = 1e15;
      }),
    run: { lib: (f) => loadTokenizer(f.model) },
    message: /tokenizer\.json: model\.vocab entry 3 has id 1000000000000000; ids are integers/,
  },
  {
    name: "a fractional added-token id",
    setup: (f) =>
      editJson(join(f.model, "tokenizer.json"), (j) => {
        (j.added_tokens as { id: number }[])[0].id = 2.5;
      }),
    run: { lib: (f) => loadTokenizer(f.model) },
    message: /tokenizer\.json: added_tokens\[0\] has id 2\.5; ids are integers/,
  },
  {
    name: "a tokenizer vocab that is an array",
    setup: (f) =>
      editJson(join(f.model, "tokenizer.json"), (j) => {
        const m = j.model as { vocab: unknown };
        m.vocab = Object.entries(m.vocab as Record<string, number>);
      }),
    run: { lib: (f) => loadTokenizer(f.model) },
    message: /tokenizer\.json: model\.vocab of a BPE model must be an object$/,
  },
  {
    name: "tokenizer_config.json is an array",
    setup: (f) => Deno.writeTextFile(join(f.model, "tokenizer_config.json"), "[]"),
    run: { lib: (f) => loadTokenizer(f.model) },
    message: /tokenizer_config\.json: must be a JSON object$/,
  },
  {
    name: "eos_token not in the vocabulary",
    setup: (f) =>
      Deno.writeTextFile(
        join(f.model, "tokenizer_config.json"),
        JSON.stringify({ eos_token: "<|never|>" }),
      ),
    run: { lib: (f) => loadTokenizer(f.model) },
    message: /tokenizer\.json: eos_token "<\|never\|>" is not in the vocabulary$/,
  },
  {
    name: "tokenizer larger than the model's vocabulary",
    setup: editConfig((j) => (j.vocab_size = 10)),
    run: train(),
    message: /model\/tokenizer\.json: has \d+ ids but config\.json's vocab_size is 10$/,
  },

  // --- adapters ------------------------------------------------------------------------------
  {
    name: "adapter missing a tensor",
    setup: writeAdapterWeights((ts) => ts.splice(1, 1)),
    run: { cli: "eval", args: (f) => perplexityArgs(f, [`--ckpt=${f.adapter}`]) },
    message:
      /adapter\/adapter_model\.safetensors: missing adapter tensor base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.hira_B$/,
  },
  {
    name: "adapter rank unlike its config",
    setup: async (f) => {
      await Deno.writeFile(
        join(f.adapter, "adapter_model.safetensors"),
        safetensorsBytes(adapterTensorsFor(CFG, 3)),
      );
    },
    run: {
      cli: "eval",
      args: (f) => ["merge", `--model=${f.model}`, `--ckpt=${f.adapter}`, `--out=${f.out}`],
    },
    message:
      /adapter_model\.safetensors: adapter tensor .*q_proj\.hira_A has shape \[3,16\], the model needs \[2,16\]$/,
  },
  {
    name: "adapter with an extra tensor",
    setup: writeAdapterWeights((ts) =>
      ts.push({ ...ts[0], name: "base_model.model.model.layers.0.mlp.up_proj.hira_A" })
    ),
    run: { cli: "eval", args: (f) => perplexityArgs(f, [`--ckpt=${f.adapter}`]) },
    message:
      /adapter_model\.safetensors: unexpected tensor base_model\.model\.model\.layers\.0\.mlp\.up_proj\.hira_A: it does not belong to the adapted modules$/,
  },
  {
    name: "adapter made for a wider model",
    run: {
      lib: () => {
        const wide = parseConfig({ ...TINY_CONFIG, hidden_size: 32, head_dim: 16 });
        const shapes = new Map(adapterTensorsFor(wide).map((t) => [t.name, t.shape]));
        return checkAdapterKeys(
          CFG,
          parseAdapterConfig({ peft_type: "HIRA", r: 2, target_modules: ["q_proj", "v_proj"] }),
          shapes,
          "a.safetensors",
        );
      },
    },
    message:
      /^a\.safetensors: adapter tensor .*q_proj\.hira_A has shape \[2,32\], the model needs \[2,16\]$/,
  },
  {
    name: "adapter targeting a module the model lacks",
    setup: (f) =>
      editJson(join(f.adapter, "adapter_config.json"), (j) => {
        j.target_modules = ["c_attn"];
      }),
    run: { cli: "eval", args: (f) => perplexityArgs(f, [`--ckpt=${f.adapter}`]) },
    message: /adapter_config\.json: target module 'c_attn' matches no linear layer of the model/,
  },
  {
    name: "adapter_config.json missing",
    setup: (f) => Deno.remove(join(f.adapter, "adapter_config.json")),
    run: { lib: (f) => openAdapterDir(f.adapter) },
    message: /adapter\/adapter_config\.json: missing \(not an adapter folder\)$/,
  },
  {
    name: "adapter_model.safetensors missing",
    setup: (f) => Deno.remove(join(f.adapter, "adapter_model.safetensors")),
    run: { lib: (f) => openAdapterDir(f.adapter) },
    message: /adapter\/adapter_model\.safetensors: missing$/,
  },
  {
    name: "adapter of an unsupported PEFT type",
    setup: (f) =>
      editJson(join(f.adapter, "adapter_config.json"), (j) => {
        j.peft_type = "PREFIX_TUNING";
      }),
    run: { cli: "eval", args: (f) => perplexityArgs(f, [`--ckpt=${f.adapter}`]) },
    message: /adapter_config\.json: peft_type "PREFIX_TUNING" is not supported \(HIRA or LORA\)$/,
  },
  {
    name: "adapter holding NaN",
    setup: writeAdapterWeights((ts) => ((ts[2].data as Float32Array)[5] = NaN)),
    run: { cli: "eval", args: (f) => perplexityArgs(f, [`--ckpt=${f.adapter}`]) },
    message: /adapter_model\.safetensors: adapter tensor .*v_proj\.hira_A holds NaN or Inf$/,
  },

  // --- datasets ------------------------------------------------------------------------------
  {
    name: "dataset that is not an array",
    setup: writeTrain({ data: sampleRecords(2) }),
    run: train(),
    message: /commonsense_170k\/train\.json: expected a JSON array of records, got an object$/,
  },
  {
    name: "dataset that is not JSON",
    setup: writeTrain('[{"instruction": "x", '),
    run: train(),
    message: /commonsense_170k\/train\.json: not valid JSON/,
  },
  {
    name: "record without instruction",
    setup: writeTrain([...sampleRecords(2), { output: "the correct answer is true" }]),
    run: train(),
    message: /commonsense_170k\/train\.json: record 2: missing field 'instruction'$/,
  },
  {
    name: "record without output",
    setup: writeTrain([{ instruction: "q" }]),
    run: { lib: (f) => parseRecords(Deno.readTextFileSync(f.trainJson), f.trainJson) },
    message: /train\.json: record 0: missing field 'output'$/,
  },
  {
    name: "record whose output is a number",
    setup: writeTrain([{ instruction: "q", output: 3 }]),
    run: train(),
    message: /train\.json: record 0: field 'output' must be a string, got a number$/,
  },
  {
    name: "record that is not an object",
    setup: writeTrain(["just a string"]),
    run: { lib: (f) => parseRecords(Deno.readTextFileSync(f.trainJson), f.trainJson) },
    message: /train\.json: record 0: expected an object, got a string$/,
  },
  {
    name: "meta_math record without lSolutions",
    setup: writeTrain([{ sQuestion: "2 + 2?", output: "4" }]),
    run: {
      lib: (f) =>
        parseRecords(Deno.readTextFileSync(f.trainJson), f.trainJson, { fields: "metamath" }),
    },
    message: /train\.json: record 0: missing field 'lSolutions'$/,
  },
  {
    name: "perplexity token id outside the vocabulary",
    setup: (f) => Deno.writeTextFile(f.tokens, "[[1, 5, 99999]]"),
    run: { cli: "eval", args: (f) => perplexityArgs(f) },
    message: /ids\.json: sequence 0: token id 99999 is outside the vocabulary \(640\)$/,
  },
  {
    name: "empty dataset",
    setup: writeTrain([]),
    run: train(),
    message: /commonsense_170k\/train\.json: the dataset is empty$/,
  },
  {
    name: "empty validation split",
    setup: (f) =>
      Deno.writeTextFile(join(f.data, "llm_adapt/commonsense_170k/validation.json"), "[]"),
    run: train(),
    message: /commonsense_170k\/validation\.json: the dataset is empty$/,
  },
  {
    name: "every output empty",
    setup: writeTrain([{ instruction: "q", output: "  " }]),
    run: train(),
    message: /commonsense_170k\/train\.json: no example has a non-empty target$/,
  },
  {
    name: "training split missing",
    setup: (f) => Deno.remove(f.trainJson),
    run: train(),
    message: /commonsense_170k\/train\.json: missing: put the train split of common_170k there/,
  },
  {
    name: "unknown --dataset",
    run: train("--dataset=squad"),
    message: /^--dataset: 'squad' is not a training dataset/,
  },
  {
    name: "eval test set that is not an array",
    setup: (f) => Deno.writeTextFile(join(f.data, "llm_adapt/boolq/test.json"), '"boolq"'),
    run: {
      cli: "eval",
      args: (f) => ["boolq", `--model=${f.model}`, `--data_root=${f.data}`, `--out=${f.out}`],
    },
    message: /boolq\/test\.json: expected a JSON array of records, got a string$/,
  },
  {
    name: "eval of an unknown dataset",
    run: { cli: "eval", args: (f) => ["squad", `--model=${f.model}`] },
    message: /squad/,
  },

  // --- flags ---------------------------------------------------------------------------------
  {
    name: "--target_modules matching nothing",
    run: train("--target_modules=qkv_proj"),
    message: /^--target_modules: target module 'qkv_proj' matches no linear layer of the model/,
  },
  {
    name: "--target_modules empty",
    run: train("--target_modules= , "),
    message: /^--target_modules: no target modules given$/,
  },
  {
    name: "--lr=0",
    run: train("--lr=0"),
    message: /^--lr: must be > 0, got 0$/,
  },
  {
    name: "--lr negative",
    run: { lib: () => parseTrainArgs(["--model=m", "--lr=-1e-3"]) },
    message: /^--lr: must be > 0, got -0\.001$/,
  },
  {
    name: "--lr without a value",
    run: train("--lr="),
    message: /^--lr: needs a number$/,
  },
  {
    name: "--lr not a number",
    run: { lib: () => parseTrainArgs(["--model=m", "--lr=fast"]) },
    message: /^--lr: 'fast' is not a number$/,
  },
  {
    name: "--batch=0",
    run: train("--batch=0"),
    message: /^--batch: must be a positive integer, got 0$/,
  },
  {
    name: "--grad_acc beyond one epoch's batches",
    run: train("--grad_acc=1000000000"),
    message:
      /^--grad_acc: 1000000000 is more than the \d+ batches of one epoch \(\d+ examples \/ --batch=\d+\)$/,
  },
  {
    name: "--epoch=0",
    run: { lib: () => parseTrainArgs(["--model=m", "--epoch=0"]) },
    message: /^--epoch: must be > 0, got 0$/,
  },
  {
    name: "--save_total_limit negative",
    run: { lib: () => parseTrainArgs(["--model=m", "--save_total_limit=-1"]) },
    message: /^--save_total_limit: must be a non-negative integer, got -1$/,
  },
  {
    name: "--early_stop_patience fractional",
    run: { lib: () => parseTrainArgs(["--model=m", "--early_stop_patience=0.5"]) },
    message: /^--early_stop_patience: must be a non-negative integer, got 0\.5$/,
  },
  {
    name: "--r_ab larger than the layer",
    run: train("--r_ab=64"),
    message: /^--r_ab: 64 is larger than .*q_proj \[16 × 16\]/,
  },
  {
    name: "--peft_type not supported",
    run: train("--peft_type=prefix"),
    message: /^--peft_type: 'prefix' is not one of hira, lora, full/,
  },
  {
    name: "unknown flag",
    run: train("--learning_rate=1e-3"),
    message: /^--learning_rate: unknown flag \(see --help\)$/,
  },
  // --- finite or nothing --------------------------------------------------------------------
  {
    name: "merge of a LoRA adapter with lora_alpha 1e300",
    setup: async (f) => {
      await editJson(join(f.adapter, "adapter_config.json"), (j) => {
        j.peft_type = "LORA";
        j.lora_alpha = 1e300;
      });
      const ts = adapterTensorsFor(CFG).map((t) => ({
        ...t,
        name: t.name.replace(/hira_(A|B)$/, "lora_$1.weight"),
      }));
      await Deno.writeFile(join(f.adapter, "adapter_model.safetensors"), safetensorsBytes(ts));
    },
    run: mergeInto("merged"),
    message:
      /model\.layers\.0\.self_attn\.q_proj\.weight: \d+ of 256 merged weights are not finite .*nothing was written$/,
  },
  {
    name: "merge to f16 of weights beyond 65504",
    setup: async (f) => {
      const ts = modelTensors(CFG);
      ts.find((t) => t.name === K)!.data[3] = 1e5;
      await Deno.writeFile(f.weights, safetensorsBytes(ts));
    },
    run: mergeInto("merged", "--dtype=f16"),
    message:
      /k_proj\.weight: 1 merged weights \(e\.g\. 100000\) exceed f16's largest value 65504; write with --dtype=f32/,
  },
  {
    name: "perplexity of a model with a NaN weight",
    setup: async (f) => {
      const ts = modelTensors(CFG);
      ts.find((t) => t.name === Q)!.data[0] = NaN;
      await Deno.writeFile(f.weights, safetensorsBytes(ts));
    },
    run: { cli: "eval", args: (f) => perplexityArgs(f) },
    message: (f) =>
      new RegExp(`^${esc(f.tokens)}: the mean NLL is NaN, so the perplexity is not finite`),
  },
  {
    name: "--weight_dtype=f16 with a weight f16 cannot hold",
    setup: async (f) => {
      const ts = modelTensors(CFG);
      ts.find((t) => t.name === Q)!.data[7] = -1e5;
      await Deno.writeFile(f.weights, safetensorsBytes(ts));
    },
    run: { cli: "eval", args: (f) => perplexityArgs(f, ["--weight_dtype=f16"]) },
    message:
      /^model\.layers\.0\.self_attn\.q_proj\.weight: holds the finite weight -100000, .*--weight_dtype=f32$/,
  },

  // --- special files and size caps -----------------------------------------------------------
  {
    name: "train.json is a FIFO",
    setup: (f) => mkfifo(f.trainJson),
    run: train(),
    message: (f) =>
      new RegExp(`^${esc(f.trainJson)}: is not a regular file \\(a FIFO, socket or device`),
  },
  {
    name: "train.json is a symlink to /dev/zero",
    setup: (f) => linkTo(f.trainJson, "/dev/zero"),
    run: train(),
    message: (f) => new RegExp(`^${esc(f.trainJson)}: is not a regular file`),
  },
  {
    name: "model.safetensors is a FIFO",
    setup: (f) => mkfifo(f.weights),
    run: train(),
    message: (f) => new RegExp(`^${esc(f.weights)}: cannot open: not a regular file$`),
  },
  {
    name: "config.json over its 4 MiB cap",
    setup: editConfig((j) => (j.padding = "x".repeat(5 * 2 ** 20))),
    run: { lib: (f) => readConfig(f.model) },
    message: /config\.json: is \d+ bytes, more than the 4 MiB such a file may have$/,
  },
  {
    name: "adapter_config.json is a FIFO",
    setup: (f) => mkfifo(join(f.adapter, "adapter_config.json")),
    run: { lib: (f) => openAdapterDir(f.adapter) },
    message: /adapter_config\.json: is not a regular file/,
  },
  {
    name: "--resume with args.json a symlink to /dev/zero",
    setup: async (f) => {
      await Deno.mkdir(join(f.out, "checkpoint-2"), { recursive: true });
      await Deno.symlink("/dev/zero", join(f.out, "args.json"));
    },
    run: { cli: "train", args: (f) => [`--resume=${f.out}`] },
    message: /out\/args\.json: is not a regular file/,
  },
  {
    name: "a JSON error quotes none of the file's text",
    setup: (f) =>
      Deno.writeTextFile(join(f.model, "tokenizer.json"), "root:x:0:0:root:/root:/bin/bash\n"),
    run: { lib: (f) => loadTokenizer(f.model) },
    message: /tokenizer\.json: not valid JSON \(Unexpected token 'r'\)$/,
  },
  {
    name: "--output_folder with no value",
    run: train("--output_folder"),
    message: /^--output_folder: needs a value \(--output_folder=VALUE\)$/,
  },
  {
    name: "--model with no value",
    run: train("--model"),
    message: /^--model: needs a value \(--model=VALUE\)$/,
  },
  {
    name: "--eval_accuracy=maybe",
    run: train("--eval_accuracy=maybe"),
    message: /^--eval_accuracy: 'maybe' is not true or false/,
  },
  {
    name: "--lr in hexadecimal",
    run: train("--lr=0x10"),
    message: /^--lr: '0x10' is not a decimal number$/,
  },
  {
    name: "--batch in binary",
    run: { lib: () => parseTrainArgs(["--model=m", "--batch=0b11"]) },
    message: /^--batch: '0b11' is not a decimal number$/,
  },
  {
    name: "eval --model with no value",
    run: { cli: "eval", args: (f) => ["perplexity", `--tokens=${f.tokens}`, "--model"] },
    message: /^--model: needs a value \(--model=VALUE\)$/,
  },
  {
    name: "eval --out with no value",
    run: { cli: "eval", args: (f) => ["boolq", `--model=${f.model}`, "--out"] },
    message: /^--out: needs a value \(--out=VALUE\)$/,
  },
  {
    name: "eval --merge=maybe",
    run: { lib: () => parseEvalArgs(["boolq", "--merge=maybe"]) },
    message: /^--merge: 'maybe' is not true or false/,
  },
  {
    name: "eval --batch in hexadecimal",
    run: { lib: () => parseEvalArgs(["boolq", "--batch=0x8"]) },
    message: /^--batch: '0x8' is not a decimal number$/,
  },
  {
    name: "--output_folder is a file",
    setup: (f) => Deno.writeTextFile(f.out, "not a folder\n"),
    run: train(),
    message: (f) => new RegExp(`^${esc(f.out)}: --output_folder is a file, not a folder$`),
  },
  {
    name: "--output_folder inside a file",
    setup: (f) => Deno.writeTextFile(f.out, "not a folder\n"),
    run: { cli: "train", args: (f) => trainFlags(f, [`--output_folder=${f.out}/runs`]) },
    message: (f) => new RegExp(`^${esc(f.out)}/runs: --output_folder .*is a file`),
  },
  {
    name: "--resume of a folder without checkpoints",
    setup: (f) => Deno.mkdir(f.out),
    run: { cli: "train", args: (f) => [`--resume=${f.out}`] },
    message: /out: no checkpoint-N folder to resume from$/,
  },
  {
    name: "--resume of a checkpoint whose adapter is truncated",
    setup: async (f) => {
      const ck = join(f.out, "run", "checkpoint-1");
      await Deno.mkdir(ck, { recursive: true });
      const a = parseTrainArgs(trainFlags(f));
      await Deno.writeTextFile(
        join(f.out, "run", "args.json"),
        JSON.stringify({ ...a, given: [...a.given] }),
      );
      await Deno.copyFile(join(f.adapter, "adapter_config.json"), join(ck, "adapter_config.json"));
      await Deno.writeTextFile(join(ck, "trainer_state.json"), JSON.stringify(STATE));
      const w = await Deno.readFile(join(f.adapter, "adapter_model.safetensors"));
      await Deno.writeFile(join(ck, "adapter_model.safetensors"), w.subarray(0, w.length - 8));
    },
    run: { cli: "train", args: (f) => [`--resume=${join(f.out, "run")}`] },
    message:
      /run\/checkpoint-1\/adapter_model\.safetensors: tensor '.*': data_offsets .* past the end/,
  },
  {
    name: "model.safetensors is a folder",
    setup: async (f) => {
      await Deno.remove(f.weights);
      await Deno.mkdir(f.weights);
    },
    run: train(),
    message: /model\/model\.safetensors: cannot open: (not a regular file|is a directory)$/,
  },
  {
    name: "--resume with args.json saying batch 0",
    setup: resumable({ args: { batch: 0 } }),
    run: { cli: "train", args: (f) => [`--resume=${join(f.out, "run")}`] },
    message: /run\/args\.json: --batch: must be a positive integer, got 0$/,
  },
  {
    name: '--resume with args.json saying lr "fast"',
    setup: resumable({ args: { lr: "fast" } }),
    run: { cli: "train", args: (f) => [`--resume=${join(f.out, "run")}`] },
    message: /run\/args\.json: --lr: "fast" is not a number$/,
  },
  {
    name: "--resume with args.json saying peft_type prefix",
    setup: resumable({ args: { peft_type: "prefix" } }),
    run: { cli: "train", args: (f) => [`--resume=${join(f.out, "run")}`] },
    message: /run\/args\.json: --peft_type: 'prefix' is not one of hira, lora, full/,
  },
  {
    name: "--resume with a trainer state naming a missing best checkpoint",
    setup: resumable({ state: { best_model_checkpoint: "checkpoint-7" } }),
    run: { cli: "train", args: (f) => [`--resume=${join(f.out, "run")}`] },
    message:
      /checkpoint-1\/trainer_state\.json: best_model_checkpoint checkpoint-7 does not exist in/,
  },
  {
    name: "--resume with a negative global_step",
    setup: resumable({ state: { global_step: -3 } }),
    run: { cli: "train", args: (f) => [`--resume=${join(f.out, "run")}`] },
    message:
      /checkpoint-1\/trainer_state\.json: global_step must be a non-negative integer, got -3$/,
  },
  {
    name: "--resume with a corrupt args.json",
    setup: async (f) => {
      await Deno.mkdir(join(f.out, "checkpoint-2"), { recursive: true });
      await Deno.writeTextFile(join(f.out, "args.json"), "{");
    },
    run: { cli: "train", args: (f) => [`--resume=${f.out}`] },
    message: /out\/args\.json: not valid JSON/,
  },
];

// ---------------------------------------------------------------------------------------------
// Running the table

const decoder = new TextDecoder();

async function runCli(script: string, args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    cwd: REPO,
    env: { DENO_WEBGPU_BACKEND: "vulkan", XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: decoder.decode(out.stderr) };
}

/** Runs one case; returns a failure description or null. */
async function runCase(c: Case): Promise<string | null> {
  return await withFixture("hira-bad-", async (f) => {
    await c.setup?.(f);
    const before = await snapshot(f.root);
    const want = typeof c.message === "function" ? c.message(f) : c.message;
    let message: string;
    if ("cli" in c.run) {
      const { code, stderr } = await runCli(`${c.run.cli}.ts`, c.run.args(f));
      const lines = stderr.trimEnd().split("\n");
      if (code !== (c.exit ?? 2)) return `exit ${code}, wanted ${c.exit ?? 2}; stderr:\n${stderr}`;
      if (lines.length !== 1) return `stderr is ${lines.length} lines:\n${stderr}`;
      if (!lines[0].startsWith("error: ")) return `stderr does not start with "error: ": ${stderr}`;
      message = lines[0].slice("error: ".length);
    } else {
      try {
        await c.run.lib(f);
        return "did not throw";
      } catch (e) {
        if (!isHiraError(e)) return `threw a non-HiraError: ${(e as Error)?.stack ?? e}`;
        message = e.message;
      }
      if (message.includes("\n")) return `message is not one line: ${message}`;
    }
    if (!want.test(message)) return `message ${JSON.stringify(message)} does not match ${want}`;
    const after = await snapshot(f.root);
    const changed = [...new Set([...before.keys(), ...after.keys()])]
      .filter((k) => before.get(k) !== after.get(k));
    if (changed.length) return `the failed run changed files: ${changed.join(", ")}`;
    return null;
  });
}

Deno.test("bad input: every case fails with its one-line message and writes nothing", async (t) => {
  assert(CASES.length >= 40, `only ${CASES.length} cases`);
  const cli = CASES.filter((c) => "cli" in c.run).length;
  assert(cli >= 15, `only ${cli} CLI cases`);
  assertEquals(new Set(CASES.map((c) => c.name)).size, CASES.length, "case names are unique");
  // CLI runs are independent processes: run a few at once, then report in table order.
  // HIRA_BAD_INPUT_ONLY=REGEX runs only the cases whose name matches (while working on a few).
  const only = Deno.env.get("HIRA_BAD_INPUT_ONLY");
  const chosen = CASES.map((c, i) => ({ c, i }))
    .filter(({ c }) => !only || new RegExp(only).test(c.name));
  const results = new Array<Promise<string | null>>(CASES.length);
  const limit = 3;
  let next = 0;
  const worker = async () => {
    while (next < chosen.length) {
      const i = chosen[next++].i;
      results[i] = runCase(CASES[i]).catch((e) => `harness error: ${e?.stack ?? e}`);
      await results[i];
    }
  };
  await Promise.all(Array.from({ length: limit }, worker));
  for (const { c, i } of chosen) {
    await t.step(`${"cli" in c.run ? c.run.cli : "lib"}: ${c.name}`, async () => {
      const failure = await results[i];
      if (failure) throw new Error(failure);
    });
  }
});
