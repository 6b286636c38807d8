/// <reference lib="dom" />
/**
 * The web page: pick a model (the embedded tiny one or a local Hugging Face folder) and
 * optionally an adapter to start from, choose HiRA or LoRA and their settings, train on the
 * browser's WebGPU with a live loss chart, compare held-out accuracy before and after, ask the
 * model a question and download the adapter as a PEFT folder's two files.
 *
 * A run goes through the phases the CLI prints (docs/page.md): loading, compiling kernels,
 * held-out accuracy before training, training (with validation loss passes), held-out
 * accuracy after training, then done or stopped. Each message appears beside the control it
 * is about and is replaced when that control's state changes.
 *
 * All engine work goes through ./session.ts (lib/ underneath); this file is DOM only.
 * `window.hiraTest` exposes the state, a logits probe and a matmul kernel check for
 * tests/browser/browser_test.ts.
 * @module
 */
import { createGpu, type Gpu } from "../lib/engine/gpu.ts";
import type { MatmulVariant } from "../lib/ops/matmul.ts";
import type { AccuracySummary } from "../lib/eval/scoring.ts";
import { baseParameterCount } from "../lib/model/config.ts";
import { type AdapterConfig, targetText } from "../lib/model/peft.ts";
import type { TrainExample } from "../lib/train/data.ts";
import {
  COMMONSENSE_TASKS,
  COMMONSENSE_TITLES,
  type CommonsenseTask,
} from "../lib/eval/scoring.ts";
import { Tokenizer } from "../lib/model/tokenizer.ts";
import {
  type AdapterFileBytes,
  entriesOfFileList,
  fileFolder,
  type FolderEntry,
  readAdapterFolder,
  urlFolder,
} from "../lib/io/browser_io.ts";
import * as S from "./session.ts";
import { lossChart } from "./chart.ts";
import { type FileSource, folderSummary, plainMessage } from "./messages.ts";

/** Where the page is in its work (read by the browser test, and `body[data-phase]`). */
type Phase =
  | "checking-gpu"
  | "no-webgpu"
  | "ready"
  | "loading"
  | "compiling"
  | "evaluating-before"
  | "training"
  | "validating"
  | "evaluating-after"
  | "done"
  | "stopped"
  | "error";

/** The steps of the phase list (#phase-list), in run order. */
const STEPS = [
  "loading",
  "compiling",
  "evaluating-before",
  "training",
  "validating",
  "evaluating-after",
  "finished",
] as const;
type Step = typeof STEPS[number];

/** Which control a message is about: errors are shown beside it. */
type Place = "model" | "adapter" | "train-file" | "form" | "ask" | "download" | "run";

const EMBEDDED_MODEL = "data_file/tiny/model";
const VALIDATION_EXAMPLES = 16;
/** Validation passes per run besides the first and last (the chart's dashed line). */
const VALIDATION_PASSES = 2;

const site = new URL("/", location.href);
const dataRoot = new URL("data_file/", site);

function el<T extends HTMLElement = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`page is missing #${id}`);
  return e as T;
}

const ui = {
  gpuStatus: el("gpu-status"),
  modelControls: el<HTMLFieldSetElement>("model-controls"),
  modelEmbedded: el<HTMLInputElement>("model-embedded"),
  modelLocal: el<HTMLInputElement>("model-local"),
  modelFolder: el<HTMLInputElement>("model-folder"),
  modelFolderStatus: el("model-folder-status"),
  adapterFolder: el<HTMLInputElement>("adapter-folder"),
  adapterStatus: el("adapter-status"),
  adapterClear: el<HTMLButtonElement>("adapter-clear"),
  dropZone: el("drop-zone"),
  dropStatus: el("drop-status"),
  loadButton: el<HTMLButtonElement>("load-button"),
  modelInfo: el("model-info"),
  form: el<HTMLFormElement>("train-form"),
  settings: el<HTMLFieldSetElement>("settings"),
  peftType: el<HTMLSelectElement>("peft-type"),
  rank: el<HTMLInputElement>("rank"),
  lr: el<HTMLInputElement>("lr"),
  steps: el<HTMLInputElement>("steps"),
  batch: el<HTMLInputElement>("batch"),
  warmup: el<HTMLInputElement>("warmup"),
  seed: el<HTMLInputElement>("seed"),
  evalPerSet: el<HTMLInputElement>("eval-per-set"),
  targets: el<HTMLFieldSetElement>("targets"),
  trainFile: el<HTMLInputElement>("train-file"),
  trainFileStatus: el("train-file-status"),
  formError: el("form-error"),
  trainButton: el<HTMLButtonElement>("train-button"),
  stopButton: el<HTMLButtonElement>("stop-button"),
  lockNote: el("lock-note"),
  phaseList: el("phase-list"),
  phase: el("phase"),
  phaseDetail: el("phase-detail"),
  progressBar: el<HTMLProgressElement>("progress-bar"),
  stepCounter: el("step-counter"),
  lossValue: el("loss-value"),
  valLoss: el("val-loss"),
  stepsPerSecond: el("steps-per-second"),
  tokensPerSecond: el("tokens-per-second"),
  eta: el("eta"),
  logScale: el<HTMLInputElement>("log-scale"),
  lossChart: el("loss-chart"),
  runNote: el("run-note"),
  accuracy: el("accuracy"),
  accuracyNote: el("accuracy-note"),
  askForm: el<HTMLFormElement>("ask-form"),
  prompt: el<HTMLTextAreaElement>("prompt"),
  vocabWarning: el("vocab-warning"),
  examples: el("examples"),
  decoding: el<HTMLSelectElement>("decoding"),
  askButton: el<HTMLButtonElement>("ask-button"),
  askError: el("ask-error"),
  answer: el<HTMLOutputElement>("answer"),
  downloadButton: el<HTMLButtonElement>("download-button"),
  downloadStatus: el("download-status"),
  log: el("log"),
};

/** The adapter the page stands behind: its files, and what it is, for Download and restores. */
interface GoodAdapter {
  config: AdapterConfig;
  files: AdapterFileBytes;
  /** "HiRA r=8, trained 30 steps" */
  what: string;
}

const state = {
  phase: "checking-gpu" as Phase,
  gpu: null as Gpu | null,
  gpuMessage: "",
  busy: false,
  /** True while a training run (not a load or an answer) is the job: Stop applies. */
  running: false,
  stopRequested: false,
  loaded: null as S.LoadedModel | null,
  loadedKey: "",
  modelEntries: null as FolderEntry[] | null,
  modelSource: "chosen" as FileSource,
  adapterEntries: null as FolderEntry[] | null,
  /**
   * The last adapter that was trained (at least one step) or loaded on the current model:
   * Download saves it, and a run stopped (or failed) before its first step puts it back.
   */
  good: null as GoodAdapter | null,
  step: 0,
  totalSteps: 0,
  losses: [] as number[],
  validation: [] as [number, number][],
  validationBefore: NaN,
  validationAfter: NaN,
  before: null as AccuracySummary | null,
  after: null as AccuracySummary | null,
  /** Held-out sets of the current run (for "3 of 8 measured"). */
  setCount: 0,
  answer: "",
  error: "",
  downloads: 0,
  /** Steps of the phase list the current run went through. */
  visited: new Set<Step>(),
  /** Kernel sets compiled on this GPU: model, method and targets (compileKernels). */
  compiled: new Set<string>(),
  /** Tokenized default data, valid for the model (tokenizer) it was made with. */
  trainCache: null as { key: string; examples: TrainExample[] } | null,
  validationCache: null as { key: string; examples: TrainExample[] } | null,
  /** The embedded model's tokenizer, for the vocabulary warning before anything is loaded. */
  embeddedTok: null as Tokenizer | null,
};

function log(msg: string): void {
  const t = new Date().toLocaleTimeString();
  ui.log.textContent += `[${t}] ${msg}\n`;
  ui.log.scrollTop = ui.log.scrollHeight;
}

/** Sets a message element's text and kind ("" hides an error element: see style.css). */
function say(e: HTMLElement, text: string, kind: "info" | "ok" | "error" = "info"): void {
  e.textContent = text;
  e.dataset.kind = kind;
}

const elapsedText = (s: number) =>
  s < 60
    ? `${Math.max(0, Math.round(s))} s`
    : `${Math.floor(s / 60)} min ${String(Math.round(s % 60)).padStart(2, "0")} s`;

// ---------------------------------------------------------------------------------------------
// Phase line, phase list and progress bar

function stepOf(p: Phase): Step | null {
  if (p === "done" || p === "stopped") return "finished";
  return (STEPS as readonly string[]).includes(p) ? p as Step : null;
}

function renderPhaseList(): void {
  const current = stepOf(state.phase);
  const ended = state.phase === "done" || state.phase === "stopped" || state.phase === "error";
  for (const li of ui.phaseList.querySelectorAll<HTMLLIElement>("li")) {
    const s = li.dataset.step as Step;
    const cls = s === current && !ended
      ? "current"
      : state.visited.has(s)
      ? "visited"
      : ended && state.visited.size > 0
      ? "skipped"
      : "";
    li.className = cls;
    if (s === "finished") li.textContent = state.phase === "stopped" ? "Stopped" : "Done";
    if (s === current && !ended) li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
  }
}

/** Enters phase `p`: the phase line, its detail line, the phase list and `body[data-phase]`. */
function setPhase(p: Phase, text: string, detail = ""): void {
  state.phase = p;
  const s = stepOf(p);
  if (s && state.running) state.visited.add(s);
  ui.phase.textContent = text;
  ui.phaseDetail.textContent = detail;
  document.body.dataset.phase = p;
  renderPhaseList();
}

/** The progress bar: `value` of `max`, or an indeterminate bar (null) for unmeasured waits. */
function setBar(value: number | null, max = 1): void {
  if (value === null) ui.progressBar.removeAttribute("value");
  else {
    ui.progressBar.max = Math.max(1, max);
    ui.progressBar.value = Math.min(value, max);
  }
}

// ---------------------------------------------------------------------------------------------
// Locking: settings, model choice and buttons follow the job

function refreshButtons(): void {
  const noGpu = state.gpu === null;
  const busy = state.busy;
  ui.trainButton.disabled = noGpu || busy;
  ui.loadButton.disabled = noGpu || busy;
  ui.askButton.disabled = noGpu || busy;
  ui.stopButton.disabled = !state.running || state.stopRequested;
  ui.downloadButton.disabled = busy || state.good === null;
  ui.adapterClear.disabled = busy || state.adapterEntries === null;
  // A disabled fieldset disables every control inside it: nothing can change mid-run, since
  // nothing would read the change.
  ui.settings.disabled = busy;
  ui.modelControls.disabled = busy;
  ui.lockNote.hidden = !busy;
  ui.dropZone.classList.toggle("locked", busy);
}

function setBusy(on: boolean, running = false): void {
  state.busy = on;
  state.running = on && running;
  if (!on) state.stopRequested = false;
  refreshButtons();
}

/** Tags an error with the control it is about, so {@linkcode showError} puts it there. */
async function at<T>(place: Place, p: Promise<T> | (() => Promise<T>)): Promise<T> {
  try {
    return await (typeof p === "function" ? p() : p);
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    (err as Error & { place?: Place }).place ??= place;
    throw err;
  }
}

const ERROR_ELEMENT: Record<Place, () => HTMLElement> = {
  model: () => ui.modelInfo,
  adapter: () => ui.adapterStatus,
  "train-file": () => ui.trainFileStatus,
  form: () => ui.formError,
  ask: () => ui.askError,
  download: () => ui.downloadStatus,
  run: () => ui.formError,
};

const PLACE_NAME: Record<Place, string> = {
  model: "the model controls",
  adapter: "the adapter control",
  "train-file": "the training data control",
  form: "the Train button",
  ask: "the Answer button",
  download: "the Download button",
  run: "the Train button",
};

function showError(e: unknown, fallback: Place = "run"): void {
  const raw = e instanceof Error ? e.message : String(e);
  const msg = plainMessage(raw);
  const place = (e as { place?: Place })?.place ?? fallback;
  state.error = msg;
  say(ERROR_ELEMENT[place](), msg, "error");
  if (state.running || place === "run") {
    setPhase("error", "Stopped by an error.", `The message is beside ${PLACE_NAME[place]}.`);
  }
  log(`error: ${raw}`);
  console.error(e);
}

// ---------------------------------------------------------------------------------------------
// WebGPU

async function initGpu(): Promise<void> {
  const gpuApi = (navigator as Navigator & { gpu?: GPU }).gpu;
  const fail = (plain: string, technical: string) => {
    state.gpuMessage = `${plain} (${technical})`;
    ui.gpuStatus.textContent = "";
    const p = document.createElement("p");
    p.textContent = plain;
    const d = document.createElement("details");
    const s = document.createElement("summary");
    s.textContent = "Details for developers";
    d.append(s, technical);
    ui.gpuStatus.append(p, d);
    ui.gpuStatus.className = "notice error";
    setPhase("no-webgpu", "Training is unavailable in this browser.");
    log(technical);
    refreshButtons();
  };
  const advice = "Try a recent Chrome or Edge, or enable WebGPU in this browser's settings.";
  if (!gpuApi) {
    return fail(
      `This browser cannot train models here: it has no WebGPU. ${advice}`,
      "navigator.gpu is missing: the page needs a secure context (http://127.0.0.1 or " +
        "https) and a browser with WebGPU; headless Chromium needs --enable-unsafe-webgpu.",
    );
  }
  let adapter: GPUAdapter | null = null;
  try {
    adapter = await gpuApi.requestAdapter({ powerPreference: "high-performance" });
  } catch (e) {
    return fail(
      `This browser's WebGPU failed to start. ${advice}`,
      `requestAdapter() threw ${(e as Error).message}`,
    );
  }
  if (!adapter) {
    return fail(
      `This browser has WebGPU but no graphics adapter for it (it may block this GPU), so ` +
        `nothing can be trained here. ${advice}`,
      "navigator.gpu.requestAdapter() returned null; on a machine without a GPU, start " +
        "Chromium with --enable-unsafe-webgpu.",
    );
  }
  try {
    state.gpu = await createGpu({ kernelsUrl: new URL("kernels/", site) });
  } catch (e) {
    return fail(
      `This browser's WebGPU failed to start. ${advice}`,
      `device creation failed: ${(e as Error).message}`,
    );
  }
  const g = state.gpu;
  state.gpuMessage = `Running on ${g.description}` +
    (g.isCpuAdapter ? ": a CPU rasterizer, correct but slow, so keep runs small." : ".");
  ui.gpuStatus.textContent = state.gpuMessage;
  ui.gpuStatus.className = "notice ok";
  log(state.gpuMessage);
  setPhase("ready", "Ready: choose settings and press Train.");
  refreshButtons();
}

// ---------------------------------------------------------------------------------------------
// Model and adapter input

function modelKey(): string {
  if (ui.modelEmbedded.checked) return "embedded";
  const e = state.modelEntries;
  return e ? `local:${e.length}:${e.map((x) => x.path).join("|")}` : "local:none";
}

async function ensureModel(onLoading: (what: string) => void = () => {}): Promise<S.LoadedModel> {
  const key = modelKey();
  if (state.loaded && state.loadedKey === key) return state.loaded;
  if (!state.gpu) throw new Error(state.gpuMessage || "no WebGPU device");
  let folder;
  let baseModel: string;
  if (ui.modelEmbedded.checked) {
    folder = urlFolder(new URL(EMBEDDED_MODEL + "/", site), EMBEDDED_MODEL);
    // An empty base makes `deno task eval` pick the embedded model.
    baseModel = "";
  } else {
    if (!state.modelEntries?.length) {
      throw new Error("choose a model folder first (or pick the embedded tiny model)");
    }
    folder = fileFolder(state.modelEntries, "model");
    baseModel = folder.name;
  }
  say(ui.modelInfo, `Loading ${folder.name}…`);
  onLoading(folder.name);
  const t0 = performance.now();
  // The old model's buffers go back to the pool before the new one loads; its adapter goes too.
  if (state.loaded) state.loaded.model.release();
  state.loaded = null;
  if (state.good) {
    state.good = null;
    say(ui.downloadStatus, "No adapter yet: the previous one belonged to the previous model.");
  }
  const lm = await S.loadModelFolder(state.gpu, folder, baseModel);
  state.loaded = lm;
  state.loadedKey = key;
  const c = lm.model.config;
  const info = `Loaded ${folder.name}: ${c.numLayers} layers, hidden size ${c.hiddenSize}, ` +
    `${c.vocabSize.toLocaleString("en-US")}-token vocabulary, ` +
    `${baseParameterCount(c).toLocaleString("en-US")} parameters ` +
    `(${((performance.now() - t0) / 1000).toFixed(1)} s).`;
  say(ui.modelInfo, info, "ok");
  log(info);
  updateVocabWarning();
  return lm;
}

/** Attaches the adapter the run starts from: the chosen adapter folder, else a fresh one. */
async function attachForRun(lm: S.LoadedModel, s: S.TrainSettings): Promise<AdapterConfig> {
  if (state.adapterEntries?.length) {
    const folder = fileFolder(state.adapterEntries, "adapter");
    const ad = await readAdapterFolder(folder);
    const ac = await S.attachLoaded(lm.model, ad, s.seed);
    log(`started from adapter ${folder.name} (${ac.peftType}, r=${ac.r})`);
    return { ...ac, baseModel: lm.baseModel };
  }
  return S.attachFresh(lm.model, s, lm.baseModel);
}

/** Puts the last good adapter back on the model (or none): a run that trained nothing. */
async function restoreGood(lm: S.LoadedModel): Promise<void> {
  lm.model.releaseAdapters();
  const g = state.good;
  if (!g) return;
  const folder = fileFolder([
    { path: "adapter_config.json", file: new Blob([g.files.configJson]) },
    { path: "adapter_model.safetensors", file: new Blob([g.files.safetensors]) },
  ], "adapter");
  await S.attachLoaded(lm.model, await readAdapterFolder(folder), 0);
}

/** Remembers the adapter now on the model as the one Download saves. */
async function keepGood(lm: S.LoadedModel, config: AdapterConfig, what: string): Promise<void> {
  state.good = { config, files: await S.adapterFiles(lm.model, config), what };
  say(ui.downloadStatus, `Ready to download: ${what}.`);
}

function describe(ac: AdapterConfig): string {
  return `${ac.peftType === "HIRA" ? "HiRA" : "LoRA"} r=${ac.r}`;
}

function formSettings(): S.TrainSettings {
  const int = (input: HTMLInputElement, name: string, min: number) => {
    const v = Number(input.value);
    if (!Number.isInteger(v) || v < min) {
      input.focus();
      throw new Error(`${name} must be a whole number ≥ ${min} (got '${input.value}')`);
    }
    return v;
  };
  const lr = Number(ui.lr.value.trim());
  if (!(lr > 0 && Number.isFinite(lr))) {
    ui.lr.focus();
    throw new Error(`learning rate must be a positive number (got '${ui.lr.value}')`);
  }
  const targets = [...ui.targets.querySelectorAll<HTMLInputElement>("input[name=target]")]
    .filter((c) => c.checked).map((c) => c.value);
  if (targets.length === 0) throw new Error("choose at least one target module");
  return {
    ...S.DEFAULT_SETTINGS,
    peftType: ui.peftType.value === "lora" ? "lora" : "hira",
    r: int(ui.rank, "rank r", 1),
    lr,
    steps: int(ui.steps, "steps", 1),
    batch: int(ui.batch, "batch", 1),
    warmup: int(ui.warmup, "warmup steps", 0),
    seed: int(ui.seed, "seed", 0),
    targetModules: targets,
  };
}

/** Fills the form from a loaded adapter's config, so what is shown is what runs. */
function showAdapterSettings(ac: AdapterConfig): void {
  ui.peftType.value = ac.peftType === "HIRA" ? "hira" : "lora";
  ui.rank.value = String(ac.r);
  for (const c of ui.targets.querySelectorAll<HTMLInputElement>("input[name=target]")) {
    c.checked = ac.targetModules.includes(c.value) || ac.targetModules.includes("all-linear");
  }
}

async function fetchText(url: URL): Promise<string | null> {
  const r = await fetch(url);
  if (r.status === 404) return null;
  if (!r.ok) throw new Error(`${url.pathname}: HTTP ${r.status}`);
  return await r.text();
}

async function trainingData(lm: S.LoadedModel): Promise<TrainExample[]> {
  const file = ui.trainFile.files?.[0];
  if (file) {
    const ex = await at(
      "train-file",
      async () => S.trainingExamples(await file.text(), file.name, lm.tok),
    );
    say(ui.trainFileStatus, `${file.name}: ${ex.length.toLocaleString("en-US")} examples.`, "ok");
    return ex;
  }
  if (state.trainCache?.key === state.loadedKey) return state.trainCache.examples;
  const url = new URL("llm_adapt/commonsense_170k/train.json", dataRoot);
  const text = await fetchText(url);
  if (text === null) throw new Error(`${url.pathname} is missing`);
  const ex = S.trainingExamples(text, url.pathname, lm.tok);
  state.trainCache = { key: state.loadedKey, examples: ex };
  return ex;
}

async function validationData(lm: S.LoadedModel): Promise<TrainExample[]> {
  if (state.validationCache?.key === state.loadedKey) return state.validationCache.examples;
  const url = new URL("llm_adapt/commonsense_170k/validation.json", dataRoot);
  const text = await fetchText(url);
  const ex = text === null
    ? []
    : S.trainingExamples(text, url.pathname, lm.tok).slice(0, VALIDATION_EXAMPLES);
  state.validationCache = { key: state.loadedKey, examples: ex };
  return ex;
}

// ---------------------------------------------------------------------------------------------
// Rendering

/** The chart at its box's width in CSS pixels, so its text is never scaled down. */
function renderChart(): void {
  if (state.losses.length === 0 && state.validation.length === 0) {
    ui.lossChart.innerHTML =
      '<p class="hint">The training and validation loss appear here as the run goes.</p>';
    return;
  }
  const width = Math.max(240, Math.floor(ui.lossChart.clientWidth));
  // The x axis runs to the run's last step, so the line fills it as training goes; a long run
  // grows it instead (else the first steps are a sliver), and a stopped run ends at its step.
  const total = state.totalSteps, done = state.losses.length;
  const xMax = state.phase === "stopped"
    ? Math.max(1, done)
    : total > 200
    ? Math.min(total, Math.max(20, Math.ceil(done * 1.5)))
    : total;
  const height = Math.round(Math.min(380, Math.max(240, width * 0.5)));
  ui.lossChart.innerHTML = lossChart({
    width,
    height,
    xMax,
    logY: ui.logScale.checked,
    series: [
      {
        name: "training loss",
        color: "#0550ae",
        points: state.losses.map((l, i) => [i + 1, l] as const),
      },
      { name: "validation loss", color: "#bc4c00", points: state.validation, dashed: true },
    ],
  });
  ui.lossChart.dataset.width = String(width);
}

const titleOf = (d: string) => COMMONSENSE_TITLES[d as CommonsenseTask] ?? d;

function renderAccuracy(): void {
  const b = state.before, a = state.after;
  ui.accuracy.textContent = "";
  if (!b && !a) return;
  const table = document.createElement("table");
  table.id = "accuracy-table";
  const cap = table.createCaption();
  // The tag reads like "greedy_limit=4"; the limit is already the "questions" column.
  cap.textContent = `Accuracy (%), ${(a ?? b)!.decoding.split("_")[0]} decoding`;
  const head = table.createTHead().insertRow();
  for (const [h, title] of [["Test set", ""], ["n", "questions"], ["Before", ""], ["After", ""]]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = h;
    if (title) th.title = title;
    head.appendChild(th);
  }
  const body = table.createTBody();
  const names = COMMONSENSE_TASKS.filter((d) =>
    b?.rows.some((r) => r.dataset === d) || a?.rows.some((r) => r.dataset === d)
  );
  const cell = (row: HTMLTableRowElement, s: AccuracySummary | null, d: string) => {
    const td = row.insertCell();
    const r = s?.rows.find((x) => x.dataset === d);
    if (!r) {
      td.textContent = "–";
      td.title = "not measured";
      return;
    }
    td.textContent = r.accuracy.toFixed(1);
    const n = document.createElement("span");
    n.className = "count";
    n.textContent = ` ${r.correct}/${r.n}`;
    td.appendChild(n);
    td.title = `${r.correct} of ${r.n} correct`;
  };
  for (const d of names) {
    const row = body.insertRow();
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = titleOf(d);
    row.appendChild(th);
    const n = b?.rows.find((x) => x.dataset === d)?.n ?? a?.rows.find((x) => x.dataset === d)?.n;
    row.insertCell().textContent = String(n ?? "");
    cell(row, b, d);
    cell(row, a, d);
  }
  if (names.length > 1) {
    const row = body.insertRow();
    row.className = "average";
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = "Average";
    row.appendChild(th);
    // An average over fewer sets than the other column is not comparable: shown only when full.
    const avg = (s: AccuracySummary | null) =>
      s?.average != null && s.rows.length === names.length ? s.average.toFixed(1) : "–";
    for (const v of ["", avg(b), avg(a)]) row.insertCell().textContent = v;
  }
  ui.accuracy.appendChild(table);
}

function resetRun(): void {
  state.losses = [];
  state.validation = [];
  state.step = 0;
  state.totalSteps = 0;
  state.validationBefore = NaN;
  state.validationAfter = NaN;
  state.before = null;
  state.after = null;
  state.setCount = 0;
  state.error = "";
  state.visited = new Set();
  say(ui.formError, "");
  ui.runNote.hidden = true;
  ui.runNote.textContent = "";
  ui.stepCounter.textContent = "–";
  ui.lossValue.textContent = "–";
  ui.valLoss.textContent = "–";
  ui.stepsPerSecond.textContent = "–";
  ui.tokensPerSecond.textContent = "–";
  ui.eta.textContent = "–";
  say(ui.accuracyNote, "");
  setBar(0);
  renderChart();
  renderAccuracy();
}

function showValidation(): void {
  const v = state.validation;
  if (v.length === 0) return;
  ui.valLoss.textContent = v.length === 1
    ? v[0][1].toFixed(3)
    : `${v[0][1].toFixed(3)} → ${v[v.length - 1][1].toFixed(3)}`;
}

// ---------------------------------------------------------------------------------------------
// Actions

/** Held-out accuracy with the phase line following the sets. */
async function accuracyPass(
  lm: S.LoadedModel,
  sets: S.HeldOutSet[],
  when: "before" | "after",
): Promise<AccuracySummary> {
  const phase = when === "before" ? "evaluating-before" : "evaluating-after";
  const label = `Held-out accuracy ${when} training`;
  const detail = when === "before"
    ? "Greedy decoding of the test questions with the starting adapter, as the CLI's report."
    : "The same questions with the trained adapter.";
  setPhase(phase, `${label}…`, detail);
  setBar(0, sets.length);
  const r = await S.heldOutAccuracy(lm.model, lm.tok, sets, {
    shouldStop: () => state.stopRequested,
    onSet: (d, i, n) => {
      setPhase(phase, `${label}: ${titleOf(d)} (${i + 1} of ${n})…`, detail);
      setBar(i, n);
    },
  });
  setBar(r.rows.length, sets.length);
  if (when === "before") state.before = r;
  else state.after = r;
  renderAccuracy();
  log(`accuracy ${when} training: ${r.average?.toFixed(1) ?? "–"}% (${r.rows.length} sets)`);
  return r;
}

async function runTraining(): Promise<void> {
  let settings: S.TrainSettings;
  try {
    settings = formSettings();
  } catch (e) {
    say(ui.formError, (e as Error).message, "error");
    return;
  }
  const perSet = Math.max(0, Math.floor(Number(ui.evalPerSet.value) || 0));
  resetRun();
  setBusy(true, true);
  const stop = () => state.stopRequested;
  let lm: S.LoadedModel | null = null;
  /** The run's adapter replaced the model's: a run that trains nothing must put it back. */
  let attached = false;
  let trained = false;
  let ac: AdapterConfig | null = null;
  const t0 = performance.now();
  try {
    setPhase("loading", "Loading the model and data…");
    setBar(null);
    lm = await at("model", ensureModel((name) => setPhase("loading", `Loading ${name}…`)));
    const model = lm;
    const examples = await trainingData(model);
    const validation = await validationData(model);
    const sets = perSet > 0 ? await S.fetchHeldOutSets(dataRoot, perSet) : [];
    state.setCount = sets.length;
    if (!stop()) {
      attached = true;
      ac = await at("adapter", attachForRun(model, settings));
      if (state.adapterEntries?.length) showAdapterSettings(ac);
      log(
        `${ac.peftType} r=${ac.r} on ${targetText(ac.targetModules)}: ` +
          `${S.trainableCount(model.model).toLocaleString("en-US")} trainable parameters`,
      );
    }
    if (!stop() && ac) {
      const key = `${state.loadedKey}|${ac.peftType}|${ac.r}|${ac.targetModules}|${settings.batch}`;
      if (state.compiled.has(key)) {
        setPhase("compiling", "Compiling GPU kernels: already compiled for these settings.");
      } else {
        setPhase(
          "compiling",
          "Compiling GPU kernels…",
          "Each WGSL shader compiles the first time it runs, so one forward and backward pass " +
            "runs first: seconds on a GPU, up to a minute on a CPU rasterizer. Training is " +
            "unchanged by it, and later runs skip it.",
        );
        setBar(null);
        const tc = performance.now();
        await S.compileKernels(model.model, examples, settings.batch);
        state.compiled.add(key);
        log(`kernels compiled in ${((performance.now() - tc) / 1000).toFixed(1)} s`);
      }
    }
    if (sets.length && !stop()) await accuracyPass(model, sets, "before");
    if (!stop() && ac) {
      state.totalSteps = settings.steps;
      const trainLine = (step: number) =>
        setPhase(
          "training",
          `Training: step ${step}/${settings.steps}`,
          `Each step: forward and backward over ${settings.batch} sequences, then an AdamW ` +
            "update. Steps/s and time left count from step 1's end.",
        );
      trainLine(0);
      ui.stepCounter.textContent = `0 / ${settings.steps}`;
      renderChart();
      let tFirst = 0;
      const every = Math.max(1, Math.ceil(settings.steps / (VALIDATION_PASSES + 1)));
      const r = await S.trainAdapters(model.model, examples, settings, {
        shouldStop: stop,
        validateEvery: every,
        onValidationStart: (step) => {
          setPhase(
            "validating",
            step === 0
              ? "Validation loss before training…"
              : `Validation loss (eval_loss) at step ${step}/${settings.steps}…`,
            `Teacher-forced loss on ${validation.length} held-out validation examples.`,
          );
        },
        onValidation: (step, loss) => {
          state.validation.push([step, loss]);
          log(`step ${step}: eval_loss ${loss.toFixed(4)}`);
          showValidation();
          renderChart();
          if (step > 0 && step < settings.steps) trainLine(step);
        },
        onStep: (p) => {
          const now = performance.now();
          if (p.step === 1) tFirst = now;
          state.step = p.step;
          state.losses.push(p.loss);
          if (state.phase !== "training") trainLine(p.step);
          else ui.phase.textContent = `Training: step ${p.step}/${p.totalSteps}`;
          setBar(p.step, p.totalSteps);
          ui.stepCounter.textContent = `${p.step} / ${p.totalSteps}`;
          ui.lossValue.textContent = p.loss.toFixed(4);
          ui.tokensPerSecond.textContent = p.tokensPerSecond.toFixed(0);
          // Rates from step 1's end: the first step also allocates the optimizer state.
          if (p.step >= 2) {
            const rate = (p.step - 1) / ((now - tFirst) / 1000);
            ui.stepsPerSecond.textContent = rate >= 10 ? rate.toFixed(0) : rate.toFixed(2);
            ui.eta.textContent = elapsedText((p.totalSteps - p.step) / rate);
          }
          renderChart();
        },
      }, validation);
      state.validationBefore = r.validationBefore;
      state.validationAfter = r.validationAfter;
      log(
        `trained ${r.steps} steps${r.stopped ? " (stopped)" : ""}; loss ${
          r.losses[0]?.toFixed(4)
        } → ${r.losses.at(-1)?.toFixed(4)}`,
      );
      if (r.steps > 0) {
        trained = true;
        ui.eta.textContent = r.stopped ? "–" : "0 s";
        const started = state.adapterEntries?.length ? " (from the chosen adapter)" : "";
        await keepGood(model, ac, `${describe(ac)}, trained ${r.steps} steps${started}`);
      }
    }
    if (sets.length && trained && !stop()) await accuracyPass(model, sets, "after");
    finish(performance.now() - t0);
  } catch (e) {
    showError(e);
  } finally {
    if (lm && attached && !trained) {
      // Nothing was trained: the model gets back the adapter Download offers, so Ask and
      // Download speak of the same one.
      await restoreGood(lm).catch((e) => showError(e));
    }
    setBusy(false);
    renderPhaseList();
  }
}

/** The end of a run: the phase line, and a note on what was measured and what was skipped. */
function finish(ms: number): void {
  const stopped = state.stopRequested;
  const notes: string[] = [];
  const perSet = Math.max(0, Math.floor(Number(ui.evalPerSet.value) || 0));
  if (perSet === 0) say(ui.accuracyNote, "Held-out accuracy skipped: 0 questions per set.");
  else if (state.setCount === 0) say(ui.accuracyNote, "No held-out test sets on this server.");
  const sets = state.setCount;
  const measured = (s: AccuracySummary | null) => s?.rows.length ?? 0;
  if (stopped) {
    const v = state.visited;
    if (v.has("evaluating-before") && measured(state.before) < sets) {
      notes.push(
        `Held-out accuracy before training: ${measured(state.before)} of ${sets} sets measured.`,
      );
    }
    const skipped: string[] = [];
    if (!v.has("compiling")) skipped.push("kernel compilation");
    if (sets && !v.has("evaluating-before")) skipped.push("accuracy before training");
    if (state.step === 0) skipped.push("training");
    if (sets && !v.has("evaluating-after")) skipped.push("accuracy after training");
    if (v.has("evaluating-after") && measured(state.after) < sets) {
      notes.push(
        `Held-out accuracy after training: ${measured(state.after)} of ${sets} sets measured.`,
      );
    }
    if (skipped.length) notes.push(`Skipped: ${skipped.join(", ")}.`);
    notes.push(
      state.step > 0
        ? `Training stopped at step ${state.step}/${state.totalSteps}; Download saves that adapter.`
        : state.good
        ? `Nothing was trained: the previous adapter (${state.good.what}) is back on the model, ` +
          "and Download saves it."
        : "Nothing was trained: the model has no adapter.",
    );
    setPhase(
      "stopped",
      `Stopped${state.step ? ` at step ${state.step}/${state.totalSteps}` : ""}.`,
      "The note below says what was measured and what was skipped.",
    );
    ui.runNote.textContent = notes.join(" ");
    ui.runNote.hidden = false;
    renderChart();
    log(`stopped: ${notes.join(" ")}`);
  } else {
    const a = state.before?.average, b = state.after?.average;
    const acc = a != null && b != null
      ? ` Held-out accuracy ${a.toFixed(1)}% → ${b.toFixed(1)}%.`
      : "";
    setPhase(
      "done",
      `Done: ${state.step} steps in ${elapsedText(ms / 1000)}.${acc}`,
      "Ask the model below, or download the adapter.",
    );
  }
}

async function loadOnly(): Promise<void> {
  setBusy(true);
  let lm: S.LoadedModel | null = null;
  let replaced = false;
  const before = state.loaded;
  try {
    lm = await at("model", ensureModel());
    // The last run's chart and table describe another model or adapter from here on.
    if (lm !== before || state.adapterEntries?.length) resetRun();
    if (state.adapterEntries?.length) {
      const seed = Number(ui.seed.value) || 0;
      replaced = true;
      const ac = await at("adapter", async () => {
        const folder = fileFolder(state.adapterEntries!, "adapter");
        const ad = await readAdapterFolder(folder);
        return { ...await S.attachLoaded(lm!.model, ad, seed), baseModel: lm!.baseModel };
      });
      await keepGood(lm, ac, `${describe(ac)}, loaded from the adapter folder`);
      replaced = false;
      showAdapterSettings(ac);
      say(ui.adapterStatus, `Loaded: ${describe(ac)} on ${targetText(ac.targetModules)}.`, "ok");
    }
    if (!state.running) setPhase("ready", "Model loaded: press Train, or ask it a question.");
  } catch (e) {
    showError(e, "model");
    // A failed adapter load must not leave the model without the adapter Download offers.
    if (lm && replaced) await restoreGood(lm).catch(() => {});
  } finally {
    setBusy(false);
  }
}

async function ask(): Promise<void> {
  const text = ui.prompt.value;
  say(ui.askError, "");
  if (text.trim() === "") {
    say(ui.askError, "Write an instruction first: the model answers the text above.", "error");
    ui.prompt.focus();
    return;
  }
  setBusy(true);
  ui.answer.textContent = "…";
  try {
    const lm = await at("ask", ensureModel());
    const beams = Number(ui.decoding.value) || 1;
    const reply = await at("ask", S.answer(lm.model, lm.tok, text, { beams }));
    state.answer = reply;
    ui.answer.textContent = reply === "" ? "(empty answer)" : reply;
    const which = state.good ? state.good.what : "no adapter";
    ui.answer.title = `${beams === 1 ? "greedy" : `${beams} beams`}, ${which}`;
    log(`answer (${beams === 1 ? "greedy" : `${beams} beams`}, ${which}): ${reply}`);
  } catch (e) {
    ui.answer.textContent = "";
    showError(e, "ask");
  } finally {
    setBusy(false);
  }
}

function saveBlob(data: BlobPart, name: string, type: string): void {
  const url = URL.createObjectURL(new Blob([data], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.style.display = "none";
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function download(): void {
  const g = state.good;
  if (!g) return;
  try {
    saveBlob(g.files.configJson, "adapter_config.json", "application/json");
    saveBlob(g.files.safetensors, "adapter_model.safetensors", "application/octet-stream");
    state.downloads++;
    const kb = (g.files.safetensors.byteLength / 1024).toFixed(0);
    say(
      ui.downloadStatus,
      `Saved adapter_config.json and adapter_model.safetensors (${kb} KiB): ${g.what}.`,
      "ok",
    );
    log(`saved the adapter (${g.files.safetensors.byteLength} bytes): ${g.what}`);
  } catch (e) {
    showError(e, "download");
  }
}

// ---------------------------------------------------------------------------------------------
// Guidance for the Ask box

/** Warns about words the embedded model's vocabulary lacks (its answers to them are noise). */
function updateVocabWarning(): void {
  const embedded = state.loaded && state.loadedKey === "embedded"
    ? state.loaded.tok
    : ui.modelEmbedded.checked
    ? state.embeddedTok
    : null;
  const words = embedded ? S.wordsOutsideVocabulary(embedded, ui.prompt.value) : [];
  ui.vocabWarning.textContent = words.length
    ? `Not in the embedded model's vocabulary: ${
      words.slice(0, 6).map((w) => `“${w}”`).join(", ")
    }${words.length > 6 ? " …" : ""}. It knows only its invented world's words, so expect ` +
      "nonsense; try a test question below."
    : "";
}

async function loadGuidance(): Promise<void> {
  const [tokText, cfgText] = await Promise.all([
    fetchText(new URL(EMBEDDED_MODEL + "/tokenizer.json", site)),
    fetchText(new URL(EMBEDDED_MODEL + "/tokenizer_config.json", site)),
  ]);
  if (tokText) {
    state.embeddedTok = new Tokenizer({
      tokenizer: JSON.parse(tokText),
      config: cfgText ? JSON.parse(cfgText) : undefined,
    });
  }
  // Example prompts: the first test question of each set, which the embedded model learns to
  // answer (they are its held-out facts, asked in each set's format).
  const sets = await S.fetchHeldOutSets(dataRoot, 1);
  for (const s of sets) {
    const q = s.records[0]?.instruction;
    if (!q) continue;
    const b = document.createElement("button");
    b.type = "button";
    b.className = "chip";
    b.textContent = titleOf(s.dataset);
    b.title = q;
    b.addEventListener("click", () => {
      ui.prompt.value = q;
      say(ui.askError, "");
      updateVocabWarning();
      ui.prompt.focus();
    });
    ui.examples.appendChild(b);
  }
  ui.examples.hidden = sets.length === 0;
  const first = sets[0]?.records[0]?.instruction;
  if (first && ui.prompt.value === ui.prompt.defaultValue) ui.prompt.value = first;
  updateVocabWarning();
}

// ---------------------------------------------------------------------------------------------
// Folders: chosen with the inputs or dropped

async function walkEntry(entry: FileSystemEntry, out: FolderEntry[]): Promise<void> {
  if (entry.isFile) {
    const file = await new Promise<File>((res, rej) =>
      (entry as FileSystemFileEntry).file(res, rej)
    );
    out.push({ path: entry.fullPath.replace(/^\/+/, ""), file });
  } else if (entry.isDirectory) {
    const reader = (entry as FileSystemDirectoryEntry).createReader();
    for (;;) {
      const batch = await new Promise<FileSystemEntry[]>((res, rej) =>
        reader.readEntries(res, rej)
      );
      if (batch.length === 0) break;
      for (const e of batch) await walkEntry(e, out);
    }
  }
}

function setAdapterEntries(entries: FolderEntry[] | null, source: FileSource = "chosen"): void {
  state.adapterEntries = entries;
  const text = entries
    ? folderSummary("adapter", entries.map((e) => e.path), source)
    : "No adapter folder: training starts fresh.";
  say(ui.adapterStatus, text);
  // A dropped folder replaces a picked one: the input must not keep showing the old pick.
  if (source === "dropped") ui.adapterFolder.value = "";
  refreshButtons();
}

function setModelEntries(entries: FolderEntry[] | null, source: FileSource = "chosen"): void {
  state.modelEntries = entries;
  state.modelSource = source;
  if (entries) ui.modelLocal.checked = true;
  if (source === "dropped") ui.modelFolder.value = "";
  say(
    ui.modelFolderStatus,
    entries ? folderSummary("model", entries.map((e) => e.path), source) : "",
  );
  say(ui.modelInfo, "");
}

function acceptEntries(entries: FolderEntry[]): void {
  const isAdapter = entries.some((e) => /(^|\/)adapter_config\.json$/.test(e.path));
  const isModel = entries.some((e) => /(^|\/)config\.json$/.test(e.path) && !isAdapter);
  if (isAdapter) {
    setAdapterEntries(entries, "dropped");
    say(ui.dropStatus, ui.adapterStatus.textContent ?? "");
  } else if (isModel) {
    setModelEntries(entries, "dropped");
    say(ui.dropStatus, ui.modelFolderStatus.textContent ?? "");
  } else {
    say(
      ui.dropStatus,
      `The ${entries.length} dropped file${entries.length === 1 ? " is" : "s are"} neither a ` +
        "model folder (config.json) nor an adapter folder (adapter_config.json).",
      "error",
    );
  }
}

function setUpDrop(): void {
  const z = ui.dropZone;
  z.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    if (!state.busy) z.classList.add("over");
  });
  z.addEventListener("dragleave", () => z.classList.remove("over"));
  z.addEventListener("drop", async (ev) => {
    ev.preventDefault();
    z.classList.remove("over");
    if (state.busy) {
      say(ui.dropStatus, "Not now: the model and adapter are locked while a job runs.", "error");
      return;
    }
    const items = [...(ev.dataTransfer?.items ?? [])];
    const out: FolderEntry[] = [];
    try {
      for (const it of items) {
        const entry = it.webkitGetAsEntry?.();
        if (entry) await walkEntry(entry, out);
        else {
          const f = it.getAsFile();
          if (f) out.push({ path: f.name, file: f });
        }
      }
      acceptEntries(out);
    } catch (e) {
      say(ui.dropStatus, `Could not read the dropped files: ${(e as Error).message}`, "error");
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Wiring

ui.modelFolder.addEventListener("change", () => {
  const files = ui.modelFolder.files;
  setModelEntries(files && files.length ? entriesOfFileList(files) : null);
  say(ui.dropStatus, "");
});
ui.adapterFolder.addEventListener("change", () => {
  const files = ui.adapterFolder.files;
  setAdapterEntries(files && files.length ? entriesOfFileList(files) : null);
  say(ui.dropStatus, "");
});
ui.adapterClear.addEventListener("click", () => {
  ui.adapterFolder.value = "";
  setAdapterEntries(null);
  say(ui.dropStatus, "");
});
for (const r of [ui.modelEmbedded, ui.modelLocal]) {
  r.addEventListener("change", () => {
    say(ui.modelInfo, "");
    const e = state.modelEntries;
    if (e) {
      const summary = folderSummary("model", e.map((x) => x.path), state.modelSource);
      say(
        ui.modelFolderStatus,
        ui.modelEmbedded.checked
          ? `${summary.split(":")[0]}: not used while the embedded model is selected.`
          : summary,
      );
    }
    updateVocabWarning();
  });
}
ui.trainFile.addEventListener("change", () => {
  const f = ui.trainFile.files?.[0];
  say(ui.trainFileStatus, f ? `${f.name}: read when you press Train.` : "");
});
ui.settings.addEventListener("input", () => say(ui.formError, ""));
ui.form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (!state.busy) void runTraining();
});
ui.stopButton.addEventListener("click", () => {
  state.stopRequested = true;
  refreshButtons();
  ui.phaseDetail.textContent = "Stopping at the end of the current step or test set…";
  log("stop requested");
});
ui.loadButton.addEventListener("click", () => void loadOnly());
// Switching method moves an untouched learning rate to that method's demo default (HiRA needs
// about 10x LoRA's; see DEMO_LR).
ui.peftType.addEventListener("change", () => {
  const defaults = Object.values(S.DEMO_LR).map(String);
  if (defaults.includes(ui.lr.value.trim())) {
    ui.lr.value = String(ui.peftType.value === "lora" ? S.DEMO_LR.lora : S.DEMO_LR.hira);
  }
});
ui.prompt.addEventListener("input", () => {
  say(ui.askError, "");
  updateVocabWarning();
});
ui.askForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (!state.busy) void ask();
});
ui.downloadButton.addEventListener("click", () => download());
ui.logScale.addEventListener("change", () => renderChart());
// The chart is drawn at its box's pixel width: redraw when the box changes size.
let chartWidth = 0;
new ResizeObserver(() => {
  const w = Math.floor(ui.lossChart.clientWidth);
  if (w !== chartWidth) {
    chartWidth = w;
    renderChart();
  }
}).observe(ui.lossChart);
setUpDrop();

/** What tests/browser/browser_test.ts reads and calls. */
const hiraTest = {
  /** A JSON snapshot of the page's state. */
  state: () => ({
    phase: state.phase,
    busy: state.busy,
    gpu: state.gpuMessage,
    isCpuAdapter: state.gpu?.isCpuAdapter ?? null,
    step: state.step,
    totalSteps: state.totalSteps,
    losses: [...state.losses],
    validation: state.validation.map((v) => [...v]),
    validationBefore: state.validationBefore,
    validationAfter: state.validationAfter,
    before: state.before,
    after: state.after,
    answer: state.answer,
    error: state.error,
    downloads: state.downloads,
    adapterConfig: state.good?.config ?? null,
  }),
  /** Next-token logits after BOS + prompt with the current model and adapters. */
  logits: async (prompt: string): Promise<{ ids: number[]; logits: number[] }> => {
    const lm = await ensureModel();
    const r = await S.promptLogits(lm.model, lm.tok, prompt);
    return { ids: r.ids, logits: Array.from(r.logits) };
  },
  /**
   * Runs a matmul kernel family (default the subgroup one, which "auto" never picks on a CPU
   * adapter) on the page's GPU against the CPU reference: see S.matmulCheck.
   */
  matmulCheck: (variant: MatmulVariant = "subgroup"): Promise<S.MatmulCheckReport> => {
    if (!state.gpu) throw new Error(`no GPU: ${state.gpuMessage}`);
    return S.matmulCheck(state.gpu, variant);
  },
};
(globalThis as unknown as { hiraTest: typeof hiraTest }).hiraTest = hiraTest;

refreshButtons();
void initGpu();
void loadGuidance().catch((e) => log(`examples unavailable: ${(e as Error).message}`));
