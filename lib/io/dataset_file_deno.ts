/**
 * The Deno edge of lib/train/dataset_file.ts: finds the split files of `--dataset=PATH` (a file, or a
 * folder with train.* / validation.* / test.*), streams their records from disk chunk by chunk,
 * and builds the training and validation examples train.ts uses, stating each file's format in
 * the log.
 * @module
 */
import { basename, join } from "@std/path";
import { HiraError } from "../engine/errors.ts";
import type { TrainExample } from "../train/data.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import type { ChatTemplate } from "../train/chat.ts";
import { loadChatTemplate } from "./chat_deno.ts";
import {
  checkedRecords,
  DATASET_EXTENSIONS,
  type DatasetFormat,
  type ExampleContext,
  type FileRecord,
  fileTrainExample,
  FORMAT_FIELDS,
  jsonArrayRecords,
  jsonlRecords,
  type RawRecord,
  TextPacker,
  validationIndices,
} from "../train/dataset_file.ts";

/** The split files of a `--dataset` path. */
export interface DatasetFiles {
  /** The train file (a single-file dataset's file). */
  train: string;
  /** The validation file, or null (then --validation_split applies). */
  validation: string | null;
  /** The test file, or null. */
  test: string | null;
}

// Split file names as Hugging Face `datasets` recognises them in a data folder.
const SPLIT_NAMES: Readonly<Record<keyof DatasetFiles, readonly string[]>> = {
  train: ["train"],
  validation: ["validation", "valid", "val", "dev"],
  test: ["test"],
};

/**
 * The split files of `path`: a file is the train split (no validation or test file); a folder
 * must hold `train.jsonl` or `train.json` and may hold `validation.*` (or valid/val/dev) and
 * `test.*`. Two files for one split, or none for train, is a one-line error.
 */
export async function datasetFiles(path: string): Promise<DatasetFiles> {
  const st = await Deno.stat(path).catch(() => null);
  if (!st) {
    throw new HiraError(
      path,
      "--dataset: no such file or folder (a .jsonl/.json file or a folder)",
    );
  }
  if (st.isFile) return { train: path, validation: null, test: null };
  const find = async (split: keyof DatasetFiles): Promise<string | null> => {
    const found: string[] = [];
    for (const name of SPLIT_NAMES[split]) {
      for (const ext of DATASET_EXTENSIONS) {
        const f = join(path, name + ext);
        if (await Deno.stat(f).then((s) => s.isFile, () => false)) found.push(f);
      }
    }
    if (found.length > 1) {
      throw new HiraError(path, `holds ${found.map((f) => basename(f)).join(" and ")}: keep one`);
    }
    return found[0] ?? null;
  };
  const train = await find("train");
  const validation = await find("validation");
  const test = await find("test");
  if (train === null) {
    throw new HiraError(path, "--dataset folder holds no train.jsonl or train.json");
  }
  return { train, validation, test };
}

async function* fileChunks(file: string): AsyncGenerator<Uint8Array> {
  let f: Deno.FsFile;
  try {
    f = await Deno.open(file, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new HiraError(file, "no such file");
    throw new HiraError(file, `cannot be read (${(e as Error).message})`);
  }
  // Reading ends the stream and closes the file; an early stop (a bad record) cancels it.
  yield* f.readable;
}

/**
 * The raw records of a dataset file, streamed: a .jsonl file is JSON Lines; another file (.json)
 * whose first non-blank character is '[' is one JSON array, else JSON Lines too (Hugging
 * Face's json loader reads JSON Lines under .json as well).
 */
export async function* rawFileRecords(file: string): AsyncGenerator<RawRecord> {
  const it = fileChunks(file)[Symbol.asyncIterator]();
  const head: Uint8Array[] = [];
  let first = "";
  while (first === "") {
    const r = await it.next();
    if (r.done) break;
    head.push(r.value);
    const m = /[^\s\uFEFF]/.exec(new TextDecoder().decode(r.value.subarray(0, 4096)));
    if (m) first = m[0];
  }
  const replay = async function* () {
    try {
      yield* head;
      while (true) {
        const r = await it.next();
        if (r.done) return;
        yield r.value;
      }
    } finally {
      // A reader that stops early (a bad record, --dataset_ratio) closes the file.
      await it.return?.(undefined);
    }
  };
  const array = first === "[" && !/\.jsonl$/i.test(file);
  yield* array ? jsonArrayRecords(replay(), file) : jsonlRecords(replay(), file);
}

/** Checked records of a file (format forced, or detected from its first record). */
export function fileRecords(
  file: string,
  forced: DatasetFormat | null,
  onFormat?: (f: DatasetFormat) => void,
): AsyncGenerator<FileRecord & { where: string }> {
  return checkedRecords(rawFileRecords(file), file, forced, onFormat);
}

/** Flags {@linkcode loadFileDatasets} reads. */
export interface FileDatasetFlags {
  /** The file or folder. */
  dataset: string;
  /** A forced format, or "" to detect. */
  dataset_format: string;
  /** A chat template file instead of the model's, or null. */
  chat_template: string | null;
  /** Share of train records held out when there is no validation file. */
  validation_split: number;
  /** Share of each file's records kept (the first ones). */
  dataset_ratio: number;
  /** Seeds the validation split. */
  seed: number;
  /** Tokens per example (0: the default, see {@linkcode fileSeqLen}). */
  seq_len: number;
}

/** What {@linkcode loadFileDatasets} returns. */
export interface FileDatasets {
  /** Training examples, in file order. */
  train: TrainExample[];
  /** Validation examples (the validation file's, or the held-out share). */
  validation: TrainExample[];
  /** One line per split file: its path, format and record count. */
  lines: string[];
  /** The format of the train file. */
  format: DatasetFormat;
}

/**
 * Tokens per example for file datasets: `--seq_len`, else 1024 or the model's
 * max_position_embeddings when smaller.
 */
export function fileSeqLen(seqLen: number, maxPositions: number): number {
  return seqLen > 0 ? seqLen : Math.min(1024, maxPositions);
}

/** The chat template, loaded once and only when a chat file needs it. */
export function chatTemplateLoader(
  modelDir: string,
  flag: string | null,
  tok: Tokenizer,
): () => Promise<ChatTemplate> {
  let t: Promise<ChatTemplate> | null = null;
  return () => (t ??= loadChatTemplate(modelDir, flag, tok));
}

/** The forced format of `--dataset_format` ("" = detect). */
export function forcedFormat(flag: string): DatasetFormat | null {
  return flag === "" ? null : flag as DatasetFormat;
}

/**
 * Streams one split file into examples. A first pass checks every record (so a bad record
 * costs no tokenizing) and counts them; the second tokenizes. `holdOut` (record indices, from
 * the counted total) go to the second list.
 */
async function fileExamples(
  file: string,
  forced: DatasetFormat | null,
  ctx: Omit<ExampleContext, "chat" | "file">,
  chat: () => Promise<ChatTemplate>,
  opts: { ratio: number; split: number; seed: number },
): Promise<{ kept: TrainExample[]; held: TrainExample[]; format: DatasetFormat; line: string }> {
  let format: DatasetFormat = forced ?? "alpaca";
  let n = 0;
  for await (const _ of fileRecords(file, forced, (f) => (format = f))) n++;
  const use = opts.ratio >= 1 ? n : Math.max(1, Math.floor(n * opts.ratio));
  const held = validationIndices(use, opts.split, opts.seed);
  const template = format === "chat" ? await chat() : null;
  const full: ExampleContext = { ...ctx, chat: template, file };
  const packers = format === "text"
    ? [new TextPacker(ctx.tok, ctx.maxLength), new TextPacker(ctx.tok, ctx.maxLength)]
    : null;
  const kept: TrainExample[] = [], heldOut: TrainExample[] = [];
  let i = 0;
  for await (const rec of fileRecords(file, format)) {
    if (i >= use) break;
    const toHeld = held.has(i++);
    if (rec.format === "text") {
      packers![toHeld ? 1 : 0].push(rec.text);
      continue;
    }
    const ex = fileTrainExample(rec, full);
    // An example with no counted target (an empty output cut away) has no loss.
    if (!ex.lossMask.some((m, t) => t > 0 && m === 1)) continue;
    (toHeld ? heldOut : kept).push(ex);
  }
  if (packers) {
    kept.push(...packers[0].finish());
    heldOut.push(...packers[1].finish());
  }
  const line = `${file}: ${format} format (${FORMAT_FIELDS[format]}), ${use} records` +
    (use < n ? ` of ${n} (--dataset_ratio)` : "") +
    (format === "text" ? `, packed into ${kept.length + heldOut.length} blocks` : "");
  return { kept, held: heldOut, format, line };
}

/**
 * The training and validation examples of `--dataset=PATH`: the train file's records (the
 * first --dataset_ratio of them), and the validation file's, or when there is none a
 * `--validation_split` share of the train records drawn with `--seed`. Each file's path,
 * format and record count come back as log lines.
 */
export async function loadFileDatasets(
  a: FileDatasetFlags,
  tok: Tokenizer,
  modelDir: string,
  maxPositions: number,
  chatTemplateFlag: string | null = a.chat_template,
): Promise<FileDatasets> {
  const files = await datasetFiles(a.dataset);
  const forced = forcedFormat(a.dataset_format);
  const chat = chatTemplateLoader(modelDir, chatTemplateFlag, tok);
  const ctx = { tok, maxLength: fileSeqLen(a.seq_len, maxPositions) };
  const split = files.validation ? 0 : a.validation_split;
  const train = await fileExamples(files.train, forced, ctx, chat, {
    ratio: a.dataset_ratio,
    split,
    seed: a.seed,
  });
  const lines = [`dataset ${train.line}`];
  let validation = train.held;
  if (files.validation) {
    const v = await fileExamples(files.validation, forced, ctx, chat, {
      ratio: a.dataset_ratio,
      split: 0,
      seed: a.seed,
    });
    validation = v.kept;
    lines.push(`validation ${v.line}`);
  } else if (split > 0) {
    lines.push(
      `validation: ${validation.length} examples held out of the train file ` +
        `(--validation_split=${split}, --seed=${a.seed})`,
    );
  }
  if (train.kept.length === 0) {
    throw new HiraError(files.train, "no record has a non-empty target to train on");
  }
  return { train: train.kept, validation, lines, format: train.format };
}

/**
 * The records an evaluation reads from `--dataset=PATH`: a folder's test file, else its
 * validation file; a single file whole. At most `limit` records when > 0.
 */
export async function evalFileRecords(
  path: string,
  forced: DatasetFormat | null,
  limit = 0,
): Promise<{ file: string; format: DatasetFormat; records: (FileRecord & { where: string })[] }> {
  const files = await datasetFiles(path);
  const file = files.test ?? files.validation ?? files.train;
  let format: DatasetFormat = forced ?? "alpaca";
  const records: (FileRecord & { where: string })[] = [];
  for await (const r of fileRecords(file, forced, (f) => (format = f))) {
    if (limit > 0 && records.length >= limit) break;
    records.push(r);
  }
  return { file, format, records };
}
