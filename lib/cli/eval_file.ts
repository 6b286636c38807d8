/**
 * Evaluation on your own data (`deno task eval --dataset=PATH`): decodes the test split
 * (a folder's test file, else its validation file; a single file whole) with each record
 * formatted as in training, writes the predictions JSONL, and scores exact match and
 * contains-answer where records carry a reference; `eval perplexity --dataset=PATH` gives
 * the mean NLL over the tokens training counts (the same formatting and loss mask).
 * @module
 */
import { basename, join } from "@std/path";
import { createDenoGpu } from "../io/gpu_deno.ts";
import { HiraError } from "../engine/errors.ts";
import type { EvalArgs } from "./flags.ts";
import { decodeTokens, inEvalMode, stopIds } from "../eval/evaluate.ts";
import { openEvalModel, writePredictions } from "./eval.ts";
import { packBatch, type TrainExample } from "../train/data.ts";
import type { ChatTemplate } from "../train/chat.ts";
import { generationStopIds, loadChatTemplate } from "../io/chat_deno.ts";
import {
  type DatasetFormat,
  filePrompt,
  fileTrainExample,
  FORMAT_FIELDS,
  scoreAnswer,
  TextPacker,
} from "../train/dataset_file.ts";
import { evalFileRecords, fileSeqLen, forcedFormat } from "../io/dataset_file_deno.ts";
import { writeFileAtomic } from "../io/safetensors_deno.ts";
import type { LlamaModel } from "../model/model.ts";

/** Default new tokens when decoding your own data (no dataset-specific length is known). */
export const FILE_MAX_NEW_TOKENS = 64;

/** One line of the predictions JSONL of `eval --dataset=PATH`. */
export interface FilePrediction {
  /** 0-based position among the evaluated records. */
  index: number;
  /** Where the record is in its file ("line 7", "record 3 (line 12)"). */
  where: string;
  /** The prompt as decoded. */
  prompt: string;
  /** The decoded prediction (special tokens dropped, trimmed). */
  pred: string;
  /** The reference answer, or null when the record has none. */
  reference: string | null;
  /** Normalised prediction equals the reference (null without one). */
  exact_match: boolean | null;
  /** Normalised prediction contains the reference (null without one). */
  contains: boolean | null;
}

/** The scores of a predictions list. */
export interface FileScores {
  /** Records evaluated. */
  examples: number;
  /** Records with a reference answer (the others are not scored). */
  scored: number;
  /** Percent of scored records whose normalised prediction equals the reference. */
  exact_match: number | null;
  /** Percent of scored records whose normalised prediction contains the reference. */
  contains: number | null;
}

/** Exact match and contains-answer over the predictions that have a reference. */
export function fileScores(preds: readonly FilePrediction[]): FileScores {
  const s = preds.filter((p) => p.reference !== null);
  const pct = (k: "exact_match" | "contains") =>
    s.length ? (100 * s.filter((p) => p[k]).length) / s.length : null;
  return {
    examples: preds.length,
    scored: s.length,
    exact_match: pct("exact_match"),
    contains: pct("contains"),
  };
}

/**
 * Mean NLL over the counted tokens of training examples (the loss training reports), in
 * batches of `batch` examples.
 */
export async function maskedNll(
  model: LlamaModel,
  examples: readonly TrainExample[],
  batch: number,
): Promise<{ mean_nll: number; perplexity: number; tokens: number; examples: number }> {
  let total = 0, count = 0;
  await inEvalMode(model, async () => {
    for (let i = 0; i < examples.length; i += batch) {
      const b = packBatch(examples.slice(i, i + batch));
      const rows = await model.tokenNll(b);
      for (const x of rows) total += x;
      count += b.numCounted;
    }
  });
  const mean = total / count;
  return { mean_nll: mean, perplexity: Math.exp(mean), tokens: count, examples: examples.length };
}

/** `deno task eval [perplexity] --dataset=PATH` (see the module doc). */
export async function fileEvalCommand(a: EvalArgs): Promise<void> {
  const path = a.dataset!;
  const forced = forcedFormat(a.dataset_format);
  // Every record is read and checked before the (slow) model load.
  const { file, format, records } = await evalFileRecords(path, forced, a.limit);
  const perplexityMode = a.command === "perplexity";
  if (!perplexityMode && format === "text") {
    throw new HiraError(
      file,
      "plain-text records have no prompt to decode; use `eval perplexity --dataset=...`",
    );
  }
  console.log(
    `dataset ${file}: ${format} format (${FORMAT_FIELDS[format]}), ${records.length} records`,
  );
  const gpu = await createDenoGpu();
  const em = await openEvalModel(gpu, a);
  const tok = em.tok!;
  const chat: ChatTemplate | null = format === "chat"
    ? await loadChatTemplate(a.tokenizer ?? em.modelDir, a.chat_template, tok)
    : null;
  const maxLength = fileSeqLen(a.seq_len, em.model.config.maxPositionEmbeddings);
  console.log(`model: ${em.modelDir}${em.adapterDir ? ` + adapter ${em.adapterDir}` : ""}`);
  if (perplexityMode) {
    let examples: TrainExample[];
    if (format === "text") {
      const p = new TextPacker(tok, maxLength);
      for (const r of records) if (r.format === "text") p.push(r.text);
      examples = p.finish();
    } else {
      examples = records.map((r) => fileTrainExample(r, { tok, chat, maxLength, file }))
        .filter((ex) => ex.lossMask.some((m, t) => t > 0 && m === 1));
    }
    if (examples.length === 0) throw new HiraError(file, "no record has tokens to score");
    const r = await maskedNll(em.model, examples, Math.max(1, a.batch));
    console.log(JSON.stringify({ dataset: file, format, ...r }));
    return;
  }
  const maxNew = a.max_new_tokens ?? FILE_MAX_NEW_TOKENS;
  const prompts = records.map((r) => filePrompt(r, tok, chat, file));
  // Prompts are tokenized as training tokenizes them: the alpaca and chat texts carry their
  // own BOS; a prompt/completion prompt gets the tokenizer's own special tokens.
  const ids = prompts.map((p) =>
    tok.encode(p.prompt, { addSpecial: format === "prompt_completion" })
      .slice(0, Math.max(1, maxLength - maxNew))
  );
  const beams = a.decoding === "greedy" ? 1 : a.beam_size;
  const eos = [...new Set([...stopIds(em.model, tok), ...await generationStopIds(em.modelDir)])];
  const news = await decodeTokens(em.model, ids, {
    maxNewTokens: maxNew,
    eosIds: eos,
    numBeams: beams,
    lengthPenalty: 1,
    noRepeatNgramSize: 0,
  }, { batch: a.batch });
  const preds: FilePrediction[] = records.map((r, i) => {
    const pred = tok.decode(news[i], { skipSpecial: true }).trim();
    const ref = prompts[i].reference;
    const s = ref === null ? null : scoreAnswer(pred, ref);
    return {
      index: i,
      where: r.where,
      prompt: prompts[i].prompt,
      pred,
      reference: ref,
      exact_match: s?.exact_match ?? null,
      contains: s?.contains ?? null,
    };
  });
  const scores = fileScores(preds);
  const tag = (beams === 1 ? "greedy" : `beam=${beams}`) + (a.limit ? `_limit=${a.limit}` : "");
  const name = basename(path.replace(/[/\\]+$/, "")).replace(/\.jsonl?$/i, "");
  const outDir = a.out ?? (a.ckpt ? join(a.ckpt, "eval") : join("results_hira", "eval-file"));
  const predFile = join(outDir, `predictions_${name}_${tag}.jsonl`);
  await writePredictions(predFile, preds);
  await writeFileAtomic(
    join(outDir, `scores_${name}_${tag}.json`),
    JSON.stringify(
      { dataset: file, format: format as DatasetFormat, decoding: tag, ...scores },
      null,
      2,
    ) +
      "\n",
  );
  const f = (x: number | null) => (x === null ? "–" : `${x.toFixed(2)}%`);
  console.log(
    `${name}: exact match ${f(scores.exact_match)}, contains answer ${f(scores.contains)} ` +
      `(${scores.scored} of ${scores.examples} records have a reference) -> ${predFile}`,
  );
}
