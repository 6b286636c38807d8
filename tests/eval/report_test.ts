/**
 * Run reports: a synthetic log (with a resume and a line cut short by a crash) becomes a
 * report.md whose numbers are the log's, and SVG charts that are well-formed XML and plot
 * exactly the logged points in the right order and place.
 */
import { assert, assertEquals, assertMatch, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { buildRunReport, parseRunLog, runningMean } from "../../lib/report/report.ts";
import { writeRunReport } from "../../lib/io/report_deno.ts";
import type { AccuracySummary } from "../../lib/eval/scoring.ts";
import { withTempDir } from "../_util.ts";

/** Balanced tags, one root, quoted attributes, no raw `<` or stray `&`: enough for a browser. */
function checkXml(doc: string): void {
  const stack: string[] = [];
  let roots = 0;
  const body = doc.replace(/<!--[\s\S]*?-->/g, "");
  for (const m of body.matchAll(/<([^>]*)>|([^<]+)/g)) {
    if (m[2] !== undefined) {
      const text = m[2].replace(/&(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);/g, "");
      assert(!text.includes("&"), `stray & in text: ${m[2]}`);
      assert(stack.length > 0 || text.trim() === "", `text outside the root: ${m[2]}`);
      continue;
    }
    const tag = m[1];
    if (tag.startsWith("/")) {
      assertEquals(stack.pop(), tag.slice(1).trim(), "mismatched closing tag");
      continue;
    }
    const self = tag.endsWith("/");
    const t = /^([A-Za-z][\w:.-]*)((?:\s+[A-Za-z_][\w:.-]*="[^"<]*")*)\s*$/.exec(
      self ? tag.slice(0, -1) : tag,
    );
    if (t === null) throw new Error(`malformed tag <${tag}>`);
    if (stack.length === 0) roots++;
    if (!self) stack.push(t[1]);
  }
  assertEquals(stack, [], "unclosed tags");
  assertEquals(roots, 1, "one root element");
}

/** The points of each `<path class="series">`, in drawing order, with its legend title. */
function seriesPaths(svg: string): { name: string; points: [number, number][] }[] {
  const out: { name: string; points: [number, number][] }[] = [];
  for (const m of svg.matchAll(/<path class="series" d="([^"]*)"[^>]*><title>([^<]*)<\/title>/g)) {
    const points = [...m[1].matchAll(/[ML](-?[\d.]+) (-?[\d.]+)/g)].map((p) =>
      [Number(p[1]), Number(p[2])] as [number, number]
    );
    out.push({ name: m[2], points });
  }
  return out;
}

const T0 = 1_700_000_000_000;

/**
 * Steps 1-6 with an eval every 2 steps; killed after step 5 with checkpoint-4 the newest, so
 * the resume record at step 4 supersedes the first step 5; then steps 5-8 again, and the end.
 */
function syntheticLog(): string {
  const lines: string[] = [];
  const push = (r: Record<string, unknown>) => lines.push(JSON.stringify(r));
  push({
    type: "start",
    args: { peft_type: "hira", r_ab: 4, lr: 0.01 },
    trainable: 7168,
    base: 820352,
    steps: 8,
    run_dir: "/x/run",
  });
  const lr = (s: number) => (s === 1 ? 0 : 0.01 * (8 - s + 1) / 7);
  for (let s = 1; s <= 5; s++) {
    push({
      type: "train",
      step: s,
      loss: 3 - 0.1 * s,
      lr: lr(s),
      grad_norm: 1,
      tokens: 100,
      time: T0 + s * 1000,
    });
    if (s % 2 === 0) push({ type: "eval", step: s, eval_loss: 3.5 - 0.2 * s, time: T0 });
  }
  lines.push('"a JSON string, not a record"');
  lines.push('{"type":"train","step":6,"loss":2.'); // cut short by the kill
  push({ type: "resume", step: 4, checkpoint: "checkpoint-4", time: T0 + 100_000 });
  for (let s = 5; s <= 8; s++) {
    const loss = s === 5 ? 1 : 3 - 0.1 * s;
    push({
      type: "train",
      step: s,
      loss,
      lr: lr(s),
      grad_norm: 1,
      tokens: 100,
      time: T0 + 100_000 + s * 1000,
    });
    if (s % 2 === 0) push({ type: "eval", step: s, eval_loss: 3.5 - 0.2 * s, time: T0 });
  }
  push({ type: "end", step: 8, loss: 2.2, interrupted: false, best: "/x/run/checkpoint-8" });
  return lines.join("\n") + "\n";
}

const ARGS = {
  peft_type: "hira",
  model: "/models/tiny",
  dataset: "common_170k",
  r_ab: 4,
  target_modules: "q_proj,v_proj",
  lr: 0.01,
  warmup: 1,
  batch: 4,
  grad_acc: 2,
  seed: 7,
};

function summary(decoding: string, rows: [string, number, number][]): AccuracySummary {
  const r = rows.map(([dataset, correct, n]) => ({
    dataset,
    n,
    correct,
    accuracy: (100 * correct) / n,
  }));
  return {
    decoding,
    rows: r,
    average: r.reduce((a, b) => a + b.accuracy, 0) / r.length,
  };
}

Deno.test("the log parser keeps the resumed run's steps and skips broken lines", () => {
  const h = parseRunLog(syntheticLog());
  assertEquals(h.train.map((p) => p.step), [1, 2, 3, 4, 5, 6, 7, 8]);
  assertEquals(h.train[4].loss, 1, "step 5 comes from after the resume");
  assertEquals(h.eval.map((e) => e.step), [2, 4, 6, 8]);
  assertEquals(h.resumes, [4]);
  assertEquals(h.badLines, 2);
  assertEquals(h.end?.interrupted, false);
  // No end record after the last resume: the run is still going (or was killed).
  const killed = parseRunLog(syntheticLog().split("\n").slice(0, -2).join("\n"));
  assertEquals(killed.end, null);
});

Deno.test("report.md carries the log's numbers", () => {
  const h = parseRunLog(syntheticLog());
  const r = buildRunReport({ runName: "my-run", args: ARGS, history: h, accuracy: [] });
  const md = r.markdown;
  assertStringIncludes(md, "# Run report: my-run");
  assertStringIncludes(md, "| status | complete |");
  assertStringIncludes(md, "| model | /models/tiny |");
  assertStringIncludes(md, "| method | hira, r=4, targets q_proj,v_proj |");
  assertStringIncludes(md, "| steps | 8 of 8 |");
  assertStringIncludes(md, "| final training loss | 2.2000 |");
  assertStringIncludes(md, "| best validation loss | 1.9000 at step 8 |");
  assertStringIncludes(md, "| final adapter from | checkpoint-8 |");
  assertStringIncludes(md, "| batch | 4 sequences × 2 accumulation |");
  assertStringIncludes(md, "| resumed | from step 4 |");
  assertStringIncludes(md, "| unreadable log lines | 2 (skipped) |");
  assertStringIncludes(md, "| trainable parameters | 7,168 (0.8662% of all 827,520) |");
  // 800 tokens; steps 1-4 took 3 s before the crash and 5-8 3 s after the resume.
  assertStringIncludes(md, "| tokens trained | 800 in 6s of steps (133 tokens/s) |");
  assertStringIncludes(md, "| 6 | 2.3000 |");
  assertStringIncludes(md, "![Training and validation loss against step](loss.svg)");
  assertStringIncludes(md, "![Learning rate against step](lr.svg)");
  assertEquals(Object.keys(r.charts).sort(), ["loss.svg", "lr.svg"]);
  // A run killed mid-way says so.
  const killed = parseRunLog(syntheticLog().split("\n").slice(0, 8).join("\n"));
  const k = buildRunReport({ runName: "k", args: ARGS, history: killed, accuracy: [] }).markdown;
  assertMatch(k, /\| status \| incomplete at step 5: still running, or killed/);
});

Deno.test("charts are well-formed SVG that plot exactly the logged points", () => {
  const h = parseRunLog(syntheticLog());
  const { charts } = buildRunReport({ runName: "r", args: ARGS, history: h, accuracy: [] });
  for (const [name, svg] of Object.entries(charts)) {
    checkXml(svg);
    assertMatch(svg, /viewBox="0 0 \d+ \d+"/, name);
    assertMatch(svg, /<title>[^<]+<\/title>/, name);
    assertStringIncludes(svg, "optimizer step", name);
  }
  const loss = seriesPaths(charts["loss.svg"]);
  assertEquals(loss.map((s) => s.name), ["training loss", "validation loss"]);
  const train = loss[0].points;
  assertEquals(train.length, 8);
  // x grows with the step; y (pixels, downward) is lowest where the loss is highest.
  for (let i = 1; i < train.length; i++) assert(train[i][0] > train[i - 1][0]);
  const pyOf = (step: number) => train[step - 1][1];
  assert(pyOf(1) < pyOf(8), "the highest loss (step 1) is drawn highest");
  assertEquals(
    Math.max(...train.map((p) => p[1])),
    pyOf(5),
    "step 5's resumed loss (1, the lowest) is drawn lowest",
  );
  assertEquals(loss[1].points.length, 4);
  // Validation point at step 8 sits at step 8's x.
  assertEquals(loss[1].points[3][0], train[7][0]);
  assertStringIncludes(charts["loss.svg"], "loss (nats/token)");
  const lr = seriesPaths(charts["lr.svg"])[0].points;
  assertEquals(lr.length, 8);
  const top = Math.min(...lr.map((p) => p[1]));
  assertEquals(lr[1][1], top, "the peak learning rate (step 2, after warmup) is the highest point");
  assertEquals(Math.max(...lr.map((p) => p[1])), lr[0][1], "step 1's lr 0 is the lowest point");
  // Long runs add a running mean.
  const long = parseRunLog(
    Array.from(
      { length: 150 },
      (_, i) => JSON.stringify({ type: "train", step: i + 1, loss: 2 + Math.sin(i), lr: 1e-3 }),
    ).join(
      "\n",
    ),
  );
  const names = seriesPaths(
    buildRunReport({
      runName: "l",
      args: ARGS,
      history: long,
      accuracy: [],
    }).charts["loss.svg"],
  ).map((s) => s.name);
  assertEquals(names, ["training loss", "training loss, mean of 5"]);
});

Deno.test("running mean over a window", () => {
  assertEquals(runningMean([[1, 1], [2, 3], [3, NaN], [4, 5], [5, 7]], 2), [
    [1, 1],
    [2, 2],
    [4, 4],
    [5, 6],
  ]);
});

Deno.test("accuracy tables become a bar chart and a table, per dataset and on average", () => {
  const h = parseRunLog(syntheticLog());
  const before = summary("greedy", [["boolq", 1, 4], ["piqa", 0, 4]]);
  const after = summary("greedy", [["boolq", 3, 4], ["piqa", 2, 4]]);
  const r = buildRunReport({
    runName: "r",
    args: ARGS,
    history: h,
    accuracy: [{ name: "before training", summary: before }, {
      name: "after training",
      summary: after,
    }],
  });
  const md = r.markdown;
  assertStringIncludes(md, "Decoding: greedy.");
  assertStringIncludes(md, "| dataset | before training (%) | after training (%) |");
  assertStringIncludes(md, "| boolq | 25.00 (1/4) | 75.00 (3/4) |");
  assertStringIncludes(md, "| piqa | 0.00 (0/4) | 50.00 (2/4) |");
  assertStringIncludes(md, "| **average** | 12.50 | 62.50 |");
  const svg = r.charts["accuracy.svg"];
  checkXml(svg);
  assertStringIncludes(svg, "Held-out accuracy per dataset (greedy)");
  // Two series of three bars (boolq, piqa, average), each bar titled with its value.
  assertEquals(svg.match(/<g class="series"/g)?.length, 2);
  assertStringIncludes(svg, "<title>boolq / after training: 75.00</title>");
  assertStringIncludes(svg, "<title>average / before training: 12.50</title>");
  assertStringIncludes(svg, "<title>piqa / before training: 0.00</title>");
  // The axis spans 0-100 %.
  assertMatch(svg, />100<\/text>/);
  // Different decodings go into the legend names instead of the title.
  const mixed = buildRunReport({
    runName: "r",
    args: ARGS,
    history: h,
    accuracy: [{ name: "eval", summary: summary("beam=4", [["boolq", 2, 4]]) }, {
      name: "after training",
      summary: after,
    }],
  });
  assertStringIncludes(mixed.charts["accuracy.svg"], "eval (beam=4)");
  assertStringIncludes(
    mixed.markdown,
    "| dataset | eval (beam=4) (%) | after training (greedy) (%) |",
  );
});

Deno.test("writeRunReport reads a run folder and writes report.md and the charts", async () => {
  await withTempDir("hira-report-", async (dir) => {
    await Deno.writeTextFile(join(dir, "log.jsonl"), syntheticLog());
    await Deno.writeTextFile(join(dir, "args.json"), JSON.stringify(ARGS));
    await Deno.writeTextFile(
      join(dir, "accuracy.json"),
      JSON.stringify({ before: summary("greedy", [["obqa", 1, 2]]), after: null }),
    );
    await Deno.mkdir(join(dir, "eval"));
    await Deno.writeTextFile(
      join(dir, "eval", "summary_beam=4.json"),
      JSON.stringify(summary("beam=4", [["obqa", 2, 2], ["arce", 1, 2]])),
    );
    await Deno.writeTextFile(join(dir, "eval", "summary_broken.json"), "{not json");
    const files = await writeRunReport(dir);
    assertEquals(files.map((f) => f.slice(dir.length + 1)).sort(), [
      "accuracy.svg",
      "loss.svg",
      "lr.svg",
      "report.md",
    ]);
    const md = await Deno.readTextFile(join(dir, "report.md"));
    assertStringIncludes(md, "| obqa | 50.00 (1/2) | 100.00 (2/2) |");
    assertStringIncludes(md, "| arce |  | 50.00 (1/2) |");
    assertStringIncludes(md, "| final training loss | 2.2000 |");
    checkXml(await Deno.readTextFile(join(dir, "accuracy.svg")));
    // No temporary files are left behind.
    for await (const e of Deno.readDir(dir)) assert(!e.name.includes(".tmp-"), e.name);
  });
});
