/**
 * Perplexity of a model (with or without adapters) over token sequences or text documents: the
 * mean next-token NLL, as `deno task eval perplexity` prints it.
 * @module
 */
import { inEvalMode } from "./evaluate.ts";
import { HiraError } from "../engine/errors.ts";
import type { LlamaModel } from "../model/model.ts";
import type { Tokenizer } from "../model/tokenizer.ts";

/** Result of {@linkcode perplexity}. */
export interface PerplexityResult {
  /** Mean NLL over every predicted token of every sequence (nats). */
  mean_nll: number;
  /** exp(mean_nll). */
  perplexity: number;
  /** Number of predicted tokens (Σ (length − 1)). */
  tokens: number;
  /** Mean NLL of each sequence. */
  per_sequence: number[];
}

/**
 * Next-token NLL of token sequences (each predicts its tokens 1..T−1 from the ones before),
 * packed into batches of at most `maxBatchTokens` tokens (a longer sequence runs alone).
 * `source` names the input in errors (a sequence shorter than 2 tokens, an id outside the
 * vocabulary).
 */
export async function perplexity(
  model: LlamaModel,
  seqs: readonly (readonly number[])[],
  opts: { maxBatchTokens?: number; source?: string } = {},
): Promise<PerplexityResult> {
  const source = opts.source ?? "tokens";
  const V = model.config.vocabSize;
  if (seqs.length === 0) throw new HiraError(source, "no sequences");
  seqs.forEach((s, i) => {
    if (s.length < 2) {
      throw new HiraError(source, `sequence ${i} has ${s.length} token(s); at least 2 are needed`);
    }
    for (const t of s) {
      if (!Number.isInteger(t) || t < 0 || t >= V) {
        throw new HiraError(
          source,
          `sequence ${i}: token id ${t} is outside the vocabulary (${V})`,
        );
      }
    }
  });
  const maxTokens = opts.maxBatchTokens ?? 2048;
  const perSeq: number[] = [];
  let total = 0, count = 0;
  await inEvalMode(model, async () => {
    for (let i = 0; i < seqs.length;) {
      const group: (readonly number[])[] = [];
      let n = 0;
      while (i < seqs.length && (group.length === 0 || n + seqs[i].length <= maxTokens)) {
        group.push(seqs[i]);
        n += seqs[i].length;
        i++;
      }
      const tokens = new Int32Array(n), targets = new Int32Array(n).fill(-100);
      const cu = new Uint32Array(group.length + 1);
      let off = 0, counted = 0;
      group.forEach((s, b) => {
        tokens.set(s, off);
        for (let t = 0; t + 1 < s.length; t++) targets[off + t] = s[t + 1];
        counted += s.length - 1;
        off += s.length;
        cu[b + 1] = off;
      });
      const nll = await model.tokenNll({ tokens, targets, cuSeqlens: cu, numCounted: counted });
      let k = 0;
      for (const s of group) {
        let sum = 0;
        for (let t = 0; t + 1 < s.length; t++) sum += nll[k++];
        perSeq.push(sum / (s.length - 1));
        total += sum;
        count += s.length - 1;
      }
    }
  });
  const mean = total / count;
  // A NaN or infinite perplexity printed as null with exit 0 looked like a result.
  if (!Number.isFinite(Math.exp(mean))) {
    throw new HiraError(
      source,
      `the mean NLL is ${mean}, so the perplexity is not finite: the model (or adapter) gives ` +
        "NaN or infinite logits; no perplexity is reported",
    );
  }
  return { mean_nll: mean, perplexity: Math.exp(mean), tokens: count, per_sequence: perSeq };
}

/**
 * Token sequences from a `--tokens` file's JSON: an array of token id arrays, or an object with
 * such an array under "tokens" (the fixtures' layout).
 */
export function parseTokenFile(json: unknown, file: string): number[][] {
  const arr = typeof json === "object" && json !== null && !Array.isArray(json)
    ? (json as Record<string, unknown>).tokens
    : json;
  if (!Array.isArray(arr)) throw new HiraError(file, "expected a JSON array of token id arrays");
  return arr.map((s, i) => {
    if (
      !Array.isArray(s) || s.some((t) => typeof t !== "number" || !Number.isInteger(t) || t < 0)
    ) {
      throw new HiraError(file, `item ${i} is not an array of non-negative integer token ids`);
    }
    return s as number[];
  });
}

/**
 * Documents of a `--text` file: a JSON array of strings, or else one document per non-empty
 * line.
 */
export function parseTextFile(text: string, file: string): string[] {
  const t = text.trimStart();
  if (t.startsWith("[")) {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new HiraError(file, `looks like JSON but does not parse (${(e as Error).message})`);
    }
    if (!Array.isArray(json) || json.some((s) => typeof s !== "string")) {
      throw new HiraError(file, "expected a JSON array of strings");
    }
    return json as string[];
  }
  return text.split(/\r?\n/).filter((l) => l.trim() !== "");
}

/** Token ids of a document for perplexity: BOS (when the tokenizer has one) + the text. */
export function documentTokens(tok: Tokenizer, text: string): number[] {
  return [...(tok.bosId !== null ? [tok.bosId] : []), ...tok.encode(text)];
}
