/**
 * Evaluates, merges and analyses adapters.
 *
 *   deno run -A eval.ts <dataset|all> [--ckpt=RUN_OR_ADAPTER] [--model=DIR] ...
 *   deno run -A eval.ts perplexity --model=DIR [--ckpt=ADAPTER] --tokens=FILE.json
 *   deno run -A eval.ts merge --model=DIR --ckpt=ADAPTER --out=DIR [--dtype=bf16]
 *   deno run -A eval.ts rank --ckpt=ADAPTER [--ckpt2=ADAPTER2]
 *
 * `--help` lists every flag. Bad input prints one line `error: <file>: <reason>` and exits 2.
 * @module
 */
import { HiraError, isHiraError } from "./lib/errors.ts";
import { evalMain } from "./lib/evaluate_deno.ts";
import { setDefaultWeightDtype } from "./lib/model_deno.ts";

/**
 * Takes `--weight_dtype=auto|f32|f16` (storage of the frozen matrices, default f32) out of argv
 * and applies it to every model this process loads; returns the other arguments.
 */
function weightDtypeFlag(argv: readonly string[]): string[] {
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const m = /^--weight_dtype(?:=(.*))?$/.exec(argv[i]);
    if (!m) {
      rest.push(argv[i]);
      continue;
    }
    const v = m[1] ?? argv[++i];
    if (v !== "auto" && v !== "f32" && v !== "f16") {
      throw new HiraError("--weight_dtype", `'${v}' is not auto, f32 or f16`);
    }
    setDefaultWeightDtype(v);
  }
  return rest;
}

if (import.meta.main) {
  try {
    const argv = weightDtypeFlag(Deno.args);
    await evalMain(argv);
    if (argv.includes("--help") || argv.includes("-h")) {
      console.log(
        "  --weight_dtype     auto | f32 | f16: storage of the frozen weight matrices" +
          " (default f32; auto: f16 with shader-f16)",
      );
    }
  } catch (e) {
    if (isHiraError(e)) {
      console.error(`error: ${e.message}`);
      Deno.exit(2);
    }
    // A lost GPU (driver reset, out of GPU memory) is one line and exit 3, as in train.ts.
    if (e instanceof Error && e.name === "DeviceLostError") {
      console.error(`error: ${e.message}`);
      Deno.exit(3);
    }
    throw e;
  }
}
