/**
 * Optimizers, learning-rate schedules, gradient clipping and weight averaging.
 * Every per-step update (SGD, Adam/AdamW, clipping, EMA) is one native call for the
 * whole parameter list.
 *
 * @example
 *   import { optim } from 'diffuse';
 *   const { Adam, edm2Schedule, clipGradNorm, PowerFunctionEMA } = optim;
 *   const opt = new Adam(params, { betas: [0.9, 0.99] });
 *   const lr = edm2Schedule({ refLr: 0.012, batchSize: 2048 });
 *   const phema = new PowerFunctionEMA(params);
 *   // each step: opt.lr = lr(step); backward; clipGradNorm(params, 1); opt.step(); opt.zeroGrad(); phema.update();
 */
export type { NamedParam, Params } from './params';
export * from './optimizer';
export * from './sgd';
export * from './adam';
export * from './groups';
export * from './schedule';
export * from './clip';
export * from './ema';
export * from './phema';
