/**
 * Prompt templates of the reference (`dataset/format_inputs.py`), byte-exact, and the rules
 * for how a record becomes training text and test prompts.
 *
 * - Template 4 (`BOOLQ_TEMPLATE`, Alpaca style) is used for the commonsense sets, common_170k,
 *   common_all and gsm8k. Training text is the template with an empty target and NO BOS, the
 *   target being `output.strip()` tokenized on its own with NO EOS; the test prompt is the BOS
 *   string followed by the template with an empty target.
 * - Template 0 (`CONTEXT: {cinput} TARGET: {target}`) is used for convai2 and meta_math (and any
 *   other dataset): the training text is `BOS + template + EOS`; the test prompt is
 *   `BOS + "CONTEXT: {cinput} TARGET: "` (with the trailing space).
 * - Template 7 (`{cinput}{target}`) is mmlu's.
 * @module
 */
import { COMMONSENSE_TASKS } from "./datasets.ts";

/**
 * The reference's `BOOLQ_TEMPLATE` (template 4). Note the TWO spaces after "request." before
 * the first newline: they are in the reference's bytes and change the tokens.
 */
export const ALPACA_TEMPLATE: string =
  "Below is an instruction that describes a task. Write a response that appropriately " +
  "completes the request.  \n\n### Instruction:\n{cinput}\n\n### Response:\n{target}";

/** The reference's template 0, for convai2 and meta_math. */
export const CONTEXT_TARGET_TEMPLATE = "CONTEXT: {cinput} TARGET: {target}";

/** The reference's template 7, for mmlu. */
export const PLAIN_TEMPLATE = "{cinput}{target}";

/** The template numbers this project implements (the reference's numbering). */
export type TemplateType = 0 | 4 | 7;

const TEMPLATES: Record<TemplateType, string> = {
  0: CONTEXT_TARGET_TEMPLATE,
  4: ALPACA_TEMPLATE,
  7: PLAIN_TEMPLATE,
};

/** Datasets that the reference's collator formats with template 4 (`train_hira.py:228-233`). */
const TEMPLATE4_DATASETS: ReadonlySet<string> = new Set([
  ...COMMONSENSE_TASKS,
  "gsm8k",
  "common_170k",
  "common_all",
]);

/**
 * The template the reference uses for a dataset name: 4 for the commonsense sets, common_170k,
 * common_all and gsm8k; 7 for mmlu; 0 for everything else (convai2, meta_math, ...).
 */
export function templateTypeFor(dataset: string): TemplateType {
  if (TEMPLATE4_DATASETS.has(dataset)) return 4;
  if (dataset === "mmlu") return 7;
  return 0;
}

/**
 * Fills a template like Python's `str.format(cinput=..., target=...)`: each placeholder is
 * replaced once, and braces or `$` inside the values are kept literally.
 */
export function formatTemplate(type: TemplateType, cinput: string, target: string): string {
  return TEMPLATES[type].replace(
    /\{(cinput|target)\}/g,
    (_m, name: string) => name === "cinput" ? cinput : target,
  );
}

// Python's str.isspace() set, so that pyStrip matches str.strip() exactly (JS trim() differs:
// it keeps \x1c-\x1f and removes \ufeff).
const PY_SPACE = "\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004" +
  "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000";

/** Python's `str.strip()` with no arguments. */
export function pyStrip(s: string): string {
  let start = 0;
  let end = s.length;
  while (start < end && PY_SPACE.includes(s[start])) start++;
  while (end > start && PY_SPACE.includes(s[end - 1])) end--;
  return s.slice(start, end);
}

/**
 * The training context of a record: the template with an empty target, without BOS
 * (template 4 ends in "### Response:\n"). For template 0 this is the part before the target,
 * `CONTEXT: {cinput} TARGET: `, again without BOS.
 */
export function trainingContext(type: TemplateType, instruction: string): string {
  return formatTemplate(type, instruction, "");
}

/** The training target of a record: `output.strip()`, without EOS. */
export function trainingTarget(output: string): string {
  return pyStrip(output);
}

/**
 * The whole template-0 training text `BOS + "CONTEXT: {cinput} TARGET: {target}" + EOS`
 * (`format_inputs.py:167-178`), with the target stripped. Missing BOS/EOS strings (a tokenizer
 * without them) are left out.
 */
export function contextTargetTrainingText(
  input: string,
  output: string,
  bosToken: string | null,
  eosToken: string | null,
): string {
  return (bosToken ?? "") + formatTemplate(0, input, trainingTarget(output)) + (eosToken ?? "");
}

/**
 * The test prompt: the BOS string followed by the template with an empty target. Unlike
 * training, the reference includes BOS here (a train/test mismatch; docs/reference.md, Data
 * layouts and templates).
 */
export function testPrompt(
  type: TemplateType,
  instruction: string,
  bosToken: string | null,
): string {
  return (bosToken ?? "") + formatTemplate(type, instruction, "");
}
