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
import { isHiraError } from "./lib/engine/errors.ts";
import { evalMain } from "./lib/cli/eval.ts";

if (import.meta.main) {
  // Under the launcher, an eval whose launcher died (even by SIGKILL) exits rather than run on
  // as an orphan: its outputs are written atomically, so stopping loses no finished file.
  const launcher = Number(Deno.env.get("HIRA_LAUNCHER_PID") ?? "0");
  if (launcher > 0) {
    Deno.unrefTimer(setInterval(() => {
      if (Deno.ppid !== launcher) Deno.exit(129);
    }, 500));
  }
  try {
    await evalMain(Deno.args);
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
