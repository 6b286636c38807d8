/**
 * The web page (web/, serve.ts) and its browser-side I/O (lib/io/browser_io.ts).
 *
 * - Under Deno: a model folder read from Blobs loads the same weights as the Deno loader; an
 *   adapter trained by web/session.ts, encoded as PEFT files and read back from Blobs gives the
 *   same logits; the server's path mapping refuses everything outside the page, kernels/ and
 *   data_file/.
 * - In real headless Chromium (SwiftShader WebGPU): `deno task serve --port=0` is started; the
 *   page runs matmul's subgroup kernel (SwiftShader's device has subgroups, of size 4; Deno's
 *   adapter here has none) on every layout against the f64 reference, then trains HiRA on the
 *   embedded tiny model for a few steps (the loss must go down), measures held-out accuracy
 *   before and after, answers a prompt, and its Download button saves the adapter; Deno then loads that adapter with lib/ onto the embedded model and its
 *   logits for a fixed prompt must equal the browser's (rtol 1e-3). A second launch without
 *   --enable-unsafe-webgpu must show the "no adapter" message with training disabled.
 *   Screenshots go to test_output/. Playwright needs `-A` under Deno (it probes /proc/sys), so
 *   the browser is driven by this same file run as a subprocess (`--drive`), which the test's
 *   --allow-run permits.
 *
 * Without /usr/bin/chromium (or $HIRA_CHROMIUM) the browser test fails with the install hint,
 * unless HIRA_SKIP_BROWSER=1.
 * @module
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { fromFileUrl, join } from "@std/path";
import { assertClose, maxAbsDiff, testGpu } from "../_util.ts";
import { taskArgs } from "../_tasks.ts";
import {
  adapterFileBytes,
  blobSource,
  entriesOfFileList,
  fileFolder,
  type FolderEntry,
  readAdapterFolder,
  readModelFolder,
} from "../../lib/io/browser_io.ts";
import { EMBEDDED_MODEL_DIR, loadModelDir } from "../../lib/io/model_deno.ts";
import { loadTokenizer } from "../../lib/io/tokenizer_deno.ts";
import { loadAdapterDir } from "../../lib/io/peft_deno.ts";
import { isHiraError } from "../../lib/engine/errors.ts";
import type { LlamaModel } from "../../lib/model/model.ts";
import type { Tokenizer } from "../../lib/model/tokenizer.ts";
import * as S from "../../web/session.ts";
import { folderSummary, plainMessage } from "../../web/messages.ts";
import { lossChart } from "../../web/chart.ts";
import { COMMONSENSE_TASKS } from "../../lib/eval/scoring.ts";
import { splitPath } from "../../lib/train/data.ts";
import { resolveRequestPath } from "../../serve.ts";

const ROOT = fromFileUrl(new URL("../../", import.meta.url));
/** Debian's chromium; HIRA_CHROMIUM points elsewhere (another distribution's path). */
const CHROMIUM = Deno.env.get("HIRA_CHROMIUM") || "/usr/bin/chromium";
const SKIP_BROWSER = Deno.env.get("HIRA_SKIP_BROWSER") === "1";
/** Settings the browser run uses: a handful of steps on short sequences (SwiftShader is slow). */
const BROWSER_RUN = { steps: 12, batch: 8, warmup: 2, rank: 8, perSet: 1 };
/** The eight commonsense sets by their display names, in the page's order (table, examples). */
const EIGHT_SETS = [
  "BoolQ",
  "PIQA",
  "Social IQa",
  "HellaSwag",
  "WinoGrande",
  "ARC-Easy",
  "ARC-Challenge",
  "OpenBookQA",
];

async function folderEntries(dir: string, prefix = ""): Promise<FolderEntry[]> {
  const out: FolderEntry[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile) {
      out.push({ path: prefix + e.name, file: new Blob([await Deno.readFile(join(dir, e.name))]) });
    }
  }
  return out;
}

async function nextTokenLogits(
  model: LlamaModel,
  tok: Tokenizer,
  prompt: string,
): Promise<{ ids: number[]; logits: Float32Array }> {
  // Written out here (not web/session.ts's promptLogits) so the Deno side is independent.
  const ids = tok.encode((tok.bosToken ?? "") + prompt);
  const logits = await model.logits(
    Int32Array.from(ids),
    Uint32Array.of(0, ids.length),
    Int32Array.of(ids.length - 1),
  );
  return { ids, logits };
}

function base64(bytes: Uint8Array): string {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

async function firstBoolqInstruction(): Promise<string> {
  const recs = JSON.parse(
    await Deno.readTextFile(join(ROOT, "data_file/llm_adapt/boolq/test.json")),
  ) as { instruction: string }[];
  return recs[0].instruction;
}

// ---------------------------------------------------------------------------------------------
// Deno-side tests (no browser)

Deno.test("browser_io: blobSource reads ranges and refuses reads past the end", async () => {
  const src = blobSource(new Blob([Uint8Array.from([1, 2, 3, 4, 5])]), "x.bin");
  assertEquals(src.size, 5);
  assertEquals([...await src.read(1, 3)], [2, 3, 4]);
  assertEquals([...await src.read(5, 0)], []);
  await assertRejects(() => src.read(3, 3), Error, "past the end");
});

Deno.test("browser_io: fileFolder strips the common top folder and names it", async () => {
  const f = fileFolder([
    { path: "my-model/config.json", file: new Blob(["{}"]) },
    { path: "my-model/sub/a.txt", file: new Blob(["a"]) },
  ]);
  assertEquals(f.name, "my-model");
  assert(await f.has("config.json"));
  assertEquals(await f.text("sub/a.txt"), "a");
  assertEquals(await f.text("missing.json"), null);
  assertEquals(await f.bytes("missing.json"), null);
  const flat = fileFolder([{ path: "config.json", file: new Blob(["{}"]) }], "picked");
  assertEquals(flat.name, "picked");
  const files = [new File(["x"], "config.json")];
  assertEquals(entriesOfFileList(files).map((e) => e.path), ["config.json"]);
});

Deno.test("browser_io: missing model and adapter files are errors naming the file", async () => {
  const entries = await folderEntries(EMBEDDED_MODEL_DIR, "tiny/");
  const without = (name: string) => fileFolder(entries.filter((e) => !e.path.endsWith(name)));
  for (
    const [name, msg] of [["config.json", "config.json"], ["tokenizer.json", "tokenizer.json"]]
  ) {
    const err = await readModelFolder(without("/" + name)).then(() => null, (e) => e);
    assert(isHiraError(err), `expected a HiraError without ${name}`);
    assert(err.message.includes(msg), err.message);
  }
  const noWeights = await readModelFolder(without("model.safetensors")).then(() => null, (e) => e);
  assert(isHiraError(noWeights) && noWeights.message.includes("model.safetensors"));
  const noAdapter = await readAdapterFolder(fileFolder([])).then(() => null, (e) => e);
  assert(isHiraError(noAdapter) && noAdapter.message.includes("adapter_config.json"));
});

Deno.test("serve: request paths map to the page, kernels/ and data_file/ only", () => {
  assertEquals(resolveRequestPath("/"), "web/index.html");
  assertEquals(resolveRequestPath("/style.css"), "web/style.css");
  assertEquals(resolveRequestPath("/kernels/matmul.wgsl"), "kernels/matmul.wgsl");
  assertEquals(
    resolveRequestPath("/data_file/tiny/model/config.json"),
    "data_file/tiny/model/config.json",
  );
  for (
    const bad of [
      "/lib/engine/gpu.ts",
      "/deno.json",
      "/kernels",
      "/kernels/",
      "/kernels/%2e%2e/deno.json",
      "/data_file/..%2fdeno.json",
      "/data_file/.git/config",
      "/web/app.ts",
      "/kernels/%ZZ",
    ]
  ) {
    assertEquals(resolveRequestPath(bad), null, bad);
  }
});

Deno.test("web session: Blob-loaded model, trained adapter, PEFT bytes round trip", async () => {
  const gpu = await testGpu();
  const entries = await folderEntries(EMBEDDED_MODEL_DIR, "model/");
  const web = await S.loadModelFolder(gpu, fileFolder(entries), "");
  const deno = await loadModelDir(gpu, EMBEDDED_MODEL_DIR);
  const tok = await loadTokenizer(EMBEDDED_MODEL_DIR);
  const prompt = await firstBoolqInstruction();
  const a = await S.promptLogits(web.model, web.tok, prompt);
  const b = await nextTokenLogits(deno, tok, prompt);
  assertEquals(a.ids, b.ids);
  assertEquals(maxAbsDiff(a.logits, b.logits), 0, "same weights, same kernels");

  const settings = { ...S.DEFAULT_SETTINGS, steps: 2, batch: 2, warmup: 0 };
  const ac = S.attachFresh(web.model, settings, "");
  const text = await Deno.readTextFile(
    join(ROOT, "data_file/llm_adapt/commonsense_170k/train.json"),
  );
  const examples = S.trainingExamples(text, "train.json", web.tok).slice(0, 8);
  // The page compiles the kernels with one discarded pass first: training must not notice.
  await S.compileKernels(web.model, examples, settings.batch);
  const seen: number[] = [];
  const run = await S.trainAdapters(web.model, examples, settings, {
    validateEvery: 1,
    onValidation: (step) => seen.push(step),
  }, examples.slice(0, 2));
  assertEquals(run.steps, 2);
  assert(run.losses.every(Number.isFinite) && Number.isFinite(run.validationAfter));
  assertEquals(seen, [0, 1, 2], "validation before, every step, and after the last");
  assertEquals(run.validation.map(([s]) => s), [0, 1, 2]);
  S.attachFresh(deno, settings, "");
  const plain = await S.trainAdapters(deno, examples, settings, {}, examples.slice(0, 2));
  assertEquals(plain.losses, run.losses, "compileKernels changes nothing in training");
  assertEquals(plain.validationAfter, run.validationAfter);
  const trained = await S.promptLogits(web.model, web.tok, prompt);
  assert(maxAbsDiff(trained.logits, a.logits) > 1e-4, "training changed the logits");

  const files = await S.adapterFiles(web.model, ac);
  const again = adapterFileBytes(ac, []);
  assertEquals(again.configJson, files.configJson);
  const dir = fileFolder([
    { path: "ad/adapter_config.json", file: new Blob([files.configJson]) },
    { path: "ad/adapter_model.safetensors", file: new Blob([files.safetensors]) },
  ]);
  await S.attachLoaded(deno, await readAdapterFolder(dir), 0);
  const loaded = await nextTokenLogits(deno, tok, prompt);
  assertEquals(maxAbsDiff(loaded.logits, trained.logits), 0, "adapter round trip");
});

Deno.test("web messages: a non-safetensors adapter reads as one, without its huge number", async () => {
  const gpu = await testGpu();
  const web = await S.loadModelFolder(
    gpu,
    fileFolder(await folderEntries(EMBEDDED_MODEL_DIR, "model/")),
    "",
  );
  S.attachFresh(web.model, S.DEFAULT_SETTINGS, "");
  const good = await S.adapterFiles(web.model, S.adapterConfigFor(S.DEFAULT_SETTINGS, ""));
  // "This is " read as a little-endian u64 is 2338328219631577204, the example.
  const bad = fileFolder([
    { path: "ad/adapter_config.json", file: new Blob([good.configJson]) },
    { path: "ad/adapter_model.safetensors", file: new Blob(["This is not a safetensors file"]) },
  ]);
  const err = await readAdapterFolder(bad).then((ad) => S.attachLoaded(web.model, ad, 0)).then(
    () => null,
    (e) => e as Error,
  );
  if (!err) throw new Error("a text file as adapter weights must be refused");
  assert(/header length \d{19} bytes/.test(err.message), `lib/ keeps the number: ${err.message}`);
  const shown = plainMessage(err.message);
  assert(shown.includes("is not a safetensors file"), shown);
  assert(!/\d{10,}/.test(shown), shown);
  assert(shown.startsWith("ad/adapter_model.safetensors is not"), `names the file: ${shown}`);
  const cut = plainMessage(
    "w.safetensors: header length 1000 runs past the end of the file (20 bytes): truncated, " +
      "or not a safetensors file",
  );
  assertEquals(
    cut,
    "w.safetensors is truncated or not a safetensors file (its header would end past the " +
      "file's 20 bytes)",
  );
  // One wording for chosen and dropped folders.
  assertEquals(
    folderSummary(
      "adapter",
      ["run/adapter_config.json", "run/adapter_model.safetensors"],
      "chosen",
    ),
    "Adapter folder “run” (2 files, chosen): Load model and Train start from it.",
  );
  assertEquals(
    folderSummary("adapter", ["adapter_config.json", "adapter_model.safetensors"], "dropped"),
    "Adapter folder (2 files, dropped): Load model and Train start from it.",
  );
});

Deno.test("web chart: drawn at its pixel size, ticks inside the plot on linear and log axes", () => {
  const losses = [6.2, 4.1, 3.3, 2.2, 1.9, 1.4, 1.35, 1.2].map((l, i) => [i + 1, l] as const);
  for (const logY of [false, true]) {
    const svg = lossChart({
      width: 320,
      height: 240,
      xMax: 10,
      logY,
      series: [
        { name: "training loss", color: "#000", points: losses },
        { name: "validation loss", color: "#f00", points: [[0, 6.5], [8, 1.3]], dashed: true },
      ],
    });
    assert(svg.includes('width="320" height="240" viewBox="0 0 320 240"'), "1 unit = 1 px");
    assert(svg.includes('font-size="13"') && !/font-size="(?!13")/.test(svg), "one font size");
    // y tick labels: right-aligned texts left of the axis, at y positions inside the plot.
    const ticks = [
      ...svg.matchAll(/<text x="[\d.]+" y="([\d.]+)" text-anchor="end"[^>]*>([^<]+)</g),
    ]
      .map((m) => ({ y: Number(m[1]), v: Number(m[2]) }));
    assert(ticks.length >= 3, `${logY ? "log" : "linear"} y ticks: ${JSON.stringify(ticks)}`);
    for (const t of ticks) {
      assert(Number.isFinite(t.v) && (!logY || t.v > 0), `tick value ${t.v}`);
      assert(t.y > 20 && t.y < 240 - 20, `tick at y=${t.y}`);
    }
    // Higher values are drawn higher up.
    const sorted = [...ticks].sort((a, b) => a.v - b.v);
    for (let i = 1; i < sorted.length; i++) assert(sorted[i].y < sorted[i - 1].y);
    assert(svg.includes("(loss on a log scale)") === logY);
  }
});

Deno.test("web session: the vocabulary warning flags words the tiny model never saw", async () => {
  const tok = await loadTokenizer(EMBEDDED_MODEL_DIR);
  assertEquals(S.wordsOutsideVocabulary(tok, "is the frog green?"), ["frog"]);
  // None of the test questions (the page's example prompts) gets a warning.
  for (const d of COMMONSENSE_TASKS) {
    const recs = JSON.parse(
      await Deno.readTextFile(splitPath(d, "test", join(ROOT, "data_file"))),
    ) as { instruction: string }[];
    for (const r of recs) assertEquals(S.wordsOutsideVocabulary(tok, r.instruction), [], d);
  }
});

// ---------------------------------------------------------------------------------------------
// Headless Chromium

/** What the driver subprocess reports (result.json). */
interface DriveResult {
  serverChecks: Record<string, number>;
  state: {
    phase: string;
    error: string;
    isCpuAdapter: boolean | null;
    step: number;
    losses: number[];
    validationBefore: number;
    validationAfter: number;
    before: { rows: unknown[]; average: number | null } | null;
    after: { rows: unknown[]; average: number | null } | null;
    answer: string;
    downloads: number;
    adapterConfig: { peftType: string } | null;
  };
  /** Every (body[data-phase], phase line) pair shown during the first run, in order. */
  phases: [string, string][];
  /** The example-prompt buttons of the Ask box. */
  examples: string[];
  /** Mid-run: the settings and buttons that were still enabled (none should be). */
  locked: { enabled: string[]; stopEnabled: boolean; checked: number };
  /** Whether the settings were editable again after the run. */
  unlockedAfter: boolean;
  /** Per viewport width, after the first run (chart and accuracy table on the page). */
  layout: {
    width: number;
    scrollWidth: number;
    clientWidth: number;
    chartTexts: number;
    /** Smallest rendered font size in the chart: computed size × the SVG's screen scale. */
    minChartFont: number;
    tableRight: number;
    boxRight: number;
    tableRows: number;
    rowNames: string[];
  }[];
  /** The chart's text with the log-scale box checked. */
  logScaleLabel: string;
  answerText: string;
  beamAnswerText: string;
  /** The Ask box's message and answer after Answer with a blank prompt. */
  emptyPrompt: { error: string; answer: string };
  /** The warning under the prompt for "is the frog green?". */
  vocabWarning: string;
  prompt: string;
  logits: { ids: number[]; logits: number[] };
  /** Phase and logits after loading the tiny model (folder input) and the adapter (dropped). */
  localPhase: string;
  localLogits: { ids: number[]; logits: number[] };
  /** The drop zone's message after the adapter's files were dropped on it. */
  dropStatus: string;
  /** Load with an adapter folder whose weights are a text file. */
  badAdapter: {
    /** The adapter control's message once the folder was chosen. */
    chosen: string;
    status: string;
    kind: string;
    formError: string;
    modelInfo: string;
    /** The model's logits equal those with the adapter loaded before (bit for bit). */
    logitsKept: boolean;
    /** The adapter control's message after "Forget the adapter". */
    afterForget: string;
  };
  /** Stop during the accuracy-before pass of a fresh run. */
  stopBefore: {
    phase: string;
    step: number;
    beforeRows: number;
    after: boolean;
    peftType: string;
    downloadEnabled: boolean;
    note: string;
    logitsKept: boolean;
  };
  /** The Stop button on a long LoRA run. */
  stopped: {
    phase: string;
    step: number;
    error: string;
    peftType: string;
    downloadEnabled: boolean;
  };
  downloads: string[];
  unlabeled: string[];
  focusOutline: string;
  noGpu: { phase: string; message: string; plain: string; trainDisabled: boolean };
  /** window.hiraTest.matmulCheck() (the subgroup matmul kernel), or why it failed. */
  matmulCheck: S.MatmulCheckReport | { error: string };
  console: string[];
}

async function readLineMatching(
  stream: ReadableStream<Uint8Array>,
  re: RegExp,
  timeoutMs: number,
): Promise<{ match: RegExpExecArray; text: string }> {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const timer = setTimeout(() => reader.cancel().catch(() => {}), timeoutMs);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`server exited or timed out before printing its URL:\n${text}`);
      text += value;
      const m = re.exec(text);
      if (m) return { match: m, text };
    }
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
}

Deno.test({
  name: "browser: the page trains HiRA in headless Chromium and its adapter matches Deno",
  ignore: SKIP_BROWSER,
  async fn() {
    const chromium = await Deno.stat(CHROMIUM).then((s) => s.isFile, () => false);
    if (!chromium) {
      throw new Error(
        `${CHROMIUM} not found: install it with .ci/run's step (apt-get install -y chromium), ` +
          "or set HIRA_SKIP_BROWSER=1 to skip the browser test",
      );
    }
    const out = await Deno.makeTempDir({ prefix: "hira-browser-" });
    await Deno.mkdir(join(ROOT, "test_output"), { recursive: true });
    const server = new Deno.Command(Deno.execPath(), {
      args: [...taskArgs("serve"), "--port=0"],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const stderr = server.stderr.pipeThrough(new TextDecoderStream());
    let serverErr = "";
    const errDone = (async () => {
      for await (const c of stderr) serverErr += c;
    })();
    try {
      const { match } = await readLineMatching(
        server.stdout,
        /serving (http:\/\/127\.0\.0\.1:(\d+)\/)/,
        60_000,
      ).catch((e) => {
        throw new Error(`${e.message}\n${serverErr}`);
      });
      const url = match[1];
      const port = match[2];
      // A second server on the same port: one clear line, exit status 1.
      const clash = await new Deno.Command(Deno.execPath(), {
        args: [...taskArgs("serve"), `--port=${port}`],
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).output();
      assertEquals(clash.code, 1);
      const clashMsg = new TextDecoder().decode(clash.stderr).trim();
      assert(/^error: port \d+ on 127\.0\.0\.1 is already in use/m.test(clashMsg), clashMsg);

      const drive = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", fromFileUrl(import.meta.url), "--drive", url, out],
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1", HIRA_BROWSER_RUN: JSON.stringify(BROWSER_RUN) },
      }).output();
      const driveLog = new TextDecoder().decode(drive.stdout) +
        new TextDecoder().decode(drive.stderr);
      assertEquals(drive.code, 0, `browser driver failed:\n${driveLog}`);
      const r: DriveResult = JSON.parse(await Deno.readTextFile(join(out, "result.json")));
      const ctx = `\nconsole:\n${r.console.join("\n")}`;
      for (const line of r.console) if (line.startsWith("timing:")) console.log(line);

      assertEquals(r.serverChecks["/"], 200);
      assertEquals(r.serverChecks["/app.js"], 200);
      assertEquals(r.serverChecks["/kernels/matmul.wgsl"], 200);
      assertEquals(r.serverChecks["/data_file/tiny/model/config.json"], 200);
      assertEquals(r.serverChecks["/lib/engine/gpu.ts"], 404);
      assertEquals(r.serverChecks["/deno.json"], 404);

      // The subgroup matmul kernel ran with subgroups (SwiftShader: size 4) and matches the f64
      // reference on every layout and shape; "auto" still picks the CPU kernel there.
      const mc = r.matmulCheck;
      if ("error" in mc) throw new Error(`matmulCheck failed in the page: ${mc.error}${ctx}`);
      assertEquals(mc.hasSubgroups, true, "SwiftShader's device should have the subgroups feature");
      assertEquals(mc.variant, "subgroup");
      assertEquals(mc.autoVariant, "cpu");
      assertEquals(mc.cases.length, 36);
      const worst = mc.cases.reduce((w, c) => (c.worstRatio > w.worstRatio ? c : w));
      console.log(
        `subgroup matmul in Chromium (subgroup sizes ${mc.subgroupSizes?.join("..") ?? "?"}): ` +
          `${mc.cases.length} products, largest error ${
            Math.max(...mc.cases.map((c) => c.maxError)).toExponential(2)
          }, worst error/tolerance ${worst.worstRatio.toFixed(3)} (${worst.label})`,
      );
      assert(mc.worstRatio <= 1, `subgroup matmul out of tolerance: ${JSON.stringify(mc.cases)}`);

      assertEquals(r.state.phase, "done", `page ended in ${r.state.phase}: ${r.state.error}${ctx}`);
      assertEquals(r.state.isCpuAdapter, true, "SwiftShader should count as a CPU adapter");
      assertEquals(r.state.step, BROWSER_RUN.steps);
      const L = r.state.losses;
      assertEquals(L.length, BROWSER_RUN.steps);
      assert(L.every(Number.isFinite), `losses ${L}`);
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      assert(
        mean(L.slice(-3)) < mean(L.slice(0, 3)),
        `training loss did not go down: ${L.map((x) => x.toFixed(3)).join(" ")}`,
      );
      assert(
        r.state.validationAfter < r.state.validationBefore,
        `validation loss ${r.state.validationBefore} -> ${r.state.validationAfter}`,
      );
      assertEquals(r.state.before?.rows.length, 8);
      assertEquals(r.state.after?.rows.length, 8);
      for (const a of [r.answerText, r.beamAnswerText]) {
        assert(a !== "" && a !== "…", `answer box: '${a}'${ctx}`);
      }

      // The downloaded PEFT folder loads in Deno with lib/ and reproduces the browser's logits.
      assertEquals(r.downloads.sort(), ["adapter_config.json", "adapter_model.safetensors"]);
      const adDir = join(out, "adapter");
      const cfg = JSON.parse(await Deno.readTextFile(join(adDir, "adapter_config.json")));
      assertEquals(cfg.peft_type, "HIRA");
      assertEquals(cfg.r, BROWSER_RUN.rank);
      assertEquals(cfg.base_model_name_or_path, "");
      const gpu = await testGpu();
      const model = await loadModelDir(gpu, EMBEDDED_MODEL_DIR);
      const tok = await loadTokenizer(EMBEDDED_MODEL_DIR);
      const base = await nextTokenLogits(model, tok, r.prompt);
      await loadAdapterDir(model, adDir);
      const mine = await nextTokenLogits(model, tok, r.prompt);
      assertEquals(r.logits.ids, mine.ids, "same tokenization in the browser and in Deno");
      assertClose(Float32Array.from(r.logits.logits), mine.logits, {
        rtol: 1e-3,
        atol: 1e-3,
        label: "browser vs Deno logits",
      });
      assert(maxAbsDiff(base.logits, mine.logits) > 1e-3, "the adapter changes the logits");

      // Loaded back from File objects in the page (folder input, drop): the same logits, bit for
      // bit. Dropped and chosen folders are described in one wording.
      assertEquals(
        r.dropStatus,
        "Adapter folder (2 files, dropped): Load model and Train start from it.",
      );
      assertEquals(r.localPhase, "ready", `local folders: ${r.localPhase}${ctx}`);
      assertEquals(r.localLogits.ids, r.logits.ids);
      assertEquals(maxAbsDiff(r.localLogits.logits, r.logits.logits), 0, "local folder reload");

      // The phase line went through every phase of a run, in order, in the CLI's words.
      const seen = r.phases.map(([p]) => p).filter((p, i, a) => p !== a[i - 1]);
      const want: [string, RegExp][] = [
        ["loading", /^Loading /],
        ["compiling", /^Compiling GPU kernels/],
        ["evaluating-before", /^Held-out accuracy before training: BoolQ \(1 of 8\)/],
        ["validating", /^Validation loss before training/],
        ["training", /^Training: step \d+\/12$/],
        ["validating", /^Validation loss \(eval_loss\) at step \d+\/12/],
        ["evaluating-after", /^Held-out accuracy after training: /],
        ["done", /^Done: 12 steps in /],
      ];
      let at = 0;
      for (const [phase, line] of want) {
        const i = r.phases.findIndex(([p, t], j) => j >= at && p === phase && line.test(t));
        assert(i >= 0, `phase ${phase} (${line}) missing after #${at}: ${JSON.stringify(seen)}`);
        at = i;
      }
      const counted = new Set(
        r.phases.filter(([p]) => p === "training").map(([, t]) =>
          Number(/step (\d+)/.exec(t)?.[1])
        ),
      );
      assert(
        counted.size >= 4 && Math.max(...counted) >= 10,
        `the phase line counts the steps: ${[...counted]}`,
      );

      // Locked mid-run, editable after.
      assert(r.locked.checked > 20, `checked ${r.locked.checked} controls`);
      assertEquals(r.locked.enabled, [], "settings and buttons disabled while training");
      assert(r.locked.stopEnabled, "Stop is enabled while training");
      assert(r.unlockedAfter, "settings editable again after the run");

      // Layout: no horizontal overflow, chart text at least 12 px, accuracy rows that fit, the
      // full dataset names.
      assertEquals(r.layout.map((l) => l.width), [360, 390, 1280]);
      for (const l of r.layout) {
        assert(l.scrollWidth <= l.clientWidth, `overflow at ${l.width} px: ${JSON.stringify(l)}`);
        assert(l.chartTexts >= 8, `chart texts at ${l.width} px: ${l.chartTexts}`);
        assert(l.minChartFont >= 12, `chart text ${l.minChartFont} px at ${l.width} px`);
        assert(l.tableRight <= l.boxRight + 0.5, `table overflows at ${l.width}: ${l.tableRight}`);
        assertEquals(l.tableRows, 9, "eight sets and the average");
        assertEquals(l.rowNames, [...EIGHT_SETS, "Average"]);
      }

      assert(r.logScaleLabel.includes("step (loss on a log scale)"), r.logScaleLabel);

      // Guidance in the Ask box.
      assert(/^Write an instruction first/.test(r.emptyPrompt.error), r.emptyPrompt.error);
      assertEquals(r.emptyPrompt.answer, r.beamAnswerText.trim(), "an empty prompt is not run");
      assert(r.vocabWarning.includes("“frog”"), r.vocabWarning);
      assertEquals(r.examples, EIGHT_SETS);

      // A bad adapter: its error beside the adapter control, in words, and nothing lost.
      assertEquals(
        r.badAdapter.chosen,
        "Adapter folder “bad-adapter” (2 files, chosen): Load model and Train start from it.",
      );
      assertEquals(r.badAdapter.kind, "error");
      assert(r.badAdapter.status.includes("is not a safetensors file"), r.badAdapter.status);
      assert(!/\d{10,}/.test(r.badAdapter.status), r.badAdapter.status);
      assertEquals(r.badAdapter.formError, "", "the error is not under Train");
      assert(r.badAdapter.modelInfo.startsWith("Loaded "), r.badAdapter.modelInfo);
      assert(r.badAdapter.logitsKept, "the adapter loaded before stays on the model");
      assert(/^No adapter folder: training starts fresh/.test(r.badAdapter.afterForget));

      // Stop during accuracy before: consistent, the previous adapter back and downloadable.
      const sb = r.stopBefore;
      assertEquals(sb.phase, "stopped", `stop before: ${JSON.stringify(sb)}`);
      assertEquals(sb.step, 0);
      assert(sb.beforeRows >= 1 && sb.beforeRows <= 8, `rows measured: ${sb.beforeRows}`);
      assertEquals(sb.after, false);
      assertEquals(sb.peftType, "HIRA");
      assert(sb.downloadEnabled, "Download of the previous adapter stays enabled");
      assert(sb.logitsKept, "the previous adapter is back on the model");
      assert(/Skipped: .*training, accuracy after training\./.test(sb.note), sb.note);
      assert(sb.note.includes("the previous adapter"), sb.note);

      // Stop ends a run early and keeps its adapter.
      assertEquals(r.stopped.phase, "stopped", `stop: ${r.stopped.phase} ${r.stopped.error}`);
      assert(r.stopped.step >= 2 && r.stopped.step < 1000, `stopped at ${r.stopped.step}`);
      assertEquals(r.stopped.peftType, "LORA");
      assert(r.stopped.downloadEnabled, "Download is enabled after a stopped run");

      // Accessibility basics and the no-WebGPU message.
      assertEquals(r.unlabeled, [], "every control has a label");
      assert(r.focusOutline !== "none" && r.focusOutline !== "", `focus: ${r.focusOutline}`);
      assertEquals(r.noGpu.phase, "no-webgpu");
      assert(r.noGpu.message.includes("requestAdapter() returned null"), r.noGpu.message);
      assert(!r.noGpu.plain.includes("()"), `the plain line avoids API names: ${r.noGpu.plain}`);
      assert(r.noGpu.trainDisabled, "Train is disabled without WebGPU");
      assert((await Deno.stat(join(ROOT, "test_output/browser.png"))).size > 0);
    } finally {
      try {
        server.kill("SIGTERM");
      } catch { /* already gone */ }
      await server.status;
      await server.stdout.cancel().catch(() => {});
      await errDone.catch(() => {});
      await Deno.remove(out, { recursive: true }).catch(() => {});
    }
  },
});

// ---------------------------------------------------------------------------------------------
// The driver: `deno run -A tests/browser/browser_test.ts --drive URL OUTDIR`

/** The few DOM members the driver's page callbacks use (tests are checked without lib.dom). */
interface MiniElement {
  id: string;
  outerHTML: string;
  labels?: { length: number } | null;
  getAttribute(name: string): string | null;
}
interface MiniDocument {
  body: unknown;
  activeElement: MiniElement | null;
  documentElement: { scrollWidth: number; clientWidth: number };
  querySelectorAll(selector: string): Iterable<MiniElement>;
}
/** A DOM element as the phase, lock and layout probes use it. */
interface ProbeElement extends MiniElement {
  textContent: string | null;
  dataset: Record<string, string | undefined>;
  clientWidth: number;
  parentElement: ProbeElement | null;
  matches(selector: string): boolean;
  getBoundingClientRect(): { right: number };
  querySelectorAll(selector: string): ProbeElement[];
}
interface PhaseDocument {
  body: ProbeElement;
  documentElement: { scrollWidth: number; clientWidth: number };
  getElementById(id: string): ProbeElement | null;
  querySelector(selector: string): ProbeElement | null;
  querySelectorAll(selector: string): Iterable<ProbeElement>;
}
type MutationObserverLike = new (cb: () => void) => {
  observe(target: unknown, opts: Record<string, unknown>): void;
};

async function drive(url: string, outDir: string): Promise<void> {
  const run = JSON.parse(Deno.env.get("HIRA_BROWSER_RUN") ?? JSON.stringify(BROWSER_RUN));
  const { chromium } = await import("playwright-core");
  const shots = join(ROOT, "test_output");
  await Deno.mkdir(shots, { recursive: true });
  const consoleLines: string[] = [];
  const t0 = performance.now();
  const mark = (what: string) =>
    consoleLines.push(`timing: ${what} at ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const serverChecks: Record<string, number> = {};
  for (
    const p of [
      "/",
      "/app.js",
      "/kernels/matmul.wgsl",
      "/data_file/tiny/model/config.json",
      "/lib/engine/gpu.ts",
      "/deno.json",
    ]
  ) {
    const res = await fetch(new URL(p, url));
    await res.body?.cancel();
    serverChecks[p] = res.status;
  }
  const prompt = await firstBoolqInstruction();
  type Hira = {
    hiraTest: {
      state(): DriveResult["state"] & { busy: boolean };
      logits(p: string): Promise<{ ids: number[]; logits: number[] }>;
      matmulCheck(): Promise<S.MatmulCheckReport>;
    };
    __phases: [string, string][];
  };
  // Loads the page and waits until it has checked for a GPU (with or without finding one).
  const openPage = async (page: import("playwright-core").Page) => {
    await page.goto(url);
    await page.waitForFunction(
      () => {
        const t = (globalThis as unknown as Partial<Hira>).hiraTest;
        return t !== undefined && t.state().phase !== "checking-gpu";
      },
      null,
      { timeout: 60_000 },
    );
  };
  const launch = (webgpu: boolean) =>
    chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless=new", "--no-sandbox", ...(webgpu ? ["--enable-unsafe-webgpu"] : [])],
    });

  const browser = await launch(true);
  let result: Omit<DriveResult, "noGpu">;
  try {
    const ctx = await browser.newContext({
      acceptDownloads: true,
      viewport: { width: 1280, height: 800 },
    });
    const page = await ctx.newPage();
    page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
    const getState = () => page.evaluate(() => (globalThis as unknown as Hira).hiraTest.state());
    const idle = () =>
      page.waitForFunction(
        () => !(globalThis as unknown as Hira).hiraTest.state().busy,
        null,
        { timeout: 120_000, polling: 100 },
      );
    const text = async (sel: string) => ((await page.textContent(sel)) ?? "").trim();
    const kind = (sel: string) => page.getAttribute(sel, "data-kind").then((k) => k ?? "");
    const shot = (name: string) =>
      page.screenshot({ path: join(shots, `browser-${name}.png`), fullPage: true });
    await openPage(page);
    mark("page ready");
    // Example prompts: one test question per set, named by the set.
    await page.waitForSelector("#examples:not([hidden])", { timeout: 30_000 });
    const examples = await page.$$eval("#examples button", (bs) => bs.map((b) => b.textContent));
    await shot("ready");
    // The subgroup matmul kernel, which Deno's adapter here cannot run (no subgroups feature).
    const matmulCheck = await page.evaluate(() =>
      (globalThis as unknown as Hira).hiraTest.matmulCheck()
    ).catch((e: Error) => ({ error: e.message }));
    mark("subgroup matmul check");
    await page.selectOption("#peft-type", "hira");
    await page.fill("#rank", String(run.rank));
    await page.fill("#steps", String(run.steps));
    await page.fill("#batch", String(run.batch));
    await page.fill("#warmup", String(run.warmup));
    await page.fill("#eval-per-set", String(run.perSet));
    // Every (data-phase, phase line) pair the page shows, recorded from the DOM as it changes.
    await page.evaluate(() => {
      const g = globalThis as unknown as Hira & { document: PhaseDocument };
      const doc = g.document;
      const phase = doc.getElementById("phase")!;
      g.__phases = [];
      const record = () => {
        const p = doc.body.dataset.phase ?? "", t = phase.textContent ?? "";
        const last = g.__phases.at(-1);
        if (!last || last[0] !== p || last[1] !== t) g.__phases.push([p, t]);
      };
      const ObserverClass = (globalThis as unknown as { MutationObserver: MutationObserverLike })
        .MutationObserver;
      const o = new ObserverClass(record);
      o.observe(phase, { childList: true, characterData: true, subtree: true });
      o.observe(doc.body, { attributes: true, attributeFilter: ["data-phase"] });
    });
    await page.click("#train-button");
    // Mid-run: every setting and the model choice are locked, Stop is live.
    await page.waitForFunction(
      () => (globalThis as unknown as Hira).hiraTest.state().step >= 1,
      null,
      { timeout: 240_000, polling: 100 },
    );
    const locked = await page.evaluate(() => {
      const doc = (globalThis as unknown as { document: PhaseDocument }).document;
      const ids = [
        "peft-type",
        "rank",
        "lr",
        "steps",
        "batch",
        "warmup",
        "seed",
        "eval-per-set",
        "train-file",
        "model-embedded",
        "model-local",
        "model-folder",
        "adapter-folder",
        "train-button",
        "load-button",
        "ask-button",
        "download-button",
      ];
      const targets = [...doc.querySelectorAll("input[name=target]")];
      return {
        enabled: [...ids.map((id) => doc.getElementById(id)!), ...targets]
          .filter((e) => !e.matches(":disabled")).map((e) => e.id || e.outerHTML.slice(0, 50)),
        stopEnabled: !doc.getElementById("stop-button")!.matches(":disabled"),
        checked: ids.length + targets.length,
      };
    });
    await shot("training");
    await page.waitForFunction(
      () =>
        ["done", "error", "stopped", "no-webgpu"].includes(
          (globalThis as unknown as Hira).hiraTest.state().phase,
        ),
      null,
      { timeout: 240_000, polling: 250 },
    );
    let state = await getState();
    const phases = await page.evaluate(() => (globalThis as unknown as Hira).__phases);
    const unlockedAfter = await page.isEnabled("#rank");
    mark(`train + accuracy (${state.phase})`);
    await shot("done");
    let answerText = "";
    let beamAnswerText = "";
    let emptyPrompt = { error: "", answer: "" };
    let vocabWarning = "";
    let logits = { ids: [] as number[], logits: [] as number[] };
    let localLogits = { ids: [] as number[], logits: [] as number[] };
    let localPhase = "";
    let dropStatus = "";
    const layout: DriveResult["layout"] = [];
    let logScaleLabel = "";
    let badAdapter: DriveResult["badAdapter"] = {
      chosen: "",
      status: "",
      kind: "",
      formError: "",
      modelInfo: "",
      logitsKept: false,
      afterForget: "",
    };
    let stopBefore: DriveResult["stopBefore"] = {
      phase: "",
      step: 0,
      beforeRows: -1,
      after: true,
      peftType: "",
      downloadEnabled: false,
      note: "",
      logitsKept: false,
    };
    let stopped: DriveResult["stopped"] = {
      phase: "",
      step: 0,
      error: "",
      peftType: "",
      downloadEnabled: false,
    };
    const downloads: string[] = [];
    if (state.phase === "done") {
      // Layout at phone and desktop widths, with the chart and the full table on the page.
      for (const width of [360, 390, 1280]) {
        await page.setViewportSize({ width, height: 800 });
        await page.waitForFunction(
          () => {
            const c = (globalThis as unknown as { document: PhaseDocument }).document
              .getElementById("loss-chart")!;
            return c.dataset.width === String(Math.max(240, Math.floor(c.clientWidth)));
          },
          null,
          { timeout: 10_000, polling: 50 },
        );
        layout.push(
          await page.evaluate((w) => {
            const g = globalThis as unknown as {
              document: PhaseDocument;
              getComputedStyle(e: unknown): { fontSize: string };
            };
            const d = g.document.documentElement;
            const svg = g.document.querySelector("#loss-chart svg") as unknown as {
              getScreenCTM(): { a: number; d: number };
            };
            const ctm = svg.getScreenCTM();
            const texts = [...g.document.querySelectorAll("#loss-chart svg text")];
            const sizes = texts.map((t) =>
              Number.parseFloat(g.getComputedStyle(t).fontSize) * Math.min(ctm.a, ctm.d)
            );
            const table = g.document.getElementById("accuracy-table")!;
            const box = table.parentElement!;
            return {
              width: w,
              scrollWidth: d.scrollWidth,
              clientWidth: d.clientWidth,
              chartTexts: texts.length,
              minChartFont: Math.min(...sizes),
              tableRight: table.getBoundingClientRect().right,
              boxRight: box.getBoundingClientRect().right,
              tableRows: table.querySelectorAll("tbody tr").length,
              rowNames: [...table.querySelectorAll("tbody th")].map((t) => t.textContent ?? ""),
            };
          }, width),
        );
        await shot(String(width));
        if (width < 400) {
          // Full-page shots of a phone-width page are too tall to read: the two busiest parts.
          for (
            const id of ["model-section", "train-section", "progress-section", "accuracy-section"]
          ) {
            await page.locator(`#${id}`).screenshot({
              path: join(shots, `browser-${width}-${id.split("-")[0]}.png`),
            });
          }
        }
      }
      // The log-scale switch redraws the chart with a log y axis.
      await page.check("#log-scale");
      logScaleLabel = (await page.textContent("#loss-chart svg")) ?? "";
      await page.locator("#progress-section").screenshot({
        path: join(shots, "browser-log-scale.png"),
      });
      await page.uncheck("#log-scale");
      mark("layout at 360, 390, 1280 px");
      await page.click("#ask-button");
      await idle();
      answerText = (await page.textContent("#answer")) ?? "";
      // Beam search (4 beams) through the same box.
      await page.selectOption("#decoding", "4");
      await page.click("#ask-button");
      await idle();
      beamAnswerText = (await page.textContent("#answer")) ?? "";
      // An empty prompt is refused beside the button; a word outside the vocabulary is flagged.
      await page.fill("#prompt", "  ");
      await page.click("#ask-button");
      emptyPrompt = { error: await text("#ask-error"), answer: await text("#answer") };
      await page.fill("#prompt", "Please answer: is the frog green?");
      vocabWarning = await text("#vocab-warning");
      await page.fill("#prompt", prompt);
      logits = await page.evaluate(
        (p) => (globalThis as unknown as Hira).hiraTest.logits(p),
        prompt,
      );
      await Deno.mkdir(join(outDir, "adapter"), { recursive: true });
      const saved: Promise<void>[] = [];
      page.on("download", (d) => {
        downloads.push(d.suggestedFilename());
        saved.push(d.saveAs(join(outDir, "adapter", d.suggestedFilename())));
      });
      await page.click("#download-button");
      const t0 = Date.now();
      while (downloads.length < 2 && Date.now() - t0 < 30_000) {
        await new Promise((r) => setTimeout(r, 100));
      }
      await Promise.all(saved);
      state = await getState();
      mark("answer, logits, download");
      await page.screenshot({ path: join(shots, "browser.png"), fullPage: true });
      // The same model and adapter picked as local folders (File objects, lib/io/browser_io.ts).
      await page.check("#model-local");
      await page.setInputFiles("#model-folder", join(ROOT, "data_file/tiny/model"));
      // The adapter arrives by drag and drop (a script-made DataTransfer of its two files).
      const dropped = [];
      for (const name of ["adapter_config.json", "adapter_model.safetensors"]) {
        dropped.push({ name, b64: base64(await Deno.readFile(join(outDir, "adapter", name))) });
      }
      const transfer = await page.evaluateHandle((files) => {
        const g = globalThis as unknown as {
          DataTransfer: new () => { items: { add(f: File): void } };
        };
        const dt = new g.DataTransfer();
        for (const f of files) {
          dt.items.add(new File([Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0))], f.name));
        }
        return dt;
      }, dropped);
      await page.dispatchEvent("#drop-zone", "drop", { dataTransfer: transfer });
      dropStatus = (await page.textContent("#drop-status")) ?? "";
      await page.click("#load-button");
      await idle();
      localPhase = await page.evaluate(() =>
        (globalThis as unknown as Hira).hiraTest.state().phase
      );
      localLogits = await page.evaluate(
        (p) => (globalThis as unknown as Hira).hiraTest.logits(p),
        prompt,
      );
      mark("local folders");
      // A bad adapter (its weights a text file): the error is beside the adapter control, and
      // the adapter loaded before stays on the model.
      const bad = join(outDir, "bad-adapter");
      await Deno.mkdir(bad, { recursive: true });
      await Deno.copyFile(
        join(outDir, "adapter", "adapter_config.json"),
        join(bad, "adapter_config.json"),
      );
      await Deno.writeTextFile(
        join(bad, "adapter_model.safetensors"),
        "This is not a safetensors file.",
      );
      await page.setInputFiles("#adapter-folder", bad);
      const chosen = await text("#adapter-status");
      await page.click("#load-button");
      await idle();
      const kept = await page.evaluate(
        (p) => (globalThis as unknown as Hira).hiraTest.logits(p),
        prompt,
      );
      badAdapter = {
        chosen,
        status: await text("#adapter-status"),
        kind: await kind("#adapter-status"),
        formError: await text("#form-error"),
        modelInfo: await text("#model-info"),
        logitsKept: maxAbsDiff(kept.logits, localLogits.logits) === 0,
        afterForget: "",
      };
      await shot("bad-adapter");
      await page.click("#adapter-clear");
      badAdapter.afterForget = await text("#adapter-status");
      mark("bad adapter");
      // Stop during the accuracy-before pass of a fresh run: the loaded adapter comes back,
      // Download keeps offering it, and the note says what was skipped.
      await page.fill("#eval-per-set", "4");
      await page.click("#train-button");
      await page.waitForFunction(
        () => (globalThis as unknown as Hira).hiraTest.state().phase === "evaluating-before",
        null,
        { timeout: 120_000, polling: 50 },
      );
      await page.click("#stop-button");
      await idle();
      const sb = await getState();
      const back = await page.evaluate(
        (p) => (globalThis as unknown as Hira).hiraTest.logits(p),
        prompt,
      );
      stopBefore = {
        phase: sb.phase,
        step: sb.step,
        beforeRows: sb.before?.rows.length ?? -1,
        after: sb.after !== null,
        peftType: sb.adapterConfig?.peftType ?? "",
        downloadEnabled: await page.isEnabled("#download-button"),
        note: await text("#run-note"),
        logitsKept: maxAbsDiff(back.logits, localLogits.logits) === 0,
      };
      await shot("stopped-before");
      mark("stop during accuracy before");
      // Stop: a long LoRA run (its kernels under Chromium too) stopped after two steps keeps
      // its adapter for download.
      await page.check("#model-embedded");
      await page.selectOption("#peft-type", "lora");
      await page.fill("#steps", "1000");
      await page.fill("#batch", "2");
      await page.fill("#eval-per-set", "0");
      await page.click("#train-button");
      await page.waitForFunction(
        () => (globalThis as unknown as Hira).hiraTest.state().step >= 2,
        null,
        { timeout: 120_000, polling: 100 },
      );
      await page.click("#stop-button");
      await idle();
      const st = await getState();
      mark("stop");
      stopped = {
        phase: st.phase,
        step: st.step,
        error: st.error,
        peftType: st.adapterConfig?.peftType ?? "",
        downloadEnabled: await page.isEnabled("#download-button"),
      };
      await shot("stopped-training");
    } else {
      await page.screenshot({ path: join(shots, "browser.png"), fullPage: true });
    }
    const unlabeled = await page.evaluate(() => {
      const doc = (globalThis as unknown as { document: MiniDocument }).document;
      return [...doc.querySelectorAll("input, select, textarea")]
        .filter((e) => e.labels?.length === 0 && !e.getAttribute("aria-label"))
        .map((e) => e.id || e.outerHTML.slice(0, 60));
    });
    // Keyboard focus moving from one control to the next must be visible.
    await page.focus("#rank");
    await page.keyboard.press("Tab");
    const focusOutline = await page.evaluate(() => {
      const g = globalThis as unknown as {
        document: MiniDocument;
        getComputedStyle(e: unknown): { outlineStyle: string };
      };
      const a = g.document.activeElement;
      return a && a !== g.document.body ? g.getComputedStyle(a).outlineStyle : "";
    });
    result = {
      serverChecks,
      state,
      phases,
      examples,
      locked,
      unlockedAfter,
      layout,
      logScaleLabel,
      answerText,
      beamAnswerText,
      emptyPrompt,
      vocabWarning,
      prompt,
      logits,
      localPhase,
      localLogits,
      dropStatus,
      badAdapter,
      stopBefore,
      stopped,
      downloads,
      unlabeled,
      focusOutline,
      matmulCheck,
      console: consoleLines,
    };
  } finally {
    await browser.close();
  }

  const plain = await launch(false);
  let noGpu: DriveResult["noGpu"];
  try {
    const page = await plain.newPage({ viewport: { width: 390, height: 800 } });
    await openPage(page);
    noGpu = {
      phase: await page.evaluate(() => (globalThis as unknown as Hira).hiraTest.state().phase),
      message: (await page.textContent("#gpu-status")) ?? "",
      plain: (await page.textContent("#gpu-status p")) ?? "",
      trainDisabled: await page.isDisabled("#train-button"),
    };
    await page.screenshot({ path: join(shots, "browser-no-webgpu.png"), fullPage: false });
  } finally {
    await plain.close();
  }
  await Deno.writeTextFile(join(outDir, "result.json"), JSON.stringify({ ...result, noGpu }));
}

if (import.meta.main && Deno.args[0] === "--drive") {
  await drive(Deno.args[1], Deno.args[2]);
  // playwright-core keeps handles open; the result is written, so end here.
  Deno.exit(0);
}
