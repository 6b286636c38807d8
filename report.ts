/**
 * Rebuilds a training run's report.md and charts (loss.svg, lr.svg, accuracy.svg) from its
 * log.jsonl, args.json and accuracy summaries.
 *
 *   deno run -A report.ts RUN_DIR [RUN_DIR ...]      (or: deno task report RUN_DIR)
 *
 * Bad input prints one line `error: <file>: <reason>` and exits 2.
 * @module
 */
import { HiraError, isHiraError } from "./lib/engine/errors.ts";
import { writeRunReport } from "./lib/io/report_deno.ts";

if (import.meta.main) {
  try {
    const dirs = Deno.args.filter((a) => a !== "--");
    if (dirs.length === 0 || dirs.some((a) => a === "--help" || a === "-h")) {
      console.log("Usage: deno task report RUN_DIR [RUN_DIR ...]");
      Deno.exit(dirs.length === 0 ? 2 : 0);
    }
    for (const d of dirs) {
      if (d.startsWith("-")) throw new HiraError(d, "unknown flag (report takes run folders)");
      for (const f of await writeRunReport(d)) console.log(f);
    }
  } catch (e) {
    if (isHiraError(e)) {
      console.error(`error: ${e.message}`);
      Deno.exit(2);
    }
    throw e;
  }
}
