/**
 * Training objectives, their weightings and noise-level sampling, and likelihoods.
 *
 * @example
 *   const { loss } = edmLoss(D, x0, { generator: g });
 */
export * from './losses';
export * from './weighting';
export * from './sigma-sampling';
export * from './likelihood';
export * from './classifier';
