/// <reference lib="dom" />
/**
 * The web page: pick a model (the embedded tiny one or a local Hugging Face folder) and
 * optionally an adapter to start from, choose HiRA or LoRA and their settings, train on the
 * browser's WebGPU with a live loss chart, compare held-out accuracy before and after, ask the
 * model a question and download the adapter as a PEFT folder's two files.
 *
 * All engine work goes through ./session.ts (lib/ underneath); this file is DOM only.
 * `window.hiraTest` exposes the state, a logits probe and a matmul kernel check for
 * tests/browser_test.ts.
 * @module
 */
import { createGpu, type Gpu } from "../lib/gpu.ts";
import type { MatmulVariant } from "../lib/ops/matmul.ts";
import { lineChart } from "../lib/svg.ts";
import type { AccuracySummary } from "../lib/evaluate.ts";
import { baseParameterCount } from "../lib/config.ts";
import { type AdapterConfig, targetText } from "../lib/peft.ts";
import type { TrainExample } from "../lib/data.ts";
import {
  entriesOfFileList,
  fileFolder,
  type FolderEntry,
  readAdapterFolder,
  urlFolder,
} from "../lib/browser_io.ts";
import * as S from "./session.ts";

/** Where the page is in its work (read by the browser test). */
type Phase =
  | "checking-gpu"
  | "no-webgpu"
  | "ready"
  | "loading"
  | "evaluating-before"
  | "training"
  | "evaluating-after"
  | "done"
  | "stopped"
  | "error";

const EMBEDDED_MODEL = "data_file/tiny/model";
const VALIDATION_EXAMPLES = 16;

const site = new URL("/", location.href);
const dataRoot = new URL("data_file/", site);

function el<T extends HTMLElement = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`page is missing #${id}`);
  return e as T;
}

const ui = {
  gpuStatus: el("gpu-status"),
  modelEmbedded: el<HTMLInputElement>("model-embedded"),
  modelLocal: el<HTMLInputElement>("model-local"),
  modelFolder: el<HTMLInputElement>("model-folder"),
  adapterFolder: el<HTMLInputElement>("adapter-folder"),
  adapterStatus: el("adapter-status"),
  adapterClear: el<HTMLButtonElement>("adapter-clear"),
  dropZone: el("drop-zone"),
  dropStatus: el("drop-status"),
  loadButton: el<HTMLButtonElement>("load-button"),
  modelInfo: el("model-info"),
  form: el<HTMLFormElement>("train-form"),
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
  formError: el("form-error"),
  trainButton: el<HTMLButtonElement>("train-button"),
  stopButton: el<HTMLButtonElement>("stop-button"),
  phase: el("phase"),
  stepCounter: el("step-counter"),
  lossValue: el("loss-value"),
  tokensPerSecond: el("tokens-per-second"),
  valLoss: el("val-loss"),
  lossChart: el("loss-chart"),
  accuracy: el("accuracy"),
  askForm: el<HTMLFormElement>("ask-form"),
  prompt: el<HTMLTextAreaElement>("prompt"),
  decoding: el<HTMLSelectElement>("decoding"),
  askButton: el<HTMLButtonElement>("ask-button"),
  answer: el<HTMLOutputElement>("answer"),
  downloadButton: el<HTMLButtonElement>("download-button"),
  log: el("log"),
};

const state = {
  phase: "checking-gpu" as Phase,
  gpu: null as Gpu | null,
  gpuMessage: "",
  busy: false,
  stopRequested: false,
  loaded: null as S.LoadedModel | null,
  loadedKey: "",
  modelEntries: null as FolderEntry[] | null,
  adapterEntries: null as FolderEntry[] | null,
  /** Config of the adapters on the model (trained or loaded), for the download. */
  adapterConfig: null as AdapterConfig | null,
  step: 0,
  totalSteps: 0,
  losses: [] as number[],
  validationBefore: NaN,
  validationAfter: NaN,
  before: null as AccuracySummary | null,
  after: null as AccuracySummary | null,
  answer: "",
  error: "",
  downloads: 0,
  /** Tokenized default data, valid for the model (tokenizer) it was made with. */
  trainCache: null as { key: string; examples: TrainExample[] } | null,
  validationCache: null as { key: string; examples: TrainExample[] } | null,
};

function log(msg: string): void {
  const t = new Date().toLocaleTimeString();
  ui.log.textContent += `[${t}] ${msg}\n`;
  ui.log.scrollTop = ui.log.scrollHeight;
}

function setPhase(p: Phase, text: string): void {
  state.phase = p;
  ui.phase.textContent = text;
  document.body.dataset.phase = p;
}

function refreshButtons(): void {
  const noGpu = state.gpu === null;
  ui.trainButton.disabled = noGpu || state.busy;
  ui.loadButton.disabled = noGpu || state.busy;
  ui.askButton.disabled = noGpu || state.busy;
  ui.stopButton.disabled = !state.busy;
  ui.downloadButton.disabled = noGpu || state.busy || state.adapterConfig === null;
}

function showError(e: unknown): void {
  const msg = e instanceof Error ? e.message : String(e);
  state.error = msg;
  ui.formError.textContent = msg;
  setPhase("error", `Error: ${msg}`);
  log(`error: ${msg}`);
  console.error(e);
}

// ---------------------------------------------------------------------------------------------
// WebGPU

async function initGpu(): Promise<void> {
  const gpuApi = (navigator as Navigator & { gpu?: GPU }).gpu;
  const fail = (msg: string) => {
    state.gpuMessage = msg;
    ui.gpuStatus.textContent = msg;
    ui.gpuStatus.className = "notice error";
    setPhase("no-webgpu", "Training is unavailable: this browser has no usable WebGPU.");
    log(msg);
    refreshButtons();
  };
  if (!gpuApi) {
    return fail(
      "WebGPU is not available in this browser (navigator.gpu is missing), so nothing can be " +
        "trained here. Use a current Chrome or Edge over http://127.0.0.1 or https; on a machine " +
        "without a GPU, Chromium needs --enable-unsafe-webgpu.",
    );
  }
  let adapter: GPUAdapter | null = null;
  try {
    adapter = await gpuApi.requestAdapter({ powerPreference: "high-performance" });
  } catch (e) {
    return fail(`WebGPU failed: requestAdapter() threw ${(e as Error).message}`);
  }
  if (!adapter) {
    return fail(
      "WebGPU is present but found no adapter (navigator.gpu.requestAdapter() returned null), " +
        "so nothing can be trained here. The GPU may be blocklisted or WebGPU disabled; on a " +
        "machine without a GPU, start Chromium with --enable-unsafe-webgpu.",
    );
  }
  try {
    state.gpu = await createGpu({ kernelsUrl: new URL("kernels/", site) });
  } catch (e) {
    return fail(`WebGPU device creation failed: ${(e as Error).message}`);
  }
  const g = state.gpu;
  state.gpuMessage = `WebGPU adapter: ${g.description}` +
    (g.isCpuAdapter ? " (a CPU rasterizer: correct but slow; keep runs small)" : "");
  ui.gpuStatus.textContent = state.gpuMessage;
  ui.gpuStatus.className = "notice ok";
  log(state.gpuMessage);
  setPhase("ready", "Ready. Choose settings and press Train.");
  refreshButtons();
}

// ---------------------------------------------------------------------------------------------
// Model and adapter input

function modelKey(): string {
  if (ui.modelEmbedded.checked) return "embedded";
  const e = state.modelEntries;
  return e ? `local:${e.length}:${e.map((x) => x.path).join("|")}` : "local:none";
}

async function ensureModel(): Promise<S.LoadedModel> {
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
  setPhase("loading", `Loading ${folder.name}…`);
  const t0 = performance.now();
  // The old model's buffers go back to the pool before the new one loads.
  if (state.loaded) state.loaded.model.release();
  state.loaded = null;
  state.adapterConfig = null;
  const lm = await S.loadModelFolder(state.gpu, folder, baseModel);
  state.loaded = lm;
  state.loadedKey = key;
  const c = lm.model.config;
  const info = `${folder.name}: ${c.numLayers} layers, hidden ${c.hiddenSize}, vocabulary ` +
    `${c.vocabSize}, ${baseParameterCount(c).toLocaleString("en-US")} parameters ` +
    `(loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s)`;
  ui.modelInfo.textContent = info;
  log(info);
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
  if (file) return S.trainingExamples(await file.text(), file.name, lm.tok);
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

function renderChart(): void {
  if (state.losses.length === 0) {
    ui.lossChart.textContent = "";
    return;
  }
  ui.lossChart.innerHTML = lineChart({
    title: "Training loss",
    xLabel: "step",
    yLabel: "loss",
    series: [{ name: "train loss", points: state.losses.map((l, i) => [i + 1, l] as const) }],
    width: 640,
    height: 320,
  });
}

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
  for (const h of ["dataset", "questions", "before", "after"]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = h;
    head.appendChild(th);
  }
  const body = table.createTBody();
  const names = [...new Set([...(b?.rows ?? []), ...(a?.rows ?? [])].map((r) => r.dataset))];
  const pct = (s: AccuracySummary | null, d: string) => {
    const r = s?.rows.find((x) => x.dataset === d);
    return r ? `${r.accuracy.toFixed(1)} (${r.correct}/${r.n})` : "–";
  };
  for (const d of names) {
    const row = body.insertRow();
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = d;
    row.appendChild(th);
    const n = (a ?? b)!.rows.find((x) => x.dataset === d)?.n ??
      b?.rows.find((x) => x.dataset === d)?.n ?? 0;
    for (const v of [String(n), pct(b, d), pct(a, d)]) row.insertCell().textContent = v;
  }
  if (names.length > 1) {
    const row = body.insertRow();
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = "average";
    row.appendChild(th);
    const avg = (s: AccuracySummary | null) => (s?.average != null ? s.average.toFixed(1) : "–");
    for (const v of ["", avg(b), avg(a)]) row.insertCell().textContent = v;
  }
  ui.accuracy.appendChild(table);
}

function resetRun(): void {
  state.losses = [];
  state.step = 0;
  state.totalSteps = 0;
  state.validationBefore = NaN;
  state.validationAfter = NaN;
  state.before = null;
  state.after = null;
  state.error = "";
  ui.formError.textContent = "";
  ui.stepCounter.textContent = "0 / 0";
  ui.lossValue.textContent = "–";
  ui.tokensPerSecond.textContent = "–";
  ui.valLoss.textContent = "–";
  renderChart();
  renderAccuracy();
}

// ---------------------------------------------------------------------------------------------
// Actions

async function runTraining(): Promise<void> {
  let settings: S.TrainSettings;
  try {
    settings = formSettings();
  } catch (e) {
    ui.formError.textContent = (e as Error).message;
    return;
  }
  const perSet = Math.max(0, Math.floor(Number(ui.evalPerSet.value) || 0));
  state.busy = true;
  state.stopRequested = false;
  refreshButtons();
  resetRun();
  const stop = () => state.stopRequested;
  try {
    const lm = await ensureModel();
    state.adapterConfig = null;
    const ac = await attachForRun(lm, settings);
    if (state.adapterEntries?.length) showAdapterSettings(ac);
    log(
      `${ac.peftType} r=${ac.r} on ${targetText(ac.targetModules)}: ` +
        `${S.trainableCount(lm.model).toLocaleString("en-US")} trainable parameters`,
    );
    const examples = await trainingData(lm);
    const validation = await validationData(lm);
    const sets = perSet > 0 ? await S.fetchHeldOutSets(dataRoot, perSet) : [];
    if (sets.length && !stop()) {
      setPhase("evaluating-before", "Measuring held-out accuracy before training…");
      state.before = await S.heldOutAccuracy(lm.model, lm.tok, sets, {
        shouldStop: stop,
        onSet: (
          d,
          i,
          n,
        ) => (ui.phase.textContent = `Accuracy before training: ${d} (${i + 1}/${n})…`),
      });
      renderAccuracy();
      log(`accuracy before: ${state.before.average?.toFixed(1) ?? "–"}%`);
    }
    if (!stop()) {
      setPhase("training", `Training ${settings.steps} steps on ${examples.length} examples…`);
      state.totalSteps = settings.steps;
      ui.stepCounter.textContent = `0 / ${settings.steps}`;
      const r = await S.trainAdapters(lm.model, examples, settings, {
        shouldStop: stop,
        onStep: (p) => {
          state.step = p.step;
          state.losses.push(p.loss);
          ui.stepCounter.textContent = `${p.step} / ${p.totalSteps}`;
          ui.lossValue.textContent = p.loss.toFixed(4);
          ui.tokensPerSecond.textContent = p.tokensPerSecond.toFixed(0);
          renderChart();
        },
      }, validation);
      state.adapterConfig = ac;
      state.validationBefore = r.validationBefore;
      state.validationAfter = r.validationAfter;
      if (Number.isFinite(r.validationBefore)) {
        ui.valLoss.textContent = `${r.validationBefore.toFixed(3)} → ${
          r.validationAfter.toFixed(3)
        }`;
      }
      log(
        `trained ${r.steps} steps${r.stopped ? " (stopped)" : ""}; loss ${
          r.losses[0]?.toFixed(4)
        } → ${r.losses.at(-1)?.toFixed(4)}; validation loss ${r.validationBefore.toFixed(4)} → ` +
          `${r.validationAfter.toFixed(4)}`,
      );
    }
    if (sets.length && !stop()) {
      setPhase("evaluating-after", "Measuring held-out accuracy after training…");
      state.after = await S.heldOutAccuracy(lm.model, lm.tok, sets, {
        shouldStop: stop,
        onSet: (
          d,
          i,
          n,
        ) => (ui.phase.textContent = `Accuracy after training: ${d} (${i + 1}/${n})…`),
      });
      renderAccuracy();
      log(`accuracy after: ${state.after.average?.toFixed(1) ?? "–"}%`);
    }
    if (stop()) setPhase("stopped", `Stopped after ${state.step} steps.`);
    else {setPhase(
        "done",
        `Done: ${state.step} steps. Ask the model below or download the adapter.`,
      );}
  } catch (e) {
    showError(e);
  } finally {
    state.busy = false;
    refreshButtons();
  }
}

async function loadOnly(): Promise<void> {
  state.busy = true;
  refreshButtons();
  try {
    const lm = await ensureModel();
    if (state.adapterEntries?.length) {
      const ac = await attachForRun(lm, formSettings());
      state.adapterConfig = ac;
      showAdapterSettings(ac);
    }
    setPhase("ready", "Model loaded. Press Train, or ask it a question.");
  } catch (e) {
    showError(e);
  } finally {
    state.busy = false;
    refreshButtons();
  }
}

async function ask(): Promise<void> {
  state.busy = true;
  refreshButtons();
  ui.answer.textContent = "…";
  try {
    const lm = await ensureModel();
    const beams = Number(ui.decoding.value) || 1;
    const text = await S.answer(lm.model, lm.tok, ui.prompt.value, { beams });
    state.answer = text;
    ui.answer.textContent = text === "" ? "(empty answer)" : text;
    log(`answer (${beams === 1 ? "greedy" : `${beams} beams`}): ${text}`);
  } catch (e) {
    ui.answer.textContent = "";
    showError(e);
  } finally {
    state.busy = false;
    refreshButtons();
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

async function download(): Promise<void> {
  const lm = state.loaded, ac = state.adapterConfig;
  if (!lm || !ac) return;
  try {
    const files = await S.adapterFiles(lm.model, ac);
    saveBlob(files.configJson, "adapter_config.json", "application/json");
    saveBlob(files.safetensors, "adapter_model.safetensors", "application/octet-stream");
    state.downloads++;
    log(
      `saved adapter_config.json and adapter_model.safetensors (${files.safetensors.byteLength} ` +
        `bytes): put them in one folder for deno task eval --ckpt=FOLDER`,
    );
  } catch (e) {
    showError(e);
  }
}

// ---------------------------------------------------------------------------------------------
// Drag and drop of folders

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

function setAdapterEntries(entries: FolderEntry[] | null): void {
  state.adapterEntries = entries;
  ui.adapterClear.disabled = entries === null;
  ui.adapterStatus.textContent = entries
    ? `Adapter ${fileFolder(entries, "adapter").name} (${entries.length} files): ` +
      "Load and Train start from it."
    : "No adapter: training starts fresh.";
}

function acceptEntries(entries: FolderEntry[], from: string): void {
  const isAdapter = entries.some((e) => /(^|\/)adapter_config\.json$/.test(e.path));
  const isModel = entries.some((e) => /(^|\/)config\.json$/.test(e.path) && !isAdapter);
  if (isAdapter) {
    setAdapterEntries(entries);
    ui.dropStatus.textContent =
      `Adapter ${from} (${entries.length} files): training starts from it.`;
  } else if (isModel) {
    state.modelEntries = entries;
    ui.modelLocal.checked = true;
    ui.dropStatus.textContent = `Model ${from} (${entries.length} files).`;
  } else {
    ui.dropStatus.textContent =
      `${from}: neither a model folder (config.json) nor an adapter folder (adapter_config.json).`;
  }
}

function setUpDrop(): void {
  const z = ui.dropZone;
  z.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    z.classList.add("over");
  });
  z.addEventListener("dragleave", () => z.classList.remove("over"));
  z.addEventListener("drop", async (ev) => {
    ev.preventDefault();
    z.classList.remove("over");
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
      acceptEntries(out, "dropped");
    } catch (e) {
      ui.dropStatus.textContent = `Could not read the dropped files: ${(e as Error).message}`;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Wiring

ui.modelFolder.addEventListener("change", () => {
  const files = ui.modelFolder.files;
  state.modelEntries = files && files.length ? entriesOfFileList(files) : null;
  if (state.modelEntries) ui.modelLocal.checked = true;
});
ui.adapterFolder.addEventListener("change", () => {
  const files = ui.adapterFolder.files;
  setAdapterEntries(files && files.length ? entriesOfFileList(files) : null);
});
ui.adapterClear.addEventListener("click", () => {
  ui.adapterFolder.value = "";
  setAdapterEntries(null);
});
ui.form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (!state.busy) void runTraining();
});
ui.stopButton.addEventListener("click", () => {
  state.stopRequested = true;
  ui.phase.textContent = "Stopping after the current step…";
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
ui.askForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (!state.busy) void ask();
});
ui.downloadButton.addEventListener("click", () => void download());
setUpDrop();

/** What tests/browser_test.ts reads and calls. */
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
    validationBefore: state.validationBefore,
    validationAfter: state.validationAfter,
    before: state.before,
    after: state.after,
    answer: state.answer,
    error: state.error,
    downloads: state.downloads,
    adapterConfig: state.adapterConfig,
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
// Suggest a real held-out question when the data is there.
void fetchText(new URL("llm_adapt/boolq/test.json", dataRoot)).then((t) => {
  const first = t ? (JSON.parse(t) as { instruction?: string }[])[0]?.instruction : undefined;
  if (first && ui.prompt.value === ui.prompt.defaultValue) ui.prompt.value = first;
}).catch(() => {});
