/**
 * The names of your own dataset files' record formats and the rule that tells a `--dataset`
 * path from a named set, without the readers (lib/train/dataset_file.ts), so the flag parsers stay
 * light enough for the browser bundle.
 * @module
 */

/** The record formats of a dataset file. */
export type DatasetFormat = "alpaca" | "chat" | "text" | "prompt_completion";

/** Every format, in --help order. */
export const DATASET_FORMATS: readonly DatasetFormat[] = [
  "alpaca",
  "chat",
  "text",
  "prompt_completion",
];

/**
 * Whether a `--dataset` value names a file or folder rather than one of the named sets: it has
 * a path separator or a .json/.jsonl extension. (Named sets are plain words, so a file in the
 * current folder is written `./mine.jsonl` or `mine.jsonl`.)
 */
export function isDatasetPath(value: string): boolean {
  return /[/\\]/.test(value) || /\.jsonl?$/i.test(value) || value === "." || value === "..";
}
