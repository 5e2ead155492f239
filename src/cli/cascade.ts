/**
 * `diffuse sample --cascade BASE,SR[,SR2]` and `diffuse eval --cascade ...`: a base model and its
 * super-resolution stages (src/resolution/cascade.ts) run one after another, each with any
 * sampler and guidance. The sampler and guidance flags apply to every stage; a value with '/'
 * gives one per stage (`--steps 100/25 --sampler ddpm/dpmpp-2m --guidance 3/` guides the base
 * only); --guide-checkpoint and --classifier take one folder per stage separated by commas.
 * --aug-level S is the augmentation level of the SR stages' conditions (S1/S2 one per SR stage;
 * in eval a comma list sweeps it).
 *
 * @example
 *   diffuse sample --cascade runs/base16,runs/sr64 --aug-level 0.2 --steps 100/25 --save-low-res
 *   diffuse eval --cascade runs/base16,runs/sr64 --aug-level 0,0.1,0.2,0.4 --n 1000
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { cycleLabels, quantize } from '../eval/evaluate';
import { formatColumns, formatMetric, MetricValue } from '../eval/report';
import { CascadeStage, sampleCascade } from '../resolution/cascade';
import { superResPanel } from '../resolution/super-res';
import { CheckpointMeta, loadModel } from '../training/checkpoint';
import { buildSchedule, DEFAULT_BATCH_SIZE } from '../training/build';
import { writeFileAtomic, writePNG } from '../util/image';
import { linePlotImage } from '../util/plot';
import { formatSeconds, Progress } from '../util/progress';
import { defaultReportDir } from '../util/shipped';
import { intFlag, ParsedArgs, parseNumber, UsageError } from './args';
import { GUIDANCE_FLAGS, guidanceScales, parseGuidance, prepareGuidance } from './guidance-flags';
import { SAMPLING_FLAGS, samplingFlags, SamplingChoice } from './sampling-flags';
import { parseClass } from './sample';

/** The flag kinds, to merge into sample's and eval's parseArgs tables. */
export const CASCADE_FLAGS = { cascade: 'value', 'aug-level': 'value', 'save-low-res': 'switch' } as const;

/** Help rows for the cascade flags. */
export function cascadeHelpRows({ sweep }: { sweep: boolean }): [string, string][] {
  return [
    [
      '--cascade B,SR[,SR2]',
      "a base model and its super-resolution stages (trained with --low-res), run in turn; give no CHECKPOINT. Sampler and guidance flags apply to every stage, or one per stage with '/': --steps 100/25, --guidance 3/ (guide the base only)",
    ],
    ['--aug-level S', `the augmentation level s in [0, 1] of each SR stage's low-res condition (default 0; S1/S2 for one per SR stage)${sweep ? '; a comma list sweeps it' : ''}`],
    ...(sweep
      ? []
      : ([
          [
            '--save-low-res',
            "also write each earlier stage's images (OUT-<size>px.png, or DIR/<size>px/ with --out-dir) and, with --out, OUT-panel.png: one column per sample, every stage from low to high resolution",
          ],
        ] as [string, string][])),
  ];
}

/** Flags whose value may differ per stage ('/'-separated); the folder flags are comma-separated instead. */
const PER_STAGE = ['steps', ...Object.keys(SAMPLING_FLAGS), ...Object.keys(GUIDANCE_FLAGS).filter((f) => f !== 'guide-checkpoint' && f !== 'classifier')];
const PER_STAGE_FOLDERS = ['guide-checkpoint', 'classifier'];

/**
 * The flags as stage k of K sees them: a '/'-list (or a ','-list of folders) gives its k-th part;
 * an empty part removes the flag, and a stage without --guidance has no guidance flags at all.
 */
export function stageArgs(args: ParsedArgs, k: number, K: number): ParsedArgs {
  const flags = new Map(args.flags);
  for (const [name, sep] of [...PER_STAGE.map((f) => [f, '/'] as const), ...PER_STAGE_FOLDERS.map((f) => [f, ','] as const)]) {
    const raw = flags.get(name);
    if (raw === undefined || !raw.includes(sep)) continue;
    const parts = raw.split(sep);
    if (parts.length !== K) throw new UsageError(`--${name} ${raw}: ${parts.length} values for ${K} cascade stages (one per stage, separated by '${sep}')`);
    if (parts[k] === '') flags.delete(name);
    else flags.set(name, parts[k]);
  }
  if (!flags.has('guidance')) for (const f of Object.keys(GUIDANCE_FLAGS)) flags.delete(f);
  return { ...args, flags };
}

/** --cascade's folders (at least two: a base and one SR stage). */
function cascadeDirs(args: ParsedArgs): string[] {
  const dirs = args.flags.get('cascade')!.split(',');
  if (dirs.length < 2 || dirs.some((d) => d === '')) throw new UsageError(`--cascade: expected BASE,SR[,SR2] (two or more checkpoint folders), got ${JSON.stringify(args.flags.get('cascade'))}`);
  if (args.positionals.length > 0) throw new UsageError('--cascade names its checkpoints: give no CHECKPOINT');
  return dirs;
}

/** The --aug-level settings: one per comma-separated entry, each one level per SR stage. */
export function augLevelSettings(args: ParsedArgs, srStages: number, { sweep }: { sweep: boolean }): number[][] {
  const raw = args.flags.get('aug-level') ?? '0';
  const entries = raw.split(',');
  if (!sweep && entries.length > 1) throw new UsageError(`--aug-level: expected one level (or S1/S2 per SR stage), got ${JSON.stringify(raw)} (diffuse eval sweeps a comma list)`);
  return entries.map((e) => {
    const parts = e.split('/').map((p) => parseNumber('aug-level', p, { min: 0, max: 1 }));
    if (parts.length === 1) return new Array<number>(srStages).fill(parts[0]);
    if (parts.length !== srStages) throw new UsageError(`--aug-level ${e}: ${parts.length} levels for ${srStages} super-resolution stages`);
    return parts;
  });
}

/** A loaded cascade: its stages (guided as the flags say), their metas and folders, the labels, and what to free. */
interface LoadedCascade {
  stages: CascadeStage[];
  metas: CheckpointMeta[];
  dirs: string[];
  labels: number[] | null;
  describe: string;
  dispose(): void;
}

/** Loads every stage, checks that they chain, and builds each stage's (guided) denoiser and sampling choice from its flags. */
function loadCascade(args: ParsedArgs, n: number): LoadedCascade {
  const dirs = cascadeDirs(args);
  const K = dirs.length;
  const owned: { dispose(): void }[] = [];
  const dispose = () => owned.reverse().forEach((o) => o.dispose());
  try {
    const loaded = dirs.map((d) => {
      const m = loadModel(d);
      owned.push(m.net);
      return m;
    });
    const metas = loaded.map((l) => l.meta);
    const base = metas[0];
    const classFlag = args.flags.get('class');
    const names = base.classNames;
    const k = names?.length ?? 0;
    const labels = !names ? null : classFlag !== undefined ? new Array<number>(n).fill(parseClass(classFlag, names)) : cycleLabels(n, k);
    metas.forEach((m, i) => {
      if (m.classNames && JSON.stringify(m.classNames) !== JSON.stringify(names)) throw new UsageError(`--cascade: stage ${i} (${dirs[i]}) has other classes than the base (${dirs[0]})`);
    });
    const described: string[] = [];
    const stages = loaded.map(({ meta, denoiser }, i): CascadeStage => {
      const a = stageArgs(args, i, K);
      const T = buildSchedule(meta.config)?.T ?? Infinity;
      const steps = intFlag(a, 'steps', Math.min(100, T), { min: 1, max: T === Infinity ? 100_000 : T });
      const choice: SamplingChoice = samplingFlags(a, meta.config);
      let D: Denoiser = denoiser;
      let guided = '';
      const guidance = parseGuidance(a, meta);
      if (guidance) {
        if (labels?.some((y) => y === k)) throw new UsageError('--guidance: guidance steers toward a class; --class none (unconditional) has none to steer toward');
        const prepared = prepareGuidance(denoiser, meta, guidance);
        owned.push(prepared);
        const g = prepared.at(guidanceScales(a, { sweep: false })![0]);
        D = g.denoiser;
        guided = `, ${g.describe}`;
      }
      described.push(`${meta.sampleShape[1]} px: ${dirs[i]} (step ${meta.step}), ${choice.sampler} on the ${choice.grid} grid, ${steps} steps${guided}`);
      return { denoiser: D, config: meta.config, shape: meta.sampleShape, classConditional: meta.classNames !== null, sampling: { ...choice, steps } };
    });
    return { stages, metas, dirs, labels, describe: described.join('; '), dispose };
  } catch (e) {
    dispose();
    throw e;
  }
}

/** The shared run: every stage's images, with a progress bar per stage. */
function runCascade(c: LoadedCascade, o: { n: number; seed: number; batchSize: number; augLevels: number[] }): Tensor[] {
  const batches = Math.ceil(o.n / o.batchSize);
  let bar: Progress | null = null;
  let current = -1;
  try {
    return sampleCascade(c.stages, {
      ...o,
      labels: c.labels,
      onStep: (k, _i, steps) => {
        if (k !== current) {
          bar?.done();
          current = k;
          bar = new Progress(batches * steps, `stage ${k} (${c.metas[k].sampleShape[1]} px)`);
        }
        bar!.tick();
      },
    });
  } finally {
    (bar as Progress | null)?.done();
  }
}

/** `diffuse sample --cascade`: the last stage's images (and, with --save-low-res, every earlier stage's). */
export function cascadeSampleCommand(
  args: ParsedArgs,
  o: { n: number; seed: number; batchSize: number; ncol: number | null; scale: number; write: (x: Tensor, where: { outDir?: string; out: string; ncol?: number }) => string },
): number {
  const c = loadCascade(args, o.n);
  try {
    const [augLevels] = augLevelSettings(args, c.stages.length - 1, { sweep: false });
    const t0 = performance.now();
    const outs = runCascade(c, { n: o.n, seed: o.seed, batchSize: o.batchSize, augLevels });
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    try {
      const k = c.metas[0].classNames?.length;
      const ncol = o.ncol ?? (c.labels && !args.flags.has('class') ? k : undefined);
      const outDir = args.flags.get('out-dir');
      const out = args.flags.get('out') ?? 'samples.png';
      const what = `${o.n} sample${o.n > 1 ? 's' : ''} from the cascade ${c.describe}; aug level ${augLevels.join('/')}, seed ${o.seed}, ${secs} s`;
      process.stdout.write(`wrote ${o.write(outs[outs.length - 1], { outDir, out, ncol })}: ${what}\n`);
      if (args.flags.has('save-low-res') && !outDir) {
        const panel = superResPanel(...outs); // one column per sample: every stage, low to high
        try {
          process.stdout.write(`wrote ${o.write(panel, { out: out.replace(/(\.png)?$/i, '-panel.png'), ncol: o.n })}: the low-res -> high-res panel\n`);
        } finally {
          panel.dispose();
        }
      }
      if (args.flags.has('save-low-res'))
        outs.slice(0, -1).forEach((x, i) => {
          const size = `${c.metas[i].sampleShape[1]}px`;
          const where = outDir ? { outDir: path.join(outDir, size), out } : { out: out.replace(/(\.png)?$/i, `-${size}.png`), ncol };
          process.stdout.write(`wrote ${o.write(x, where)}: stage ${i}'s images\n`);
        });
    } finally {
      outs.forEach((x) => x.dispose());
    }
  } finally {
    c.dispose();
  }
  return 0;
}

/** One measured augmentation setting of `diffuse eval --cascade`. */
export interface CascadeRow {
  augLevels: number[];
  seconds: number;
  metrics: Record<string, MetricValue>;
}

/**
 * `diffuse eval --cascade`: the last stage's images measured (`measure`, the evaluator of the
 * last stage's data) at each --aug-level setting; a JSON report and, for a sweep, FD against s.
 * The base stage's samples are the same at every setting (its seeds do not depend on s).
 */
export function cascadeEvalCommand(
  args: ParsedArgs,
  o: { n: number; seed: number; batchSize?: number; measure: (meta: CheckpointMeta, labels: number[] | null) => { what: string; metrics(x: Tensor): Record<string, MetricValue>; dispose(): void } },
): number {
  const c = loadCascade(args, o.n);
  const last = c.metas[c.metas.length - 1];
  const measure = o.measure(last, c.labels);
  try {
    const settings = augLevelSettings(args, c.stages.length - 1, { sweep: true });
    const batchSize = o.batchSize ?? DEFAULT_BATCH_SIZE;
    console.log(`diffuse eval --cascade: ${c.describe}; ${o.n} samples per setting, seed ${o.seed}; ${measure.what}`);
    const rows: CascadeRow[] = settings.map((augLevels) => {
      const t0 = performance.now();
      const outs = runCascade(c, { n: o.n, seed: o.seed, batchSize, augLevels });
      try {
        const q = quantize(outs[outs.length - 1]);
        try {
          const row = { augLevels, seconds: (performance.now() - t0) / 1000, metrics: measure.metrics(q) };
          console.log(
            `  aug level ${augLevels.join('/')}: ${Object.entries(row.metrics)
              .map(([m, v]) => `${m} ${formatMetric(v)}`)
              .join(', ')} (${formatSeconds(row.seconds)})`,
          );
          return row;
        } finally {
          q.dispose();
        }
      } finally {
        outs.forEach((x) => x.dispose());
      }
    });
    const outDir = args.flags.get('out') ?? defaultReportDir(c.dirs[c.dirs.length - 1]);
    process.stdout.write(writeCascadeReport(outDir, c, rows, o));
  } finally {
    measure.dispose();
    c.dispose();
  }
  return 0;
}

/** The JSON report, the table, and (several settings) FD against the augmentation level. */
function writeCascadeReport(outDir: string, c: LoadedCascade, rows: CascadeRow[], o: { n: number; seed: number }): string {
  fs.mkdirSync(outDir, { recursive: true });
  const tag = `cascade_s${rows.map((r) => r.augLevels.join('-')).join('_')}_n${o.n}_seed${o.seed}`;
  const json = path.join(outDir, `${tag}.json`);
  const stages = c.stages.map((s, i) => ({ checkpoint: c.dirs[i], step: c.metas[i].step, size: s.shape[1], sampler: s.sampling?.sampler, grid: s.sampling?.grid, steps: s.sampling?.steps }));
  writeFileAtomic(json, JSON.stringify({ cascade: stages, n: o.n, seed: o.seed, rows }, null, 1) + '\n');
  const names = [...new Set(rows.flatMap((r) => Object.keys(r.metrics)))];
  const body = rows.map((r) => [r.augLevels.join('/'), ...names.map((m) => (r.metrics[m] ? formatMetric(r.metrics[m]) : '-')), formatSeconds(r.seconds)]);
  let out = `\n${formatColumns(['aug level', ...names, 'time'], body)}\n\nwrote ${json}\n`;
  if (rows.length > 1) {
    const png = path.join(outDir, `${tag}_fd.png`);
    writePNG(
      png,
      linePlotImage([{ name: 'cascade', points: rows.map((r) => [r.augLevels[r.augLevels.length - 1], r.metrics.fd?.value ?? NaN] as [number, number]) }], {
        title: `fd against the augmentation level s (${o.n} samples)`,
        xLabel: 'augmentation level s at sampling',
        logY: true,
      }),
    );
    out += `wrote ${png}\n`;
  }
  return out;
}
