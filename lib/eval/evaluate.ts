/**
 * Evaluation without file I/O: running a dataset's test prompts through a decoder
 * (docs/reference.md, Decoding); scoring is lib/eval/scoring.ts. The
 * flags are lib/cli/flags.ts, the Markdown and charts lib/report/accuracy.ts, perplexity
 * lib/eval/perplexity.ts.
 *
 * Decoding follows the reference: BOS + the Alpaca template with an empty target
 * (lib/train/data.ts `testPrompts`), 4-beam search with 16 new tokens for the commonsense sets (200
 * for gsm8k), the new tokens decoded WITH special tokens and cut at the pad/EOS strings, "Q:"
 * and "R:" (`cleanPrediction`); ConvAI2 uses `BOS + "CONTEXT: {in} TARGET: "`, 4 beams,
 * length_penalty 0.9, no_repeat_ngram_size 4 and 32 new tokens.
 * @module
 */
import { HiraError } from "../engine/errors.ts";
import {
  type DataRecord,
  type DatasetName,
  maxNewTokens,
  maxTokenLength,
  testPrompts,
} from "../train/data.ts";
import { cleanPrediction, isCommonsenseTask } from "./scoring.ts";
import { generate, type GenerateOptions, type StepFn, type Stepper } from "./generate.ts";
import { KvCacheDecoder, recomputeStep } from "./decode.ts";
import type { LlamaModel } from "../model/model.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import type { TemplateType } from "../train/prompt.ts";
import type { DialogueRecord } from "./metrics.ts";

// ---------------------------------------------------------------------------------------------
// Decoding

/** How one dataset is decoded (docs/reference.md, Decoding; Data layouts and templates). */
export interface DecodeSettings {
  /** Prompt template (4: Alpaca; 0: CONTEXT/TARGET). */
  template: TemplateType;
  /** Prompt tokens kept (right truncation, as the reference). */
  maxPromptTokens: number;
  maxNewTokens: number;
  /** 1 = greedy. */
  numBeams: number;
  lengthPenalty: number;
  noRepeatNgramSize: number;
}

/** Decoding choices from the flags (all optional). */
export interface DecodeChoice {
  /** Beams (default 4). */
  beamSize?: number | null;
  /** Greedy decoding (overrides beamSize). */
  greedy?: boolean;
  /** New-token override. */
  maxNewTokens?: number | null;
}

/**
 * The reference's decoding settings for a dataset: commonsense sets, common_170k and gsm8k use
 * the Alpaca prompt, `--beam_size` beams (default 4), length_penalty 1 and 16 (gsm8k 200) new
 * tokens; convai2 uses the CONTEXT/TARGET prompt, length_penalty 0.9, no_repeat_ngram_size 4 and
 * 32 new tokens. Greedy means one beam.
 */
export function decodeSettings(dataset: string, choice: DecodeChoice = {}): DecodeSettings {
  const beams = choice.greedy ? 1 : (choice.beamSize ?? 4);
  const name = dataset as DatasetName;
  if (dataset === "convai2") {
    return {
      template: 0,
      maxPromptTokens: maxTokenLength(name),
      maxNewTokens: choice.maxNewTokens ?? maxNewTokens(name),
      numBeams: beams,
      lengthPenalty: 0.9,
      noRepeatNgramSize: 4,
    };
  }
  if (!isCommonsenseTask(dataset) && dataset !== "gsm8k" && dataset !== "common_170k") {
    throw new HiraError(dataset, "no decoding settings for this dataset");
  }
  return {
    template: 4,
    maxPromptTokens: maxTokenLength(name),
    maxNewTokens: choice.maxNewTokens ?? maxNewTokens(name),
    numBeams: beams,
    lengthPenalty: 1,
    noRepeatNgramSize: 0,
  };
}

/**
 * The decoding part of output names: "beam=4" or "greedy", then "_maxT=N" for a new-token
 * override and "_limit=N" for a subset (so partial runs never overwrite full ones).
 */
export function decodingTag(
  settings: DecodeSettings,
  opts: { maxNewTokensOverride?: number | null; limit?: number } = {},
): string {
  let tag = settings.numBeams === 1 ? "greedy" : `beam=${settings.numBeams}`;
  if (opts.maxNewTokensOverride) tag += `_maxT=${opts.maxNewTokensOverride}`;
  if (opts.limit) tag += `_limit=${opts.limit}`;
  return tag;
}

/** The predictions file name, reference-like: `output_{dataset}_{tag}_eval.jsonl`. */
export function predictionsFileName(dataset: string, tag: string): string {
  return `output_${dataset}_${tag}_eval.jsonl`;
}

/** Which next-token provider decodes: the KV-cache decoder or full recomputation (oracle). */
export type DecoderKind = "kv" | "recompute";

/** Options of {@linkcode decodeTokens} / {@linkcode predictTexts}. */
export interface PredictOptions {
  /** Prompts per decoding batch (default 8). */
  batch?: number;
  /** Default "kv". */
  decoder?: DecoderKind;
  /** Called after each batch with the number of prompts done. */
  onProgress?: (done: number, total: number) => void;
}

/** The EOS ids decoding stops at: the model config's (as HF's generation_config), else the tokenizer's. */
export function stopIds(model: LlamaModel, tok: Tokenizer): number[] {
  return model.config.eosTokenIds.length ? [...model.config.eosTokenIds] : [tok.eosId];
}

/**
 * Runs `fn` with every LoRA adapter in eval mode (dropout off, as the reference's model.eval()),
 * restoring each adapter's mode afterwards.
 */
export async function inEvalMode<T>(model: LlamaModel, fn: () => Promise<T>): Promise<T> {
  const saved = [...model.adapters.values()].map((ad) => [ad, ad.training] as const);
  for (const [ad] of saved) ad.training = false;
  try {
    return await fn();
  } finally {
    for (const [ad, mode] of saved) ad.training = mode;
  }
}

/**
 * Generates the new tokens of every prompt, `batch` prompts at a time (all beams of a batch in
 * one provider call per step). Adapters run in eval mode.
 */
export async function decodeTokens(
  model: LlamaModel,
  prompts: readonly (readonly number[])[],
  gen: GenerateOptions,
  opts: PredictOptions = {},
): Promise<number[][]> {
  const batch = opts.batch ?? 8;
  const out: number[][] = [];
  await inEvalMode(model, async () => {
    for (let i = 0; i < prompts.length; i += batch) {
      const chunk = prompts.slice(i, i + batch);
      const source: StepFn | Stepper = (opts.decoder ?? "kv") === "kv"
        ? new KvCacheDecoder(model)
        : recomputeStep(model);
      out.push(...await generate(source, chunk, gen));
      opts.onProgress?.(Math.min(i + batch, prompts.length), prompts.length);
    }
  });
  return out;
}

/**
 * Decodes the records' test prompts and returns the cleaned predictions (decoded with special
 * tokens, then pad strings deleted and cut at EOS, "Q:", "R:"), in record order.
 */
export async function predictTexts(
  model: LlamaModel,
  tok: Tokenizer,
  records: readonly DataRecord[],
  settings: DecodeSettings,
  opts: PredictOptions = {},
): Promise<string[]> {
  const prompts = testPrompts(records, tok, {
    template: settings.template,
    maxLength: settings.maxPromptTokens,
  }).map((p) => p.ids);
  const news = await decodeTokens(model, prompts, {
    maxNewTokens: settings.maxNewTokens,
    eosIds: stopIds(model, tok),
    numBeams: settings.numBeams,
    lengthPenalty: settings.lengthPenalty,
    noRepeatNgramSize: settings.noRepeatNgramSize,
  }, opts);
  return news.map((ids) =>
    cleanPrediction(tok.decode(ids, { skipSpecial: false }), {
      padToken: tok.padToken,
      eosToken: tok.eosToken,
    })
  );
}

/** ConvAI2 dialogue records from the test records and predictions ({context, pred, gt}). */
export function dialogueRecords(
  records: readonly DataRecord[],
  preds: readonly string[],
): DialogueRecord[] {
  return records.map((r, i) => ({ context: r.instruction, pred: preds[i], gt: r.output }));
}
