/**
 * Plots as PNGs, drawn by a small rasterizer (no plotting library): axes and tick labels
 * in a 5x7 bitmap font. The loss curve shows the per-step losses as a light band (min to
 * max per pixel column) and their moving average as a dark line; the line plot draws
 * metric-against-setting series (FID against denoiser evaluations, accuracy against the
 * guidance scale) with markers and a legend.
 *
 * @example
 *   fs.writeFileSync('loss.png', lossCurvePNG(losses, { title: 'ddpm loss' }));
 *   writePNG('fid.png', linePlotImage([{ name: 'euler', points: [[5, 80], [10, 40], [20, 25]] }], { logX: true, xLabel: 'NFE', title: 'FD' }));
 */
import { encodePNG, RawImage } from '../data/image-codec';

type RGB = readonly [number, number, number];

// 5x7 glyphs (capitals; lower case is drawn as capitals), one string of 35 '#'/'.' per character, row by row.
// a 5x7 bitmap font, three glyphs a row (kept as laid out)
// prettier-ignore
const GLYPHS: Record<string, string> = {
  A: '.###.#...##...#######...##...##...#', B: '####.#...##...#####.#...##...#####.', C: '.###.#...##....#....#....#...#.###.',
  D: '####.#...##...##...##...##...#####.', E: '######....#....####.#....#....#####', F: '######....#....####.#....#....#....',
  G: '.###.#...##....#.####...##...#.####', H: '#...##...##...#######...##...##...#', I: '.###...#....#....#....#....#...###.',
  K: '#...##..#.#.#..##...#.#..#..#.#...#', L: '#....#....#....#....#....#....#####', M: '#...###.###.#.##.#.##...##...##...#',
  N: '#...##...###..##.#.##..###...##...#', O: '.###.#...##...##...##...##...#.###.', P: '####.#...##...#####.#....#....#....',
  R: '####.#...##...#####.#.#..#..#.#...#', S: '.#####....#.....###.....#....#####.', T: '#####..#....#....#....#....#....#..',
  U: '#...##...##...##...##...##...#.###.', V: '#...##...##...##...##...#.#.#...#..', W: '#...##...##...##.#.##.#.##.#.#.#.#.',
  X: '#...##...#.#.#...#...#.#.#...##...#', Y: '#...##...#.#.#...#....#....#....#..', '0': '.###.#...##..###.#.###..##...#.###.',
  '1': '..#...##....#....#....#....#...###.', '2': '.###.#...#....#...#...#...#...#####', '3': '#####...#...#.....#.....##...#.###.',
  '4': '...#...##..#.#.#..#.#####...#....#.', '5': '######....####.....#....##...#.###.', '6': '..##..#...#....####.#...##...#.###.',
  '7': '#####....#...#...#...#....#....#...', '8': '.###.#...##...#.###.#...##...#.###.', '9': '.###.#...##...#.####....#...#..##..',
  '.': '..........................##...##..', '-': '................###................', '+': '.......#....#..#####..#....#.......',
  ' ': '...................................', '(': '...#...#...#....#....#.....#.....#.', ')': '.#.....#.....#....#....#...#...#...',
  ':': '......##...##........##...##.......', '=': '..........#####.....#####..........', '/': '....#...#....#...#...#....#...#....',
  ',': '.....................##....#...#...', J: '..###...#....#....#....#.#..#..##..', Q: '.###.#...##...##...##.#.##..#..##.#',
  Z: '#####....#...#...#...#...#....#####', '_': '..............................#####', '%': '##...##..#...#...#...#...#..##...##',
  '*': '.......#..#.#.#.###.#.#.#..#.......', ';': '......##...##........##....#...#....', '<': '...#...#...#...#.....#.....#.....#', '>': '.#.....#.....#.....#...#...#...#...',
};

class Canvas {
  readonly data: Uint8Array;
  constructor(
    readonly width: number,
    readonly height: number,
    bg: RGB = [255, 255, 255],
  ) {
    this.data = new Uint8Array(width * height * 3);
    for (let i = 0; i < width * height; i++) this.data.set(bg, 3 * i);
  }
  set(x: number, y: number, c: RGB): void {
    x = Math.round(x);
    y = Math.round(y);
    if (x >= 0 && y >= 0 && x < this.width && y < this.height) this.data.set(c, 3 * (y * this.width + x));
  }
  /** Bresenham's line. */
  line(x0: number, y0: number, x1: number, y1: number, c: RGB): void {
    [x0, y0, x1, y1] = [x0, y0, x1, y1].map(Math.round);
    const dx = Math.abs(x1 - x0);
    const dy = -Math.abs(y1 - y0);
    const [sx, sy] = [x0 < x1 ? 1 : -1, y0 < y1 ? 1 : -1];
    let err = dx + dy;
    for (;;) {
      this.set(x0, y0, c);
      if (x0 === x1 && y0 === y1) return;
      const e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x0 += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y0 += sy;
      }
    }
  }
  /** Text with its top-left corner at (x, y); unknown characters are skipped. Returns the width drawn. */
  text(s: string, x: number, y: number, c: RGB): number {
    for (const [i, ch] of [...s].entries()) {
      const g = GLYPHS[ch.toUpperCase()];
      if (g) for (let k = 0; k < 35; k++) if (g[k] === '#') this.set(x + i * 6 + (k % 5), y + Math.floor(k / 5), c);
    }
    return s.length * 6 - 1;
  }
  toImage(): RawImage {
    return { width: this.width, height: this.height, channels: 3, data: this.data };
  }
}

/** Numbers for tick labels: 12000 -> "12k", 0.05 -> "0.05", 1e-5 -> "1e-5". */
export function tickLabel(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}m`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  if (a >= 1e-3) return String(+v.toPrecision(3));
  const [m, e] = v.toExponential(1).split('e');
  return `${+m}e${+e}`;
}

/** About `count` round tick values (1, 2, 5 times a power of ten) covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

/** Log-axis ticks in [lo, hi]: powers of ten, with 2x and 5x between them when the range is short. */
function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  const mults = Math.log10(hi / lo) < 2 ? [1, 2, 5] : [1];
  for (let k = Math.floor(Math.log10(lo)); k <= Math.ceil(Math.log10(hi)); k++)
    for (const m of mults) {
      const v = m * 10 ** k;
      if (v >= lo && v <= hi) out.push(+v.toPrecision(3));
    }
  return out.length >= 2 ? out : [lo, hi].map((v) => +v.toPrecision(2));
}

/** The moving average of the last `window` values at each position. */
export function movingAverage(values: readonly number[], window: number): number[] {
  const out: number[] = [];
  let sum = 0;
  values.forEach((v, i) => {
    sum += v;
    if (i >= window) sum -= values[i - window];
    out.push(sum / Math.min(i + 1, window));
  });
  return out;
}

export interface LossPlotOptions {
  width?: number;
  height?: number;
  /** Logarithmic y axis (default true; falls back to linear when a loss is <= 0). */
  logY?: boolean;
  /** Title drawn at the top left (default 'loss'). */
  title?: string;
  /** The step of the first value (default 1). */
  firstStep?: number;
}

/** The loss curve as an RGB image. */
export function lossCurveImage(losses: readonly number[], { width = 640, height = 360, logY = true, title = 'loss', firstStep = 1 }: LossPlotOptions = {}): RawImage {
  const cv = new Canvas(width, height);
  const [black, grid, band, line] = [
    [0, 0, 0],
    [225, 225, 225],
    [176, 196, 236],
    [24, 56, 150],
  ] as RGB[];
  const vals = losses.filter((v) => Number.isFinite(v));
  const log = logY && vals.length > 0 && vals.every((v) => v > 0);
  const [L, R, T, B] = [62, width - 16, 22, height - 30]; // plot area
  cv.text(title + (log ? ' (log scale)' : ''), L, 6, black);
  cv.text('step', R - 23, height - 10, black);
  if (vals.length === 0) {
    cv.text('no losses yet', L + 10, (T + B) / 2, black);
    return cv.toImage();
  }
  const smooth = movingAverage(
    losses.map((v) => (Number.isFinite(v) ? v : NaN)),
    Math.max(1, Math.round(losses.length / 50)),
  );
  const sorted = [...vals].sort((a, b) => a - b);
  let lo = sorted[Math.floor(0.005 * (sorted.length - 1))];
  let hi = Math.max(sorted[Math.ceil(0.995 * (sorted.length - 1))], ...smooth.filter(Number.isFinite));
  if (!(hi > lo)) [lo, hi] = log ? [lo / 2, hi * 2] : [lo - 1, hi + 1];
  const fy = (v: number) => (log ? (Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo)) : (v - lo) / (hi - lo));
  const Y = (v: number) => B - Math.min(Math.max(fy(v), 0), 1) * (B - T);
  const n = losses.length;
  const [x0, x1] = [firstStep, firstStep + n - 1];
  const X = (step: number) => L + (x1 > x0 ? ((step - x0) / (x1 - x0)) * (R - L) : (R - L) / 2);

  for (const v of log ? logTicks(lo, hi) : niceTicks(lo, hi)) {
    const y = Y(v);
    cv.line(L, y, R, y, grid);
    const label = tickLabel(v);
    cv.text(label, L - 6 - label.length * 6, y - 3, black);
  }
  for (const s of niceTicks(x0, x1, 6).filter((s) => Number.isInteger(s))) {
    const x = X(s);
    cv.line(x, T, x, B, grid);
    const label = tickLabel(s);
    cv.text(label, x - (label.length * 6) / 2, B + 6, black);
  }
  // The raw losses: per pixel column, a band from their min to their max.
  const cols = new Map<number, [number, number]>();
  losses.forEach((v, i) => {
    if (!Number.isFinite(v)) return;
    const x = Math.round(X(x0 + i));
    const c = cols.get(x);
    cols.set(x, c ? [Math.min(c[0], v), Math.max(c[1], v)] : [v, v]);
  });
  for (const [x, [a, b]] of cols) cv.line(x, Y(a), x, Y(b), band);
  // The moving average, as a 2-pixel line.
  let prev: [number, number] | null = null;
  smooth.forEach((v, i) => {
    if (!Number.isFinite(v)) return (prev = null);
    const p: [number, number] = [X(x0 + i), Y(v)];
    if (prev) for (const d of [0, 1]) cv.line(prev[0], prev[1] + d, p[0], p[1] + d, line);
    prev = p;
  });
  cv.line(L, T, L, B, black);
  cv.line(L, B, R, B, black);
  return cv.toImage();
}

/** The loss curve as PNG bytes. */
export function lossCurvePNG(losses: readonly number[], opts: LossPlotOptions = {}): Buffer {
  return encodePNG(lossCurveImage(losses, opts));
}

/** 2-D points [[x, y], ...] as dots on a square canvas over [-range, range]^2 (toy samples). */
export function scatterImage(points: ArrayLike<number>, { size = 400, range = 3, title = '' }: { size?: number; range?: number; title?: string } = {}): RawImage {
  const cv = new Canvas(size, size);
  const [grid, dot, black] = [
    [225, 225, 225],
    [24, 56, 150],
    [0, 0, 0],
  ] as RGB[];
  const P = (v: number) => ((v + range) / (2 * range)) * (size - 1);
  for (let v = -Math.floor(range); v <= Math.floor(range); v++) {
    cv.line(P(v), 0, P(v), size - 1, grid);
    cv.line(0, size - 1 - P(v), size - 1, size - 1 - P(v), grid);
  }
  for (let i = 0; i + 1 < points.length; i += 2) {
    const [x, y] = [P(points[i]), size - 1 - P(points[i + 1])];
    for (const [dx, dy] of [
      [0, 0],
      [1, 0],
      [0, 1],
      [1, 1],
    ])
      cv.set(x + dx, y + dy, dot);
  }
  if (title) cv.text(title, 6, 6, black);
  return cv.toImage();
}

/** One series of a line plot: [x, y] points (drawn in x order; non-finite y values break the line). */
export interface Series {
  name: string;
  points: readonly (readonly [number, number])[];
}

export interface LinePlotOptions {
  width?: number;
  height?: number;
  title?: string;
  xLabel?: string;
  /** Logarithmic axes (each falls back to linear when a value is <= 0). */
  logX?: boolean;
  logY?: boolean;
}

// Distinguishable line colors (Tableau 10), cycled.
const PALETTE: readonly RGB[] = [
  [31, 119, 180],
  [255, 127, 14],
  [44, 160, 44],
  [214, 39, 40],
  [148, 103, 189],
  [140, 86, 75],
  [227, 119, 194],
  [127, 127, 127],
  [188, 189, 34],
  [23, 190, 207],
];

/** An axis: value -> [0, 1], with its ticks, linear or logarithmic. */
function axis(values: number[], log: boolean): { f: (v: number) => number; ticks: number[] } {
  let [lo, hi] = [Math.min(...values), Math.max(...values)];
  const useLog = log && lo > 0;
  if (!(hi > lo)) [lo, hi] = useLog ? [lo / 2, hi * 2] : [lo - 1, hi + 1];
  if (useLog) [lo, hi] = [lo / 1.1, hi * 1.1]; // room for the end markers
  if (useLog) return { f: (v) => (Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo)), ticks: logTicks(lo, hi) };
  const pad = (hi - lo) * 0.05;
  [lo, hi] = [lo - pad, hi + pad];
  return { f: (v) => (v - lo) / (hi - lo), ticks: niceTicks(lo, hi) };
}

/** Several series against a shared x axis, with markers at the points and a legend. */
export function linePlotImage(series: readonly Series[], { width = 640, height = 400, title = '', xLabel = '', logX = false, logY = false }: LinePlotOptions = {}): RawImage {
  const cv = new Canvas(width, height);
  const [black, grid] = [
    [0, 0, 0],
    [225, 225, 225],
  ] as RGB[];
  const pts = series.flatMap((s) => s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)));
  const [L, R, T, B] = [62, width - 16, 22, height - 30];
  cv.text(title, L, 6, black);
  cv.text(xLabel, R - xLabel.length * 6, height - 10, black);
  if (pts.length === 0) {
    cv.text('no data', L + 10, (T + B) / 2, black);
    return cv.toImage();
  }
  const ax = axis(
    pts.map(([x]) => x),
    logX,
  );
  const ay = axis(
    pts.map(([, y]) => y),
    logY,
  );
  const X = (v: number) => L + Math.min(Math.max(ax.f(v), 0), 1) * (R - L);
  const Y = (v: number) => B - Math.min(Math.max(ay.f(v), 0), 1) * (B - T);
  for (const v of ay.ticks) {
    cv.line(L, Y(v), R, Y(v), grid);
    const label = tickLabel(v);
    cv.text(label, L - 6 - label.length * 6, Y(v) - 3, black);
  }
  for (const v of ax.ticks) {
    cv.line(X(v), T, X(v), B, grid);
    const label = tickLabel(v);
    cv.text(label, X(v) - (label.length * 6) / 2, B + 6, black);
  }
  series.forEach((s, k) => {
    const c = PALETTE[k % PALETTE.length];
    let prev: [number, number] | null = null;
    for (const [x, y] of [...s.points].sort((a, b) => a[0] - b[0])) {
      if (!Number.isFinite(x) || !Number.isFinite(y)) {
        prev = null;
        continue;
      }
      const p: [number, number] = [X(x), Y(y)];
      if (prev) for (const d of [0, 1]) cv.line(prev[0], prev[1] + d, p[0], p[1] + d, c);
      for (let dx = -2; dx <= 2; dx++) for (let dy = -2; dy <= 2; dy++) cv.set(p[0] + dx, p[1] + dy, c); // marker
      prev = p;
    }
    // Legend, top right: a color swatch and the name.
    const ly = T + 6 + 11 * k;
    const lx = R - 8 - Math.max(...series.map((t) => t.name.length)) * 6 - 16;
    for (let dy = 0; dy < 5; dy++) cv.line(lx, ly + 1 + dy, lx + 10, ly + 1 + dy, c);
    cv.text(s.name, lx + 14, ly, black);
  });
  cv.line(L, T, L, B, black);
  cv.line(L, B, R, B, black);
  return cv.toImage();
}
