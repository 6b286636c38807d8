/** SVG charts: well-formed XML, escaped text, one element per series, no NaN in edge cases. */
import { assert, assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import { barChart, escapeXml, lineChart, niceTicks } from "../../lib/report/svg.ts";

/**
 * A small XML well-formedness check: one root element, balanced and properly nested tags,
 * quoted unique attributes, no raw "<" or stray "&" in text or attribute values.
 * Returns the element names in document order.
 */
function checkXml(doc: string): string[] {
  const entity = /&(?:amp|lt|gt|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);/g;
  const checkText = (t: string, where: string) => {
    const stripped = t.replace(entity, "");
    if (stripped.includes("&")) throw new Error(`unescaped & in ${where}: ${t}`);
    if (stripped.includes("<")) throw new Error(`raw < in ${where}: ${t}`);
  };
  const names: string[] = [];
  const stack: string[] = [];
  let roots = 0;
  let i = 0;
  while (i < doc.length) {
    const lt = doc.indexOf("<", i);
    const text = doc.slice(i, lt < 0 ? doc.length : lt);
    checkText(text, "text");
    if (stack.length === 0 && text.trim() !== "") throw new Error(`text outside root: ${text}`);
    if (lt < 0) break;
    if (doc.startsWith("<!--", lt)) {
      i = doc.indexOf("-->", lt) + 3;
      continue;
    }
    const gt = doc.indexOf(">", lt);
    if (gt < 0) throw new Error("unterminated tag");
    const tag = doc.slice(lt + 1, gt);
    i = gt + 1;
    if (tag.startsWith("/")) {
      const name = tag.slice(1).trim();
      if (stack.pop() !== name) throw new Error(`mismatched </${name}>`);
      continue;
    }
    const selfClosing = tag.endsWith("/");
    const body = selfClosing ? tag.slice(0, -1) : tag;
    const m = /^([A-Za-z_][\w.:-]*)((?:\s+[A-Za-z_][\w.:-]*\s*=\s*"[^"]*")*)\s*$/.exec(body);
    if (m === null) throw new Error(`malformed tag <${tag}>`);
    const seen = new Set<string>();
    for (const a of m[2].matchAll(/([A-Za-z_][\w.:-]*)\s*=\s*"([^"]*)"/g)) {
      if (seen.has(a[1])) throw new Error(`duplicate attribute ${a[1]} in <${m[1]}>`);
      seen.add(a[1]);
      checkText(a[2], `attribute ${a[1]}`);
    }
    if (stack.length === 0) roots++;
    names.push(m[1]);
    if (!selfClosing) stack.push(m[1]);
  }
  if (stack.length !== 0) throw new Error(`unclosed <${stack.join("> <")}>`);
  if (roots !== 1) throw new Error(`${roots} root elements`);
  return names;
}

function count(haystack: string, needle: string): number {
  return haystack.split(needle).length - 1;
}

function assertClean(svg: string): void {
  for (const bad of ["NaN", "Infinity", "undefined"]) {
    assert(!svg.includes(bad), `"${bad}" in output`);
  }
}

Deno.test("the XML checker itself rejects broken documents", () => {
  checkXml(`<svg a="1"><g><text>a &amp; b</text></g><line x="1"/></svg>`);
  assertThrows(() => checkXml(`<svg><g></svg>`));
  assertThrows(() => checkXml(`<svg><text>a & b</text></svg>`));
  assertThrows(() => checkXml(`<svg><text>a < b</text></svg>`));
  assertThrows(() => checkXml(`<svg a=1></svg>`));
  assertThrows(() => checkXml(`<svg a="1" a="2"></svg>`));
  assertThrows(() => checkXml(`<svg></svg><svg></svg>`));
});

Deno.test("escapeXml escapes markup and drops characters XML forbids", () => {
  assertEquals(escapeXml(`a<b & c>"d" 'e'`), "a&lt;b &amp; c&gt;&quot;d&quot; &apos;e&apos;");
  assertEquals(escapeXml("x\u0001y\ud800"), "x\ufffdy\ufffd");
  assertEquals(escapeXml("σ ΔW 😀"), "σ ΔW 😀");
});

Deno.test("niceTicks gives 1/2/5 steps covering the data", () => {
  assertEquals(niceTicks(0, 1).ticks, [0, 0.2, 0.4, 0.6, 0.8, 1]);
  const t = niceTicks(0.13, 0.97);
  assert(t.min <= 0.13 && t.max >= 0.97);
  assertEquals(t.step, 0.2);
  const same = niceTicks(5, 5);
  assert(same.min < 5 && same.max > 5 && same.ticks.length >= 2);
  const zero = niceTicks(0, 0);
  assert(zero.min < 0 && zero.max > 0);
  assertEquals(niceTicks(-3, 12).ticks, [-5, 0, 5, 10, 15]);
});

Deno.test("lineChart: well-formed, title, one path per series, legend, escaped text", () => {
  const svg = lineChart({
    title: `Loss <HiRA & "LoRA">`,
    xLabel: "step",
    yLabel: "loss",
    series: [
      { name: "HiRA r=32", points: Array.from({ length: 50 }, (_, i) => [i, 2 / (1 + i)]) },
      { name: "LoRA <r=32>", points: Array.from({ length: 50 }, (_, i) => [i, 2.2 / (1 + i)]) },
      { name: "eval", points: [[10, 0.5], [40, 0.1]] },
    ],
  });
  const names = checkXml(svg);
  assertEquals(names[0], "svg");
  assertStringIncludes(svg, "Loss &lt;HiRA &amp; &quot;LoRA&quot;&gt;");
  assertStringIncludes(svg, "LoRA &lt;r=32&gt;");
  assert(!svg.includes("<HiRA"));
  assertEquals(count(svg, `<path class="series"`), 3);
  assertEquals(names.filter((n) => n === "path").length, 3);
  // The two-point series gets markers; the 50-point ones do not.
  assertEquals(count(svg, "<circle"), 2);
  assertClean(svg);
});

Deno.test("lineChart edge cases: NaN gaps, one point, all-equal, empty, no series", () => {
  const gap = lineChart({
    title: "gaps",
    xLabel: "x",
    yLabel: "y",
    series: [{ name: "s", points: [[0, 1], [1, NaN], [2, 3], [3, 4], [Infinity, 1], [5, 2]] }],
  });
  checkXml(gap);
  assertClean(gap);
  // Three runs: [0], [2, 3] and [5]; the isolated points are drawn as markers.
  const d = /<path class="series" d="([^"]*)"/.exec(gap)![1];
  assertEquals(count(d, "M"), 3);
  assertEquals(count(d, "L"), 1);

  for (
    const series of [
      [{ name: "one", points: [[3, 5]] as [number, number][] }],
      [{ name: "flat", points: [[0, 2], [1, 2], [2, 2]] as [number, number][] }],
      [{ name: "zeros", points: [[0, 0], [0, 0]] as [number, number][] }],
      [{ name: "empty", points: [] }, { name: "nan", points: [[NaN, NaN]] as [number, number][] }],
      [],
    ]
  ) {
    const svg = lineChart({ title: "edge", xLabel: "x", yLabel: "y", series });
    checkXml(svg);
    assertClean(svg);
    assertEquals(count(svg, `<path class="series"`), series.length);
  }
});

Deno.test("lineChart log scales skip non-positive values and use decade ticks", () => {
  const svg = lineChart({
    title: "spectrum",
    xLabel: "i",
    yLabel: "σ",
    logY: true,
    logX: true,
    series: [
      { name: "HiRA", points: Array.from({ length: 40 }, (_, i) => [i + 1, Math.exp(-i / 4)]) },
      { name: "LoRA", points: [[1, 1], [2, 0.5], [3, 0], [4, -1], [5, 1e-9]] },
    ],
  });
  checkXml(svg);
  assertClean(svg);
  // Nine decades (1e-9 .. 1) are labelled every second decade.
  assertStringIncludes(svg, ">0.01<");
  assertStringIncludes(svg, ">1e-10<");
  // Every log tick is a power of ten.
  assert(!/>(0\.5|2|5)</.test(svg));
  const allBad = lineChart({
    title: "all bad",
    xLabel: "x",
    yLabel: "y",
    logY: true,
    series: [{ name: "s", points: [[1, 0], [2, -3]] }],
  });
  checkXml(allBad);
  assertClean(allBad);
});

Deno.test("barChart: grouped bars, legend, negative and missing values", () => {
  const svg = barChart({
    title: "Accuracy & rank",
    categories: ["BoolQ", "PIQA", "<SIQA>"],
    series: [
      { name: "HiRA", values: [75.4, 89.7, 81.15] },
      { name: "LoRA", values: [70.8, NaN, -3] },
    ],
    yLabel: "acc %",
  });
  const names = checkXml(svg);
  assertStringIncludes(svg, "Accuracy &amp; rank");
  assertStringIncludes(svg, "&lt;SIQA&gt;");
  assertEquals(count(svg, `<g class="series"`), 2);
  // Background + 2 legend swatches + 5 finite bars.
  assertEquals(names.filter((n) => n === "rect").length, 1 + 2 + 5);
  assertClean(svg);
  assertThrows(
    () =>
      barChart({ title: "t", categories: ["a"], series: [{ name: "s", values: [] }], yLabel: "" }),
    RangeError,
  );
});

Deno.test("barChart edge cases: long labels, all NaN, all zero, nothing at all", () => {
  const cats = Array.from({ length: 12 }, (_, i) => `model.layers.${i}.self_attn.q_proj`);
  const cases = [
    { categories: cats, series: [{ name: "erank", values: cats.map((_, i) => i) }] },
    { categories: ["a", "b"], series: [{ name: "s", values: [NaN, NaN] }] },
    { categories: ["a", "b"], series: [{ name: "s", values: [0, 0] }] },
    { categories: ["only"], series: [{ name: "s", values: [42] }] },
    { categories: [], series: [] },
  ];
  for (const c of cases) {
    const svg = barChart({ title: "edge", yLabel: "v", ...c });
    checkXml(svg);
    assertClean(svg);
  }
  assertThrows(() => lineChart({ title: "", xLabel: "", yLabel: "", series: [], width: 10 }));
});
