/**
 * Training, evaluating, saving and loading the image classifier of src/models/classifier.ts.
 *
 * - Clean classifier (noise 'none'): cross-entropy on the train images of Fashion-MNIST
 *   (28 x 28 gray, 10 classes) or emoji (`dataset: 'emoji'`: RGB 16/32/64 px, 9 categories,
 *   random left-right flips; the dataset sets the net's channels, classes, size and stem).
 * - Noisy classifier (noise 'ddpm', for classifier guidance): each sample gets its own
 *   sigma = sigma_t of the linear-beta DDPM schedule with t ~ Uniform{1..1000} (Ho et al.
 *   2020, Algorithm 1; Dhariwal & Nichol 2021 train their classifier on the diffusion
 *   model's own noise levels), sigma in [0.01, 157], and sees x = x0 + sigma n.
 *
 * Training uses the TRAIN split only (Adam, seeded batches from DataLoader, a cosine
 * learning rate); evaluation uses the TEST split. A saved classifier is a folder:
 *
 *   weights.safetensors   the state dict (float32)
 *   classifier.json       name, architecture config, accuracies, the training command and
 *                         options, and the weights' size and SHA-256; written last and
 *                         atomically, so it is the commit (a crash leaves no half-written net).
 *
 * ClassifierTrainer is the classifier task on the shared training loop (loop.ts), behind
 * trainClassifier: it checkpoints into a folder (classifier-checkpoint.json and two tensor
 * files: weights, Adam state, step, losses, loader position, noise generator state) every
 * N steps and when stopped, and ClassifierTrainer.resume() continues bit for bit as if
 * never stopped.
 *
 * @example
 *   const { net, losses } = trainClassifier({ noise: 'ddpm', steps: 1000, seed: 0 });
 *   const acc = evaluateClassifier(net, loadFashionMNIST({ split: 'test' }), { sigma: 1 });
 *   saveClassifier('runs/cls', net, { name: 'my-net', testAccuracy: acc, ... });
 *   const again = loadClassifier('runs/cls').net;
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tensor } from '../engine/create';
import * as F from '../engine/functional';
import { Generator } from '../engine/random';
import { loadSafetensors, saveSafetensors } from '../engine/safetensors';
import { dispose, noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { discreteVP, linearBetas } from '../core/schedules';
import { EMOJI_CATEGORIES, EMOJI_SIZES, EMOJI_STYLES, EmojiStyle, loadEmoji } from '../data/emoji';
import { loadFashionMNIST } from '../data/fashion-mnist';
import { DataLoader, DataLoaderState, ImageDataset } from '../data/loader';
import { Classifier, ClassifierConfig, resolveClassifierConfig } from '../models/classifier';
import { Adam } from '../optim/adam';
import { cosineSchedule, linearWarmupSchedule } from '../optim/schedule';
import { writeFileAtomic } from '../util/image';
import { CheckpointError, decodeFloats, diffuseVersion, FileRecord, readCheckpointJson } from './checkpoint';
import { CheckpointFormat, LoopResult, TrainingLoop, TrainPart } from './loop';
import { checkValue, FieldSpec } from './options';
import { discreteSigma, SigmaSampler } from './sigma-sampling';
import { shippedDir } from '../util/shipped';

/** How training noises the images: not at all, or with the DDPM schedule's sigmas. */
export type ClassifierNoise = 'none' | 'ddpm';

/** The datasets a classifier trains on by name: Fashion-MNIST (28 x 28 gray, 10 classes) or emoji (RGB 16/32/64 px, 9 categories; one style or both). */
export type ClassifierDataName = 'fashion-mnist' | 'emoji' | 'emoji:google' | 'emoji:twitter';
export const CLASSIFIER_DATA_NAMES: readonly ClassifierDataName[] = ['fashion-mnist', 'emoji', 'emoji:google', 'emoji:twitter'];

const isEmoji = (d: ClassifierDataName) => d !== 'fashion-mnist';

/** The image size a dataset trains at by default: 28 for Fashion-MNIST, 64 for emoji. */
export function defaultClassifierImageSize(dataset: ClassifierDataName): number {
  return isEmoji(dataset) ? 64 : 28;
}

/**
 * The architecture fields a dataset fixes: channels, classes, image size and the stem (space-to-depth 4
 * at 64 px, so the feature maps stay at 16 x 16 or less). Fashion-MNIST keeps the defaults (fmnist-cnn-v1).
 *
 * @example
 *   classifierDataConfig('emoji', 64) // { inChannels: 3, numClasses: 9, imageSize: 64, stem: 4 }
 */
export function classifierDataConfig(dataset: ClassifierDataName, imageSize: number): Partial<ClassifierConfig> {
  checkClassifierImageSize(dataset, imageSize);
  if (!isEmoji(dataset)) return {};
  return { inChannels: 3, numClasses: EMOJI_CATEGORIES.length, imageSize, stem: imageSize >= 64 ? 4 : 2 };
}

function checkClassifierImageSize(dataset: ClassifierDataName, imageSize: number): void {
  if (isEmoji(dataset) && !EMOJI_SIZES.includes(imageSize)) throw new RangeError(`train-classifier: imageSize must be 16, 32 or 64 for ${dataset} (2 x 2 means of the 64 px emoji), got ${imageSize}`);
  if (!isEmoji(dataset) && imageSize !== 28) throw new RangeError(`train-classifier: imageSize must be 28 for fashion-mnist, got ${imageSize}`);
}

/**
 * A split of a named dataset as uint8 images and labels (the caller disposes images and labels).
 *
 * @example
 *   const test = loadClassifierData('emoji', 'test', 64); // images uint8 [704, 3, 64, 64], 9 classNames
 */
export function loadClassifierData(dataset: ClassifierDataName, split: 'train' | 'test', imageSize = defaultClassifierImageSize(dataset)): ImageDataset {
  checkClassifierImageSize(dataset, imageSize);
  if (!isEmoji(dataset)) return loadFashionMNIST({ split });
  const styles = dataset === 'emoji' ? EMOJI_STYLES : [dataset.slice('emoji:'.length) as EmojiStyle];
  const e = loadEmoji({ split, size: imageSize, styles });
  e.styles.dispose();
  return { images: e.images, labels: e.labels, classNames: e.classNames };
}

export interface ClassifierTrainOptions {
  /** 'none' (a clean classifier, default) or 'ddpm' (noise-conditional, for guidance). */
  noise?: ClassifierNoise;
  /** Optimizer steps (default 1200: 2.6 epochs at batch 128). */
  steps?: number;
  /** Images per step (default 128). */
  batchSize?: number;
  /** Peak learning rate of the cosine schedule (default 2e-3). */
  lr?: number;
  /** Warm-up steps of the cosine schedule (default min(50, floor(steps / 10))). */
  warmupSteps?: number;
  /** Seed of the weights, the batches and the noise (default 0). */
  seed?: number;
  /** The named dataset whose train split it trains on (default 'fashion-mnist'); it sets channels, classes and the image size of the net. */
  dataset?: ClassifierDataName;
  /** The image size for the named dataset (default 28 for Fashion-MNIST, 64 for emoji; emoji also 16 or 32). */
  imageSize?: number;
  /** Flip each training image left-right with probability 1/2 (default: true for emoji, false for Fashion-MNIST). */
  flip?: boolean;
  /** Architecture (noiseConditional is set from `noise`; channels, classes, imageSize and stem default to the dataset's). */
  config?: Partial<ClassifierConfig>;
  /** The training images (default: the train split of `dataset`). */
  data?: ImageDataset;
  /** Progress bar stream (default process.stderr; null: silent). */
  log?: NodeJS.WritableStream | null;
}

export interface ClassifierTrainResult {
  net: Classifier;
  /** The loss of every step. */
  losses: number[];
  seconds: number;
}

/** The sigma sampler of a noise kind (null for 'none'). */
export function classifierSigmaSampler(noise: ClassifierNoise): SigmaSampler | null {
  if (noise === 'none') return null;
  if (noise === 'ddpm') return discreteSigma(discreteVP(linearBetas()));
  throw new TypeError(`classifier noise must be 'none' or 'ddpm', got ${JSON.stringify(noise)}`);
}

/** Cross-entropy of the net on x0 (clean), or on x0 + sigma n with a sigma per sample. [] scalar. */
export function classifierLoss(net: Classifier, x0: Tensor, labels: Tensor, sampler: SigmaSampler | null, generator: Generator): Tensor {
  return tidy(() => {
    if (!sampler) return F.crossEntropy(net.forward(x0), labels);
    const sigma = sampler(x0.dim(0), generator, { dtype: x0.dtype }); // [B]
    const x = x0.add(generator.randnLike(x0).mul(sigma.reshape([-1, 1, 1, 1]))); // x = x0 + sigma n
    return F.crossEntropy(net.forward(x, sigma), labels);
  });
}

/**
 * Trains a classifier (see the module comment) in one synchronous call, with no
 * checkpoints; the caller disposes result.net. ClassifierTrainer is the same loop with
 * checkpoints, resume and Ctrl-C.
 */
export function trainClassifier(opts: ClassifierTrainOptions = {}): ClassifierTrainResult {
  const t = ClassifierTrainer.create(opts);
  let losses: number[];
  try {
    losses = t.runSync().losses;
  } catch (e) {
    t.dispose();
    throw e;
  }
  const seconds = t.seconds;
  return { net: t.releaseNet(), losses, seconds };
}

/**
 * Top-1 accuracy on a labeled dataset (uint8 images), batched under noGrad. With `sigma`,
 * each image is noised as x0 + sigma n (n from a Generator seeded by `seed`, so the number
 * is reproducible) and the net is told sigma.
 */
export function evaluateClassifier(net: Classifier, data: ImageDataset, { sigma, batchSize = 500, seed = 12345 }: { sigma?: number; batchSize?: number; seed?: number } = {}): number {
  if (sigma !== undefined && !(sigma > 0)) throw new RangeError(`evaluateClassifier: sigma must be positive, got ${sigma}`);
  const n = data.images.dim(0);
  const g = new Generator(seed);
  let correct = 0;
  for (let i = 0; i < n; i += batchSize)
    correct += noGrad(() =>
      tidy(() => {
        const len = Math.min(batchSize, n - i);
        let x = data.images.narrow(0, i, len).float().div(127.5).sub(1); // [b, 1, H, W] in [-1, 1]
        const s = sigma === undefined ? undefined : tensor([sigma]).expand([len]);
        if (s) x = x.add(g.randnLike(x).mul(sigma!));
        const pred = net.forward(x, s).argmax(1);
        return pred
          .eq(data.labels.narrow(0, i, len))
          .sum()
          .item();
      }),
    );
  return correct / n;
}

// ---- the saved format --------------------------------------------------------------

export const CLASSIFIER_FILE = 'classifier.json';
export const CLASSIFIER_WEIGHTS = 'weights.safetensors';
export const CLASSIFIER_FORMAT = 'diffuse-classifier';

/** What classifier.json holds. */
export interface ClassifierMeta {
  format: typeof CLASSIFIER_FORMAT;
  formatVersion: 1;
  /** The net's published name, e.g. "fmnist-cnn-v1": fixed weights; a changed net gets a new name. */
  name: string;
  diffuse: string;
  createdAt: string;
  config: ClassifierConfig;
  numParameters: number;
  classNames: string[];
  /** Top-1 accuracy on the test split (clean images). */
  testAccuracy: number;
  /** Test accuracy at fixed noise levels (noise-conditional nets), keyed by sigma. */
  accuracyBySigma: Record<string, number> | null;
  /** How it was trained. */
  training: {
    noise: ClassifierNoise;
    dataset?: ClassifierDataName;
    imageSize?: number;
    flip?: boolean;
    steps: number;
    batchSize: number;
    lr: number;
    seed: number;
    seconds: number;
    finalLoss: number;
    command: string;
  };
  weights: { file: string; bytes: number; sha256: string };
}

/** Writes a classifier folder: the weights, then classifier.json (atomically, the commit). */
export function saveClassifier(
  dir: string,
  net: Classifier,
  meta: Omit<ClassifierMeta, 'format' | 'formatVersion' | 'diffuse' | 'createdAt' | 'config' | 'numParameters' | 'weights'>,
): ClassifierMeta {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, CLASSIFIER_WEIGHTS);
  saveSafetensors(file, net.stateDict(), { format: CLASSIFIER_FORMAT, name: meta.name }); // atomic (temporary file + rename)
  const bytes = fs.readFileSync(file);
  const out: ClassifierMeta = {
    format: CLASSIFIER_FORMAT,
    formatVersion: 1,
    diffuse: diffuseVersion(),
    createdAt: new Date().toISOString(),
    ...meta,
    config: net.config,
    numParameters: net.numParameters(),
    weights: { file: CLASSIFIER_WEIGHTS, bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') },
  };
  writeFileAtomic(path.join(dir, CLASSIFIER_FILE), JSON.stringify(out, null, 1) + '\n');
  return out;
}

/** Reads and checks classifier.json and the weights (size, SHA-256, names, shapes); the net is in eval mode. Dispose it when done. */
export function loadClassifier(dir: string): { meta: ClassifierMeta; net: Classifier } {
  const jsonFile = path.join(dir, CLASSIFIER_FILE);
  if (!fs.existsSync(jsonFile)) throw new Error(`loadClassifier: ${jsonFile} not found (not a classifier folder?)`);
  let meta: ClassifierMeta;
  try {
    meta = JSON.parse(fs.readFileSync(jsonFile, 'utf8')) as ClassifierMeta;
  } catch (e) {
    throw new Error(`loadClassifier: ${jsonFile} is not valid JSON (${(e as Error).message})`);
  }
  if (meta?.format !== CLASSIFIER_FORMAT) throw new Error(`loadClassifier: ${jsonFile} is not a Diffuse classifier (format ${JSON.stringify(meta?.format)}, expected "${CLASSIFIER_FORMAT}")`);
  const wfile = path.join(dir, meta.weights.file);
  const bytes = fs.readFileSync(wfile);
  if (bytes.length !== meta.weights.bytes || createHash('sha256').update(bytes).digest('hex') !== meta.weights.sha256)
    throw new Error(`loadClassifier: ${wfile} does not match the size/SHA-256 that ${CLASSIFIER_FILE} records (corrupt or replaced)`);
  const net = new Classifier(resolveClassifierConfig(meta.config));
  const { tensors } = loadSafetensors(wfile);
  try {
    net.loadStateDict(tensors);
  } catch (e) {
    net.dispose();
    throw new Error(`loadClassifier: ${wfile} does not fit the architecture in ${CLASSIFIER_FILE}: ${(e as Error).message}`);
  } finally {
    dispose(tensors);
  }
  return { meta, net: net.eval() };
}

/** The shipped noise-conditional Fashion-MNIST classifier (models/fashion-mnist-classifier). */
export function shippedClassifierDir(): string {
  return shippedDir('fashion-mnist-classifier');
}

// ---- the trainer: checkpoints, resume, Ctrl-C --------------------------------------

/** What a ClassifierTrainer takes beyond the training options: where and how often to checkpoint, and how to run. */
export interface ClassifierTrainerOptions extends ClassifierTrainOptions {
  /** The folder of the training checkpoints (default null: none are written). */
  out?: string | null;
  /** Write a checkpoint into `out` every N steps (default 200; 0: only when stopped or done). */
  checkpointEvery?: number;
  /** The caller's notes, kept in the checkpoint (the CLI keeps --name and its command line there). */
  notes?: Record<string, string>;
  /** Called after every step (and its checkpoint, if one was due) with the step count and its loss; call requestStop() in it to stop there. */
  onStep?: ((step: number, loss: number) => void) | null;
  /** On SIGINT (Ctrl-C), run() finishes the step, writes a checkpoint and returns 'interrupted' (default false; the CLI turns it on). */
  handleSigint?: boolean;
}

/** What may change when resuming: the run's length and where and how it goes on. The rest comes from the checkpoint. */
export type ClassifierResumeOptions = Pick<ClassifierTrainerOptions, 'steps' | 'out' | 'checkpointEvery' | 'notes' | 'data' | 'log' | 'onStep' | 'handleSigint'>;

/** A run's options as its checkpoint records them, every default resolved. */
export interface ClassifierRunOptions {
  noise: ClassifierNoise;
  dataset: ClassifierDataName;
  imageSize: number;
  flip: boolean;
  steps: number;
  batchSize: number;
  lr: number;
  warmupSteps: number;
  seed: number;
  checkpointEvery: number;
  config: ClassifierConfig;
  notes: Record<string, string>;
}

/** What run() returns: 'done' or 'interrupted', the step, every step's loss. */
export type ClassifierRunResult = LoopResult;

export const CLASSIFIER_CHECKPOINT_FILE = 'classifier-checkpoint.json';
export const CLASSIFIER_CHECKPOINT_FORMAT = 'diffuse-classifier-checkpoint';
const CLASSIFIER_CHECKPOINT_VERSION = 1;
/** The tensor files of classifier checkpoints (old ones are deleted once a newer checkpoint is committed). */
const CHECKPOINT_TENSORS = /^classifier-(model|optimizer)-\d+\.safetensors$/;

/** What classifier-checkpoint.json holds: everything a resumed run needs to take the steps an uninterrupted one would have taken. */
export interface ClassifierCheckpointMeta {
  format: typeof CLASSIFIER_CHECKPOINT_FORMAT;
  formatVersion: number;
  diffuse: string;
  createdAt: string;
  /** Optimizer steps taken. */
  step: number;
  options: ClassifierRunOptions;
  numParameters: number;
  /** The training images: the named dataset's train split, or data the caller passed (pass the same to resume). */
  data: { source: ClassifierDataName | 'custom'; size: number };
  state: {
    /** Per-step losses, float32 little-endian, base64. */
    losses: string;
    /** The noise generator's state, base64 (Generator.state()). */
    generators: { noise: string };
    /** The data loader's position: the step (its batch k depends only on the seed and k). */
    loader: DataLoaderState;
    trainSeconds: number;
  };
  files: { model: FileRecord; optimizer: FileRecord };
}

/**
 * The classifier training loop, resumable: trainStep() takes one optimizer step; run()
 * trains to `steps`, writing a checkpoint into `out` every `checkpointEvery` steps, when
 * stopped (requestStop(), or Ctrl-C with handleSigint) and at the end. A checkpoint
 * (classifier-checkpoint.json and two tensor files, committed as src/training/checkpoint.ts
 * describes) holds the weights, Adam's state, the step, the losses, the noise generator's
 * state and the loader's position, so ClassifierTrainer.resume() takes exactly the steps an
 * uninterrupted run would have taken: the same losses and weights, bit for bit.
 *
 * @example
 *   const t = ClassifierTrainer.create({ noise: 'ddpm', steps: 1000, out: 'runs/cls' });
 *   const r = await t.run();            // 'interrupted' after a Ctrl-C: runs/cls/classifier-checkpoint.json
 *   t.dispose();
 *   const again = ClassifierTrainer.resume('runs/cls'); // ... await again.run(); const net = again.releaseNet();
 */
export class ClassifierTrainer extends TrainingLoop<ClassifierCheckpointMeta> {
  readonly options: ClassifierRunOptions;
  readonly net: Classifier;
  readonly optimizer: Adam;
  readonly #data: ImageDataset;
  readonly #ownsData: boolean;
  readonly #loader: DataLoader;
  #released = false;
  #disposed = false;

  private constructor(options: ClassifierRunOptions, run: ClassifierResumeOptions) {
    super({
      steps: options.steps,
      out: run.out ?? null,
      checkpointEvery: options.checkpointEvery,
      previewEvery: 0,
      label: `train-classifier${options.noise === 'none' ? '' : ' (noisy)'}`,
      log: run.log === undefined ? process.stderr : run.log,
      handleSigint: run.handleSigint ?? false,
      lossPlot: false,
      onStep: run.onStep ?? null,
    });
    this.options = options;
    const sampler = classifierSigmaSampler(options.noise);
    const { seed, batchSize, lr, steps, warmupSteps } = options;
    this.#ownsData = !run.data;
    this.#data = run.data ?? loadClassifierData(options.dataset, 'train', options.imageSize);
    try {
      this.#loader = new DataLoader(this.#data, options.flip ? { batchSize, seed, flip: true } : { batchSize, seed });
    } catch (e) {
      if (this.#ownsData) dispose([this.#data.images, this.#data.labels]);
      throw e;
    }
    // The classifier's own seed streams (weights: seed, noise: seed + 1), as the shipped classifiers were trained.
    this.net = new Classifier(options.config, { generator: new Generator(seed) }).train();
    const noiseGen = new Generator(seed + 1);
    this.optimizer = new Adam(this.net.namedParameters(), { lr });
    // (A run resumed to fewer steps than its warm-up ends in the warm-up, as diffuse train does.)
    const schedule = warmupSteps < steps ? cosineSchedule({ lr, totalSteps: steps, warmupSteps }) : linearWarmupSchedule({ lr, warmupSteps });
    const part: TrainPart = { name: 'classifier', module: this.net, optimizer: this.optimizer, lr: schedule, files: { weights: 'model', optimizer: 'optimizer' } };
    const loss = (k: number) => {
      const { x, labels } = this.#loader.batchAt(k); // a pure function of (seed, k)
      return classifierLoss(this.net, x, labels!, sampler, noiseGen);
    };
    this.setup({ parts: [part], phases: [{ name: 'classifier', part, loss }], generators: { noise: noiseGen } });
  }

  /** A new run (see ClassifierTrainerOptions; defaults as trainClassifier's). */
  static create(opts: ClassifierTrainerOptions = {}): ClassifierTrainer {
    return new ClassifierTrainer(resolveClassifierRunOptions(opts), opts);
  }

  /**
   * Continues the run whose checkpoint is in `dir`, with its options; only steps (to go
   * on to; not below the checkpoint's step), out (default `dir`), checkpointEvery and notes
   * may change. A run on custom data needs the same `data` again.
   */
  static resume(dir: string, opts: ClassifierResumeOptions = {}): ClassifierTrainer {
    const meta = readClassifierCheckpoint(dir);
    const options = resolveClassifierRunOptions({
      ...meta.options,
      steps: opts.steps ?? meta.options.steps,
      checkpointEvery: opts.checkpointEvery ?? meta.options.checkpointEvery,
      notes: opts.notes ?? meta.options.notes,
    });
    if (options.steps < meta.step) throw new RangeError(`ClassifierTrainer.resume: steps (${options.steps}) is below the checkpoint's step (${meta.step}) in ${dir}`);
    if (meta.data.source === 'custom' && !opts.data) throw new TypeError(`ClassifierTrainer.resume: ${dir} was trained on data passed in (${meta.data.size} images); pass the same data again`);
    if (opts.data && opts.data.images.dim(0) !== meta.data.size)
      throw new RangeError(`ClassifierTrainer.resume: the data has ${opts.data.images.dim(0)} images, the checkpoint in ${dir} was trained on ${meta.data.size}`);
    const t = new ClassifierTrainer(options, { ...opts, out: opts.out ?? dir });
    try {
      t.restore(path.join(dir, CLASSIFIER_CHECKPOINT_FILE), meta);
    } catch (e) {
      t.dispose();
      throw e;
    }
    return t;
  }

  /** One line about the run. */
  describe(): string {
    const { noise, steps, batchSize, lr } = this.options;
    return `classifier (${noise === 'none' ? 'clean' : 'noise-conditional'}) on ${this.#data.images.dim(0)} images; ${this.net.numParameters().toLocaleString('en-US')} parameters; batch ${batchSize}, ${steps} steps, lr ${lr}${this.out ? `; out ${this.out}` : ''}`;
  }

  protected checkpointFormat(): CheckpointFormat {
    return {
      json: CLASSIFIER_CHECKPOINT_FILE,
      format: CLASSIFIER_CHECKPOINT_FORMAT,
      version: CLASSIFIER_CHECKPOINT_VERSION,
      prefix: 'classifier-',
      fields: () => ({ options: this.options, numParameters: this.net.numParameters(), data: { source: this.#ownsData ? this.options.dataset : 'custom', size: this.#data.images.dim(0) } }),
    };
  }

  /** Frees everything but the net and hands it over in eval mode (the caller disposes it); the trainer is done. */
  releaseNet(): Classifier {
    if (this.#disposed) throw new Error('ClassifierTrainer.releaseNet: the trainer was disposed');
    this.#released = true;
    this.dispose();
    return this.net.eval();
  }

  /** Frees the net (unless released), the optimizer, the loader and the data it loaded itself (a second call does nothing). */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.disposeParts({ keep: this.#released ? [this.net] : [] });
    this.#loader.dispose();
    if (this.#ownsData) dispose([this.#data.images, this.#data.labels]);
  }
}

/** The options every checkpoint records (dataset, imageSize and flip came later: a checkpoint without them is Fashion-MNIST's defaults). */
const RUN_OPTION_KEYS: readonly (keyof ClassifierRunOptions)[] = ['noise', 'steps', 'batchSize', 'lr', 'warmupSteps', 'seed', 'checkpointEvery', 'config', 'notes'];

/**
 * The options of a classifier run, one spec each (src/training/options.ts): the library
 * (resolveClassifierRunOptions) and `diffuse train-classifier`'s flags are checked against
 * the same table. The resumable ones, and the command line's out, name and threads, may
 * change when a run is resumed.
 */
export const CLASSIFIER_FIELDS = Object.freeze({
  noise: { kind: 'enum', values: ['none', 'ddpm'] },
  data: { kind: 'enum', values: CLASSIFIER_DATA_NAMES },
  imageSize: { kind: 'int', nullable: true, min: 1, max: 4096 },
  flip: { kind: 'bool', nullable: true },
  steps: { kind: 'int', min: 1, max: 10_000_000, resumable: true },
  batchSize: { kind: 'int', min: 1, max: 60_000 },
  lr: { kind: 'number', min: 0, above: true },
  warmupSteps: { kind: 'int', min: 0, max: 10_000_000 },
  seed: { kind: 'int', min: 0, max: 2 ** 31 },
  checkpointEvery: { kind: 'int', min: 0, max: 10_000_000, resumable: true },
  out: { kind: 'string', resumable: true },
  name: { kind: 'string', resumable: true },
  threads: { kind: 'int', nullable: true, min: 1, resumable: true },
} satisfies Record<string, FieldSpec>);

/** Checks training options and resolves their defaults (errors name the option and the value). */
export function resolveClassifierRunOptions(opts: ClassifierTrainerOptions): ClassifierRunOptions {
  const { noise = 'none', steps = 1200, batchSize = 128, lr = 2e-3, seed = 0, checkpointEvery = 200, notes = {} } = opts;
  const warmupSteps = opts.warmupSteps ?? Math.min(50, Math.floor(steps / 10));
  const { dataset = 'fashion-mnist' } = opts;
  checkValue('trainClassifier: dataset', CLASSIFIER_FIELDS.data, dataset);
  const imageSize = opts.imageSize ?? defaultClassifierImageSize(dataset);
  const flip = opts.flip ?? isEmoji(dataset);
  checkValue('trainClassifier: imageSize', CLASSIFIER_FIELDS.imageSize, imageSize);
  checkValue('trainClassifier: flip', CLASSIFIER_FIELDS.flip, flip);
  const checked = { noise, steps, batchSize, lr, warmupSteps, seed, checkpointEvery };
  for (const [k, v] of Object.entries(checked)) checkValue(`trainClassifier: ${k}`, CLASSIFIER_FIELDS[k as keyof typeof checked], v);
  if (!(notes && typeof notes === 'object' && Object.values(notes).every((v) => typeof v === 'string')))
    throw new TypeError(`trainClassifier: notes must map names to strings, got ${JSON.stringify(notes)}`);
  const config = resolveClassifierConfig({ ...classifierDataConfig(dataset, imageSize), ...opts.config, noiseConditional: noise !== 'none' });
  return { noise, dataset, imageSize, flip, steps, batchSize, lr, warmupSteps, seed, checkpointEvery, config, notes };
}

/** Reads and checks classifier-checkpoint.json in `dir` (not the tensor files); errors (CheckpointError) name the file and the field. */
export function readClassifierCheckpoint(dir: string): ClassifierCheckpointMeta {
  const file = path.join(dir, CLASSIFIER_CHECKPOINT_FILE);
  const raw = readCheckpointJson(file, {
    format: CLASSIFIER_CHECKPOINT_FORMAT,
    version: CLASSIFIER_CHECKPOINT_VERSION,
    what: 'a train-classifier checkpoint',
    missing: `not found: this folder holds no train-classifier checkpoint (was the run stopped before its first checkpoint? a finished run keeps none, only ${CLASSIFIER_FILE})`,
  }) as unknown as ClassifierCheckpointMeta;
  const bad = (what: string) => new CheckpointError(file, what);
  const nonNegInt = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
  if (!nonNegInt(raw.step)) throw bad(`"step" must be a non-negative integer, got ${JSON.stringify(raw.step)}`);
  const given = raw.options && typeof raw.options === 'object' ? Object.keys(raw.options) : [];
  const missing = RUN_OPTION_KEYS.filter((k) => !given.includes(k));
  if (missing.length) throw bad(`"options" lacks ${missing.join(', ')}`);
  let options: ClassifierRunOptions;
  try {
    options = resolveClassifierRunOptions(raw.options);
  } catch (e) {
    throw bad(`has invalid options: ${(e as Error).message}`);
  }
  if (raw.step > options.steps) throw bad(`"step" (${raw.step}) is beyond options.steps (${options.steps})`);
  const d = raw.data;
  if (!d || !(d.source === 'custom' || CLASSIFIER_DATA_NAMES.includes(d.source)) || !(Number.isSafeInteger(d.size) && d.size > 0))
    throw bad(`"data" must be {"source": ${[...CLASSIFIER_DATA_NAMES, 'custom'].map((n) => JSON.stringify(n)).join(' | ')}, "size": n}, got ${JSON.stringify(d)}`);
  const st = raw.state;
  if (!st || typeof st.losses !== 'string' || typeof st.generators?.noise !== 'string' || !nonNegInt(st.loader?.step) || typeof st.trainSeconds !== 'number')
    throw bad('"state" must be {"losses": base64, "generators": {"noise": base64}, "loader": {"step": n}, "trainSeconds": s}');
  let losses: number[];
  try {
    losses = decodeFloats(st.losses);
  } catch (e) {
    throw bad(`"state.losses" is corrupt: ${(e as Error).message}`);
  }
  if (losses.length !== raw.step) throw bad(`has ${losses.length} losses for ${raw.step} steps`);
  if (st.loader.step !== raw.step) throw bad(`"state.loader.step" (${st.loader.step}) is not "step" (${raw.step})`);
  for (const part of ['model', 'optimizer'] as const) {
    const rec = raw.files?.[part];
    if (!rec || typeof rec.file !== 'string' || !nonNegInt(rec.bytes) || typeof rec.sha256 !== 'string' || !CHECKPOINT_TENSORS.test(rec.file))
      throw bad(`"files.${part}" must be {"file": name, "bytes": n, "sha256": hex}, got ${JSON.stringify(rec)}`);
  }
  return { ...raw, options };
}

/** Deletes the training checkpoint in `dir` (the JSON first, so a crash midway leaves no checkpoint rather than half of one); the CLI does this once the classifier is written. */
export function removeClassifierCheckpoint(dir: string): void {
  fs.rmSync(path.join(dir, CLASSIFIER_CHECKPOINT_FILE), { force: true });
  if (fs.existsSync(dir)) for (const name of fs.readdirSync(dir)) if (CHECKPOINT_TENSORS.test(name)) fs.rmSync(path.join(dir, name), { force: true });
}
