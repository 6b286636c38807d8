/**
 * The synthetic world: a deterministic fictional world of invented animals, a pre-training
 * corpus that states its facts, LLM-Adapters-format question sets in the eight commonsense task
 * styles, and a word-level tokenizer covering all of it. It lets the project train and evaluate
 * end to end on two CPU cores with a tiny model.
 *
 * Splits: every question asks about one (animal, attribute) fact. One fifth of the facts of each
 * attribute are held out: training questions never ask about them, while the eight test sets and
 * common_170k's validation/test ask only about them. All facts, held out or not, are stated in
 * the pre-training corpus, so held-out questions are answerable by a model that learned the
 * corpus and then learned the question formats. Answer positions (and true/false) are balanced,
 * so chance is 1/k for a k-way set.
 *
 * Everything is a pure function of the seed; scripts/make_synthetic.ts writes the files.
 * @module
 */
import { COMMONSENSE_TASKS, type CommonsenseTask, DATASET_FOLDERS } from "../lib/train/datasets.ts";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { formatTemplate, testPrompt, trainingTarget } from "../lib/train/prompt.ts";
import { Rng } from "../lib/engine/rand.ts";

/** The seed the shipped data_file/ was generated with. */
export const SYNTHETIC_SEED = 20250311;

/** The attributes every animal has. */
export type Attribute = "color" | "size" | "home" | "food" | "friend";

/** All attributes, in a fixed order. */
export const ATTRIBUTES: readonly Attribute[] = ["color", "size", "home", "food", "friend"];

const COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"];
const SIZES = ["tiny", "small", "big", "huge"];
const HOMES = ["cave", "forest", "river", "hill", "desert", "lake", "swamp", "meadow"];
const FOODS = ["apples", "fish", "seeds", "honey", "leaves", "bread", "nuts", "berries"];
const ABILITY: Record<string, string> = {
  cave: "see in the dark",
  forest: "climb trees",
  river: "swim fast",
  hill: "run up slopes",
  desert: "live without water",
  lake: "dive deep",
  swamp: "walk in mud",
  meadow: "jump high",
};
const VALUES: Record<Exclude<Attribute, "friend">, string[]> = {
  color: COLORS,
  size: SIZES,
  home: HOMES,
  food: FOODS,
};

/** One invented animal and its facts. */
export interface Entity {
  /** Invented name, e.g. "zworp". */
  name: string;
  /** Color (one of 8). */
  color: string;
  /** Size (one of 4). */
  size: string;
  /** Home (one of 8). */
  home: string;
  /** Food (one of 8). */
  food: string;
  /** Name of its friend (friendship is symmetric: animals come in pairs). */
  friend: string;
}

/** The world: animals and which facts are held out of training questions. */
export interface World {
  /** All animals. */
  entities: Entity[];
  /** Fact keys `name|attribute` that training questions never ask about. */
  heldOut: Set<string>;
}

/** An LLM-Adapters-format record. */
export interface SyntheticRecord {
  /** The question with its choices and "\n\nAnswer format: ..." line. */
  instruction: string;
  /** Always "" (as in LLM-Adapters). */
  input: string;
  /** "the correct answer is X". */
  output: string;
  /** X. */
  answer: string;
}

/** A record with the fact it asks about (for tests; not written to the files). */
export interface KeyedRecord {
  /** The record. */
  record: SyntheticRecord;
  /** The fact key `name|attribute`. */
  key: string;
  /** The task style (dataset name, e.g. "boolq"). */
  style: StyleName;
}

/** The eight task styles, by the reference's dataset names. */
export type StyleName = CommonsenseTask;

/** Sizes of the generated sets. */
export const SYNTHETIC_SIZES = {
  /** Training questions per style (the train split mixes all eight). */
  trainPerStyle: 200,
  /** Test questions per style, for the eight test.json files. */
  test: { boolq: 50, piqa: 50, siqa: 48, hellas: 48, winog: 50, arce: 48, arcc: 48, obqa: 48 },
  /** common_170k validation (= test) questions per style (8 × 15 = 120). */
  validationPerStyle: 15,
} as const;

/** Folder of each style's test set under data_file/llm_adapt/. */
export const STYLE_FOLDERS: Readonly<Record<StyleName, string>> = Object.fromEntries(
  COMMONSENSE_TASKS.map((t) => [t, DATASET_FOLDERS[t].replace(/^llm_adapt\//, "")]),
) as Record<StyleName, string>;

const STYLES: readonly StyleName[] = COMMONSENSE_TASKS;

/** Number of choices (2 for true/false) of each style. */
export const STYLE_CHOICES: Readonly<Record<StyleName, number>> = {
  boolq: 2,
  piqa: 2,
  siqa: 3,
  hellas: 4,
  winog: 2,
  arce: 4,
  arcc: 4,
  obqa: 4,
};

const NUM_ENTITIES = 60;
const HELD_OUT_PER_ATTRIBUTE = 16;

// Names are onset + vowel + coda; real English words that this can spell are rejected.
const ONSETS = ["zw", "vr", "kl", "sn", "gl", "bl", "tr", "fl", "kr", "dr", "pl", "z", "v", "g"];
const VOWELS = ["a", "e", "i", "o", "u"];
const CODAS = ["rp", "x", "zz", "rb", "lb", "rf", "lz", "rv", "bz", "gz"];
const ENGLISH = new Set([
  "fuzz",
  "fizz",
  "buzz",
  "jazz",
  "blurb",
  "verb",
  "garb",
  "barb",
  "burp",
  "bulb",
  "turf",
  "flex",
  "flax",
  "flux",
  "vex",
  "zax",
  "trix",
  "gulf",
  "glob",
]);

/** Builds the world from a seed. */
export function makeWorld(seed: number = SYNTHETIC_SEED): World {
  const rng = new Rng(seed);
  const names = new Set<string>();
  while (names.size < NUM_ENTITIES) {
    const n = pick(rng, ONSETS) + pick(rng, VOWELS) + pick(rng, CODAS);
    if (!ENGLISH.has(n)) names.add(n);
  }
  const nameList = [...names];
  const balanced = (values: string[]) =>
    rng.shuffle(Array.from({ length: NUM_ENTITIES }, (_, i) => values[i % values.length]));
  const colors = balanced(COLORS);
  const sizes = balanced(SIZES);
  const homes = balanced(HOMES);
  const foods = balanced(FOODS);
  const pairOrder = rng.shuffle([...nameList]);
  const friendOf = new Map<string, string>();
  for (let i = 0; i < pairOrder.length; i += 2) {
    friendOf.set(pairOrder[i], pairOrder[i + 1]);
    friendOf.set(pairOrder[i + 1], pairOrder[i]);
  }
  const entities = nameList.map((name, i) => ({
    name,
    color: colors[i],
    size: sizes[i],
    home: homes[i],
    food: foods[i],
    friend: friendOf.get(name)!,
  }));

  const heldOut = new Set<string>();
  for (const attr of ["color", "size", "home", "food"] as const) {
    for (const e of rng.shuffle([...entities]).slice(0, HELD_OUT_PER_ATTRIBUTE)) {
      heldOut.add(factKey(e.name, attr));
    }
  }
  // A held-out friendship is held out from both sides, since each side reveals the other.
  const pairs = pairOrder.filter((_, i) => i % 2 === 0);
  for (const a of rng.shuffle([...pairs]).slice(0, HELD_OUT_PER_ATTRIBUTE / 2)) {
    heldOut.add(factKey(a, "friend"));
    heldOut.add(factKey(friendOf.get(a)!, "friend"));
  }
  return { entities, heldOut };
}

/** The key of a fact. */
export function factKey(name: string, attr: Attribute): string {
  return `${name}|${attr}`;
}

function pick<T>(rng: Rng, a: readonly T[]): T {
  return a[rng.int(a.length)];
}

/** `k` distinct items of `pool` (in random order) that are not in `exclude`. */
function pickDistinct<T>(rng: Rng, pool: readonly T[], k: number, exclude: readonly T[]): T[] {
  const candidates = rng.shuffle(pool.filter((x) => !exclude.includes(x)));
  if (candidates.length < k) throw new Error("synthetic: not enough distinct candidates");
  return candidates.slice(0, k);
}

// ---------------------------------------------------------------------------------------------
// Pre-training corpus

function factSentences(e: Entity): Record<Attribute, string[]> {
  const n = e.name;
  return {
    color: [
      `the ${n} is ${e.color}.`,
      `the color of the ${n} is ${e.color}.`,
      `a ${n} is a ${e.color} animal.`,
      `${e.color} is the color of the ${n}.`,
    ],
    size: [
      `the ${n} is ${e.size}.`,
      `the size of the ${n} is ${e.size}.`,
      `a ${n} is a ${e.size} animal.`,
      `${e.size} is the size of the ${n}.`,
    ],
    home: [
      `the ${n} lives in the ${e.home}.`,
      `the home of the ${n} is the ${e.home}.`,
      `the ${e.home} is the home of the ${n}.`,
      `you can find the ${n} in the ${e.home}.`,
    ],
    food: [
      `the ${n} eats ${e.food}.`,
      `the food of the ${n} is ${e.food}.`,
      `${e.food} is the food of the ${n}.`,
      `the ${n} likes to eat ${e.food}.`,
    ],
    friend: [
      `the friend of the ${n} is the ${e.friend}.`,
      `the ${n} is friends with the ${e.friend}.`,
      `the ${e.friend} is the friend of the ${n}.`,
      `the ${n} often plays with the ${e.friend}.`,
    ],
  };
}

function openQuestions(e: Entity): Record<Attribute, [string, string]> {
  const n = e.name;
  return {
    color: [`what color is the ${n}?`, e.color],
    size: [`how big is the ${n}?`, e.size],
    home: [`where does the ${n} live?`, `the ${e.home}`],
    food: [`what does the ${n} eat?`, e.food],
    friend: [`who is the friend of the ${n}?`, `the ${e.friend}`],
  };
}

const KEYWORD_FAMILIES: readonly string[][] = [
  ["true", "false"],
  ["solution1", "solution2"],
  ["answer1", "answer2", "answer3", "answer4", "answer5"],
  ["ending1", "ending2", "ending3", "ending4"],
  ["option1", "option2"],
];

function listWords(words: readonly string[]): string {
  return words.length === 2
    ? `${words[0]} and ${words[1]}`
    : `${words.slice(0, -1).join(", ")} and ${words[words.length - 1]}`;
}

/** The pre-training texts (a few thousand short strings), shuffled. */
export function pretrainCorpus(world: World, seed: number = SYNTHETIC_SEED): string[] {
  const rng = new Rng(seed ^ 0x5eed0001);
  const texts: string[] = [];
  for (const e of world.entities) {
    const facts = factSentences(e);
    for (const attr of ATTRIBUTES) texts.push(...facts[attr]);
    // Short descriptions mixing several facts.
    for (let k = 0; k < 3; k++) {
      const attrs = rng.shuffle([...ATTRIBUTES]).slice(0, 3);
      texts.push(attrs.map((a) => pick(rng, facts[a])).join(" "));
    }
    texts.push(
      `the ${e.name} is a ${e.size} ${e.color} animal. it lives in the ${e.home} and eats ` +
        `${e.food}. its friend is the ${e.friend}.`,
    );
    // Questions only about training facts: held-out facts are only ever stated, so answering
    // them needs knowledge extraction that generalises, not a memorised question string.
    const qa = openQuestions(e);
    for (const attr of ATTRIBUTES) {
      if (world.heldOut.has(factKey(e.name, attr))) continue;
      const [q, a] = qa[attr];
      texts.push(`question: ${q} the correct answer is ${a}.`);
      texts.push(`${q} ${a}.`);
    }
    texts.push(`the ${e.name} can ${ABILITY[e.home]}.`);
  }
  for (const h of HOMES) {
    texts.push(`animals that live in the ${h} can ${ABILITY[h]}.`);
    texts.push(`if an animal lives in the ${h}, it can ${ABILITY[h]}.`);
  }
  for (const attr of ["color", "size", "home", "food"] as const) {
    const vals = VALUES[attr].map((v) => (attr === "home" ? `the ${v}` : v));
    texts.push(`${listWords(vals)} are ${attr === "home" ? "homes" : attr + "s"}.`);
  }
  // The answer vocabulary, outside any task format.
  for (const family of KEYWORD_FAMILIES) {
    texts.push(`${listWords(family)} are answers.`);
    texts.push(`the answer format is ${family.join("/")}.`);
    for (const k of family) {
      texts.push(`the correct answer is ${k}.`);
      texts.push(`${k} is the correct answer.`);
    }
  }
  return rng.shuffle(texts);
}

// ---------------------------------------------------------------------------------------------
// Task questions

interface Fact {
  entity: Entity;
  attr: Attribute;
}

/** The value of a fact as it is shown among choices, with the pool its distractors come from. */
function choiceValue(world: World, f: Fact): { value: string; pool: string[] } {
  if (f.attr === "friend") {
    return {
      value: `the ${f.entity.friend}`,
      pool: world.entities.filter((x) => x.name !== f.entity.name).map((x) => `the ${x.name}`),
    };
  }
  if (f.attr === "home") {
    return {
      value: `the ${f.entity.home}`,
      pool: HOMES.map((h) => `the ${h}`),
    };
  }
  return { value: f.entity[f.attr], pool: VALUES[f.attr] };
}

function answerLines(label: string, choices: string[], sep: string): string {
  return choices.map((c, i) => `${label}${i + 1}: ${c}`).join(sep);
}

function mcChoices(
  rng: Rng,
  correct: string,
  pool: string[],
  k: number,
  index: number,
): string[] {
  const choices = pickDistinct(rng, pool, k - 1, [correct]);
  choices.splice(index, 0, correct);
  return choices;
}

/**
 * Canonical choices: the block of `k` consecutive values of `pool` (in its fixed order) that
 * holds `correct`, so the answer position is a function of the fact alone (an attempt to let
 * the tiny model answer from recalled facts without matching shuffled options; see the
 * README for why the demo relies on pre-training quizzes instead).
 */
function canonicalChoices(
  correct: string,
  pool: string[],
  k: number,
): { choices: string[]; index: number } {
  const pos = pool.indexOf(correct);
  if (pos < 0) throw new Error(`synthetic: ${correct} is not in its pool`);
  const start = Math.min(Math.floor(pos / k) * k, pool.length - k);
  return { choices: pool.slice(start, start + k), index: pos - start };
}

type Maker = (
  world: World,
  f: Fact,
  index: number,
  rng: Rng,
) => { instruction: string; answer: string };

const BOOLQ_PREFIX = "Please answer the following question with true or false, question: ";
const PIQA_PREFIX = "Please choose the correct solution to the question: ";
const ANSWER_PREFIX = "Please choose the correct answer to the question: ";
const HELLAS_PREFIX = "Please choose the correct ending to complete the given sentence: ";
const WINOG_PREFIX =
  "Please choose the correct answer to fill in the blank to complete the given sentence: ";

const MAKERS: Record<StyleName, Maker> = {
  boolq(world, f, index, rng) {
    const truth = index === 0;
    const { value, pool } = choiceValue(world, f);
    const v = truth ? value : pick(rng, pool.filter((x) => x !== value));
    const n = f.entity.name;
    const q = {
      color: `is the ${n} ${v}?`,
      size: `is the ${n} ${v}?`,
      home: `does the ${n} live in ${v}?`,
      food: `does the ${n} eat ${v}?`,
      friend: `is ${v} the friend of the ${n}?`,
    }[f.attr];
    return {
      instruction: `${BOOLQ_PREFIX}${q}\n\nAnswer format: true/false`,
      answer: truth ? "true" : "false",
    };
  },
  piqa(world, f, _index, _rng) {
    const n = f.entity.name;
    const { value, pool } = choiceValue(world, f);
    const [goal, form]: [string, (v: string) => string] = {
      color: [
        `to paint a picture of the ${n}, what should you do?`,
        (v: string) => `use ${v} paint.`,
      ],
      size: [`to make a box for the ${n}, what should you do?`, (v: string) => `make a ${v} box.`],
      home: [`to find the ${n}, where should you go?`, (v: string) => `go to ${v}.`],
      food: [`to feed the ${n}, what should you do?`, (v: string) => `give it ${v}.`],
      friend: [
        `to make the ${n} happy, what should you do?`,
        (v: string) => `bring ${v} to visit.`,
      ],
    }[f.attr] as [string, (v: string) => string];
    const c = canonicalChoices(value, pool, 2);
    const choices = c.choices.map(form);
    return {
      instruction: `${PIQA_PREFIX}${goal}\n\n${answerLines("Solution", choices, "\n\n")}\n\n` +
        "Answer format: solution1/solution2",
      answer: `solution${c.index + 1}`,
    };
  },
  siqa(world, f, _index, _rng) {
    const n = f.entity.name;
    const { value, pool } = choiceValue(world, f);
    const q = {
      color: `the ${n} looks at itself in the water. what color does it see?`,
      size: `the ${n} tries to hide behind a rock. how big is the ${n}?`,
      home: `the ${n} is tired after a long day. where will the ${n} go to sleep?`,
      food: `the ${n} is hungry. what will the ${n} eat?`,
      friend: `the ${n} feels lonely. who will the ${n} visit?`,
    }[f.attr];
    const c = canonicalChoices(value, pool, 3);
    return {
      instruction: `${ANSWER_PREFIX}${q}\n\n${answerLines("Answer", c.choices, " ")}\n\n` +
        "Answer format: answer1/answer2/answer3",
      answer: `answer${c.index + 1}`,
    };
  },
  hellas(world, f, _index, _rng) {
    const n = f.entity.name;
    const { value, pool } = choiceValue(world, f);
    const [ctx, form]: [string, (v: string) => string] = {
      color: [`when the sun shines on the ${n}, its fur looks`, (v: string) => `${v}.`],
      size: [`next to the other animals, the ${n} looks`, (v: string) => `${v}.`],
      home: [`at night, the ${n} goes back to`, (v: string) => `${v}.`],
      food: [`the ${n} is hungry, so it`, (v: string) => `eats some ${v}.`],
      friend: [`on a sunny day, the ${n} goes to play with`, (v: string) => `${v}.`],
    }[f.attr] as [string, (v: string) => string];
    const c = canonicalChoices(value, pool, 4);
    const choices = c.choices.map(form);
    return {
      instruction: `${HELLAS_PREFIX}${ctx}\n\n${answerLines("Ending", choices, " ")}\n\n` +
        "Answer format: ending1/ending2/ending3/ending4",
      answer: `ending${c.index + 1}`,
    };
  },
  winog(world, f, index, rng) {
    const a = f.entity;
    const others = world.entities.filter((b) =>
      b.name !== a.name &&
      (f.attr === "friend" ? b.friend !== a.friend && b.name !== a.friend : b[f.attr] !== a[f.attr])
    );
    const b = pick(rng, others);
    const [p, q] = rng.int(2) === 0 ? [a, b] : [b, a];
    const s = {
      color: `the ${p.name} and the ${q.name} stood in the sun, and _ had ${a.color} fur.`,
      size: `the ${p.name} and the ${q.name} stood side by side, and _ was the ${a.size} one.`,
      home: `the ${p.name} and the ${q.name} went out, and at night _ went back to the ${a.home}.`,
      food: `the ${p.name} and the ${q.name} were hungry, but only _ wanted to eat ${a.food}.`,
      friend:
        `the ${p.name} and the ${q.name} waited by the road, and _ was happy to see its friend ` +
        `the ${a.friend}.`,
    }[f.attr];
    const options = index === 0 ? [a, b] : [b, a];
    return {
      instruction: `${WINOG_PREFIX}${s}\n\n` +
        answerLines("Option", options.map((x) => `the ${x.name}`), "\n\n") +
        "\n\nAnswer format: option1/option2",
      answer: `option${index + 1}`,
    };
  },
  arce(world, f, _index, _rng) {
    const q = openQuestions(f.entity)[f.attr][0];
    const { value, pool } = choiceValue(world, f);
    const c = canonicalChoices(value, pool, 4);
    return fourWay(q, c.choices, c.index);
  },
  arcc(world, f, index, rng) {
    // Reverse lookup: which animal has this value?
    const e = f.entity;
    const q = {
      color: `which animal is ${e.color}?`,
      size: `which animal is ${e.size}?`,
      home: `which animal lives in the ${e.home}?`,
      food: `which animal eats ${e.food}?`,
      friend: `which animal is the friend of the ${e.friend}?`,
    }[f.attr];
    const pool = world.entities.filter((x) =>
      f.attr === "friend" ? x.name !== e.name && x.name !== e.friend : x[f.attr] !== e[f.attr]
    ).map((x) => `the ${x.name}`);
    const choices = mcChoices(rng, `the ${e.name}`, pool, 4, index);
    return fourWay(q, choices, index);
  },
  obqa(world, f, _index, _rng) {
    const n = f.entity.name;
    if (f.attr === "home") {
      // Two facts: the home, and the rule that animals of that home have its ability.
      const abilities = HOMES.map((h) => ABILITY[h]);
      const c = canonicalChoices(ABILITY[f.entity.home], abilities, 4);
      return fourWay(`which of these can the ${n} do?`, c.choices, c.index);
    }
    const q = {
      color: `you want to spot the ${n} from far away. which color should you look for?`,
      size: `which of these describes the size of the ${n}?`,
      food: `the ${n} is looking for a meal. which of these would it choose?`,
      friend: `which of these animals does the ${n} trust most?`,
    }[f.attr];
    const { value, pool } = choiceValue(world, f);
    const c = canonicalChoices(value, pool, 4);
    return fourWay(q, c.choices, c.index);
  },
};

function fourWay(q: string, choices: string[], index: number) {
  return {
    instruction: `${ANSWER_PREFIX}${q}\n\n${answerLines("Answer", choices, "\n\n")}\n\n` +
      "Answer format: answer1/answer2/answer3/answer4",
    answer: `answer${index + 1}`,
  };
}

/** Generates `n` unique questions of one style over `facts`, with balanced answer positions. */
function generateSet(
  world: World,
  style: StyleName,
  facts: readonly Fact[],
  n: number,
  rng: Rng,
  seen: Set<string>,
): KeyedRecord[] {
  const k = STYLE_CHOICES[style];
  const indices = rng.shuffle(Array.from({ length: n }, (_, i) => i % k));
  const out: KeyedRecord[] = [];
  let order: Fact[] = [];
  let cursor = 0;
  let misses = 0;
  while (out.length < n) {
    if (cursor >= order.length) {
      order = rng.shuffle([...facts]);
      cursor = 0;
    }
    const f = order[cursor++];
    const index = indices[out.length];
    let made: { instruction: string; answer: string } | null = null;
    for (let attempt = 0; attempt < 8 && made === null; attempt++) {
      const m = MAKERS[style](world, f, index, rng);
      if (!seen.has(m.instruction)) made = m;
    }
    if (made === null) {
      if (++misses > 50 * n) {
        throw new Error(`synthetic: cannot make ${n} unique ${style} questions`);
      }
      continue;
    }
    seen.add(made.instruction);
    out.push({
      record: {
        instruction: made.instruction,
        input: "",
        output: `the correct answer is ${made.answer}`,
        answer: made.answer,
      },
      key: factKey(f.entity.name, f.attr),
      style,
    });
  }
  return out;
}

/**
 * Every question of every split (train, validation, test) as a pre-training quiz in a plain
 * wrapper: `quiz: <instruction>` then the keyword sentence the scorer reads ("the correct answer
 * is answer2."). The Alpaca template never frames a quiz in pre-training; it frames only open
 * questions about training facts with free-form answers (`templateQuestions`). So the base
 * model, prompted with the template, answers in free form and scores about 0; fine-tuning (on
 * training questions only) has to teach that a multiple-choice instruction under the template
 * gets the keyword sentence, and held-out accuracy measures whether that transfers to
 * questions the model has seen only as pre-training quizzes.
 */
function quizTexts(splits: SyntheticSplits, seed: number): string[] {
  const rng = new Rng(seed ^ 0x5eed0003);
  const all = [...splits.train, ...splits.validation, ...STYLES.flatMap((s) => splits.tests[s])];
  const texts = all.map(({ record }) => `quiz: ${record.instruction}\n${record.output}.`);
  return rng.shuffle(texts);
}

/** Open questions about training facts under the Alpaca template, answered in free form. */
function templateQuestions(world: World, seed: number): string[] {
  const rng = new Rng(seed ^ 0x5eed0004);
  const texts: string[] = [];
  for (const e of world.entities) {
    const qa = openQuestions(e);
    for (const attr of ATTRIBUTES) {
      if (world.heldOut.has(factKey(e.name, attr))) continue;
      const [q, a] = qa[attr];
      texts.push(`${formatTemplate(4, q, "")}${a}.`);
    }
  }
  return rng.shuffle(texts);
}

/** All generated question sets, with their fact keys. */
export interface SyntheticSplits {
  /** common_170k train: all eight styles, shuffled. */
  train: KeyedRecord[];
  /** common_170k validation (and test, an identical copy): held-out, all styles, shuffled. */
  validation: KeyedRecord[];
  /** The eight test sets (held-out facts). */
  tests: Record<StyleName, KeyedRecord[]>;
}

/** Generates the question sets of a world. */
export function generateSplits(world: World, seed: number = SYNTHETIC_SEED): SyntheticSplits {
  const rng = new Rng(seed ^ 0x5eed0002);
  const facts = world.entities.flatMap((entity) => ATTRIBUTES.map((attr) => ({ entity, attr })));
  const trainFacts = facts.filter((f) => !world.heldOut.has(factKey(f.entity.name, f.attr)));
  const heldFacts = facts.filter((f) => world.heldOut.has(factKey(f.entity.name, f.attr)));
  const seen = new Set<string>();
  const tests = {} as Record<StyleName, KeyedRecord[]>;
  const validation: KeyedRecord[] = [];
  const train: KeyedRecord[] = [];
  for (const style of STYLES) {
    tests[style] = generateSet(world, style, heldFacts, SYNTHETIC_SIZES.test[style], rng, seen);
    validation.push(
      ...generateSet(world, style, heldFacts, SYNTHETIC_SIZES.validationPerStyle, rng, seen),
    );
    train.push(...generateSet(world, style, trainFacts, SYNTHETIC_SIZES.trainPerStyle, rng, seen));
  }
  return { train: rng.shuffle(train), validation: rng.shuffle(validation), tests };
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

/** Specials of the tiny tokenizer, in id order (Llama-2 order, then pad). */
export const TINY_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"] as const;

/**
 * The pre-tokenizer split: words (letters and digits, so "answer2" is one token) and runs of
 * punctuation, each with an optional leading space; newline runs with the spaces before them;
 * other whitespace.
 */
const SPLIT_PATTERN = " ?[\\p{L}\\p{N}]+| ?[^\\s\\p{L}\\p{N}]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const PRE_TOKENIZER = {
  type: "Sequence",
  pretokenizers: [
    { type: "Split", pattern: { Regex: SPLIT_PATTERN }, behavior: "Isolated", invert: false },
    { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
  ],
};

/** GPT-2's byte → printable character map (what the ByteLevel pre-tokenizer emits). */
function byteChars(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const chars = new Array<string>(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    chars[b] = printable.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + extra++);
  }
  return chars;
}

function specialEntry(content: string, id: number) {
  return {
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  };
}

/**
 * A tokenizer.json (HF format) for the word-level tokenizer: a BPE model without merges and
 * with `ignore_merges`, so a whole pre-token in the vocabulary is one token and anything else
 * falls back to its bytes (all 256 byte characters are in the vocabulary, so nothing is ever
 * unknown and decode(encode(text)) is exact).
 */
export function tinyTokenizerJson(words: readonly string[]): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  let id = 0;
  for (const s of TINY_SPECIALS) vocab[s] = id++;
  for (const c of byteChars()) vocab[c] = id++;
  for (const w of words) if (!(w in vocab)) vocab[w] = id++;
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: TINY_SPECIALS.map((s, i) => specialEntry(s, i)),
    normalizer: null,
    pre_tokenizer: PRE_TOKENIZER,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: "<s>", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "<s>", type_id: 1 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: true,
      vocab,
      merges: [],
    },
  };
}

/** The tokenizer_config.json HF would write for the tiny tokenizer. */
export function tinyTokenizerConfig(): Record<string, unknown> {
  const decoder: Record<string, unknown> = {};
  TINY_SPECIALS.forEach((s, i) => {
    const { id: _id, ...rest } = specialEntry(s, i);
    decoder[String(i)] = rest;
  });
  return {
    add_bos_token: true,
    add_eos_token: false,
    added_tokens_decoder: decoder,
    bos_token: "<s>",
    clean_up_tokenization_spaces: false,
    eos_token: "</s>",
    model_max_length: 512,
    pad_token: "<pad>",
    tokenizer_class: "PreTrainedTokenizerFast",
    unk_token: "<unk>",
  };
}

/** The special_tokens_map.json HF would write for the tiny tokenizer. */
export function tinySpecialTokensMap(): Record<string, unknown> {
  const entry = (content: string) => ({
    content,
    lstrip: false,
    normalized: false,
    rstrip: false,
    single_word: false,
  });
  return {
    bos_token: entry("<s>"),
    eos_token: entry("</s>"),
    pad_token: entry("<pad>"),
    unk_token: entry("<unk>"),
  };
}

/**
 * The vocabulary words (pre-tokens in byte-level form, longer than one character) of `texts`,
 * most frequent first, ties in code-point order.
 */
export function vocabularyWords(texts: Iterable<string>): string[] {
  const skeleton = new HfTokenizer(tinyTokenizerJson([]), {});
  const preTokenize = skeleton.pre_tokenizer!;
  const counts = new Map<string, number>();
  for (const text of texts) {
    for (const piece of preTokenize(text)) {
      if ([...piece].length > 1) counts.set(piece, (counts.get(piece) ?? 0) + 1);
    }
  }
  return [...counts.entries()]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([w]) => w);
}

// ---------------------------------------------------------------------------------------------
// Files

/** Everything the generator produces. */
export interface SyntheticOutput {
  /** The world. */
  world: World;
  /** The pre-training texts. */
  pretrain: string[];
  /** The question sets with their fact keys. */
  splits: SyntheticSplits;
  /** File path relative to data_file/ → exact file contents. */
  files: Map<string, string>;
}

function recordsJson(records: readonly KeyedRecord[]): string {
  return JSON.stringify(records.map((r) => r.record), null, 1) + "\n";
}

/** Generates the whole synthetic world and the contents of every file under data_file/. */
export function generateSynthetic(seed: number = SYNTHETIC_SEED): SyntheticOutput {
  const world = makeWorld(seed);
  const splits = generateSplits(world, seed);
  const pretrain = [
    ...pretrainCorpus(world, seed),
    ...templateQuestions(world, seed),
    ...quizTexts(splits, seed),
  ];
  const files = new Map<string, string>();
  files.set("tiny/pretrain.json", JSON.stringify(pretrain, null, 1) + "\n");
  const common = "llm_adapt/commonsense_170k";
  files.set(`${common}/train.json`, recordsJson(splits.train));
  files.set(`${common}/validation.json`, recordsJson(splits.validation));
  files.set(`${common}/test.json`, recordsJson(splits.validation));
  for (const style of STYLES) {
    files.set(`llm_adapt/${STYLE_FOLDERS[style]}/test.json`, recordsJson(splits.tests[style]));
  }

  // The vocabulary covers every text exactly as it is tokenized: corpus texts, training
  // contexts and targets, and test prompts (with the BOS string, which splits off as a special).
  const all = [...splits.train, ...splits.validation, ...STYLES.flatMap((s) => splits.tests[s])];
  const texts: string[] = [...pretrain];
  for (const { record } of all) {
    texts.push(formatTemplate(4, record.instruction, ""));
    texts.push(trainingTarget(record.output));
    texts.push(testPrompt(4, record.instruction, null));
  }
  texts.push(formatTemplate(0, "", ""));
  const words = vocabularyWords(texts);
  files.set("tiny/tokenizer.json", JSON.stringify(tinyTokenizerJson(words), null, 1) + "\n");
  files.set("tiny/tokenizer_config.json", JSON.stringify(tinyTokenizerConfig(), null, 2) + "\n");
  files.set(
    "tiny/special_tokens_map.json",
    JSON.stringify(tinySpecialTokensMap(), null, 2) + "\n",
  );
  // The embedded model's folder carries the same tokenizer files (a model folder is
  // self-contained); regenerating keeps them identical.
  for (const f of ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]) {
    files.set(`tiny/model/${f}`, files.get(`tiny/${f}`)!);
  }
  return { world, pretrain, splits, files };
}
