/**
 * A thin wrapper over `@huggingface/tokenizers` that builds a tokenizer from the parsed JSON of
 * a Hugging Face tokenizer folder (`tokenizer.json`, plus `tokenizer_config.json` and
 * `special_tokens_map.json` when present) and resolves BOS/EOS/UNK/PAD the way the reference
 * does. File reading lives in tokenizer_deno.ts so this module also runs in a browser.
 * @module
 */
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { HiraError, preview } from "../engine/errors.ts";

/** The parsed JSON files of a tokenizer folder. */
export interface TokenizerFiles {
  /** Parsed `tokenizer.json` (required). */
  tokenizer: unknown;
  /** Parsed `tokenizer_config.json`, if the folder has one. */
  config?: unknown;
  /** Parsed `special_tokens_map.json`, if the folder has one. */
  specialTokensMap?: unknown;
  /** Name used in error messages (usually the tokenizer.json path). */
  source?: string;
}

/** Options of {@linkcode Tokenizer.encode}. */
export interface EncodeOptions {
  /** Apply the tokenizer's post-processor (e.g. prepend BOS). Default false. */
  addSpecial?: boolean;
}

/** Options of {@linkcode Tokenizer.decode}. */
export interface DecodeOptions {
  /** Drop special tokens (BOS, EOS, ...). Default false. */
  skipSpecial?: boolean;
}

/** The BOS string that marks a Llama-3-style vocabulary (whose pad token becomes BOS). */
export const LLAMA3_BOS = "<|begin_of_text|>";

const KNOWN_BOS = ["<s>", LLAMA3_BOS, "<bos>"];
const KNOWN_EOS = ["</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"];
const KNOWN_UNK = ["<unk>", "[UNK]"];

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A special-token entry of a config: a plain string or an AddedToken dict `{content}`. */
function tokenString(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (isObject(v) && typeof v.content === "string") return v.content;
  return null;
}

/**
 * A text tokenizer with the reference's special-token rules.
 *
 * Pad token rule (reference `train_hira.py:188-203`): a pad token named by the config wins;
 * otherwise a Llama-3-style vocabulary (BOS string `<|begin_of_text|>`; detected by that string
 * rather than by model name, as the reference does) pads with BOS; otherwise pad is UNK. If
 * there is no UNK either (the reference would fail there), pad falls back to EOS.
 */
export class Tokenizer {
  readonly #hf: HfTokenizer;
  readonly #vocab: Map<string, number>;
  readonly #idToToken: (string | undefined)[];
  /** Number of ids (max id + 1 over the model vocabulary and the added tokens). */
  readonly vocabSize: number;
  /** BOS string, or null for a tokenizer without one. */
  readonly bosToken: string | null;
  /** BOS id, or null for a tokenizer without one. */
  readonly bosId: number | null;
  /** EOS string (required). */
  readonly eosToken: string;
  /** EOS id. */
  readonly eosId: number;
  /** UNK string, or null (Llama-3 has none). */
  readonly unkToken: string | null;
  /** UNK id, or null. */
  readonly unkId: number | null;
  /** PAD string chosen by the pad rule (see the class doc). */
  readonly padToken: string;
  /** PAD id chosen by the pad rule. */
  readonly padId: number;

  /** Builds the tokenizer; throws {@linkcode HiraError} on malformed input. */
  constructor(files: TokenizerFiles) {
    const source = files.source ?? "tokenizer.json";
    const json = files.tokenizer;
    if (!isObject(json)) throw new HiraError(source, "tokenizer.json must be a JSON object");
    if (!isObject(json.model)) {
      throw new HiraError(source, 'tokenizer.json has no "model" object');
    }
    if (json.added_tokens !== undefined && !Array.isArray(json.added_tokens)) {
      throw new HiraError(source, '"added_tokens" must be an array');
    }
    checkTokenIds(json, source);
    const config = files.config === undefined ? {} : files.config;
    const specialMap = files.specialTokensMap === undefined ? {} : files.specialTokensMap;
    if (!isObject(config)) throw new HiraError(source, "tokenizer_config.json must be an object");
    if (!isObject(specialMap)) {
      throw new HiraError(source, "special_tokens_map.json must be an object");
    }

    // tokenizer_config.json wins over special_tokens_map.json, as in transformers.
    const merged: Json = { ...specialMap, ...config };
    const named = (key: string): string | null =>
      tokenString(config[key]) ?? tokenString(specialMap[key]);
    const libConfig: Json = { ...merged };
    for (const key of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
      const s = named(key);
      if (s === null) delete libConfig[key];
      else libConfig[key] = s;
    }
    if (Array.isArray(merged.additional_special_tokens)) {
      libConfig.additional_special_tokens = merged.additional_special_tokens
        .map(tokenString).filter((s): s is string => s !== null);
    }

    const normalizedJson: Json = {
      normalizer: null,
      pre_tokenizer: null,
      post_processor: null,
      decoder: null,
      ...json,
      added_tokens: json.added_tokens ?? [],
    };
    try {
      this.#hf = new HfTokenizer(normalizedJson, libConfig);
    } catch (e) {
      throw new HiraError(source, `cannot build tokenizer: ${(e as Error).message}`, {
        cause: e,
      });
    }

    this.#vocab = this.#hf.get_vocab(true);
    let size = 0;
    for (const id of this.#vocab.values()) if (id + 1 > size) size = id + 1;
    this.vocabSize = size;
    this.#idToToken = new Array(size);
    for (const [tok, id] of this.#vocab) this.#idToToken[id] = tok;

    const has = (s: string | null): s is string => s !== null && this.#vocab.has(s);
    const firstKnown = (names: string[]) => names.find((n) => this.#vocab.has(n)) ?? null;

    const configBos = named("bos_token");
    const bos = configBos !== null
      ? configBos
      : (templateBos(json.post_processor) ?? firstKnown(KNOWN_BOS));
    if (bos !== null && !has(bos)) {
      throw new HiraError(source, `bos_token ${JSON.stringify(bos)} is not in the vocabulary`);
    }
    this.bosToken = bos;
    this.bosId = bos === null ? null : this.#vocab.get(bos)!;

    const eos = named("eos_token") ?? firstKnown(KNOWN_EOS);
    if (eos === null) throw new HiraError(source, "no eos_token (set it in tokenizer_config.json)");
    if (!has(eos)) {
      throw new HiraError(source, `eos_token ${JSON.stringify(eos)} is not in the vocabulary`);
    }
    this.eosToken = eos;
    this.eosId = this.#vocab.get(eos)!;

    const modelUnk = tokenString((json.model as Json).unk_token);
    const unk = [named("unk_token"), modelUnk, firstKnown(KNOWN_UNK)].find(has) ?? null;
    this.unkToken = unk;
    this.unkId = unk === null ? null : this.#vocab.get(unk)!;

    const configPad = named("pad_token");
    let pad: string;
    if (has(configPad)) pad = configPad;
    else if (bos === LLAMA3_BOS) pad = bos;
    else if (unk !== null) pad = unk;
    else pad = eos;
    this.padToken = pad;
    this.padId = this.#vocab.get(pad)!;
  }

  /**
   * Token ids of `text`. Special-token strings inside the text (e.g. a literal BOS string) map
   * to their ids. `addSpecial` runs the tokenizer's own post-processor (for Llama-3's
   * tokenizer.json that may or may not prepend BOS, depending on its revision).
   */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (text.length === 0 && !opts.addSpecial) return [];
    return this.#hf.encode(text, { add_special_tokens: opts.addSpecial ?? false }).ids;
  }

  /**
   * Text of `ids`. Ids outside the vocabulary (a model whose embedding table is larger than
   * the tokenizer) decode as the UNK string, or as nothing when there is no UNK.
   */
  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    const known: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (this.#idToToken[id] !== undefined) known.push(id);
      else if (this.unkId !== null) known.push(this.unkId);
    }
    if (known.length === 0) return "";
    return this.#hf.decode(known, { skip_special_tokens: opts.skipSpecial ?? false });
  }

  /** Id of a token string (in the tokenizer's own form, e.g. "Ġthe"), if it is in the vocab. */
  tokenToId(token: string): number | undefined {
    return this.#vocab.get(token);
  }

  /** Token string of an id, if any. */
  idToToken(id: number): string | undefined {
    return this.#idToToken[id];
  }

  /** Token strings of `text` (what {@linkcode encode} maps to ids), without specials. */
  tokenize(text: string): string[] {
    if (text.length === 0) return [];
    return this.#hf.encode(text, { add_special_tokens: false }).tokens;
  }
}

/** The largest token id accepted (config.ts's vocab_size limit, less one). */
export const MAX_TOKEN_ID = 4194303;

function validId(id: unknown): id is number {
  return typeof id === "number" && Number.isInteger(id) && id >= 0 && id <= MAX_TOKEN_ID;
}

/**
 * Refuses token ids the library would take without complaint and the engine would later index
 * with: a vocab that is not an object (for the map-based BPE, WordPiece and WordLevel models),
 * and vocab or added-token ids that are not integers from 0 to {@linkcode MAX_TOKEN_ID}
 * (-7 and 1e15 used to fail only after the run folder existed; 2.5 was accepted). One line
 * names the token by its position, not its content.
 */
export function checkTokenIds(json: Json, source: string): void {
  const model = json.model as Json;
  const type = model.type ?? "BPE";
  if (type === "BPE" || type === "WordPiece" || type === "WordLevel") {
    if (!isObject(model.vocab)) {
      throw new HiraError(
        source,
        `model.vocab of a ${String(type).slice(0, 20)} model must be an object`,
      );
    }
    let i = 0;
    for (const id of Object.values(model.vocab)) {
      if (!validId(id)) {
        throw new HiraError(
          source,
          `model.vocab entry ${i} has id ${
            preview(id, 24)
          }; ids are integers from 0 to ${MAX_TOKEN_ID}`,
        );
      }
      i++;
    }
  }
  for (const [i, t] of ((json.added_tokens ?? []) as unknown[]).entries()) {
    if (!isObject(t) || typeof t.content !== "string") {
      throw new HiraError(source, `added_tokens[${i}] is not an object with a string content`);
    }
    if (!validId(t.id)) {
      throw new HiraError(
        source,
        `added_tokens[${i}] has id ${
          preview(t.id, 24)
        }; ids are integers from 0 to ${MAX_TOKEN_ID}`,
      );
    }
  }
}

/**
 * The BOS of a TemplateProcessing post-processor: the special token before sequence A in the
 * `single` template (also inside a Sequence post-processor).
 */
function templateBos(post: unknown): string | null {
  if (!isObject(post)) return null;
  if (post.type === "Sequence" && Array.isArray(post.processors)) {
    for (const p of post.processors) {
      const b = templateBos(p);
      if (b !== null) return b;
    }
    return null;
  }
  if (post.type !== "TemplateProcessing" || !Array.isArray(post.single)) return null;
  const first = post.single[0];
  if (isObject(first) && isObject(first.SpecialToken)) {
    const id = first.SpecialToken.id;
    return typeof id === "string" ? id : null;
  }
  return null;
}

/** Builds a {@linkcode Tokenizer} from the parsed JSON files of a tokenizer folder. */
export function createTokenizer(files: TokenizerFiles): Tokenizer {
  return new Tokenizer(files);
}
