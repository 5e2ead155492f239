/**
 * `diffuse distill yardstick STUDENT... [--teacher DIR]`: the yardstick of src/distillation/yardstick.ts
 * from the command line: loads the teacher and the students, measures them in the shipped feature
 * space (imageMetrics, classHistogram), prints the table and writes yardstick.json and nfe-fd.png.
 *
 * @example
 *   diffuse distill yardstick runs/pd/steps-8 runs/pd/steps-4 --n 1000
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { setNumThreads } from '../engine/runtime';
import { classHistogram, cycleLabels, datasetReference, imageMetrics } from '../eval/evaluate';
import { featureNetFor, isEmojiData } from '../eval/feature-net';
import { formatColumns, formatMetric } from '../eval/report';
import { ClassifierDataName } from '../training/classifier';
import { loadModel } from '../training/checkpoint';
import { Tensor } from '../engine/tensor';
import { yardstick, yardstickChart, YardstickRow, YardstickRowCache, YardstickStudent, YARDSTICK_SOLVERS, SolverChoice } from '../distillation/yardstick';
import { cacheDir } from '../util/cache';
import { writeFileAtomic, writePNG } from '../util/image';
import { Progress } from '../util/progress';
import { DEFAULT_BATCH_SIZE } from '../sampling/generate';
import { intFlag, numberFlag, numberList, parseArgs, UsageError } from './args';
import { prepareGuidance } from './guidance-flags';
import { shippedModelDir } from './sample';

export const YARDSTICK_FLAGS = {
  teacher: 'value',
  n: 'value',
  seed: 'value',
  'reference-steps': 'value',
  guidance: 'value',
  solvers: 'value',
  out: 'value',
  'batch-size': 'value',
  threads: 'value',
  'student-steps': 'value',
  cache: 'bool',
  help: 'switch',
} as const;

/** Help rows of the yardstick. */
export function yardstickHelpRows(): [string, string][] {
  return [
    ['STUDENT...', 'student folders (each sampled at the steps, sampler and grid it was distilled for); none: the reference only'],
    ['--teacher DIR', 'the teacher (default: the shipped models/fashion-mnist)'],
    ['--student-steps K,...', 'sample every student at each of these steps (default: each at its own; e.g. 1,2 for consistency students)'],
    ['--n N', 'samples per generation, the same seeds and labels for all (default 1000)'],
    ['--reference-steps K', "the teacher's DDPM steps of FD_reference (default 1000)"],
    ['--guidance W', 'the teacher under cfg w = W and guided students at w = W (default: unguided)'],
    ['--solvers S:G,...', `the teacher's solvers at each student's NFE (default ${YARDSTICK_SOLVERS.map((s) => `${s.sampler}:${s.grid}`).join(',')})`],
    [
      '--out DIR',
      'where yardstick.json and nfe-fd.png go (default runs/yardstick); each measured row is kept in DIR/rows and reused by a later run with the same --out (--no-cache: measure them again)',
    ],
    ['--seed S, --batch-size B, --threads N, --no-cache', 'as diffuse eval'],
  ];
}

export function yardstickCommand(argv: readonly string[]): number {
  const args = parseArgs(argv, YARDSTICK_FLAGS);
  if (args.flags.has('help')) throw new UsageError('see diffuse distill --help');
  const n = intFlag(args, 'n', 1000, { min: 2, max: 1_000_000 });
  const seed = intFlag(args, 'seed', 0, { min: 0, max: Number.MAX_SAFE_INTEGER - 1_000_000 });
  const refSteps = intFlag(args, 'reference-steps', 1000, { min: 1 });
  const scale = numberFlag(args, 'guidance') ?? null;
  const batchSize = args.flags.has('batch-size') ? intFlag(args, 'batch-size', 1, { min: 1 }) : undefined;
  if (args.flags.has('threads')) setNumThreads(intFlag(args, 'threads', 1, { min: 1 }));
  const solvers = solversFlag(args.flags.get('solvers'));
  const teacherDir = args.flags.get('teacher') ?? shippedModelDir();
  const cleanup: { dispose(): void }[] = [];
  try {
    const teacher = loadModel(teacherDir, { latent: true }); // a latent model's samples are decoded (docs/latent.md)
    cleanup.push(teacher.net, ...(teacher.latent ? [teacher.latent] : []));
    if (teacher.meta.sampleShape.length !== 3) throw new UsageError(`--teacher ${teacherDir}: the yardstick measures image models`);
    if (refSteps > (teacher.meta.config.timesteps ?? refSteps)) throw new UsageError(`--reference-steps ${refSteps}: the teacher has ${teacher.meta.config.timesteps} timesteps`);
    const tGuidance = scale !== null ? prepareGuidance(teacher.denoiser, teacher.meta, { type: 'cfg' }) : null;
    const studentSteps = numberList(args, 'student-steps', { integer: true, min: 1 }) ?? null;
    const students: YardstickStudent[] = args.positionals.flatMap((dir) => {
      const s = loadModel(dir, { latent: true });
      cleanup.push(s.net, ...(s.latent ? [s.latent] : []));
      const rec = s.meta.distillation;
      if (!rec) throw new UsageError(`${dir}: not a distilled student (its checkpoint has no distillation record)`);
      if (JSON.stringify(s.meta.classNames) !== JSON.stringify(teacher.meta.classNames) || JSON.stringify(s.meta.sampleShape) !== JSON.stringify(teacher.meta.sampleShape))
        throw new UsageError(`${dir}: not a student of ${teacherDir}'s task (classes or sample shape differ)`);
      if (s.meta.latent?.sha256 !== teacher.meta.latent?.sha256)
        throw new UsageError(
          `${dir}: not a student of ${teacherDir}'s task (its samples decode with ${s.meta.latent?.autoencoder ?? 'no autoencoder'}, the teacher's with ${teacher.meta.latent?.autoencoder ?? 'none'})`,
        );
      if (scale === null && rec.guidance.embedded) throw new UsageError(`${dir}: a guided student (w in [${rec.guidance.embedded.join(', ')}]); give --guidance W`);
      if (scale !== null && rec.guidance.teacherScale !== null && rec.guidance.teacherScale !== scale)
        throw new UsageError(`--guidance ${scale}: ${dir} has the teacher's cfg w = ${rec.guidance.teacherScale} built in`);
      const guidance = scale !== null && rec.guidance.embedded ? prepareGuidance(s.denoiser, s.meta, { type: 'cfg' }) : null;
      const id = checkpointId(dir);
      return (studentSteps ?? [rec.sampling.steps]).map((steps) => ({
        id,
        name: studentSteps ? `${dir}@${steps}` : dir,
        group: `${path.basename(path.dirname(path.resolve(dir)))}${studentSteps ? `/${path.basename(path.resolve(dir))}` : ''}`, // a run's rounds share a line; with --student-steps each folder has its own
        meta: s.meta,
        denoiser: s.denoiser,
        guidance,
        decode: s.latent ? (z: Tensor) => s.latent!.decode(z) : null,
        steps,
        sampler: rec.sampling.sampler,
        grid: rec.sampling.grid,
        ...(rec.consistency ? { sigmaMin: rec.consistency.sigmaMin } : {}),
      }));
    });
    const fnet = featureNetFor(teacher.meta.config.data);
    cleanup.push(fnet.net);
    const ref = datasetReference(fnet, {
      cache: args.flags.get('cache') === 'false' ? false : cacheDir('eval-reference'),
      data: isEmojiData(teacher.meta.config.data) ? (teacher.meta.config.data as ClassifierDataName) : 'fashion-mnist',
    });
    cleanup.push(ref);
    const labels = teacher.meta.classNames ? cycleLabels(n, teacher.meta.classNames.length) : null;
    let bar: Progress | null = null;
    console.log(
      `diffuse distill yardstick: teacher ${teacherDir}, ${students.length} student(s), ${n} samples each, seed ${seed}${scale !== null ? `, w = ${scale}` : ''}; features ${fnet.name}, reference ${ref.name}`,
    );
    const out = args.flags.get('out') ?? 'runs/yardstick';
    const useCache = args.flags.get('cache') !== 'false';
    const report = yardstick({
      teacher: { meta: teacher.meta, denoiser: teacher.denoiser, guidance: tGuidance, decode: teacher.latent ? (z) => teacher.latent!.decode(z) : null, id: checkpointId(teacherDir) },
      rowCache: rowFiles(path.join(out, 'rows'), `${fnet.name} ${ref.name}`, useCache),
      students,
      scale,
      n,
      seed,
      labels,
      batchSize,
      referenceSteps: refSteps,
      solvers,
      measure: (x) => imageMetrics(fnet, ref, x, { labels }),
      histogram: (x) => classHistogram(fnet, x),
      onSetting: (label, steps) => {
        bar?.done();
        bar = new Progress(Math.ceil(n / (batchSize ?? DEFAULT_BATCH_SIZE)) * steps, label);
      },
      onStep: () => bar?.tick(),
    });
    (bar as Progress | null)?.done();
    fs.mkdirSync(out, { recursive: true });
    const json = path.join(out, 'yardstick.json');
    writeFileAtomic(json, JSON.stringify({ teacher: teacherDir, referenceSteps: refSteps, ...report }, null, 1) + '\n');
    const png = path.join(out, 'nfe-fd.png');
    writePNG(png, yardstickChart(report));
    type Row = { label: string; nfe: number; metrics: Record<string, { value: number; stderr?: number }> };
    const row = (r: Row, ratio: string, gap: string) => [
      r.label,
      String(r.nfe),
      ...['fd', 'kid', 'precision', 'recall', 'accuracy'].map((k) => (r.metrics[k] ? formatMetric(r.metrics[k], 3) : '-')),
      ratio,
      gap,
    ];
    const head = ['model', 'NFE', 'fd', 'kid', 'precision', 'recall', 'accuracy', 'FD/FD_ref', 'G(N)'];
    const rows = [
      row(report.reference, '1', '-'),
      ...report.solvers.map((r) => row(r, (r.metrics.fd.value / report.reference.metrics.fd.value).toFixed(2), '-')),
      ...report.students.map((r) => row(r, r.fdRatio.toFixed(2), r.gap === null ? '-' : r.gap.toFixed(2))),
    ];
    const hist = report.students.map((r) => `  ${r.name}: ${r.histogram?.join(' ') ?? '-'}`).join('\n');
    process.stdout.write(
      `\n${formatColumns(head, rows)}\n\nclass histograms (samples per predicted class):\n  reference: ${report.reference.histogram?.join(' ') ?? '-'}\n${hist}\n\nwrote ${json}\nwrote ${png}\n`,
    );
  } finally {
    for (const c of cleanup.reverse()) c.dispose();
  }
  return 0;
}

/** A digest of DIR/checkpoint.json, which names the weights by their SHA-256: the model's id for the row cache. */
function checkpointId(dir: string): string {
  return createHash('sha256')
    .update(fs.readFileSync(path.join(dir, 'checkpoint.json')))
    .digest('hex');
}

/** The row cache as files DIR/<digest of the space and the key>.json: a later run with the same --out reuses them. */
function rowFiles(dir: string, space: string, read: boolean): YardstickRowCache {
  const file = (key: string) => path.join(dir, `${createHash('sha256').update(`${space}\n${key}`).digest('hex').slice(0, 24)}.json`);
  return {
    get: (key) => {
      if (!read) return undefined;
      try {
        const r = JSON.parse(fs.readFileSync(file(key), 'utf8')) as { key: string; row: YardstickRow };
        if (r.key !== key) return undefined;
        console.log(`reusing ${r.row.label} (${path.relative('.', file(key))})`);
        return r.row;
      } catch {
        return undefined; // not measured yet (or unreadable: measured again)
      }
    },
    set: (key, row) => {
      fs.mkdirSync(dir, { recursive: true });
      writeFileAtomic(file(key), JSON.stringify({ key, row }) + '\n');
    },
  };
}

/** --solvers sampler:grid,...: checked names (default YARDSTICK_SOLVERS). */
function solversFlag(raw: string | undefined): SolverChoice[] | undefined {
  if (raw === undefined) return undefined;
  return raw.split(',').map((p) => {
    const [sampler, grid] = p.split(':');
    if (!sampler || !grid) throw new UsageError(`--solvers: expected sampler:grid pairs separated by commas, got ${JSON.stringify(raw)}`);
    return { sampler, grid };
  });
}
