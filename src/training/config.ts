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
import { MLP_DENOISER_DEFAULTS, MLPDenoiserConfig } from '../models/mlp';
import { UNET_DEFAULTS, UNetConfig } from '../models/unet';
import { checkValue, closest, ConfigError, describeSpec, FieldSpec, hint, Override, parseValue, resumableKeys, show } from './options';

export { closest, ConfigError };
export type { Override };
import { MAX_SIGMA_REL } from '../optim/phema';

/** A U-Net (models/unet.ts) or a residual MLP (models/mlp.ts); fields not given take the trainer's defaults for that type. */
export type ModelConfig = ({ type: 'unet' } & Partial<UNetConfig>) | ({ type: 'mlp' } & Partial<MLPDenoiserConfig>);

export type Objective = 'ddpm' | 'edm';

export interface TrainConfig {
  /** 'fashion-mnist', 'folder:PATH' (a folder of PNG/JPEG images, one subfolder per class), or a 2-D toy: 'two-moons', 'swiss-roll', '8gaussians', 'checkerboard'. */
  data: string;
  /** Train on the first N samples of the dataset only (null: all). */
  dataLimit: number | null;
  /** Image side: Fashion-MNIST is 28, or 32 padded; folders are resized to it. */
  imageSize: number;
  /** Folder images: 'gray' or 'rgb'. */
  channels: 'gray' | 'rgb';
  /** Random horizontal flips. */
  flip: boolean;
  /** The network. */
  model: ModelConfig;
  /** 'ddpm': epsilon prediction on a discrete VP schedule (Ho et al. 2020); 'edm': EDM's preconditioning and loss (Karras et al. 2022). */
  objective: Objective;
  /** DDPM betas: 'linear' (1e-4 .. 0.02, Ho et al.) or 'cosine' (Nichol & Dhariwal). */
  betaSchedule: 'linear' | 'cosine';
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
  /** After the warm-up: 'constant', or 'cosine' decay to 0 at `steps` (no decay when warmupSteps >= steps). */
  lrSchedule: 'constant' | 'cosine';
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

/** The defaults: the embedded `diffuse train` run. */
export const TRAIN_DEFAULTS: Readonly<TrainConfig> = Object.freeze({
  data: 'fashion-mnist',
  dataLimit: null,
  imageSize: 32,
  channels: 'gray',
  flip: false,
  model: { type: 'unet' },
  objective: 'ddpm',
  betaSchedule: 'linear',
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
  emaHalfLifeImages: 10000,
  emaDecay: null,
  emaRampupRatio: 0.1,
  ema: 'standard',
  phemaStds: [0.05, 0.1],
  phemaSnapshotEvery: 100,
  gradClip: 1,
  seed: 0,
  sampleEvery: 400,
  sampleCount: 40,
  sampleSteps: 100,
  checkpointEvery: 400,
  out: 'runs/fashion-mnist',
  threads: null,
} satisfies TrainConfig);

type TopKey = Exclude<keyof TrainConfig, 'model'>;

const FIELDS: Record<TopKey, FieldSpec> = {
  data: { kind: 'string' },
  dataLimit: { kind: 'int', nullable: true, min: 1 },
  imageSize: { kind: 'int', min: 1 },
  channels: { kind: 'enum', values: ['gray', 'rgb'] },
  flip: { kind: 'bool' },
  objective: { kind: 'enum', values: ['ddpm', 'edm'] },
  betaSchedule: { kind: 'enum', values: ['linear', 'cosine'] },
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
  lrSchedule: { kind: 'enum', values: ['constant', 'cosine'] },
  emaHalfLifeImages: { kind: 'number', nullable: true, min: 0, above: true },
  emaDecay: { kind: 'number', nullable: true, min: 0, max: 0.999999999 },
  emaRampupRatio: { kind: 'number', nullable: true, min: 0, above: true },
  ema: { kind: 'enum', values: ['standard', 'phema'] },
  phemaStds: { kind: 'numbers', min: 0, above: true, max: MAX_SIGMA_REL },
  phemaSnapshotEvery: { kind: 'int', min: 1, resumable: true },
  gradClip: { kind: 'number', nullable: true, min: 0, above: true },
  seed: { kind: 'int', min: 0 },
  sampleEvery: { kind: 'int', min: 0, resumable: true },
  sampleCount: { kind: 'int', min: 1, resumable: true },
  sampleSteps: { kind: 'int', min: 1, resumable: true },
  checkpointEvery: { kind: 'int', min: 0, resumable: true },
  out: { kind: 'string', resumable: true },
  threads: { kind: 'int', nullable: true, min: 1, resumable: true },
};

/** Model fields the trainer sets from the data: giving them is an error. */
const DERIVED_MODEL_FIELDS = { unet: ['inChannels', 'imageSize', 'numClasses'], mlp: ['dim', 'numClasses'] } as const;

const MODEL_DEFAULTS = { unet: UNET_DEFAULTS as Readonly<Record<string, unknown>>, mlp: MLP_DENOISER_DEFAULTS as Readonly<Record<string, unknown>> };

/** The spec of a model field, read off the type of its default value. */
function modelFieldSpec(type: 'unet' | 'mlp', key: string): FieldSpec | null {
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
export function modelFields(type: 'unet' | 'mlp'): string[] {
  return Object.keys(MODEL_DEFAULTS[type]).filter((k) => modelFieldSpec(type, k) !== null);
}

/** The top-level keys of a TrainConfig, in documentation order. */
export const TRAIN_KEYS: readonly (keyof TrainConfig)[] = Object.keys(TRAIN_DEFAULTS) as (keyof TrainConfig)[];

/** Keys whose value may change when a run is resumed (the others must match the checkpoint). */
export const RESUMABLE_KEYS: readonly string[] = resumableKeys(FIELDS);

/** "expected ..." for a spec, for messages and help. */
export function describeField(key: string): string {
  const s = (FIELDS as Record<string, FieldSpec>)[key];
  if (!s) return key === 'model' ? "'unet' or 'mlp'" : '';
  return describeSpec(s);
}

/** Checks a model config object; fields not given stay absent (the trainer's defaults fill them). */
function checkModel(source: string, m: unknown): ModelConfig {
  if (typeof m === 'string') m = { type: m };
  if (m === null || typeof m !== 'object' || Array.isArray(m)) throw new ConfigError(source, `expected an object like {"type": "unet", ...} or "unet" / "mlp", got ${show(m)}`);
  const obj = m as Record<string, unknown>;
  const type = obj.type ?? 'unet';
  if (type !== 'unet' && type !== 'mlp') throw new ConfigError(`${source}.type`, `expected 'unet' or 'mlp', got ${show(type)}`);
  const out: Record<string, unknown> = { type };
  for (const [k, v] of Object.entries(obj)) {
    if (k === 'type') continue;
    if ((DERIVED_MODEL_FIELDS[type] as readonly string[]).includes(k))
      throw new ConfigError(`${source}.${k}`, `is set by the trainer from the data (classConditional, imageSize, channels); remove it`);
    const spec = modelFieldSpec(type, k);
    if (!spec) {
      const other = type === 'unet' ? 'mlp' : 'unet';
      const elsewhere = modelFieldSpec(other, k) ? ` (it is an option of the ${other} model)` : hint(k, modelFields(type));
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
  const out: Record<string, unknown> = { ...TRAIN_DEFAULTS, model: { ...TRAIN_DEFAULTS.model } };
  for (const [k, v] of Object.entries(partial as Record<string, unknown>)) {
    if (k === 'model') out.model = checkModel(`${source}: model`, v);
    else if (k in FIELDS) out[k] = checkValue(`${source}: ${k}`, (FIELDS as Record<string, FieldSpec>)[k], v);
    else throw new ConfigError(`${source}: ${k}`, `unknown option${hint(k, TRAIN_KEYS)}`);
  }
  emaExclusive(out, Object.keys(partial));
  return check ? crossCheck(out as unknown as TrainConfig, source) : (out as unknown as TrainConfig);
}


/**
 * Applies string overrides (the command line's flags) to a config. A key is a top-level
 * key, 'model' (the type), or a field of the model; 'model' is applied first, so a model
 * field is checked against the final model type.
 */
export function applyOverrides(config: TrainConfig, overrides: readonly Override[]): TrainConfig {
  const out: TrainConfig = { ...config, model: { ...config.model } };
  const typeOverride = overrides.filter((o) => o.key === 'model').pop();
  if (typeOverride) {
    const t = typeOverride.value.trim();
    if (t !== 'unet' && t !== 'mlp') throw new ConfigError(typeOverride.source, `expected 'unet' or 'mlp', got ${JSON.stringify(typeOverride.value)}`);
    if (t !== out.model.type) out.model = { type: t };
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
      const other = type === 'unet' ? 'mlp' : 'unet';
      if (modelFieldSpec(other, o.key)) throw new ConfigError(o.source, `is an option of the ${other} model, but this config trains a ${type} (set the model to ${other} first)`);
      throw new ConfigError(o.source, 'unknown option');
    }
    (out.model as Record<string, unknown>)[o.key] = parseValue(o.source, spec, o.value);
  }
  emaExclusive(out as unknown as Record<string, unknown>, overrides.map((o) => o.key));
  return crossCheck(out, overrides.map((o) => o.source).join(', ') || 'config');
}

/** emaDecay and emaHalfLifeImages exclude each other: setting one (to a number) clears the other unless both were set. */
function emaExclusive(c: Record<string, unknown>, setKeys: readonly string[]): void {
  const [d, h] = [setKeys.includes('emaDecay'), setKeys.includes('emaHalfLifeImages')];
  if (d && !h && c.emaDecay !== null) c.emaHalfLifeImages = null;
  if (h && !d && c.emaHalfLifeImages !== null) c.emaDecay = null;
}

/** Checks between fields. */
function crossCheck(c: TrainConfig, source: string): TrainConfig {
  if ((c.emaHalfLifeImages === null) === (c.emaDecay === null))
    throw new ConfigError(source, `give exactly one of emaHalfLifeImages and emaDecay (got ${c.emaHalfLifeImages} and ${c.emaDecay})`);
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
  for (const k of new Set([...Object.keys(ma), ...Object.keys(mb)]))
    if (JSON.stringify(ma[k]) !== JSON.stringify(mb[k])) out.push(`model.${k}: ${show(ma[k])} -> ${show(mb[k])}`);
  return out;
}

/** Help lines for every option: [key, expected values, default]. */
export function optionTable(): [string, string, string][] {
  const rows: [string, string, string][] = [];
  for (const k of TRAIN_KEYS) {
    const d = TRAIN_DEFAULTS[k];
    rows.push([k, describeField(k), k === 'model' ? 'unet' : d === null ? 'none' : show(d)]);
  }
  return rows;
}

/** Help lines for a model type's fields: [field, default]. */
export function modelOptionTable(type: 'unet' | 'mlp'): [string, string][] {
  const trainer = (type === 'unet' ? TRAIN_UNET : TRAIN_MLP) as Record<string, unknown>;
  return modelFields(type).map((k) => {
    const v = k in trainer ? trainer[k] : MODEL_DEFAULTS[type][k];
    return [k, v === null ? 'none' : show(v)];
  });
}
