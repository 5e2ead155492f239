/**
 * Evaluation reports: a JSON record of what was measured and how the samples were made,
 * and a plain-text table of its metrics for the terminal.
 *
 * @example
 *   const report: EvalReport = {
 *     space: 'fmnist-classifier', sampler: 'heun', grid: 'karras', steps: 18, guidance: null, seed: 0, n: 10000,
 *     metrics: { fd: { value: 3.21 }, kid: { value: 0.0012, stderr: 0.0001 }, precision: { value: 0.71 } },
 *   };
 *   console.log(formatReport(report));
 *   fs.writeFileSync('eval.json', JSON.stringify(report, null, 2));
 */

/** One metric's value, with its standard error when it has one (KID). */
export interface MetricValue {
  value: number;
  stderr?: number;
}

/** A row of the metric table. */
export interface MetricRow extends MetricValue {
  name: string;
}

/** What `diffuse eval` writes: the feature space and sampling settings, then the metrics by name. */
export interface EvalReport {
  /** Feature space the metrics were computed in (e.g. the classifier and layer), or 'data' for raw 2-D samples. */
  space: string;
  /** Sampler name (a key of SAMPLERS). */
  sampler: string;
  /** Sigma grid name. */
  grid: string;
  /** Sampling steps. */
  steps: number;
  /** Classifier-free guidance weight w (D = D_u + w (D_c - D_u)), or null when unguided. */
  guidance: number | null;
  /** Seed of the generated samples. */
  seed: number;
  /** Number of generated samples. */
  n: number;
  /** Metric values by name (fd, kid, precision, recall, energy, sw2, ...). */
  metrics: Record<string, MetricValue>;
}

/** The rows of a report's metrics, in insertion order. */
export function metricRows(report: Pick<EvalReport, 'metrics'>): MetricRow[] {
  return Object.entries(report.metrics).map(([name, m]) => ({ name, ...m }));
}

/** Formats a number with `digits` significant digits (exponent notation outside 1e-4 .. 1e6). */
export function formatValue(v: number, digits = 4): string {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 1e-4 && a < 1e6 ? Number(v.toPrecision(digits)).toString() : v.toExponential(digits - 1);
}

/** A metric as "value +- stderr" (the standard error to 2 significant digits), or the value alone. */
export function formatMetric(m: MetricValue, digits = 4): string {
  return formatValue(m.value, digits) + (m.stderr !== undefined ? ` +- ${formatValue(m.stderr, 2)}` : '');
}

/**
 * Text columns: every cell padded to its column's widest, two spaces apart, a header line first.
 *
 *   formatColumns(['steps', 'fd'], [['20', '14.1']]);   // "steps  fd\n20     14.1"
 */
export function formatColumns(head: readonly string[], body: readonly (readonly string[])[]): string {
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => c.padEnd(w[i]))
      .join('  ')
      .trimEnd();
  return [head, ...body].map(line).join('\n');
}

/**
 * A left-aligned table: metric name, value, and "+- stderr" where a row has one.
 *
 *   metric  value   +- stderr
 *   fd      3.21
 *   kid     0.0012  +- 0.0001
 */
export function formatMetricTable(rows: readonly MetricRow[], { digits = 4 }: { digits?: number } = {}): string {
  if (!Number.isSafeInteger(digits) || digits < 1 || digits > 17) throw new RangeError(`formatMetricTable: digits must be an integer in 1..17, got ${digits}`);
  const cells = rows.map((r) => [r.name, formatValue(r.value, digits), r.stderr === undefined ? '' : `+- ${formatValue(r.stderr, digits)}`]);
  const anyErr = cells.some((c) => c[2] !== '');
  const header = ['metric', 'value', anyErr ? '+- stderr' : ''];
  const all = [header, ...cells];
  const w0 = Math.max(...all.map((c) => c[0].length));
  const w1 = Math.max(...all.map((c) => c[1].length));
  return all.map((c) => `${c[0].padEnd(w0)}  ${c[1].padEnd(w1)}  ${c[2]}`.trimEnd()).join('\n');
}

/** A header line with the sampling settings, then the metric table. */
export function formatReport(report: EvalReport, opts: { digits?: number } = {}): string {
  const g = report.guidance === null ? 'none' : String(report.guidance);
  const head = `${report.n} samples, ${report.sampler} (${report.grid}, ${report.steps} steps), guidance ${g}, seed ${report.seed}; features: ${report.space}`;
  return `${head}\n${formatMetricTable(metricRows(report), opts)}`;
}
