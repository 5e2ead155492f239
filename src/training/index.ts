/**
 * Training: objectives, their weightings and noise-level sampling, likelihoods, the config,
 * what a config builds (data, network, denoiser, samples), checkpoints, the trainer, classifiers,
 * post-hoc EMA in a run.
 *
 * @example
 *   const { loss } = edmLoss(D, x0, { generator: g });
 */
export * from './losses';
export * from './weighting';
export * from './sigma-sampling';
export * from './likelihood';
export * from './classifier';

export * from './config';
export * from './build';
export * from './checkpoint';
export * from './trainer';
export * from './interrupt';
export * from './phema';
