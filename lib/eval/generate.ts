/**
 * Text generation over a next-token log-prob provider: greedy search and beam search following
 * Hugging Face transformers 4.41 (`_greedy_search`, `_beam_search`, `BeamSearchScorer`,
 * `BeamHypotheses`, `NoRepeatNGramLogitsProcessor`) for do_sample=False, early_stopping=False
 * and one returned sequence per prompt, which is how the reference decodes (docs/reference.md,
 * Decoding: 4 beams, length_penalty 1.0, or 4 beams, 0.9 and no_repeat_ngram_size 4).
 *
 * The model side is abstracted so the search is testable on tables: a {@linkcode StepFn} maps
 * whole sequences to next-token log-probs (simple, used as the oracle), and a
 * {@linkcode Stepper} is told which sequence each new one continues (what a KV-cache decoder
 * needs; see lib/eval/decode.ts). All prompts run as one batch: one provider call per step for every
 * live (prompt, beam) sequence.
 *
 * Rules carried over from HF (and where this differs):
 * - Scores are cumulative log-softmax sums; here in f64 (HF: f32). Ties between equal
 *   candidates go to the lower flat index beam·V + token (torch.topk leaves them unspecified).
 * - Beam step: the top max(2, 1 + #eos)·B candidates over (beam, token); an EOS candidate
 *   ranked below the first B is dropped, one ranked within them becomes a finished hypothesis
 *   (without the EOS) scored sum_logprobs / generated_len^length_penalty, where generated_len
 *   counts the new tokens including the EOS; the first B non-EOS candidates continue.
 * - Before the first step the B beams are copies of the prompt with scores 0, −1e9, …, −1e9,
 *   so the first step expands only beam 0 (the copies share one provider row here).
 * - A prompt is done when it holds B finished hypotheses and the worst of them is at least
 *   best_candidate_sum / generated_len^length_penalty (the early_stopping=False heuristic, with
 *   the best of all this step's candidates, EOS ones included); a done prompt stops expanding.
 * - At max_new_tokens the running beams of unfinished prompts join the hypotheses with
 *   generated_len = max_new_tokens; the best-scored hypothesis wins (on a tie, the one added
 *   last, as Python's stable sort followed by pop()).
 * - no_repeat_ngram_size n bans every token that would repeat an n-gram of the sequence
 *   (prompt included, as HF sees input_ids; HF's left padding is absent here).
 * - Output: the new tokens only. A sequence that ended on EOS includes it, as HF's output does
 *   (greedy: the EOS generated; beam: eos_token_id[0], which HF's finalize appends whichever EOS
 *   ended it). The reference then cuts the decoded text at the first EOS string
 *   (docs/reference.md, Decoding).
 * @module
 */

/**
 * Next-token log-probs of whole sequences: returns [seqs.length, V] log-softmax rows (row i
 * is the distribution of the token after seqs[i]). Must not modify `seqs`.
 */
export interface StepFn {
  (seqs: number[][]): Promise<Float32Array>;
}

/**
 * An incremental next-token provider. The live sequences form a list; {@linkcode start} sets it
 * to the prompts and every {@linkcode step} replaces it: new sequence i is old sequence
 * `parents[i]` followed by `tokens[i]` (parents may repeat or be skipped). Both return the
 * next-token log-softmax rows [list length, V] of the new list.
 */
export interface Stepper {
  /** Starts from the prompts; `maxNewTokens` bounds how far any sequence will grow. */
  start(prompts: readonly (readonly number[])[], maxNewTokens: number): Promise<Float32Array>;
  /** Extends the list (see the interface). */
  step(parents: readonly number[], tokens: readonly number[]): Promise<Float32Array>;
  /** Releases what the stepper holds; called by {@linkcode generate} when it finishes. */
  end?(): void;
}

/** Decoding settings (HF's names in parentheses). */
export interface GenerateOptions {
  /** New tokens at most per prompt (max_new_tokens). */
  maxNewTokens: number;
  /** Tokens that end a sequence (eos_token_id); may be empty. */
  eosIds: readonly number[];
  /** 1 = greedy (the default), more = beam search (num_beams). */
  numBeams?: number;
  /** Exponent of the generated length dividing a finished beam's score; default 1.0. */
  lengthPenalty?: number;
  /** Ban repeating any n-gram of this size; 0 (default) = off. */
  noRepeatNgramSize?: number;
}

/** Score of the dummy beams 1..B−1 before the first step (HF's beam_scores[:, 1:] = -1e9). */
const DUMMY_BEAM_SCORE = -1e9;

/**
 * Adapts a {@linkcode StepFn} to the {@linkcode Stepper} interface by keeping the sequences on
 * the host and passing all of them every step.
 */
export function stepperFromStepFn(fn: StepFn): Stepper {
  let seqs: number[][] = [];
  return {
    async start(prompts) {
      seqs = prompts.map((p) => [...p]);
      return await fn(seqs);
    },
    async step(parents, tokens) {
      checkStep(parents, tokens, seqs.length);
      seqs = parents.map((p, i) => [...seqs[p], tokens[i]]);
      return await fn(seqs);
    },
  };
}

/** Throws unless `parents`/`tokens` describe a valid step from a list of `prev` sequences. */
export function checkStep(
  parents: readonly number[],
  tokens: readonly number[],
  prev: number,
): void {
  if (parents.length !== tokens.length) {
    throw new Error(`step: ${parents.length} parents but ${tokens.length} tokens`);
  }
  if (parents.length === 0) throw new Error("step: no sequences to extend");
  for (const p of parents) {
    if (!Number.isInteger(p) || p < 0 || p >= prev) {
      throw new Error(`step: parent ${p} is not one of the ${prev} live sequences`);
    }
  }
  for (const t of tokens) {
    if (!Number.isInteger(t) || t < 0) throw new Error(`step: token ${t} is not a token id`);
  }
}

/**
 * Tokens that would complete an n-gram already present in `seq` (HF's
 * NoRepeatNGramLogitsProcessor for one sequence): those following an earlier occurrence of the
 * last n−1 tokens. Empty when n is 0 or the sequence is shorter than n−1.
 */
export function bannedNgramTokens(seq: readonly number[], n: number): number[] {
  const len = seq.length;
  if (n <= 0 || len + 1 < n) return [];
  const start = len - (n - 1);
  const out: number[] = [];
  for (let i = 0; i + n <= len; i++) {
    let match = true;
    for (let j = 0; j < n - 1 && match; j++) match = seq[i + j] === seq[start + j];
    if (match) out.push(seq[i + n - 1]);
  }
  return out;
}

/** A row's entries with bans applied: −∞ for banned tokens; NaN is refused. */
function rowValue(row: Float32Array, t: number, banned: Set<number> | null): number {
  const x = row[t];
  if (Number.isNaN(x)) throw new Error(`generate: log-prob of token ${t} is NaN`);
  return banned?.has(t) ? -Infinity : x;
}

/** Lowest-id argmax of a row with bans applied (torch.argmax; all −∞ gives 0). */
function argmaxRow(row: Float32Array, banned: Set<number> | null): number {
  let best = -Infinity, arg = 0;
  for (let t = 0; t < row.length; t++) {
    const x = rowValue(row, t, banned);
    if (x > best) {
      best = x;
      arg = t;
    }
  }
  return arg;
}

/** One (beam, token) candidate with its cumulative score. */
interface Candidate {
  beam: number;
  token: number;
  score: number;
}

/**
 * The top k candidates over (beam, token) of base[beam] + row[beam][token], best first, ties to
 * the lower flat index (HF's topk over the flattened [B·V] scores). Only each beam's own top k
 * can make the global top k, so each row is scanned once keeping k entries.
 */
function topCandidates(
  rows: readonly { row: Float32Array; base: number; banned: Set<number> | null }[],
  k: number,
): Candidate[] {
  const all: Candidate[] = [];
  rows.forEach(({ row, base, banned }, beam) => {
    const sc: number[] = [], tk: number[] = [];
    for (let t = 0; t < row.length; t++) {
      const c = base + rowValue(row, t, banned);
      // On a tie the earlier (lower) token stays ahead.
      if (sc.length === k && !(c > sc[k - 1])) continue;
      let i = sc.length;
      while (i > 0 && sc[i - 1] < c) i--;
      sc.splice(i, 0, c);
      tk.splice(i, 0, t);
      if (sc.length > k) {
        sc.pop();
        tk.pop();
      }
    }
    for (let i = 0; i < sc.length; i++) all.push({ beam, token: tk[i], score: sc[i] });
  });
  const v = rows[0].row.length;
  all.sort((a, b) => b.score - a.score || (a.beam * v + a.token) - (b.beam * v + b.token));
  return all.slice(0, k);
}

/** A finished hypothesis: new tokens without the EOS, and its length-penalised score. */
interface Hypothesis {
  tokens: number[];
  score: number;
  endedOnEos: boolean;
}

/** HF's BeamHypotheses: the B best finished hypotheses of one prompt. */
class Hypotheses {
  readonly list: Hypothesis[] = [];
  worst = 1e9;

  constructor(readonly numBeams: number, readonly lengthPenalty: number) {}

  add(tokens: number[], sumLogprobs: number, generatedLen: number, endedOnEos: boolean): void {
    const score = sumLogprobs / generatedLen ** this.lengthPenalty;
    if (this.list.length < this.numBeams || score > this.worst) {
      this.list.push({ tokens, score, endedOnEos });
      if (this.list.length > this.numBeams) {
        // Python sorts (score, index) tuples: the lowest score goes, the earliest on a tie.
        const order = this.list.map((h, i) => [h.score, i]).sort((a, b) =>
          a[0] - b[0] || a[1] - b[1]
        );
        this.list.splice(order[0][1], 1);
        this.worst = order[1][0];
      } else this.worst = Math.min(score, this.worst);
    }
  }

  /** early_stopping=False: no running beam is expected to beat the worst kept hypothesis. */
  isDone(bestSum: number, generatedLen: number): boolean {
    if (this.list.length < this.numBeams) return false;
    return this.worst >= bestSum / generatedLen ** this.lengthPenalty;
  }

  /** The best hypothesis; on a tie the one added last (stable sort, then pop()). */
  best(): Hypothesis {
    let best = this.list[0];
    for (const h of this.list) if (h.score >= best.score) best = h;
    return best;
  }
}

/** A running beam: its new tokens, cumulative log-prob and row in the provider's list. */
interface Beam {
  tokens: number[];
  score: number;
  row: number;
}

function vocabOf(logp: Float32Array, rows: number, known: number | null): number {
  const v = logp.length / rows;
  if (!Number.isInteger(v) || v < 1 || (known !== null && v !== known)) {
    throw new Error(
      `generate: the provider returned ${logp.length} values for ${rows} sequences` +
        (known !== null ? ` (vocabulary ${known})` : ""),
    );
  }
  return v;
}

function checkOptions(prompts: readonly (readonly number[])[], opts: GenerateOptions): void {
  const isCount = (x: number) => Number.isInteger(x) && x >= 0;
  if (!isCount(opts.maxNewTokens)) {
    throw new Error(`generate: maxNewTokens ${opts.maxNewTokens} is not a count`);
  }
  const beams = opts.numBeams ?? 1;
  if (!Number.isInteger(beams) || beams < 1) {
    throw new Error(`generate: numBeams ${beams} must be a positive integer`);
  }
  if (!Number.isFinite(opts.lengthPenalty ?? 1)) {
    throw new Error(`generate: lengthPenalty ${opts.lengthPenalty} is not finite`);
  }
  if (!isCount(opts.noRepeatNgramSize ?? 0)) {
    throw new Error(`generate: noRepeatNgramSize ${opts.noRepeatNgramSize} is not a count`);
  }
  for (const e of opts.eosIds) if (!isCount(e)) throw new Error(`generate: EOS id ${e}`);
  prompts.forEach((p, i) => {
    if (p.length === 0) throw new Error(`generate: prompt ${i} is empty`);
    for (const t of p) if (!isCount(t)) throw new Error(`generate: prompt ${i} has token ${t}`);
  });
}

function bansOf(seq: readonly number[], n: number): Set<number> | null {
  if (n <= 0) return null;
  const b = bannedNgramTokens(seq, n);
  return b.length ? new Set(b) : null;
}

async function greedySearch(
  stepper: Stepper,
  prompts: readonly (readonly number[])[],
  opts: GenerateOptions,
): Promise<number[][]> {
  const eos = new Set(opts.eosIds);
  const ngram = opts.noRepeatNgramSize ?? 0;
  const out: number[][] = prompts.map(() => []);
  let live = prompts.map((_, i) => i);
  let logp = await stepper.start(prompts, opts.maxNewTokens);
  const v = vocabOf(logp, live.length, null);
  for (let k = 1;; k++) {
    const parents: number[] = [], tokens: number[] = [], next: number[] = [];
    live.forEach((p, i) => {
      const banned = bansOf([...prompts[p], ...out[p]], ngram);
      const tok = argmaxRow(logp.subarray(i * v, (i + 1) * v), banned);
      out[p].push(tok);
      if (!eos.has(tok)) {
        next.push(p);
        parents.push(i);
        tokens.push(tok);
      }
    });
    live = next;
    if (k === opts.maxNewTokens || live.length === 0) return out;
    logp = await stepper.step(parents, tokens);
    vocabOf(logp, live.length, v);
  }
}

async function beamSearch(
  stepper: Stepper,
  prompts: readonly (readonly number[])[],
  opts: GenerateOptions,
): Promise<number[][]> {
  const numBeams = opts.numBeams!;
  const eos = new Set(opts.eosIds);
  const ngram = opts.noRepeatNgramSize ?? 0;
  const keep = Math.max(2, 1 + opts.eosIds.length) * numBeams;
  const hyps = prompts.map(() => new Hypotheses(numBeams, opts.lengthPenalty ?? 1));
  const done = prompts.map(() => false);
  let beams: Beam[][] = prompts.map((_, p) =>
    Array.from({ length: numBeams }, (_, b) => ({
      tokens: [],
      score: b === 0 ? 0 : DUMMY_BEAM_SCORE,
      row: p,
    }))
  );
  let logp = await stepper.start(prompts, opts.maxNewTokens);
  const v = vocabOf(logp, prompts.length, null);
  if (keep > numBeams * v) {
    throw new Error(
      `generate: ${numBeams} beams need ${keep} candidates, more than ${numBeams}·${v}`,
    );
  }
  for (let k = 1;; k++) {
    beams = beams.map((group, p) => {
      if (done[p]) return group;
      const cands = topCandidates(
        group.map((b) => ({
          row: logp.subarray(b.row * v, (b.row + 1) * v),
          base: b.score,
          banned: bansOf([...prompts[p], ...b.tokens], ngram),
        })),
        keep,
      );
      const next: Beam[] = [];
      for (const [rank, c] of cands.entries()) {
        const parent = group[c.beam];
        if (eos.has(c.token)) {
          if (rank < numBeams) hyps[p].add(parent.tokens.slice(), c.score, k, true);
        } else next.push({ tokens: [...parent.tokens, c.token], score: c.score, row: parent.row });
        if (next.length === numBeams) break;
      }
      if (next.length < numBeams) {
        throw new Error(`generate: prompt ${p} has fewer than ${numBeams} non-EOS candidates`);
      }
      done[p] = hyps[p].isDone(cands[0].score, k);
      return next;
    });
    if (k === opts.maxNewTokens || done.every((d) => d)) break;
    const parents: number[] = [], tokens: number[] = [];
    beams.forEach((group, p) => {
      if (done[p]) return;
      for (const b of group) {
        parents.push(b.row);
        tokens.push(b.tokens[b.tokens.length - 1]);
        b.row = parents.length - 1;
      }
    });
    logp = await stepper.step(parents, tokens);
    vocabOf(logp, parents.length, v);
  }
  beams.forEach((group, p) => {
    if (done[p]) return;
    for (const b of group) hyps[p].add(b.tokens, b.score, b.tokens.length, false);
  });
  return hyps.map((h) => {
    const best = h.best();
    return best.endedOnEos ? [...best.tokens, opts.eosIds[0]] : best.tokens.slice();
  });
}

/**
 * Generates up to `opts.maxNewTokens` tokens after each prompt with greedy search
 * (numBeams 1) or beam search, all prompts batched. Returns the new tokens of each prompt,
 * ending with an EOS id when the sequence ended on one (see the module notes for the exact
 * rules). `source` is a {@linkcode StepFn} or a {@linkcode Stepper}; a Stepper's `end()` is
 * called before returning.
 */
export async function generate(
  source: StepFn | Stepper,
  prompts: readonly (readonly number[])[],
  opts: GenerateOptions,
): Promise<number[][]> {
  checkOptions(prompts, opts);
  if (prompts.length === 0 || opts.maxNewTokens === 0) return prompts.map(() => []);
  const stepper = typeof source === "function" ? stepperFromStepFn(source) : source;
  try {
    return (opts.numBeams ?? 1) === 1
      ? await greedySearch(stepper, prompts, opts)
      : await beamSearch(stepper, prompts, opts);
  } finally {
    stepper.end?.();
  }
}
