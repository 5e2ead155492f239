/**
 * `diffuse eval [CHECKPOINT]`: the sample quality of a model. It generates samples with the
 * sampler, grid, steps and guidance given (a comma list of --steps or --guidance sweeps
 * them), measures them against the Fashion-MNIST training split in the shipped feature
 * space (fmnist-cnn-v1: Frechet distance, KID, precision, recall, class accuracy), or for
 * 2-D models against held-out data (energy distance, sliced Wasserstein, exact NLL), prints
 * a table, and writes a JSON report (and, for a sweep, a plot) next to the checkpoint (for a
 * shipped model: under runs/eval/ in the working directory). The sweep itself is the library's
 * evaluateSweep (src/eval/sweep.ts); this file parses the flags, calls it and prints.
 *
 * @example
 *   diffuse eval                                        # the shipped model, its default sampler, 1000 samples
 *   diffuse eval --sampler dpmpp-2m --steps 5,10,20,50  # quality against denoiser evaluations
 *   diffuse eval --baseline test                        # the floor: the test split against the training split
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setNumThreads } from '../engine/runtime';
import { Generator } from '../engine/random';
import { dispose, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { fashionMNISTSubset } from '../data/fashion-mnist';
import { TOYS } from '../data/toys';
import { CheckpointMeta, loadModel } from '../training/checkpoint';
import { buildSchedule, deriveSeed } from '../training/build';
import { gridModel } from '../sampling';
import { cycleLabels, datasetReference, imageMetrics, modelNLL, pointMetrics, Reference } from '../eval/evaluate';
import { evaluateSweep, SweepRow, sweepSettings } from '../eval/sweep';
import { DEFAULT_BATCH_SIZE } from '../sampling/generate';
import { defaultReportDir } from '../util/shipped';

export { defaultReportDir };
import { FeatureNet, featureNetFor, isEmojiData } from '../eval/feature-net';
import { CLASSIFIER_DATA_NAMES, ClassifierDataName, loadClassifierData } from '../training/classifier';
import { imageSubset } from '../data/loader';
import { EvalReport, formatColumns, formatMetric, MetricValue } from '../eval/report';
import { writeFileAtomic, writePNG } from '../util/image';
import { cacheDir } from '../util/cache';
import { linePlotImage, Series } from '../util/plot';
import { formatSeconds, Progress } from '../util/progress';
import { asUsage, intFlag, numberList, parseArgs, ParsedArgs, table, UsageError } from './args';
import { GUIDANCE_FLAGS, guidanceHelpRows, guidanceScales, GuidanceSpec, parseGuidance, prepareGuidance } from './guidance-flags';
import { parseClass, shippedModelDir } from './sample';
import { borderTouchRate } from '../eval/border';
import { batchSizeFlag, SAMPLING_FLAGS, samplingFlags, samplingHelpRows } from './sampling-flags';
import { NLL_FLAGS, nllCommand, nllHelpRows } from './eval-nll';
import { studentDefaults } from './student-flags';
import { cascadeEvalCommand, cascadeHelpRows } from './cascade';

export function evalHelp(): string {
  return `Usage: diffuse eval [CHECKPOINT] [options]

Measures the quality of a model's samples. Image models are compared with the
Fashion-MNIST training split in the feature space of the shipped feature network
(fmnist-cnn-v1, models/fashion-mnist-features); emoji models (--data emoji...) with the
emoji training split at 64 px in emoji-cnn-v1's (models/emoji-features), their 16 or 32 px
samples upsampled to 64 so every resolution is measured in one space: Frechet distance (fd), KID (kid, with
its standard error), improved precision and recall, and, for class-conditional samples,
the accuracy of the feature net's classifier on the requested classes; emoji models also get
border, the share of samples whose drawing touches the frame (docs/latent.md). 2-D models are
compared with held-out data: energy distance, sliced Wasserstein-2 (sw2), and the exact
negative log-likelihood (nll, nats) of the held-out points. With no CHECKPOINT: the
shipped Fashion-MNIST model. Seeds are fixed, so a run is reproducible.

A comma list of --steps or of --guidance sweeps it: one row per value, and a plot of
the metrics against the number of denoiser evaluations (NFE) or the guidance scale.

${table([
  ['--n N', 'samples per setting (default 1000; fd falls as n grows: compare at equal n, 10000 for papers)'],
  ['--steps K[,K...]', "sampler steps (default 100, the model's default sampling); a list sweeps them"],
  ...samplingHelpRows(),
  ...guidanceHelpRows({ sweep: true }),
  ...cascadeHelpRows({ sweep: true }),
  ['--class C', 'a class name or id for every sample, or "none" (unconditional); default: cycle through the classes'],
  ...nllHelpRows(),
  ['--seed S', 'sample i draws its noise from seed S + i (default 0)'],
  ['-n N', 'the same as --n'],
  ['--batch-size B', `samples generated per batch (default ${DEFAULT_BATCH_SIZE}, chosen for speed; changes speed and memory, not the samples; --batch B is the old name)`],
  ['--baseline B', '"test" (the test split as if it were samples: the floor any model is compared with) or "noise" (uniform noise images)'],
  ['--data D', 'the dataset of --baseline: fashion-mnist (default), emoji, emoji:google or emoji:twitter (in emoji-cnn-v1, at 64 px)'],
  ['--out DIR', 'where the report goes (default CHECKPOINT/eval; runs/eval/NAME/ in the working directory for a shipped model under models/, which is read-only when installed; eval/ for a baseline)'],
  ['--weights W', '"ema" (default when present) or "model"'],
  ['--threads N', 'CPU threads (default: all cores)'],
  ['--no-cache', 'recompute the reference features of the training split (15-25 s) instead of reading them from the cache (DIFFUSE_CACHE_DIR, default ~/.cache/diffuse)'],
  ['-h, --help', 'this help'],
])}

Examples:
  diffuse eval --n 10000                                  # the shipped model's numbers
  diffuse eval --sampler dpmpp-2m --grid karras --steps 5,10,20,50
  diffuse eval --guidance 1,2,3,5 --sampler dpmpp-2m --steps 20
  diffuse eval --cascade runs/emoji-16,runs/emoji-sr64 --aug-level 0,0.1,0.2,0.4 --steps 100/25
  diffuse eval --baseline test --n 10000
  diffuse eval --baseline test --data emoji --n 700        # the emoji floor (the test split has 704 images)
  diffuse eval --nll both --n 100                         # bits/dim: variational bound and probability-flow ODE
`;
}

export async function evalCommand(argv: readonly string[]): Promise<number> {
  const args = parseArgs(argv, {
    n: 'value',
    steps: 'value',
    class: 'value',
    seed: 'value',
    'batch-size': 'value',
    batch: 'value',
    baseline: 'value',
    data: 'value',
    out: 'value',
    weights: 'value',
    threads: 'value',
    cache: 'bool',
    help: 'switch',
    ...SAMPLING_FLAGS,
    ...GUIDANCE_FLAGS,
    ...NLL_FLAGS,
    cascade: 'value',
    'aug-level': 'value',
  });
  if (args.flags.has('help')) {
    process.stdout.write(evalHelp());
    return 0;
  }
  if (args.positionals.length > 1) throw new UsageError(`expected at most one CHECKPOINT, got ${args.positionals.length} arguments: ${args.positionals.join(' ')}`);
  const n = intFlag(args, 'n', 1000, { min: 2, max: 1_000_000 });
  const seed = intFlag(args, 'seed', 0, { min: 0, max: Number.MAX_SAFE_INTEGER - 1_000_000 });
  const batchSize = batchSizeFlag(args);
  if (args.flags.has('threads')) setNumThreads(intFlag(args, 'threads', 1, { min: 1 }));
  if (args.flags.has('nll')) return nllCommand(args);
  const baseline = args.flags.get('baseline');
  if (baseline !== undefined) return baselineCommand(args, baseline, n, seed);
  if (args.flags.has('data')) throw new UsageError('--data goes with --baseline (a checkpoint is measured against its own data)');
  if (args.flags.has('aug-level') && !args.flags.has('cascade')) throw new UsageError("--aug-level goes with --cascade BASE,SR (a cascade's super-resolution stages)");
  if (args.flags.has('cascade')) return cascadeEvalCommand(args, { n, seed, batchSize, measure: (meta, labels) => disposableMeasure(labels, referenceCache(args), meta.config.data) });

  let dir = args.positionals[0];
  if (!dir) {
    dir = shippedModelDir();
    if (!fs.existsSync(path.join(dir, 'checkpoint.json'))) throw new UsageError(`no CHECKPOINT given, and the shipped model is missing (${dir}/checkpoint.json); pass a checkpoint folder`);
  }
  const weightsFlag = args.flags.get('weights');
  if (weightsFlag !== undefined && weightsFlag !== 'ema' && weightsFlag !== 'model') throw new UsageError(`--weights: expected 'ema' or 'model', got ${JSON.stringify(weightsFlag)}`);
  const { meta, net, denoiser, weights, latent } = loadModel(dir, { weights: weightsFlag, latent: true }); // a latent model's samples are decoded (docs/latent.md)
  const cleanup: { dispose(): void }[] = [net, ...(latent ? [latent] : [])];
  try {
    studentDefaults(args, meta, dir); // a distilled student: its own steps, sampler and grid
    const T = buildSchedule(meta.config)?.T ?? 100_000;
    const stepsList = numberList(args, 'steps', { integer: true, min: 1, max: T }) ?? [Math.min(100, T)];
    const choice = samplingFlags(args, meta.config);
    const guidance = parseGuidance(args, meta);
    const scales = guidanceScales(args, { sweep: true }) ?? [null];
    if (stepsList.length > 1 && scales.length > 1) throw new UsageError('sweep --steps or --guidance, not both at once');
    const k = meta.classNames?.length ?? 0;
    const classFlag = args.flags.get('class');
    const labels = !meta.classNames ? null : classFlag !== undefined ? new Array<number>(n).fill(parseClass(classFlag, meta.classNames)) : cycleLabels(n, k);
    if (guidance && labels?.some((y) => y === k)) throw new UsageError('--guidance: guidance steers toward a class; --class none (unconditional) has none to steer toward');
    const prepared = guidance ? prepareGuidance(denoiser, meta, guidance) : null;
    if (prepared) cleanup.push(prepared);

    const images = meta.sampleShape.length === 3;
    const measure = images ? imageMeasure(cleanup, labels, referenceCache(args), meta.config.data) : pointMeasure(meta, denoiser, n, seed, cleanup);
    const outDir = args.flags.get('out') ?? defaultReportDir(dir);
    console.log(`diffuse eval: ${dir} (step ${meta.step}, ${weights} weights), ${n} samples per setting, ${choice.sampler} on the ${choice.grid} grid, seed ${seed}; ${measure.what}`);
    let bar: Progress | null = null;
    const rows = evaluateSweep({
      denoiser,
      guidance: prepared,
      meta,
      settings: sweepSettings(stepsList, scales),
      measure: (x) => measure.metrics(x),
      spec: { ...choice, n, seed, labels, batchSize, decode: latent ? (z) => latent.decode(z) : null },
      onSetting: ({ steps }, label) => (bar = new Progress(Math.ceil(n / (batchSize ?? DEFAULT_BATCH_SIZE)) * steps, label)),
      onStep: () => bar?.tick(),
      onRow: (row) => {
        bar?.done();
        console.log(
          `  ${formatSeconds(row.seconds)}: ${Object.entries(row.metrics)
            .map(([name, m]) => `${name} ${formatMetric(m)}`)
            .join(', ')}`,
        );
      },
    });
    const report = writeReports(outDir, {
      meta,
      dir,
      weights,
      n,
      seed,
      choice,
      guidance,
      rows,
      space: measure.space,
      reference: measure.reference,
      sweep: stepsList.length > 1 ? 'steps' : scales.length > 1 ? 'guidance' : null,
    });
    process.stdout.write(report);
  } finally {
    for (const c of cleanup.reverse()) c.dispose();
  }
  return 0;
}

/** How samples are measured: the feature-space metrics for images (emoji models: emoji-cnn-v1 against the emoji training split at 64 px; others: fmnist-cnn-v1 against Fashion-MNIST's). */
function imageMeasure(
  cleanup: { dispose(): void }[],
  labels: number[] | null,
  cache: string | false,
  data: string,
): { what: string; space: string; reference: string; metrics(x: Tensor): Record<string, MetricValue> } {
  const fnet = featureNetFor(data);
  cleanup.push(fnet.net);
  const ref = datasetReference(fnet, { cache, data: isEmojiData(data) ? (data as ClassifierDataName) : 'fashion-mnist' });
  cleanup.push(ref);
  return {
    what: `features ${fnet.name}, reference ${ref.name}${referenceSource(ref)}`,
    space: fnet.name,
    reference: ref.name,
    metrics: (x) => ({ ...imageMetrics(fnet, ref, x, { labels }), ...(isEmojiData(data) ? { border: { value: borderTouchRate(x) } } : {}) }),
  }; // border: the share of samples cut by the frame (src/eval/border.ts)
}

/** imageMeasure with its own cleanup list (diffuse eval --cascade). */
function disposableMeasure(labels: number[] | null, cache: string | false, data: string): ReturnType<typeof imageMeasure> & { dispose(): void } {
  const cleanup: { dispose(): void }[] = [];
  return { ...imageMeasure(cleanup, labels, cache, data), dispose: () => cleanup.reverse().forEach((c) => c.dispose()) };
}

/** The 2-D metrics against held-out points of the model's toy (drawn from their own seed stream). */
function pointMeasure(
  meta: CheckpointMeta,
  D: Denoiser,
  n: number,
  seed: number,
  cleanup: { dispose(): void }[],
): { what: string; space: string; reference: string; metrics(x: Tensor): Record<string, MetricValue> } {
  const toy = Object.hasOwn(TOYS, meta.config.data) ? TOYS[meta.config.data as keyof typeof TOYS] : null;
  if (!toy) throw new UsageError(`${meta.config.data}: diffuse eval knows image models and the 2-D toys (${Object.keys(TOYS).join(', ')})`);
  const heldOut = toy(Math.max(n, 1000), new Generator(deriveSeed(seed, 0x4e1d)));
  cleanup.push(heldOut);
  const { sigmaMin, sigmaMax } = gridModel(buildSchedule(meta.config));
  const ref = `${meta.config.data} held out (${heldOut.dim(0)})`;
  // The model's NLL, whatever the sampler: computed once (on the first 500 held-out points), before any setting's clock starts.
  const nll = tidy(() => modelNLL(D, heldOut.narrow(0, 0, Math.min(500, heldOut.dim(0))), { sigmaMin, sigmaMax }));
  return { what: `reference ${ref}; nll ${formatMetric(nll)} nats`, space: 'data', reference: ref, metrics: (x) => ({ ...pointMetrics(x, heldOut), nll }) };
}

interface ReportInput {
  meta: CheckpointMeta;
  dir: string;
  weights: string;
  n: number;
  seed: number;
  choice: ReturnType<typeof samplingFlags>;
  guidance: Omit<GuidanceSpec, 'scale'> | null;
  rows: SweepRow[];
  space: string;
  reference: string;
  sweep: 'steps' | 'guidance' | null;
}

/** The JSON report (one EvalReport per setting), the sweep plot, and the table printed. */
function writeReports(outDir: string, r: ReportInput): string {
  fs.mkdirSync(outDir, { recursive: true });
  const reports: (EvalReport & Record<string, unknown>)[] = r.rows.map((row) => ({
    space: r.space,
    reference: r.reference,
    checkpoint: r.dir,
    checkpointStep: r.meta.step,
    weights: r.weights,
    sampler: r.choice.sampler,
    grid: r.choice.grid,
    eta: r.choice.eta ?? null,
    churn: r.choice.churn ?? null,
    clip: r.choice.clip ?? true,
    steps: row.steps,
    nfe: row.nfe,
    guidance: row.guidance,
    guidanceType: row.guidance === null ? null : r.guidance!.type,
    guide: r.guidance?.guide ?? null,
    seed: r.seed,
    n: r.n,
    seconds: row.seconds,
    metrics: row.metrics,
  }));
  const tag = [
    r.choice.sampler,
    r.choice.grid,
    `steps${r.rows
      .map((x) => x.steps)
      .filter((v, i, a) => a.indexOf(v) === i)
      .join('-')}`,
    r.guidance ? `${r.guidance.type}${r.rows.map((x) => x.guidance).join('-')}` : '',
    `n${r.n}`,
    `seed${r.seed}`,
  ]
    .filter(Boolean)
    .join('_');
  const json = path.join(outDir, `${tag}.json`);
  writeFileAtomic(json, JSON.stringify(reports.length === 1 ? reports[0] : reports, null, 1) + '\n');
  const names = [...new Set(r.rows.flatMap((row) => Object.keys(row.metrics)))];
  const head = ['steps', 'NFE', 'guidance', ...names, 'time'];
  const body = r.rows.map((row) => [
    String(row.steps),
    String(row.nfe),
    row.guidance === null ? '-' : String(row.guidance),
    ...names.map((m) => (row.metrics[m] ? formatMetric(row.metrics[m]) : '-')),
    formatSeconds(row.seconds),
  ]);
  let out = `\n${formatColumns(head, body)}\n\nwrote ${json}\n`;
  if (r.sweep) {
    const x = (row: SweepRow) => (r.sweep === 'steps' ? row.nfe : row.guidance!);
    const plots = names.filter((m) => m !== 'kid');
    for (const m of plots) {
      const png = path.join(outDir, `${tag}_${m}.png`);
      const series: Series[] = [{ name: r.sweep === 'steps' ? r.choice.sampler : r.guidance!.type, points: r.rows.map((row) => [x(row), row.metrics[m]?.value ?? NaN] as [number, number]) }];
      writePNG(
        png,
        linePlotImage(series, {
          title: `${m} (${r.space}, ${r.n} samples)`,
          xLabel: r.sweep === 'steps' ? 'denoiser evaluations (NFE)' : 'guidance scale',
          logX: r.sweep === 'steps',
          logY: m === 'fd',
        }),
      );
      out += `wrote ${png}\n`;
    }
  }
  return out;
}

/** The reference cache folder, or false for --no-cache. */
function referenceCache(args: ParsedArgs): string | false {
  return args.flags.get('cache') === 'false' ? false : cacheDir('eval-reference');
}

/** ' (cached)' / ' (computed, cached in FILE)' / '': where the reference features came from. */
function referenceSource(ref: Reference): string {
  if (ref.source === 'cache') return ` (from the cache, ${ref.cacheFile})`;
  return ref.cacheFile ? ` (features computed, cached in ${ref.cacheFile})` : '';
}

/** --baseline test|noise: the test split, or uniform noise images, measured as if they were samples. */
function baselineCommand(args: ParsedArgs, baseline: string, n: number, seed: number): number {
  if (baseline !== 'test' && baseline !== 'noise') throw new UsageError(`--baseline: expected 'test' or 'noise', got ${JSON.stringify(baseline)}`);
  if (args.positionals.length > 0) throw new UsageError('--baseline measures data, not a checkpoint: give no CHECKPOINT');
  const data = args.flags.get('data') ?? 'fashion-mnist';
  if (!(CLASSIFIER_DATA_NAMES as readonly string[]).includes(data)) throw new UsageError(`--data: expected ${CLASSIFIER_DATA_NAMES.map((d) => `'${d}'`).join(', ')}, got ${JSON.stringify(data)}`);
  const fnet: FeatureNet = featureNetFor(data);
  let ref: Reference | null = null;
  try {
    ref = datasetReference(fnet, { data: data as ClassifierDataName, cache: referenceCache(args) });
    console.log(`diffuse eval: baseline ${baseline}, ${n} images; features ${fnet.name}, reference ${ref.name}${referenceSource(ref)}`);
    const t0 = performance.now();
    const { x, labels } = baseline === 'test' ? asUsage(() => testSubset(data as ClassifierDataName, n, seed)) : { x: noiseImages(fnet, n, seed), labels: null };
    try {
      const metrics = { ...imageMetrics(fnet, ref, x, { labels }), ...(isEmojiData(data) ? { border: { value: borderTouchRate(x) } } : {}) };
      const seconds = (performance.now() - t0) / 1000;
      const outDir = args.flags.get('out') ?? 'eval';
      fs.mkdirSync(outDir, { recursive: true });
      const json = path.join(outDir, `baseline-${baseline}${data === 'fashion-mnist' ? '' : `_${data.replace(':', '-')}`}_n${n}_seed${seed}.json`);
      writeFileAtomic(json, JSON.stringify({ baseline, data, space: fnet.name, reference: ref.name, n, seed, seconds, metrics }, null, 1) + '\n');
      const rows = Object.entries(metrics).map(([m, v]) => [m, formatMetric(v)] as [string, string]);
      process.stdout.write(`baseline ${baseline}: ${n} images against ${ref.name} in ${fnet.name}\n${table(rows)}\nwrote ${json}\n`);
    } finally {
      dispose([x]);
    }
  } finally {
    ref?.dispose();
    fnet.net.dispose();
  }
  return 0;
}

/** n images of uniform noise in 0..255 (uint8), seeded, of the feature net's shape ([n, 1, 28, 28] or [n, 3, 64, 64]). */
function noiseImages(fnet: FeatureNet, n: number, seed: number): Tensor {
  const { inChannels: c, imageSize: s } = fnet.net.config;
  return tidy(() => new Generator(seed).randint(0, 256, [n, c, s, s]).to({ dtype: 'uint8' }));
}

/** n images of the test split (a seeded subset), as --baseline test measures them. */
function testSubset(data: ClassifierDataName, n: number, seed: number): { x: Tensor; labels: number[] } {
  if (data === 'fashion-mnist') return fashionMNISTSubset(n, { split: 'test', seed });
  const ds = loadClassifierData(data, 'test');
  try {
    return imageSubset(ds, n, { seed, what: `the ${data} test split` });
  } finally {
    dispose([ds.images, ds.labels]);
  }
}
