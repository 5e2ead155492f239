/**
 * From a TrainConfig to the objects a run is made of: the data, the network, the
 * denoiser (the network behind its preconditioner), the loss, and the sampling grid.
 * The trainer and the `diffuse sample` command both build through here, so a checkpoint
 * is always read back the way it was trained.
 *
 * @example
 *   const data = loadTrainData(config);
 *   const latentData = loadTrainData(config, { latent: openLatentCodec(config.latent!, config.latentNorm) }); // a latent run's normalized latents
 *   const c = materializeConfig(config, data);                 // the model config filled in
 *   const net = buildNetwork(networkSpec(c, data), { generator: new Generator(0) });
 *   const D = buildDenoiser(c, net);
 *   const loss = buildLoss(c, D, net);                         // (x0, generator, cond) => LossResult
 *   const lr = buildLrSchedule(c);                             // step -> learning rate
 *   const x = generateSamples(D, c, { shape: data.shape, n: 16, seed: 0, labels: null });
 *   const y = generateSamples(D, c, { shape: data.shape, n: 16, seed: 0, labels: null, sampler: 'dpmpp-2m', grid: 'karras', steps: 20 });
 *   const z = generateSamples(D, c, { shape: data.shape, n: 1000, seed: 0, labels: null, batchSize: 100 }); // z[0..15] equal x bit for bit
 */
import { Generator } from '../engine/random';
import { dispose, tidy } from '../engine/scope';
import { cat, tensor } from '../engine/create';
import { LatentCodec } from '../resolution/latent';
import { Progress } from '../util/progress';
import { Tensor } from '../engine/tensor';
import { Conditioning, Denoiser } from '../core/denoiser';
import {
  boundaryCoefficients,
  discreteTimestep,
  edmCoefficients,
  edmDenoiser,
  fromCoefficients,
  logSigmaNoise,
  Network,
  NoiseLevel,
  Prediction,
  vConsistencyCoefficients,
  vpCoefficients,
} from '../core/precond';
import { cosineBetas, discreteVP, DiscreteVP, linearBetas, resolutionShift, shiftDiscreteVP, sigmoidBetas } from '../core/schedules';
import { epochSeed, DataLoader } from '../data/loader';
import { loadFashionMNIST } from '../data/fashion-mnist';
import { loadImageFolder } from '../data/image-folder';
import { EMOJI_SIZES, EMOJI_STYLES, EmojiStyle, loadEmoji } from '../data/emoji';
import { TOYS, ToySampler } from '../data/toys';
import { EDM2UNet, resolveEDM2Config, ResolvedEDM2Config } from '../models/edm2';
import { MLPDenoiserConfig, MLPDenoiserNet, resolveMLPDenoiserConfig } from '../models/mlp';
import { resolveUNetConfig, UNet, UNetConfig } from '../models/unet';
import { NestedUNet, NestedUNetConfig, resolveNestedUNetConfig } from '../models/nested-unet';
import { nestedUnetFlops, unetFlops } from '../models/flops';
import { activeLevels, clipNested, jointDenoiser, nestedLayout, nestedLoss, NestedPrecond, packedSize, pyramid, unpack } from '../resolution/matryoshka';
import { ChurnOptions, StepInfo } from '../sampling/common';
import { gridModel, GRIDS, gridSigmas } from '../sampling/grids';
import { getSampler } from '../sampling/index';
import { BatchProgress, sampleInBatches } from '../sampling/generate';
export { DEFAULT_BATCH_SIZE, initialNoise } from '../sampling/generate';
import { cosineSchedule, edm2Schedule, linearWarmupSchedule, LrSchedule } from '../optim/schedule';
import { ConfigError, TRAIN_MODELS, TrainConfig } from './config';
import { LoraOptions } from '../nn/lora';
import type { ConsistencyForm } from '../distillation/record';
import { ddpmLoss, edm2Loss, edmLoss, LossResult, vLoss, x0Loss } from './losses';
import { microAugment, microAugments, microValues } from './micro';
import { discreteSigma, logNormalSigma } from './sigma-sampling';
import { edmWeighting, minSnrWeighting, snrWeighting, Weighting } from './weighting';

/** A stream of seeds derived from the run's seed: one independent Generator per purpose. */
export function deriveSeed(seed: number, stream: number): number {
  return epochSeed(epochSeed(seed, 0x5eed), stream);
}

/** Seed streams of a run (deriveSeed's second argument). */
export const SEED_STREAMS = Object.freeze({ init: 1, train: 2, dropout: 3, toys: 4, samples: 5, latent: 6, latentCrops: 7 });

// ---- data --------------------------------------------------------------------------

export interface TrainData {
  /** 'images' [B, C, H, W] in [-1, 1], or 'points' [B, 2] (2-D toys). */
  kind: 'images' | 'points';
  /** The shape of one sample. */
  shape: number[];
  /** Class names when the data has labels. */
  classNames: string[] | null;
  /** Samples in the dataset (null for the endless toys). */
  size: number | null;
  /** The batch of a step: pure, so a resumed run sees the batches of an uninterrupted one. */
  batchAt(step: number): { x: Tensor; labels?: Tensor; /** SDXL's (h, w, top, left) [B, 4] in pixels, when the data made the crops (a latent run). */ micro?: Tensor };
  dispose(): void;
}

/** The samples of the classes `ids` lists ('5,7,9'; config dataClasses) only, in their order; the class names stay (the model keeps every class). Frees `ds`'s tensors. */
function keepClasses(ds: { images: Tensor; labels: Tensor; classNames: string[] }, ids: string): { images: Tensor; labels: Tensor; classNames: string[] } {
  const want = ids.split(',').map((t) => Number(t.trim()));
  if (want.length === 0 || !want.every((c) => Number.isSafeInteger(c) && c >= 0 && c < ds.classNames.length))
    throw new ConfigError('dataClasses', `expected comma-separated class ids in 0..${ds.classNames.length - 1}, got ${JSON.stringify(ids)}`);
  const keep: number[] = [];
  ds.labels.toFloat64Array().forEach((y, i) => want.includes(y) && keep.push(i));
  if (keep.length === 0) throw new ConfigError('dataClasses', `${JSON.stringify(ids)} selects no sample`);
  const cut = tidy(() => {
    const idx = tensor(keep, { dtype: 'int64' });
    return { images: ds.images.indexSelect(0, idx), labels: ds.labels.indexSelect(0, idx) };
  });
  ds.images.dispose();
  ds.labels.dispose();
  return { ...cut, classNames: ds.classNames };
}

/**
 * The dataset a config names, with a batch function for its batchSize and seed. With `latent`
 * (a latent run's codec, config latent) the samples are the images' normalized latents (latentTrainData).
 */
export function loadTrainData(config: TrainConfig, { latent = null, log = null }: { latent?: LatentCodec | null; log?: NodeJS.WritableStream | null } = {}): TrainData {
  const { data, batchSize, seed } = config;
  if (Object.hasOwn(TOYS, data) && latent) throw new ConfigError('latent', `encodes images, but ${data} is 2-D point data`);
  if (Object.hasOwn(TOYS, data)) {
    const toy: ToySampler = TOYS[data as keyof typeof TOYS];
    const base = deriveSeed(seed, SEED_STREAMS.toys);
    return {
      kind: 'points',
      shape: [2],
      classNames: null,
      size: null,
      batchAt: (step) => ({ x: toy(batchSize, new Generator(epochSeed(base, step))) }),
      dispose: () => {},
    };
  }
  let ds: { images: Tensor; labels: Tensor; classNames: string[] };
  if (data === 'fashion-mnist') {
    if (config.imageSize !== 28 && config.imageSize !== 32) throw new ConfigError('imageSize', `Fashion-MNIST is 28 x 28 (or 32 x 32 padded): imageSize must be 28 or 32, got ${config.imageSize}`);
    ds = loadFashionMNIST({ pad32: config.imageSize === 32 });
  } else if (data.startsWith('folder:')) {
    ds = loadImageFolder(data.slice('folder:'.length), { size: config.imageSize, mode: config.channels });
  } else if (data === 'emoji' || data.startsWith('emoji:')) {
    const style = data.slice('emoji:'.length);
    if (data !== 'emoji' && !(EMOJI_STYLES as readonly string[]).includes(style)) throw new ConfigError('data', `expected 'emoji', 'emoji:google' or 'emoji:twitter', got ${JSON.stringify(data)}`);
    if (!EMOJI_SIZES.includes(config.imageSize)) throw new ConfigError('imageSize', `emoji are 64 x 64, averaged down by 2 x 2 means: imageSize must be 16, 32 or 64, got ${config.imageSize}`);
    const e = loadEmoji({ split: 'train', size: config.imageSize, styles: data === 'emoji' ? EMOJI_STYLES : [style as EmojiStyle] });
    e.styles.dispose();
    ds = e;
  } else {
    throw new ConfigError('data', `expected 'fashion-mnist', 'emoji', 'emoji:google', 'emoji:twitter', 'folder:PATH' or a toy (${Object.keys(TOYS).join(', ')}), got ${JSON.stringify(data)}`);
  }
  if (config.dataClasses !== null) ds = keepClasses(ds, config.dataClasses);
  if (config.dataLimit !== null && config.dataLimit < ds.images.dim(0)) {
    const n = config.dataLimit;
    const cut = tidy(() => ({ images: ds.images.narrow(0, 0, n).contiguous(), labels: ds.labels.narrow(0, 0, n).contiguous() }));
    ds.images.dispose();
    ds.labels.dispose();
    ds = { ...cut, classNames: ds.classNames };
  }
  if (latent) {
    try {
      return latentTrainData(ds, latent, config, log);
    } catch (e) {
      dispose([ds.images, ds.labels]);
      throw e;
    }
  }
  const { images, labels } = ds;
  const loader = new DataLoader({ images, labels }, { batchSize, seed, flip: config.flip });
  return {
    kind: 'images',
    shape: images.shape.slice(1),
    classNames: ds.classNames.length > 1 ? ds.classNames : null,
    size: images.dim(0),
    batchAt: (step) => {
      const b = loader.batchAt(step);
      b.indices.dispose();
      return { x: b.x, labels: b.labels };
    },
    dispose: () => {
      loader.dispose();
      images.dispose();
      labels.dispose();
    },
  };
}

/**
 * A latent run's data (docs/latent.md): every training image is encoded once up front to its
 * posterior (mean and logvar; with flips, the flipped image's too; a progress bar on `log`), and the batch of step k is a
 * posterior sample of the images the DataLoader picks for k, drawn from a generator seeded by
 * (seed, k) and normalized by the codec: a pure function of the step, so resume stays bit-exact.
 * With SDXL's crops or rescales (cropZoom, sizeMin), they are made on the pixels of step k's
 * images (a generator seeded by (seed, k)) and the images they changed are encoded afresh; the
 * batch then carries each sample's (h, w, top, left). Takes ownership of ds's tensors.
 */
function latentTrainData(ds: { images: Tensor; labels: Tensor; classNames: string[] }, codec: LatentCodec, config: TrainConfig, log: NodeJS.WritableStream | null): TrainData {
  const r = codec.record;
  if (config.imageSize !== r.imageSize)
    throw new ConfigError(
      'imageSize',
      `must be the autoencoder's image size ${r.imageSize} (latent ${JSON.stringify(config.latent)} encodes ${r.imageSize} px images to [${r.latentShape}]), got ${config.imageSize}`,
    );
  const c = codec.net.config.inChannels;
  if (ds.images.dim(1) !== c)
    throw new ConfigError('data', `${config.data} has ${ds.images.dim(1)} channel(s), but the autoencoder of latent ${JSON.stringify(config.latent)} encodes ${c}-channel images`);
  const { images, labels } = ds;
  const n = images.dim(0);
  const bar = log ? new Progress(config.flip ? 2 * n : n, `encode ${n} training images${config.flip ? ' and their flips' : ''} (once)`, log as NodeJS.WriteStream) : null;
  const onBatch = bar ? (size: number) => bar.tick({}, size) : undefined;
  const moments = codec.encodePosteriors(images, { onBatch }); // [N, 2C, h, w]
  const flipped = config.flip ? tidy(() => codec.encodePosteriors(images.flip(-1), { onBatch })) : null;
  bar?.done();
  const loader = new DataLoader({ images, labels }, { batchSize: config.batchSize, seed: config.seed, flip: config.flip });
  const base = deriveSeed(config.seed, SEED_STREAMS.latent);
  const cropBase = microAugments(config) ? deriveSeed(config.seed, SEED_STREAMS.latentCrops) : null;
  /** Step k's moments with SDXL's crops and rescales made in pixel space: only the images they changed are encoded again. */
  const augmented = (m: Tensor, pixels: Tensor, step: number) => {
    const a = microAugment(pixels, { ...config, generator: new Generator(epochSeed(cropBase!, step)) });
    const diff = a.x
      .sub(pixels)
      .abs()
      .reshape([pixels.dim(0), -1])
      .max(1)
      .toFloat64Array(); // a crop at (0, 0) changes the image too
    const changed = [...diff.keys()].filter((i) => diff[i] > 0);
    if (!changed.length) return { m, micro: a.micro };
    const fresh = codec.encodePosteriors(a.x.indexSelect(0, tensor(changed, { dtype: 'int64' })));
    let next = pixels.dim(0);
    const at = [...diff.keys()].map((i) => (diff[i] > 0 ? next++ : i)); // row i of cat([m, fresh]): its fresh encoding, or the stored one
    return { m: cat([m, fresh], 0).indexSelect(0, tensor(at, { dtype: 'int64' })), micro: a.micro };
  };
  return {
    kind: 'images',
    shape: [...r.latentShape],
    classNames: ds.classNames.length > 1 ? ds.classNames : null,
    size: images.dim(0),
    batchAt: (step) => {
      const b = loader.batchAt(step);
      const { x, micro } = tidy(() => {
        let m = moments.indexSelect(0, b.indices); // [B, 2C, h, w]
        if (flipped && b.flipped) m = b.flipped.reshape([-1, 1, 1, 1]).where(flipped.indexSelect(0, b.indices), m);
        const crops = cropBase !== null ? augmented(m, b.x, step) : null; // SDXL Sec. 2.2, on the pixels (b.x is flipped as m is)
        return { x: codec.sample(crops?.m ?? m, new Generator(epochSeed(base, step))), micro: crops?.micro }; // [B, C, h, w], normalized
      });
      dispose([b.x, b.indices, ...(b.flipped ? [b.flipped] : [])]);
      return { x, labels: b.labels, ...(micro && { micro }) };
    },
    dispose: () => {
      loader.dispose();
      dispose([images, labels, moments, ...(flipped ? [flipped] : [])]);
    },
  };
}

// ---- the network -------------------------------------------------------------------

/** An exact network description: what a checkpoint needs to rebuild the network. */
export type NetworkSpec =
  { type: 'unet'; config: UNetConfig } | { type: 'mlp'; config: MLPDenoiserConfig } | { type: 'edm2'; config: ResolvedEDM2Config } | { type: 'nested'; config: NestedUNetConfig };

export type DenoiserNet = UNet | MLPDenoiserNet | EDM2UNet | NestedUNet;

/**
 * The config with its choices made concrete: classConditional true or false (from the
 * data when 'auto'), and every model field filled with the trainer's defaults, so the
 * config stored in a checkpoint does not depend on this version's defaults.
 */
export function materializeConfig(config: TrainConfig, data: Pick<TrainData, 'classNames' | 'kind'>): TrainConfig {
  let cond = config.classConditional;
  if (cond === 'auto') cond = data.classNames !== null;
  if (cond && data.classNames === null) throw new ConfigError('classConditional', `is true, but ${config.data} has no class labels (set it to false or auto)`);
  if (data.kind === 'points' && config.model.type !== 'mlp') throw new ConfigError('model', `${config.data} is 2-D point data: use the mlp model (model = mlp), not ${config.model.type}`);
  if (data.kind === 'points' && config.shiftBase !== null)
    throw new ConfigError('shiftBase', `shifts the schedule by the image size, but ${config.data} is 2-D point data (got shiftBase ${config.shiftBase}; use inputScale to move a toy's schedule)`);
  if (config.multiscaleBase !== null) multiscaleScales(config.multiscaleBase, data.kind === 'points' ? null : config.imageSize);
  if (data.kind === 'images' && config.model.type === 'mlp') throw new ConfigError('model', `${config.data} is image data: use the unet or edm2 model, not ${config.model.type}`);
  if (config.nested.length) checkNested(config, data.kind);
  const { type, ...given } = config.model;
  const model = { type, ...TRAIN_MODELS[type], ...given };
  return { ...config, classConditional: cond, model };
}

/** The full network config of a (materialized) training config and its data. */
export function networkSpec(config: TrainConfig, data: Pick<TrainData, 'shape' | 'classNames'>): NetworkSpec {
  const numClasses = config.classConditional === true && data.classNames ? data.classNames.length : null;
  const { type, ...fields } = config.model;
  try {
    if (type === 'unet' && config.nested.length)
      return {
        type: 'nested',
        config: resolveNestedUNetConfig({ core: { ...(fields as Partial<UNetConfig>), inChannels: data.shape[0], imageSize: config.nested[0], numClasses }, resolutions: config.nested }),
      };
    if (type === 'unet') {
      const sr: Partial<UNetConfig> = config.lowRes !== null ? { condChannels: data.shape[0], augEmbedding: true } : {}; // a super-resolution stage (src/resolution/super-res.ts)
      if (config.microCond) sr.microConditioning = true; // SDXL's size and crop embedding (src/training/micro.ts)
      return { type, config: resolveUNetConfig({ ...(fields as Partial<UNetConfig>), inChannels: data.shape[0], imageSize: data.shape[1], numClasses, ...sr }) };
    }
    if (type === 'edm2') return { type, config: resolveEDM2Config({ ...fields, imgChannels: data.shape[0], imgResolution: data.shape[1], labelDim: numClasses ?? 0 }) };
    return { type, config: resolveMLPDenoiserConfig({ ...(fields as Partial<MLPDenoiserConfig>), dim: data.shape[0], numClasses }) };
  } catch (e) {
    const latent = config.latent !== null ? ` (a latent model works at the latent side, ${data.shape[1]} px = imageSize ${config.imageSize} / f)` : '';
    throw new ConfigError('model', (e as Error).message + latent);
  }
}

/**
 * The forward FLOPs of one sample of size shape [C, H, W] for the network a spec builds (unetFlops,
 * nestedUnetFlops: every level), or null for the networks without a count (mlp, edm2).
 *
 * @example
 *   networkFlops(meta.network, meta.sampleShape); // models/emoji-64: ~0.745e9
 */
export function networkFlops(spec: NetworkSpec, shape: readonly number[]): number | null {
  if (spec.type !== 'unet' && spec.type !== 'nested') return null;
  const net = buildNetwork(spec) as UNet | NestedUNet;
  try {
    return net instanceof NestedUNet ? nestedUnetFlops(net) : unetFlops(net, shape[1], shape[2]);
  } finally {
    net.dispose();
  }
}

/** A network from its spec (weights initialized from `generator`). */
export function buildNetwork(spec: NetworkSpec, { generator, dropoutGenerator }: { generator?: Generator; dropoutGenerator?: Generator } = {}): DenoiserNet {
  if (spec.type === 'unet') return new UNet(spec.config, { generator, dropoutGenerator });
  if (spec.type === 'mlp') return new MLPDenoiserNet(spec.config, { generator });
  if (spec.type === 'edm2') return new EDM2UNet(spec.config, { generator, dropoutGenerator });
  if (spec.type === 'nested') return new NestedUNet(spec.config, { generator, dropoutGenerator });
  throw new TypeError(`buildNetwork: unknown network type ${JSON.stringify((spec as { type: unknown }).type)}`);
}

/** A LoRA run's adapter options (config loraRank, loraAlpha, loraTargets); null when the config trains every weight. */
export function loraOptions(c: Pick<TrainConfig, 'loraRank' | 'loraAlpha' | 'loraTargets'>): LoraOptions | null {
  if (c.loraRank === null || c.loraRank === undefined) return null;
  const targets = c.loraTargets.split(',').map((t) => t.trim());
  if (targets.some((t) => t === '')) throw new ConfigError('loraTargets', `expected comma-separated layer names, got ${JSON.stringify(c.loraTargets)}`);
  return { rank: c.loraRank, alpha: c.loraAlpha ?? c.loraRank, targets };
}

// ---- objective, denoiser, sampling ---------------------------------------------------

/** What a discrete-schedule objective's network predicts (null for edm and edm2, which use EDM's preconditioning). */
export function prediction(objective: TrainConfig['objective']): Prediction | null {
  return objective === 'eps' || objective === 'x0' || objective === 'v' ? objective : null;
}

/**
 * The resolutions of simple diffusion's multiscale loss at imageSize d (null: 2-D points):
 * base, 2 base, ..., d. A ConfigError unless d / base is a power of 2.
 *
 * @example
 *   multiscaleScales(16, 64); // [16, 32, 64]
 */
export function multiscaleScales(base: number, imageSize: number | null): number[] {
  if (imageSize === null) throw new ConfigError('multiscaleBase', `pools the error over image resolutions, but the data is 2-D points (got multiscaleBase ${base})`);
  const ratio = imageSize / base;
  if (!Number.isInteger(ratio) || (ratio & (ratio - 1)) !== 0)
    throw new ConfigError(
      'multiscaleBase',
      `must divide the image size by a power of 2 (imageSize ${imageSize}: one of ${[1, 2, 4, 8, 16]
        .map((r) => imageSize / r)
        .filter((b) => Number.isInteger(b))
        .join(', ')}), got ${base}`,
    );
  const out: number[] = [];
  for (let s = base; s <= imageSize; s *= 2) out.push(s);
  return out;
}

/** The config keys that set the noise schedule's shift (logSnrShift). */
export type ShiftKeys = 'shiftBase' | 'imageSize' | 'inputScale';

/**
 * The log-SNR shift of a config (0: none), one number for both papers' knobs:
 *   simple diffusion (Hoogeboom et al. 2023, Sec. 3.1): 2 ln(shiftBase / imageSize);
 *   Chen 2023, Sec. 3 (input scaling): x_t = sqrt(abar) b x0 + sqrt(1 - abar) eps, divided by its
 *   std, is VP's input at sigma / b, so lambda moves by 2 ln b (docs/training.md, section 3).
 *
 * @example
 *   logSnrShift({ shiftBase: 32, imageSize: 64, inputScale: 1 }); // 2 ln(1/2): sigma x 2
 *   logSnrShift({ shiftBase: null, imageSize: 64, inputScale: 0.5 }); // the same move
 */
export function logSnrShift(config: Pick<TrainConfig, ShiftKeys> & { nested?: number[] }): number {
  const size = config.nested?.length ? config.nested[0] : config.imageSize; // a nested model's sigma is its smallest resolution's
  const res = config.shiftBase === null ? 0 : resolutionShift({ base: config.shiftBase, resolution: size });
  return res + 2 * Math.log(config.inputScale);
}

/** The discrete VP schedule of an eps / x0 / v config, shifted by logSnrShift (null for edm and edm2). */
export function buildSchedule(config: Pick<TrainConfig, 'objective' | 'betaSchedule' | 'timesteps' | ShiftKeys> & { nested?: number[] }): DiscreteVP | null {
  if (prediction(config.objective) === null) return null;
  const T = config.timesteps;
  const betas = config.betaSchedule === 'cosine' ? cosineBetas(T) : config.betaSchedule === 'sigmoid' ? sigmoidBetas(T) : linearBetas(T);
  return shiftDiscreteVP(discreteVP(betas), logSnrShift(config));
}

/**
 * The network behind the config's preconditioner: eps / x0 / v on the discrete VP schedule
 * (the network told the timestep index, or ln(sigma) / 4 for EDM2's network, whose Fourier
 * features expect it), or EDM's (edm, edm2).
 */
export function buildDenoiser(config: TrainConfig, net: DenoiserNet, { consistency = null }: { consistency?: ConsistencyForm | null } = {}): Denoiser {
  if (net instanceof NestedUNet) {
    if (consistency) throw new ConfigError('nested', 'a nested model is not a consistency model');
    return jointDenoiser(net, nestedPrecond(config), nestedLayout(net.config.core.inChannels, net.resolutions));
  }
  const F: Network = (xIn, cNoise, cond) => {
    if (net instanceof UNet) return net.forward(xIn, cNoise, cond?.classLabels, cond?.guidance, cond?.lowRes, cond?.augLevel, cond?.micro);
    if (cond?.guidance !== undefined) throw new TypeError(`buildDenoiser: cond.guidance is for a U-Net with guidanceEmbedding, not a ${net.constructor.name}`);
    if (cond?.lowRes !== undefined) throw new TypeError(`buildDenoiser: cond.lowRes is for a super-resolution U-Net (condChannels), not a ${net.constructor.name}`);
    return net.forward(xIn, cNoise, cond?.classLabels);
  };
  const schedule = buildSchedule(config);
  const target = prediction(config.objective);
  if (schedule && target) {
    const cNoise: NoiseLevel = net instanceof EDM2UNet ? logSigmaNoise : discreteTimestep(schedule);
    if (consistency?.form === 'denoiser') {
      const c = consistency; // LCM: the network's own prediction with the boundary on top
      return fromCoefficients(F, (sigma) => tidy(() => boundaryCoefficients(vpCoefficients(target, sigma, cNoise), sigma, c)));
    }
    if (consistency) {
      if (target !== 'v') throw new ConfigError('objective', `a consistency model here is read with the v row of coefficients (vConsistencyCoefficients), got ${target}`);
      return fromCoefficients(F, (sigma) => vConsistencyCoefficients(sigma, consistency.sigmaMin, cNoise));
    }
    return fromCoefficients(F, (sigma) => vpCoefficients(target, sigma, cNoise));
  }
  if (consistency) throw new ConfigError('objective', `a consistency model here needs a discrete-time v model, got ${config.objective}`);
  return edmDenoiser(F, { sigmaData: config.sigmaData });
}

/** The weighting of an eps / x0 / v objective in its target's space (undefined: uniform). */
export function buildWeighting(config: Pick<TrainConfig, 'objective' | 'weighting' | 'minSnrGamma'>): Weighting | undefined {
  const target = prediction(config.objective);
  if (target === null || config.weighting === 'auto' || config.weighting === 'uniform') return undefined;
  return config.weighting === 'snr' ? snrWeighting(target) : minSnrWeighting(config.minSnrGamma, target);
}

/** The log-normal sigma distribution of edm and edm2 (EDM's, Karras et al. 2022, Table 1; edm2 uses the same, so the two differ only in the weighting). */
export const EDM_SIGMA = Object.freeze({ pMean: -1.2, pStd: 1.2 });

/**
 * The training sigma distribution of an edm / edm2 config: EDM_SIGMA with ln(sigma) moved by
 * the config's shift, P_mean - logSnrShift / 2 (lambda = -2 ln sigma; with shiftBase that is
 * P_mean + ln(imageSize / shiftBase): simple diffusion's shift in sigma coordinates).
 */
export function edmSigma(config: Pick<TrainConfig, ShiftKeys> & { nested?: number[] }): { pMean: number; pStd: number } {
  return { pMean: EDM_SIGMA.pMean - logSnrShift(config) / 2, pStd: EDM_SIGMA.pStd };
}

/** A training loss: the clean batch [B, ...] -> a LossResult, drawing sigma and noise from `generator`; `step` (the training step) matters to progressive nested training only. */
/** A training loss; a nested (Matryoshka) run's also gives each grown level's mean loss term, smallest first (`levels`). */
export type TrainLoss = (x0: Tensor, generator: Generator, cond?: Conditioning, step?: number) => LossResult & { levels?: number[] };

/**
 * The config's objective (docs/training.md, section 4) for a denoiser D; `logvar` is u(sigma)
 * [B] -> [B], required by edm2 only. buildLoss supplies it from the network.
 *   eps: Ho et al. 2020, Eq. 14; x0: ||D - x0||^2; v: Salimans & Ho 2022, Sec. 4 — t ~ U{1..T},
 *        each weighted by buildWeighting;
 *   edm: Karras et al. 2022, Eq. 2 and Table 1; edm2: Karras et al. 2024, Eq. 21.
 */
export function objectiveLoss(config: TrainConfig, D: Denoiser, logvar?: (sigma: Tensor) => Tensor): TrainLoss {
  const { objective, sigmaData } = config;
  const schedule = buildSchedule(config);
  const weighting = buildWeighting(config);
  const sigmaDist = edmSigma(config);
  const scales = config.multiscaleBase === null ? undefined : multiscaleScales(config.multiscaleBase, config.imageSize);
  if (schedule && objective === 'eps') return (x0, generator, cond) => ddpmLoss(D, x0, schedule, { generator, cond, weighting, scales });
  if (schedule && (objective === 'x0' || objective === 'v')) {
    const [loss, sampleSigma] = [objective === 'x0' ? x0Loss : vLoss, discreteSigma(schedule)];
    return (x0, generator, cond) => loss(D, x0, { generator, cond, sampleSigma, weighting, scales });
  }
  if (objective === 'edm') return (x0, generator, cond) => edmLoss(D, x0, { generator, cond, sigmaData, scales, ...sigmaDist });
  if (objective === 'edm2') {
    if (!logvar) throw new TypeError('objectiveLoss: objective edm2 needs logvar, the learned u(sigma)');
    return (x0, generator, cond) => edm2Loss(D, logvar, x0, { generator, cond, sigmaData, scales, ...sigmaDist });
  }
  throw new ConfigError('objective', `unknown objective ${JSON.stringify(objective)}`);
}

/** The config's objective as a function of the clean batch, for the denoiser D of `net` (edm2 reads u(sigma) from net's log-variance head). */
export function buildLoss(config: TrainConfig, D: Denoiser, net: DenoiserNet): TrainLoss {
  if (net instanceof NestedUNet) return nestedTrainLoss(config, net);
  if (config.objective !== 'edm2') return objectiveLoss(config, D);
  if (!(net instanceof EDM2UNet)) throw new ConfigError('objective', `edm2 learns u(sigma) with the log-variance head of EDM2's network: use model edm2 (the network is ${net.constructor.name})`);
  return objectiveLoss(config, D, (sigma) => tidy(() => net.logvar(logSigmaNoise(sigma)).reshape([-1]))); // EDM2's Precond: u(c_noise)
}

/**
 * The learning rate at each step (steps taken before the update): a linear warm-up over
 * warmupSteps, then lrSchedule's 'constant', 'cosine' (to 0 at steps) or 'inv-sqrt'
 * (EDM2's lr / sqrt(max(step / lrRefSteps, 1)), Karras et al. 2024, Sec. 3 "Learning rate decay").
 *
 * @example
 *   const lr = buildLrSchedule(resolveTrainConfig({ model: 'edm2', lr: 0.01, lrRefSteps: 500 }));
 *   lr(2000); // 0.01 / sqrt(4) = 0.005
 */
export function buildLrSchedule(config: Pick<TrainConfig, 'lr' | 'lrSchedule' | 'warmupSteps' | 'steps' | 'lrRefSteps' | 'batchSize'>): LrSchedule {
  const { lr, warmupSteps, steps, batchSize } = config;
  switch (config.lrSchedule) {
    case 'cosine':
      if (warmupSteps < steps) return cosineSchedule({ lr, totalSteps: steps, warmupSteps });
      return linearWarmupSchedule({ lr, warmupSteps });
    case 'constant':
      return linearWarmupSchedule({ lr, warmupSteps });
    case 'inv-sqrt':
      return edm2Schedule({ refLr: lr, refBatches: config.lrRefSteps, rampupImages: warmupSteps * batchSize, batchSize });
    default:
      throw new ConfigError('lrSchedule', `expected 'constant', 'cosine' or 'inv-sqrt', got ${JSON.stringify(config.lrSchedule)}`);
  }
}

/** The grid a config samples on by default: trailing timesteps for a discrete (eps / x0 / v) model, Karras for EDM. */
export function defaultGrid(config: Pick<TrainConfig, 'objective'>): string {
  return prediction(config.objective) !== null ? 'trailing' : 'karras';
}

/** The sampling grid `grid` (default: the config's, defaultGrid) of `steps` over the model's sigma range (gridSigmas). */
export function samplingSigmas(config: TrainConfig, steps: number, grid = defaultGrid(config)): Tensor {
  const schedule = buildSchedule(config);
  if (schedule && GRIDS[grid]?.discreteOnly && !(Number.isSafeInteger(steps) && steps >= 1 && steps <= schedule.T))
    throw new RangeError(`sampling steps must be an integer in [1, ${schedule.T}] (the model's T), got ${steps}`);
  return gridSigmas(grid, steps, gridModel(schedule));
}

export interface GenerateOptions {
  /** The shape of one sample ([C, H, W] or [2]). */
  shape: number[];
  /** How many samples. */
  n: number;
  /** Sample i draws all of its noise (initial and per step) from Generator(seed + i), whatever the batch size. */
  seed: number;
  /** Sampler steps (default 100). */
  steps?: number;
  /** Class ids [n] (the null class = unconditional), or null for an unconditional model. */
  labels: number[] | null;
  /** A registered sampler (SAMPLERS; default 'ddpm'). */
  sampler?: string;
  /** A named grid (GRIDS; default defaultGrid(config): 'trailing' for DDPM models, 'karras' for EDM). */
  grid?: string;
  /** The sampler's stochasticity (ddim, euler-ancestral, dpmpp-2m-sde, dpmpp-3m-sde; default the sampler's). */
  eta?: number;
  /** EDM churn (euler, heun, heun-churn). */
  churn?: ChurnOptions;
  /** The DDPM sampler's variance choice (default 'beta'). */
  variance?: 'beta' | 'posterior';
  /** Consistency sampling's sigma_min (a consistency student's boundary). */
  sigmaMin?: number;
  /** Clamp x0 estimates to [-1, 1] (images only; default on, for every sampler: ADM's clip_denoised; docs/samplers.md says why). */
  clip?: boolean;
  /** Samples per batch (default DEFAULT_BATCH_SIZE, chosen for speed: docs/BENCHMARKS.md); changes speed and memory, never the samples. */
  batchSize?: number;
  /** Per-step callback (progress): step i of steps, in the batch of samples batch.start .. batch.start + batch.size - 1, with the step's x and x0 estimate. */
  onStep?: (i: number, steps: number, batch: BatchProgress, info: StepInfo) => void;
  /** Applied to each batch before it is stored (e.g. quantize); see sampleInBatches. */
  perBatch?: (x: Tensor) => Tensor;
  /** Conditioning besides the labels for samples start .. start + size - 1 (a super-resolution stage's); see sampleInBatches. */
  condAt?: (start: number, size: number) => Omit<Conditioning, 'classLabels'>;
  /** A micro-conditioned model's (h, w, top, left) for every sample (default: imageSize, imageSize, 0, 0, uncropped and full size; src/training/micro.ts). */
  micro?: readonly number[];
  /** A latent model's decoder (loadModel's latent.decode): each batch's latents become images in [-1, 1] before perBatch. Required when config.latent is set. */
  decode?: ((z: Tensor) => Tensor) | null;
}

/**
 * Samples from a denoiser with a registered sampler on a named grid (default: DDPM ancestral sampling,
 * trailing steps), x0 estimates clipped for images, in batches (sampling/generate.ts: the same samples
 * for any batch size, one batch's memory at a time).
 */
export function generateSamples(D: Denoiser, config: TrainConfig, opts: GenerateOptions): Tensor {
  const { steps = 100, grid, clip: clipOpt, decode, perBatch, micro, ...rest } = opts;
  if (opts.labels && opts.labels.length !== opts.n) throw new RangeError(`generateSamples: ${opts.labels.length} labels for ${opts.n} samples`);
  getSampler(opts.sampler ?? 'ddpm'); // an unknown name fails before any work
  if (config.latent !== null && !decode) throw new TypeError(`generateSamples: a latent model (latent ${JSON.stringify(config.latent)}) samples latents: pass decode (loadModel's latent.decode)`);
  if (config.latent === null && decode) throw new TypeError('generateSamples: decode is for a latent model (config latent), this one samples pixels');
  if (config.latent !== null && clipOpt === true)
    throw new RangeError('clip clamps x0 estimates to [-1, 1], the range of pixels; a latent model samples unbounded latents (drop --clip; the decoded images are clamped)');
  const clip = (clipOpt ?? true) && opts.shape.length === 3 && config.latent === null; // latents are unbounded: never clipped
  if (config.nested.length) return generateNested(D, config, { ...opts, clip });
  if (micro !== undefined && !config.microCond) throw new ConfigError('micro', 'this model was not trained with micro-conditioning (microCond)');
  const { condAt } = rest;
  if (config.microCond) rest.condAt = (start, size) => ({ ...condAt?.(start, size), micro: microValues(size, config.imageSize, micro) }); // SDXL: uncropped, full size by default
  const sigmas = samplingSigmas(config, steps, grid);
  const after = decode ? (z: Tensor) => (perBatch ? perBatch(decode(z)) : decode(z)) : perBatch;
  try {
    return sampleInBatches(D, sigmas, { ...rest, perBatch: after, clip: clip ? [-1, 1] : null });
  } finally {
    sigmas.dispose();
  }
}

// ---- Matryoshka diffusion (resolution/matryoshka.ts) ------------------------------------

/** The nested options' cross-checks (docs/resolution.md): a U-Net on images, resolutions doubling up to imageSize, one weight each. */
function checkNested(config: TrainConfig, kind: TrainData['kind']): void {
  const r = config.nested;
  if (kind !== 'images') throw new ConfigError('nested', `nests image resolutions, but ${config.data} is 2-D point data`);
  if (config.model.type !== 'unet') throw new ConfigError('nested', `the nested network is built around a U-Net core: use model unet, not ${config.model.type}`);
  if (config.objective === 'edm2') throw new ConfigError('nested', "objective edm2 needs EDM2's network; use eps, x0, v or edm");
  if (config.multiscaleBase !== null) throw new ConfigError('nested', 'and multiscaleBase both weigh resolutions: use one of them');
  if (r.some((v, i) => !(v >= 1) || (i > 0 && v !== 2 * r[i - 1]))) throw new ConfigError('nested', `each resolution must be twice the one before, smallest first (e.g. 16,32,64), got ${r.join(',')}`);
  if (r[r.length - 1] !== config.imageSize) throw new ConfigError('nested', `the largest resolution must be imageSize (${config.imageSize}), got ${r.join(',')}`);
  nestedWeights(config);
}

/** The nested loss's weights w_r (config nestedWeights; default all 1). */
export function nestedWeights(config: Pick<TrainConfig, 'nested' | 'nestedWeights'>): number[] {
  if (config.nestedWeights === null) return config.nested.map(() => 1);
  const w = config.nestedWeights.split(',').map((t) => Number(t.trim()));
  if (w.length !== config.nested.length || w.some((v) => !Number.isFinite(v) || v < 0))
    throw new ConfigError('nestedWeights', `expected ${config.nested.length} non-negative numbers (one per resolution ${config.nested.join(', ')}), got ${JSON.stringify(config.nestedWeights)}`);
  return w;
}

/** A nested model's preconditioning: the objective's coefficients at each sigma_r, and its c_noise of the base sigma (the shared t). */
export function nestedPrecond(config: TrainConfig): NestedPrecond {
  const schedule = buildSchedule(config);
  const target = prediction(config.objective);
  const same: NoiseLevel = (s) => s; // c_noise comes from noiseLevel instead
  if (schedule && target) return { coefficients: (s) => vpCoefficients(target, s, same), noiseLevel: discreteTimestep(schedule) };
  return { coefficients: (s) => edmCoefficients(s, { sigmaData: config.sigmaData, cNoise: same }), noiseLevel: logSigmaNoise };
}

/** MDM's loss for the config (nestedLoss on the batch's pyramid), over the levels grown by `step` (activeLevels; all without a step). */
function nestedTrainLoss(config: TrainConfig, net: NestedUNet): TrainLoss {
  const layout = nestedLayout(net.config.core.inChannels, net.resolutions);
  const precond = nestedPrecond(config);
  const schedule = buildSchedule(config);
  const target = prediction(config.objective) ?? 'x0';
  const sampleSigma = schedule ? discreteSigma(schedule) : logNormalSigma(edmSigma(config));
  const weighting = schedule ? buildWeighting(config) : edmWeighting(config.sigmaData);
  const weights = nestedWeights(config);
  return (x0, generator, cond, step) => {
    const L = step === undefined ? layout.resolutions.length : activeLevels(step, config.nestedGrow, layout.resolutions.length);
    const x0s = pyramid(x0, layout.resolutions.slice(0, L));
    try {
      const r = nestedLoss(net, precond, layout, x0s, { generator, cond, target, sampleSigma, weighting, weights });
      const levels = r.terms.map((t) => t.item());
      for (const t of r.terms) t.dispose();
      return { loss: r.loss, perSample: r.perSample, sigma: r.sigma, levels };
    } finally {
      for (const x of x0s) x.dispose();
    }
  };
}

/** generateSamples for a nested model: the joint state of every level, sampled as one Denoiser's, then opts.shape's level unpacked. */
function generateNested(D: Denoiser, config: TrainConfig, opts: GenerateOptions & { clip: boolean }): Tensor {
  const { steps = 100, grid, clip, shape, perBatch, ...rest } = opts;
  const layout = nestedLayout(shape[0], config.nested);
  const L = config.nested.indexOf(shape[1]) + 1;
  if (L === 0 || shape.length !== 3 || shape[2] !== shape[1]) throw new RangeError(`a nested model samples at ${config.nested.join(', ')} px (square), got shape [${shape.join(', ')}]`);
  const sigmas = samplingSigmas(config, steps, grid);
  try {
    return sampleInBatches(clip ? clipNested(D, layout) : D, sigmas, {
      ...rest,
      shape: [packedSize(layout)],
      clip: null,
      perBatch: (y) => {
        const x = tidy(() => unpack(y, layout)[L - 1]); // [b, C, r, r]
        return perBatch ? perBatch(x) : x;
      },
    });
  } finally {
    sigmas.dispose();
  }
}
