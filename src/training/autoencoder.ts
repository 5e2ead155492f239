/**
 * Training the KL autoencoder of latent diffusion (src/models/autoencoder.ts) on the emoji
 * train split, as a task on the shared training loop (loop.ts): checkpoints, exact resume,
 * Ctrl-C and the progress bar come from the loop.
 *
 * The loss follows the reference's LPIPSWithDiscriminator (Rombach et al. 2022, App. G;
 * taming-transformers' VQGAN loss, Esser et al. 2021, Eq. 4-7), per pixel:
 *
 *   L_AE = mean|x - x^| + w_p (1 - msSSIM(x, x^)) + w_KL KL(q(z|x) || N(0, I)) / (C H W) + lambda d(k) L_G
 *
 * - Perceptual term: LPIPS needs VGG weights we cannot obtain here. Its honest substitute is
 *   1 - multi-scale SSIM (the mean of SSIM over 3 scales, src/eval/ssim.ts): a formula, no
 *   network. The frozen evaluator network (src/eval/feature-net.ts) is never used by a loss.
 * - KL weight: the reference sums the reconstruction over pixels per image and weighs the
 *   summed KL by 1e-6; dividing both by C H W gives the per-pixel form above, the same
 *   objective up to a constant factor (Adam is invariant to it). The reference's learned
 *   output log-variance (initialized at 0) is left out.
 * - Optional patch discriminator (discWeight > 0): a PatchGAN (Isola et al. 2017) with hinge
 *   losses, GroupNorm in place of BatchNorm; the adaptive weight lambda = ||grad_L L_rec|| /
 *   (||grad_L L_G|| + 1e-4), clamped to [0, 1e4], times discWeight (Esser et al. 2021, Eq. 7;
 *   L = the decoder's last layer), and d(k) = 0 before step discStart (the delayed start),
 *   1 after. The discriminator's phase uses the reconstruction of the autoencoder's phase of
 *   the same step (detached), not a second forward pass.
 *
 * @example
 *   const t = AutoencoderTrainer.create({ factor: 4, steps: 2000, out: 'runs/ae' });
 *   await t.run();
 *   saveAutoencoder('runs/ae', t.net, { ... });
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { grad } from '../engine/autograd';
import { cat } from '../engine/create';
import { Generator } from '../engine/random';
import { loadSafetensors, saveSafetensors } from '../engine/safetensors';
import { dispose, keep, noGrad, tidy } from '../engine/scope';
import { Tensor } from '../engine/tensor';
import { DType } from '../engine/dtype';
import { EMOJI_SIZES } from '../data/emoji';
import { DataLoader, ImageDataset } from '../data/loader';
import { msSSIM } from '../eval/ssim';
import { Autoencoder, AutoencoderConfig, klDivergence, resolveAutoencoderConfig } from '../models/autoencoder';
import { Conv2d, GroupNorm } from '../nn/layers';
import { Module } from '../nn/module';
import { Adam } from '../optim/adam';
import { linearWarmupSchedule } from '../optim/schedule';
import { writeFileAtomic } from '../util/image';
import { CheckpointError, diffuseVersion, readCheckpointJson } from './checkpoint';
import { castTensors } from '../nn/io';
import { loadClassifierData } from './classifier';
import { CheckpointFormat, LoopCheckpoint, Phase, TrainingLoop, TrainPart } from './loop';
import { checkValue, FieldSpec } from './options';
import { LatentCodec, latentNormalization, LatentNormKind, LatentRecord, LatentStats, measureLatents } from '../resolution/latent';

/** The datasets an autoencoder trains on: the emoji, both styles or one. */
export const AUTOENCODER_DATA_NAMES = ['emoji', 'emoji:google', 'emoji:twitter'] as const;
export type AutoencoderDataName = (typeof AUTOENCODER_DATA_NAMES)[number];

// ---- the loss ------------------------------------------------------------------------

/** The weights of the loss's terms (see the module comment). */
export interface AutoencoderLossWeights {
  /** w_p, the weight of 1 - msSSIM (the perceptual substitute). */
  ssimWeight: number;
  /** w_KL (the reference: 1e-6 on the per-image sums). */
  klWeight: number;
}

/** The reconstruction loss per pixel: mean|x - x^| + w_p (1 - msSSIM(x, x^)), a scalar. */
export function reconstructionLoss(x: Tensor, xr: Tensor, ssimWeight: number): Tensor {
  return tidy(() => {
    const l1 = x.sub(xr).abs().mean();
    return ssimWeight === 0 ? l1 : l1.add(msSSIM(x, xr, { dataRange: 2, scales: 3 }).rsub(1).mean().mul(ssimWeight));
  });
}

/** The KL term per pixel: mean over the batch of KL(q(z|x) || N(0, I)) / (C H W), a scalar. */
export function klPerPixel(mean: Tensor, logvar: Tensor, pixels: number): Tensor {
  return tidy(() => klDivergence(mean, logvar).mean().div(pixels));
}

/**
 * The PatchGAN discriminator (Isola et al. 2017; the reference's NLayerDiscriminator): 4 x 4
 * convs, stride 2 for `layers` of them, LeakyReLU 0.2, GroupNorm after every conv but the first
 * and the last; a map of real/fake logits [B, 1, h, w], one per patch.
 *
 * @example
 *   new PatchDiscriminator(3, { width: 32, layers: 2 }).forward(x); // [B, 3, 64, 64] -> [B, 1, 14, 14]
 */
export class PatchDiscriminator extends Module {
  convs: Conv2d[];
  norms: GroupNorm[];
  constructor(inChannels: number, { width = 32, layers = 2, groups = 8, generator = new Generator(0) }: { width?: number; layers?: number; groups?: number; generator?: Generator } = {}) {
    super();
    const convs: Conv2d[] = [new Conv2d(inChannels, width, 4, { stride: 2, padding: 1, generator })];
    const norms: GroupNorm[] = [];
    let ch = width;
    for (let i = 1; i <= layers; i++) {
      const out = width * Math.min(2 ** i, 8);
      convs.push(new Conv2d(ch, out, 4, { stride: i < layers ? 2 : 1, padding: 1, bias: false, generator }));
      norms.push(new GroupNorm(groups, out));
      ch = out;
    }
    convs.push(new Conv2d(ch, 1, 4, { stride: 1, padding: 1, generator }));
    this.convs = this.children('convs', convs);
    this.norms = this.children('norms', norms);
  }
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const leaky = (t: Tensor) => t.maximum(t.mul(0.2));
      let h = leaky(this.convs[0].forward(x));
      this.norms.forEach((n, i) => (h = leaky(n.forward(this.convs[i + 1].forward(h)))));
      return this.convs[this.convs.length - 1].forward(h);
    });
  }
}

/** The hinge loss of the discriminator: 1/2 (mean relu(1 - D(x)) + mean relu(1 + D(x^))). */
export function hingeDiscriminatorLoss(real: Tensor, fake: Tensor): Tensor {
  return tidy(() => real.rsub(1).relu().mean().add(fake.add(1).relu().mean()).mul(0.5));
}

/** Esser et al. 2021, Eq. 7: lambda = ||grad_L rec|| / (||grad_L g|| + 1e-4), clamped to [0, 1e4], detached. */
export function adaptiveWeight(rec: Tensor, gLoss: Tensor, lastLayer: Tensor): number {
  return tidy(() => {
    const [gr] = grad(rec, lastLayer, { retainGraph: true });
    const [gg] = grad(gLoss, lastLayer, { retainGraph: true });
    const w = gr!.norm().item() / (gg!.norm().item() + 1e-4);
    return Math.min(Math.max(w, 0), 1e4);
  });
}

// ---- options -----------------------------------------------------------------------

/** A run's options as its checkpoint records them, every default resolved. */
export interface AutoencoderRunOptions {
  dataset: AutoencoderDataName;
  imageSize: number;
  flip: boolean;
  factor: 4 | 8;
  klWeight: number;
  ssimWeight: number;
  /** The discriminator's weight (0: no discriminator). */
  discWeight: number;
  /** The step from which the GAN terms count. */
  discStart: number;
  steps: number;
  batchSize: number;
  lr: number;
  warmupSteps: number;
  seed: number;
  checkpointEvery: number;
  config: AutoencoderConfig & { channelMult: number[] };
  notes: Record<string, string>;
}

/**
 * The options of an autoencoder run, one spec each (options.ts): the library and the flags
 * of `diffuse train-autoencoder` are checked against the same table.
 */
export const AUTOENCODER_FIELDS = Object.freeze({
  data: { kind: 'enum', values: AUTOENCODER_DATA_NAMES },
  imageSize: { kind: 'int', min: 16, max: 64 },
  flip: { kind: 'bool' },
  factor: { kind: 'int', min: 4, max: 8 },
  klWeight: { kind: 'number', min: 0 },
  ssimWeight: { kind: 'number', min: 0 },
  discWeight: { kind: 'number', min: 0 },
  discStart: { kind: 'int', min: 0, max: 10_000_000 },
  steps: { kind: 'int', min: 1, max: 10_000_000, resumable: true },
  batchSize: { kind: 'int', min: 1, max: 60_000 },
  lr: { kind: 'number', min: 0, above: true },
  warmupSteps: { kind: 'int', min: 0, max: 10_000_000 },
  seed: { kind: 'int', min: 0, max: 2 ** 31 },
  checkpointEvery: { kind: 'int', min: 0, max: 10_000_000, resumable: true },
  out: { kind: 'string', resumable: true },
  threads: { kind: 'int', nullable: true, min: 1, resumable: true },
} satisfies Record<string, FieldSpec>);

export interface AutoencoderTrainOptions {
  /** The emoji styles of the train split (default 'emoji': both). */
  dataset?: AutoencoderDataName;
  /** Image side: 16, 32 or 64 (default 64). */
  imageSize?: number;
  /** Random left-right flips (default true). */
  flip?: boolean;
  /** Downsampling factor 4 or 8 (default 4). */
  factor?: 4 | 8;
  /** w_KL (default 1e-6, the reference's). */
  klWeight?: number;
  /** w_p, the weight of 1 - msSSIM (default 1, the reference's perceptual weight). */
  ssimWeight?: number;
  /** The discriminator's weight (default 0: none; the reference uses 0.5). */
  discWeight?: number;
  /** The step from which the discriminator counts (default: half the steps). */
  discStart?: number;
  /** Optimizer steps (default 2000). */
  steps?: number;
  /** Images per step (default 16). */
  batchSize?: number;
  /** Adam's learning rate after the warm-up, both parts (default 5e-4; betas (0.5, 0.9) as the reference). */
  lr?: number;
  /** Linear warm-up steps (default min(100, floor(steps / 10))). */
  warmupSteps?: number;
  /** Seed of the weights, the batches and the latent noise (default 0). */
  seed?: number;
  /** Checkpoint every N steps (default 500; 0: only at the end and when stopped). */
  checkpointEvery?: number;
  /** Architecture fields beyond the factor (default: the model's defaults). */
  config?: Partial<AutoencoderConfig>;
  notes?: Record<string, string>;
}

/** Checks the options and resolves their defaults (errors name the option and the value). */
export function resolveAutoencoderRunOptions(opts: AutoencoderTrainOptions): AutoencoderRunOptions {
  const {
    dataset = 'emoji',
    imageSize = 64,
    flip = true,
    factor = 4,
    klWeight = 1e-6,
    ssimWeight = 1,
    discWeight = 0,
    steps = 2000,
    batchSize = 16,
    lr = 5e-4,
    seed = 0,
    checkpointEvery = 500,
    notes = {},
  } = opts;
  const warmupSteps = opts.warmupSteps ?? Math.min(100, Math.floor(steps / 10));
  const discStart = opts.discStart ?? Math.floor(steps / 2);
  const checked = { data: dataset, imageSize, flip, factor, klWeight, ssimWeight, discWeight, discStart, steps, batchSize, lr, warmupSteps, seed, checkpointEvery };
  for (const [k, v] of Object.entries(checked)) checkValue(`trainAutoencoder: ${k}`, AUTOENCODER_FIELDS[k as keyof typeof checked], v);
  if (!EMOJI_SIZES.includes(imageSize)) throw new RangeError(`trainAutoencoder: imageSize must be 16, 32 or 64, got ${imageSize}`);
  if (factor !== 4 && factor !== 8) throw new RangeError(`trainAutoencoder: factor must be 4 or 8, got ${factor}`);
  if (!(notes && typeof notes === 'object' && Object.values(notes).every((v) => typeof v === 'string')))
    throw new TypeError(`trainAutoencoder: notes must map names to strings, got ${JSON.stringify(notes)}`);
  const config = resolveAutoencoderConfig({ ...opts.config, factor });
  return { dataset, imageSize, flip, factor, klWeight, ssimWeight, discWeight, discStart, steps, batchSize, lr, warmupSteps, seed, checkpointEvery, config, notes };
}

// ---- the trainer ---------------------------------------------------------------------

export const AUTOENCODER_CHECKPOINT_FILE = 'autoencoder-checkpoint.json';
export const AUTOENCODER_CHECKPOINT_FORMAT = 'diffuse-autoencoder-checkpoint';
const AUTOENCODER_CHECKPOINT_VERSION = 1;

/** What autoencoder-checkpoint.json holds beyond the loop's state. */
export interface AutoencoderCheckpointMeta extends LoopCheckpoint {
  options: AutoencoderRunOptions;
  numParameters: number;
  data: { source: AutoencoderDataName | 'custom'; size: number };
}

/** How a run goes beyond its options: where it writes, what it trains on, how it logs. */
export interface AutoencoderRunSettings {
  out?: string | null;
  /** Training images (uint8 [N, 3, S, S]; default: the train split of the dataset). */
  data?: ImageDataset;
  log?: NodeJS.WritableStream | null;
  handleSigint?: boolean;
  onStep?: ((step: number, loss: number) => void) | null;
}

/**
 * The autoencoder task on the training loop: one part (the autoencoder) and, with
 * discWeight > 0, a second (the discriminator) with its own phase. Generators: 'latent'
 * (the reparameterization noise). AutoencoderTrainer.resume() continues bit for bit.
 *
 * @example
 *   const t = AutoencoderTrainer.create({ steps: 100, out: 'runs/ae' }, { log: null });
 *   t.runSync();
 *   const again = AutoencoderTrainer.resume('runs/ae', { steps: 200 });
 */
export class AutoencoderTrainer extends TrainingLoop<AutoencoderCheckpointMeta> {
  readonly options: AutoencoderRunOptions;
  readonly net: Autoencoder;
  readonly disc: PatchDiscriminator | null;
  /** The adaptive GAN weight of the last autoencoder step (0 before discStart or without a discriminator). */
  lastAdaptiveWeight = 0;
  readonly #data: ImageDataset;
  readonly #ownsData: boolean;
  readonly #loader: DataLoader;
  /** The autoencoder phase's batch and reconstruction (detached), for the discriminator phase of the same step. */
  #cache: { x: Tensor; xr: Tensor } | null = null;
  #disposed = false;

  private constructor(options: AutoencoderRunOptions, run: AutoencoderRunSettings) {
    super({
      steps: options.steps,
      out: run.out ?? null,
      checkpointEvery: options.checkpointEvery,
      previewEvery: 0,
      label: 'train-autoencoder',
      log: run.log === undefined ? process.stderr : run.log,
      handleSigint: run.handleSigint ?? false,
      lossPlot: true,
      onStep: run.onStep ?? null,
    });
    this.options = options;
    const { seed, batchSize, lr, warmupSteps } = options;
    this.#ownsData = !run.data;
    this.#data = run.data ?? loadClassifierData(options.dataset, 'train', options.imageSize);
    try {
      this.#loader = new DataLoader(this.#data, { batchSize, seed, flip: options.flip });
    } catch (e) {
      if (this.#ownsData) dispose([this.#data.images, this.#data.labels]);
      throw e;
    }
    // Seed streams: weights seed, latent noise seed + 1, discriminator weights seed + 2.
    this.net = new Autoencoder(options.config, { generator: new Generator(seed) }).train();
    const latentGen = new Generator(seed + 1);
    const schedule = linearWarmupSchedule({ lr, warmupSteps });
    const betas = [0.5, 0.9] as const;
    const aePart: TrainPart = {
      name: 'autoencoder',
      module: this.net,
      optimizer: new Adam(this.net.namedParameters(), { lr, betas }),
      lr: schedule,
      files: { weights: 'model', optimizer: 'optimizer' },
    };
    const parts = [aePart];
    const phases: Phase[] = [{ name: 'autoencoder', part: aePart, loss: (k) => this.#autoencoderLoss(k, latentGen) }];
    this.disc = options.discWeight > 0 ? new PatchDiscriminator(options.config.inChannels, { generator: new Generator(seed + 2) }).train() : null;
    if (this.disc) {
      const dPart: TrainPart = { name: 'discriminator', module: this.disc, optimizer: new Adam(this.disc.namedParameters(), { lr, betas }), lr: schedule };
      parts.push(dPart);
      phases.push({ name: 'discriminator', part: dPart, loss: (k) => this.#discriminatorLoss(k) });
    }
    this.setup({ parts, phases, generators: { latent: latentGen } });
  }

  /** The autoencoder's loss at step k (module comment). */
  #autoencoderLoss(k: number, latentGen: Generator): Tensor {
    const { x } = this.#loader.batchAt(k); // a pure function of (seed, k)
    const { klWeight, ssimWeight, discWeight, discStart } = this.options;
    const { reconstruction: xr, mean, logvar } = this.net.forward(x, latentGen);
    const rec = reconstructionLoss(x, xr, ssimWeight);
    let loss = rec.add(klPerPixel(mean, logvar, x.size / x.dim(0)).mul(klWeight));
    this.lastAdaptiveWeight = 0;
    if (this.disc) {
      this.#setCache(x, xr);
      if (k >= discStart) {
        const gLoss = this.disc.forward(xr).mean().neg(); // L_G = -mean D(x^)
        this.lastAdaptiveWeight = adaptiveWeight(rec, gLoss, this.net.lastLayerWeight) * discWeight;
        loss = loss.add(gLoss.mul(this.lastAdaptiveWeight));
      }
    }
    return loss;
  }

  /** The discriminator's hinge loss at step k, times d(k) (0 before discStart, as the reference's adopt_weight). */
  #discriminatorLoss(k: number): Tensor {
    if (!this.#cache) throw new Error('AutoencoderTrainer: the discriminator phase ran before the autoencoder phase');
    const { x, xr } = this.#cache;
    const d = hingeDiscriminatorLoss(this.disc!.forward(x), this.disc!.forward(xr));
    return k >= this.options.discStart ? d : d.mul(0);
  }

  #setCache(x: Tensor, xr: Tensor): void {
    if (this.#cache) dispose([this.#cache.x, this.#cache.xr]);
    this.#cache = keep({ x: x.detach(), xr: xr.detach() });
  }

  /** A new run. */
  static create(opts: AutoencoderTrainOptions = {}, run: AutoencoderRunSettings = {}): AutoencoderTrainer {
    return new AutoencoderTrainer(resolveAutoencoderRunOptions(opts), run);
  }

  /**
   * Continues the run whose checkpoint is in `dir` with its options; only steps (not below
   * the checkpoint's step), checkpointEvery and out may change. A run on data passed in needs the same data.
   */
  static resume(dir: string, { steps, checkpointEvery, ...run }: AutoencoderRunSettings & { steps?: number; checkpointEvery?: number } = {}): AutoencoderTrainer {
    const file = path.join(dir, AUTOENCODER_CHECKPOINT_FILE);
    const meta = readAutoencoderCheckpoint(dir);
    const options = resolveAutoencoderRunOptions({ ...meta.options, steps: steps ?? meta.options.steps, checkpointEvery: checkpointEvery ?? meta.options.checkpointEvery });
    if (options.steps < meta.step) throw new RangeError(`AutoencoderTrainer.resume: steps (${options.steps}) is below the checkpoint's step (${meta.step}) in ${dir}`);
    if (meta.data.source === 'custom' && !run.data) throw new TypeError(`AutoencoderTrainer.resume: ${dir} was trained on data passed in (${meta.data.size} images); pass the same data again`);
    if (run.data && run.data.images.dim(0) !== meta.data.size)
      throw new RangeError(`AutoencoderTrainer.resume: the data has ${run.data.images.dim(0)} images, the checkpoint in ${dir} was trained on ${meta.data.size}`);
    const t = new AutoencoderTrainer(options, { ...run, out: run.out ?? dir });
    try {
      t.restore(file, meta);
    } catch (e) {
      t.dispose();
      throw e;
    }
    return t;
  }

  /**
   * The latent statistics over the training images (unflipped), from posterior samples drawn with
   * Generator(seed): what latent diffusion's scale factor 1 / std(z) is measured on (Rombach et
   * al. 2022, Sec. 4.3.2). `diffuse train-autoencoder` stores them in autoencoder.json.
   *
   * @example
   *   const stats = trainer.measureLatents(); // stats.scaleFactor
   *   saveAutoencoder(dir, trainer.net, { imageSize: 32, training: {}, latentStats: { ...stats, data: 'emoji train split', n: 3408, seed: 0 } });
   */
  measureLatents({ seed = 0 }: { seed?: number } = {}): StoredLatentStats {
    const wasTraining = this.net.training;
    this.net.eval();
    try {
      const stats = measureLatents(this.net, this.#data.images, { seed });
      const n = this.#data.images.dim(0);
      return { ...stats, data: this.#ownsData ? `${this.options.dataset} train split` : 'the training data passed in', n, seed };
    } finally {
      if (wasTraining) this.net.train();
    }
  }

  describe(): string {
    const { factor, steps, batchSize, lr, klWeight, ssimWeight, discWeight } = this.options;
    const s = this.net.config;
    return `autoencoder KL-f${factor} (${s.latentChannels} latent channels) on ${this.#data.images.dim(0)} images; ${this.net.numParameters().toLocaleString('en-US')} parameters; batch ${batchSize}, ${steps} steps, lr ${lr}; kl ${klWeight}, ssim ${ssimWeight}, discriminator ${discWeight === 0 ? 'off' : `${discWeight} from step ${this.options.discStart}`}${this.out ? `; out ${this.out}` : ''}`;
  }

  protected checkpointFormat(): CheckpointFormat {
    return {
      json: AUTOENCODER_CHECKPOINT_FILE,
      format: AUTOENCODER_CHECKPOINT_FORMAT,
      version: AUTOENCODER_CHECKPOINT_VERSION,
      prefix: 'autoencoder-',
      fields: () => ({ options: this.options, numParameters: this.net.numParameters(), data: { source: this.#ownsData ? this.options.dataset : 'custom', size: this.#data.images.dim(0) } }),
    };
  }

  /** Frees the parts, the loader, the cached batch and the data it loaded itself (a second call does nothing). */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.disposeParts();
    this.#loader.dispose();
    if (this.#cache) dispose([this.#cache.x, this.#cache.xr]);
    if (this.#ownsData) dispose([this.#data.images, this.#data.labels]);
  }
}

/** Reads and checks autoencoder-checkpoint.json in `dir` (the loop's restore checks the tensor files and losses). */
export function readAutoencoderCheckpoint(dir: string): AutoencoderCheckpointMeta {
  const file = path.join(dir, AUTOENCODER_CHECKPOINT_FILE);
  const raw = readCheckpointJson(file, {
    format: AUTOENCODER_CHECKPOINT_FORMAT,
    version: AUTOENCODER_CHECKPOINT_VERSION,
    what: 'a train-autoencoder checkpoint',
    missing: 'not found: this folder holds no train-autoencoder checkpoint (was the run stopped before its first checkpoint?)',
  }) as unknown as AutoencoderCheckpointMeta;
  const bad = (what: string) => new CheckpointError(file, what);
  if (!(Number.isSafeInteger(raw.step) && raw.step >= 0)) throw bad(`"step" must be a non-negative integer, got ${JSON.stringify(raw.step)}`);
  try {
    raw.options = resolveAutoencoderRunOptions(raw.options);
  } catch (e) {
    throw bad(`has invalid options: ${(e as Error).message}`);
  }
  const d = raw.data;
  if (!d || !(d.source === 'custom' || AUTOENCODER_DATA_NAMES.includes(d.source)) || !(Number.isSafeInteger(d.size) && d.size > 0))
    throw bad(`"data" must be {"source": name, "size": n}, got ${JSON.stringify(d)}`);
  if (!raw.state || typeof raw.state.losses !== 'string' || typeof raw.state.generators?.latent !== 'string') throw bad('"state" lacks the losses or the latent generator');
  if (!raw.files || typeof raw.files !== 'object') throw bad('"files" is missing');
  return raw;
}

// ---- the saved autoencoder ---------------------------------------------------------

export const AUTOENCODER_FILE = 'autoencoder.json';
export const AUTOENCODER_WEIGHTS = 'autoencoder.safetensors';
export const AUTOENCODER_FORMAT = 'diffuse-autoencoder';

/** What autoencoder.json holds. */
export interface AutoencoderMeta {
  format: typeof AUTOENCODER_FORMAT;
  formatVersion: 1;
  diffuse: string;
  createdAt: string;
  config: AutoencoderConfig & { channelMult: number[] };
  numParameters: number;
  /** The image side it was trained at, and the latent shape [C, h, w] there. */
  imageSize: number;
  latentShape: number[];
  /** How it was trained (the run's options, steps taken, seconds, the last 50 steps' mean loss, the command). */
  training: Record<string, unknown>;
  weights: { file: string; bytes: number; sha256: string };
  /** Latent diffusion's scale factor 1 / std(z) over the training split (absent in folders written before it was measured). */
  scaleFactor?: number;
  /** Set by `diffuse export`: the weights were cast to this dtype from the float32 run (the statistics are the run's). */
  exportedFrom?: { dtype: DType };
  /** The statistics it comes from, with the per-channel mean and std of EDM2-style normalization. */
  latentStats?: StoredLatentStats;
}

/** Latent statistics as autoencoder.json stores them: what they were measured on, and the seed of the posterior samples. */
export interface StoredLatentStats extends LatentStats {
  data: string;
  n: number;
  seed: number;
}

/** Writes an autoencoder folder: the weights, then autoencoder.json (atomically, the commit). */
export function saveAutoencoder(
  dir: string,
  net: Autoencoder,
  { imageSize, training, latentStats, dtype = 'float32' }: { imageSize: number; training: Record<string, unknown>; latentStats?: StoredLatentStats; dtype?: 'float32' | 'float16' | 'bfloat16' },
): AutoencoderMeta {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, AUTOENCODER_WEIGHTS);
  const weights = castTensors(net.stateDict(), dtype);
  try {
    saveSafetensors(file, weights, { format: AUTOENCODER_FORMAT });
  } finally {
    dispose(weights);
  }
  const bytes = fs.readFileSync(file);
  const f = net.config.factor;
  const meta: AutoencoderMeta = {
    format: AUTOENCODER_FORMAT,
    formatVersion: 1,
    diffuse: diffuseVersion(),
    createdAt: new Date().toISOString(),
    config: net.config,
    numParameters: net.numParameters(),
    imageSize,
    latentShape: [net.config.latentChannels, imageSize / f, imageSize / f],
    training,
    weights: { file: AUTOENCODER_WEIGHTS, bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') },
    ...(latentStats && { scaleFactor: latentStats.scaleFactor, latentStats }),
    ...(dtype !== 'float32' && { exportedFrom: { dtype } }),
  };
  writeFileAtomic(path.join(dir, AUTOENCODER_FILE), JSON.stringify(meta, null, 1) + '\n');
  return meta;
}

/** Reads autoencoder.json and the weights (size and SHA-256 checked); the net is in eval mode. Dispose it when done. */
export function loadAutoencoder(dir: string): { meta: AutoencoderMeta; net: Autoencoder } {
  const jsonFile = path.join(dir, AUTOENCODER_FILE);
  if (!fs.existsSync(jsonFile)) throw new Error(`loadAutoencoder: ${jsonFile} not found (not an autoencoder folder? train one with diffuse train-autoencoder)`);
  let meta: AutoencoderMeta;
  try {
    meta = JSON.parse(fs.readFileSync(jsonFile, 'utf8')) as AutoencoderMeta;
  } catch (e) {
    throw new Error(`loadAutoencoder: ${jsonFile} is not valid JSON (${(e as Error).message})`);
  }
  if (meta?.format !== AUTOENCODER_FORMAT) throw new Error(`loadAutoencoder: ${jsonFile} is not a Diffuse autoencoder (format ${JSON.stringify(meta?.format)}, expected "${AUTOENCODER_FORMAT}")`);
  const wfile = path.join(dir, meta.weights.file);
  const bytes = fs.readFileSync(wfile);
  if (bytes.length !== meta.weights.bytes || createHash('sha256').update(bytes).digest('hex') !== meta.weights.sha256)
    throw new Error(`loadAutoencoder: ${wfile} does not match the size/SHA-256 that ${AUTOENCODER_FILE} records (corrupt or replaced)`);
  const net = new Autoencoder(meta.config);
  const { tensors } = loadSafetensors(wfile);
  try {
    net.loadStateDict(tensors);
  } catch (e) {
    net.dispose();
    throw new Error(`loadAutoencoder: ${wfile} does not fit the architecture in ${AUTOENCODER_FILE}: ${(e as Error).message}`);
  } finally {
    dispose(tensors);
  }
  return { meta, net: net.eval() };
}

/**
 * `diffuse export` of an autoencoder folder: the same network, its weights cast to `dtype`
 * (float16 halves the file), with the source's training record and latent statistics. A latent
 * model trained on the export (train --latent OUT) decodes with exactly the weights it shipped with.
 *
 * @example
 *   exportAutoencoder('runs/ae', 'models/emoji-ae-f4', { dtype: 'float16' });
 */
export function exportAutoencoder(src: string, dst: string, { dtype }: { dtype: 'float32' | 'float16' | 'bfloat16' }): AutoencoderMeta {
  if (path.resolve(src) === path.resolve(dst)) throw new Error('exportAutoencoder: the output folder must differ from the source');
  const { meta, net } = loadAutoencoder(src);
  try {
    return saveAutoencoder(dst, net, { imageSize: meta.imageSize, training: meta.training, latentStats: meta.latentStats, dtype });
  } finally {
    net.dispose();
  }
}

/** Encodes uint8 images [N, C, H, W] in batches to their posterior means (noGrad), [N, latentChannels, H/f, W/f]. */
export function encodeImages(net: Autoencoder, images: Tensor, { batchSize = 64 }: { batchSize?: number } = {}): Tensor {
  return noGrad(() =>
    tidy(() => {
      const parts: Tensor[] = [];
      for (let i = 0; i < images.dim(0); i += batchSize) {
        const x = images
          .narrow(0, i, Math.min(batchSize, images.dim(0) - i))
          .float()
          .div(127.5)
          .sub(1);
        parts.push(net.encode(x).mean);
      }
      return cat(parts, 0);
    }),
  );
}

// ---- the frozen autoencoder of a latent diffusion run (src/resolution/latent.ts) -----------

/**
 * The autoencoder in `dir` with the normalization `norm` of its stored latent statistics, as a
 * latent run uses it; errors say what is missing. The record names the folder by its absolute path.
 *
 * @example
 *   const codec = openLatentCodec('runs/ae', 'scalar'); // codec.record.scale: 1 / std(z), per channel
 *   codec.dispose();
 */
export function openLatentCodec(dir: string, norm: LatentNormKind): LatentCodec {
  const { meta, net } = loadAutoencoder(dir);
  const stats = meta.latentStats;
  if (!stats || typeof meta.scaleFactor !== 'number') {
    net.dispose();
    throw new Error(
      `${path.join(dir, AUTOENCODER_FILE)} records no latent scale factor (written before it was measured): measure and store it with diffuse train-autoencoder --resume ${dir} (no more steps are taken)`,
    );
  }
  const record: LatentRecord = {
    autoencoder: path.resolve(dir),
    sha256: meta.weights.sha256,
    factor: meta.config.factor,
    imageSize: meta.imageSize,
    latentShape: meta.latentShape,
    ...latentNormalization(stats, norm),
  };
  return new LatentCodec(net, record);
}

/**
 * The codec a latent run's checkpoint records: its autoencoder (whose weights must still be the
 * ones it trained with, by SHA-256) with the recorded normalization.
 *
 * @example
 *   const codec = loadLatentCodec(readCheckpointMeta('runs/latent').latent!);
 */
export function loadLatentCodec(record: LatentRecord): LatentCodec {
  const dir = record.autoencoder;
  if (!fs.existsSync(path.join(dir, AUTOENCODER_FILE))) throw new Error(`the autoencoder of this latent model, ${dir}, is missing (no ${AUTOENCODER_FILE}): it is needed to decode the latents`);
  const { meta, net } = loadAutoencoder(dir);
  if (meta.weights.sha256 !== record.sha256) {
    net.dispose();
    throw new Error(`the autoencoder in ${dir} is not the one this latent model was trained with (its weights' SHA-256 differs): it cannot decode this model's latents`);
  }
  return new LatentCodec(net, record);
}
