/**
 * Benchmark entry point (`deno task bench`). Sections run in order; each prints a table, and with
 * `--json` the results go to stdout as one JSON object keyed by section (tables then go to
 * stderr).
 *
 *   deno task bench [--only=matmul,decode,train_step,dp] [--json] [--sizes=512,1024,2048]
 *                   [--peers=jax-js webgpu,tfjs wasm] [--variants=auto,tiled] [--per-submit=4]
 *                   [--train-configs=tiny,llama-4x512] [--train-methods=hira,lora,...]
 *                   [--train-reps=3] [--train-rank=32] [--train-profile]
 *
 * Other processes on the machine change every number here (a CPU rasterizer uses every core):
 * run with -A to have each timing record the CPU share others took meanwhile.
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { createGpu, type Gpu } from "../lib/engine/gpu.ts";
import type { MatmulVariant } from "../lib/ops/matmul.ts";
import { benchMatmul, formatMatmul, type PeerName, PEERS } from "./matmul.ts";
import { benchDecode, formatDecode } from "./decode.ts";
import { benchTrainStep, formatTrainStep, TRAIN_METHODS, type TrainMethod } from "./train_step.ts";
import { benchDp, formatDp } from "./dp.ts";

/** One benchmark section: runs, then formats its own result. */
interface Section {
  /** Key in --only and in the JSON output. */
  name: string;
  run(gpu: Gpu, args: Args, log: (line: string) => void): Promise<unknown>;
  format(result: unknown): string;
}

type Args = ReturnType<typeof parse>;

function parse(argv: string[]) {
  return parseArgs(argv, {
    boolean: ["json", "help", "train-profile"],
    string: [
      "only",
      "sizes",
      "peers",
      "variants",
      "per-submit",
      "decode-tokens",
      "weight-dtype",
      "train-configs",
      "train-methods",
      "train-reps",
      "train-rank",
    ],
  });
}

function list(s: string | undefined): string[] | undefined {
  return s === undefined ? undefined : s.split(",").map((x) => x.trim()).filter(Boolean);
}

const SECTIONS: Section[] = [
  {
    name: "matmul",
    run(gpu, args, log) {
      const sizes = (list(args.sizes) ?? ["512", "1024", "2048"]).map(Number);
      const peers = list(args.peers);
      for (const p of peers ?? []) {
        if (!(PEERS as readonly string[]).includes(p)) {
          throw new Error(`unknown peer "${p}"; known: ${PEERS.join(", ")}`);
        }
      }
      return benchMatmul(gpu, sizes, {
        peers: peers as PeerName[] | undefined,
        variants: list(args.variants) as MatmulVariant[] | undefined,
        perSubmit: args["per-submit"] === undefined ? undefined : Number(args["per-submit"]),
        log,
      });
    },
    format: (r) => formatMatmul(r as Awaited<ReturnType<typeof benchMatmul>>),
  },
  {
    name: "decode",
    run(gpu, args, log) {
      const wdt = args["weight-dtype"] ?? "f32";
      if (wdt !== "f32" && wdt !== "f16") throw new Error(`--weight-dtype=${wdt}: f32 or f16`);
      return benchDecode(gpu, {
        newTokens: args["decode-tokens"] === undefined ? undefined : Number(args["decode-tokens"]),
        weightDtype: wdt,
        log,
      });
    },
    format: (r) => formatDecode(r as Awaited<ReturnType<typeof benchDecode>>),
  },
  {
    name: "train_step",
    run(_gpu, args, log) {
      const methods = list(args["train-methods"]);
      for (const m of methods ?? []) {
        if (!(TRAIN_METHODS as readonly string[]).includes(m)) {
          throw new Error(`unknown train method "${m}"; known: ${TRAIN_METHODS.join(", ")}`);
        }
      }
      const num = (s: string | undefined) => s === undefined ? undefined : Number(s);
      return benchTrainStep({
        configs: list(args["train-configs"]),
        methods: methods as TrainMethod[] | undefined,
        reps: num(args["train-reps"]),
        rank: num(args["train-rank"]),
        profile: args["train-profile"],
        log,
      });
    },
    format: (r) => formatTrainStep(r as Awaited<ReturnType<typeof benchTrainStep>>),
  },
  {
    // Data parallel over MPI: spawns `mpirun -np 1|2` workers (bench/dp.ts), each its own device.
    name: "dp",
    run(_gpu, args, log) {
      const num = (s: string | undefined) => s === undefined ? undefined : Number(s);
      return benchDp({ configs: list(args["train-configs"]), reps: num(args["train-reps"]), log });
    },
    format: (r) => formatDp(r as Awaited<ReturnType<typeof benchDp>>),
  },
];

async function main(argv: string[]): Promise<void> {
  const args = parse(argv);
  if (args.help) {
    console.log(
      "deno task bench [--only=" + SECTIONS.map((s) => s.name).join(",") +
        "] [--json] [--sizes=512,1024,2048] [--peers=...] [--variants=auto,cpu,tiled]" +
        " [--per-submit=4] [--decode-tokens=24] [--weight-dtype=f32|f16]" +
        " [--train-configs=tiny,llama-4x512] [--train-methods=" + TRAIN_METHODS.join(",") +
        "] [--train-reps=3] [--train-rank=32] [--train-profile]",
    );
    return;
  }
  const only = list(args.only);
  for (const name of only ?? []) {
    if (!SECTIONS.some((s) => s.name === name)) {
      throw new Error(`unknown section "${name}"; known: ${SECTIONS.map((s) => s.name)}`);
    }
  }
  const out = args.json ? console.error : console.log;
  const gpu = await createGpu();
  const json: Record<string, unknown> = {};
  try {
    for (const section of SECTIONS) {
      if (only && !only.includes(section.name)) continue;
      const result = await section.run(gpu, args, (line) => console.error(`  ${line}`));
      json[section.name] = result;
      out(section.format(result));
    }
  } finally {
    gpu.destroy();
  }
  if (args.json) console.log(JSON.stringify(json, null, 2));
  // A peer's device or timers (or an abandoned, timed-out run) must not keep the process alive.
  Deno.exit(0);
}

if (import.meta.main) await main(Deno.args);
