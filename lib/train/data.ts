/**
 * Datasets: the reference's name → folder map and split rules, record parsing
 * with one-line errors, the training layouts (template 4 and template 0) in PACKED form
 * (no padding), packed batches with next-token targets, a resumable seeded batch order, and
 * test prompts (docs/reference.md, Data layouts and templates).
 * @module
 */
import { HiraError, jsonReason } from "../engine/errors.ts";
import {
  contextTargetTrainingText,
  type TemplateType,
  templateTypeFor,
  testPrompt,
  trainingContext,
  trainingTarget,
} from "./prompt.ts";
import { Rng } from "../engine/rand.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import type { Batch } from "../model/model.ts";

export { DATASET_FOLDERS, type DatasetName } from "./datasets.ts";
import { DATASET_FOLDERS, type DatasetName } from "./datasets.ts";

/** The default data root, as in the reference (relative to the repo root). */
export const DEFAULT_DATA_ROOT = "data_file";

/** A split name. */
export type Split = "train" | "validation" | "test";

/** Whether a name is a known dataset. */
export function isDatasetName(name: string): name is DatasetName {
  return Object.hasOwn(DATASET_FOLDERS, name);
}

/**
 * BOOLQ-type datasets, whose 'validation' split reads test.json (`dataset_hg.py:32-35`): the
 * eight commonsense sets, gsm8k, meta_math and common_all (and mmlu, which we do not support).
 */
export function isBoolqType(name: DatasetName): boolean {
  return name !== "common_170k" && name !== "convai2";
}

/**
 * The file a split is read from, relative to the data root: `{folder}/{split}.json`, except that
 * 'validation' reads test.json for BOOLQ-type sets (this leaks the test set into checkpoint
 * selection for single-task runs; docs/reference.md, Data layouts and templates).
 */
export function splitPath(name: DatasetName, split: Split, dataRoot = DEFAULT_DATA_ROOT): string {
  const file = split === "validation" && isBoolqType(name) ? "test" : split;
  const root = dataRoot.endsWith("/") ? dataRoot.slice(0, -1) : dataRoot;
  return `${root}/${DATASET_FOLDERS[name]}/${file}.json`;
}

/** Max prompt tokens (template 4) or whole-sequence tokens (template 0), `token_length_map`. */
export function maxTokenLength(name: DatasetName): number {
  if (name === "convai2") return 512;
  if (name === "meta_math" || name === "gsm8k") return 155;
  return 256;
}

/** Max new tokens at test time, also the training target length for template 4. */
export function maxNewTokens(name: DatasetName): number {
  if (name === "convai2") return 32;
  if (name === "meta_math" || name === "gsm8k") return 200;
  return 16;
}

/** One dataset record: input text, target text, and the gold answer when the file has one. */
export interface DataRecord {
  /** The input (`instruction`, or `sQuestion` for meta_math). */
  instruction: string;
  /** The target (`output`, or `lSolutions` for meta_math). */
  output: string;
  /** The `answer` field as stored (string, number, or a one-element list in some files). */
  answer?: unknown;
}

/** Options of {@linkcode parseRecords}. */
export interface ParseOptions {
  /**
   * Which fields hold input and target: "alpaca" (instruction/output; default) or "metamath"
   * (sQuestion/lSolutions). The reference switches on "math" in the folder path; we use
   * {@linkcode fieldsFor} on the dataset name instead.
   */
  fields?: "alpaca" | "metamath";
  /**
   * Every record must carry `answer` (gsm8k's test set is scored against it): a record without
   * one is an error naming the file and the record, not a silent 0%.
   */
  requireAnswer?: boolean;
}

/** The field layout of a dataset's files. */
export function fieldsFor(name: DatasetName): "alpaca" | "metamath" {
  return name === "meta_math" ? "metamath" : "alpaca";
}

/**
 * Parses a split file (one JSON array of records). Throws {@linkcode HiraError} naming `file` for:
 * text that is not JSON, a value that is not an array, a record that is not an object, a
 * missing or non-string input/target field, and an empty array. Other fields are ignored
 * except `answer`, which is kept as stored.
 */
export function parseRecords(text: string, file: string, opts: ParseOptions = {}): DataRecord[] {
  const [inField, outField] = opts.fields === "metamath"
    ? ["sQuestion", "lSolutions"]
    : ["instruction", "output"];
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new HiraError(file, `not valid JSON: ${jsonReason((e as Error).message)}`);
  }
  if (!Array.isArray(value)) {
    throw new HiraError(file, `expected a JSON array of records, got ${describe(value)}`);
  }
  if (value.length === 0) throw new HiraError(file, "the dataset is empty");
  const out: DataRecord[] = new Array(value.length);
  for (let i = 0; i < value.length; i++) {
    const r = value[i];
    if (typeof r !== "object" || r === null || Array.isArray(r)) {
      throw new HiraError(file, `record ${i}: expected an object, got ${describe(r)}`);
    }
    const rec = r as Record<string, unknown>;
    for (const f of [inField, outField]) {
      if (!(f in rec)) throw new HiraError(file, `record ${i}: missing field '${f}'`);
      if (typeof rec[f] !== "string") {
        throw new HiraError(
          file,
          `record ${i}: field '${f}' must be a string, got ${describe(rec[f])}`,
        );
      }
    }
    const record: DataRecord = {
      instruction: rec[inField] as string,
      output: rec[outField] as string,
    };
    if ("answer" in rec) record.answer = rec.answer;
    else if (opts.requireAnswer) {
      throw new HiraError(file, `record ${i}: missing field 'answer' (the number it is scored by)`);
    }
    out[i] = record;
  }
  return out;
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object" : `a ${typeof v}`;
}

/**
 * A packed training example: the token sequence and which tokens are counted targets.
 * `lossMask[t] = 1` means token t is a target predicted from position t-1 (so `lossMask[0]` is
 * never counted).
 */
export interface TrainExample {
  /** Token ids. */
  tokens: number[];
  /** 1 where the token is a counted target, else 0. Same length as `tokens`. */
  lossMask: number[];
}

/** Length limits of the training layouts. */
export interface LayoutLimits {
  /** Template 4: max context tokens (256). Template 0: max whole-sequence tokens. */
  maxLength: number;
  /** Template 4 only: max target tokens (16). */
  maxTarget?: number;
}

/**
 * The template-4 (commonsense) training example, packed.
 *
 * The reference builds `[context(256, left-padded) ‖ target(16, right-padded)]` with labels
 * only on the target (docs/reference.md, Data layouts and templates). Here:
 * - context = the template with target "" (no BOS), tokenized without special tokens and cut
 *   to the FIRST `maxLength` tokens, as the reference's right-side truncation does (so a very
 *   long instruction loses its tail, including "### Response:");
 * - target = `output.strip()` tokenized on its own without special tokens (no EOS), cut to the
 *   first `maxTarget` tokens;
 * - tokens = context ‖ target, with lossMask 1 exactly on the target tokens (except tokens equal
 *   to the pad id, which the reference's collator turns into -100 along with the padding).
 *
 * Dropping the padding is equivalent: padded positions are masked from attention and from the
 * loss, and RoPE depends only on relative positions, so shifting the sequence to start at
 * position 0 does not change any logit of a real token.
 */
export function alpacaTrainExample(
  record: DataRecord,
  tok: Tokenizer,
  limits: LayoutLimits = { maxLength: 256, maxTarget: 16 },
): TrainExample {
  const context = tok.encode(trainingContext(4, record.instruction)).slice(0, limits.maxLength);
  const target = tok.encode(trainingTarget(record.output)).slice(0, limits.maxTarget ?? 16);
  return {
    tokens: [...context, ...target],
    lossMask: [...new Array(context.length).fill(0), ...target.map((id) => countable(id, tok))],
  };
}

// The reference sets every label equal to the pad id to -100 (`train_hira.py:239-240`), so a
// real token that shares the pad id (BOS for Llama-3) is never a target there either.
function countable(id: number, tok: Tokenizer): number {
  return id === tok.padId ? 0 : 1;
}

/**
 * The template-0 (convai2, meta_math) training example: `BOS + "CONTEXT: {in} TARGET: {out}" +
 * EOS` tokenized as one string and cut to the first `maxLength` tokens (right truncation, so an
 * over-long example loses its EOS, as in the reference).
 *
 * The loss covers the target and EOS only (minus tokens equal to the pad id, as in the
 * reference's collator). This FIXES the reference, whose prompt-masking check
 * is off by one because of the BOS and so falls back to training on the whole sequence
 * (docs/reference.md, Reference bugs we fix). The boundary is the longest common prefix of the
 * full ids and the ids of `BOS + "CONTEXT: {in} TARGET:"`, so a token that merges context and
 * target characters counts as target.
 */
export function contextTargetTrainExample(
  record: DataRecord,
  tok: Tokenizer,
  limits: LayoutLimits,
): TrainExample {
  const full = tok.encode(
    contextTargetTrainingText(record.instruction, record.output, tok.bosToken, tok.eosToken),
  );
  const prefix = tok.encode((tok.bosToken ?? "") + `CONTEXT: ${record.instruction} TARGET:`);
  let common = 0;
  while (common < prefix.length && common < full.length && prefix[common] === full[common]) {
    common++;
  }
  const start = Math.max(common, 1);
  const tokens = full.slice(0, limits.maxLength);
  return { tokens, lossMask: tokens.map((id, t) => (t >= start ? countable(id, tok) : 0)) };
}

/**
 * Training examples of a dataset, in record order, with the dataset's layout and limits
 * (template 4 for the commonsense family and gsm8k, template 0 otherwise). Examples with no
 * counted target (an empty output) are dropped, since a batch of only those has no loss.
 */
export function trainExamples(
  records: readonly DataRecord[],
  tok: Tokenizer,
  name: DatasetName,
): TrainExample[] {
  const type = templateTypeFor(name);
  const out: TrainExample[] = [];
  for (const r of records) {
    const ex = type === 4
      ? alpacaTrainExample(r, tok, {
        maxLength: maxTokenLength(name),
        maxTarget: maxNewTokens(name),
      })
      : contextTargetTrainExample(r, tok, { maxLength: maxTokenLength(name) });
    if (countTargets(ex) > 0) out.push(ex);
  }
  return out;
}

function countTargets(ex: TrainExample): number {
  let n = 0;
  for (let t = 1; t < ex.lossMask.length; t++) n += ex.lossMask[t];
  return n;
}

/** The ignore value of a target (PyTorch's `ignore_index`). */
export const IGNORE_INDEX = -100;

/**
 * A packed batch: several sequences concatenated without padding.
 * `targets[t] = tokens[t+1]` when t+1 is in the same sequence and is a counted target, else -100.
 */
/**
 * A packed batch as lib/model/model.ts trains on it (tokens, targets with -100 for positions left
 * out of the loss, sequence boundaries, counted targets): the model's `Batch` under the name
 * the data side uses.
 */
export type PackedBatch = Batch;

/** Packs examples (in the given order) into one batch. */
export function packBatch(examples: readonly TrainExample[]): PackedBatch {
  let n = 0;
  for (const ex of examples) {
    if (ex.tokens.length !== ex.lossMask.length) {
      throw new Error("packBatch: tokens and lossMask differ in length");
    }
    n += ex.tokens.length;
  }
  const tokens = new Int32Array(n);
  const targets = new Int32Array(n).fill(IGNORE_INDEX);
  const cuSeqlens = new Uint32Array(examples.length + 1);
  let off = 0;
  let counted = 0;
  examples.forEach((ex, b) => {
    const len = ex.tokens.length;
    tokens.set(ex.tokens, off);
    for (let t = 0; t + 1 < len; t++) {
      if (ex.lossMask[t + 1] === 1) {
        targets[off + t] = ex.tokens[t + 1];
        counted++;
      }
    }
    off += len;
    cuSeqlens[b + 1] = off;
  });
  return { tokens, targets, cuSeqlens, numCounted: counted };
}

/**
 * One epoch of packed batches in a random order drawn from `rng` (Fisher-Yates on the example
 * indices). The last batch is kept even when smaller, as the reference's dataloader does
 * (`drop_last=False`).
 */
export function makeBatches(
  examples: readonly TrainExample[],
  batchSize: number,
  rng: Rng,
): PackedBatch[] {
  const order = epochOrder(examples.length, rng);
  const out: PackedBatch[] = [];
  for (let i = 0; i < order.length; i += batchSize) {
    out.push(packBatch(order.slice(i, i + batchSize).map((j) => examples[j])));
  }
  return out;
}

function epochOrder(n: number, rng: Rng): number[] {
  return rng.shuffle(Array.from({ length: n }, (_, i) => i));
}

/** Where a {@linkcode BatchLoader} is, for checkpoints (plain JSON). */
export interface LoaderState {
  /** Current epoch (0-based). */
  epoch: number;
  /** Batches already taken in this epoch. */
  position: number;
  /** The Rng state at the start of this epoch, before its shuffle. */
  epochRngState: number[];
}

/**
 * An endless, resumable stream of packed batches: each epoch is a fresh shuffle drawn from a
 * seeded {@linkcode Rng}, batches of `batchSize` with a smaller last batch. Its
 * {@linkcode LoaderState} restores the exact same stream.
 */
export class BatchLoader {
  readonly #examples: readonly TrainExample[];
  /** Examples per batch. */
  readonly batchSize: number;
  /** Batches per epoch: ceil(examples / batchSize). */
  readonly batchesPerEpoch: number;
  #rng: Rng;
  #epoch: number;
  #position: number;
  #epochRngState: number[];
  #order: number[];

  /** Starts at epoch 0 from `seed`, or resumes from a saved state. */
  constructor(
    examples: readonly TrainExample[],
    batchSize: number,
    seedOrState: number | LoaderState,
  ) {
    if (examples.length === 0) throw new Error("BatchLoader: no examples");
    if (!(Number.isInteger(batchSize) && batchSize > 0)) {
      throw new Error(`BatchLoader: bad batch size ${batchSize}`);
    }
    this.#examples = examples;
    this.batchSize = batchSize;
    this.batchesPerEpoch = Math.ceil(examples.length / batchSize);
    if (typeof seedOrState === "number") {
      this.#rng = new Rng(seedOrState);
      this.#epoch = 0;
      this.#position = 0;
    } else {
      this.#rng = new Rng(seedOrState.epochRngState);
      this.#epoch = seedOrState.epoch;
      this.#position = seedOrState.position;
      if (!(this.#position >= 0 && this.#position <= this.batchesPerEpoch)) {
        throw new Error(`BatchLoader: position ${this.#position} outside the epoch`);
      }
    }
    this.#epochRngState = this.#rng.state;
    this.#order = epochOrder(examples.length, this.#rng);
  }

  /** The current epoch (0-based); it advances when a batch is taken past the epoch's end. */
  get epoch(): number {
    return this.#epoch;
  }

  /** Batches already taken in the current epoch. */
  get position(): number {
    return this.#position;
  }

  /** The state to save; `new BatchLoader(examples, batchSize, state)` resumes from it. */
  get state(): LoaderState {
    return {
      epoch: this.#epoch,
      position: this.#position,
      epochRngState: [...this.#epochRngState],
    };
  }

  /** The next batch, starting a new reshuffled epoch when the current one is exhausted. */
  next(): PackedBatch {
    if (this.#position >= this.batchesPerEpoch) {
      this.#epoch++;
      this.#position = 0;
      this.#epochRngState = this.#rng.state;
      this.#order = epochOrder(this.#examples.length, this.#rng);
    }
    const start = this.#position * this.batchSize;
    const idx = this.#order.slice(start, start + this.batchSize);
    this.#position++;
    return packBatch(idx.map((j) => this.#examples[j]));
  }
}

/** An evaluation prompt. */
export interface TestPrompt {
  /** The prompt text, starting with the BOS string. */
  text: string;
  /** Its token ids, cut to the first `maxLength` tokens (right truncation, as the reference). */
  ids: number[];
}

/** Options of {@linkcode testPrompts}. */
export interface TestPromptOptions {
  /** Template type (default 4). */
  template?: TemplateType;
  /** Max prompt tokens (default 256; gsm8k uses 155). */
  maxLength?: number;
}

/**
 * Evaluation prompts: the BOS string + the template with an empty target (template 4 ends in
 * "### Response:\n"; template 0 in "TARGET: "), tokenized without added special tokens (the BOS
 * string itself maps to the BOS id).
 */
export function testPrompts(
  records: readonly DataRecord[],
  tok: Tokenizer,
  opts: TestPromptOptions = {},
): TestPrompt[] {
  const type = opts.template ?? 4;
  const maxLength = opts.maxLength ?? 256;
  return records.map((r) => {
    const text = testPrompt(type, r.instruction, tok.bosToken);
    return { text, ids: tok.encode(text).slice(0, maxLength) };
  });
}
