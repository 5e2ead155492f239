/**
 * `diffuse sample [CHECKPOINT]`: images from a checkpoint (the shipped Fashion-MNIST
 * model by default) with any registered sampler on any named grid (default: DDPM
 * ancestral sampling on 100 trailing timesteps), as one grid or one PNG each.
 *
 * @example
 *   diffuse sample --sampler dpmpp-2m --grid karras --steps 20 --out fast.png
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setNumThreads } from '../engine/runtime';
import { encodePNG } from '../data/image-codec';
import { loadModel, withAdapterRecord } from '../training/checkpoint';
import { buildDenoiser, buildSchedule, DEFAULT_BATCH_SIZE, generateSamples } from '../training/build';
import { countEvaluations } from '../sampling/generate';
import { Tensor } from '../engine/tensor';
import { imageGrid, toImages, writeFileAtomic, writePNG } from '../util/image';
import { scatterImage } from '../util/plot';
import { Progress } from '../util/progress';
import { choiceFlag, intFlag, numberFlag, parseArgs, table, UsageError } from './args';
import { batchSizeFlag, SAMPLING_FLAGS, samplingFlags, samplingHelpRows } from './sampling-flags';
import { GUIDANCE_FLAGS, guidanceHelpRows, guidanceScales, parseGuidance, prepareGuidance } from './guidance-flags';
import { shippedDir } from '../util/shipped';
import { loadLora, loraMetadata, mergeLora } from '../nn/lora';
import { adapterRecord } from '../distillation/record';
import { studentDefaults } from './student-flags';
import { CASCADE_FLAGS, cascadeHelpRows, cascadeSampleCommand } from './cascade';

/** The model shipped in the repository (models/fashion-mnist). */
export function shippedModelDir(): string {
  return shippedDir('fashion-mnist');
}

export function sampleHelp(): string {
  return `Usage: diffuse sample [CHECKPOINT] [options]

Draws samples from a checkpoint folder (a training run's --out, or an export) with its
EMA weights, by default with the DDPM ancestral sampler (Ho et al. 2020, Algorithm 2) on
100 trailing-spaced timesteps. With no CHECKPOINT it uses the class-conditional
Fashion-MNIST model shipped in models/fashion-mnist. \`diffuse samplers\` lists the
samplers and grids.

${table([
  ['--n N, -n N', 'number of samples (default 64)'],
  ['--batch-size B', `samples pushed through the network at once (default ${DEFAULT_BATCH_SIZE}, chosen for speed: docs/BENCHMARKS.md); changes speed and memory, never the images`],
  ['--seed S', 'sample i draws its noise from seed S + i (default 0), so --seed 5 --n 1 is image 5 of --seed 0'],
  ['--class C', 'a class name (e.g. Sneaker) or id, or "none" for unconditional; default: cycle through the classes, one column each'],
  ['--steps K', "sampler steps, at most the model's T (default 100; with ddpm on the trailing grid, 1000 = every step of Algorithm 2)"],
  ...samplingHelpRows(),
  ...guidanceHelpRows({ sweep: false }),
  ...cascadeHelpRows({ sweep: false }),
  ['--out FILE', 'write one grid PNG (default samples.png)'],
  ['--out-dir DIR', 'write one PNG per sample instead: DIR/000000.png, ...'],
  ['--ncol N', 'grid columns (default: the number of classes, or sqrt(n))'],
  ['--scale N', 'grid upscaling factor (default 1)'],
  ['--weights W', '"ema" (default when present) or "model" (the raw weights)'],
  ['--lora PATH', "apply a LoRA adapter (a folder with adapter_model.safetensors, PEFT's layout, or a .safetensors file; docs/lora.md), merged into the weights"],
  ['--lora-scale S', 'scale the adapter by S (default 1; 0 = the base model)'],
  ['--resolution R', 'a nested (Matryoshka) model: sample at R px, one of its nested resolutions (default the largest; docs/resolution.md)'],
  ['--threads N', 'CPU threads (default: all cores)'],
  ['-h, --help', 'this help'],
])}

Examples:
  diffuse sample                                     # 64 shipped-model samples -> samples.png
  diffuse sample --class Sneaker -n 16 --out sneakers.png
  diffuse sample -n 1000 --sampler dpmpp-2m --steps 20 --out-dir out/   # in batches; image i is the same in any batching
  diffuse sample runs/fashion-mnist --steps 1000 --out-dir out/
  diffuse sample --sampler dpmpp-2m --grid karras --steps 20   # 20 evaluations instead of 100
  diffuse sample --sampler heun --churn 10 --steps 18
  diffuse sample --class Bag --guidance 3 --n 16                # classifier-free guidance, w = 3
  diffuse sample --guidance 3 --guidance-type auto --guide-checkpoint models/fashion-mnist-guide
  diffuse sample --cascade runs/emoji-16,runs/emoji-sr64 --aug-level 0.2 --steps 100/25 --save-low-res
`;
}

/** A --class value as a class id (numClasses = the null class = unconditional). */
export function parseClass(raw: string, classNames: string[] | null): number {
  if (!classNames) throw new UsageError(`--class ${raw}: this model is not class-conditional`);
  const k = classNames.length;
  if (raw === 'none' || raw === 'null' || raw === 'uncond') return k;
  if (/^\d+$/.test(raw)) {
    const id = Number(raw);
    if (id < k) return id;
    throw new UsageError(`--class ${raw}: class ids are 0..${k - 1}`);
  }
  // Case and punctuation are ignored, and a name matches each '/'-separated part ('T-shirt/top' answers to tshirt).
  const norm = (s: string) => s.toLowerCase().replace(/[^a-z0-9]/g, '');
  const want = norm(raw);
  const hits = classNames.flatMap((c, i) => ([c, ...c.split('/')].some((p) => norm(p) === want) ? [i] : []));
  if (hits.length === 1) return hits[0];
  throw new UsageError(`--class ${raw}: not a class of this model; classes: ${classNames.map((c, i) => `${i} ${c}`).join(', ')} (or none)`);
}

/**
 * Writes samples [n, ...] as one grid PNG (`out`) or one PNG per sample (`outDir`/<seed + i>.png);
 * 2-D points as a scatter plot or points.json. Returns where they went.
 */
export function writeSampleFiles(x: Tensor, { outDir, out, seed, ncol, scale }: { outDir?: string; out: string; seed: number; ncol?: number; scale: number }): string {
  const images = x.ndim === 4;
  if (outDir) {
    fs.mkdirSync(outDir, { recursive: true });
    if (images) toImages(x).forEach((img, i) => writePNG(path.join(outDir, `${String(seed + i).padStart(6, '0')}.png`), img));
    else writeFileAtomic(path.join(outDir, 'points.json'), JSON.stringify(Array.from(x.toFloat64Array())));
    return `${outDir}/`;
  }
  if (path.dirname(out) !== '.') fs.mkdirSync(path.dirname(out), { recursive: true });
  if (images) writePNG(out, imageGrid(x, { ncol, scale }));
  else writeFileAtomic(out, encodePNG(scatterImage(x.toFloat64Array())));
  return out;
}

export async function sampleCommand(argv: readonly string[]): Promise<number> {
  const args = parseArgs(argv, {
    n: 'value',
    'batch-size': 'value',
    seed: 'value',
    class: 'value',
    steps: 'value',
    out: 'value',
    'out-dir': 'value',
    ncol: 'value',
    scale: 'value',
    weights: 'value',
    threads: 'value',
    lora: 'value',
    'lora-scale': 'value',
    resolution: 'value',
    help: 'switch',
    ...SAMPLING_FLAGS,
    ...GUIDANCE_FLAGS,
    ...CASCADE_FLAGS,
  });
  if (args.flags.has('help')) {
    process.stdout.write(sampleHelp());
    return 0;
  }
  for (const f of ['aug-level', 'save-low-res']) if (args.flags.has(f) && !args.flags.has('cascade')) throw new UsageError(`--${f} goes with --cascade BASE,SR (a cascade's super-resolution stages)`);
  if (args.positionals.length > 1) throw new UsageError(`expected at most one CHECKPOINT, got ${args.positionals.length} arguments: ${args.positionals.join(' ')}`);
  if (args.flags.has('out') && args.flags.has('out-dir')) throw new UsageError('give --out (one grid) or --out-dir (one PNG per sample), not both');
  const n = intFlag(args, 'n', 64, { min: 1, max: 100_000 });
  const seed = intFlag(args, 'seed', 0, { min: 0, max: Number.MAX_SAFE_INTEGER - 100_000 });
  const ncolFlag = args.flags.has('ncol') ? intFlag(args, 'ncol', 1, { min: 1 }) : null;
  const scale = intFlag(args, 'scale', 1, { min: 1, max: 16 });
  const weightsFlag = args.flags.has('weights') ? choiceFlag(args, 'weights', ['ema', 'model'] as const, 'ema') : undefined;
  if (args.flags.has('threads')) setNumThreads(intFlag(args, 'threads', 1, { min: 1 }));
  if (args.flags.has('cascade')) {
    for (const f of ['lora', 'lora-scale', 'weights']) if (args.flags.has(f)) throw new UsageError(`--${f} does not apply to --cascade (each stage samples with its EMA weights)`);
    const batchSize = batchSizeFlag(args) ?? DEFAULT_BATCH_SIZE;
    return cascadeSampleCommand(args, { n, seed, batchSize, ncol: ncolFlag, scale, write: (x, w) => writeSampleFiles(x, { ...w, seed, scale }) });
  }
  let dir = args.positionals[0];
  if (!dir) {
    dir = shippedModelDir();
    if (!fs.existsSync(path.join(dir, 'checkpoint.json'))) throw new UsageError(`no CHECKPOINT given, and the shipped model is missing (${dir}/checkpoint.json); pass a checkpoint folder`);
  }
  if (args.flags.has('lora-scale') && !args.flags.has('lora')) throw new UsageError('--lora-scale needs --lora (the adapter to scale)');
  const loraScale = numberFlag(args, 'lora-scale') ?? 1;
  const loaded = loadModel(dir, { weights: weightsFlag, latent: true }); // a latent model's samples are decoded (docs/latent.md)
  const { net, weights, latent } = loaded;
  let { meta, denoiser } = loaded;
  try {
    const lora = args.flags.get('lora');
    if (lora !== undefined) {
      try {
        loadLora(net, lora, { scale: loraScale });
        meta = withAdapterRecord(meta, adapterRecord(loraMetadata(lora), lora)); // an LCM-LoRA adapter makes the base a consistency student
      } catch (e) {
        throw new UsageError(`--lora ${lora}: ${(e as Error).message}`);
      }
      mergeLora(net); // one weight per layer again: sampling costs what the base costs
      if (meta.distillation) denoiser = buildDenoiser(meta.config, net, { consistency: meta.distillation.consistency });
    }
    studentDefaults(args, meta, dir); // a distilled student: its own steps, sampler and grid
    const T = buildSchedule(meta.config)?.T ?? Infinity;
    const steps = intFlag(args, 'steps', Math.min(100, T), { min: 1, max: T === Infinity ? 100_000 : T });
    const choice = samplingFlags(args, meta.config);
    const { sampler, grid } = choice;
    const classNames = meta.classNames;
    const classFlag = args.flags.get('class');
    const k = classNames?.length ?? 0;
    const labels = !classNames ? null : classFlag !== undefined ? new Array<number>(n).fill(parseClass(classFlag, classNames)) : Array.from({ length: n }, (_, i) => i % k);
    const guidance = parseGuidance(args, meta);
    if (guidance && labels?.some((y) => y === k)) throw new UsageError('--guidance: guidance steers toward a class; --class none (unconditional) has none to steer toward');
    const prepared = guidance ? prepareGuidance(denoiser, meta, guidance) : null;
    const scale_ = guidanceScales(args, { sweep: false })?.[0];
    const counted = countEvaluations(denoiser); // NFE per sample: network evaluations (batched CFG: 2 per step)
    const guided = prepared && scale_ !== undefined ? prepared.at(scale_, counted.denoiser) : null;
    const batchSize = batchSizeFlag(args) ?? DEFAULT_BATCH_SIZE;
    const batches = Math.ceil(n / batchSize);
    const bar = new Progress(batches * steps, batches > 1 ? `sample (${batches} batches of ${batchSize})` : 'sample');
    const shape = sampleShapeAt(args.flags.get('resolution'), meta.config.nested, meta.sampleShape);
    const t0 = performance.now();
    let x: Tensor;
    try {
      const decode = latent ? (z: Tensor) => latent.decode(z) : null;
      x = generateSamples(guided?.denoiser ?? counted.denoiser, meta.config, { ...choice, shape, n, seed, steps, labels, batchSize, decode, onStep: () => bar.tick() });
    } finally {
      prepared?.dispose();
    }
    bar.done();
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    try {
      const adapter = lora !== undefined ? ` + LoRA ${lora} x ${loraScale}` : '';
      const decoded = latent ? `, latents [${meta.sampleShape}] decoded by ${latent.record.autoencoder}` : '';
      const what = `${n} sample${n > 1 ? 's' : ''} from ${dir} (step ${meta.step}, ${weights} weights${adapter}${decoded}), ${steps} steps, seed ${seed}, sampler ${sampler} on the ${grid} grid${guided ? `, ${guided.describe}` : ''}, ${counted.nfe(n)} denoiser evaluations (NFE), ${secs} s`;
      const where = writeSampleFiles(x, {
        outDir: args.flags.get('out-dir'),
        out: args.flags.get('out') ?? 'samples.png',
        seed,
        ncol: ncolFlag ?? (labels && classFlag === undefined ? k : undefined),
        scale,
      });
      process.stdout.write(`wrote ${where}: ${what}\n`);
    } finally {
      x.dispose();
    }
  } finally {
    net.dispose();
    latent?.dispose();
  }
  return 0;
}

/** The shape to sample: the checkpoint's, or a nested model's at --resolution R (one of its resolutions). */
function sampleShapeAt(raw: string | undefined, nested: number[], shape: number[]): number[] {
  if (raw === undefined) return shape;
  if (!nested.length) throw new UsageError(`--resolution ${raw}: only a nested (Matryoshka) model samples at several resolutions; this one is ${shape.slice(1).join('x')}`);
  const r = Number(raw);
  if (!nested.includes(r)) throw new UsageError(`--resolution ${raw}: expected one of this model's resolutions, ${nested.join(', ')}`);
  return [shape[0], r, r];
}
