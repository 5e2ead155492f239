/**
 * Higher resolution (part 3 of the tutorial): cascaded diffusion with super-resolution stages and
 * noise-conditioning augmentation (Ho et al. 2021; Saharia et al. 2022). docs/resolution.md.
 *
 * - trainingCondition / samplingCondition: a super-resolution stage's cond.lowRes and cond.augLevel.
 * - noiseAugment: z_s = cos(pi s / 2) x + sin(pi s / 2) eps.
 * - sampleCascade: base -> SR -> SR2, any sampler and guidance at each stage.
 * - Latent diffusion (docs/latent.md): measureLatents (the scale factor), latentNormalization,
 *   LatentCodec (images <-> normalized latents).
 *
 * @example
 *   const [low, high] = sampleCascade([base, sr], { n: 16, seed: 0, labels: null, augLevels: 0.2 });
 */
export { augCoefficients, BLUR_PROBABILITY, BLUR_STD, downsample, gaussianBlur3, noiseAugment, samplingCondition, superResPanel, SuperResCondition, trainingCondition } from './super-res';
export { augmentationNoise, CascadeOptions, CascadeStage, sampleCascade, STAGE_SEED_STRIDE, stageSeed, StageSampling } from './cascade';
export {
  denormalizeLatents,
  encodePosteriors,
  LATENT_NORMS,
  LatentCodec,
  latentNormalization,
  LatentNormalization,
  LatentNormKind,
  LatentRecord,
  latentRecordProblem,
  LatentStats,
  measureLatents,
  normalizeLatents,
  summarizeLatents,
} from './latent';
