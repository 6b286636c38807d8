/**
 * The page's wording of engine errors and file summaries, without any DOM (so the browser test
 * can check it under Deno). lib/ words its errors for the CLI, where a raw number such as
 * "header length 2338328219631577204 bytes" helps whoever debugs a file; on the page the same
 * fact reads better as what it means ("is not a safetensors file"). The CLI's messages are
 * unchanged: tests/cli/bad_input_test.ts and tests/model/safetensors_test.ts assert them.
 * @module
 */

/** Numbers this long (10+ digits, 1e9 and up) mean nothing to a reader of the page. */
const HUGE = /\b\d{10,}\b/g;

/**
 * An error message as the page shows it: the safetensors header-length refusals become "is not
 * a safetensors file" with the reason in words, and any other number of ten or more digits
 * becomes "a number far too large". Everything else is kept as lib/ worded it.
 */
export function plainMessage(msg: string): string {
  // lib/ writes "FILE: header length …"; the page reads "FILE is not a safetensors file".
  let m = msg.replace(
    /(?:: )?header length \d+ bytes is over the 100 MB limit \(corrupt, or not a safetensors file\)/,
    " is not a safetensors file (its first 8 bytes do not give a plausible header size)",
  );
  m = m.replace(
    /(?:: )?header length (\d+) runs past the end of the file \((\d+) bytes\): truncated, or not a safetensors file/,
    (_all, _n: string, size: string) =>
      ` is truncated or not a safetensors file (its header would end past the file's ${
        Number(size).toLocaleString("en-US")
      } bytes)`,
  ).trimStart();
  return m.replace(HUGE, "a number far too large");
}

/** How a folder reached the page. */
export type FileSource = "chosen" | "dropped";

/**
 * One wording for a model or adapter folder, whether chosen with the file input or dropped:
 * `Adapter folder "run-1" (2 files, dropped): training starts from it.` A folder without a
 * common top folder (loose files) is named by its files instead.
 */
export function folderSummary(
  kind: "model" | "adapter",
  paths: readonly string[],
  source: FileSource,
): string {
  const tops = new Set(paths.map((p) => (p.includes("/") ? p.split("/")[0] : "")));
  const top = tops.size === 1 && !tops.has("") ? [...tops][0] : "";
  const n = `${paths.length} file${paths.length === 1 ? "" : "s"}`;
  const what = kind === "model" ? "Model folder" : "Adapter folder";
  const name = top ? ` “${top}”` : "";
  const use = kind === "model"
    ? "Load model (or Train) loads it."
    : "Load model and Train start from it.";
  return `${what}${name} (${n}, ${source}): ${use}`;
}
