/**
 * Cascaded sampling (Ho et al. 2021, "Cascaded Diffusion Models", Sec. 3; Saharia et al. 2022,
 * Imagen): a base model samples at low resolution, then each super-resolution stage samples the
 * next resolution conditioned on the previous stage's images, corrupted at a chosen augmentation
 * level s (noise-conditioning augmentation, CDM Sec. 4.2; src/resolution/super-res.ts):
 *
 *   x^(0) ~ p_base,   x^(k) ~ p_k(x | z_s(x^(k-1)), s)   for k = 1 .. K.
 *
 * Each stage is a plain Denoiser (guided or not) sampled by generateSamples with its own sampler,
 * grid and steps: the low-res condition travels in cond (condAt), so nothing here knows about
 * samplers or guidance. Randomness: stage 0's sample i draws from Generator(seed + i) as any
 * sampling does; stage k's from Generator(stageSeed(seed, k) + i), and its augmentation noise
 * from its own per-sample stream, so sample i never depends on the batching or on n.
 *
 * @example
 *   const base = loadModel('runs/base16'), sr = loadModel('runs/sr64');
 *   const [low, high] = sampleCascade(
 *     [stageOf(base, { steps: 100 }), stageOf(sr, { sampler: 'dpmpp-2m', grid: 'karras', steps: 25 })],
 *     { n: 16, seed: 0, labels: null, augLevels: [0.2] },
 *   ); // low [16, 3, 16, 16], high [16, 3, 64, 64]
 */
import { Generator } from '../engine/random';
import { Tensor } from '../engine/tensor';
import { Denoiser } from '../core/denoiser';
import { epochSeed } from '../data/loader';
import { TrainConfig } from '../training/config';
import { generateSamples, GenerateOptions } from '../training/build';
import { BatchProgress } from '../sampling/generate';
import { StepInfo } from '../sampling/common';
import { samplingCondition } from './super-res';

/** How one stage is sampled: GenerateOptions without what the cascade supplies. */
export type StageSampling = Omit<GenerateOptions, 'shape' | 'n' | 'seed' | 'labels' | 'condAt' | 'batchSize' | 'onStep' | 'perBatch'>;

/** One stage of a cascade. */
export interface CascadeStage {
  /** Its denoiser (guidance applied or not): a super-resolution stage's reads cond.lowRes and cond.augLevel. */
  denoiser: Denoiser;
  /** Its training config: the schedule and default grid, and lowRes (null for the base stage). */
  config: TrainConfig;
  /** The shape [C, H, W] of one of its samples. */
  shape: number[];
  /** Whether it takes class labels (its classNames are not null). */
  classConditional: boolean;
  /** Sampler, grid, steps, ... (default: generateSamples's). */
  sampling?: StageSampling;
}

/** What sampleCascade takes besides the stages. */
export interface CascadeOptions {
  n: number;
  /** Stage 0's sample i draws from Generator(seed + i); stage k's from Generator(stageSeed(seed, k) + i). */
  seed: number;
  /** Class ids [n] for the class-conditional stages, or null. */
  labels: number[] | null;
  /** The augmentation level s in [0, 1] of each super-resolution stage (one number: the same for all). */
  augLevels: number | number[];
  /** Samples per batch (default generateSamples's). */
  batchSize?: number;
  /** Progress: stage k, step i of steps of a batch. */
  onStep?: (stage: number, i: number, steps: number, batch: BatchProgress, info: StepInfo) => void;
}

/** The seed offset between stages: stage k samples from seeds seed + k STAGE_SEED_STRIDE + i. */
export const STAGE_SEED_STRIDE = 1_000_000_007;

/** Stage k's sampler seed (stage 0: seed itself). */
export function stageSeed(seed: number, k: number): number {
  return seed + k * STAGE_SEED_STRIDE;
}

/** Sample i's augmentation-noise generator at stage k: its own stream, apart from every sampler's. */
export function augmentationNoise(seed: number, k: number, start: number, size: number): Generator[] {
  return Array.from({ length: size }, (_, j) => new Generator(epochSeed(seed + start + j, 0xa06 + k)));
}

/**
 * Samples a cascade: every stage's images, [n, ...shape_k] each (the caller owns them; the last
 * is the cascade's output). Stage k > 0 must be a super-resolution stage whose lowRes is stage
 * k - 1's image size.
 */
export function sampleCascade(stages: readonly CascadeStage[], opts: CascadeOptions): Tensor[] {
  const levels = checkCascade(stages, opts);
  const outs: Tensor[] = [];
  try {
    stages.forEach((stage, k) => {
      const prev = k > 0 ? outs[k - 1] : null;
      const s = k > 0 ? levels[k - 1] : 0;
      const condAt = prev ? (start: number, size: number) => samplingCondition(prev.narrow(0, start, size), s, augmentationNoise(opts.seed, k, start, size)) : undefined;
      const x = generateSamples(stage.denoiser, stage.config, {
        ...stage.sampling,
        shape: stage.shape,
        n: opts.n,
        seed: stageSeed(opts.seed, k),
        labels: stage.classConditional ? opts.labels : null,
        batchSize: opts.batchSize,
        condAt,
        onStep: opts.onStep ? (i, steps, batch, info) => opts.onStep!(k, i, steps, batch, info) : undefined,
      });
      outs.push(x);
    });
    return outs;
  } catch (e) {
    outs.forEach((t) => t.dispose());
    throw e;
  }
}

/** The stages fit together (each SR stage's lowRes is the previous image size); returns one augmentation level per SR stage. */
function checkCascade(stages: readonly CascadeStage[], opts: CascadeOptions): number[] {
  if (stages.length === 0) throw new TypeError('sampleCascade: give at least one stage');
  if (stages[0].config.lowRes !== null) throw new TypeError(`sampleCascade: stage 0 must be a base model, but it is a super-resolution stage (lowRes ${stages[0].config.lowRes})`);
  const K = stages.length - 1;
  const levels = typeof opts.augLevels === 'number' ? new Array<number>(K).fill(opts.augLevels) : [...opts.augLevels];
  if (levels.length !== K) throw new RangeError(`sampleCascade: augLevels has ${levels.length} levels for ${K} super-resolution stage${K === 1 ? '' : 's'}`);
  levels.forEach((s, i) => {
    if (!(s >= 0 && s <= 1)) throw new RangeError(`sampleCascade: augLevels[${i}] must be in [0, 1], got ${s}`);
  });
  for (let k = 1; k <= K; k++) {
    const [prev, st] = [stages[k - 1].shape, stages[k]];
    if (st.config.lowRes === null) throw new TypeError(`sampleCascade: stage ${k} must be a super-resolution stage (a model trained with lowRes), got a base model`);
    if (prev[1] !== st.config.lowRes || prev[0] !== st.shape[0])
      throw new TypeError(`sampleCascade: stage ${k} turns ${st.config.lowRes} px images into ${st.shape[1]} px, but stage ${k - 1} makes [${prev.join(', ')}]`);
  }
  if (opts.labels && stages.every((s) => !s.classConditional)) throw new TypeError('sampleCascade: labels given, but no stage is class-conditional');
  return levels;
}
