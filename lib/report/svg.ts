/**
 * Self-contained SVG 1.1 charts for run reports and rank figures: line charts (loss curves,
 * singular-value spectra, log scales optional) and grouped bar charts (accuracy per dataset for
 * several runs, effective rank per module for HiRA vs LoRA). Output is a plain string that opens
 * in any browser; all text is XML-escaped and non-finite data never reaches an attribute.
 * @module
 */

/** Tableau 10: distinguishable, colour-blind friendly in its first few entries. */
const PALETTE = [
  "#4e79a7",
  "#f28e2b",
  "#e15759",
  "#76b7b2",
  "#59a14f",
  "#edc948",
  "#b07aa1",
  "#ff9da7",
  "#9c755f",
  "#bab0ac",
];
const FONT_SIZE = 12;
/** Average advance of a 12 px sans-serif glyph, for layout without font metrics. */
const CHAR_W = 6.6;

/**
 * Replaces characters XML 1.0 forbids outright (C0 controls other than tab/newline/CR, lone
 * surrogates, U+FFFE/U+FFFF): one of them would make the whole document unparseable.
 */
function xmlChars(s: string): string {
  let out = "";
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    const valid = cp === 9 || cp === 10 || cp === 13 || (cp >= 0x20 && cp <= 0xd7ff) ||
      (cp >= 0xe000 && cp <= 0xfffd) || cp >= 0x10000;
    out += valid ? ch : "\ufffd";
  }
  return out;
}

const ENTITIES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&apos;",
};

/** Escapes text for XML element content and double- or single-quoted attribute values. */
export function escapeXml(s: string): string {
  return xmlChars(s).replace(/[&<>"']/g, (ch) => ENTITIES[ch]);
}

/** A coordinate for an attribute: 2 decimals, never NaN/Infinity. */
function c(v: number): string {
  if (!Number.isFinite(v)) return "0";
  const r = Math.round(v * 100) / 100;
  return String(r === 0 ? 0 : r);
}

/** Removes binary noise (0.30000000000000004) from a computed tick value. */
function clean(v: number): number {
  const r = Number.parseFloat(v.toPrecision(12));
  return r === 0 ? 0 : r;
}

/** A short human label for a tick or data value. */
function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const x = clean(v);
  const a = Math.abs(x);
  if (a !== 0 && (a >= 1e6 || a < 1e-4)) return x.toExponential().replace("e+", "e");
  return String(x);
}

/** A value label on a bar: about 3 significant digits. */
function formatValue(v: number): string {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2).replace("e+", "e");
  if (a >= 100) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toPrecision(3);
}

function niceNum(x: number, round: boolean): number {
  const exp = Math.floor(Math.log10(x));
  const f = x / 10 ** exp;
  let nf: number;
  if (round) nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
  else nf = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
  return nf * 10 ** exp;
}

/** Linear axis ticks: a 1/2/5·10^k step and a domain [min, max] that both land on ticks. */
export interface Ticks {
  min: number;
  max: number;
  step: number;
  ticks: number[];
}

/**
 * "Nice" linear ticks (Heckbert's algorithm) covering [lo, hi] with about `count` ticks. An empty
 * or degenerate range (lo == hi, one point, all-equal values) is widened around its value.
 */
export function niceTicks(lo: number, hi: number, count = 5): Ticks {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) [lo, hi] = [0, 1];
  if (lo > hi) [lo, hi] = [hi, lo];
  if (!(hi - lo > Math.max(Math.abs(lo), Math.abs(hi)) * 1e-12)) {
    const d = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    [lo, hi] = [lo - d, hi + d];
  }
  if (!Number.isFinite(hi - lo)) [lo, hi] = [-Number.MAX_VALUE / 4, Number.MAX_VALUE / 4];
  const step = niceNum(niceNum(hi - lo, false) / Math.max(1, count - 1), true);
  const first = Math.floor(lo / step);
  const last = Math.ceil(hi / step);
  const ticks: number[] = [];
  for (let i = first; i <= last; i++) ticks.push(clean(i * step));
  return { min: ticks[0], max: ticks[ticks.length - 1], step, ticks };
}

/** Decade ticks 10^k for a log axis covering positive [lo, hi]. */
function logTicks(lo: number, hi: number): { min: number; max: number; ticks: number[] } {
  let a = Math.floor(Math.log10(lo));
  let b = Math.ceil(Math.log10(hi));
  if (a === b) [a, b] = [a - 1, b + 1];
  const every = Math.max(1, Math.ceil((b - a) / 8));
  a = Math.floor(a / every) * every;
  b = Math.ceil(b / every) * every;
  const ticks: number[] = [];
  for (let k = a; k <= b; k += every) ticks.push(clean(10 ** k));
  return { min: 10 ** a, max: 10 ** b, ticks };
}

interface Axis {
  /** Data value to pixel. */
  at: (v: number) => number;
  ticks: number[];
}

function axis(
  values: number[],
  log: boolean,
  from: number,
  to: number,
  includeZero = false,
): Axis {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  if (includeZero) {
    lo = Math.min(lo, 0);
    hi = Math.max(hi, 0);
  }
  if (log) {
    if (!(lo <= hi)) [lo, hi] = [1, 10];
    const t = logTicks(lo, hi);
    const l0 = Math.log10(t.min);
    const l1 = Math.log10(t.max);
    return { at: (v) => from + ((Math.log10(v) - l0) / (l1 - l0)) * (to - from), ticks: t.ticks };
  }
  if (!(lo <= hi)) [lo, hi] = [0, 1];
  const t = niceTicks(lo, hi);
  return { at: (v) => from + ((v - t.min) / (t.max - t.min)) * (to - from), ticks: t.ticks };
}

function truncate(s: string, maxChars: number): string {
  const chars = [...s];
  if (chars.length <= maxChars) return s;
  return chars.slice(0, Math.max(1, maxChars - 1)).join("") + "…";
}

interface Frame {
  width: number;
  height: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
  legendX: number;
  legendChars: number;
}

/** Plot area and legend column; the legend gets at most 35% of the width. */
function frame(
  width: number,
  height: number,
  names: readonly string[],
  bottomMargin: number,
): Frame {
  const longest = Math.max(0, ...names.map((n) => [...n].length));
  const legendW = names.length === 0 ? 0 : Math.min(width * 0.35, 34 + longest * CHAR_W);
  const right = width - 16 - legendW;
  return {
    width,
    height,
    left: 70,
    right,
    top: 40,
    bottom: height - bottomMargin,
    legendX: right + 14,
    legendChars: Math.max(3, Math.floor((legendW - 30) / CHAR_W)),
  };
}

function header(f: Frame, title: string): string[] {
  const t = escapeXml(title);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${c(f.width)}" ` +
    `height="${c(f.height)}" viewBox="0 0 ${c(f.width)} ${c(f.height)}" ` +
    `font-family="sans-serif" font-size="${FONT_SIZE}" role="img" aria-label="${t}">`,
    `<title>${t}</title>`,
    `<rect x="0" y="0" width="${c(f.width)}" height="${c(f.height)}" fill="#ffffff"/>`,
    `<text x="${c(f.width / 2)}" y="22" text-anchor="middle" font-size="15" ` +
    `font-weight="bold">${t}</text>`,
  ];
}

function yAxis(f: Frame, y: Axis, label: string): string[] {
  const out: string[] = [];
  for (const v of y.ticks) {
    const py = y.at(v);
    out.push(
      `<line x1="${c(f.left)}" y1="${c(py)}" x2="${c(f.right)}" y2="${c(py)}" stroke="#e5e5e5"/>`,
      `<text x="${c(f.left - 6)}" y="${c(py + 4)}" text-anchor="end">` +
        `${escapeXml(formatNumber(v))}</text>`,
    );
  }
  const my = (f.top + f.bottom) / 2;
  out.push(
    `<line x1="${c(f.left)}" y1="${c(f.top)}" x2="${c(f.left)}" y2="${c(f.bottom)}" ` +
      `stroke="#333333"/>`,
    `<text x="16" y="${c(my)}" text-anchor="middle" transform="rotate(-90 16 ${c(my)})">` +
      `${escapeXml(label)}</text>`,
  );
  return out;
}

function legend(f: Frame, names: readonly string[], swatch: (i: number, y: number) => string) {
  const out: string[] = [];
  names.forEach((name, i) => {
    const y = f.top + 8 + i * 18;
    out.push(
      swatch(i, y),
      `<text x="${c(f.legendX + 26)}" y="${c(y + 4)}">` +
        `${escapeXml(truncate(name, f.legendChars))}</text>`,
    );
  });
  return out;
}

function color(i: number): string {
  return PALETTE[i % PALETTE.length];
}

function checkSize(width: number, height: number): void {
  if (!(width >= 200 && height >= 150 && width <= 20000 && height <= 20000)) {
    throw new RangeError(`chart size ${width}×${height} outside 200×150 .. 20000×20000`);
  }
}

/** One line of a {@link lineChart}. */
export interface LineSeries {
  name: string;
  /** [x, y] pairs in drawing order; a non-finite coordinate (or ≤ 0 on a log axis) is a gap. */
  points: readonly (readonly [number, number])[];
}

/** Options of {@link lineChart}. */
export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly LineSeries[];
  /** Pixels; default 640. */
  width?: number;
  /** Pixels; default 400. */
  height?: number;
  /** Logarithmic x axis (decade ticks). */
  logX?: boolean;
  /** Logarithmic y axis (decade ticks). */
  logY?: boolean;
}

/**
 * A line chart as an SVG 1.1 document: one `<path class="series">` per series (points joined in
 * the given order, broken at gaps), markers on isolated points and on every point of short
 * series (≤ 30 points), nice ticks with grid lines, axis labels and a legend.
 */
export function lineChart(opts: LineChartOptions): string {
  const { title, xLabel, yLabel, series, width = 640, height = 400 } = opts;
  const logX = opts.logX ?? false;
  const logY = opts.logY ?? false;
  checkSize(width, height);
  const ok = (x: number, y: number) =>
    Number.isFinite(x) && Number.isFinite(y) && (!logX || x > 0) && (!logY || y > 0);
  const xs: number[] = [];
  const ys: number[] = [];
  for (const s of series) {
    for (const [x, y] of s.points) {
      if (ok(x, y)) {
        xs.push(x);
        ys.push(y);
      }
    }
  }
  const f = frame(width, height, series.map((s) => s.name), 52);
  const x = axis(xs, logX, f.left, f.right);
  const y = axis(ys, logY, f.bottom, f.top);

  const out = header(f, title);
  out.push(...yAxis(f, y, yLabel));
  for (const v of x.ticks) {
    const px = x.at(v);
    out.push(
      `<line x1="${c(px)}" y1="${c(f.top)}" x2="${c(px)}" y2="${c(f.bottom)}" stroke="#f0f0f0"/>`,
      `<text x="${c(px)}" y="${c(f.bottom + 16)}" text-anchor="middle">` +
        `${escapeXml(formatNumber(v))}</text>`,
    );
  }
  out.push(
    `<line x1="${c(f.left)}" y1="${c(f.bottom)}" x2="${c(f.right)}" y2="${c(f.bottom)}" ` +
      `stroke="#333333"/>`,
    `<text x="${c((f.left + f.right) / 2)}" y="${c(height - 10)}" text-anchor="middle">` +
      `${escapeXml(xLabel)}</text>`,
  );

  series.forEach((s, i) => {
    const segments: [number, number][][] = [];
    let cur: [number, number][] = [];
    for (const [px, py] of s.points) {
      if (ok(px, py)) cur.push([x.at(px), y.at(py)]);
      else if (cur.length > 0) {
        segments.push(cur);
        cur = [];
      }
    }
    if (cur.length > 0) segments.push(cur);
    const d = segments.map((seg) =>
      seg.map(([a, b], j) => `${j ? "L" : "M"}${c(a)} ${c(b)}`).join("")
    )
      .join("");
    out.push(
      `<path class="series" d="${d}" fill="none" stroke="${color(i)}" stroke-width="2" ` +
        `stroke-linejoin="round" stroke-linecap="round"><title>${escapeXml(s.name)}</title></path>`,
    );
    const all = s.points.length <= 30;
    for (const seg of segments) {
      if (seg.length !== 1 && !all) continue;
      for (const [a, b] of seg) {
        out.push(`<circle cx="${c(a)}" cy="${c(b)}" r="3" fill="${color(i)}"/>`);
      }
    }
  });

  out.push(
    ...legend(
      f,
      series.map((s) => s.name),
      (i, ly) =>
        `<line x1="${c(f.legendX)}" y1="${c(ly)}" x2="${c(f.legendX + 20)}" y2="${c(ly)}" ` +
        `stroke="${color(i)}" stroke-width="3"/>`,
    ),
  );
  out.push("</svg>");
  return out.join("\n") + "\n";
}

/** One group member of a {@link barChart}: a value per category (NaN = no bar). */
export interface BarSeries {
  name: string;
  values: readonly number[];
}

/** Options of {@link barChart}. */
export interface BarChartOptions {
  title: string;
  categories: readonly string[];
  series: readonly BarSeries[];
  yLabel: string;
  /** Pixels; default 640. */
  width?: number;
  /** Pixels; default 400. */
  height?: number;
  /** Print each bar's value above it; default: when there are at most 40 bars. */
  valueLabels?: boolean;
  /**
   * Values the y axis must cover besides the data and 0 (e.g. `[0, 100]` for percentages, so
   * an all-zero accuracy chart keeps its 0-100 scale).
   */
  yInclude?: readonly number[];
}

/**
 * A grouped bar chart as an SVG 1.1 document: one group per category, one `<g class="series">`
 * of `<rect>` bars per series, bars drawn from 0 (negative values go down), non-finite values
 * left out, long category labels slanted, a legend and optional value labels.
 */
export function barChart(opts: BarChartOptions): string {
  const { title, categories, series, yLabel, width = 640, height = 400 } = opts;
  checkSize(width, height);
  for (const s of series) {
    if (s.values.length !== categories.length) {
      throw new RangeError(
        `barChart: series "${s.name}" has ${s.values.length} values for ` +
          `${categories.length} categories`,
      );
    }
  }
  const values = series.flatMap((s) => s.values.filter((v) => Number.isFinite(v)));
  for (const v of opts.yInclude ?? []) if (Number.isFinite(v)) values.push(v);
  const nCat = Math.max(1, categories.length);
  const nSer = Math.max(1, series.length);
  const longest = Math.max(0, ...categories.map((s) => [...s].length));
  // Slant labels that would not fit under their group; cap their length to keep the plot.
  const probe = frame(width, height, series.map((s) => s.name), 52);
  const groupW = (probe.right - probe.left) / nCat;
  const slant = longest * CHAR_W > groupW - 4;
  const labelChars = slant ? 24 : longest;
  const bottomMargin = slant
    ? Math.min(height * 0.4, 40 + Math.min(labelChars, longest) * CHAR_W * 0.6)
    : 52;
  const f = frame(width, height, series.map((s) => s.name), bottomMargin);
  const y = axis(values, false, f.bottom, f.top, true);
  const gw = (f.right - f.left) / nCat;
  const barW = (gw * 0.8) / nSer;
  const y0 = y.at(0);

  const out = header(f, title);
  out.push(...yAxis(f, y, yLabel));
  categories.forEach((cat, k) => {
    const cx = f.left + gw * (k + 0.5);
    const text = escapeXml(truncate(cat, labelChars));
    if (slant) {
      const ty = f.bottom + 14;
      out.push(
        `<text x="${c(cx)}" y="${c(ty)}" text-anchor="end" ` +
          `transform="rotate(-35 ${c(cx)} ${c(ty)})">${text}</text>`,
      );
    } else {
      out.push(`<text x="${c(cx)}" y="${c(f.bottom + 16)}" text-anchor="middle">${text}</text>`);
    }
  });
  const labels = opts.valueLabels ?? categories.length * series.length <= 40;
  series.forEach((s, i) => {
    out.push(`<g class="series" fill="${color(i)}">`);
    s.values.forEach((v, k) => {
      if (!Number.isFinite(v)) return;
      const x = f.left + gw * k + gw * 0.1 + barW * i;
      const yv = y.at(v);
      const tip = `${categories[k]} / ${s.name}: ${formatValue(v)}`;
      out.push(
        `<rect x="${c(x)}" y="${c(Math.min(y0, yv))}" width="${c(Math.max(0, barW - 1))}" ` +
          `height="${c(Math.abs(yv - y0))}"><title>${escapeXml(tip)}</title></rect>`,
      );
      if (labels) {
        const ly = v >= 0 ? yv - 3 : yv + 11;
        out.push(
          `<text x="${c(x + barW / 2)}" y="${c(ly)}" text-anchor="middle" font-size="9" ` +
            `fill="#333333">${escapeXml(formatValue(v))}</text>`,
        );
      }
    });
    out.push("</g>");
  });
  out.push(
    `<line x1="${c(f.left)}" y1="${c(y0)}" x2="${c(f.right)}" y2="${c(y0)}" stroke="#333333"/>`,
  );
  out.push(
    ...legend(
      f,
      series.map((s) => s.name),
      (i, ly) =>
        `<rect x="${c(f.legendX)}" y="${c(ly - 6)}" width="20" height="12" fill="${color(i)}"/>`,
    ),
  );
  out.push("</svg>");
  return out.join("\n") + "\n";
}
