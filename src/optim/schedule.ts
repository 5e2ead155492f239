/**
 * Learning-rate schedules: plain functions of the step. A factory checks the options
 * once and returns `(step) => lr`, where `step` counts the optimizer steps already
 * taken (0 for the first update), as EDM and EDM2 evaluate theirs at the images seen
 * before the update. Set the optimizer's lr from it before each step.
 *
 * @example
 *   const schedule = cosineSchedule({ lr: 1e-3, totalSteps: 10_000, warmupSteps: 500 });
 *   for (let step = 0; step < 10_000; step++) {
 *     opt.lr = schedule(step);
 *     ...
 *     opt.step();
 *   }
 */
import { checkOption, isNum } from './params';

/** A learning rate as a function of the number of steps taken. */
export type LrSchedule = (step: number) => number;

const nonNegative = (x: number) => isNum(x) && x >= 0;
const checkStep = (who: string, step: number) => checkOption(who, 'step', step, nonNegative, 'a finite number >= 0');

/** The warm-up factor min(step / warmup, 1) (1 when warmup is 0). */
function warmup(step: number, steps: number): number {
  return steps > 0 ? Math.min(step / steps, 1) : 1;
}

/**
 * The same rate at every step (DDPM trains at a constant 2e-4 after a warm-up; Ho et
 * al. 2020, Appendix B).
 *
 * @example
 *   constantSchedule(2e-4)(123) // 2e-4
 */
export function constantSchedule(lr: number): LrSchedule {
  checkOption('constantSchedule', 'lr', lr, nonNegative, 'a finite number >= 0');
  return (step) => (checkStep('constantSchedule', step), lr);
}

/**
 * Linear warm-up to a constant: lr * min(step / warmupSteps, 1). Gradual warm-up as
 * in Goyal et al. 2017 ("Accurate, Large Minibatch SGD", Sec. 2.2); EDM's
 * training_loop.py ramps up the same way (`lr_rampup_kimg`), so the first step has lr 0.
 *
 * @example
 *   const s = linearWarmupSchedule({ lr: 1e-3, warmupSteps: 100 });
 *   s(0); // 0
 *   s(50); // 5e-4
 *   s(500); // 1e-3
 */
export function linearWarmupSchedule({ lr, warmupSteps }: { lr: number; warmupSteps: number }): LrSchedule {
  const who = 'linearWarmupSchedule';
  checkOption(who, 'lr', lr, nonNegative, 'a finite number >= 0');
  checkOption(who, 'warmupSteps', warmupSteps, nonNegative, 'a finite number >= 0');
  return (step) => lr * warmup(checkStep(who, step), warmupSteps);
}

/**
 * Cosine annealing (SGDR, Loshchilov & Hutter 2017, Eq. 5, without restarts) after a
 * linear warm-up: for warmupSteps <= step <= totalSteps, with
 * progress = (step - warmupSteps) / (totalSteps - warmupSteps),
 *   lr(step) = minLr + (lr - minLr) (1 + cos(pi progress)) / 2,
 * lr * step / warmupSteps before, and minLr after totalSteps.
 *
 * @example
 *   const s = cosineSchedule({ lr: 1e-3, totalSteps: 1000, warmupSteps: 100, minLr: 1e-5 });
 *   s(100); // 1e-3
 *   s(550); // (1e-3 + 1e-5) / 2
 *   s(1000); // 1e-5
 */
export function cosineSchedule({ lr, totalSteps, warmupSteps = 0, minLr = 0 }: { lr: number; totalSteps: number; warmupSteps?: number; minLr?: number }): LrSchedule {
  const who = 'cosineSchedule';
  checkOption(who, 'lr', lr, nonNegative, 'a finite number >= 0');
  checkOption(who, 'minLr', minLr, (x) => nonNegative(x) && x <= lr, `a finite number in [0, lr = ${lr}]`);
  checkOption(who, 'warmupSteps', warmupSteps, nonNegative, 'a finite number >= 0');
  checkOption(who, 'totalSteps', totalSteps, (x) => isNum(x) && x > warmupSteps, `a finite number > warmupSteps = ${warmupSteps}`);
  return (step) => {
    checkStep(who, step);
    if (step < warmupSteps) return lr * warmup(step, warmupSteps);
    const progress = Math.min((step - warmupSteps) / (totalSteps - warmupSteps), 1);
    return minLr + ((lr - minLr) * (1 + Math.cos(Math.PI * progress))) / 2;
  };
}

/** Options of edm2Schedule, named and defaulted as in EDM2's training_loop.py. */
export interface Edm2ScheduleOptions {
  /** alpha_ref, the rate before the decay starts (default 100e-4, EDM2's default `ref_lr`). */
  refLr?: number;
  /** t_ref in batches: the decay starts after this many steps; 0 disables it (default 70e3). */
  refBatches?: number;
  /** Linear warm-up length in training images; 0 disables it (default 10e6, EDM2's `rampup_Mimg` = 10). */
  rampupImages?: number;
  /** Images per step, to turn steps into images for the warm-up. */
  batchSize: number;
}

/**
 * EDM2's inverse square root decay (Karras et al. 2024, "Analyzing and Improving the
 * Training Dynamics of Diffusion Models", paragraph "Learning rate decay":
 * alpha(t) = alpha_ref / sqrt(max(t / t_ref, 1))), with the linear warm-up of its
 * training/training_loop.py `learning_rate_schedule`:
 *   lr(t) = refLr / sqrt(max(t / refBatches, 1)) * min(t batchSize / rampupImages, 1)
 * for t steps taken, computed in images as EDM2 does (nimg = t batchSize).
 *
 * @example
 *   const s = edm2Schedule({ refLr: 0.012, refBatches: 70_000, rampupImages: 10e6, batchSize: 2048 });
 *   s(280_000); // 0.012 / 2 (four times t_ref, long after the warm-up)
 */
export function edm2Schedule({ refLr = 100e-4, refBatches = 70e3, rampupImages = 10e6, batchSize }: Edm2ScheduleOptions): LrSchedule {
  const who = 'edm2Schedule';
  checkOption(who, 'refLr', refLr, nonNegative, 'a finite number >= 0');
  checkOption(who, 'refBatches', refBatches, nonNegative, 'a finite number >= 0');
  checkOption(who, 'rampupImages', rampupImages, nonNegative, 'a finite number >= 0');
  checkOption(who, 'batchSize', batchSize, (x) => isNum(x) && x > 0, 'a finite number > 0');
  return (step) => {
    checkStep(who, step);
    const nimg = step * batchSize;
    let lr = refLr;
    if (refBatches > 0) lr /= Math.sqrt(Math.max(nimg / (refBatches * batchSize), 1));
    return lr * warmup(nimg, rampupImages);
  };
}
