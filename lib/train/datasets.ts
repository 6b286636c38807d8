/**
 * The datasets the project knows, stated once: the reference's dataset names, the eight
 * commonsense sets in its reporting order with their published titles, and each name's folder
 * under the data root. Training, evaluation, the page and the synthetic-data script read them
 * here.
 * @module
 */

/** The eight commonsense evaluation sets, by the reference's dataset names. */
export type CommonsenseTask =
  | "boolq"
  | "piqa"
  | "siqa"
  | "hellas"
  | "winog"
  | "arce"
  | "arcc"
  | "obqa";

/** The eight commonsense tasks in the reference's reporting order. */
export const COMMONSENSE_TASKS: readonly CommonsenseTask[] = [
  "boolq",
  "piqa",
  "siqa",
  "hellas",
  "winog",
  "arce",
  "arcc",
  "obqa",
];

/**
 * The sets' published names, for display (the short names above are the reference's file and
 * result keys): siqa is Social IQa, hellas HellaSwag, winog WinoGrande, arce/arcc the easy and
 * challenge sets of ARC, obqa OpenBookQA.
 */
export const COMMONSENSE_TITLES: Readonly<Record<CommonsenseTask, string>> = {
  boolq: "BoolQ",
  piqa: "PIQA",
  siqa: "Social IQa",
  hellas: "HellaSwag",
  winog: "WinoGrande",
  arce: "ARC-Easy",
  arcc: "ARC-Challenge",
  obqa: "OpenBookQA",
};

/** Dataset names the project knows (the reference's `--dataset` choices that we support). */
export type DatasetName =
  | "common_170k"
  | CommonsenseTask
  | "gsm8k"
  | "convai2"
  | "meta_math"
  | "common_all";

/**
 * Dataset name → folder under the data root (the reference's `dataset_map`,
 * `format_inputs.py:58-78`; the data root is `data_file`). common_all reads boolq's folder.
 */
export const DATASET_FOLDERS: Readonly<Record<DatasetName, string>> = {
  common_170k: "llm_adapt/commonsense_170k",
  boolq: "llm_adapt/boolq",
  piqa: "llm_adapt/piqa",
  siqa: "llm_adapt/social_i_qa",
  hellas: "llm_adapt/hellaswag",
  winog: "llm_adapt/winogrande",
  arce: "llm_adapt/ARC-Easy",
  arcc: "llm_adapt/ARC-Challenge",
  obqa: "llm_adapt/openbookqa",
  gsm8k: "llm_adapt/gsm8k",
  convai2: "convai2",
  meta_math: "meta_math",
  common_all: "llm_adapt/boolq",
};
