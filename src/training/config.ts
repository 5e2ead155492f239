/**
 * The training configuration: one typed object with documented defaults, read from a
 * JSON file and/or `key = value` overrides (the command line's flags), every value
 * checked at this edge so a mistake names the key (or flag) and the value.
 *
 * The defaults are the embedded default run of `diffuse train`: a small class-conditional
 * U-Net on Fashion-MNIST (32 x 32, padded), DDPM's epsilon objective on the linear
 * T = 1000 schedule, Adam, an EMA of the weights (see TRAIN_DEFAULTS for the numbers
 * and docs/cli.md for why these).
 *
 * @example
 *   const c = resolveTrainConfig({ steps: 100, model: { type: 'mlp', hidden: 128 }, data: '8gaussians' }, 'my.json');
 *   const d = applyOverrides(TRAIN_DEFAULTS, [{ key: 'lr', value: '1e-3', source: '--lr' }]);
 */
import { EDM2_DEFAULTS, EDM2Config } from '../models/edm2';
import { MLP_DENOISER_DEFAULTS, MLPDenoiserConfig } from '../models/mlp';
import { UNET_DEFAULTS, UNetConfig } from '../models/unet';
import { checkValue, closest, ConfigError, describeSpec, FieldSpec, hint, Override, parseValue, resumableKeys, show } from './options';

export { closest, ConfigError };
export type { Override };
import { MAX_SIGMA_REL } from '../optim/phema';

/**
 * A U-Net (models/unet.ts), a residual MLP (models/mlp.ts) or EDM2's magnitude-preserving
 * U-Net (models/edm2.ts); fields not given take the trainer's defaults for that type.
 */
export type ModelConfig = ({ type: 'unet' } & Partial<UNetConfig>) | ({ type: 'mlp' } & Partial<MLPDenoiserConfig>) | ({ type: 'edm2' } & Partial<EDM2Config>);

/** The network types `model` may name. */
export type ModelType = ModelConfig['type'];
export const MODEL_TYPES: readonly ModelType[] = ['unet', 'mlp', 'edm2'];

/**
 * What the network is trained to predict, and with which loss (docs/training.md, section 4):
 * 'eps', 'x0' and 'v' share DDPM's discrete VP schedule and its uniform timestep sampling and
 * differ only in the target; 'edm' and 'edm2' are EDM's preconditioning with log-normal sigma,
 * 'edm2' adding the learned uncertainty weighting. 'ddpm' is read as 'eps' (older configs).
 */
export type Objective = 'eps' | 'x0' | 'v' | 'edm' | 'edm2';

/** The loss weighting of the eps / x0 / v objectives ('auto': each target's own squared error, i.e. uniform). */
export type WeightingName = 'auto' | 'uniform' | 'snr' | 'min-snr';

export interface TrainConfig {
  /** 'fashion-mnist', 'emoji' (both styles; 'emoji:google' or 'emoji:twitter' for one: RGB, the training split, labels = the 9 categories), 'folder:PATH' (a folder of PNG/JPEG images, one subfolder per class), or a 2-D toy: 'two-moons', 'swiss-roll', '8gaussians', 'checkerboard'. */
  data: string;
  /** Train on the first N samples of the dataset only (null: all). */
  dataLimit: number | null;
  /** Train on these classes only: comma-separated class ids, e.g. '5,7,9' (null: all). The model keeps every class. */
  dataClasses: string | null;
  /** Image side: Fashion-MNIST is 28, or 32 padded; emoji 16, 32 or 64; folders are resized to it. */
  imageSize: number;
  /** Folder images: 'gray' or 'rgb' (emoji are always RGB, Fashion-MNIST gray). */
  channels: 'gray' | 'rgb';
  /** Random horizontal flips. */
  flip: boolean;
  /** The network. */
  model: ModelConfig;
  /**
   * 'eps' (alias 'ddpm'): epsilon prediction on a discrete VP schedule (Ho et al. 2020); 'x0' and
   * 'v' (Salimans & Ho 2022): the same schedule and timesteps, another target; 'edm': EDM's
   * preconditioning and loss (Karras et al. 2022); 'edm2': EDM's, divided by a learned
   * e^u(sigma) plus u(sigma) (Karras et al. 2024, Eq. 21; needs model edm2, whose head u is).
   */
  objective: Objective;
  /**
   * eps / x0 / v only: 'uniform' (the target's squared error; 'auto' is the same), 'snr'
   * (SNR ||D - x0||^2, which is the eps loss), 'min-snr' (min(SNR, gamma) ||D - x0||^2, Hang
   * et al. 2023). edm and edm2 have their own weighting and take only 'auto'.
   */
  weighting: WeightingName;
  /** Min-SNR's gamma (weighting min-snr only). */
  minSnrGamma: number;
  /** DDPM betas: 'linear' (1e-4 .. 0.02, Ho et al.), 'cosine' (Nichol & Dhariwal) or 'sigmoid' (Chen 2023: start -3, end 3, tau 1). */
  betaSchedule: 'linear' | 'cosine' | 'sigmoid';
  /**
   * The resolution the noise schedule was tuned at (null: no shift). At imageSize d the log-SNR
   * moves by 2 ln(shiftBase / d) (simple diffusion, Hoogeboom et al. 2023), for training and
   * sampling; for edm / edm2 the training P_mean moves by ln(d / shiftBase) (docs/training.md, section 3).
   */
  shiftBase: number | null;
  /** Chen 2023's input scaling b (1: none): the log-SNR moves by 2 ln b, the same move as shiftBase (docs/training.md, section 3). */
  inputScale: number;
  /**
   * Simple diffusion's multiscale loss (Hoogeboom et al. 2023, Sec. 3.3; null: off): the squared
   * error is also measured on the error average-pooled to B, 2B, ... up to imageSize pixels,
   * resolution s weighted by 1/s (weights normalized to sum 1). imageSize / B must be a power of 2.
   */
  multiscaleBase: number | null;
  /**
   * Super-resolution (Ho et al. 2021, "Cascaded Diffusion Models"; null: off): train a stage that
   * makes imageSize px images from lowRes px ones (the training images average-pooled), given to
   * the U-Net upsampled and concatenated (docs/resolution.md). imageSize / lowRes must be an integer > 1.
   */
  lowRes: number | null;
  /** Noise-conditioning augmentation (CDM Sec. 4.2): the low-res condition is corrupted at s ~ U[0, augMax], s in [0, 1] (0: none). */
  augMax: number;
  /** Also blur half the low-res conditions (3 x 3 Gaussian, std ~ U[0.4, 0.6] low-res pixels; CDM's blurring augmentation). */
  augBlur: boolean;
  /**
   * Matryoshka diffusion (Gu et al. 2023; docs/resolution.md): the nested resolutions, smallest
   * first, each twice the one before, the largest = imageSize (e.g. [16, 32, 64]); the model
   * fields describe the core U-Net at the smallest. Empty: off (one resolution, as before).
   */
  nested: number[];
  /**
   * SDXL's micro-conditioning (Podell et al. 2023, Sec. 2.2; docs/resolution.md): the U-Net embeds
   * each training image's original size and crop offsets, (h, w, top, left) in pixels, and sampling
   * asks for (imageSize, imageSize, 0, 0): uncropped, full size. The crops and rescales themselves
   * are cropZoom, cropProb and sizeMin (they apply with or without microCond, for the control run).
   */
  microCond: boolean;
  /** Random crops: with probability cropProb an image is enlarged by z ~ U[1, cropZoom] and cropped back to imageSize at a random offset (1: off). */
  cropZoom: number;
  /** The share of images cropped when cropZoom > 1. */
  cropProb: number;
  /** Random rescales: each image is reduced to s ~ U{sizeMin..imageSize} px and enlarged back (bilinear), like a small original upscaled (null: off). */
  sizeMin: number | null;
  /** Progressive nested training: train the core alone, then add one outer level every this many steps (0: all levels from the start). */
  nestedGrow: number;
  /** The nested loss's weight per resolution, comma-separated, smallest first (e.g. '1,1,1'; null: all 1). */
  nestedWeights: string | null;
  /**
   * Latent diffusion (Rombach et al. 2022; docs/latent.md; null: off): the folder of an autoencoder
   * from `diffuse train-autoencoder`. The model is trained on its latents [4, S/f, S/f] of the
   * training images (a posterior sample per step, normalized by latentNorm); sample, eval and info
   * decode them back to images. imageSize must be the autoencoder's.
   */
  latent: string | null;
  /** How latents are normalized: 'scalar' (LDM's scale factor 1 / std(z)) or 'channel' (EDM2's per-channel (z - mean_c) / std_c). */
  latentNorm: 'scalar' | 'channel';
  /** DDPM's T. */
  timesteps: number;
  /** EDM's sigma_data (0.5 for images in [-1, 1]; 1 suits the 2-D toys). */
  sigmaData: number;
  /** Condition on class labels: true, false, or 'auto' (when the data has labels). */
  classConditional: boolean | 'auto';
  /** Probability of replacing a label by the null class (classifier-free guidance training, Ho & Salimans 2022). */
  labelDropout: number;
  batchSize: number;
  /** Optimizer steps in total (a resumed run continues to this count). */
  steps: number;
  optimizer: 'adam' | 'adamw';
  lr: number;
  weightDecay: number;
  /** Linear learning-rate warm-up over this many steps. */
  warmupSteps: number;
  /**
   * After the warm-up: 'constant'; 'cosine' decay to 0 at `steps` (no decay when warmupSteps >=
   * steps); or 'inv-sqrt', EDM2's lr / sqrt(max(step / lrRefSteps, 1)) (the default of model edm2).
   */
  lrSchedule: 'constant' | 'cosine' | 'inv-sqrt';
  /** inv-sqrt: t_ref, the step where the decay starts (EDM2's ref_batches; 0: no decay). */
  lrRefSteps: number;
  /** EMA half-life in training images (EDM's ema_halflife_kimg * 1000); give this or emaDecay. */
  emaHalfLifeImages: number | null;
  /** A fixed EMA decay per step instead (e.g. 0.9999, as DDPM). */
  emaDecay: number | null;
  /** EDM's EMA ramp-up: the half-life is at most this ratio of the images seen so far (null: none). */
  emaRampupRatio: number | null;
  /** 'standard': the EMA above; 'phema': EDM2's power-function EMAs of phemaStds instead, with snapshots in the run folder for `diffuse phema` (the run's EMA weights are then the first of them). */
  ema: 'standard' | 'phema';
  /** sigma_rel of the power-function EMAs tracked with ema 'phema' (EDM2: 0.05 and 0.10), each in (0, 1/sqrt(12)). */
  phemaStds: number[];
  /** Steps between post-hoc EMA snapshots (phema/phema-<step>-<std>.safetensors), and one at the end. */
  phemaSnapshotEvery: number;
  /** Clip the global gradient norm to this (null: no clipping). */
  gradClip: number | null;
  /** Fine-tune: start from the EMA weights of this run folder (its network must be the one this config builds); null: random weights. */
  init: string | null;
  /** LoRA (Hu et al. 2021): train only rank-r adapters on the loraTargets layers, the rest frozen (null: train every weight). docs/lora.md. */
  loraRank: number | null;
  /** LoRA's alpha: the update is scaled by alpha / r (null: r, a scaling of 1). */
  loraAlpha: number | null;
  /** The layers LoRA adapts, comma-separated: 'all', 'linear', 'conv', or module names such as 'qkv,proj_out' (PEFT's target_modules). */
  loraTargets: string;
  /** Seed of everything random: initial weights, batches, noise, label dropout. */
  seed: number;
  /** Write samples-<step>.png every this many steps (0: only at the end). */
  sampleEvery: number;
  /** Images in each sample grid (one column per class when class-conditional). */
  sampleCount: number;
  /** Sampler steps for the sample grids. */
  sampleSteps: number;
  /** Write a checkpoint every this many steps (0: only at the end and on Ctrl-C). */
  checkpointEvery: number;
  /** The run's folder: checkpoint, samples, loss.png. */
  out: string;
  /** CPU threads (null: the engine's default, every available core). */
  threads: number | null;
}

/**
 * The trainer's U-Net when none is specified: models/unet.ts's layout at a quarter of its
 * width (16 channels, GroupNorm over 8 groups), one residual block per level, attention at
 * 8x8 only: 300,641 parameters with 10 classes, ~0.12 GFLOP per 32 x 32 image forward. On
 * 2 busy cores it trains at ~80 images/s, fast enough to reach recognizable Fashion-MNIST
 * samples in the default 1200 steps (docs/cli.md).
 */
export const TRAIN_UNET: Readonly<Partial<UNetConfig>> = Object.freeze({ modelChannels: 16, groups: 8, channelMult: [1, 2, 2], numResBlocks: 1, attentionResolutions: [8] });

/** The trainer's MLP when none is specified: models/mlp.ts's defaults. */
export const TRAIN_MLP: Readonly<Partial<MLPDenoiserConfig>> = Object.freeze({});

/**
 * The trainer's EDM2 U-Net when none is specified: EDM2's layout (models/edm2.ts) scaled to
 * Fashion-MNIST 32 x 32: 16 channels x [1, 2, 2] (32, 16, 8 pixels), one block per encoder
 * level, attention at 8x8 (and in the innermost decoder block) with 32 channels per head.
 * docs/cli.md gives its parameter count and speed.
 */
export const TRAIN_EDM2: Readonly<Partial<EDM2Config>> = Object.freeze({ modelChannels: 16, channelMult: [1, 2, 2], numBlocks: 1, attnResolutions: [8], channelsPerHead: 32 });

/** The trainer's model fields for a type (before the user's). */
export const TRAIN_MODELS: Readonly<Record<ModelType, Readonly<Record<string, unknown>>>> = Object.freeze({ unet: TRAIN_UNET, mlp: TRAIN_MLP, edm2: TRAIN_EDM2 });

/** The defaults: the embedded `diffuse train` run. */
export const TRAIN_DEFAULTS: Readonly<TrainConfig> = Object.freeze({
  data: 'fashion-mnist',
  dataLimit: null,
  dataClasses: null,
  imageSize: 32,
  channels: 'gray',
  flip: false,
  model: { type: 'unet' },
  objective: 'eps',
  weighting: 'auto',
  minSnrGamma: 5,
  betaSchedule: 'linear',
  shiftBase: null,
  inputScale: 1,
  multiscaleBase: null,
  lowRes: null,
  augMax: 0,
  augBlur: false,
  nested: [],
  microCond: false,
  cropZoom: 1,
  cropProb: 0.5,
  sizeMin: null,
  nestedGrow: 0,
  nestedWeights: null,
  latent: null,
  latentNorm: 'scalar',
  timesteps: 1000,
  sigmaData: 0.5,
  classConditional: 'auto',
  labelDropout: 0.1,
  batchSize: 64,
  steps: 1200,
  optimizer: 'adam',
  lr: 1e-3,
  weightDecay: 0,
  warmupSteps: 100,
  lrSchedule: 'cosine',
  lrRefSteps: 500,
  emaHalfLifeImages: 10000,
  emaDecay: null,
  emaRampupRatio: 0.1,
  ema: 'standard',
  phemaStds: [0.05, 0.1],
  phemaSnapshotEvery: 100,
  gradClip: 1,
  init: null,
  loraRank: null,
  loraAlpha: null,
  loraTargets: 'all',
  seed: 0,
  sampleEvery: 400,
  sampleCount: 40,
  sampleSteps: 100,
  checkpointEvery: 400,
  out: 'runs/fashion-mnist',
  threads: null,
} satisfies TrainConfig);

/**
 * Training options whose default depends on the model: EDM2's network trains with its own
 * objective and EDM2's inverse-square-root schedule at a higher rate (its weights keep unit
 * norm, so a step of lr changes them by about lr relative): lr 1e-2, EDM2-S's ref_lr, which
 * also did best of 2e-3, 5e-3 and 1e-2 in a short Fashion-MNIST run (docs/cli.md).
 */
export const MODEL_TRAIN_DEFAULTS: Readonly<Record<ModelType, Readonly<Partial<TrainConfig>>>> = Object.freeze({
  unet: {},
  mlp: {},
  edm2: { objective: 'edm2', lr: 1e-2, lrSchedule: 'inv-sqrt' },
});

/** The defaults for a model type: TRAIN_DEFAULTS with MODEL_TRAIN_DEFAULTS[type] and that model. */
export function trainDefaults(type: ModelType): TrainConfig {
  return { ...TRAIN_DEFAULTS, ...MODEL_TRAIN_DEFAULTS[type], model: { type } };
}

type TopKey = Exclude<keyof TrainConfig, 'model'>;

const FIELDS: Record<TopKey, FieldSpec> = {
  data: { kind: 'string' },
  dataLimit: { kind: 'int', nullable: true, min: 1 },
  dataClasses: { kind: 'string', nullable: true },
  imageSize: { kind: 'int', min: 1 },
  channels: { kind: 'enum', values: ['gray', 'rgb'] },
  flip: { kind: 'bool' },
  objective: { kind: 'enum', values: ['eps', 'x0', 'v', 'edm', 'edm2'], aliases: { ddpm: 'eps' } },
  weighting: { kind: 'enum', values: ['uniform', 'snr', 'min-snr'], auto: true },
  minSnrGamma: { kind: 'number', min: 0, above: true },
  betaSchedule: { kind: 'enum', values: ['linear', 'cosine', 'sigmoid'] },
  shiftBase: { kind: 'int', nullable: true, min: 1 },
  inputScale: { kind: 'number', min: 0, above: true },
  multiscaleBase: { kind: 'int', nullable: true, min: 1 },
  lowRes: { kind: 'int', nullable: true, min: 1 },
  augMax: { kind: 'number', min: 0, max: 1 },
  augBlur: { kind: 'bool' },
  nested: { kind: 'ints' },
  microCond: { kind: 'bool' },
  cropZoom: { kind: 'number', min: 1, max: 4 },
  cropProb: { kind: 'number', min: 0, max: 1 },
  sizeMin: { kind: 'int', nullable: true, min: 1 },
  nestedGrow: { kind: 'int', min: 0 },
  nestedWeights: { kind: 'string', nullable: true },
  latent: { kind: 'string', nullable: true },
  latentNorm: { kind: 'enum', values: ['scalar', 'channel'] },
  timesteps: { kind: 'int', min: 2 },
  sigmaData: { kind: 'number', min: 0, above: true },
  classConditional: { kind: 'bool', auto: true },
  labelDropout: { kind: 'number', min: 0, max: 1 },
  batchSize: { kind: 'int', min: 1 },
  steps: { kind: 'int', min: 1, resumable: true },
  optimizer: { kind: 'enum', values: ['adam', 'adamw'] },
  lr: { kind: 'number', min: 0 },
  weightDecay: { kind: 'number', min: 0 },
  warmupSteps: { kind: 'int', min: 0 },
  lrSchedule: { kind: 'enum', values: ['constant', 'cosine', 'inv-sqrt'] },
  lrRefSteps: { kind: 'int', min: 0 },
  emaHalfLifeImages: { kind: 'number', nullable: true, min: 0, above: true },
  emaDecay: { kind: 'number', nullable: true, min: 0, max: 0.999999999 },
  emaRampupRatio: { kind: 'number', nullable: true, min: 0, above: true },
  ema: { kind: 'enum', values: ['standard', 'phema'] },
  phemaStds: { kind: 'numbers', min: 0, above: true, max: MAX_SIGMA_REL },
  phemaSnapshotEvery: { kind: 'int', min: 1, resumable: true },
  gradClip: { kind: 'number', nullable: true, min: 0, above: true },
  init: { kind: 'string', nullable: true },
  loraRank: { kind: 'int', nullable: true, min: 1 },
  loraAlpha: { kind: 'number', nullable: true, min: 0, above: true },
  loraTargets: { kind: 'string' },
  seed: { kind: 'int', min: 0 },
  sampleEvery: { kind: 'int', min: 0, resumable: true },
  sampleCount: { kind: 'int', min: 1, resumable: true },
  sampleSteps: { kind: 'int', min: 1, resumable: true },
  checkpointEvery: { kind: 'int', min: 0, resumable: true },
  out: { kind: 'string', resumable: true },
  threads: { kind: 'int', nullable: true, min: 1, resumable: true },
};

/** Model fields the trainer sets from the data: giving them is an error. */
const DERIVED_MODEL_FIELDS = { unet: ['inChannels', 'imageSize', 'numClasses'], mlp: ['dim', 'numClasses'], edm2: ['imgResolution', 'imgChannels', 'labelDim'] } as const;

const MODEL_DEFAULTS: Record<ModelType, Readonly<Record<string, unknown>>> = { unet: UNET_DEFAULTS, mlp: MLP_DENOISER_DEFAULTS, edm2: EDM2_DEFAULTS };

/** The spec of a model field, read off the type of its default value. */
function modelFieldSpec(type: ModelType, key: string): FieldSpec | null {
  const defaults = MODEL_DEFAULTS[type];
  if (!(key in defaults) || (DERIVED_MODEL_FIELDS[type] as readonly string[]).includes(key)) return null;
  const d = defaults[key];
  if (d === null) return { kind: 'int', nullable: true, min: 1 };
  if (Array.isArray(d)) return { kind: 'ints' };
  if (typeof d === 'boolean') return { kind: 'bool' };
  if (typeof d === 'number') return { kind: 'number' };
  return { kind: 'string' };
}

/** The model fields a user may set for a model type. */
export function modelFields(type: ModelType): string[] {
  return Object.keys(MODEL_DEFAULTS[type]).filter((k) => modelFieldSpec(type, k) !== null);
}

/** The top-level keys of a TrainConfig, in documentation order. */
export const TRAIN_KEYS: readonly (keyof TrainConfig)[] = Object.keys(TRAIN_DEFAULTS) as (keyof TrainConfig)[];

/** Keys whose value may change when a run is resumed (the others must match the checkpoint). */
export const RESUMABLE_KEYS: readonly string[] = resumableKeys(FIELDS);

/** "expected ..." for a spec, for messages and help. */
export function describeField(key: string): string {
  const s = (FIELDS as Record<string, FieldSpec>)[key];
  if (!s) return key === 'model' ? MODEL_TYPES.map((t) => `'${t}'`).join(' or ') : '';
  return describeSpec(s);
}

/** Checks a model config object; fields not given stay absent (the trainer's defaults fill them). */
function checkModel(source: string, m: unknown): ModelConfig {
  if (typeof m === 'string') m = { type: m };
  if (m === null || typeof m !== 'object' || Array.isArray(m))
    throw new ConfigError(source, `expected an object like {"type": "unet", ...} or ${MODEL_TYPES.map((t) => `"${t}"`).join(' / ')}, got ${show(m)}`);
  const obj = m as Record<string, unknown>;
  const type = obj.type ?? 'unet';
  if (!isModelType(type)) throw new ConfigError(`${source}.type`, `expected ${describeField('model')}, got ${show(type)}`);
  const out: Record<string, unknown> = { type };
  for (const [k, v] of Object.entries(obj)) {
    if (k === 'type') continue;
    if ((DERIVED_MODEL_FIELDS[type] as readonly string[]).includes(k))
      throw new ConfigError(`${source}.${k}`, `is set by the trainer from the data (classConditional, imageSize, channels); remove it`);
    const spec = modelFieldSpec(type, k);
    if (!spec) {
      const other = MODEL_TYPES.find((t) => t !== type && modelFieldSpec(t, k));
      const elsewhere = other ? ` (it is an option of the ${other} model)` : hint(k, modelFields(type));
      throw new ConfigError(`${source}.${k}`, `unknown ${type} option${elsewhere}; known: ${modelFields(type).join(', ')}`);
    }
    out[k] = checkValue(`${source}.${k}`, spec, v);
  }
  return out as ModelConfig;
}

/**
 * A full config from a partial one (a parsed JSON file): every key checked, unknown keys
 * rejected, defaults filled in. `source` names the file in errors.
 */
export function resolveTrainConfig(partial: unknown, source = 'config', { crossCheck: check = true }: { crossCheck?: boolean } = {}): TrainConfig {
  if (partial === null || typeof partial !== 'object' || Array.isArray(partial)) throw new ConfigError(source, `expected a JSON object of options, got ${show(partial)}`);
  const given = partial as Record<string, unknown>;
  const model = checkModel(`${source}: model`, given.model ?? TRAIN_DEFAULTS.model);
  const out: Record<string, unknown> = { ...trainDefaults(model.type), model };
  for (const [k, v] of Object.entries(given)) {
    if (k === 'model') continue;
    else if (k in FIELDS) out[k] = checkValue(`${source}: ${k}`, (FIELDS as Record<string, FieldSpec>)[k], v);
    else throw new ConfigError(`${source}: ${k}`, `unknown option${hint(k, TRAIN_KEYS)}`);
  }
  emaExclusive(out, Object.keys(partial));
  return check ? crossCheck(out as unknown as TrainConfig, (k) => (k in given ? `${source}: ${k}` : source)) : (out as unknown as TrainConfig);
}

/**
 * Applies string overrides (the command line's flags) to a config. A key is a top-level
 * key, 'model' (the type), or a field of the model; 'model' is applied first, so a model
 * field is checked against the final model type. Changing the model type also moves the
 * options still at the old type's defaults (MODEL_TRAIN_DEFAULTS) to the new type's.
 */
export function applyOverrides(config: TrainConfig, overrides: readonly Override[]): TrainConfig {
  let out: TrainConfig = { ...config, model: { ...config.model } };
  const typeOverride = overrides.filter((o) => o.key === 'model').pop();
  if (typeOverride) {
    const t = typeOverride.value.trim();
    if (!isModelType(t)) throw new ConfigError(typeOverride.source, `expected ${describeField('model')}, got ${JSON.stringify(typeOverride.value)}`);
    if (t !== out.model.type) {
      const from = trainDefaults(out.model.type) as unknown as Record<string, unknown>;
      const to = trainDefaults(t) as unknown as Record<string, unknown>;
      const moved = Object.fromEntries(
        [...new Set([...Object.keys(MODEL_TRAIN_DEFAULTS[out.model.type]), ...Object.keys(MODEL_TRAIN_DEFAULTS[t])])]
          .filter((k) => (out as unknown as Record<string, unknown>)[k] === from[k])
          .map((k) => [k, to[k]]),
      );
      out = { ...out, ...moved, model: { type: t } };
    }
  }
  for (const o of overrides) {
    if (o.key === 'model') continue;
    if (o.key in FIELDS) {
      (out as unknown as Record<string, unknown>)[o.key] = parseValue(o.source, (FIELDS as Record<string, FieldSpec>)[o.key], o.value);
      continue;
    }
    const type = out.model.type;
    const spec = modelFieldSpec(type, o.key);
    if (!spec) {
      const other = MODEL_TYPES.find((t) => t !== type && modelFieldSpec(t, o.key));
      if (other) throw new ConfigError(o.source, `is an option of the ${other} model, but this config trains a ${type} (set the model to ${other} first)`);
      throw new ConfigError(o.source, 'unknown option');
    }
    (out.model as Record<string, unknown>)[o.key] = parseValue(o.source, spec, o.value);
  }
  emaExclusive(
    out as unknown as Record<string, unknown>,
    overrides.map((o) => o.key),
  );
  const sourceOf = (key: string) => overrides.filter((o) => o.key === key).pop()?.source ?? key;
  return crossCheck(out, (key) => sourceOf(key), overrides.map((o) => o.source).join(', ') || 'config');
}

function isModelType(t: unknown): t is ModelType {
  return (MODEL_TYPES as readonly unknown[]).includes(t);
}

/** emaDecay and emaHalfLifeImages exclude each other: setting one (to a number) clears the other unless both were set. */
function emaExclusive(c: Record<string, unknown>, setKeys: readonly string[]): void {
  const [d, h] = [setKeys.includes('emaDecay'), setKeys.includes('emaHalfLifeImages')];
  if (d && !h && c.emaDecay !== null) c.emaHalfLifeImages = null;
  if (h && !d && c.emaHalfLifeImages !== null) c.emaDecay = null;
}

/** Checks between fields; `where(key)` names the flag or file entry a key came from. */
function crossCheck(c: TrainConfig, where: (key: string) => string, all = where('')): TrainConfig {
  if ((c.emaHalfLifeImages === null) === (c.emaDecay === null)) throw new ConfigError(all, `give exactly one of emaHalfLifeImages and emaDecay (got ${c.emaHalfLifeImages} and ${c.emaDecay})`);
  if ((c.objective === 'edm' || c.objective === 'edm2') && c.weighting !== 'auto')
    throw new ConfigError(
      where('weighting'),
      `${show(c.weighting)} does not apply to objective ${c.objective}, which has its own weighting (${c.objective === 'edm' ? "EDM's lambda(sigma)" : 'the learned u(sigma)'}); weighting is for eps, x0 and v`,
    );
  if (c.weighting !== 'min-snr' && c.minSnrGamma !== TRAIN_DEFAULTS.minSnrGamma)
    throw new ConfigError(where('minSnrGamma'), `is ${c.minSnrGamma}, but gamma only applies to weighting min-snr (the weighting is ${show(c.weighting)})`);
  if (c.lowRes === null && (c.augMax !== 0 || c.augBlur))
    throw new ConfigError(where(c.augMax !== 0 ? 'augMax' : 'augBlur'), 'augments the low-res condition of a super-resolution stage: set lowRes too');
  if (c.lowRes !== null && !(c.imageSize % c.lowRes === 0 && c.imageSize / c.lowRes > 1))
    throw new ConfigError(where('lowRes'), `must divide imageSize (${c.imageSize}) by an integer > 1, got ${c.lowRes}`);
  if (c.lowRes !== null && c.model.type !== 'unet') throw new ConfigError(where('lowRes'), `a super-resolution stage is a U-Net with a low-res input (condChannels); the model is ${c.model.type}`);
  if (c.sizeMin !== null && c.sizeMin > c.imageSize) throw new ConfigError(where('sizeMin'), `must be at most imageSize (${c.imageSize}), got ${c.sizeMin}`);
  const micro = (['microCond', 'cropZoom', 'sizeMin'] as const).find((k) => c[k] !== TRAIN_DEFAULTS[k]);
  if (micro && c.model.type !== 'unet') throw new ConfigError(where(micro), `micro-conditioning and its crops are built for the U-Net; the model is ${c.model.type}`);
  if (micro && (c.lowRes !== null || c.nested.length))
    throw new ConfigError(where(micro), `micro-conditioning and its crops do not combine with ${c.lowRes !== null ? 'lowRes (a super-resolution stage)' : 'nested (Matryoshka)'}`);
  if (c.latent === null && c.latentNorm !== TRAIN_DEFAULTS.latentNorm) throw new ConfigError(where('latentNorm'), `normalizes the latents of a latent run (got ${show(c.latentNorm)}): set latent too`);
  if (c.latent !== null) {
    const clash = (key: string, why: string) => new ConfigError(where(key), `does not go with latent (${show(c.latent)}): ${why}`);
    if (c.lowRes !== null) throw clash('lowRes', 'a super-resolution stage conditions on low-res pixels, a latent model denoises latents; train the stage without latent');
    if (c.nested.length) throw clash('nested', 'nested resolutions are pixel resolutions of one image; a latent model has one latent resolution');
    if (c.multiscaleBase !== null) throw clash('multiscaleBase', 'the multiscale loss pools pixel errors by imageSize; use it without latent');
    if (c.shiftBase !== null) throw clash('shiftBase', 'the shift is computed from imageSize, not the latent side; move a latent schedule with inputScale instead');
  }
  if (c.objective === 'edm2' && c.model.type !== 'edm2')
    throw new ConfigError(where('objective'), `edm2 learns u(sigma) with the log-variance head of EDM2's network: use model edm2 (the model is ${c.model.type})`);
  return c;
}

/** What changed between two configs, as "key: a -> b" lines (model fields as model.key). */
export function configDiff(a: TrainConfig, b: TrainConfig): string[] {
  const out: string[] = [];
  for (const k of TRAIN_KEYS) {
    if (k === 'model') continue;
    if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) out.push(`${k}: ${show(a[k])} -> ${show(b[k])}`);
  }
  const ma = a.model as Record<string, unknown>;
  const mb = b.model as Record<string, unknown>;
  for (const k of new Set([...Object.keys(ma), ...Object.keys(mb)])) if (JSON.stringify(ma[k]) !== JSON.stringify(mb[k])) out.push(`model.${k}: ${show(ma[k])} -> ${show(mb[k])}`);
  return out;
}

/** Help lines for every option: [key, expected values, default]. */
export function optionTable(): [string, string, string][] {
  const rows: [string, string, string][] = [];
  for (const k of TRAIN_KEYS) {
    const d = TRAIN_DEFAULTS[k];
    const byModel = MODEL_TYPES.filter((t) => k in MODEL_TRAIN_DEFAULTS[t]).map((t) => ` (model ${t}: ${show(MODEL_TRAIN_DEFAULTS[t][k])})`);
    rows.push([k, describeField(k), (k === 'model' ? 'unet' : d === null ? 'none' : show(d)) + byModel.join('')]);
  }
  return rows;
}

/** Help lines for a model type's fields: [field, default]. */
export function modelOptionTable(type: ModelType): [string, string][] {
  const trainer = TRAIN_MODELS[type];
  return modelFields(type).map((k) => {
    const v = k in trainer ? trainer[k] : MODEL_DEFAULTS[type][k];
    return [k, v === null ? 'none' : show(v)];
  });
}
