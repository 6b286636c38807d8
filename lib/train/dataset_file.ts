/**
 * Your own dataset files (`--dataset=PATH`): JSON Lines or a JSON array of records, read as a
 * stream of chunks (a large file is never one string), each record checked with a one-line
 * error naming the file, the line or index and the field; the four record formats
 * (Alpaca/LLM-Adapters, chat, plain text, prompt/completion) detected per file; the training
 * examples each format makes; and the seeded validation split. Pure: lib/io/dataset_file_deno.ts
 * opens the files.
 * @module
 */
import { HiraError, preview } from "../engine/errors.ts";
import { alpacaTrainExample, type TrainExample } from "./data.ts";
import { testPrompt } from "./prompt.ts";
import { Rng } from "../engine/rand.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import { type ChatMessage, chatPrompt, type ChatTemplate, chatTrainExample } from "./chat.ts";
import type { DatasetFormat } from "./dataset_format.ts";

export { DATASET_FORMATS, type DatasetFormat, isDatasetPath } from "./dataset_format.ts";

/** What each format's records hold, for messages and the log. */
export const FORMAT_FIELDS: Readonly<Record<DatasetFormat, string>> = {
  alpaca: "instruction, optional input, output",
  chat: "messages: [{role, content}]",
  text: "text",
  prompt_completion: "prompt, completion",
};

/** One checked record of a dataset file. */
export type FileRecord =
  | { format: "alpaca"; instruction: string; input: string; output: string; answer?: unknown }
  | { format: "chat"; messages: ChatMessage[]; answer?: unknown }
  | { format: "text"; text: string }
  | { format: "prompt_completion"; prompt: string; completion: string; answer?: unknown };

/** A raw value read from a file and where it was: "line 7" (JSONL) or "record 3 (line 12)". */
export interface RawRecord {
  /** The parsed JSON value. */
  value: unknown;
  /** Its place in the file, for errors. */
  where: string;
}

/** Extensions a dataset file may have. */
export const DATASET_EXTENSIONS: readonly string[] = [".jsonl", ".json"];

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object" : `a ${typeof v} (${preview(v, 30)})`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * The format of a record from its fields: `messages` is chat; `instruction` and `output` are
 * Alpaca; `prompt` and `completion` are prompt/completion; `text` is plain text. Anything else
 * is a {@linkcode HiraError} listing the fields found.
 */
export function detectFormat(value: unknown, file: string, where: string): DatasetFormat {
  if (!isObject(value)) {
    throw new HiraError(file, `${where}: expected a JSON object, got ${describe(value)}`);
  }
  if ("messages" in value) return "chat";
  if ("instruction" in value || "output" in value) return "alpaca";
  if ("prompt" in value || "completion" in value) return "prompt_completion";
  if ("text" in value) return "text";
  const keys = Object.keys(value).slice(0, 8).map((k) => `'${k}'`).join(", ") || "none";
  throw new HiraError(
    file,
    `${where}: no known format (fields: ${keys}); a record needs 'messages' (chat), ` +
      "'instruction' and 'output' (alpaca), 'prompt' and 'completion', or 'text' " +
      "(or force one with --dataset_format)",
  );
}

/**
 * Checks a record against `format`: every field the format needs is present and a string
 * (`input` may be missing; `messages` is a non-empty array of `{role, content}` strings). Other
 * fields are ignored except `answer`, kept as the reference answer for evaluation.
 */
export function checkRecord(
  value: unknown,
  format: DatasetFormat,
  file: string,
  where: string,
): FileRecord {
  if (!isObject(value)) {
    throw new HiraError(file, `${where}: expected a JSON object, got ${describe(value)}`);
  }
  const str = (field: string, optional = false): string => {
    if (!(field in value)) {
      if (optional) return "";
      throw new HiraError(
        file,
        `${where}: missing field '${field}' (${format} records have ${FORMAT_FIELDS[format]})`,
      );
    }
    const v = value[field];
    if (optional && v === null) return "";
    if (typeof v !== "string") {
      throw new HiraError(file, `${where}: field '${field}' must be a string, got ${describe(v)}`);
    }
    return v;
  };
  const answer = "answer" in value ? { answer: value.answer } : {};
  if (format === "alpaca") {
    return {
      format,
      instruction: str("instruction"),
      input: str("input", true),
      output: str("output"),
      ...answer,
    };
  }
  if (format === "prompt_completion") {
    return { format, prompt: str("prompt"), completion: str("completion"), ...answer };
  }
  if (format === "text") return { format, text: str("text") };
  if (!("messages" in value)) {
    throw new HiraError(file, `${where}: missing field 'messages' (a list of {role, content})`);
  }
  const msgs = value.messages;
  if (!Array.isArray(msgs)) {
    throw new HiraError(file, `${where}: field 'messages' must be an array, got ${describe(msgs)}`);
  }
  if (msgs.length === 0) throw new HiraError(file, `${where}: field 'messages' is empty`);
  const messages: ChatMessage[] = msgs.map((m, i) => {
    if (!isObject(m)) {
      throw new HiraError(file, `${where}: messages[${i}] must be an object, got ${describe(m)}`);
    }
    for (const f of ["role", "content"]) {
      if (typeof m[f] !== "string") {
        throw new HiraError(
          file,
          `${where}: messages[${i}].${f} must be a string, got ${
            f in m ? describe(m[f]) : "nothing"
          }`,
        );
      }
    }
    return { ...m, role: m.role as string, content: m.content as string };
  });
  return { format, messages, ...answer };
}

/** Parses one JSON text of a record, a one-line error naming `where` when it is not JSON. */
export function parseRecordJson(text: string, file: string, where: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HiraError(file, `${where}: not valid JSON (${(e as Error).message})`);
  }
}

/**
 * The records of a JSON Lines stream: one JSON value per line (blank lines skipped, a UTF-8
 * BOM and `\r\n` endings accepted), decoded chunk by chunk so only one line is held at a time.
 */
export async function* jsonlRecords(
  chunks: AsyncIterable<Uint8Array>,
  file: string,
): AsyncGenerator<RawRecord> {
  const dec = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });
  let rest = "";
  let line = 0;
  const emit = function* (text: string): Generator<RawRecord> {
    line++;
    const t = text.endsWith("\r") ? text.slice(0, -1) : text;
    if (t.trim() === "") return;
    const where = `line ${line}`;
    yield { value: parseRecordJson(t, file, where), where };
  };
  const decode = (bytes?: Uint8Array) => {
    try {
      return bytes ? dec.decode(bytes, { stream: true }) : dec.decode();
    } catch {
      throw new HiraError(file, `line ${line + 1}: not valid UTF-8`);
    }
  };
  for await (const chunk of chunks) {
    rest += decode(chunk);
    let nl: number;
    let start = 0;
    while ((nl = rest.indexOf("\n", start)) >= 0) {
      yield* emit(rest.slice(start, nl));
      start = nl + 1;
    }
    rest = rest.slice(start);
  }
  rest += decode();
  if (rest !== "") yield* emit(rest);
}

/**
 * The records of a stream holding one JSON array, element by element: a scanner tracks
 * strings and nesting and hands each top-level element's text to JSON.parse, so the file is
 * never one string. Errors name the element's index and the line it starts on.
 */
export async function* jsonArrayRecords(
  chunks: AsyncIterable<Uint8Array>,
  file: string,
): AsyncGenerator<RawRecord> {
  const dec = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });
  // before: waiting for '['; between: before an element (or ']' in an empty array); inside:
  // in an element, which ends at a ',' or ']' outside strings and nesting; done: after ']'.
  let state = "before" as "before" | "between" | "inside" | "done";
  let depth = 0;
  const open: string[] = [];
  let inString = false;
  let escaped = false;
  let pieces: string[] = [];
  let pieceStart = 0;
  let index = 0;
  let line = 1;
  let startLine = 1;
  const where = () => `record ${index} (line ${startLine})`;
  const finish = (buf: string, end: number): RawRecord => {
    pieces.push(buf.slice(pieceStart, end));
    const text = pieces.join("");
    pieces = [];
    const rec = { value: parseRecordJson(text, file, where()), where: where() };
    index++;
    return rec;
  };
  const decode = (bytes?: Uint8Array) => {
    try {
      return bytes ? dec.decode(bytes, { stream: true }) : dec.decode();
    } catch {
      throw new HiraError(file, `line ${line}: not valid UTF-8`);
    }
  };
  const process = function* (buf: string): Generator<RawRecord> {
    pieceStart = 0;
    for (let i = 0; i < buf.length; i++) {
      const c = buf[i];
      if (c === "\n") line++;
      if (state === "inside") {
        if (inString) {
          if (escaped) escaped = false;
          else if (c === "\\") escaped = true;
          else if (c === '"') inString = false;
          continue;
        }
        if (c === '"') inString = true;
        else if (c === "{" || c === "[") {
          open.push(c);
          depth++;
        } else if ((c === "}" || c === "]") && depth > 0) {
          // A closer that does not match its opener: JSON.parse names the fault.
          if (open.pop() !== (c === "}" ? "{" : "[")) yield finish(buf, i + 1);
          depth--;
        } else if ((c === "," || c === "]") && depth === 0) {
          yield finish(buf, i);
          state = c === "]" ? "done" : "between";
        }
        continue;
      }
      if (c === " " || c === "\t" || c === "\r" || c === "\n" || c === "\uFEFF") continue;
      if (state === "before") {
        if (c !== "[") {
          throw new HiraError(
            file,
            "expected a JSON array of records (for one record per line, name the file .jsonl)",
          );
        }
        state = "between";
      } else if (state === "between") {
        if (c === "]" && index === 0) state = "done";
        else if (c !== "]" && c !== ",") {
          state = "inside";
          startLine = line;
          pieceStart = i;
          pieces = [];
          depth = 0;
          open.length = 0;
          inString = false;
          escaped = false;
          i--; // rescan this character as the element's first
        } else throw new HiraError(file, `line ${line}: unexpected '${c}' in the array`);
      } else {
        throw new HiraError(file, `line ${line}: unexpected text after the closing ']'`);
      }
    }
    if (state === "inside") pieces.push(buf.slice(pieceStart));
  };
  for await (const chunk of chunks) yield* process(decode(chunk));
  yield* process(decode());
  if (state === "inside") {
    throw new HiraError(file, `${where()}: the file ends inside this record`);
  }
  if (state !== "done") throw new HiraError(file, "the JSON array is not closed with ']'");
}

/**
 * The checked records of a file's raw records: the format is `forced`, else detected from the
 * first record, and every record must then have that format's fields. A file without records
 * is an error.
 */
export async function* checkedRecords(
  raw: AsyncIterable<RawRecord>,
  file: string,
  forced: DatasetFormat | null,
  onFormat?: (format: DatasetFormat) => void,
): AsyncGenerator<FileRecord & { where: string }> {
  let format = forced;
  let n = 0;
  for await (const r of raw) {
    if (format === null) {
      format = detectFormat(r.value, file, r.where);
      onFormat?.(format);
    } else if (n === 0) onFormat?.(format);
    n++;
    yield { ...checkRecord(r.value, format, file, r.where), where: r.where };
  }
  if (n === 0) throw new HiraError(file, "no records (the dataset file is empty)");
}

/**
 * The records that go to validation when a dataset has no validation file: `round(n·split)`
 * of the n record indices (at least 1 when split > 0 and n > 1, never all n), drawn by a
 * shuffle seeded with `seed`, so the same seed always holds out the same records.
 */
export function validationIndices(n: number, split: number, seed: number): Set<number> {
  if (!(split > 0) || n < 2) return new Set();
  const k = Math.min(n - 1, Math.max(1, Math.round(n * split)));
  const order = new Rng(seed).shuffle(Array.from({ length: n }, (_, i) => i));
  return new Set(order.slice(0, k));
}

/** What building training examples from a file needs. */
export interface ExampleContext {
  /** The model's tokenizer. */
  tok: Tokenizer;
  /** The model's chat template; only chat records need one. */
  chat: ChatTemplate | null;
  /** Tokens per example (and per packed block for plain text). */
  maxLength: number;
  /** The file, for errors. */
  file: string;
}

/** An Alpaca record's instruction with its optional input after a blank line (LLM-Adapters). */
export function alpacaInstruction(r: { instruction: string; input: string }): string {
  return r.input.trim() === "" ? r.instruction : `${r.instruction}\n\n${r.input}`;
}

function withEos(ids: number[], tok: Tokenizer): number[] {
  return ids.at(-1) === tok.eosId ? ids : [...ids, tok.eosId];
}

/**
 * The training example of one record (plain text goes through {@linkcode TextPacker}
 * instead):
 * - alpaca: today's template-4 layout (lib/train/data.ts `alpacaTrainExample`), loss on the output;
 * - chat: the model's chat template, loss on the assistant turns (lib/train/chat.ts);
 * - prompt_completion: `prompt` tokenized with the tokenizer's own special tokens (BOS where
 *   its post-processor adds one, as transformers does), then the completion and EOS, with the
 *   loss on the completion and EOS;
 * all cut to the first `maxLength` tokens.
 */
export function fileTrainExample(
  rec: FileRecord & { where: string },
  ctx: ExampleContext,
): TrainExample {
  const { tok, maxLength } = ctx;
  if (rec.format === "alpaca") {
    const ex = alpacaTrainExample(
      { instruction: alpacaInstruction(rec), output: rec.output },
      tok,
      { maxLength, maxTarget: maxLength },
    );
    return { tokens: ex.tokens.slice(0, maxLength), lossMask: ex.lossMask.slice(0, maxLength) };
  }
  if (rec.format === "chat") {
    if (!ctx.chat) throw new Error("fileTrainExample: chat records need a template");
    if (!rec.messages.some((m) => m.role === "assistant")) {
      throw new HiraError(
        ctx.file,
        `${rec.where}: field 'messages' has no assistant turn to learn`,
      );
    }
    return chatTrainExample(ctx.chat, rec.messages, tok, maxLength, `${ctx.file}: ${rec.where}`);
  }
  if (rec.format === "prompt_completion") {
    const prompt = tok.encode(rec.prompt, { addSpecial: true });
    const tokens = withEos([...prompt, ...tok.encode(rec.completion)], tok).slice(0, maxLength);
    return { tokens, lossMask: tokens.map((_, t) => (t >= prompt.length ? 1 : 0)) };
  }
  throw new Error("fileTrainExample: text records are packed by TextPacker");
}

/**
 * Plain-text packing: each text is tokenized with the tokenizer's own special tokens, EOS
 * appended (as TRL's packing does), and the stream cut into blocks of `blockLen` tokens with the
 * loss on every token. The last, shorter block is kept when it has at least 2 tokens.
 */
export class TextPacker {
  #buf: number[] = [];
  readonly #blocks: TrainExample[] = [];

  /** Makes a packer of `blockLen`-token blocks. */
  constructor(readonly tok: Tokenizer, readonly blockLen: number) {
    if (!(blockLen >= 2)) throw new Error(`TextPacker: block length ${blockLen} < 2`);
  }

  /** Adds one text. */
  push(text: string): void {
    for (const id of withEos(this.tok.encode(text, { addSpecial: true }), this.tok)) {
      this.#buf.push(id);
      if (this.#buf.length === this.blockLen) this.#emit();
    }
  }

  #emit(): void {
    const tokens = this.#buf;
    this.#buf = [];
    this.#blocks.push({ tokens, lossMask: tokens.map((_, t) => (t === 0 ? 0 : 1)) });
  }

  /** Every block, the short last one included. */
  finish(): TrainExample[] {
    if (this.#buf.length >= 2) this.#emit();
    this.#buf = [];
    return this.#blocks;
  }
}

/** A record's decoding prompt and reference answer (null when it has none). */
export interface FilePrompt {
  /** The prompt text, formatted as in training. */
  prompt: string;
  /** The answer predictions are scored against, or null. */
  reference: string | null;
}

/**
 * The decoding prompt of a record, formatted as in training: alpaca is BOS + today's template
 * with an empty target (lib/train/data.ts `testPrompts`); chat is the conversation before its last
 * assistant turn with the generation prompt; prompt_completion is the prompt. The reference is
 * the record's `answer` when it has one, else its target text. Plain text has no prompt: a
 * {@linkcode HiraError} points to `eval perplexity`.
 */
export function filePrompt(
  rec: FileRecord & { where?: string },
  tok: Tokenizer,
  chat: ChatTemplate | null,
  file: string,
): FilePrompt {
  const ans = "answer" in rec && rec.answer !== undefined && rec.answer !== null
    ? String(Array.isArray(rec.answer) ? rec.answer[0] : rec.answer)
    : null;
  if (rec.format === "alpaca") {
    return {
      prompt: testPrompt(4, alpacaInstruction(rec), tok.bosToken),
      reference: ans ?? rec.output,
    };
  }
  if (rec.format === "prompt_completion") {
    return { prompt: rec.prompt, reference: ans ?? rec.completion };
  }
  if (rec.format === "chat") {
    if (!chat) throw new Error("filePrompt: chat records need a template");
    const p = chatPrompt(chat, rec.messages);
    return { prompt: p.prompt, reference: ans ?? p.reference };
  }
  throw new HiraError(
    file,
    "plain-text records have no prompt to decode; use `eval perplexity --dataset=...`",
  );
}

/**
 * Text normalisation for scoring: Unicode NFKC, lower case, whitespace runs as one space,
 * trimmed.
 */
export function normalizeAnswer(s: string): string {
  return s.normalize("NFKC").toLowerCase().replace(/\s+/g, " ").trim();
}

/** Exact match and contains-answer of a prediction against a reference, after normalising. */
export function scoreAnswer(
  pred: string,
  reference: string,
): { exact_match: boolean; contains: boolean } {
  const p = normalizeAnswer(pred), r = normalizeAnswer(reference);
  return { exact_match: p === r, contains: r !== "" && p.includes(r) };
}
