/**
 * The yardstick every distilled student is measured with (docs/distillation.md, "The yardstick"):
 * on the shipped evaluator, with the same seeds, labels and sample count for everything,
 *
 *   - the teacher's reference: its 1000-step DDPM samples (FD_reference);
 *   - the teacher's training-free solvers at each student's NFE (FD_best_solver(N): the best of them);
 *   - each student at its own steps: FD, KID, precision/recall, class accuracy, the class histogram,
 *     FD / FD_reference, and the gap it closes,
 *       G(N) = (FD_best_solver(N) - FD_student(N)) / (FD_best_solver(N) - FD_reference),
 *     1 when the student matches the reference, 0 when it is no better than a solver at its cost,
 *     negative when worse: a student is worth its training only if G(N) > 0 clearly.
 *
 * Generation and metrics are src/eval's (evaluateSweep, imageMetrics): the yardstick only chooses
 * what to sample and combines the rows.
 *
 * @example
 *   const r = yardstick({ teacher, students: [{ name: 'pd-4', group: 'progressive', ...student, steps: 4 }], n: 1000, seed: 0, labels, scale: null, measure });
 *   r.students[0].gap;                                  // G(4)
 *   writePNG('nfe-fd.png', yardstickChart(r));
 */
import { Denoiser } from '../core/denoiser';
import { Tensor } from '../engine/tensor';
import { evaluateSweep, SweepRow } from '../eval/sweep';
import { MetricValue } from '../eval/report';
import { PreparedGuidance } from '../guidance/load';
import { getSampler } from '../sampling/index';
import { CheckpointMeta } from '../training/checkpoint';
import { RawImage } from '../data/image-codec';
import { linePlotImage, Series } from '../util/plot';

/** A training-free solver of the teacher: a registered sampler on a named grid. */
export interface SolverChoice {
  sampler: string;
  grid: string;
  /** Consistency sampling's sigma_min (a consistency student's boundary). */
  sigmaMin?: number;
}

/** The teacher's solvers the yardstick compares with (deterministic ones; each at the steps that cost the student's NFE). */
export const YARDSTICK_SOLVERS: readonly SolverChoice[] = Object.freeze([
  { sampler: 'ddim', grid: 'trailing' },
  { sampler: 'euler', grid: 'karras' },
  { sampler: 'heun', grid: 'karras' },
  { sampler: 'dpmpp-2m', grid: 'trailing' },
  { sampler: 'dpmpp-2m', grid: 'karras' },
  { sampler: 'lms', grid: 'karras' },
]);

/** The steps at which `sampler` costs exactly `nfe` evaluations, each of `passes` network passes (2 with CFG); null when none does (heun's 2N - 1 is odd). */
export function stepsForNfe(sampler: string, nfe: number, passes = 1): number | null {
  const { info } = getSampler(sampler);
  for (let s = 1; s <= nfe; s++) if (info.evals(s) * passes === nfe) return s;
  return null;
}

/** A model the yardstick samples: its checkpoint meta and denoiser, and its guidance (null: unguided). */
export interface YardstickModel {
  meta: Pick<CheckpointMeta, 'config' | 'sampleShape'>;
  denoiser: Denoiser;
  guidance: PreparedGuidance | null;
  /** A latent model's decoder (loadModel's latent.decode): its samples are measured as the images they decode to. */
  decode?: ((z: Tensor) => Tensor) | null;
  /** What identifies the weights (e.g. a digest of the checkpoint): rows of a model with an id can be reused from `rowCache`. */
  id?: string;
}

/** Rows measured before, by key (see rowKey); the CLI keeps them as files next to yardstick.json. */
export interface YardstickRowCache {
  get(key: string): YardstickRow | undefined;
  set(key: string, row: YardstickRow): void;
}

/** A student: the model at its own steps, sampler and grid; `group` names its series on the chart (e.g. the run). */
export interface YardstickStudent extends YardstickModel {
  name: string;
  group: string;
  steps: number;
  sampler: string;
  grid: string;
}

export interface YardstickOptions {
  teacher: YardstickModel;
  students: readonly YardstickStudent[];
  /** The guidance scale of the teacher (cfg) and of guided students; null: unguided. */
  scale: number | null;
  n: number;
  seed: number;
  labels: number[] | null;
  batchSize?: number;
  /** The reference: the teacher's DDPM at this many steps (default 1000). */
  referenceSteps?: number;
  solvers?: readonly SolverChoice[];
  /** The metrics of a set of samples (imageMetrics in the shipped feature space). */
  measure: (x: Tensor) => Record<string, MetricValue>;
  /** The class histogram of a set of samples (classHistogram), or null to skip it. */
  histogram?: ((x: Tensor) => number[]) | null;
  /** Progress: a generation of `steps` sampler steps per batch starts (its label). */
  onSetting?: (label: string, steps: number) => void;
  onStep?: () => void;
  /** Reuse rows measured before with the same model id, sampler, grid, steps, n, seed, labels, scale and batch size (default: none). */
  rowCache?: YardstickRowCache;
}

/** One measured generation. */
export interface YardstickRow {
  label: string;
  sampler: string;
  grid: string;
  steps: number;
  nfe: number;
  seconds: number;
  metrics: Record<string, MetricValue>;
  histogram: number[] | null;
}

export interface YardstickReport {
  scale: number | null;
  n: number;
  seed: number;
  reference: YardstickRow;
  solvers: YardstickRow[];
  students: (YardstickRow & { name: string; group: string; fdRatio: number; bestSolver: YardstickRow | null; gap: number | null })[];
}

/** G(N) = (FD_best_solver - FD_student) / (FD_best_solver - FD_reference); null when the solver already matches the reference. */
export function gapClosed(fdBestSolver: number, fdStudent: number, fdReference: number): number | null {
  const d = fdBestSolver - fdReference;
  return d > 0 ? (fdBestSolver - fdStudent) / d : null;
}

/** The key of a generation: everything its samples depend on (the model's weights by id, the sampling, the seeds and labels). */
export function rowKey(id: string, choice: SolverChoice, steps: number, o: { n: number; seed: number; labels: readonly number[] | null; batchSize: number | null; scale: number | null }): string {
  const counting = o.scale !== null ? { nfe: 'network' } : {}; // guided rows cached before CFG counted 2 evaluations per step are not reused
  return JSON.stringify({ id, sampler: choice.sampler, grid: choice.grid, steps, n: o.n, seed: o.seed, labels: o.labels, batchSize: o.batchSize, scale: o.scale, ...counting });
}

/** Runs the yardstick (see the module comment); every generation uses the same n, seed and labels. */
export function yardstick(o: YardstickOptions): YardstickReport {
  const { n, seed, labels, batchSize, scale } = o;
  const passes = o.teacher.guidance && scale !== null && scale !== 1 ? 2 : 1; // the teacher under CFG: 2 network evaluations per step (a guided student: 1)
  const measureRow = (label: string, m: YardstickModel, choice: SolverChoice, steps: number): YardstickRow => {
    const key = m.id === undefined ? undefined : rowKey(m.id, choice, steps, { n, seed, labels, batchSize: batchSize ?? null, scale: m.guidance ? scale : null });
    const cached = key === undefined ? undefined : o.rowCache?.get(key);
    if (cached) return { ...cached, label };
    let histogram: number[] | null = null;
    o.onSetting?.(label, steps);
    const [row]: SweepRow[] = evaluateSweep({
      denoiser: m.denoiser,
      guidance: m.guidance,
      meta: m.meta,
      spec: { n, seed, labels, batchSize, sampler: choice.sampler, grid: choice.grid, sigmaMin: choice.sigmaMin, decode: m.decode ?? null },
      settings: [{ steps, guidance: m.guidance ? scale : null }],
      measure: (x) => {
        histogram = o.histogram ? o.histogram(x) : null;
        return o.measure(x);
      },
      onStep: () => o.onStep?.(),
    });
    const measured = { label, ...choice, steps, nfe: row.nfe, seconds: row.seconds, metrics: row.metrics, histogram };
    if (key !== undefined) o.rowCache?.set(key, measured);
    return measured;
  };
  const refSteps = o.referenceSteps ?? 1000;
  const reference = measureRow(`teacher reference: ddpm, ${refSteps} steps`, o.teacher, { sampler: 'ddpm', grid: 'trailing' }, refSteps);
  const solvers: YardstickRow[] = [];
  const students: YardstickReport['students'] = [];
  for (const s of o.students) {
    const row = measureRow(`student ${s.name}: ${s.sampler} ${s.grid}, ${s.steps} steps`, s, s, s.steps);
    for (const c of o.solvers ?? YARDSTICK_SOLVERS) {
      const steps = stepsForNfe(c.sampler, row.nfe, passes);
      if (steps === null || solvers.some((r) => r.sampler === c.sampler && r.grid === c.grid && r.steps === steps)) continue;
      solvers.push(measureRow(`teacher: ${c.sampler} ${c.grid}, ${steps} steps`, o.teacher, c, steps));
    }
    const atNfe = solvers.filter((r) => r.nfe === row.nfe);
    const best = atNfe.reduce<YardstickRow | null>((b, r) => (b === null || r.metrics.fd.value < b.metrics.fd.value ? r : b), null);
    const fd = row.metrics.fd.value;
    const ref = reference.metrics.fd.value;
    students.push({ ...row, name: s.name, group: s.group, fdRatio: fd / ref, bestSolver: best, gap: best ? gapClosed(best.metrics.fd.value, fd, ref) : null });
  }
  return { scale, n, seed, reference, solvers, students };
}

/** FD against NFE: one line per teacher solver, one per student group, and the reference (the project's nfe-fd.png extended). */
export function yardstickChart(r: YardstickReport, { title = `FD against NFE (${r.n} samples${r.scale !== null ? `, w = ${r.scale}` : ''})` }: { title?: string } = {}): RawImage {
  const series: Series[] = [];
  const line = (name: string, rows: YardstickRow[]) =>
    series.push({
      name,
      points: rows.map((x) => [x.nfe, x.metrics.fd.value] as [number, number]).sort((a, b) => a[0] - b[0]),
    });
  for (const key of [...new Set(r.solvers.map((s) => `${s.sampler} ${s.grid}`))])
    line(`teacher ${key}`, [...r.solvers.filter((s) => `${s.sampler} ${s.grid}` === key), ...(key === 'ddpm trailing' ? [r.reference] : [])]);
  line(`teacher ddpm ${r.reference.steps} (reference)`, [r.reference]);
  for (const g of [...new Set(r.students.map((s) => s.group))])
    line(
      `student ${g}`,
      r.students.filter((s) => s.group === g),
    );
  return linePlotImage(series, { title, xLabel: 'denoiser evaluations (NFE)', logX: true, logY: true });
}
