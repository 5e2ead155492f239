/**
 * Evaluation metrics on feature sets [N, d] and on raw low-dimensional samples: Frechet
 * distance (FID-style, float64, statistics saved once for a reference set), Kernel
 * Inception Distance, improved precision/recall, the energy distance and the sliced
 * Wasserstein distance, and the report a CLI prints. See docs/evaluation.md.
 *
 * @example
 *   import { evaluation } from 'diffuse';
 *   const fd = evaluation.frechetDistance(realFeatures, genFeatures);
 *   const kid = evaluation.kernelInceptionDistance(realFeatures, genFeatures); // { mean, stderr, ... }
 *   const { precision, recall } = evaluation.precisionRecall(realFeatures, genFeatures);
 */
export * from './frechet';
export * from './kid';
export * from './precision-recall';
export * from './toy';
export * from './report';
export * from './feature-net';
export { symmetricEigen, psdSqrt, clampNoise, SymmetricEigen } from './linalg';
export * from './nll';
