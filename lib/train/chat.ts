/**
 * Chat templates: a model's `chat_template` (Jinja, from tokenizer_config.json, a
 * chat_template.jinja file or --chat_template=FILE) rendered with `@huggingface/jinja`, as
 * transformers' `apply_chat_template` renders it, and the assistant-only loss mask of a
 * conversation.
 *
 * The mask comes from `{% generation %}` … `{% endgeneration %}` when the template marks the
 * assistant text (transformers' `return_assistant_tokens_mask`), and otherwise from rendering
 * prefixes, as TRL's completion-only masking does: assistant turn i covers the characters
 * between `render(messages[:i], add_generation_prompt=True)` and `render(messages[:i+1])`,
 * both of which must be prefixes of the whole conversation's rendering. Character spans become
 * token spans by tokenizing the text before each boundary (the longest common prefix with the
 * whole conversation's ids), so a token that straddles a boundary counts as assistant text.
 * Pure: file reading lives in chat_deno.ts.
 * @module
 */
import { Template } from "@huggingface/jinja";
import { HiraError } from "../engine/errors.ts";
import type { Tokenizer } from "../model/tokenizer.ts";
import type { TrainExample } from "./data.ts";

/** One chat message as TRL's conversational datasets store it. */
export interface ChatMessage {
  /** "system", "user", "assistant", or whatever role the template knows. */
  role: string;
  /** The message text. */
  content: string;
}

// Private-use characters mark where {% generation %} blocks start and end in a rendering; a
// message holding them is refused, so the markers are never ambiguous.
const GEN_START = "\uE000";
const GEN_END = "\uE001";
const GEN_OPEN = /\{%(-?)\s*generation\s*(-?)%\}/g;
const GEN_CLOSE = /\{%(-?)\s*endgeneration\s*(-?)%\}/g;

/** The special-token strings a template may use (transformers passes these to Jinja). */
export interface TemplateTokens {
  /** The BOS string (Llama-3: `<|begin_of_text|>`). */
  bos_token?: string | null;
  /** The EOS string. */
  eos_token?: string | null;
  /** The UNK string, if any. */
  unk_token?: string | null;
  /** The pad string the config names, if any. */
  pad_token?: string | null;
}

/** A compiled chat template. */
export class ChatTemplate {
  readonly #template: Template;
  readonly #tokens: TemplateTokens;
  /** Where the template came from, for error messages. */
  readonly origin: string;
  /** Whether the template marks assistant text with `{% generation %}`. */
  readonly hasGeneration: boolean;

  /**
   * Compiles `source`; a template that does not parse is a {@linkcode HiraError} naming
   * `origin`.
   */
  constructor(source: string, origin: string, tokens: TemplateTokens) {
    this.origin = origin;
    this.#tokens = tokens;
    this.hasGeneration = GEN_OPEN.test(source);
    GEN_OPEN.lastIndex = 0;
    // The markers are printed with the tags' own whitespace control, so `{%- generation %}`
    // trims exactly what it trims in transformers.
    const marked = source
      .replace(GEN_OPEN, (_m, a: string, b: string) => `{{${a} "${GEN_START}" ${b}}}`)
      .replace(GEN_CLOSE, (_m, a: string, b: string) => `{{${a} "${GEN_END}" ${b}}}`);
    try {
      this.#template = new Template(marked);
    } catch (e) {
      throw new HiraError(origin, `chat template does not parse: ${(e as Error).message}`);
    }
  }

  #renderMarked(messages: readonly ChatMessage[], addGenerationPrompt: boolean): string {
    try {
      return this.#template.render({
        messages: messages.map((m) => ({ ...m })),
        add_generation_prompt: addGenerationPrompt,
        // raise_exception and strftime_now, which transformers adds, are built into the
        // library's environment.
        ...this.#tokens,
      });
    } catch (e) {
      throw new HiraError(this.origin, `chat template failed: ${(e as Error).message}`);
    }
  }

  /** The rendering transformers' `apply_chat_template(messages, tokenize=False)` gives. */
  render(messages: readonly ChatMessage[], addGenerationPrompt = false): string {
    return this.#renderMarked(messages, addGenerationPrompt).replaceAll(GEN_START, "")
      .replaceAll(GEN_END, "");
  }

  /**
   * The whole conversation's text and the character spans `[start, end)` of its assistant
   * text (see the module doc for the two ways). `where` names the record in errors.
   */
  assistantSpans(
    messages: readonly ChatMessage[],
    where: string,
  ): { text: string; spans: [number, number][] } {
    for (const m of messages) {
      if (m.content.includes(GEN_START) || m.content.includes(GEN_END)) {
        throw new HiraError(where, "a message holds U+E000/U+E001, which chat masking reserves");
      }
    }
    if (this.hasGeneration) {
      const marked = this.#renderMarked(messages, false);
      const spans: [number, number][] = [];
      let text = "";
      let open = -1;
      for (const ch of marked) {
        if (ch === GEN_START) open = text.length;
        else if (ch === GEN_END) {
          if (open >= 0 && text.length > open) spans.push([open, text.length]);
          open = -1;
        } else text += ch;
      }
      return { text, spans };
    }
    const text = this.render(messages, false);
    const spans: [number, number][] = [];
    for (let i = 0; i < messages.length; i++) {
      if (messages[i].role !== "assistant") continue;
      const before = this.render(messages.slice(0, i), true);
      const plain = this.render(messages.slice(0, i), false);
      const upTo = this.render(messages.slice(0, i + 1), false);
      if (before === plain) {
        throw new HiraError(
          this.origin,
          `${where}: the chat template ignores add_generation_prompt, so the assistant turns ` +
            "cannot be told apart; use a template that honours it or marks them with " +
            "{% generation %} (--chat_template=FILE)",
        );
      }
      if (!text.startsWith(before) || !text.startsWith(upTo) || upTo.length < before.length) {
        throw new HiraError(
          this.origin,
          `${where}: rendering the conversation up to message ${i} is not a prefix of the whole ` +
            "rendering, so the assistant tokens cannot be found; mark them with " +
            "{% generation %} (--chat_template=FILE)",
        );
      }
      if (upTo.length > before.length) spans.push([before.length, upTo.length]);
    }
    return { text, spans };
  }
}

function lcp(a: readonly number[], b: readonly number[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

/**
 * Token ids of `text` (no special tokens added: the template writes BOS itself, as
 * transformers' `apply_chat_template(tokenize=True)` does) and the 0/1 mask of the tokens that
 * fall in `spans`: token k is in a span when it starts before the span's end and ends after
 * its start, boundaries found by tokenizing each prefix `text[0:boundary]`.
 */
export function spanMask(
  tok: Tokenizer,
  text: string,
  spans: readonly [number, number][],
): { tokens: number[]; mask: number[] } {
  const tokens = tok.encode(text);
  const mask = new Array<number>(tokens.length).fill(0);
  for (const [s, e] of spans) {
    // The tokens of text[0:s] that match the whole text's ids end before the span: a token
    // that straddles the boundary is not among them, so it counts as assistant text.
    const from = lcp(tok.encode(text.slice(0, s)), tokens);
    const prefixEnd = tok.encode(text.slice(0, e));
    const common = lcp(prefixEnd, tokens);
    const to = common < prefixEnd.length ? Math.min(tokens.length, common + 1) : common;
    for (let k = from; k < to; k++) mask[k] = 1;
  }
  return { tokens, mask };
}

/**
 * A chat training example: the conversation rendered by the template, tokenized, with the
 * loss on the assistant tokens only, cut to the first `maxLength` tokens. `where` names the
 * record in errors.
 */
export function chatTrainExample(
  template: ChatTemplate,
  messages: readonly ChatMessage[],
  tok: Tokenizer,
  maxLength: number,
  where: string,
): TrainExample {
  const { text, spans } = template.assistantSpans(messages, where);
  const { tokens, mask } = spanMask(tok, text, spans);
  return { tokens: tokens.slice(0, maxLength), lossMask: mask.slice(0, maxLength) };
}

/**
 * The decoding prompt of a conversation: every message before the last assistant turn,
 * rendered with the generation prompt; the reference answer is that turn's content. A
 * conversation without an assistant turn is prompted as a whole and has no reference.
 */
export function chatPrompt(
  template: ChatTemplate,
  messages: readonly ChatMessage[],
): { prompt: string; reference: string | null } {
  let last = -1;
  for (let i = 0; i < messages.length; i++) if (messages[i].role === "assistant") last = i;
  if (last < 0) return { prompt: template.render(messages, true), reference: null };
  return {
    prompt: template.render(messages.slice(0, last), true),
    reference: messages[last].content,
  };
}

/**
 * The template source in a parsed tokenizer_config.json: `chat_template` as a string, or the
 * one named "default" in a list of `{name, template}` (transformers' multi-template form).
 * Null when there is none.
 */
export function configChatTemplate(config: unknown, file: string): string | null {
  if (typeof config !== "object" || config === null) return null;
  const t = (config as Record<string, unknown>).chat_template;
  if (t === undefined || t === null) return null;
  if (typeof t === "string") return t;
  if (Array.isArray(t)) {
    const d = t.find((x) => x && typeof x === "object" && x.name === "default");
    if (d && typeof d.template === "string") return d.template;
    throw new HiraError(file, "chat_template is a list without a 'default' template");
  }
  throw new HiraError(file, "chat_template must be a string");
}
