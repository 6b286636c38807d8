/**
 * The page's loss chart: an SVG drawn at the pixel size of its box, so that its text is its
 * font size on screen at every window width (lib/report/svg.ts's lineChart draws a fixed 640-wide
 * figure for run reports, which a phone shrinks to half size). Training loss as a line,
 * validation loss as a dashed line with a marker per measurement, the x axis running to the
 * run's last step, and an optional logarithmic y axis. No DOM: it returns markup.
 * @module
 */
import { escapeXml, niceTicks } from "../lib/report/svg.ts";

/** One line of the chart. */
export interface ChartSeries {
  name: string;
  color: string;
  /** [step, loss] pairs; non-finite or (on a log axis) non-positive values are left out. */
  points: readonly (readonly [number, number])[];
  /** Dashed, with a marker on every point (the few validation measurements). */
  dashed?: boolean;
}

/** Options of {@linkcode lossChart}. */
export interface LossChartOptions {
  /** CSS pixels; the SVG's width and viewBox are both this, so 1 unit = 1 pixel. */
  width: number;
  height: number;
  series: readonly ChartSeries[];
  /** The x axis ends here at least (the run's step count), so the chart fills as it goes. */
  xMax: number;
  logY?: boolean;
  /** Font size of every text in the chart, in pixels (default 13; the page keeps it ≥ 12). */
  fontSize?: number;
}

/** Average advance of a sans-serif glyph per pixel of font size, for layout without metrics. */
const CHAR_EM = 0.58;

function fmt(v: number): string {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1).replace("e+", "e");
  return String(Number.parseFloat(v.toPrecision(6)));
}

/** Ticks for a log axis over positive [lo, hi]: 1-2-5 steps per decade, or linear ones. */
function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let k = Math.floor(Math.log10(lo)); k <= Math.ceil(Math.log10(hi)); k++) {
    for (const m of [1, 2, 5]) {
      const v = Number.parseFloat((m * 10 ** k).toPrecision(6));
      if (v >= lo && v <= hi) out.push(v);
    }
  }
  if (out.length >= 3) return out;
  // Less than a decade or so: linear ticks inside the range read better.
  return niceTicks(lo, hi, 5).ticks.filter((v) => v > 0 && v >= lo && v <= hi);
}

/** The chart as one `<svg>` element (markup), `width` × `height` pixels. */
export function lossChart(opts: LossChartOptions): string {
  const { width, height, series } = opts;
  const fs = opts.fontSize ?? 13;
  const logY = opts.logY ?? false;
  const ok = (x: number, y: number) => Number.isFinite(x) && Number.isFinite(y) && (!logY || y > 0);
  const ys = series.flatMap((s) => s.points.filter(([x, y]) => ok(x, y)).map(([, y]) => y));
  const xsMax = Math.max(1, opts.xMax, ...series.flatMap((s) => s.points.map(([x]) => x)));

  // y domain and ticks.
  let lo = ys.length ? Math.min(...ys) : logY ? 1 : 0;
  let hi = ys.length ? Math.max(...ys) : logY ? 10 : 1;
  let yTicks: number[];
  let toUnit: (v: number) => number;
  if (logY) {
    if (hi <= lo) [lo, hi] = [lo / 2, hi * 2];
    const pad = (Math.log10(hi) - Math.log10(lo)) * 0.05;
    lo = 10 ** (Math.log10(lo) - pad);
    hi = 10 ** (Math.log10(hi) + pad);
    yTicks = logTicks(lo, hi);
    const l0 = Math.log10(lo), l1 = Math.log10(hi);
    toUnit = (v) => (Math.log10(v) - l0) / (l1 - l0);
  } else {
    const t = niceTicks(Math.min(lo, hi), Math.max(lo, hi), 5);
    yTicks = t.ticks;
    const a = t.min, b = t.max;
    toUnit = (v) => (v - a) / (b - a);
  }
  const yLabels = yTicks.map(fmt);

  // Layout: legend row on top, y tick labels on the left, x ticks and label at the bottom.
  const charW = fs * CHAR_EM;
  const left = Math.ceil(Math.max(...yLabels.map((l) => l.length), 1) * charW) + 12;
  const xLabelMax = fmt(xsMax).length + 1;
  // Half of the widest x tick label hangs past the last tick.
  const right = width - Math.max(12, Math.ceil((xLabelMax * charW) / 2) + 4);
  const top = fs * 2 + 10;
  const bottom = height - (fs * 2 + 14);
  const px = (x: number) => left + (x / xsMax) * (right - left);
  const py = (y: number) => bottom - toUnit(y) * (bottom - top);

  const xCount = Math.max(2, Math.min(8, Math.floor((right - left) / (charW * 6))));
  const xTicks = niceTicks(0, xsMax, xCount).ticks.filter((v) => v >= 0 && v <= xsMax);

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" font-size="${fs}" ` +
    `role="img" aria-label="Training and validation loss by step">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
  ];
  for (const [i, v] of yTicks.entries()) {
    const y = py(v).toFixed(1);
    out.push(
      `<line x1="${left}" y1="${y}" x2="${right}" y2="${y}" stroke="#e6e8eb"/>`,
      `<text x="${left - 6}" y="${(py(v) + fs * 0.35).toFixed(1)}" text-anchor="end" ` +
        `fill="#57606a">${escapeXml(yLabels[i])}</text>`,
    );
  }
  for (const v of xTicks) {
    const x = px(v).toFixed(1);
    out.push(
      `<line x1="${x}" y1="${bottom}" x2="${x}" y2="${bottom + 4}" stroke="#57606a"/>`,
      `<text x="${x}" y="${bottom + fs + 4}" text-anchor="middle" fill="#57606a">` +
        `${escapeXml(fmt(v))}</text>`,
    );
  }
  out.push(
    `<line x1="${left}" y1="${bottom}" x2="${right}" y2="${bottom}" stroke="#57606a"/>`,
    `<line x1="${left}" y1="${top}" x2="${left}" y2="${bottom}" stroke="#57606a"/>`,
    `<text x="${(left + right) / 2}" y="${height - 6}" text-anchor="middle" fill="#1b1f24">` +
      `step${logY ? " (loss on a log scale)" : ""}</text>`,
  );
  // Legend: swatches with names, left to right.
  let lx = left;
  for (const s of series) {
    const y = fs + 4;
    out.push(
      `<line x1="${lx}" y1="${y}" x2="${lx + 22}" y2="${y}" stroke="${s.color}" ` +
        `stroke-width="3"${s.dashed ? ' stroke-dasharray="6 4"' : ""}/>`,
      `<text x="${lx + 28}" y="${y + fs * 0.35}" fill="#1b1f24">${escapeXml(s.name)}</text>`,
    );
    lx += 28 + s.name.length * charW + 18;
  }
  for (const s of series) {
    const pts = s.points.filter(([x, y]) => ok(x, y));
    if (pts.length === 0) continue;
    const d = pts.map(([x, y], j) => `${j ? "L" : "M"}${px(x).toFixed(1)} ${py(y).toFixed(1)}`)
      .join("");
    out.push(
      `<path class="series" d="${d}" fill="none" stroke="${s.color}" stroke-width="2" ` +
        `stroke-linejoin="round"${s.dashed ? ' stroke-dasharray="6 4"' : ""}>` +
        `<title>${escapeXml(s.name)}</title></path>`,
    );
    if (s.dashed || pts.length === 1) {
      for (const [x, y] of pts) {
        out.push(
          `<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3.5" ` +
            `fill="${s.color}"><title>${escapeXml(`${s.name} at step ${x}: ${fmt(y)}`)}` +
            `</title></circle>`,
        );
      }
    }
  }
  out.push("</svg>");
  return out.join("\n");
}
