/**
 * Generation: greedy and beam search (lib/eval/generate.ts) on log-prob tables, checked by hand, by
 * exhaustive search and against a literal port of transformers 4.41's beam search; and the
 * model side (lib/eval/decode.ts): KV-cache decoding against full recomputation on the PyTorch
 * fixture model with a HiRA adapter.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import {
  bannedNgramTokens,
  generate,
  type GenerateOptions,
  type StepFn,
  type Stepper,
} from "../../lib/eval/generate.ts";
import { KvCacheDecoder, logSoftmaxRows, recomputeStep } from "../../lib/eval/decode.ts";
import { attachAdapters } from "../../lib/model/attach.ts";
import { loadModelDir } from "../../lib/io/model_deno.ts";
import { PROJECTIONS } from "../../lib/model/config.ts";
import type { LlamaModel } from "../../lib/model/model.ts";
import { Rng } from "../../lib/engine/rand.ts";
import { assertClose, testGpu } from "../_util.ts";

const FIX = new URL("../fixtures/golden/", import.meta.url).pathname;

// ---------------------------------------------------------------------------------------------
// Log-prob tables

/** FNV-1a over the seed and the tokens: each distinct sequence gets its own random row. */
function hashSeq(seed: number, seq: readonly number[]): number {
  let h = 0x811c9dc5 ^ seed;
  for (const t of seq) {
    h = Math.imul(h ^ (t & 0xffff), 0x01000193) >>> 0;
    h = Math.imul(h ^ (t >>> 16), 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * A fixed random table of next-token log-probs keyed by the whole sequence: logits uniform in
 * [-2, 2), EOS ids raised by `eosBoost` so that sequences end often.
 */
function randomTable(v: number, seed: number, eosIds: readonly number[] = [], eosBoost = 0) {
  return (seq: readonly number[]): Float32Array => {
    const r = new Rng(hashSeq(seed, seq));
    const logits = new Float32Array(v);
    for (let t = 0; t < v; t++) logits[t] = r.uniform(-2, 2) + (eosIds.includes(t) ? eosBoost : 0);
    return logSoftmaxRows(logits, v);
  };
}

/** A table given row by row ("3,1" → row after [3, 1]); other sequences get `fill`. */
function explicitTable(v: number, rows: Record<string, number[]>, fill: number) {
  return (seq: readonly number[]): Float32Array =>
    Float32Array.from(rows[seq.join(",")] ?? new Array(v).fill(fill));
}

/** A StepFn over a table that counts its calls (one per decoding step when batched). */
function tableStep(row: (seq: readonly number[]) => Float32Array): StepFn & { calls: number } {
  const fn = (async (seqs: number[][]) => {
    fn.calls++;
    const v = row(seqs[0]).length;
    const out = new Float32Array(seqs.length * v);
    seqs.forEach((s, i) => out.set(row(s), i * v));
    return await Promise.resolve(out);
  }) as StepFn & { calls: number };
  fn.calls = 0;
  return fn;
}

// ---------------------------------------------------------------------------------------------
// Independent searches to compare with

/** Greedy one prompt at a time, straight from the definition. */
function greedyRef(
  row: (seq: readonly number[]) => Float32Array,
  prompt: readonly number[],
  opts: GenerateOptions,
): number[] {
  const seq = [...prompt], out: number[] = [];
  while (out.length < opts.maxNewTokens) {
    const r = Float64Array.from(row(seq));
    for (const t of bannedNgramTokens(seq, opts.noRepeatNgramSize ?? 0)) r[t] = -Infinity;
    let arg = 0;
    for (let t = 1; t < r.length; t++) if (r[t] > r[arg]) arg = t;
    seq.push(arg);
    out.push(arg);
    if (opts.eosIds.includes(arg)) break;
  }
  return out;
}

/**
 * The best complete continuation of `prompt` over every path of at most maxNewTokens tokens,
 * scored by the HF rule: sum of log-probs (EOS included) / generated_len^lp, where a path ends
 * at its first EOS (which counts in generated_len) or at maxNewTokens without one.
 */
function exhaustiveBest(
  row: (seq: readonly number[]) => Float32Array,
  prompt: readonly number[],
  opts: GenerateOptions,
): { tokens: number[]; score: number } {
  const lp = opts.lengthPenalty ?? 1;
  let best = { tokens: [] as number[], score: -Infinity };
  const visit = (gen: number[], sum: number) => {
    const seq = [...prompt, ...gen];
    const r = Float64Array.from(row(seq));
    for (const t of bannedNgramTokens(seq, opts.noRepeatNgramSize ?? 0)) r[t] = -Infinity;
    for (let t = 0; t < r.length; t++) {
      const s = sum + r[t];
      if (s === -Infinity) continue;
      const next = [...gen, t];
      if (opts.eosIds.includes(t) || next.length === opts.maxNewTokens) {
        const score = s / next.length ** lp;
        if (score > best.score) best = { tokens: next, score };
      } else visit(next, s);
    }
  };
  visit([], 0);
  return best;
}

/** Python's BeamHypotheses, transcribed. */
class HfBeamHypotheses {
  beams: { score: number; hyp: number[] }[] = [];
  worstScore = 1e9;
  constructor(readonly numBeams: number, readonly lengthPenalty: number) {}
  add(hyp: number[], sumLogprobs: number, generatedLen: number): void {
    const score = sumLogprobs / generatedLen ** this.lengthPenalty;
    if (this.beams.length < this.numBeams || score > this.worstScore) {
      this.beams.push({ score, hyp });
      if (this.beams.length > this.numBeams) {
        const sorted = this.beams.map((b, idx) => [b.score, idx]).sort((a, b) =>
          a[0] - b[0] || a[1] - b[1]
        );
        this.beams.splice(sorted[0][1], 1);
        this.worstScore = sorted[1][0];
      } else this.worstScore = Math.min(score, this.worstScore);
    }
  }
  isDone(bestSumLogprobs: number, curLen: number): boolean {
    if (this.beams.length < this.numBeams) return false;
    return this.worstScore >= bestSumLogprobs / curLen ** this.lengthPenalty;
  }
}

/**
 * transformers 4.41 `_beam_search` + `BeamSearchScorer.process/finalize` transcribed over a
 * left-padded batch (pad id -1, which no table row is asked about since done rows are skipped):
 * input_ids rows are whole padded sequences, beam_scores start at 0, -1e9, …, and the topk is
 * a full sort of the flattened [B·V] scores. Returns each prompt's new tokens as HF decodes them.
 */
function hfBeamSearch(
  row: (seq: readonly number[]) => Float32Array,
  prompts: readonly (readonly number[])[],
  opts: GenerateOptions,
): number[][] {
  const B = opts.numBeams!, lp = opts.lengthPenalty ?? 1, eos = opts.eosIds;
  const ngram = opts.noRepeatNgramSize ?? 0;
  const bs = prompts.length;
  const promptLen = Math.max(...prompts.map((p) => p.length));
  const pad = (p: readonly number[]) => [...new Array(promptLen - p.length).fill(-1), ...p];
  const maxLength = promptLen + opts.maxNewTokens;
  const unpad = (s: number[]) => s.filter((t) => t !== -1);
  let inputIds: number[][] = [];
  for (const p of prompts) for (let b = 0; b < B; b++) inputIds.push(pad(p));
  let beamScores: number[] = inputIds.map((_, i) => (i % B === 0 ? 0 : -1e9));
  const hyps = prompts.map(() => new HfBeamHypotheses(B, lp));
  const done = prompts.map(() => false);
  let v = 0;
  while (true) {
    const curLen = inputIds[0].length + 1;
    const nextScores: number[] = [], nextTokens: number[] = [], nextIndices: number[] = [];
    for (let bi = 0; bi < bs; bi++) {
      if (done[bi]) {
        for (let b = 0; b < B; b++) {
          nextScores.push(0);
          nextTokens.push(-1);
          nextIndices.push(0);
        }
        continue;
      }
      const flat: [number, number][] = [];
      for (let b = 0; b < B; b++) {
        const seq = inputIds[bi * B + b];
        const r = Float64Array.from(row(unpad(seq)));
        v = r.length;
        // The processor sees the padded input_ids; pads never match a real n-gram here.
        for (const t of bannedNgramTokens(seq, ngram)) r[t] = -Infinity;
        r.forEach((x, t) => flat.push([x + beamScores[bi * B + b], b * v + t]));
      }
      flat.sort((x, y) => y[0] - x[0] || x[1] - y[1]);
      const top = flat.slice(0, Math.max(2, 1 + eos.length) * B);
      let beamIdx = 0;
      for (const [rank, [score, idx]] of top.entries()) {
        const token = idx % v, batchBeamIdx = bi * B + Math.floor(idx / v);
        if (eos.includes(token)) {
          if (rank >= B) continue;
          hyps[bi].add(inputIds[batchBeamIdx].slice(), score, curLen - promptLen);
        } else {
          nextScores.push(score);
          nextTokens.push(token);
          nextIndices.push(batchBeamIdx);
          beamIdx++;
        }
        if (beamIdx === B) break;
      }
      if (beamIdx < B) throw new Error("too many EOS candidates");
      done[bi] = done[bi] || hyps[bi].isDone(top[0][0], curLen - promptLen);
    }
    inputIds = nextIndices.map((i, j) => [...inputIds[i], nextTokens[j]]);
    beamScores = nextScores;
    if (done.every((d) => d) || inputIds[0].length >= maxLength) break;
  }
  for (let bi = 0; bi < bs; bi++) {
    if (done[bi]) continue;
    for (let b = 0; b < B; b++) {
      const t = inputIds[bi * B + b];
      hyps[bi].add(t, beamScores[bi * B + b], t.length - promptLen);
    }
  }
  const best = hyps.map((h) => {
    const sorted = [...h.beams].sort((a, b) => a.score - b.score);
    return sorted.pop()!.hyp;
  });
  const sentMaxLen = Math.min(Math.max(...best.map((b) => b.length)) + 1, maxLength);
  return best.map((hyp) => {
    const decoded = hyp.length < sentMaxLen ? [...hyp, eos[0]] : hyp;
    return decoded.slice(promptLen);
  });
}

// ---------------------------------------------------------------------------------------------
// Search logic on tables

Deno.test("bannedNgramTokens bans what would repeat an n-gram (HF's processor)", () => {
  assertEquals(bannedNgramTokens([1, 2, 3, 1, 2], 3), [3]);
  assertEquals(bannedNgramTokens([1, 2, 1, 3, 1], 2), [2, 3]);
  assertEquals(bannedNgramTokens([4, 5, 4], 1), [4, 5, 4]);
  assertEquals(bannedNgramTokens([1, 2], 4), []);
  assertEquals(bannedNgramTokens([1, 2, 1, 2], 0), []);
});

Deno.test("beam search by hand: early stopping and the length penalty (B=2)", async () => {
  // V=4, EOS=0, prompt [3]. Values are dyadic so every sum below is exact.
  const row = explicitTable(4, {
    "3": [-0.5, -1, -2, -3],
    "3,1": [-0.25, -3, -3.5, -4],
    "3,2": [-0.125, -0.0625, -5, -5],
  }, -1);
  // Step 1 (from beam 0 only): EOS -0.5 (rank 0) → hypothesis [] with -0.5/1^lp; [1] -1 and
  // [2] -2 run. Step 2: [1,EOS] -1.25 (rank 0) → hypothesis [1], -1.25/2^lp; [2,1] -2.0625
  // runs; [2,EOS] -2.125 is rank 2 ≥ B and dropped; [1,1] -4 runs.
  // lp=1: hypotheses -0.5 and -0.625; done since worst -0.625 >= best -1.25/2 → [EOS] after 2
  //   calls.
  // lp=0: hypotheses -0.5 and -1.25; done since -1.25 >= -1.25 → [EOS].
  // lp=2: hypotheses -0.5 and -0.3125; not done (-0.5 < -0.3125), so step 3 runs (rows of -1):
  //   [2,1,EOS] -3.0625/9 replaces [] (-0.5), the running beams tie the worst and are not
  //   added; the best is [1] (-0.3125) → [1, EOS] after 3 calls.
  for (const [lp, want, calls] of [[1, [0], 2], [0, [0], 2], [2, [1, 0], 3]] as const) {
    const step = tableStep(row);
    const out = await generate(step, [[3]], {
      maxNewTokens: 3,
      eosIds: [0],
      numBeams: 2,
      lengthPenalty: lp,
    });
    assertEquals(out, [[...want]], `lp ${lp}`);
    assertEquals(step.calls, calls, `lp ${lp} calls`);
  }
});

Deno.test("beam search by hand: an EOS ranked below the first B candidates is dropped", async () => {
  // V=4, EOS=0, B=2, lp=1, prompt [3], other rows -8.
  // Step 1: [1] -0.25, [2] -0.5 fill the beams (no hypothesis).
  // Step 2: [1,1] -0.375 (rank 0) runs; [1,EOS] -1 (rank 1) → hypothesis [1] at -0.5;
  //   [2,EOS] -1.25 is rank 2 → dropped (kept, it would make 2 hypotheses with worst -0.625);
  //   [2,3] -1.5 runs.
  // Step 3: [1,1,1] -1.875 and [2,3,2] -2 run. With the dropped hypothesis kept, the prompt
  //   would be done here (-0.625 >= -1.875/3) and return [1, EOS]; with one hypothesis it goes
  //   on.
  // Step 4: [1,1,1,EOS] -1.9375 → hypothesis at -0.484375, better than -0.5 → [1,1,1,EOS].
  const row = explicitTable(4, {
    "3": [-8, -0.25, -0.5, -8],
    "3,1": [-0.75, -0.125, -8, -8],
    "3,2": [-0.75, -8, -8, -1],
    "3,1,1": [-8, -1.5, -8, -8],
    "3,2,3": [-8, -8, -0.5, -8],
    "3,1,1,1": [-0.0625, -8, -8, -8],
  }, -8);
  const step = tableStep(row);
  const opts = { maxNewTokens: 4, eosIds: [0], numBeams: 2, lengthPenalty: 1 };
  assertEquals(await generate(step, [[3]], opts), [[1, 1, 1, 0]]);
  assertEquals(step.calls, 4);
  assertEquals(hfBeamSearch(row, [[3]], opts), [[1, 1, 1, 0]]);
});

Deno.test("beam search by hand: finalized running beams and the last-added tie rule", async () => {
  // V=4, EOS=0, B=2, lp=1, prompt [3]. Step 1: [2] -0.25 runs, EOS -0.5 → hypothesis [] at
  // -0.5, [1] -0.75 runs. Step 2 (the last): [2,1] -1 and [1,1] -1.25 run; at max length they
  // join the hypotheses at -1/2 = -0.5 (ties [], added later → wins) and -0.625 (rejected).
  const row = explicitTable(4, {
    "3": [-0.5, -0.75, -0.25, -3],
    "3,2": [-3, -0.75, -3, -3],
    "3,1": [-3, -0.5, -3, -3],
  }, -3);
  const opts = { maxNewTokens: 2, eosIds: [0], numBeams: 2 };
  assertEquals(await generate(tableStep(row), [[3]], opts), [[2, 1]]);
  assertEquals(hfBeamSearch(row, [[3]], opts), [[2, 1]]);
});

Deno.test("beam search with enough beams equals exhaustive search under the HF score", async () => {
  // V=5 and at most 3 new tokens: B = 5·4² = 80 keeps every live path and every EOS candidate
  // ranks within the first B, and at most 1+4+16 = 21 < B paths end early, so no prompt stops
  // before max length: beam search then scores every complete path, i.e. it is exhaustive.
  const v = 5, maxNewTokens = 3, eosIds = [0];
  const prompts = [[1], [2, 3, 4], [4, 4, 1, 2]];
  for (const [seed, lp, ngram] of [[1, 1, 0], [2, 0.5, 0], [3, 2, 0], [4, -1, 0], [5, 1, 2]]) {
    const row = randomTable(v, seed, eosIds, 0.5);
    const opts = {
      maxNewTokens,
      eosIds,
      numBeams: 80,
      lengthPenalty: lp,
      noRepeatNgramSize: ngram,
    };
    const step = tableStep(row);
    const out = await generate(step, prompts, opts);
    assert(step.calls <= maxNewTokens, "one provider call per step for all prompts");
    prompts.forEach((p, i) => {
      assertEquals(out[i], exhaustiveBest(row, p, opts).tokens, `seed ${seed} prompt ${i}`);
    });
  }
});

Deno.test("beam search (B=2, 3) equals a literal port of transformers 4.41", async () => {
  const rng = new Rng(99);
  let cases = 0, earlyEnds = 0;
  for (let c = 0; c < 150; c++) {
    const v = 5 + rng.int(4);
    const eosIds = rng.next() < 0.3 ? [0, 3] : [0];
    const numBeams = 2 + rng.int(2);
    const lengthPenalty = [1, 0.9, 2, -0.5, 0][rng.int(5)];
    const noRepeatNgramSize = [0, 0, 2, 3][rng.int(4)];
    const maxNewTokens = 1 + rng.int(6);
    const prompts = Array.from(
      { length: 1 + rng.int(3) },
      () => Array.from({ length: 1 + rng.int(4) }, () => rng.int(v)),
    );
    const row = randomTable(v, 1000 + c, eosIds, rng.uniform(0, 2));
    const opts = { maxNewTokens, eosIds, numBeams, lengthPenalty, noRepeatNgramSize };
    const step = tableStep(row);
    const out = await generate(step, prompts, opts);
    assertEquals(out, hfBeamSearch(row, prompts, opts), `case ${c}: ${JSON.stringify(opts)}`);
    assert(step.calls <= maxNewTokens);
    if (step.calls < maxNewTokens) earlyEnds++;
    cases++;
  }
  assert(earlyEnds > 10, `only ${earlyEnds} of ${cases} cases stopped early`);
});

Deno.test("greedy equals the argmax chain, stops at EOS (kept), bans repeated n-grams", async () => {
  const v = 7, eosIds = [0, 5];
  for (const [seed, ngram] of [[1, 0], [2, 2], [3, 3]]) {
    const row = randomTable(v, seed, eosIds, 0.3);
    const prompts = [[1, 2], [3], [4, 4, 4, 6]];
    const opts = { maxNewTokens: 8, eosIds, noRepeatNgramSize: ngram };
    const step = tableStep(row);
    const out = await generate(step, prompts, opts);
    assertEquals(out, prompts.map((p) => greedyRef(row, p, opts)), `seed ${seed}`);
    assertEquals(step.calls, Math.max(...out.map((o) => o.length)), "one call per step");
  }
});

Deno.test("generate validates its inputs and handles trivial requests", async () => {
  const step = tableStep(randomTable(5, 1));
  assertEquals(await generate(step, [[1], [2]], { maxNewTokens: 0, eosIds: [0] }), [[], []]);
  assertEquals(await generate(step, [], { maxNewTokens: 3, eosIds: [0] }), []);
  assertEquals(step.calls, 0);
  await assertRejects(() => generate(step, [[]], { maxNewTokens: 1, eosIds: [] }), Error, "empty");
  await assertRejects(
    () => generate(step, [[1]], { maxNewTokens: 1, eosIds: [], numBeams: 0 }),
    Error,
    "numBeams",
  );
  // Three EOS ids need 4·B = 12 candidates; 3 beams over a vocabulary of 2 have 6.
  const tiny = tableStep(randomTable(2, 1));
  await assertRejects(
    () => generate(tiny, [[1]], { maxNewTokens: 2, eosIds: [0, 1, 2], numBeams: 3 }),
    Error,
    "candidates",
  );
});

// ---------------------------------------------------------------------------------------------
// The model side

/** The fixture model with HiRA on every projection and a non-zero B, so the adapter matters. */
async function hiraModel(): Promise<LlamaModel> {
  const gpu = await testGpu();
  const model = await loadModelDir(gpu, FIX + "model");
  attachAdapters(model, {
    peftType: "HIRA",
    r: 4,
    targetModules: [...PROJECTIONS],
    loraAlpha: 8,
    loraDropout: 0,
    baseModel: "",
    keyStyle: "peft",
  }, { seed: 5, initB: "gaussian" });
  return model;
}

/** Full-forward logits [seqs, V] of the last token of each sequence, each run on its own. */
async function fullLogits(model: LlamaModel, seqs: readonly (readonly number[])[]) {
  const v = model.config.vocabSize, out = new Float32Array(seqs.length * v);
  for (const [i, s] of seqs.entries()) {
    const lg = await model.logits(Int32Array.from(s), Uint32Array.from([0, s.length]));
    out.set(lg.subarray((s.length - 1) * v), i * v);
  }
  return out;
}

const KV_TOL = { rtol: 1e-4, atol: 1e-4 };

/** A KvCacheDecoder that checks every call's logits against full recomputation. */
class CheckedDecoder implements Stepper {
  readonly decoder: KvCacheDecoder;
  seqs: number[][] = [];
  checks = 0;
  reorders = 0;
  constructor(readonly model: LlamaModel) {
    this.decoder = new KvCacheDecoder(model);
  }
  async start(prompts: readonly (readonly number[])[], maxNewTokens: number) {
    this.seqs = prompts.map((p) => [...p]);
    const lp = await this.decoder.start(prompts, maxNewTokens);
    await this.#check();
    return lp;
  }
  async step(parents: readonly number[], tokens: readonly number[]) {
    if (!parents.every((p, i) => p === i)) this.reorders++;
    this.seqs = parents.map((p, i) => [...this.seqs[p], tokens[i]]);
    const lp = await this.decoder.step(parents, tokens);
    await this.#check();
    return lp;
  }
  end() {
    this.decoder.end();
  }
  async #check() {
    const want = await packedLogits(this.model, this.seqs);
    assertClose(this.decoder.lastLogits!, want, { ...KV_TOL, label: `call ${this.checks}` });
    this.checks++;
  }
}

/** Last-token logits of every sequence from one packed full forward (the oracle's batch). */
async function packedLogits(model: LlamaModel, seqs: readonly (readonly number[])[]) {
  const cu = [0];
  for (const s of seqs) cu.push(cu[cu.length - 1] + s.length);
  return await model.logits(
    Int32Array.from(seqs.flat()),
    Uint32Array.from(cu),
    Int32Array.from(seqs, (_, i) => cu[i + 1] - 1),
  );
}

const PROMPTS = [[1, 17, 200], [5, 9, 33, 71, 2, 8, 100], [
  3,
  250,
  4,
  4,
  60,
  61,
  62,
  63,
  7,
  12,
  90,
  6,
]];

Deno.test("greedy equals the argmax chain of repeated full forwards (recompute and KV cache)", async () => {
  const model = await hiraModel();
  const v = model.config.vocabSize, maxNewTokens = 5;
  // The chains without EOS, one prompt at a time, from whole-sequence forwards.
  const chains: number[][] = [];
  for (const p of PROMPTS) {
    const seq = [...p];
    for (let k = 0; k < maxNewTokens; k++) {
      const lg = await fullLogits(model, [seq]);
      let arg = 0;
      for (let t = 1; t < v; t++) if (lg[t] > lg[arg]) arg = t;
      seq.push(arg);
    }
    chains.push(seq.slice(p.length));
  }
  // An EOS that the second prompt's chain reaches early, so sequences finish at different steps.
  const eos = chains[1][1];
  const cut = chains.map((c) => (c.includes(eos) ? c.slice(0, c.indexOf(eos) + 1) : c));
  const opts = { maxNewTokens, eosIds: [eos] };
  assertEquals(await generate(recomputeStep(model), PROMPTS, opts), cut);
  const checked = new CheckedDecoder(model);
  assertEquals(await generate(checked, PROMPTS, opts), cut);
  assert(checked.checks >= 2);
  assertEquals(
    await generate(new KvCacheDecoder(model), PROMPTS, { maxNewTokens, eosIds: [] }),
    chains,
  );
});

Deno.test("KV-cache beam search equals recomputation token by token (logits within 1e-4)", async () => {
  const model = await hiraModel();
  // A first greedy token as EOS makes beams end at different steps.
  const first = await generate(recomputeStep(model), PROMPTS, { maxNewTokens: 1, eosIds: [] });
  for (
    const opts of [
      { maxNewTokens: 5, eosIds: [first[0][0]], numBeams: 3 },
      {
        maxNewTokens: 4,
        eosIds: [first[2][0], 2],
        numBeams: 2,
        lengthPenalty: 0.9,
        noRepeatNgramSize: 2,
      },
    ]
  ) {
    const checked = new CheckedDecoder(model);
    const out = await generate(checked, PROMPTS, opts);
    assertEquals(out, await generate(recomputeStep(model), PROMPTS, opts), JSON.stringify(opts));
    assert(checked.reorders > 0, "beams were reordered");
  }
});

Deno.test("KvCacheDecoder keeps, drops, duplicates and reorders sequences exactly", async () => {
  const model = await hiraModel();
  const dec = new CheckedDecoder(model);
  await dec.start(PROMPTS, 4);
  await dec.step([0, 1, 2], [10, 11, 12]); // identity: no gather
  await dec.step([0, 1], [13, 14]); // a prefix: no gather, fewer sequences
  await dec.step([1, 0, 0, 1], [15, 16, 17, 18]); // reorder and grow
  await dec.step([3, 0], [19, 20]); // reorder and shrink
  assertEquals(dec.checks, 5);
  const kv = dec.decoder;
  assertEquals(kv.sequences, 2);
  assertEquals(kv.maxLength, 16);
  // Bad parents and tokens, positions past Tmax and steps without a start are refused.
  await assertRejects(() => kv.step([2], [1]), Error, "parent");
  await assertRejects(() => kv.step([0], [999]), Error, "vocabulary");
  await kv.start([[1, 2]], 1); // Tmax = 3
  await kv.step([0], [5]);
  await assertRejects(() => kv.step([0], [6]), Error, "past the cache");
  kv.end();
  await assertRejects(() => kv.step([0], [1]), Error, "start");
});

Deno.test("KV-cache decoding on a model with q/k/v biases and an untied head", async () => {
  const gpu = await testGpu();
  const model = await loadModelDir(gpu, FIX + "model-qwen-style");
  const prompts = [[1, 2, 3], [7, 7, 7, 7, 7]];
  const checked = new CheckedDecoder(model);
  const opts = { maxNewTokens: 4, eosIds: [], numBeams: 2 };
  const out = await generate(checked, prompts, opts);
  assertEquals(out, await generate(recomputeStep(model), prompts, opts));
  assertEquals(checked.checks, 4);
});
